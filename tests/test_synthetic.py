"""Synthetic identities: reproducible, identities stable across images, held-out
identities disjoint from training ones, and too hard for raw pixels."""

from __future__ import annotations

import numpy as np

from compiler.synthetic import EVAL, TRAIN, identity, render_identity, synthetic_eval_set
from compiler.verification import all_pairs, pair_scores, roc_auc


def test_same_arguments_same_images():
    a = render_identity(TRAIN, 17, 3)
    b = render_identity(TRAIN, 17, 3)
    assert a.dtype == np.uint8 and a.shape == (3, 112, 112, 3)
    assert np.array_equal(a, b)


def test_images_of_one_identity_differ_but_traits_do_not():
    images = render_identity(EVAL, 3, 4)
    assert all(not np.array_equal(images[0], images[i]) for i in range(1, 4))
    assert np.array_equal(identity(EVAL, 3).pattern, identity(EVAL, 3).pattern)
    assert identity(EVAL, 3).eye_dx != identity(EVAL, 4).eye_dx


def test_train_and_eval_namespaces_are_different_people():
    train_traits = {round(identity(TRAIN, i).eye_dx, 9) for i in range(300)}
    eval_traits = {round(identity(EVAL, i).eye_dx, 9) for i in range(300)}
    assert not train_traits & eval_traits


def test_eval_set_shape_labels_and_seeds():
    images, labels = synthetic_eval_set(12)
    assert images.shape == (12, 3, 112, 112) and images.dtype == np.uint8
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 2
    other, _ = synthetic_eval_set(12, seed=1)
    assert not np.array_equal(images[0], other[0])


def embedding_auc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    pairs = all_pairs(labels)
    return roc_auc(pair_scores(embeddings, pairs), pairs.same)


def test_raw_pixels_cannot_verify_synthetic_faces():
    images, labels = synthetic_eval_set(150)
    pixels = images.reshape(len(images), -1).astype(np.float64)
    assert embedding_auc(pixels, labels) <= 0.75
    centred = pixels - pixels.mean(axis=1, keepdims=True)
    assert embedding_auc(centred, labels) <= 0.75
