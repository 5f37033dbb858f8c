"""Tiny hand-written ONNX models, each exercising one pattern the passes must handle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(1234)


@contextlib.contextmanager
def seeded(seed: int = 1234) -> Iterator[None]:
    """Build with fresh weights from `seed`, whatever other tests drew before: a model
    whose accuracy a test relies on must not depend on the order tests run in."""
    global RNG
    saved, RNG = RNG, np.random.default_rng(seed)
    try:
        yield
    finally:
        RNG = saved


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _conv_inits(prefix: str, cout: int, cin: int, k: int, group: int = 1) -> list[onnx.TensorProto]:
    w = RNG.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
    return [_init(f"{prefix}_w", w.astype(np.float32))]


def _bn_inits(prefix: str, c: int) -> list[onnx.TensorProto]:
    return [
        _init(f"{prefix}_gamma", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
        _init(f"{prefix}_beta", RNG.normal(0, 0.2, c).astype(np.float32)),
        _init(f"{prefix}_mean", RNG.normal(0, 0.2, c).astype(np.float32)),
        _init(f"{prefix}_var", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
    ]


def _bn(prefix: str, x: str, y: str) -> onnx.NodeProto:
    ins = [x] + [f"{prefix}_{n}" for n in ("gamma", "beta", "mean", "var")]
    return helper.make_node("BatchNormalization", ins, [y], name=f"{prefix}_bn", epsilon=1e-3)


def make_model(nodes, inits, input_shape, output_shape, opset: int = 13, input_name="input") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_bn_prelu(size: int = 16) -> onnx.ModelProto:
    """conv3x3 s2 + BN + PRelu, depthwise 3x3 + BN + LeakyRelu, GDConv + BN, flatten."""
    s = size // 2
    inits = [
        *_conv_inits("c1", 8, 3, 3),
        *_bn_inits("b1", 8),
        _init("slope", RNG.uniform(0.1, 0.3, (8, 1, 1)).astype(np.float32)),
        *_conv_inits("dw", 8, 8, 3, group=8),
        *_bn_inits("b2", 8),
        *_conv_inits("gd", 8, 8, s, group=8),
        *_bn_inits("b3", 8),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input", "c1_w"], ["c1"], name="conv1", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        _bn("b1", "c1", "b1"),
        helper.make_node("PRelu", ["b1", "slope"], ["p1"], name="prelu1"),
        helper.make_node("Conv", ["p1", "dw_w"], ["dw"], name="dw", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        _bn("b2", "dw", "b2"),
        helper.make_node("LeakyRelu", ["b2"], ["a2"], name="leaky", alpha=0.2),
        helper.make_node("Conv", ["a2", "gd_w"], ["gd"], name="gdconv", kernel_shape=[s, s], group=8),
        _bn("b3", "gd", "b3"),
        helper.make_node("Flatten", ["b3"], ["output"], name="flatten"),
    ]
    return make_model(nodes, inits, [1, 3, size, size], [1, 8])


def decomposed_prelu_nhwc(size: int = 12) -> onnx.ModelProto:
    """tf2onnx style: NHWC input, Transpose, conv, PReLU as Add(Relu(x), Mul(Relu(Neg(x)), -alpha))."""
    alpha = RNG.uniform(0.1, 0.3, (4, 1, 1)).astype(np.float32)
    inits = [
        *_conv_inits("c", 4, 3, 3),
        _init("neg_alpha", -alpha),
        _init("bias", RNG.normal(0, 0.1, 4).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "c_w", "bias"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["pos"], name="pos_relu"),
        helper.make_node("Neg", ["c"], ["negx"], name="neg"),
        helper.make_node("Relu", ["negx"], ["negr"], name="neg_relu"),
        helper.make_node("Mul", ["negr", "neg_alpha"], ["negs"], name="scale"),
        helper.make_node("Add", ["pos", "negs"], ["act"], name="prelu_add"),
        helper.make_node("Identity", ["act"], ["ident"], name="identity"),
        helper.make_node("Dropout", ["ident"], ["drop"], name="dropout"),
        helper.make_node("Clip", ["drop", "zero", "six"], ["clip"], name="relu6"),
        helper.make_node("Clip", ["clip", "zero", ""], ["output"], name="relu_as_clip"),
    ]
    inits += [_init("zero", np.array(0.0, np.float32)), _init("six", np.array(6.0, np.float32))]
    return make_model(nodes, inits, [1, size, size, 3], [1, 4, size, size])


def linear_bn_tail(size: int = 8) -> onnx.ModelProto:
    """PyTorch insightface style tail: conv, GDConv, Flatten, Gemm (Linear), BatchNorm1d."""
    inits = [
        *_conv_inits("c", 6, 3, 3),
        *_conv_inits("gd", 6, 6, size, group=6),
        _init("fc_w", RNG.standard_normal((5, 6)).astype(np.float32)),
        _init("fc_b", RNG.standard_normal(5).astype(np.float32)),
        *_bn_inits("bn", 5),
        _init("two", np.array(2.0, np.float32)),
        _init("half", np.array(0.5, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "c_w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["two", "half"], ["one"], name="const_mul"),
        helper.make_node("Mul", ["c", "one"], ["c1"], name="times_one"),
        helper.make_node("Conv", ["c1", "gd_w"], ["gd"], name="gdconv", kernel_shape=[size, size], group=6),
        helper.make_node("Flatten", ["gd"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], name="fc", transB=1),
        _bn("bn", "fc", "output"),
    ]
    return make_model(nodes, inits, [1, 3, size, size], [1, 5])
