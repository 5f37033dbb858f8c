"""Keras (.keras, .h5), SavedModel and float TFLite models reach the IR through tf2onnx
and, after the passes, compute what the original Keras model computes."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from compiler.equivalence import OnnxReference, random_pixels, relative_error
from compiler.executor import run
from compiler.frontend import load_model
from compiler.passes import EQUIVALENCE_TOLERANCE, run_passes
from compiler.preprocess import parse_preprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

SIZE = 24
PRE = parse_preprocess("bgr:110,120,130:60,64,70")


def _small_prelu_net() -> keras.Model:
    """Stem conv + BN + PReLU, depthwise block with a residual, GDConv, linear head."""
    keras.utils.set_random_seed(3)
    layers = keras.layers
    x = inp = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = layers.BatchNormalization(moving_mean_initializer="random_normal", moving_variance_initializer="ones")(x)
    x = y = layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(0.1, 0.3))(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(0.1, 0.3))(x)
    x = layers.Add()([x, y])
    x = layers.DepthwiseConv2D(SIZE // 2, use_bias=False)(x)
    x = layers.Conv2D(5, 1)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> tuple[keras.Model, dict[str, Path]]:
    import tensorflow as tf

    model = _small_prelu_net()
    root = tmp_path_factory.mktemp("tfmodels")
    paths = {
        "keras": root / "net.keras",
        "h5": root / "net.h5",
        "savedmodel": root / "saved",
        "tflite": root / "net.tflite",
    }
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.export(str(paths["savedmodel"]), verbose=False)
    paths["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return model, paths


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keras", "h5", "savedmodel", "tflite"])
def test_tensorflow_formats_ingest_and_match_keras(saved_models, kind):
    model, paths = saved_models
    loaded = load_model(str(paths[kind]))
    graph = loaded.graph
    assert graph.meta["source_layout"] == "NHWC"
    reference = OnnxReference(loaded.reference, graph.meta["source_input"], "NHWC", PRE)
    images = random_pixels(2, SIZE, SIZE, seed=5)
    lowered, records = run_passes(graph, reference, images, PRE)
    assert all(r.max_rel_err <= EQUIVALENCE_TOLERANCE for r in records)

    ops = Counter(n.op for n in lowered.nodes)
    assert ops["PRelu"] == 2 and ops["Neg"] == 0 and ops["Transpose"] == 0 and ops["BatchNorm"] == 0
    assert lowered.input_shape() == (1, 3, SIZE, SIZE) and lowered.meta["input_kind"] == "pixels"

    # And against Keras itself, fed the same pixels through the same preprocessing.
    for pixels in np.split(images, len(images)):
        expected = model(PRE.normalize(pixels).transpose(0, 2, 3, 1)).numpy()
        ours = next(iter(run(lowered, pixels.astype(np.float32)).values()))
        assert relative_error(ours.reshape(expected.shape), expected) <= EQUIVALENCE_TOLERANCE


def test_broken_keras_file_is_a_one_line_bad_input(tmp_path):
    from compiler.errors import BadInput

    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadInput, match=r"broken\.keras"):
        load_model(str(broken))
