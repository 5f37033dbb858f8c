"""The CLI contract: exit codes, one-line errors, JSON on stdout, and no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from compiler.cli import main
from tests import onnx_builders
from tests.cli_helpers import assert_one_line_error, run_cli


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


# --- bad input: one line, exit 2, nothing left behind ---------------------------------


def test_missing_model_file(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "build", "--target", "rk3399", "--model", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert_one_line_error(err, "nope.onnx", "no such model file")
    assert not (tmp_path / "out").exists()


def test_file_that_is_not_a_model(capsys, tmp_path):
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("this is not a protobuf at all\n" * 20)
    code, _, err = run_cli(capsys, "inspect", "--model", str(bogus))
    assert code == 2
    assert_one_line_error(err, "notes.onnx", "not a valid ONNX model")


def test_unknown_model_format(capsys, tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"\x80\x02")
    code, _, err = run_cli(capsys, "inspect", "--model", str(weights))
    assert code == 2
    assert_one_line_error(err, "model.pt", "unknown model format")


def test_truncated_onnx(capsys, tmp_path):
    data = onnx_builders.conv_bn_prelu().SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(
        capsys, "build", "--target", "rk3399", "--model", str(truncated), "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert_one_line_error(err, "truncated.onnx")
    assert not (tmp_path / "out").exists()


def test_unsupported_op_names_node_and_op(capsys, tmp_path):
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.1] * 12)]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="stem"),
        helper.make_node("Softmax", ["c"], ["output"], name="head_softmax", axis=1),
    ]
    model = onnx_builders.make_model(nodes, inits, [1, 3, 8, 8], [1, 4, 8, 8])
    code, _, err = run_cli(capsys, "inspect", "--model", str(_save(model, tmp_path / "softmax.onnx")))
    assert code == 2
    assert_one_line_error(err, "head_softmax", "Softmax", "not supported")


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ([1, 3, "height", "width"], "dynamic"),
        ([1, 1, 8, 8], "3 colour channels"),
        ([1, 192], "4-D image"),
        ([4, 3, 8, 8], "batch 4"),
    ],
)
def test_unexpected_input_shapes(capsys, tmp_path, shape, fragment):
    nodes = [helper.make_node("Relu", ["input"], ["output"], name="relu")]
    model = onnx_builders.make_model(nodes, [], shape, shape)
    code, _, err = run_cli(capsys, "inspect", "--model", str(_save(model, tmp_path / "shape.onnx")))
    assert code == 2
    assert_one_line_error(err, "shape.onnx", "input 'input'", fragment)


def test_unknown_target(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "build", "--target", "rk9999", "--model", "mobilefacenet", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert_one_line_error(err, "rk9999")
    assert not (tmp_path / "o").exists()


def test_malformed_target_toml(capsys, tmp_path):
    board = tmp_path / "myboard.toml"
    board.write_text('name = "myboard"\n[memory\nram_kib = 12\n')
    code, _, err = run_cli(
        capsys, "build", "--target", str(board), "--model", "mobilefacenet", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert_one_line_error(err, "myboard.toml")
    assert not (tmp_path / "o").exists()


def test_bad_preprocess_spec(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "build",
        "--target",
        "rk3399",
        "--model",
        "mobilefacenet",
        "--preprocess",
        "rgb:1,2:3,4,5",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert_one_line_error(err, "--preprocess", "three means")


def test_refused_npu_backend(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "build",
        "--target",
        "rk3399pro",
        "--backend",
        "rknn",
        "--model",
        "mobilefacenet",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert_one_line_error(err, "RKNN-Toolkit")


# --- the commands themselves --------------------------------------------------------


def test_targets_json_lists_the_catalogue(capsys):
    code, out, _ = run_cli(capsys, "targets", "--json", "-")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)["targets"]}
    assert {"rk3399", "rpi4", "rk3588", "mps3-an547", "mps2-an500", "stm32h743", "stm32f746", "x86_64"} <= set(rows)
    assert rows["rk3399"]["status"] == "emulated"
    assert rows["stm32h743"]["status"] == "supported"


def test_inspect_json_reproduces_the_paper(capsys):
    code, out, _ = run_cli(capsys, "inspect", "--model", "mobilefacenet", "--json", "-")
    assert code == 0
    summary = json.loads(out)
    assert summary["params"] == pytest.approx(0.99e6, rel=0.02)
    assert summary["macs"] == pytest.approx(221e6, rel=0.01)
    assert {"op", "input_shape", "output_shape", "params", "macs"} <= set(summary["layers"][0])
    assert sum(layer["params"] for layer in summary["layers"]) == summary["params"]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mobilefacenet-m", 0.92e6),
        ("mobilefacenet-s", 0.84e6),
        ("mobilefacenet-relu", 0.98e6),
        ("mobilefacenet-112x96", 0.99e6),
        ("mobilefacenet-96x96", 0.99e6),
    ],
)
def test_inspect_family_params_match_the_paper(capsys, name, params):
    code, out, _ = run_cli(capsys, "inspect", "--model", name, "--json", "-")
    assert code == 0
    assert json.loads(out)["params"] == pytest.approx(params, rel=0.02)


def test_inspect_real_model(capsys, foamliu):
    code, out, _ = run_cli(capsys, "inspect", "--model", str(foamliu), "--json", "-")
    assert code == 0
    summary = json.loads(out)
    assert summary["params"] == 989_952  # the figure its authors publish
    convs = [layer for layer in summary["layers"] if layer["op"] == "Conv"]
    assert len(convs) == 51
    assert [c["kind"] for c in convs].count("GDConv s1") == 1


def test_build_real_model_writes_the_report(capsys, tmp_path, foamliu, friends):
    out_dir = tmp_path / "rk3399"
    code, out, err = run_cli(
        capsys,
        "build",
        "--calib-limit",
        "20",
        "--eval-limit",
        "10",
        "--algo",
        "minmax",
        "--target",
        "rk3399",
        "--model",
        str(foamliu),
        "--preprocess",
        "imagenet",
        "--calib",
        str(friends),
        "--out",
        str(out_dir),
        "--json",
        "-",
    )
    assert code == 0, err
    report = json.loads((out_dir / "report.json").read_text())
    assert report == json.loads(out)
    assert report["target"] == "rk3399" and report["backend"] in ("c", "tvm")
    assert report["model"]["sha256"] == "b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507"
    assert report["model"]["params"] == 989_952
    assert report["preprocess"]["spec"] == "imagenet"
    assert report["equivalence"]["images"]["faces"] == 2
    names = [p["name"] for p in report["passes"]]
    assert names[0] == "ingest" and "fold_batchnorm" in names and names[-1] == "fold_preprocess"
    assert all(p["max_rel_err"] <= 1e-5 for p in report["passes"])
    q = report["quantization"]
    assert (q["n_calib"], q["n_eval"], q["mode"], q["algorithm"]) == (20, 10, "fused", "minmax")
    assert q["passed"] and q["mean_cosine"] > 0.98, "real ReLU6 model in int8 on real held-out faces"
    assert (out_dir / "model.mfnq").exists() and (out_dir / "report.html").exists()


def test_python_m_compiler_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", "build", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0
    assert "--target" in proc.stdout and "--preprocess" in proc.stdout


def test_usage_errors_are_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--target", "x86_64", "--calib", "faces", "--synthetic", "5"])
    assert exc.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "--synthetic", "--calib")


@pytest.mark.parametrize("flag, value", [("--gate-cosine", "1.5"), ("--gate-cosine", "0"), ("--gate-auc-drop", "-0.1")])
def test_gates_outside_their_range_are_refused(capsys, tmp_path, flag, value):
    code, _, err = run_cli(capsys, "build", "--target", "x86_64", flag, value, "--out", str(tmp_path / "o"))
    assert code == 2
    assert_one_line_error(err, flag, value)
    assert not (tmp_path / "o").exists()
