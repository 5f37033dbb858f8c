"""ONNX import: the op set in its various spellings (opsets, auto_pad, groups, dynamic
batch) computes exactly what onnxruntime computes on the same file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from compiler.equivalence import OnnxReference, compare, random_pixels
from compiler.frontend.onnx_import import image_input, onnx_to_ir, simplify
from compiler.preprocess import parse_preprocess
from tests import onnx_builders
from tests.onnx_builders import _init, make_model

PRE = parse_preprocess("paper")
RNG = np.random.default_rng(99)


def _check(model: onnx.ModelProto, size: int, tolerance: float = 1e-5) -> None:
    graph = onnx_to_ir(model, "m.onnx", "m")
    ref = OnnxReference(model, graph.meta["source_input"], graph.meta["source_layout"], PRE)
    assert compare(graph, ref, random_pixels(2, size, size, seed=4)) <= tolerance


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
def test_opsets(opset):
    model = onnx_builders.conv_bn_prelu()
    model.opset_import[0].version = opset
    _check(model, 16)


def test_dynamic_batch_is_fixed_to_one():
    model = onnx_builders.conv_bn_prelu()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    name, shape, layout = image_input(model, "m.onnx")
    assert (name, shape, layout) == ("input", (1, 3, 16, 16), "NCHW")
    simplified, note = simplify(model, name, shape)
    assert note == "onnxsim applied"
    _check(simplified, 16)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def test_grouped_dilated_strided_and_same_padded_convs():
    inits = [_init("w1", _w(6, 3, 3, 3)), _init("w2", _w(6, 3, 3, 3)), _init("b2", _w(6)), _init("w3", _w(4, 6, 2, 2))]
    nodes = [
        helper.make_node(
            "Conv", ["input", "w1"], ["a"], name="same", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        helper.make_node(
            "Conv",
            ["a", "w2", "b2"],
            ["b"],
            name="grouped",
            kernel_shape=[3, 3],
            group=2,
            dilations=[2, 2],
            pads=[2, 1, 2, 3],
        ),
        helper.make_node("Conv", ["b", "w3"], ["output"], name="lower", kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    ]
    model = make_model(nodes, inits, [1, 3, 15, 15], [1, 4, 8, 10])
    _check(model, 15)


def test_linear_heads_pooling_and_shape_ops():
    inits = [
        _init("w", _w(8, 3, 3, 3)),
        _init("fc", _w(8, 5)),
        _init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64)),
        _init("axes", np.array([2, 3], dtype=np.int64)),
        _init("axes0", np.array([0], dtype=np.int64)),
        _init("shape", np.array([1, -1], dtype=np.int64)),
        _init("g", _w(5, 6)),
        _init("gb", _w(6)),
    ]
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["p"], name="pad", mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("GlobalAveragePool", ["c"], ["gap"], name="gap"),
        helper.make_node("Squeeze", ["gap", "axes"], ["sq"], name="squeeze"),
        helper.make_node("MatMul", ["sq", "fc"], ["mm"], name="matmul"),
        helper.make_node("Unsqueeze", ["mm", "axes0"], ["un"], name="unsqueeze"),
        helper.make_node("Reshape", ["un", "shape"], ["r"], name="reshape"),
        helper.make_node("Gemm", ["r", "g", "gb"], ["output"], name="gemm", alpha=0.5, beta=2.0),
    ]
    model = make_model(nodes, inits, [1, 3, 10, 10], [1, 6])
    _check(model, 10)


def test_nhwc_input_is_detected():
    model = onnx_builders.decomposed_prelu_nhwc()
    assert image_input(model, "m.onnx") == ("input", (1, 12, 12, 3), "NHWC")
    _check(model, 12)
