"""Calibration images: load a face folder (or synthetic faces) and say when they look wrong.

Ranges calibrated on the wrong images are the classic cause of int8 face models
collapsing (unaligned crops, too few images, the wrong kind of picture), so the
checks here are loud: warnings by default, errors with `--strict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import BadInput
from compiler.faces import load_images, resize_pixels
from compiler.synthetic import TEMPLATE, synthetic_eval_set

MIN_IMAGES = 20
FACE_SCORE_THRESHOLD = 0.15  # real aligned faces score ~0.95 on average, noise ~0
MAX_NON_FACE_FRACTION = 0.25


@dataclass
class CalibrationSet:
    images: np.ndarray  # uint8 RGB NCHW
    source: str
    warnings: list[str] = field(default_factory=list)


def _box(lum: np.ndarray, cx: float, cy: float, w: int, h: int, size: tuple[int, int]) -> np.ndarray:
    sy, sx = size[0] / 112, size[1] / 112
    y0, x0 = int((cy - h / 2) * sy), int((cx - w / 2) * sx)
    return lum[:, y0 : y0 + max(1, int(h * sy)), x0 : x0 + max(1, int(w * sx))].mean(axis=(1, 2))


def face_scores(images: np.ndarray) -> np.ndarray:
    """How much darker the eye regions of the aligned template are than the skin around them,
    in units of the image's contrast: positive for aligned faces, about zero otherwise."""
    lum = images.astype(np.float64).mean(axis=1)
    size = lum.shape[1:]
    (lx, ly), (rx, ry) = TEMPLATE[0], TEMPLATE[1]
    eyes = (_box(lum, lx, ly, 12, 6, size) + _box(lum, rx, ry, 12, 6, size)) / 2
    around = (
        _box(lum, lx, ly + 12, 12, 6, size)
        + _box(lum, rx, ry + 12, 12, 6, size)
        + _box(lum, (lx + rx) / 2, (ly + ry) / 2, 6, 8, size)
        + _box(lum, lx, ly - 12, 12, 4, size)
        + _box(lum, rx, ry - 12, 12, 4, size)
    ) / 5
    return (around - eyes) / (lum.std(axis=(1, 2)) + 1e-9)


def check_calibration(images: np.ndarray, resized: int, source: str, strict: bool = False) -> list[str]:
    """Warnings for a suspicious calibration set (errors with strict)."""
    n = len(images)
    warnings = []
    if n < MIN_IMAGES:
        warnings.append(f"{source}: only {n} calibration images; use at least {MIN_IMAGES} (100 or more is better)")
    if resized:
        height, width = images.shape[2:]
        warnings.append(
            f"{source}: {resized} of {n} images are not {width}x{height} and were resized; calibration images "
            "should be faces aligned like the model's training data (e.g. the ArcFace 112x112 template)"
        )
    non_faces = int((face_scores(images) < FACE_SCORE_THRESHOLD).sum())
    if non_faces > MAX_NON_FACE_FRACTION * n:
        warnings.append(
            f"{source}: {non_faces} of {n} images do not look like aligned faces (eyes not where the 112x112 "
            "template puts them); ranges calibrated on them may not match what the device sees"
        )
    if strict and warnings:
        raise BadInput(f"{warnings[0]} (--strict)")
    return warnings


def load_calibration_files(folder: Path, files: list[Path], height: int, width: int, strict: bool) -> CalibrationSet:
    """Calibration images from these files of --calib DIR, checked."""
    images, resized = load_images(files, height, width)
    return CalibrationSet(images, str(folder), check_calibration(images, resized, str(folder), strict))


def synthetic_calibration(count: int, height: int, width: int) -> CalibrationSet:
    """The default calibration set: seeded synthetic faces (a block of identities of their own)."""
    images = resize_pixels(synthetic_eval_set(count, seed=1)[0], height, width)
    return CalibrationSet(images, f"synthetic:{count}")
