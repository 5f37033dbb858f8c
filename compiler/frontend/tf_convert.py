"""Keras, SavedModel and float TFLite -> ONNX through tf2onnx, in a subprocess.

TensorFlow is slow to import, noisy, and can abort the process on odd inputs, so each
conversion runs in its own interpreter with a timeout. Keras files are first exported
to a SavedModel (Keras 3's own `model.export`), the format tf2onnx reads most reliably.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from compiler.errors import BadInput, ExternalFailure

CONVERT_TIMEOUT_S = 600
OPSET = 17

_KERAS_TO_SAVEDMODEL = """
import sys
import keras
model = keras.models.load_model(sys.argv[1], compile=False)
model.export(sys.argv[2], format="tf_saved_model", verbose=False)
"""


def _run(cmd: list[str], what: str, source: Path) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"{source}: {what} timed out after {CONVERT_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln] or lines or ["no output"]
        raise BadInput(f"{source}: {what} failed: {errors[-1][:300]}")


def to_onnx(source: Path, kind: str, workdir: Path) -> Path:
    """Convert a TensorFlow-family model to ONNX in `workdir`; returns the ONNX path."""
    out = workdir / "converted.onnx"
    tf2onnx = [sys.executable, "-m", "tf2onnx.convert", "--opset", str(OPSET), "--output", str(out)]
    if kind == "tflite":
        _run([*tf2onnx, "--tflite", str(source)], "TFLite conversion (tf2onnx)", source)
    elif kind == "savedmodel":
        _run([*tf2onnx, "--saved-model", str(source)], "SavedModel conversion (tf2onnx)", source)
    elif kind == "keras":
        saved = workdir / "saved_model"
        _run([sys.executable, "-c", _KERAS_TO_SAVEDMODEL, str(source), str(saved)], "loading the Keras model", source)
        _run([*tf2onnx, "--saved-model", str(saved)], "SavedModel conversion (tf2onnx)", source)
    else:
        raise ValueError(kind)
    if not out.exists():
        raise BadInput(f"{source}: tf2onnx produced no model")
    return out


def convert_in_tempdir(source: Path, kind: str) -> bytes:
    """Convert and return the ONNX bytes, leaving nothing behind on disk."""
    with tempfile.TemporaryDirectory(prefix="mfnc-convert-") as tmp:
        return to_onnx(source, kind, Path(tmp)).read_bytes()
