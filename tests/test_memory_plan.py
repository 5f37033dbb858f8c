"""The memory planner: liveness, in-place outputs, fused expansion + depthwise, placement.

Small hand-built quantized graphs exercise every case (strides, odd sizes, asymmetric
and per-channel padding, int16 expansions, kernels of 1, 5 and "global" size, residual
adds); each plan is checked three ways: the planner's own pair check, an independent
row-by-row simulation of the kernels' reads and writes over the arena, and the compiled
C model against the golden simulator. The real models must fit 512 KiB.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from calibration.observers import observe_ranges
from calibration.qgraph import QGraph, QNode, QTensor
from calibration.quantizer import quantize
from compiler.backends.c_emitter import RUNTIME_DIR, emit_c
from compiler.backends.c_host import golden_as_device, run_host
from compiler.backends.memory_plan import ALIGN, check_plan, fusible_pairs, plan_arena, ring_name
from compiler.synthetic import synthetic_eval_set
from tests.conftest import FOAMLIU
from tests.test_c_runtime import _lowered, build

KIB512 = 512 * 1024
FLASH_LIMIT = 1_205_862  # 1.15 MiB
MODES = ("none", "auto", "all")


class _Net:
    """Builds a fused-mode QGraph by hand: random int8 weights, scales that keep the
    integer values informative (neither saturated nor all zero)."""

    def __init__(self, c: int, h: int, w: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors = {"input": QTensor((1, c, h, w), 1.0, -128)}
        self.nodes: list[QNode] = []
        self.last = "input"

    def _typical(self, name: str) -> float:
        return 8000.0 if self.tensors[name].dtype == "int16" else 40.0

    def conv(
        self,
        cout: int | None,
        k: int | tuple[int, int] = 1,
        stride: int = 1,
        pads: list[int] | None = None,
        depthwise: bool = False,
        src: str | None = None,
        dtype: str = "int8",
        pad_q: bool = False,
        act: str = "prelu",
    ) -> str:
        src = src or self.last
        x = self.tensors[src]
        _, cin, h, w = x.shape
        kh, kw = (k, k) if isinstance(k, int) else k
        pads = [kh // 2, kw // 2, kh // 2, kw // 2] if pads is None else pads
        group = cin if depthwise else 1
        cout = cin if depthwise else cout
        oh = (h + pads[0] + pads[2] - kh) // stride + 1
        ow = (w + pads[1] + pads[3] - kw) // stride + 1
        fan_in = (cin // group) * kh * kw
        w_scale = (self.rng.uniform(0.5, 1.5, cout) * 0.01).astype(np.float32)
        acc = math.sqrt(fan_in) * self._typical(src) * 73
        name = f"n{len(self.nodes)}"
        typical_out = 8000.0 if dtype == "int16" else 40.0
        zp = int(self.rng.integers(-20, 21)) if dtype == "int8" else 0
        self.tensors[name] = QTensor((1, cout, oh, ow), float(x.scale * w_scale.mean() * acc / typical_out), zp, dtype)
        attrs = {
            "strides": [stride, stride],
            "pads": pads,
            "dilations": [1, 1],
            "group": group,
            "kind": "depthwise" if depthwise else "conv",
        }
        arrays = {
            "weight": self.rng.integers(-127, 128, (cout, cin // group, kh, kw)).astype(np.int8),
            "weight_scale": w_scale,
            "bias": self.rng.integers(-int(acc), int(acc), cout).astype(np.int32),
        }
        if pad_q:
            lim = 127 if x.dtype == "int8" else 3000
            attrs["pad_q"] = [int(v) for v in self.rng.integers(-lim, lim + 1, cin)]
        if act == "prelu":
            arrays["slope"] = self.rng.uniform(-0.3, 0.6, cout).astype(np.float32)
            attrs["activation"] = "prelu"
        elif act == "relu":
            attrs["act_min"] = zp
        self.nodes.append(QNode("conv", name, [src], name, attrs, arrays))
        self.last = name
        return name

    def add(self, a: str, b: str) -> str:
        name = f"n{len(self.nodes)}"
        ta, tb = self.tensors[a], self.tensors[b]
        self.tensors[name] = QTensor(ta.shape, max(ta.scale, tb.scale) * 1.4, int(self.rng.integers(-10, 11)))
        self.nodes.append(QNode("add", name, [a, b], name))
        self.last = name
        return name

    def flatten(self) -> str:
        shape = self.tensors[self.last].shape
        name = f"n{len(self.nodes)}"
        self.tensors[name] = replace(self.tensors[self.last], shape=(1, int(np.prod(shape[1:]))))
        self.nodes.append(QNode("reshape", name, [self.last], name))
        self.last = name
        return name

    def graph(self) -> QGraph:
        return QGraph("synthetic", "fused", "input", [self.last], self.tensors, self.nodes)


def _bottlenecks() -> QGraph:
    """Stem with per-channel pad values, then inverted residuals: stride 2, an int16
    expansion with per-channel padding, a 5x5 depthwise, a residual, a global depthwise."""
    n = _Net(3, 20, 18, seed=1)
    n.conv(8, 3, stride=2, pad_q=True)  # 10x9
    n.conv(24)
    n.conv(None, 3, depthwise=True)
    n.conv(8, act="none")
    n.conv(24, dtype="int16")
    n.conv(None, 3, stride=2, depthwise=True, pad_q=True)  # 5x5
    skip = n.conv(12, act="none")
    n.conv(36, act="relu")
    n.conv(None, 5, depthwise=True, act="relu")
    n.add(skip, n.conv(12, act="none"))
    n.conv(32, dtype="int16")
    n.conv(None, 5, pads=[0, 0, 0, 0], depthwise=True, act="none")  # global depthwise, int16 in
    n.conv(10, act="none")
    n.flatten()
    return n.graph()


def _edges() -> QGraph:
    """Asymmetric padding (TF 'SAME' stride 2), a 1x1 depthwise with stride 2 (rows the
    fused kernel must skip), a 3x1 kernel, and a wide expansion first (fusing pays)."""
    n = _Net(4, 17, 23, seed=2)
    n.conv(48, act="relu")
    n.conv(None, 3, stride=2, pads=[0, 0, 1, 1], depthwise=True)  # 9x12
    n.conv(6, act="none")
    n.conv(12)
    n.conv(None, 1, stride=2, pads=[0, 0, 0, 0], depthwise=True)  # 5x6
    n.conv(12)
    n.conv(None, (3, 1), pads=[1, 0, 1, 0], depthwise=True, pad_q=True)
    n.conv(8, act="none")
    return n.graph()


GRAPHS = {"bottlenecks": _bottlenecks, "edges": _edges}


def _rows(graph: QGraph, plan, t: str) -> tuple[int, int]:
    """(rows, bytes per row) as the kernels walk a tensor (NHWC)."""
    for _, d in plan.fused:
        if t == ring_name(d):
            kh = next(n for n in graph.nodes if n.name == d).arrays["weight"].shape[2]
            return kh, plan.sizes[t] // kh
    tensor = graph.tensors[t]
    size = 2 if tensor.dtype == "int16" else 1
    if len(tensor.shape) == 4:
        _, c, h, w = tensor.shape
        return h, w * c * size
    return 1, int(np.prod(tensor.shape[1:])) * size


def _simulate(graph: QGraph, plan) -> None:
    """Replay every kernel's reads and writes, row by row and in the kernels' order, over
    the arena; every read must find the bytes its tensor wrote (nothing clobbered them)."""
    alias = {}
    for n in graph.nodes:
        if n.op == "reshape":
            alias[n.output] = alias.get(n.inputs[0], n.inputs[0])
    owner = np.full(plan.arena_bytes, -1, dtype=np.int64)
    ids: dict[str, int] = {}

    def span(t: str, r0: int, r1: int) -> slice:
        t = alias.get(t, t)
        _, row = _rows(graph, plan, t)
        start = plan.offsets[t] + r0 * row
        assert plan.offsets[t] + plan.sizes[t] <= plan.arena_bytes
        return slice(start, start + (r1 - r0) * row)

    def write(t: str, r0: int, r1: int) -> None:
        owner[span(t, r0, r1)] = ids.setdefault(alias.get(t, t), len(ids))

    def read(t: str, r0: int, r1: int, when: str) -> None:
        seen = owner[span(t, r0, r1)]
        assert (seen == ids[alias.get(t, t)]).all(), f"{when}: rows {r0}:{r1} of {t} were overwritten"

    write(graph.input, 0, _rows(graph, plan, graph.input)[0])
    fused = dict(plan.fused)
    expansions = {n.name: n for n in graph.nodes if n.name in fused}
    for node in graph.nodes:
        if node.op == "reshape" or node.name in expansions:
            continue
        h_out = _rows(graph, plan, node.output)[0]
        if node.op == "add":
            for y in range(h_out):
                read(node.inputs[0], y, y + 1, node.name)
                read(node.inputs[1], y, y + 1, node.name)
                write(node.output, y, y + 1)
            continue
        a = node.attrs
        kh, stride, pad = node.arrays["weight"].shape[2], a["strides"][0], a["pads"][0]
        expansion = next((expansions[e] for e, d in fused.items() if d == node.name), None)
        if expansion is None:
            source = node.inputs[0]
            h_in = _rows(graph, plan, source)[0]
            for y in range(h_out):
                r0, r1 = max(0, y * stride - pad), min(h_in, y * stride - pad + kh)
                read(source, r0, r1, node.name)
                write(node.output, y, y + 1)
                read(source, r0, r1, f"{node.name} (same row)")  # reads and writes interleave
            continue
        source, ring, nxt = expansion.inputs[0], ring_name(node.name), 0
        h_in = _rows(graph, plan, source)[0]
        for y in range(h_out):
            first = y * stride - pad
            last = min(first + kh - 1, h_in - 1)
            nxt = max(nxt, first)
            while nxt <= last:
                read(source, nxt, nxt + 1, expansion.name)
                write(ring, nxt % kh, nxt % kh + 1)
                nxt += 1
            for r in range(max(first, 0), last + 1):
                read(ring, r % kh, r % kh + 1, node.name)
            write(node.output, y, y + 1)
    for out in graph.outputs:
        read(out, 0, _rows(graph, plan, out)[0], "the output copy")


def _images(graph: QGraph, n: int, seed: int = 3) -> np.ndarray:
    _, c, h, w = graph.tensors[graph.input].shape
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


# --- the planner on synthetic graphs -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_plans_are_aligned_and_no_read_ever_sees_clobbered_bytes(name, mode):
    graph = GRAPHS[name]()
    plan = plan_arena(graph, mode)
    check_plan(graph, plan)
    _simulate(graph, plan)
    assert all(o % ALIGN == 0 for o in plan.offsets.values()) and plan.arena_bytes % ALIGN == 0
    assert max(plan.offsets[t] + plan.sizes[t] for t in plan.offsets) <= plan.arena_bytes
    aliases = {n.output for n in graph.nodes if n.op == "reshape"}
    total = sum(size for t, size in plan.sizes.items() if t not in aliases)
    assert plan.arena_bytes < total, "tensors share the arena"
    if mode == "none":
        assert plan.fused == [] and plan.scratch_bytes == 0
    if mode == "all":
        assert len(plan.fused) == len(fusible_pairs(graph)) >= 3
        assert plan.scratch_bytes == sum(plan.scratch.values()) > 0
        for _, dw in plan.fused:  # the expanded tensor is gone; its ring is in the arena
            expanded = next(n for n in graph.nodes if n.name == dw).inputs[0]
            assert expanded not in plan.offsets and ring_name(dw) in plan.offsets


def test_the_checks_catch_a_bad_plan():
    graph = _edges()
    plan = plan_arena(graph, "none")
    first = graph.nodes[0]  # a 1x1 expansion cannot write its output over its own input
    bad = replace(plan, offsets={**plan.offsets, first.inputs[0]: plan.offsets[first.output]})
    with pytest.raises(AssertionError, match="overlap"):
        check_plan(graph, bad)
    with pytest.raises(AssertionError, match="overwritten"):
        _simulate(graph, bad)
    late = replace(plan, offsets={**plan.offsets, graph.input: plan.offsets[graph.input] + 8})
    with pytest.raises(AssertionError, match="aligned"):
        check_plan(graph, late)


def test_liveness_lets_dead_tensors_share_and_outputs_go_in_place():
    n = _Net(16, 8, 8)  # 1 KiB tensors of 128-byte rows
    for _ in range(3):
        n.conv(16)
    graph = n.graph()
    plan = plan_arena(graph, "none")
    # Each 1x1 conv writes row y after reading input row y: its output may start one
    # row below its input and overlap the rest. Without that, two 1 KiB tensors.
    assert plan.arena_bytes == 1024 + 3 * 128
    assert sorted(plan.in_place) == [("n0", "input"), ("n1", "n0"), ("n2", "n1")]
    # The input is dead when n1 is born: they share bytes.
    span = lambda t: set(range(plan.offsets[t], plan.offsets[t] + plan.sizes[t]))  # noqa: E731
    assert span("input") & span("n1")
    _simulate(graph, plan)


def test_fusible_pairs_are_expansion_then_its_only_reader_a_depthwise():
    graph = _bottlenecks()
    pairs = [(e.name, d.name) for e, d in fusible_pairs(graph)]
    assert pairs == [("n1", "n2"), ("n4", "n5"), ("n7", "n8"), ("n11", "n12")]
    n = _Net(8, 6, 6)
    wide = n.conv(16)
    n.conv(None, 3, depthwise=True)
    n.conv(16, src=wide)  # the expansion has a second reader: cannot be fused
    n.conv(16, 3)  # a dense 3x3 is no expansion
    n.conv(None, 3, depthwise=True)
    n.conv(16, stride=2)  # a strided 1x1 is not fused either
    n.conv(None, 3, depthwise=True)
    assert fusible_pairs(n.graph()) == []


def test_auto_fuses_only_where_it_lowers_the_arena():
    graph = _edges()
    none, auto, full = (plan_arena(graph, m) for m in MODES)
    assert auto.fused == [("n0", "n1")], "only the wide first expansion sets the peak"
    assert auto.arena_bytes == full.arena_bytes < none.arena_bytes
    assert auto.unfused_arena_bytes == none.arena_bytes
    assert auto.summary()["fused_pairs"] == [["n0", "n1"]] and auto.summary()["scratch_bytes"] == auto.scratch_bytes


# --- the compiled C model ------------------------------------------------------------

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@needs_gcc
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_fused_and_in_place_c_is_bit_exact_with_the_golden(tmp_path, name, mode):
    graph = GRAPHS[name]()
    binary, _ = build(graph, tmp_path, mode)
    images = _images(graph, 3)
    expected = golden_as_device(graph, images)
    assert len(np.unique(expected)) > 5, "informative outputs"
    device = run_host(binary, graph, images)
    assert [np.array_equal(d, e) for d, e in zip(device, expected, strict=True)] == [True] * 3


HOOK_MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "model.h"

static int32_t seen[MFN_LAYER_COUNT + 1];
static int32_t count;
static uint8_t out[MFN_OUTPUT_BYTES];

static void hook(int32_t layer, void *context)
{
    (void)context;
    if (count <= MFN_LAYER_COUNT) {
        seen[count] = layer;
    }
    ++count;
}

int main(void)
{
    int32_t i;
    if (fread(mfn_model_input(), 1, MFN_INPUT_BYTES, stdin) != MFN_INPUT_BYTES) {
        return 2;
    }
    mfn_model_run(mfn_model_input(), out, hook, NULL);
    fwrite(out, 1, sizeof out, stdout);
    for (i = 0; i < count; ++i) {
        fprintf(stderr, "%d\n", (int)seen[i]);
    }
    return 0;
}
"""


