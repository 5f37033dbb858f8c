"""The C runtime computes exactly what the golden simulator computes.

The emitted model.c plus the portable kernels, compiled for this host with
-Wall -Wextra -Werror, must return the golden simulator's integers on every image:
the int8 PReLU MobileFaceNet, the ReLU6 real model with its per-channel mean padding,
and an int16 (16x8) layer; with the memory planner's default choice of fused pairs
("auto") and with every expansion + depthwise pair fused ("all"), in place throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from calibration.observers import observe_ranges
from calibration.quantizer import quantize
from compiler.backends.c_emitter import RUNTIME_DIR, emit_c
from compiler.backends.c_host import CFLAGS, HOST_DIR, golden_as_device, run_host
from compiler.backends.memory_plan import check_plan, plan_arena
from compiler.frontend import load_model
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from tests.conftest import FOAMLIU, FRIENDS

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _lowered(spec: str, pre: str):
    graph = load_model(spec).graph
    for _, fn in pipeline(parse_preprocess(pre)):
        graph = fn(graph)
    return graph


def build(graph, out: Path, fuse: str = "auto", main: Path = HOST_DIR / "main.c"):
    """emit_c with a choice of fused pairs, compiled like c_host.build_host; (binary, plan)."""
    plan = emit_c(graph, out, fuse=fuse)
    binary = out / "mfn-host"
    sources = [out / "model.c", RUNTIME_DIR / "mfn_kernels.c", main]
    cmd = ["gcc", *CFLAGS, f"-I{RUNTIME_DIR}", f"-I{out}", *map(str, sources), "-o", str(binary)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return binary, plan


def _faces(n: int) -> np.ndarray:
    images = synthetic_eval_set(n, seed=4)[0]
    if FRIENDS.exists():
        from compiler.faces import list_images, load_images

        images[: n // 2] = load_images(list_images(FRIENDS)[: n // 2], 112, 112)[0]
    elif os.environ.get("CI") == "true":
        pytest.fail("CI must have the real faces")
    return images


@pytest.mark.parametrize(
    ("spec", "pre", "int16", "fuse"),
    [
        ("mobilefacenet", "paper", False, "auto"),
        ("mobilefacenet", "paper", True, "all"),
        pytest.param(str(FOAMLIU), "imagenet", False, "auto", id="foamliu-relu6-auto"),
        pytest.param(str(FOAMLIU), "imagenet", False, "all", id="foamliu-relu6-all"),
    ],
)
def test_c_model_is_bit_exact_with_the_golden_simulator(tmp_path, spec, pre, int16, fuse):
    if spec == str(FOAMLIU) and not FOAMLIU.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the real model")
        pytest.skip("real model not present")
    graph = _lowered(spec, pre)
    images = _faces(6)
    ranges = observe_ranges(graph, images[:2], "minmax")
    qgraph = quantize(graph, ranges, "fused")
    if int16:
        gdconv = next(n for n in qgraph.nodes if n.attrs.get("kind") == "gdconv")
        qgraph = quantize(graph, ranges, "fused", frozenset({gdconv.inputs[0], gdconv.output}))
        assert qgraph.tensors[gdconv.inputs[0]].dtype == "int16"
    binary, plan = build(qgraph, tmp_path, fuse)
    if int16:  # the int16 expanded tensor (conv_512 -> gdconv) is computed row by row
        assert (qgraph.node_producing(gdconv.inputs[0]).name, gdconv.name) in plan.fused
    assert len(plan.fused) >= (15 if fuse == "all" else 1)
    device = run_host(binary, qgraph, images[2:])
    expected = golden_as_device(qgraph, images[2:])
    assert len(np.unique(expected)) > 20, "informative outputs, not saturated ones"
    assert [np.array_equal(d, e) for d, e in zip(device, expected, strict=True)] == [True] * 4
    assert plan.arena_bytes <= 512 * 1024


def test_arena_plan_reuses_memory_and_never_overlaps_live_tensors():
    graph = _lowered("mobilefacenet", "paper")
    qgraph = quantize(graph, observe_ranges(graph, synthetic_eval_set(2)[0], "minmax"), "fused")
    plan = plan_arena(qgraph)
    check_plan(qgraph, plan)  # every pair of live tensors: apart, or in place as the kernels allow
    aliases = {n.output for n in qgraph.nodes if n.op == "reshape"}
    total = sum(size for t, size in plan.sizes.items() if t not in aliases)
    assert plan.arena_bytes < total / 4, "tensors share the arena"
