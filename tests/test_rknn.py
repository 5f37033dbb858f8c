"""The Rockchip NPU backend: rknn-toolkit2 in its own virtualenv, one process per
conversion, checked in the toolkit's simulator against our float reference.

The tiny 48x48 model keeps a conversion to ~3 s. The toolkit's virtualenv is created
on first use in the repository's ignored .mfnc-cache/ (or $MFNC_RKNN_VENV); without
network and without a cached one the tests skip (and fail under CI=true).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compiler.errors import ExternalFailure
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.device_helpers import TINY_SIZE

QUICK = ["--synthetic", "8", "--eval-limit", "6"]


@pytest.fixture(scope="module")
def toolkit():
    from compiler.backends import rknn_env

    try:
        return rknn_env.toolkit_python()
    except ExternalFailure as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"rknn-toolkit2 cannot be installed here ({exc})")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    import onnx

    from tests.onnx_builders import conv_bn_prelu, seeded

    path = tmp_path_factory.mktemp("rknn") / "tiny.onnx"
    with seeded():
        onnx.save(conv_bn_prelu(TINY_SIZE), path)
    return path


def _build(capsys, out: Path, model: Path, target: str = "rk3588", *extra: str) -> tuple[int, dict | None, str]:
    code, stdout, err = run_cli(
        capsys, "build", "--target", target, "--model", model, *QUICK, *extra, "--out", out, "--json", "-"
    )
    report = json.loads(stdout) if stdout.strip() else None
    return code, report, err


def test_npu_build_is_checked_in_the_simulator(capsys, tmp_path, toolkit, tiny_onnx):
    code, report, err = _build(capsys, tmp_path / "rk3588", tiny_onnx)
    assert code == 0, err
    assert report["backend"] == "rknn" and "NPU" in report["backend_reason"]  # auto on an NPU chip
    q = report["quantization"]
    assert q["mode"] == "rknn" and q["passed"] and q["n_eval"] == 6 and q["n_calib"] == 8
    assert 0.99 <= q["mean_cosine"] <= 1.0 and q["min_cosine"] <= q["mean_cosine"]
    assert [s["step"] for s in q["ladder"]] == ["int8 normal"]  # passed at once: no escalation
    # the toolkit's per-layer analysis, worst layer first
    layers = q["layers"]
    assert len(layers) >= 5 and all(0.9 < r["cosine_single"] <= 1.0001 for r in layers)
    assert [r["cosine_single"] for r in layers] == sorted(r["cosine_single"] for r in layers)
    assert q["worst_layers"][0] == layers[0]["layer"] and any(r["op"] == "Conv" for r in layers)
    rknn = report["rknn"]
    assert rknn["platform"] == "rk3588" and rknn["std"] == [128.0, 128.0, 128.0]  # normalised once, by the NPU
    model = Path(rknn["model"])
    assert model.is_file() and model.stat().st_size == report["memory"]["rknn_bytes"] > 10_000
    inputs = Path(rknn["inputs"])
    assert len(list((inputs / "calib").glob("*.npy"))) == 8 and (inputs / "model.onnx").is_file()
    assert (tmp_path / "rk3588" / "report.html").is_file()


def test_hil_emulate_rebuilds_in_the_simulator_and_port_is_refused(capsys, tmp_path, toolkit, tiny_onnx):
    out = tmp_path / "rk3568"
    code, _, err = _build(capsys, out, tiny_onnx, "rk3568")
    assert code == 0, err
    code, stdout, err = run_cli(
        capsys, "hil", "--target", "rk3568", "--emulate", "--build", out, "--synthetic", "4", "--json", "-"
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["backend"] == "rknn" and result["transport"] == "simulator" and result["n_inputs"] == 4
    assert result["bit_exact"] is None  # the NPU has no golden of ours
    assert result["cosine_vs_float"]["mean"] >= 0.99
    assert result["device"]["rebuilt_identical_outputs"] is True  # the check ran the model the build wrote
    code, _, err = run_cli(capsys, "hil", "--target", "rk3568", "--port", "socket://127.0.0.1:9", "--build", out)
    assert code == 2
    assert_one_line_error(err, "NPU (rknn) build", "--emulate")
    code, _, err = run_cli(capsys, "flash", "--target", "rk3568", "--build", out, "--dry-run")
    assert code == 2
    assert_one_line_error(err, "NPU (rknn) build without its board program", "--rknn-sdk")


def test_a_strict_gate_climbs_the_ladder_to_fp16(capsys, tmp_path, toolkit, tiny_onnx):
    code, report, err = _build(capsys, tmp_path / "strict", tiny_onnx, "rk3588", "--gate-cosine", "0.9999")
    assert code == 0, err
    q = report["quantization"]
    steps = q["ladder"]
    assert [s["step"] for s in steps] == ["int8 normal", "int8 mmse", "int8 mmse + hybrid", "fp16"]
    assert [s["passed"] for s in steps] == [False, False, False, True]
    assert all("mean cosine" in s["failures"][0] for s in steps[:3])
    assert q["step"] == "fp16" and q["algorithm"] == "fp16" and q["passed"] and q["mean_cosine"] >= 0.9999


def test_rv1106_never_tries_fp16_and_a_failed_ladder_exits_3(capsys, tmp_path, toolkit, tiny_onnx):
    from compiler.backends.rknn_backend import ladder

    assert [s.name for s in ladder("rv1106")] == ["int8 normal", "int8 mmse", "int8 mmse + hybrid"]
    assert ladder("rk3568")[-1].quantize is False
    code, _, err = _build(capsys, tmp_path / "rv1106", tiny_onnx, "rv1106", "--gate-cosine", "0.9999")
    assert code == 3
    assert_one_line_error(err, "accuracy gate failed")
    q = json.loads((tmp_path / "rv1106" / "report.json").read_text())["quantization"]
    steps = q["ladder"]
    assert [s["step"] for s in steps] == ["int8 normal", "int8 mmse", "int8 mmse + hybrid"]
    assert not any(s["passed"] for s in steps)
    assert q["mean_cosine"] == max(s["mean_cosine"] for s in steps)  # the most accurate conversion is kept
    assert (tmp_path / "rv1106" / "rknn" / "model.rknn").is_file()


def test_a_toolkit_crash_is_exit_5_with_its_log(capsys, tmp_path, toolkit, tiny_onnx, monkeypatch):
    monkeypatch.setenv("MFNC_RKNN_WORKER_FAULT", "abort")
    code, _, err = _build(capsys, tmp_path / "crash", tiny_onnx)
    assert code == 5
    assert_one_line_error(err, "rknn-toolkit2 crashed (SIGABRT)", "toolkit.log")
    assert not (tmp_path / "crash").exists()  # no half-written artifact


def test_quantized_model_files_are_refused_for_the_npu(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "build", "--target", "rk3588", "--model", tmp_path / "m.mfnq", "--out", tmp_path / "o"
    )
    assert code == 2
    assert_one_line_error(err, "m.mfnq", "float model")


FAKE_SDK = Path(__file__).resolve().parent / "fakes" / "rknn_sdk"


@pytest.fixture(scope="module")
def fake_sdk(tmp_path_factory) -> Path:
    """Our stand-in for Rockchip's runtime: the API header and a fake librknnrt.so (aarch64)."""
    import shutil
    import subprocess

    from tests.device_helpers import require_tools

    require_tools("rk3399")  # aarch64 cross compiler and qemu-aarch64
    sdk = tmp_path_factory.mktemp("sdk")
    shutil.copytree(FAKE_SDK / "include", sdk / "include")
    (sdk / "aarch64").mkdir()
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC", f"-I{sdk / 'include'}"]
    library = sdk / "aarch64" / "librknnrt.so"
    subprocess.run(
        ["aarch64-linux-gnu-gcc", *flags, str(FAKE_SDK / "fake_rknnrt.c"), "-o", str(library)], check=True, timeout=120
    )
    return sdk