@needs_gcc
def test_pixels_uploaded_into_the_arena_and_the_hook_sees_every_layer_once(tmp_path):
    graph = _bottlenecks()
    main = tmp_path / "hook_main.c"
    main.write_text(HOOK_MAIN)
    binary, plan = build(graph, tmp_path / "m", "all", main)
    header = (tmp_path / "m" / "model.h").read_text()
    assert f"#define MFN_INPUT_OFFSET {plan.input_offset}" in header
    assert f"#define MFN_FUSED_PAIRS {len(plan.fused)}" in header and len(plan.fused) == 4
    image = _images(graph, 1)
    proc = subprocess.run(
        [str(binary)], input=image[0].transpose(1, 2, 0).tobytes(), capture_output=True, timeout=60, check=True
    )
    assert np.array_equal(np.frombuffer(proc.stdout, np.int8), golden_as_device(graph, image)[0])
    layers = sum(n.op != "reshape" for n in graph.nodes)
    assert [int(v) for v in proc.stderr.split()] == list(range(layers))


# --- the real models -----------------------------------------------------------------


def _quantized(spec: str, pre: str) -> QGraph:
    graph = _lowered(spec, pre)
    return quantize(graph, observe_ranges(graph, synthetic_eval_set(2, seed=4)[0], "minmax"), "fused")


