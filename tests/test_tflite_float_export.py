"""The float32 .tflite export runs our lowered model in LiteRT: its embeddings match
onnxruntime on the original ONNX (and our float executor) to float32 rounding, on the
default model and the real foamliu model (uniform and per-channel mean padding)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from calibration.tflite_export import _schema
from calibration.tflite_float_export import export_float_tflite
from compiler import executor
from compiler.equivalence import OnnxReference, ir_feed, random_pixels
from compiler.errors import BadInput
from compiler.frontend import load_model
from compiler.ir import Graph, Node
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set

MAX_REL_ERR = 1e-4  # max|a-b| / max|b|; float32 rounding gives ~2e-6
MIN_COSINE = 0.99999


def _litert(data: bytes, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Every output of the model for each NHWC input, in LiteRT's default fp32 kernels."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    results = []
    for x in inputs:
        interp.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
        interp.invoke()
        results.append([interp.get_tensor(o["index"]) for o in interp.get_output_details()])
    return results


def _op_counts(data: bytes) -> Counter:
    s = _schema()
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    model = s.ModelT.InitFromPackedBuf(data, 0)
    codes = [names[c.builtinCode] for c in model.operatorCodes]
    return Counter(codes[o.opcodeIndex] for o in model.subgraphs[0].operators)


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = actual.astype(np.float64).reshape(-1), expected.astype(np.float64).reshape(-1)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(
    ("spec", "pre_spec", "pad_ops"),
    [
        ("default", "paper", {"PADV2": 1}),
        ("foamliu", "paper", {"PADV2": 1}),
        ("foamliu", "imagenet", {"SPLIT": 1, "PADV2": 3, "CONCATENATION": 1}),
    ],
)
def test_litert_runs_the_lowered_model_like_onnxruntime(spec, pre_spec, pad_ops, request):
    if spec == "foamliu":
        spec = str(request.getfixturevalue("foamliu"))  # skips, or fails under CI=true, without the data
    pre = parse_preprocess(pre_spec)
    model = load_model(spec)
    graph = model.graph
    for _, fn in pipeline(pre):
        graph = fn(graph)
    assert graph.meta["input_kind"] == "pixels"
    data = export_float_tflite(graph)

    ops = _op_counts(data)
    assert {k: ops[k] for k in pad_ops} == pad_ops, "the folded first conv's mean padding must be explicit"
    assert "RELU6" not in ops and "RELU" not in ops, "ReLU/ReLU6 after a conv or add must be fused"

    pixels = np.concatenate([synthetic_eval_set(2, seed=1)[0], random_pixels(1, 112, 112, seed=5)])
    feeds = [ir_feed(graph, pixels[i : i + 1], pre) for i in range(len(pixels))]
    lite = _litert(data, [f.transpose(0, 2, 3, 1) for f in feeds])
    reference = OnnxReference(model.reference, graph.meta["source_input"], graph.meta["source_layout"], pre, False)
    for i, feed in enumerate(feeds):
        (got,) = lite[i]
        assert got.shape == (1, 128) and got.dtype == np.float32
        theirs = next(iter(reference(pixels[i : i + 1]).values()))
        ours = executor.run(graph, feed)[graph.outputs[0]]
        assert _rel(got, theirs) < MAX_REL_ERR, f"image {i}: vs onnxruntime"
        assert _rel(got, ours) < MAX_REL_ERR, f"image {i}: vs the float executor"
        assert _cosine(got, theirs) > MIN_COSINE


def _graph(nodes: list[Node], constants: dict[str, np.ndarray], outputs: list[str]) -> Graph:
    """A hand-made IR graph on a [1,4,9,9] input, shapes filled by running it."""
    g = Graph("tiny", nodes, ["x"], outputs, {k: np.asarray(v, dtype=np.float32) for k, v in constants.items()})
    g.shapes = {"x": (1, 4, 9, 9)}
    values = executor.run(g, np.zeros(g.shapes["x"], dtype=np.float32), keep=True)
    g.shapes.update({n.outputs[0]: values[n.outputs[0]].shape for n in nodes})
    return g


def _conv_attrs(strides, pads, group=1, **extra):
    return {"strides": strides, "pads": pads, "dilations": [1, 1], "group": group, **extra}


def test_every_exported_op_matches_the_float_executor():
    """Ops the two real models do not use: SAME and asymmetric padding, a depthwise
    multiplier, generic Clip, Pad with a value, Mul/Sub by constants, PReLU on 2-D,
    spatial Flatten and Reshape (NCHW element order), Gemm, MatMul, global average pool."""
    rng = np.random.default_rng(7)
    c = {
        "w1": rng.normal(size=(8, 4, 3, 3)),
        "b1": rng.normal(size=8),
        "w2": rng.normal(size=(16, 1, 3, 3)),
        "scale": rng.uniform(0.5, 1.5, size=(16, 1, 1)),
        "shift": np.array(0.3),
        "slope": rng.uniform(0.0, 0.5, size=16),
        "fc_w": rng.normal(size=(576, 10)) / 20,
        "fc_b": rng.normal(size=10),
        "mm_w": rng.normal(size=(16, 10)),
        "slope2": rng.uniform(0.0, 0.5, size=10),
        "shape": np.array([1, 2, 5, 1]),
    }
    nodes = [
        Node("Conv", "conv_same", ["x", "w1", "b1"], ["t1"], _conv_attrs([1, 1], [1, 1, 1, 1])),
        Node("Relu", "relu_fused", ["t1"], ["t2"]),
        Node("Conv", "dw_asym", ["t2", "w2"], ["t3"], _conv_attrs([2, 2], [1, 0, 1, 0], group=8)),
        Node("Clip", "clip", ["t3"], ["t4"], {"min": -0.5, "max": 0.7}),
        Node("Pad", "pad", ["t4"], ["t5"], {"pads": [0, 0, 1, 0, 0, 0, 0, 2], "value": 0.25}),
        Node("Mul", "mul", ["t5", "scale"], ["t6"]),
        Node("Sub", "sub", ["t6", "shift"], ["t7"]),
        Node("Add", "add", ["t7", "t5"], ["t8"]),
        Node("Clip", "relu6_fused", ["t8"], ["t9"], {"min": 0.0, "max": 6.0}),
        Node("PRelu", "prelu", ["t9", "slope"], ["t10"]),
        Node("GlobalAveragePool", "gap", ["t10"], ["t11"]),
        Node("Flatten", "flatten_map", ["t10"], ["t12"], {"axis": 1}),
        Node("Gemm", "gemm", ["t12", "fc_w", "fc_b"], ["t13"], {"alpha": 0.5, "beta": 2.0, "transA": 0, "transB": 0}),
        Node("Relu", "relu", ["t13"], ["t14"]),
        Node("Flatten", "flatten_pooled", ["t11"], ["t15"], {"axis": 1}),
        Node("MatMul", "matmul", ["t15", "mm_w"], ["t16"]),
        Node("Add", "add_fc", ["t14", "t16"], ["t17"]),
        Node("PRelu", "prelu_2d", ["t17", "slope2"], ["emb"]),
        Node("Reshape", "to_map", ["emb", "shape"], ["map"]),
    ]
    graph = _graph(nodes, c, ["emb", "map"])
    data = export_float_tflite(graph)
    ops = _op_counts(data)
    assert ops["RELU"] == 1 and "RELU6" not in ops, "only the Relu after Gemm stays a separate op"
    assert ops["PAD"] == 1 and ops["PADV2"] == 1 and ops["TRANSPOSE"] == 2

    x = np.random.default_rng(8).normal(size=(3, 4, 9, 9)).astype(np.float32)
    lite = _litert(data, [x[i : i + 1].transpose(0, 2, 3, 1) for i in range(len(x))])
    for i in range(len(x)):
        ours = executor.run(graph, x[i : i + 1])
        emb, fmap = lite[i] if lite[i][0].ndim == 2 else lite[i][::-1]
        assert _rel(emb, ours["emb"]) < MAX_REL_ERR
        assert fmap.shape == (1, 5, 1, 2), "4-D outputs are NHWC"
        assert _rel(fmap.transpose(0, 3, 1, 2), ours["map"]) < MAX_REL_ERR


def test_unsupported_ops_are_rejected_by_name():
    graph = _graph([Node("Div", "halve", ["x", "two"], ["y"])], {"two": np.array(2.0)}, ["y"])
    with pytest.raises(BadInput, match="halve"):
        export_float_tflite(graph)
