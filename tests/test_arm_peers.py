"""Peer engines' instruction counts under qemu-aarch64 -cpu cortex-a72 (bench/arm_peers.py).

One real run: our int8 .tflite export of the default model (minmax on 4 synthetic faces,
no TensorFlow needed) in LiteRT's aarch64 wheel, emulated with our counting plugin. The
emulated run takes ~5-15 s once the aarch64 sysroot and wheels are cached in
.mfnc-cache/ (the first run downloads ~40 MB of wheels).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench import arm_guest, arm_peers
from calibration.observers import observe_ranges
from calibration.quantizer import quantize
from calibration.tflite_export import export_tflite
from compiler.errors import BadInput, ExternalFailure
from compiler.frontend import load_model
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set

CI = os.environ.get("CI") == "true"
TIMEOUT_S = 300


def _skip_or_fail(reason: str) -> None:
    if CI:
        pytest.fail(f"CI must have {reason}")
    pytest.skip(f"needs {reason}")


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    graph = load_model("default").graph
    for _, fn in pipeline(parse_preprocess("paper")):
        graph = fn(graph)
    faces = synthetic_eval_set(4, seed=3)[0]
    qgraph = quantize(graph, observe_ranges(graph, faces, "minmax"), mode="tflite")
    path = tmp_path_factory.mktemp("arm-peers") / "default-int8.tflite"
    path.write_bytes(export_tflite(qgraph))
    return path


def _host_litert(path: Path) -> np.ndarray:
    """The same inference on this host's LiteRT (XNNPACK), with the guest's input."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = inp["quantization"]
    assert scale * (127 - zero) > 2.0, "our export takes pixels (scale 1, zero point -128)"
    pixels = arm_guest._pixels(np)
    interp.set_tensor(inp["index"], np.clip(np.round(pixels / scale) + zero, -128, 127).astype(np.int8)[None])
    interp.invoke()
    o_scale, o_zero = out["quantization"]
    return ((interp.get_tensor(out["index"]).astype(np.float32) - o_zero) * o_scale).ravel()


def test_litert_int8_count_under_emulation(int8_tflite):
    if shutil.which("qemu-aarch64") is None:
        _skip_or_fail("qemu-aarch64 (apt-get install qemu-user)")
    if shutil.which("gcc") is None:
        _skip_or_fail("gcc (to build the icount plugin)")
    try:
        row = arm_peers.count_instructions("litert", {"model": int8_tflite}, timeout=TIMEOUT_S)
    except ExternalFailure as exc:
        if "download" in str(exc) or "apt-get" in str(exc):
            _skip_or_fail(f"the aarch64 sysroot and wheels ({exc})")
        raise
    assert row["engine"] == "litert" and row["cpu"] == "cortex-a72"
    # ~222 M for the default model (221 M MACs; int8 without dot product, PReLU outside XNNPACK).
    assert 50e6 < row["instructions"] < 2e9, row
    assert 0 < min(row["marker_pairs"]) < 100_000, "an empty marker pair costs a few thousand instructions"
    assert row["output_shape"] == [1, 128]
    # aarch64 LiteRT computes what this host's does (at most one int8 step apart).
    host = _host_litert(int8_tflite)
    guest = np.array(row["output"], dtype=np.float32)
    step = float(np.min(np.abs(np.diff(np.unique(host))))) if len(np.unique(host)) > 1 else 1.0
    assert np.max(np.abs(guest - host)) <= step * 1.01 + 1e-6


def test_bad_engine_and_missing_files_are_refused(tmp_path):
    with pytest.raises(BadInput, match="unknown peer engine"):
        arm_peers.count_instructions("tvm", {"model": tmp_path / "x"})
    with pytest.raises(BadInput, match="needs param, bin"):
        arm_peers.count_instructions("ncnn", {"param": tmp_path / "x.param"})
    with pytest.raises(BadInput, match="does not exist"):
        arm_peers.count_instructions("onnxruntime", {"model": tmp_path / "absent.onnx"})