@pytest.fixture(scope="module")
def family() -> QGraph:
    return _quantized("mobilefacenet", "paper")


def test_mobilefacenet_fits_one_512_kib_sram_bank(family):
    plan = plan_arena(family)
    check_plan(family, plan)
    _simulate(family, plan)
    assert plan.arena_bytes <= KIB512, plan.summary()  # 222,208 B when written
    assert plan.unfused_arena_bytes > plan.arena_bytes and plan.fused == [("block1_1_expand", "block1_1_dw")]
    expanded = family.tensors["block1_1_expand_prelu"]
    assert int(np.prod(expanded.shape)) == 56 * 56 * 128 and "block1_1_expand_prelu" not in plan.offsets


def test_foamliu_fits_one_512_kib_sram_bank():
    if not FOAMLIU.exists():
        pytest.skip("real model not present")
    graph = _quantized(str(FOAMLIU), "imagenet")
    plan = plan_arena(graph)
    check_plan(graph, plan)
    _simulate(graph, plan)
    assert plan.arena_bytes <= KIB512, plan.summary()  # 222,208 B when written
    assert len(plan.fused) >= 1


def test_mobilefacenet_constants_fit_1_15_mib_of_flash(family, tmp_path):
    plan = emit_c(family, tmp_path, fuse="auto")
    assert plan.flash_bytes <= FLASH_LIMIT, plan.flash_bytes  # 1,168,575 B when written
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("no arm-none-eabi-gcc to measure the Cortex-M object")
    flags = ["-std=c99", "-Os", "-mcpu=cortex-m7", "-mthumb", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME_DIR}"]
    sizes = {}
    for src in (tmp_path / "model.c", RUNTIME_DIR / "mfn_kernels.c"):
        obj = tmp_path / f"{src.stem}.o"
        subprocess.run(["arm-none-eabi-gcc", *flags, f"-I{tmp_path}", "-c", str(src), "-o", str(obj)], check=True)
        listing = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], capture_output=True, text=True, check=True)
        for line in listing.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                sizes[(src.stem, parts[0])] = int(parts[1])
    constants = sum(v for (stem, sec), v in sizes.items() if stem == "model" and sec.startswith(".rodata"))
    flash = sum(v for (_, sec), v in sizes.items() if sec.startswith((".text", ".rodata", ".data")))
    assert abs(constants - plan.flash_bytes) <= 64, (constants, plan.flash_bytes)
    assert flash <= FLASH_LIMIT, flash
    assert sizes[("model", ".bss.mfn_arena")] == plan.arena_bytes
