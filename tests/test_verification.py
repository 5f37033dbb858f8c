"""Verification metrics and pairs files on constructed data whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.errors import BadInput
from compiler.verification import (
    Pairs,
    all_pairs,
    average_ranks,
    best_threshold,
    rank1_identification,
    read_pairs,
    resolve_pairs,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_accuracy_10fold,
    verification_metrics,
)


def _brute_force_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Count every (same, different) pair: wins 1, ties 1/2."""
    pos, neg = scores[same], scores[~same]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


# --- AUC -----------------------------------------------------------------------------


def test_separable_scores_give_auc_one_and_accuracy_one():
    same = np.r_[np.ones(50, bool), np.zeros(150, bool)]
    scores = np.where(same, 0.8, 0.1) + np.linspace(0, 0.05, same.size)
    assert roc_auc(scores, same) == 1.0
    assert verification_accuracy_10fold(scores, same) == 1.0


def test_reversed_scores_give_auc_zero():
    same = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    assert roc_auc(np.where(same, -1.0, 1.0), same) == 0.0


def test_all_ties_give_auc_half():
    same = np.r_[np.ones(7, bool), np.zeros(13, bool)]
    assert roc_auc(np.full(same.size, 0.3), same) == 0.5


def test_auc_matches_brute_force_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    same = rng.random(700) < 0.3
    scores = np.round(rng.normal(size=700) + same * 0.8, 1)  # rounding makes many ties
    assert roc_auc(scores, same) == pytest.approx(_brute_force_auc(scores, same), abs=1e-12)


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.arange(5.0), np.ones(5, bool))


def test_roc_curve_ends_at_one_one():
    same = np.array([True, False, True, False])
    far, tar, thresholds = roc_curve(np.array([0.9, 0.8, 0.7, 0.1]), same)
    np.testing.assert_allclose(far, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tar, [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.7, 0.1])


# --- accuracy ------------------------------------------------------------------------


def test_best_threshold_sits_between_the_classes():
    threshold, accuracy = best_threshold(np.array([0.1, 0.2, 0.6, 0.9]), np.array([False, False, True, True]))
    assert threshold == pytest.approx(0.4)
    assert accuracy == 1.0


def test_ten_fold_accuracy_with_one_unavoidable_error_per_fold():
    # Each of 10 folds: 9 clean same pairs at 0.9, 9 clean different at 0.1, and one different pair
    # at 0.95 that no threshold can get right: 18/19 on every held-out fold.
    scores, same, folds = [], [], []
    for fold in range(10):
        scores += [0.9] * 9 + [0.1] * 9 + [0.95]
        same += [True] * 9 + [False] * 10
        folds += [fold] * 19
    accuracy = verification_accuracy_10fold(np.array(scores), np.array(same), np.array(folds))
    assert accuracy == pytest.approx(18 / 19)


def test_default_folds_are_deterministic():
    rng = np.random.default_rng(3)
    same = rng.random(500) < 0.4
    scores = rng.normal(size=500) + same
    assert verification_accuracy_10fold(scores, same) == verification_accuracy_10fold(scores, same)


# --- TAR @ FAR -----------------------------------------------------------------------


def test_tar_at_far_none_when_too_few_negatives():
    same = np.r_[np.ones(100, bool), np.zeros(9_999, bool)]
    scores = np.linspace(0, 1, same.size)
    assert tar_at_far(scores, same, 1e-3) is None  # needs 10 / 1e-3 = 10,000 negatives
    assert tar_at_far(scores, same, 1e-2) is not None


def test_tar_at_far_known_value():
    negatives = np.arange(20_000) / 20_000.0  # 0 .. 0.99995 in steps of 0.00005
    positives = np.array([0.5, 0.99, 0.999, 1.5])
    scores = np.r_[positives, negatives]
    same = np.r_[np.ones(4, bool), np.zeros(20_000, bool)]
    tar, threshold = tar_at_far(scores, same, 1e-3)  # type: ignore[misc]
    assert threshold == pytest.approx(0.99895)  # exactly 20 of 20,000 negatives (FAR 1e-3) lie above
    assert np.sum(negatives > threshold) == 20
    assert tar == 0.5  # 0.999 and 1.5 are accepted, 0.5 and 0.99 are not


# --- rank-1 --------------------------------------------------------------------------


def test_rank1_on_toy_set():
    # A near 0 degrees, B near 90 degrees but one B image at 30 degrees; C has a single image.
    angles = np.radians([0, 5, 10, 90, 95, 30, 45])
    embeddings = np.c_[np.cos(angles), np.sin(angles)] * np.array([[1], [2], [3], [1], [5], [1], [7]])
    labels = np.array(["A", "A", "A", "B", "B", "B", "C"])
    # A: all right (3). B: 90 and 95 find each other (2); 30 degrees finds C at 45 (wrong).
    # C is in the gallery but is no probe (nobody else to find).
    assert rank1_identification(embeddings, labels) == pytest.approx(5 / 6)


