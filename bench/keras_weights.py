"""The shipped default model as a Keras model, so TensorFlow's own int8 converter can
quantize exactly the model we quantize.

`compiler/models/default.onnx` was exported from the Keras `mobilefacenet` family
definition by our exporter, which keeps the Keras layer names (`conv1`, `conv1_bn`,
`conv1_prelu`, ...). Building that architecture and loading the ONNX initializers back
by name (OIHW -> HWIO kernels, BatchNorm scale/bias/mean/var, PReLU slopes) gives the
same function; `load` checks it against onnxruntime before anyone uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

TOLERANCE = 1e-4  # max|keras - onnxruntime| / max|onnxruntime|


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def load(onnx_path: Path, family: str = "mobilefacenet"):
    """The Keras family model carrying the ONNX model's weights, verified on random input."""
    from compiler.family import build_keras_model
    from compiler.family.mobilefacenet import import_keras

    keras = import_keras()
    model = build_keras_model(family, seed=None)
    weights = _initializers(onnx_path)
    used = set()
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            w = weights[f"{name}.weight"]  # [C, 1, kh, kw]
            layer.set_weights([w.transpose(2, 3, 0, 1)])
            used.add(f"{name}.weight")
        elif isinstance(layer, keras.layers.Conv2D):
            w = weights[f"{name}.weight"]  # [O, I, kh, kw]
            layer.set_weights([w.transpose(2, 3, 1, 0)])
            used.add(f"{name}.weight")
        elif isinstance(layer, keras.layers.BatchNormalization):
            keys = [f"{name}.{k}" for k in ("scale", "bias", "mean", "var")]
            layer.set_weights([weights[k] for k in keys])
            used.update(keys)
        elif isinstance(layer, keras.layers.PReLU):
            slope = weights[f"{name}.slope"]
            layer.set_weights([slope.reshape(1, 1, -1)])
            used.add(f"{name}.slope")
    left = set(weights) - used
    if left:
        raise ValueError(f"{onnx_path}: initializers with no Keras layer: {', '.join(sorted(left)[:5])}")
    _check(model, onnx_path)
    return model


def _check(model, onnx_path: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    expected = session.run(None, {name: x})[0]
    got = model(x.transpose(0, 2, 3, 1), training=False).numpy()
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    if error > TOLERANCE:
        raise ValueError(f"{onnx_path}: the Keras copy differs from onnxruntime by {error:.2e} (> {TOLERANCE})")
