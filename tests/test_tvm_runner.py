"""The TVM device program (compiler/backends/tvm_runner.py, firmware/tvm/): built for
this x86_64 host and for rk3399 (aarch64, run under qemu-aarch64 with the icount
plugin), it speaks the HIL protocol and returns the golden's outputs bit for bit, on
the tiny model and on the full MobileFaceNet.

The aarch64 runtime comes from the apache-tvm / apache-tvm-ffi aarch64 wheels, fetched
once into the mfnc cache (~100 MB): without network the rk3399 cases are skipped
(a failure under CI=true).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from calibration.observers import observe_ranges
from calibration.quantizer import quantize
from compiler.backends.c_host import golden_as_device
from compiler.errors import BadInput, ExternalFailure
from compiler.frontend import load_model
from compiler.hil.link import DeviceLink
from compiler.hil.session import run_inputs
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from compiler.targets import Target, load_target
from tests.conftest import FRIENDS
from tests.device_helpers import TINY_SIZE, tiny_qgraph

try:
    import tvm  # noqa: F401

    from compiler.backends import tvm_runner
except ImportError as exc:  # apache-tvm is pinned in requirements.lock
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"needs apache-tvm ({exc})", allow_module_level=True)

AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
TOOLS = {
    "x86_64": ("gcc", "g++"),
    "rk3399": ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "qemu-aarch64"),
}
CI = os.environ.get("CI") == "true"
# The aarch64 runtime is ~100 MB of wheels: kept across sessions in the repo's ignored
# .mfnc-cache/ (not the per-session MFNC_CACHE_DIR of conftest), or where the variable says.
RUNTIME_CACHE = Path(
    os.environ.get("MFNC_TVM_RUNTIME_CACHE") or Path(__file__).resolve().parents[1] / ".mfnc-cache" / "tvm-runtime"
)


def _skip_or_fail(reason: str) -> None:
    if CI:
        pytest.fail(f"CI must have {reason}")
    pytest.skip(f"needs {reason}")


def _target(name: str) -> Target:
    missing = [tool for tool in TOOLS[name] if shutil.which(tool) is None]
    if name == "rk3399" and not (AARCH64_SYSROOT / "lib" / "libstdc++.so.6").exists():
        missing.append(f"the arm64 sysroot {AARCH64_SYSROOT} (libstdc++6-arm64-cross)")
    if missing:
        _skip_or_fail(", ".join(missing))
    return load_target(name)


def _build(qgraph, target: Target, out: Path, model_hash: str) -> Path:
    if target.cpu.arch == "aarch64":
        try:
            tvm_runner.aarch64_runtime(RUNTIME_CACHE)
        except ExternalFailure as exc:
            _skip_or_fail(f"the aarch64 TVM runtime wheels ({exc})")
    return tvm_runner.build_runner(qgraph, target, out, model_hash, cache=RUNTIME_CACHE).program


def _command(program: Path, target: Target, workdir: Path) -> list[str]:
    """How to start the runner here: natively, or under qemu-aarch64 with the icount plugin."""
    if target.cpu.arch == "x86_64":
        return [str(program)]
    from compiler.hil.icount import build_plugin, qemu_user_command

    plugin = build_plugin(workdir / "plugin")
    return qemu_user_command(program, plugin, workdir / "icount.bin", cpu=target.cpu.primary.core)


def _link(program: Path, target: Target, workdir: Path) -> DeviceLink:
    from compiler.hil.pipe import PipePort

    return DeviceLink(f"pipe:{program}", port=PipePort(_command(program, target, workdir)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_qgraph(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def full():
    """MobileFaceNet (deterministic weights), int8, calibrated on 2 images; 2 test images."""
    graph = load_model("mobilefacenet").graph
    for _, fn in pipeline(parse_preprocess("paper")):
        graph = fn(graph)
    images = synthetic_eval_set(4, seed=4)[0]
    if FRIENDS.exists():
        from compiler.faces import list_images, load_images

        images[-2:] = load_images(list_images(FRIENDS)[:2], 112, 112)[0]
    qgraph = quantize(graph, observe_ranges(graph, images[:2], "minmax"), "fused")
    return qgraph, np.ascontiguousarray(images[2:])


@pytest.mark.parametrize("name", list(TOOLS))
def test_tiny_runner_speaks_the_protocol_and_is_bit_exact(tmp_path, tiny, name):
    target = _target(name)
    program = _build(tiny, target, tmp_path / "runner", "tiny-hash")
    assert {p.name for p in program.parent.iterdir()} >= {"mfn_tvm_runner", "model.so", *tvm_runner.RUNTIME_LIBS}
    pixels = synthetic_eval_set(3, seed=9)[0][:, :, :TINY_SIZE, :TINY_SIZE]
    with _link(program, target, tmp_path) as link:
        info = link.info()
        assert info["backend"] == "tvm"
        assert info["target"] == name
        assert info["model"] == "tiny-hash"
        assert info["input_shape"] == f"{TINY_SIZE}x{TINY_SIZE}x3"
        assert info["input_bytes"] == str(TINY_SIZE * TINY_SIZE * 3)
        assert (info["output_count"], info["output_dtype"], info["layers"]) == ("8", "int8", "1")
        assert info["counter"] == ("us" if name == "x86_64" else "instructions")
        runs = run_inputs(link, pixels, warmup=1, timed=2, per_layer=True)
    np.testing.assert_array_equal(runs.outputs, golden_as_device(tiny, pixels))
    assert len(runs.elapsed) == 6 and all(e > 0 for e in runs.elapsed)
    assert runs.layers is not None and len(runs.layers) == 1 and runs.layers[0] > 0


@pytest.mark.parametrize("name", list(TOOLS))
def test_full_model_runner_is_bit_exact(tmp_path, full, name):
    qgraph, pixels = full
    target = _target(name)
    program = _build(qgraph, target, tmp_path / "runner", "mfn-hash")
    with _link(program, target, tmp_path) as link:
        runs = run_inputs(link, pixels, warmup=1, timed=2)
    expected = golden_as_device(qgraph, pixels)
    assert len(np.unique(expected)) > 20, "informative outputs, not saturated ones"
    mismatches = [int(np.sum(d != e)) for d, e in zip(runs.outputs, expected, strict=True)]
    assert mismatches == [0] * len(pixels), f"elements differing from the golden, per image: {mismatches}"
    unit = runs.info["counter"]
    print(f"{name}: TVM runner untuned, median {np.median(runs.elapsed):.0f} {unit} per image")


def test_rk3399_bundle_has_an_a53_library_that_runs_bit_exact_on_a_cortex_a53(tmp_path, tiny):
    from compiler.hil.icount import build_plugin, qemu_user_command
    from compiler.hil.pipe import PipePort

    target = _target("rk3399")
    program = _build(tiny, target, tmp_path / "runner", "tiny-hash")
    a53 = program.parent / "model-cortex-a53.so"
    assert a53.is_file() and a53.read_bytes() != (program.parent / "model.so").read_bytes()
    plugin = build_plugin(tmp_path / "plugin")
    command = qemu_user_command(program, plugin, tmp_path / "icount.bin", cpu="cortex-a53", args=[a53.name])
    pixels = synthetic_eval_set(2, seed=5)[0][:, :, :TINY_SIZE, :TINY_SIZE]
    with DeviceLink("pipe:a53", port=PipePort(command)) as link:
        runs = run_inputs(link, pixels, warmup=0, timed=1)
    np.testing.assert_array_equal(runs.outputs, golden_as_device(tiny, pixels))


def test_runner_without_its_library_exits_2_with_one_line(tmp_path, tiny):
    target = _target("x86_64")
    program = _build(tiny, target, tmp_path / "runner", "tiny-hash")
    proc = subprocess.run(
        [str(program), str(tmp_path / "missing.so")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mfn_tvm_runner: ") and "missing.so" in lines[0]


def test_build_refuses_targets_it_cannot_serve(tmp_path, tiny):
    with pytest.raises(BadInput, match="Linux"):
        tvm_runner.build_runner(tiny, load_target("mps3-an547"), tmp_path, "h")
    host = load_target("x86_64")
    no_cxx = dataclasses.replace(host, toolchain=dataclasses.replace(host.toolchain, cxx="no-such-g++"))
    with pytest.raises(ExternalFailure, match="no-such-g\\+\\+: not installed"):
        tvm_runner.build_runner(tiny, no_cxx, tmp_path, "h")