def test_rank1_none_without_repeated_identities():
    assert rank1_identification(np.eye(3), np.array([0, 1, 2])) is None


# --- verification_metrics -------------------------------------------------------------


def test_metrics_dict_shape():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 5)
    centres = rng.normal(size=(8, 16))
    embeddings = centres[labels] + 0.3 * rng.normal(size=(40, 16))
    result = verification_metrics(embeddings, labels)
    assert set(result) >= {"auc", "accuracy", "tar_at_far", "threshold_at_far_1e-3", "rank1", "n_pairs", "n_images"}
    assert set(result["tar_at_far"]) == {"1e-3", "1e-4"}
    assert result["n_pairs"] == 40 * 39 // 2
    assert result["n_positive_pairs"] == 8 * 10
    assert result["n_images"] == 40 and result["n_identities"] == 8
    assert result["tar_at_far"]["1e-3"] is None  # 700 negatives < 10,000
    assert result["auc"] > 0.99 and result["rank1"] == 1.0


def test_all_pairs_count_like_the_friends_set():
    pairs = all_pairs(np.repeat(np.arange(6), [41, 44, 41, 40, 39, 40]))
    assert len(pairs) == 29_890
    assert int(pairs.same.sum()) == 4_887


def test_metrics_need_two_identities():
    with pytest.raises(BadInput, match="same- and different-identity"):
        verification_metrics(np.eye(4), np.zeros(4, int))


# --- pairs files ---------------------------------------------------------------------

FILES = ["Ann/Ann_0001.png", "Ann/Ann_0002.png", "Bob/Bob_0001.png", "Bob/Bob_0003.png"]
IDS = ["Ann", "Ann", "Bob", "Bob"]


def _pairs(tmp_path: Path, text: str) -> Pairs:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    lines, n_folds = read_pairs(path)
    return resolve_pairs(lines, n_folds, FILES, IDS, path)


def test_lfw_pairs(tmp_path):
    pairs = _pairs(tmp_path, "3\nAnn 1 2\nBob 1 3\nAnn 2 Bob 3\n")
    np.testing.assert_array_equal(pairs.a, [0, 2, 1])
    np.testing.assert_array_equal(pairs.b, [1, 3, 3])
    np.testing.assert_array_equal(pairs.same, [True, True, False])
    assert pairs.folds is None


def test_lfw_pairs_with_folds_use_consecutive_blocks(tmp_path):
    pairs = _pairs(tmp_path, "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nBob\t1\t3\nAnn\t2\tBob\t3\n")
    np.testing.assert_array_equal(pairs.folds, [0, 0, 1, 1])  # type: ignore[arg-type]


def test_csv_pairs_with_and_without_header(tmp_path):
    header = "file_a,file_b,same\n"
    with_header = _pairs(
        tmp_path, header + "Ann/Ann_0001.png,Ann/Ann_0002.png,1\nAnn_0001.png,Bob/Bob_0001.png,false\n"
    )
    without = _pairs(tmp_path, "Ann/Ann_0001.png,Ann/Ann_0002.png,true\n./Ann/Ann_0001.png,Bob/Bob_0001.png,0\n")
    for pairs in (with_header, without):
        np.testing.assert_array_equal(pairs.a, [0, 0])
        np.testing.assert_array_equal(pairs.b, [1, 2])
        np.testing.assert_array_equal(pairs.same, [True, False])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2\nAnn 1 2\nAnn 1\n", "pairs.txt:3: expected 'name idx1 idx2'"),
        ("2\nAnn 1 2\nAnn one Bob 1\n", "pairs.txt:3: 'one' is not an image number"),
        ("file_a,file_b,same\nAnn/Ann_0001.png,Ann/Ann_0002.png,1\n\nAnn_0001.png,Bob_0001.png,maybe\n", ":4: same"),
        ("a,b,same\nAnn/Ann_0001.png,Bob/Bob_0001.png\n", "pairs.txt:2: expected 'file_a,file_b,same'"),
        ("pairs follow\nAnn 1 2\n", "pairs.txt:1: an LFW pairs file starts with"),
    ],
)
def test_bad_pairs_line_names_the_line(tmp_path, text, message):
    with pytest.raises(BadInput, match=message):
        _pairs(tmp_path, text)


def test_pair_naming_a_missing_image(tmp_path):
    with pytest.raises(BadInput, match=r"pairs.txt:3: no image 'Bob/Bob_0002'"):
        _pairs(tmp_path, "2\nAnn 1 2\nBob 1 2\n")
    with pytest.raises(BadInput, match=r"pairs.txt:1: no image 'Ann/Ann_0009.png'"):
        _pairs(tmp_path, "Ann/Ann_0001.png,Ann/Ann_0009.png,1\n")