def test_board_program_builds_with_an_sdk_and_serves_the_protocol(capsys, tmp_path, toolkit, tiny_onnx, fake_sdk):
    import shutil
    import struct

    import numpy as np

    from compiler.hil.link import DeviceLink
    from compiler.hil.pipe import PipePort
    from compiler.hil.session import run_inputs
    from compiler.synthetic import synthetic_eval_set

    out = tmp_path / "with-sdk"
    code, report, err = _build(capsys, out, tiny_onnx, "rk3588", "--rknn-sdk", str(fake_sdk))
    assert code == 0, err
    assert report["rknn"]["board_program"]["built"] is True
    program = Path(report["rknn"]["firmware"]["program"])
    assert program == out / "rknn" / "mfn_rknn_runner" and program.is_file()
    assert not (program.parent / "librknnrt.so").exists()  # the proprietary runtime is never bundled
    # on the "board": the fake runtime next to the program, and a fake model of 8 outputs
    shutil.copy2(fake_sdk / "aarch64" / "librknnrt.so", program.parent / "librknnrt.so")
    (tmp_path / "fake.rknn").write_bytes(b"FAKERKNN" + struct.pack("<I", 8))
    command = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(program), str(tmp_path / "fake.rknn")]
    pixels = synthetic_eval_set(2, seed=3)[0][:, :, :TINY_SIZE, :TINY_SIZE]
    with DeviceLink("pipe:rknn", port=PipePort(command)) as link:
        info = link.info()
        assert (info["backend"], info["kernels"], info["output_dtype"], info["output_count"]) == (
            "rknn",
            "npu",
            "float32",
            "8",
        )
        assert info["target"] == "rk3588" and info["input_shape"] == f"{TINY_SIZE}x{TINY_SIZE}x3"
        runs = run_inputs(link, pixels, warmup=0, timed=1)
    hwc = pixels.transpose(0, 2, 3, 1).reshape(len(pixels), -1).astype(np.float64)
    expected = np.stack([[row[k::8].mean() for k in range(8)] for row in hwc]).astype(np.float32)
    np.testing.assert_array_equal(runs.outputs, expected)  # the frame reached the runtime as NHWC uint8

    # flash: the program and model.rknn only (never the calibration inputs or a runtime)
    code, stdout, err = run_cli(
        capsys, "flash", "--target", "rk3588", "--build", out, "--host", "me@board", "--dry-run"
    )
    assert code == 0, err
    copy = next(line for line in stdout.splitlines() if line.startswith("scp"))
    assert copy.endswith("me@board:/tmp/mfnc-device-bundle/") and "model.rknn" in copy and "inputs" not in copy

    # hil --port against the program served on a TCP port (qemu-aarch64 + socat stand in for the board)
    from compiler.hil import emulate
    from compiler.targets import load_target

    (out / "rknn" / "model.rknn").write_bytes(b"FAKERKNN" + struct.pack("<I", 8))  # what the fake runtime loads
    board = emulate.start(load_target("rk3588"), program, tmp_path / "board")
    try:
        code, stdout, err = run_cli(
            capsys, "hil", "--target", "rk3588", "--port", board.url, "--build", out, "--synthetic", "2", "--json", "-"
        )
    finally:
        board.stop()
    assert code == 0, err
    result = json.loads(stdout)
    assert result["backend"] == "rknn" and result["transport"] == "socket" and result["n_inputs"] == 2
    assert result["bit_exact"] is None and result["device"]["kernels"] == "npu"
    assert result["latency"]["unit"] == "instructions" and result["latency"]["median"] > 0
    assert result["cosine_vs_float"] is not None  # computed (meaningless here: the fake runtime is no network)


