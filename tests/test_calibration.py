"""Calibration set checks, the quantize command, and build's int8 gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration import qgraph as qformat
from calibration.dataset import check_calibration, face_scores
from calibration.ranges import choose_range
from compiler.errors import BadInput
from compiler.synthetic import synthetic_eval_set
from tests.cli_helpers import assert_one_line_error, run_cli


def _write_faces(folder: Path, count: int, size: tuple[int, int] = (112, 112), seed: int = 3) -> Path:
    """Synthetic faces as PNGs with a labels.csv, like a user's folder."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = synthetic_eval_set(count, seed=seed)
    rows = ["file,identity"]
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        name = f"face_{i:03d}.png"
        Image.fromarray(img.transpose(1, 2, 0)).resize((size[1], size[0])).save(folder / name)
        rows.append(f"{name},person{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def eval_faces(tmp_path_factory) -> Path:
    return _write_faces(tmp_path_factory.mktemp("eval") / "faces", 10)


def test_face_score_separates_aligned_faces_from_noise(friends):
    from compiler.faces import list_images, load_images

    real, _ = load_images(list_images(friends)[:40], 112, 112)
    noise = np.random.default_rng(0).integers(0, 256, (40, 3, 112, 112), dtype=np.uint8)
    assert np.median(face_scores(real)) > 0.5
    assert np.mean(face_scores(noise) < 0.15) > 0.9


def test_calibration_warnings_and_strict():
    noise = np.random.default_rng(0).integers(0, 256, (3, 3, 112, 112), dtype=np.uint8)
    warnings = check_calibration(noise, resized=2, source="cal")
    assert any("only 3 calibration images" in w for w in warnings)
    assert any("2 of 3 images are not 112x112" in w for w in warnings)
    assert any("do not look like aligned faces" in w for w in warnings)
    with pytest.raises(BadInput, match="strict"):
        check_calibration(noise, resized=0, source="cal", strict=True)


def test_range_algorithms_clip_outliers_but_minmax_does_not():
    rng = np.random.default_rng(0)
    values = rng.standard_t(2.5, 200_000)  # heavy tails, like activations after an early PReLU
    edges = np.linspace(values.min(), values.max(), 2049)
    hist = np.histogram(values, bins=edges)[0]
    width = values.max() - values.min()
    assert choose_range("minmax", hist, edges, values.min(), values.max()) == (values.min(), values.max())
    for algo in ("percentile", "kl", "mse"):
        lo, hi = choose_range(algo, hist, edges, values.min(), values.max())
        assert lo < -2 and hi > 2 and hi - lo < 0.6 * width, (algo, lo, hi, width)


def test_kl_keeps_the_range_of_a_relu6_tensor_with_a_spike_at_zero():
    """Most ReLU6 outputs are exactly 0: that spike, merged with its neighbours when the
    candidate grid gets coarser, made every threshold above 1/16 of the range look costly,
    and KL clipped [0, 6] to [0, 0.375] (measured on the real foamliu model: cosine 0.0075)."""
    rng = np.random.default_rng(0)
    positive = np.minimum(rng.exponential(1.5, 60_000), 6.0)  # saturates at 6 like ReLU6
    values = np.concatenate([np.zeros(140_000), positive])
    edges = np.linspace(0.0, 6.0, 2049)
    hist = np.histogram(values, bins=edges)[0]
    lo, hi = choose_range("kl", hist, edges, 0.0, 6.0)
    assert lo == 0.0 and hi > 3.0, (lo, hi)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d, "no images found"),
        (lambda d: (d / "notes.png").write_text("not an image") or d, "cannot read image"),
    ],
)
def test_bad_calibration_folders(capsys, tmp_path, make, fragment):
    folder = tmp_path / "calib"
    folder.mkdir()
    make(folder)
    code, _, err = run_cli(
        capsys, "quantize", "--model", "mobilefacenet", "--calib", str(folder), "--out", str(tmp_path / "m.mfnq")
    )
    assert code == 2
    assert_one_line_error(err, "calib", fragment)
    assert not (tmp_path / "m.mfnq").exists()


def test_wrong_sizes_and_too_few_images_warn_and_strict_refuses(capsys, tmp_path, eval_faces):
    folder = _write_faces(tmp_path / "calib", 3, size=(128, 100))
    code, _, err = run_cli(
        capsys,
        "quantize",
        "--model",
        "mobilefacenet",
        "--calib",
        str(folder),
        "--calib-limit",
        "3",
        "--eval-faces",
        str(eval_faces),
        "--strict",
        "--out",
        str(tmp_path / "m.mfnq"),
    )
    assert code == 2
    assert_one_line_error(err, "only 3 calibration images", "--strict")
    code, out, err = run_cli(
        capsys,
        "quantize",
        "--model",
        "mobilefacenet",
        "--calib",
        str(folder),
        "--calib-limit",
        "3",
        "--eval-faces",
        str(eval_faces),
        "--out",
        str(tmp_path / "m.mfnq"),
        "--json",
        "-",
    )
    assert code == 0, err
    assert "only 3 calibration images" in err and "are not 112x112 and were resized" in err
    result = json.loads(out)
    assert result["n_calib"] == 3 and result["n_eval"] == 10
    assert len(result["warnings"]) >= 2
    loaded = qformat.load(tmp_path / "m.mfnq")
    assert loaded.mode == "fused" and loaded.meta["preprocess"]["spec"] == "paper"


