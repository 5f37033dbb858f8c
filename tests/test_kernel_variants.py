"""The optimised kernel variants (NEON, Helium/MVE, Armv7E-M DSP, AVX2) compute exactly
what the portable kernels and the golden simulator compute (docs/kernels.md).

Two levels, on every device target (x86_64 natively, rk3399 under qemu-aarch64, the
Cortex-M55 and Cortex-M7 boards under qemu-system-arm):

- kernel level: firmware/runtime/tests/kernel_check.c runs the optimised row routines
  and the portable ones side by side on random shapes and values, corner cases
  included (extreme multipliers and shifts, biases past int32, weights of -128,
  padding rows, pad values outside int8, int16 inputs and outputs), built with the
  target's own compiler and flags; on the boards it is a bare-metal program that
  prints over the emulated UART;
- model level: the device program (auto kernels) returns the golden simulator's
  integers for the PReLU MobileFaceNet (int8), its int16 variant and the real ReLU6
  model with per-channel mean padding.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from calibration.observers import observe_ranges
from calibration.quantizer import quantize
from compiler.backends.c_host import golden_as_device
from compiler.frontend import load_model
from compiler.hil.link import DeviceLink
from compiler.hil.session import run_inputs
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from compiler.targets import Target
from tests.conftest import FOAMLIU, FRIENDS
from tests.device_helpers import DEVICE_TARGETS, build_device, open_device, require_tools

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "firmware" / "runtime"
CHECK_SOURCE = RUNTIME / "tests" / "kernel_check.c"
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
EXPECTED_VARIANT = {"x86_64": "avx2", "rk3399": "neon", "mps3-an547": "mve", "mps2-an500": "dsp"}
# Random cases per target: the emulated ones run slower.
CASES = {"x86_64": 20000, "rk3399": 8000, "mps3-an547": 3000, "mps2-an500": 3000}


def _x86_has_avx2() -> bool:
    out = subprocess.run(["gcc", "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True)
    return "__AVX2__" in out.stdout


def _board_flags(board: str) -> dict[str, str]:
    """The board.mk contract (CC, BOARD_CFLAGS, BOARD_LDFLAGS, BOARD_SOURCES)."""
    out = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "firmware" / "boards" / "tests"), "print-board", f"BOARD={board}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(line.split("=", 1) for line in out.stdout.strip().splitlines())


def build_check(target: Target, out: Path, cases: int, extra: tuple[str, ...] = ()) -> Path:
    """kernel_check for `target`, compiled with the target's compiler and optimisation flags."""
    out.mkdir(parents=True, exist_ok=True)
    program = out / "kernel_check"
    sources = [str(CHECK_SOURCE), str(RUNTIME / "mfn_kernels.c")]
    if target.os == "baremetal":
        board = _board_flags(target.name)
        opt = [f for f in target.toolchain.cflags if f.startswith("-O")]
        cmd = [board["CC"], *STRICT, *opt, *shlex.split(board["BOARD_CFLAGS"]), "-DMFN_CHECK_BOARD"]
        cmd += [f"-DCHECK_CASES={cases}", *extra, f"-I{RUNTIME}", *sources, *shlex.split(board["BOARD_SOURCES"])]
        cmd += [*shlex.split(board["BOARD_LDFLAGS"]), "-o", str(program)]
    else:
        static = ["-static"] if target.cpu.arch == "aarch64" else []
        cmd = [target.toolchain.cc, *STRICT, *target.toolchain.cflags, *extra, f"-I{RUNTIME}", *sources, *static]
        cmd += ["-o", str(program)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return program


def run_check(target: Target, program: Path, workdir: Path, cases: int, seed: int = 1) -> str:
    """The harness's result line."""
    if target.emulation.kind == "native":
        proc = subprocess.run([str(program), str(cases), str(seed)], capture_output=True, text=True, timeout=300)
        return proc.stdout.strip()
    if target.emulation.kind == "qemu-user":
        cpu = target.emulation.cpu or "cortex-a72"
        sysroot = target.emulation.sysroot or "/usr/aarch64-linux-gnu"
        cmd = ["qemu-aarch64", "-cpu", cpu, "-L", sysroot, str(program), str(cases), str(seed)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout.strip()
    from compiler.hil import emulate
    from compiler.hil.link import open_port

    board = emulate.start(target, program, workdir)
    try:
        port = open_port(board.url, 115200, 10.0)
        text, deadline = b"", time.monotonic() + 240
        try:
            while b"kernel-check end" not in text and time.monotonic() < deadline:
                text += port.read(max(1, port.in_waiting))
        finally:
            port.close()
    finally:
        board.stop()
    return text.decode(errors="replace").replace("kernel-check end", "").strip()


@pytest.mark.parametrize("name", list(DEVICE_TARGETS))
def test_optimised_row_routines_equal_the_portable_ones_on_random_data(tmp_path, name):
    target = require_tools(name)
    if name == "x86_64" and not _x86_has_avx2():
        pytest.skip("this host has no AVX2: the x86_64 build uses the portable kernels")
    cases = CASES[name]
    program = build_check(target, tmp_path / "check", cases)
    line = run_check(target, program, tmp_path / "emu", cases)
    assert line.endswith(" ok"), line
    assert f"variant={EXPECTED_VARIANT[name]} cases={cases} " in line, line
    counts = dict(part.split("=") for part in line.split()[1:-1])
    assert all(int(counts[kind]) > cases // 10 for kind in ("pointwise", "depthwise", "dense", "add")), line


def test_portable_build_and_the_harness_catches_a_wrong_kernel(tmp_path):
    """-DMFN_PORTABLE_KERNELS keeps the portable code; a deliberately wrong variant is caught."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    from compiler.targets import load_target

    host = load_target("x86_64")
    program = build_check(host, tmp_path / "portable", 300, ("-DMFN_PORTABLE_KERNELS",))
    assert run_check(host, program, tmp_path, 300).startswith("kernel-check variant=portable cases=300 ")
    if not _x86_has_avx2():
        return
    broken = tmp_path / "broken"
    shutil.copytree(RUNTIME, broken, ignore=shutil.ignore_patterns("tests"))
    x86 = (broken / "mfn_kernels_x86.h").read_text()
    rounding = "_mm256_sub_epi32(half, _mm256_srai_epi32(v, 31))"
    assert rounding in x86
    (broken / "mfn_kernels_x86.h").write_text(x86.replace(rounding, "half"))  # ties no longer away from zero
    cmd = ["gcc", *STRICT, *host.toolchain.cflags, f"-I{broken}", str(CHECK_SOURCE), str(broken / "mfn_kernels.c")]
    subprocess.run([*cmd, "-o", str(tmp_path / "bad")], check=True, capture_output=True, timeout=300)
    line = subprocess.run([str(tmp_path / "bad"), "3000"], capture_output=True, text=True, timeout=300).stdout
    assert "kernel-check MISMATCH variant=avx2" in line, line


# ---- whole models on the device programs ----


def _lowered(spec: str, pre: str):
    graph = load_model(spec).graph
    for _, fn in pipeline(parse_preprocess(pre)):
        graph = fn(graph)
    return graph


def _images(n: int, seed: int) -> np.ndarray:
    images = synthetic_eval_set(n, seed=seed)[0]
    if FRIENDS.exists():
        from compiler.faces import list_images, load_images

        images[: n // 2] = load_images(list_images(FRIENDS)[: n // 2], 112, 112)[0]
    return images


def _model(kind: str):
    """(quantized graph, calibration images) for one of the three model cases."""
    if kind == "foamliu-relu6":
        if not FOAMLIU.exists():
            if os.environ.get("CI") == "true":
                pytest.fail("CI must have the real model")
            pytest.skip("real model not present")
        graph = _lowered(str(FOAMLIU), "imagenet")
    else:
        graph = _lowered("mobilefacenet", "paper")
    images = _images(4, seed=11)
    ranges = observe_ranges(graph, images[:2], "minmax")
    qgraph = quantize(graph, ranges, "fused")
    if kind == "int16":
        gdconv = next(n for n in qgraph.nodes if n.attrs.get("kind") == "gdconv")
        qgraph = quantize(graph, ranges, "fused", frozenset({gdconv.inputs[0], gdconv.output}))
        assert qgraph.tensors[gdconv.inputs[0]].dtype == "int16"
    return qgraph, images[2:]


MODELS = ("mobilefacenet-int8", "int16", "foamliu-relu6")


@pytest.fixture(scope="module")
def models():
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = _model(kind)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("name", list(DEVICE_TARGETS))
def test_device_program_with_optimised_kernels_is_bit_exact(tmp_path, models, name, kind):
    target = require_tools(name)
    qgraph, images = models(kind)
    if target.os == "baremetal":
        images = images[:1]  # the emulated UART takes ~1.5 s per image
    program = build_device(target, qgraph, tmp_path, kind)
    with open_device(target, program, tmp_path / "emu") as port:
        link = DeviceLink("device", port=port)
        runs = run_inputs(link, images, run_timeout_s=300)
    expected = golden_as_device(qgraph, images)
    assert len(np.unique(expected)) > 20, "informative outputs, not saturated ones"
    assert [np.array_equal(d, e) for d, e in zip(runs.outputs, expected, strict=True)] == [True] * len(images)
