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

    from tests.onnx_builders import conv_bn_prelu

    path = tmp_path_factory.mktemp("rknn") / "tiny.onnx"
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
    assert_one_line_error(err, "NPU (rknn) build", "not available in this version yet")


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