def test_an_sdk_without_the_runtime_is_refused(capsys, tmp_path, toolkit, tiny_onnx):
    (tmp_path / "sdk" / "include").mkdir(parents=True)
    (tmp_path / "sdk" / "include" / "rknn_api.h").write_text("/* header only */\n")
    code, _, err = _build(capsys, tmp_path / "o", tiny_onnx, "rk3588", "--rknn-sdk", str(tmp_path / "sdk"))
    assert code == 2
    assert_one_line_error(err, "--rknn-sdk", "librknnrt.so for aarch64")


def test_nhwc_models_get_an_nchw_front_for_the_toolkit(capsys, tmp_path, toolkit):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from compiler.backends.rknn_backend import nchw_front
    from tests.onnx_builders import decomposed_prelu_nhwc

    nhwc = decomposed_prelu_nhwc(12)
    front = nchw_front(nhwc)
    x = np.random.default_rng(0).standard_normal((1, 12, 12, 3)).astype(np.float32)
    run = lambda m, v: ort.InferenceSession(m.SerializeToString()).run(None, {m.graph.input[0].name: v})[0]  # noqa: E731
    np.testing.assert_array_equal(run(front, x.transpose(0, 3, 1, 2).copy()), run(nhwc, x))
    # and such a model builds and checks on the NPU
    onnx.save(nhwc, tmp_path / "nhwc.onnx")
    code, report, err = _build(capsys, tmp_path / "nhwc", tmp_path / "nhwc.onnx")
    assert code == 0, err
    assert report["model"]["source_layout"] == "NHWC" and report["quantization"]["mean_cosine"] > 0.99
