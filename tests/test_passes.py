"""Each graph pass: the pattern it targets changes as intended, and the model's
output stays within 1e-5 (max|a-b|/max|b|) of onnxruntime on the original model."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from compiler.equivalence import OnnxReference, compare, random_pixels
from compiler.executor import run
from compiler.faces import list_images, load_images
from compiler.frontend import load_model
from compiler.frontend.onnx_import import onnx_to_ir
from compiler.passes import (
    EQUIVALENCE_TOLERANCE,
    canonicalise_activations,
    canonicalise_input_layout,
    fold_batchnorm,
    fold_constants,
    fold_preprocess,
    mark_gdconv,
    remove_identity,
    run_passes,
)
from compiler.preprocess import parse_preprocess
from tests import onnx_builders

PAPER = parse_preprocess("paper")


def _ingest(model, pre=PAPER):
    graph = onnx_to_ir(model, "test.onnx", "test")
    reference = OnnxReference(model, graph.meta["source_input"], graph.meta["source_layout"], pre)
    return graph, reference


def _ops(graph) -> Counter:
    return Counter(n.op for n in graph.nodes)


def _images(graph, n=3):
    _, _c, h, w = (
        graph.shapes[graph.inputs[0]] if graph.meta["source_layout"] == "NCHW" else (1, 3, *graph.input_shape()[1:3])
    )
    return random_pixels(n, h, w, seed=7)


def test_fold_batchnorm_removes_every_bn_after_conv():
    graph, ref = _ingest(onnx_builders.conv_bn_prelu())
    assert _ops(graph)["BatchNorm"] == 3
    folded = fold_batchnorm(graph)
    assert _ops(folded)["BatchNorm"] == 0
    assert all(len(n.inputs) == 3 for n in folded.nodes if n.op == "Conv"), "folded convs carry a bias"
    assert compare(folded, ref, _images(graph)) <= EQUIVALENCE_TOLERANCE


def test_fold_batchnorm_into_linear_through_flatten_and_constant_folding():
    graph, ref = _ingest(onnx_builders.linear_bn_tail())
    folded = fold_constants(graph)
    assert _ops(graph)["Mul"] == 2 and _ops(folded)["Mul"] == 1, "the constant-only Mul is evaluated"
    folded = fold_batchnorm(folded)
    assert _ops(folded)["BatchNorm"] == 0 and _ops(folded)["Gemm"] == 1
    assert "output" in folded.outputs and folded.producer("output").op == "Gemm", "graph output keeps its name"
    assert compare(folded, ref, _images(graph)) <= EQUIVALENCE_TOLERANCE


def test_canonicalise_activations_rebuilds_prelu_from_tf2onnx_decomposition():
    graph, ref = _ingest(onnx_builders.decomposed_prelu_nhwc())
    graph = canonicalise_input_layout(graph)
    assert graph.input_shape() == (1, 3, 12, 12)
    assert _ops(graph)["Transpose"] == 0
    out = canonicalise_activations(graph)
    ops = _ops(out)
    assert ops["PRelu"] == 1 and ops["Neg"] == 0 and ops["Add"] == 0 and ops["Mul"] == 0
    assert ops["Relu"] == 1 and ops["Clip"] == 1, "Clip(0, inf) is a Relu; Clip(0, 6) stays ReLU6"
    prelu = next(n for n in out.nodes if n.op == "PRelu")
    assert out.constants[prelu.inputs[1]].shape == (4,)
    assert compare(out, ref, random_pixels(3, 12, 12, seed=3)) <= EQUIVALENCE_TOLERANCE


def test_leaky_relu_and_constant_slopes_become_per_channel_prelu():
    graph, ref = _ingest(onnx_builders.conv_bn_prelu())
    out = canonicalise_activations(graph)
    slopes = [out.constants[n.inputs[1]] for n in out.nodes if n.op == "PRelu"]
    assert [s.shape for s in slopes] == [(8,), (8,)]
    assert np.allclose(slopes[1], 0.2)
    assert compare(out, ref, _images(graph)) <= EQUIVALENCE_TOLERANCE


def test_remove_identity_drops_identity_and_dropout():
    graph, ref = _ingest(onnx_builders.decomposed_prelu_nhwc())
    assert _ops(graph)["Identity"] == 2  # Dropout is imported as an inference-time Identity
    out = remove_identity(graph)
    assert _ops(out)["Identity"] == 0
    assert compare(out, ref, random_pixels(2, 12, 12)) <= EQUIVALENCE_TOLERANCE


def test_mark_gdconv_recognises_global_depthwise_only():
    graph, _ = _ingest(onnx_builders.conv_bn_prelu())
    marked = {n.name: n.attrs["gdconv"] for n in mark_gdconv(graph).nodes if n.op == "Conv"}
    assert marked == {"conv1": False, "dw": False, "gdconv": True}


@pytest.mark.parametrize("spec", ["paper", "imagenet", "bgr:104,117,123:58,57,57"])
def test_fold_preprocess_is_exact_including_borders(spec):
    pre = parse_preprocess(spec)
    graph, ref = _ingest(onnx_builders.conv_bn_prelu(), pre)
    out = fold_preprocess(graph, pre)
    first = out.nodes[0]
    assert out.meta["input_kind"] == "pixels" and first.name == "conv1"
    assert first.attrs["pad_value"] == pytest.approx(list(pre.mean))
    images = random_pixels(3, 16, 16, seed=11)
    images[0] = 0  # flat black and white images make border errors visible
    images[1] = 255
    assert compare(out, ref, images) <= EQUIVALENCE_TOLERANCE


def test_fold_preprocess_without_a_leading_conv_inserts_an_exact_normaliser():
    pre = parse_preprocess("imagenet")
    graph, ref = _ingest(onnx_builders.decomposed_prelu_nhwc(), pre)
    graph = canonicalise_input_layout(graph)
    graph.nodes[0].attrs["pad_value"] = [0.0, 0.0, 0.0]  # pretend the conv cannot take the fold
    out = fold_preprocess(graph, pre)
    assert out.nodes[0].name == "preprocess"
    assert compare(out, ref, random_pixels(2, 12, 12)) <= 1e-5


def test_pipeline_on_the_real_relu6_model(foamliu, friends):
    pre = parse_preprocess("imagenet")
    model = load_model(str(foamliu))
    ref = OnnxReference(model.reference, model.graph.meta["source_input"], "NCHW", pre)
    real, _ = load_images(list_images(friends)[:2], 112, 112)
    images = np.concatenate([random_pixels(2, 112, 112), real])
    lowered, records = run_passes(model.graph, ref, images, pre)
    assert next(r.name for r in records) == "ingest"
    assert all(r.max_rel_err <= EQUIVALENCE_TOLERANCE for r in records)
    assert Counter(n.op for n in lowered.nodes) == {"Conv": 51, "Clip": 32, "Relu": 2, "Add": 12, "Reshape": 1}
    assert sum(bool(n.attrs.get("gdconv")) for n in lowered.nodes) == 1
    assert lowered.meta["preprocess_folded_into"] == lowered.nodes[0].name


def test_pipeline_on_the_family_model_folds_every_batchnorm():
    pre = PAPER
    model = load_model("mobilefacenet")
    ref = OnnxReference(model.reference, model.graph.meta["source_input"], "NCHW", pre)
    bn_before = Counter(n.op for n in model.graph.nodes)["BatchNorm"]
    lowered, records = run_passes(model.graph, ref, random_pixels(2, 112, 112), pre)
    fold = next(r for r in records if r.name == "fold_batchnorm")
    assert bn_before == 50 and fold.ops_before["BatchNorm"] == bn_before and "BatchNorm" not in fold.ops_after
    assert all(r.max_rel_err <= EQUIVALENCE_TOLERANCE for r in records)
    out = run(lowered, random_pixels(1, 112, 112).astype(np.float32))
    assert np.all(np.isfinite(next(iter(out.values()))))
