"""The shipped default model: it resolves, it verifies held-out synthetic identities,
and the same architecture with its weights shuffled does not (the data is not easy)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.frontend import DEFAULT_MODEL_PATH, load_model
from tests.cli_helpers import run_cli

N_IMAGES = 100  # 20 held-out identities, 4,950 pairs


def test_default_resolves_to_the_shipped_model():
    model = load_model("default")
    assert model.path == DEFAULT_MODEL_PATH
    assert DEFAULT_MODEL_PATH.stat().st_size <= 4.5 * 1024 * 1024
    ops = {n.op for n in model.graph.nodes}
    assert {"Conv", "BatchNorm", "PRelu", "Add"} <= ops, "float ONNX with BatchNorm nodes, PReLU MobileFaceNet"


def test_default_model_verifies_held_out_synthetic_identities(capsys):
    code, out, err = run_cli(capsys, "eval", "--model", "default", "--synthetic", str(N_IMAGES), "--json", "-")
    assert code == 0, err
    result = json.loads(out)
    assert result["n_images"] == N_IMAGES
    assert result["auc"] >= 0.99


def test_shuffled_weights_control_fails(capsys, tmp_path):
    model = onnx.load(DEFAULT_MODEL_PATH)
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype.kind == "f" and values.size > 1:
            shuffled = rng.permutation(values.reshape(-1)).reshape(values.shape)
            init.CopyFrom(numpy_helper.from_array(shuffled.astype(values.dtype), init.name))
    path = tmp_path / "shuffled.onnx"
    onnx.save(model, path)
    code, out, err = run_cli(capsys, "eval", "--model", str(path), "--synthetic", str(N_IMAGES), "--json", "-")
    assert code == 0, err
    assert json.loads(out)["auc"] <= 0.75
