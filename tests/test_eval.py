"""`eval` on the real trained model and real aligned faces, and its CLI contract.

The numbers are the ones ../shared/data/real/README.md measured independently; a
different AUC here means the embedding path (preprocessing, layout, normalisation)
changed, which is exactly what `eval` exists to catch in compiled models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compiler.evaluate import embed, face_index, float_embedder, load_faces
from compiler.frontend import load_model
from compiler.preprocess import parse_preprocess
from compiler.verification import verification_metrics
from tests.cli_helpers import assert_one_line_error, run_cli

BGR_IMAGENET = "bgr:123.675,116.28,103.53:58.395,57.12,57.375"  # ImageNet stats, channels in BGR order
# What `cv2.imread` + ImageNet normalisation by channel position gives: the README's "BGR" row.
BGR_BY_POSITION = "bgr:103.53,116.28,123.675:57.375,57.12,58.395"


@pytest.fixture(scope="module")
def friends_set(foamliu, friends):
    """The model and the 245 loaded faces, once per module."""
    model = load_model(str(foamliu))
    height, width = model.graph.image_hw()
    files, identities = face_index(friends)
    return model, load_faces(friends, height, width, files, identities)


@pytest.fixture(scope="module")
def rgb_metrics(friends_set):
    model, faces = friends_set
    embeddings = embed(float_embedder(model, parse_preprocess("imagenet")), faces.pixels)
    return verification_metrics(embeddings, faces.labels)


def _auc(friends_set, spec: str) -> float:
    model, faces = friends_set
    return verification_metrics(embed(float_embedder(model, parse_preprocess(spec)), faces.pixels), faces.labels)["auc"]


# --- the real model reproduces its README ----------------------------------------------


def test_friends_set_is_the_one_the_readme_measured(friends_set):
    _, faces = friends_set
    assert faces.pixels.shape == (245, 3, 112, 112)
    assert len(set(faces.labels)) == 6


def test_rgb_imagenet_reproduces_readme(rgb_metrics):
    assert rgb_metrics["n_pairs"] == 29_890
    assert rgb_metrics["n_positive_pairs"] == 4_887
    assert rgb_metrics["auc"] == pytest.approx(0.9884, abs=0.001)
    assert rgb_metrics["rank1"] == pytest.approx(0.9878, abs=0.005)
    assert rgb_metrics["accuracy"] == pytest.approx(0.975, abs=0.01)  # README: best threshold 97.5 %
    assert rgb_metrics["tar_at_far"]["1e-3"] is not None  # 25,003 negatives: enough for 1e-3
    assert rgb_metrics["tar_at_far"]["1e-4"] is None  # not for 1e-4 (needs 100,000)


def test_bgr_order_changes_the_auc(friends_set, rgb_metrics):
    bgr = _auc(friends_set, BGR_IMAGENET)
    assert abs(bgr - rgb_metrics["auc"]) > 0.001
    assert bgr == pytest.approx(0.9848, abs=0.0005)  # measured; channels swapped, stats follow the channel


def test_bgr_by_position_matches_readme(friends_set):
    assert _auc(friends_set, BGR_BY_POSITION) == pytest.approx(0.9860, abs=0.0005)


# --- CLI ---------------------------------------------------------------------------------


def test_cli_json_to_stdout_and_plot(capsys, tmp_path, foamliu, friends):
    plot = tmp_path / "roc.png"
    code, out, err = run_cli(
        capsys,
        "eval",
        "--model",
        foamliu,
        "--faces",
        friends,
        "--preprocess",
        "imagenet",
        "--limit",
        60,
        "--flip",
        "--plot",
        plot,
        "--json",
        "-",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["n_images"] == 60 and result["n_pairs"] == 60 * 59 // 2
    assert result["n_identities"] == 2  # sorted order: 41 Chandler, then Joey
    assert result["sha256"] == "b7120c095d60094f28a4a54ba6a8bf51b297a6273fb40ef6350dfec1f63d9507"
    assert result["preprocess"] == "imagenet" and result["flip"] is True
    assert result["source"] == str(friends) and result["model"] == foamliu.name
    assert 0.9 < result["auc"] <= 1.0
    assert "ROC AUC" in err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".roc.png.*"))  # no temporary left behind


def test_cli_csv_pairs(capsys, tmp_path, foamliu, friends):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "file_a,file_b,same\n"
        "Chandler_Chandler00001.png,Chandler_Chandler00002.png,1\n"
        "Joey_Joey00001.png,Joey_Joey00003.png,true\n"
        "Chandler_Chandler00001.png,Joey_Joey00001.png,0\n"
        "Chandler_Chandler00002.png,Joey_Joey00003.png,false\n"
    )
    out_json = tmp_path / "eval.json"
    code, _, err = run_cli(
        capsys,
        "eval",
        "--model",
        foamliu,
        "--faces",
        friends,
        "--pairs",
        pairs,
        "--preprocess",
        "imagenet",
        "--json",
        out_json,
    )
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["n_pairs"] == 4 and result["n_positive_pairs"] == 2
    assert result["n_images"] == 245  # rank-1 still uses every loaded image


def _lfw_folder(friends: Path, root: Path) -> Path:
    """A tiny LFW-style tree (NAME/NAME_0001.png, no labels.csv) made of friends images."""
    for name in ("Chandler", "Joey", "Ross"):
        (root / name).mkdir(parents=True)
        for i in range(1, 4):
            shutil.copy(friends / f"{name}_{name}{i:05d}.png", root / name / f"{name}_{i:04d}.png")
    return root


def test_cli_lfw_pairs_on_identity_folders(capsys, tmp_path, foamliu, friends):
    faces = _lfw_folder(friends, tmp_path / "lfw")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("3\nChandler 1 2\nJoey 2 3\nRoss 1 3\nChandler 1 Joey 1\nJoey 2 Ross 2\nRoss 3 Chandler 3\n")
    code, out, err = run_cli(
        capsys,
        "eval",
        "--model",
        foamliu,
        "--faces",
        faces,
        "--pairs",
        pairs,
        "--preprocess",
        "imagenet",
        "--json",
        "-",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["n_pairs"] == 6 and result["n_positive_pairs"] == 3
    assert result["n_images"] == 9 and result["n_identities"] == 3


def test_cli_synthetic(capsys, foamliu):
    pytest.importorskip("compiler.synthetic", reason="the synthetic face generator is not in this tree yet")
    code, out, err = run_cli(
        capsys, "eval", "--model", foamliu, "--synthetic", 20, "--preprocess", "imagenet", "--json", "-"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["source"] == "synthetic:20" and result["n_images"] == 20
    assert result["n_identities"] >= 2


# --- bad input: exit 2, one line ----------------------------------------------------------


def test_missing_faces_folder(capsys, tmp_path, foamliu):
    code, out, err = run_cli(capsys, "eval", "--model", foamliu, "--faces", tmp_path / "nope", "--json", "-")
    assert code == 2 and out == ""
    assert_one_line_error(err, "nope", "not a folder")


def test_faces_without_labels(capsys, tmp_path, foamliu, friends):
    for name in ("Chandler_Chandler00001.png", "Joey_Joey00001.png"):
        shutil.copy(friends / name, tmp_path / name)
    code, _, err = run_cli(capsys, "eval", "--model", foamliu, "--faces", tmp_path)
    assert code == 2
    assert_one_line_error(err, "labels.csv", "DIR/<identity>/")


def test_labels_naming_a_missing_file(capsys, tmp_path, foamliu, friends):
    shutil.copy(friends / "Joey_Joey00001.png", tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("file,identity\na.png,Joey\nb.png,Ross\n")
    code, _, err = run_cli(capsys, "eval", "--model", foamliu, "--faces", tmp_path)
    assert code == 2
    assert_one_line_error(err, "labels.csv:3", "b.png")


@pytest.mark.parametrize("sources", [("--faces", "X", "--synthetic", "10"), ()])
def test_exactly_one_of_faces_or_synthetic(capsys, foamliu, friends, sources):
    argv = [str(friends) if a == "X" else a for a in sources]
    code, _, err = run_cli(capsys, "eval", "--model", foamliu, *argv)
    assert code == 2
    assert_one_line_error(err, "--faces", "--synthetic")


def test_pairs_naming_a_missing_image(capsys, tmp_path, foamliu, friends):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nChandler 1 2\nChandler 1 Monica 99\n")
    code, out, err = run_cli(capsys, "eval", "--model", foamliu, "--faces", friends, "--pairs", pairs, "--json", "-")
    assert code == 2 and out == ""
    assert_one_line_error(err, "pairs.txt:3", "Monica/Monica_0099")


def test_eval_sees_no_synthetic_pairs(capsys, tmp_path, foamliu):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\nA 1 2\n")
    code, _, err = run_cli(capsys, "eval", "--model", foamliu, "--synthetic", 10, "--pairs", pairs)
    assert code == 2
    assert_one_line_error(err, "--pairs needs --faces")
