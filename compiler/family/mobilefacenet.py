"""The MobileFaceNet family (Chen et al. 2018, section 3.3 and Table 1) as Keras models.

Defined once here so training, the random-weight family names and the exporter all see
the same graph. Layers are named after the paper's rows because those names become the
ONNX node names users see in reports.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import BadInput

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Variant:
    """What distinguishes one family member from the primary network."""

    input_hw: tuple[int, int] = (112, 112)
    activation: str = "prelu"  # "prelu" or "relu"
    expansion_scale: int = 1  # multiplies every bottleneck expansion factor t
    conv_512: bool = True  # the conv1x1 512 before GDConv (dropped by -s)
    linear_conv: bool = True  # the linear conv1x1 128 after GDConv (dropped by -m, -s)


VARIANTS: dict[str, Variant] = {
    "mobilefacenet": Variant(),
    "mobilefacenet-112x96": Variant(input_hw=(112, 96)),
    "mobilefacenet-96x96": Variant(input_hw=(96, 96)),
    "mobilefacenet-m": Variant(linear_conv=False),
    "mobilefacenet-s": Variant(linear_conv=False, conv_512=False),
    "mobilefacenet-relu": Variant(activation="relu"),
    "mobilefacenet-x2": Variant(expansion_scale=2),
}

# Table 1 bottleneck rows: expansion t, output channels c, repeats n, first stride s.
BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)

BN_EPSILON = 1e-5  # PyTorch's default, so weights trained there load without drift
EMBEDDING_DIM = 128
GAIN_ACTIVATED = 1.5  # He-normal variance gain for convs followed by PReLU/ReLU
GAIN_RESIDUAL_BRANCH = 0.5  # for the linear bottleneck projections feeding the Adds


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Silence fd 2 while TensorFlow loads: TF 2.21 logs through absl before
    TF_CPP_MIN_LOG_LEVEL takes effect, and users should not see that spam."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreter): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras() -> Any:
    """Import Keras on the TensorFlow backend, quietly; only called when a model is built."""
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        with _stderr_silenced():
            import keras
    import keras

    return keras


def build_model(name: str, seed: int | None = 0) -> keras.Model:
    """Build family member `name`; with an int seed the weights are deterministic."""
    if name not in VARIANTS:
        raise BadInput(f"unknown family name {name!r}; valid names: {', '.join(VARIANTS)}")
    keras = import_keras()
    model = _build_graph(keras, name, VARIANTS[name])
    if seed is not None:
        set_deterministic_weights(model, seed)
    return model


def _build_graph(keras: Any, name: str, v: Variant) -> keras.Model:
    """The architecture of Table 1 with explicit pads, so it exports like a PyTorch model."""
    layers = keras.layers

    def act(x: Any, prefix: str) -> Any:
        if v.activation == "relu":
            return layers.ReLU(name=f"{prefix}_relu")(x)
        return layers.PReLU(shared_axes=[1, 2], name=f"{prefix}_prelu")(x)

    def bn(x: Any, prefix: str) -> Any:
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)

    def conv3x3(x: Any, filters: int | None, stride: int, prefix: str) -> Any:
        """3x3 conv (or depthwise when filters is None) with a symmetric zero pad of 1."""
        x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
        if filters is None:
            return layers.DepthwiseConv2D(3, stride, padding="valid", use_bias=False, name=prefix)(x)
        return layers.Conv2D(filters, 3, stride, padding="valid", use_bias=False, name=prefix)(x)

    def conv1x1(x: Any, filters: int, prefix: str) -> Any:
        return layers.Conv2D(filters, 1, use_bias=False, name=prefix)(x)

    h, w = v.input_hw
    inp = keras.Input((h, w, 3), name="input")
    x = act(bn(conv3x3(inp, 64, 2, "conv1"), "conv1"), "conv1")
    x = act(bn(conv3x3(x, None, 1, "dw_conv"), "dw_conv"), "dw_conv")

    cin = 64
    for stage, (t, c, n, s) in enumerate(BOTTLENECKS, start=1):
        for i in range(1, n + 1):
            p = f"block{stage}_{i}"
            stride = s if i == 1 else 1
            y = act(bn(conv1x1(x, t * v.expansion_scale * cin, f"{p}_expand"), f"{p}_expand"), f"{p}_expand")
            y = act(bn(conv3x3(y, None, stride, f"{p}_dw"), f"{p}_dw"), f"{p}_dw")
            y = bn(conv1x1(y, c, f"{p}_project"), f"{p}_project")  # linear bottleneck
            x = layers.Add(name=f"{p}_add")([x, y]) if stride == 1 and cin == c else y
            cin = c

    if v.conv_512:
        x = act(bn(conv1x1(x, 512, "conv_512"), "conv_512"), "conv_512")
    # Linear GDConv: a depthwise kernel covering the whole remaining map (7x7 at 112x112).
    kh, kw = x.shape[1], x.shape[2]
    x = layers.DepthwiseConv2D((kh, kw), padding="valid", use_bias=False, name="gdconv")(x)
    x = bn(x, "gdconv")
    if v.linear_conv:
        x = bn(conv1x1(x, EMBEDDING_DIM, "linear_conv"), "linear_conv")
    out = layers.Flatten(name="embedding")(x)
    return keras.Model(inp, out, name=name)


def _he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, gain: float) -> np.ndarray:
    return rng.standard_normal(shape) * np.sqrt(gain / fan_in)


def set_deterministic_weights(model: keras.Model, seed: int) -> None:
    """Fill every weight from numpy's PCG64 in layer order: bit-identical on any machine,
    unlike Keras initializers, whose streams depend on backend and version.

    BN statistics are deliberately far from identity so BN folding is really exercised.
    The gains keep activations near unit scale: plain He (gain 2) before PReLU and gain 1
    on the residual branches double the variance at each of the ten Adds, giving
    embeddings around 200 instead of around 1 (measured for every variant).
    """
    keras = import_keras()
    rng = np.random.Generator(np.random.PCG64(seed))
    activated = {
        layer.name.removesuffix("_prelu").removesuffix("_relu")
        for layer in model.layers
        if isinstance(layer, keras.layers.PReLU | keras.layers.ReLU)
    }
    for layer in model.layers:
        if layer.name in activated:
            gain = GAIN_ACTIVATED
        elif layer.name.endswith("_project"):
            gain = GAIN_RESIDUAL_BRANCH
        else:
            gain = 1.0
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.get_weights()[0].shape
            weights = [_he_normal(rng, (kh, kw, cin, mult), kh * kw, gain)]
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.get_weights()[0].shape
            weights = [_he_normal(rng, (kh, kw, cin, cout), kh * kw * cin, gain)]
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            weights = [
                rng.uniform(0.8, 1.2, c),
                rng.normal(0.0, 0.05, c),
                rng.normal(0.0, 0.05, c),
                rng.uniform(0.6, 1.4, c),
            ]
        elif isinstance(layer, keras.layers.PReLU):
            weights = [rng.uniform(0.1, 0.35, tuple(layer.alpha.shape))]
        else:
            if layer.get_weights():
                raise BadInput(f"layer {layer.name!r} ({type(layer).__name__}) has weights we do not initialise")
            continue
        layer.set_weights([wt.astype(np.float32) for wt in weights])
