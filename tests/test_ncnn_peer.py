"""ncnn as a benchmark peer: pnnx converts our default ONNX model, and ncnn's fp32
embedding of a held-out synthetic face matches onnxruntime's (cosine > 0.9999).

Skips only when the ncnn wheel (pinned in requirements.lock) is not installed; a missing
pnnx is fetched by bench.ncnn_peer itself. Takes ~1-2 s (conversion ~0.5 s).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import ncnn_peer
from compiler.frontend import DEFAULT_MODEL_PATH
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set


@pytest.fixture(scope="module")
def ncnn_ready() -> None:
    try:
        import ncnn  # noqa: F401
    except ImportError:
        pytest.skip(ncnn_peer.available() or "ncnn is not installed")
    reason = ncnn_peer.available()
    assert reason is None, reason


def _onnxruntime(image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(DEFAULT_MODEL_PATH), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0].reshape(-1)


def test_ncnn_embedding_matches_onnxruntime(ncnn_ready, tmp_path):
    param, bin_ = ncnn_peer.convert(DEFAULT_MODEL_PATH, tmp_path)
    assert param.stat().st_size > 0 and bin_.stat().st_size > 3_000_000  # fp32 weights, not fp16
    assert ncnn_peer.convert(DEFAULT_MODEL_PATH, tmp_path) == (param, bin_)  # cached

    image = parse_preprocess("paper").normalize(synthetic_eval_set(2, seed=5)[0][:1])
    run = ncnn_peer.make_engine(param, bin_, threads=1, image_nchw=image)
    got = run()
    assert got.dtype == np.float32 and got.shape == (128,)
    np.testing.assert_array_equal(run(), got)  # repeatable

    want = _onnxruntime(image)
    cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine > 0.9999, f"ncnn vs onnxruntime cosine {cosine:.6f}"


def test_convert_failure_is_a_clear_error(ncnn_ready, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeError, match="not a readable ONNX model"):
        ncnn_peer.convert(bad, tmp_path / "work")
