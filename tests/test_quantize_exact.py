"""The outside proof of our integer arithmetic: a tflite-mode model exported to .tflite
gives exactly the golden simulator's int8 outputs in LiteRT's reference kernels and in
TFLite Micro, on 20 faces (real ones when ../shared is there, synthetic otherwise)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from calibration import golden
from calibration.observers import observe_ranges
from calibration.quantizer import quantize
from calibration.tflite_export import export_tflite
from compiler.frontend import load_model
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from tests.conftest import FOAMLIU, FRIENDS

N_CHECK = 20


def _faces(n: int) -> np.ndarray:
    if FRIENDS.exists():
        from compiler.faces import list_images, load_images

        return load_images(list_images(FRIENDS)[:n], 112, 112)[0]
    if os.environ.get("CI") == "true":
        pytest.fail("CI must have the real faces")
    return synthetic_eval_set(n)[0]


def _lowered(spec: str, pre_spec: str):
    pre = parse_preprocess(pre_spec)
    graph = load_model(spec).graph
    for _, fn in pipeline(pre):
        graph = fn(graph)
    return graph


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return _faces(N_CHECK + 4)


def _litert(data: bytes, inputs: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for x in inputs:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).reshape(-1))
    return results


def _tflm(data: bytes, inputs: np.ndarray) -> list[np.ndarray]:
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(data, arena_size=4 * 1024 * 1024)
    results = []
    for x in inputs:
        interp.set_input(x[None], 0)
        interp.invoke()
        results.append(interp.get_output(0).reshape(-1))
    return results


@pytest.mark.parametrize(
    ("spec", "pre"),
    [("mobilefacenet", "paper"), pytest.param(str(FOAMLIU), "imagenet", id="foamliu-relu6")],
)
def test_tflite_export_is_bit_exact_with_litert_and_tflm(spec, pre, faces):
    if spec == str(FOAMLIU) and not FOAMLIU.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the real model")
        pytest.skip("real model not present")
    graph = _lowered(spec, pre)
    qgraph = quantize(graph, observe_ranges(graph, faces[:4], "minmax"), mode="tflite")
    data = export_tflite(qgraph)
    check = faces[4 : 4 + N_CHECK]
    expected = golden.run(qgraph, check)[qgraph.outputs[0]].reshape(len(check), -1)
    inputs = golden.pixels_to_input(check).transpose(0, 2, 3, 1)
    assert len(np.unique(expected)) > 20, "outputs must be informative, not saturated"
    for name, outputs in (("LiteRT BUILTIN_REF", _litert(data, inputs)), ("TFLite Micro", _tflm(data, inputs))):
        equal = sum(np.array_equal(o, e) for o, e in zip(outputs, expected, strict=True))
        assert equal == N_CHECK, f"{name}: {equal}/{N_CHECK} bit-exact"


@pytest.mark.parametrize("mode", ["fused", "tflite"])
def test_qdq_export_runs_in_onnxruntime_close_to_the_golden(mode, faces):
    import onnxruntime as ort

    from calibration.qdq_export import export_qdq

    graph = _lowered("mobilefacenet", "paper")
    qgraph = quantize(graph, observe_ranges(graph, faces[:4], "minmax"), mode=mode)
    session = ort.InferenceSession(export_qdq(qgraph).SerializeToString(), providers=["CPUExecutionProvider"])
    check = faces[4:8]
    ours = golden.embed(qgraph, check)
    theirs = np.concatenate([session.run(None, {"pixels": check[i : i + 1].astype(np.float32)})[0] for i in range(4)])
    cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    # Not bit-exact (float accumulation, round-half-even): 1-LSB differences that grow through 50 layers.
    assert cosine.min() > 0.98