def test_forced_gate_failure_exits_3_and_still_writes_the_report(capsys, tmp_path, eval_faces):
    out = tmp_path / "build"
    code, _, err = run_cli(
        capsys,
        "build",
        "--target",
        "x86_64",
        "--model",
        "mobilefacenet",
        "--synthetic",
        "20",
        "--eval-faces",
        str(eval_faces),
        "--gate-cosine",
        "1.0",  # no int8 model reaches a cosine of exactly 1
        "--out",
        str(out),
    )
    assert code == 3
    assert_one_line_error(err, "accuracy gate failed", "mean cosine")
    report = json.loads((out / "report.json").read_text())
    q = report["quantization"]
    assert q["passed"] is False and q["gate"]["failures"]
    assert q["mode"] == "fused" and q["algorithm"] == "mse" and q["n_calib"] == 20 and q["n_eval"] == 10
    assert 0.5 < q["mean_cosine"] <= 1.0 and q["min_cosine"] <= q["mean_cosine"]
    assert {"auc", "threshold_at_far_1e-3"} <= set(q["float"]) and {"auc"} <= set(q["int8"])
    assert len(q["worst_layers"]) == 5 and q["layers"][0]["cosine_single"] <= q["layers"][-1]["cosine_single"]
    assert (out / "report.html").read_text().count("<img") >= 3
    assert (out / "model.mfnq").exists()


def test_quantized_model_file_is_inspectable_and_evaluable(capsys, tmp_path, eval_faces):
    path = tmp_path / "m.mfnq"
    code, _, err = run_cli(
        capsys,
        "quantize",
        "--model",
        "mobilefacenet",
        "--synthetic",
        "20",
        "--algo",
        "minmax",
        "--eval-faces",
        str(eval_faces),
        "--int16",
        "none",
        "--out",
        str(path),
    )
    assert code == 0, err
    code, out, _ = run_cli(capsys, "inspect", "--model", str(path), "--json", "-")
    assert code == 0
    summary = json.loads(out)
    assert summary["mode"] == "fused" and summary["int16_tensors"] == []
    assert summary["macs"] == pytest.approx(221e6, rel=0.01)
    convs = [r for r in summary["layers"] if r["op"] == "conv"]
    assert len(convs) == 50 and sum(r["activation"] == "prelu" for r in convs) == 33
    code, out, err = run_cli(capsys, "eval", "--model", str(path), "--synthetic", "10", "--json", "-")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == "mobilefacenet (int8 fused)" and result["n_images"] == 10
    assert result["preprocess"] == "paper"


def test_int16_escalation_helps_and_respects_the_memory_budget():
    from dataclasses import replace

    from compiler.lowering import ingest_and_lower
    from compiler.preprocess import parse_preprocess
    from compiler.quantization import QuantizeOptions, calibrate_and_quantize, escalate_int16

    _, lowered, _, _ = ingest_and_lower("mobilefacenet", parse_preprocess("paper"), None)
    opts = QuantizeOptions(algo="minmax", synthetic=4, eval_limit=4, gate_cosine=0.99999)
    qgraph, cal = calibrate_and_quantize(lowered, opts)
    widened, steps = escalate_int16(qgraph, cal, opts)
    assert steps, "a gate this strict must widen at least one tensor"
    assert steps[0]["probe_mean_cosine_after"] > steps[0]["probe_mean_cosine_before"]
    assert widened.tensors[steps[0]["tensor"]].dtype == "int16"
    _, none = escalate_int16(qgraph, cal, replace(opts, fits=lambda q: False))
    assert none == [], "nothing may be widened when nothing fits the target"


def test_pairs_file_over_eval_faces(capsys, tmp_path, eval_faces):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "file_a,file_b,same\nface_000.png,face_001.png,1\nface_002.png,face_003.png,1\n"
        "face_000.png,face_005.png,0\nface_001.png,face_007.png,0\nface_004.png,face_009.png,0\n"
    )
    code, _, err = run_cli(
        capsys,
        "quantize",
        "--model",
        "mobilefacenet",
        "--synthetic",
        "10",
        "--algo",
        "minmax",
        "--pairs",
        str(pairs),
        "--out",
        str(tmp_path / "m.mfnq"),
    )
    assert code == 2
    assert_one_line_error(err, "--pairs needs --eval-faces")
    code, out, err = run_cli(
        capsys,
        "quantize",
        "--model",
        "mobilefacenet",
        "--synthetic",
        "10",
        "--algo",
        "minmax",
        "--eval-faces",
        str(eval_faces),
        "--pairs",
        str(pairs),
        "--int16",
        "none",
        "--out",
        str(tmp_path / "m.mfnq"),
        "--json",
        "-",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["n_pairs"] == 5 and "auc" in result["float"] and "auc" in result["int8"]
