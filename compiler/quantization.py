"""The int8 step of `build` and `quantize`: calibrate, quantize, and measure what int8 cost.

Accuracy is measured on images that took no part in calibration: `--eval-faces`, or a
seeded held-out split of `--calib`, or held-out synthetic identities. The gate
(mean cosine int8 vs float, AUC drop) decides whether the artifact is good enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration import golden
from calibration.analysis import layer_errors
from calibration.dataset import CalibrationSet, load_calibration_files, synthetic_calibration
from calibration.observers import observe_ranges
from calibration.qgraph import QGraph
from calibration.quantizer import quantize
from calibration.ranges import ALGORITHMS
from compiler import executor, ui
from compiler.errors import BadInput
from compiler.faces import list_images
from compiler.ir import Graph
from compiler.verification import all_pairs, pair_scores, roc_curve, verification_metrics

DEFAULT_CALIB_LIMIT = 100
DEFAULT_SYNTHETIC_CALIB = 100
DEFAULT_SYNTHETIC_EVAL = 100
MAX_HELD_OUT = 200
ANALYSIS_IMAGES = 4


@dataclass(frozen=True)
class QuantizeOptions:
    algo: str = "mse"
    mode: str = "fused"
    calib: Path | None = None
    synthetic: int | None = None
    calib_limit: int | None = None
    eval_faces: Path | None = None
    strict: bool = False
    gate_cosine: float = 0.99
    gate_auc_drop: float = 0.005


@dataclass
class HeldOut:
    """Images for accuracy numbers, with identity labels when known."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


def _labelled(folder: Path, height: int, width: int, only: set[str] | None = None) -> HeldOut:
    """A folder's faces with identities if it has them, else unlabelled."""
    from compiler.evaluate import face_index, load_faces

    try:
        files, identities = face_index(folder)
    except BadInput:
        paths = [p for p in list_images(folder) if only is None or str(p.relative_to(folder)) in only]
        from compiler.faces import load_images

        return HeldOut(load_images(paths, height, width)[0], None, str(folder))
    keep = [i for i, f in enumerate(files) if only is None or f in only]
    faces = load_faces(folder, height, width, [files[i] for i in keep], [identities[i] for i in keep])
    return HeldOut(faces.pixels, faces.labels, str(folder))


def datasets(opts: QuantizeOptions, height: int, width: int) -> tuple[CalibrationSet, HeldOut]:
    """The calibration set and the held-out set, per DESIGN section 8."""
    if opts.calib_limit is not None and opts.calib_limit < 1:
        raise BadInput(f"--calib-limit {opts.calib_limit}: must be at least 1")
    if opts.calib is None:
        calib = synthetic_calibration(opts.synthetic or DEFAULT_SYNTHETIC_CALIB, height, width)
        if opts.eval_faces:
            return calib, _labelled(opts.eval_faces, height, width)
        from compiler.evaluate import synthetic_faces

        faces = synthetic_faces(DEFAULT_SYNTHETIC_EVAL, height, width)
        return calib, HeldOut(faces.pixels, faces.labels, faces.source)
    files = list_images(opts.calib)
    order = np.random.default_rng(0).permutation(len(files))
    limit = opts.calib_limit or min(DEFAULT_CALIB_LIMIT, max(1, int(len(files) * 0.8)))
    calib_files = [files[i] for i in sorted(order[:limit])]
    calib = load_calibration_files(opts.calib, calib_files, height, width, opts.strict)
    if opts.eval_faces:
        return calib, _labelled(opts.eval_faces, height, width)
    rest = {str(files[i].relative_to(opts.calib)) for i in sorted(order[limit:])[:MAX_HELD_OUT]}
    if len(rest) < 2:
        raise BadInput(
            f"{opts.calib}: no images left to hold out after calibrating on {limit}; lower --calib-limit "
            "or pass --eval-faces"
        )
    return calib, _labelled(opts.calib, height, width, only=rest)


def float_embeddings(graph: Graph, images: np.ndarray) -> np.ndarray:
    out = graph.outputs[0]
    return np.concatenate(
        [executor.run(graph, images[i : i + 1].astype(np.float32))[out].reshape(1, -1) for i in range(len(images))]
    )


def accuracy(graph: Graph, qgraph: QGraph, held: HeldOut) -> dict:
    """int8 vs float on the held-out images: cosine per image, and verification if labelled."""
    reference = float_embeddings(graph, held.images)
    quantized = golden.embed(qgraph, held.images)
    cos = np.sum(reference * quantized, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(quantized, axis=1) + 1e-30
    )
    result: dict = {
        "n_eval": len(held.images),
        "eval_source": held.source,
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "cosines": cos.tolist(),
    }
    if held.labels is not None and len(np.unique(held.labels)) > 1:
        f = verification_metrics(reference, held.labels)
        q = verification_metrics(quantized, held.labels)
        result["float"] = {k: f[k] for k in ("auc", "accuracy", "threshold_at_far_1e-3", "rank1")}
        result["int8"] = {k: q[k] for k in ("auc", "accuracy", "threshold_at_far_1e-3", "rank1")}
        result["auc_drop"] = f["auc"] - q["auc"]
        result["roc"] = {"float": _roc_points(reference, held.labels), "int8": _roc_points(quantized, held.labels)}
    return result


def _roc_points(embeddings: np.ndarray, labels: np.ndarray, n: int = 120) -> list[list[float]]:
    """A downsampled ROC curve [[far, tar], ...] for the report's plot."""
    pairs = all_pairs(labels)
    far, tar, _ = roc_curve(pair_scores(embeddings, pairs), pairs.same)
    keep = np.unique(np.clip(np.searchsorted(far, np.geomspace(1e-5, 1.0, n)), 0, len(far) - 1))
    return [[float(far[i]), float(tar[i])] for i in keep]


def gate(result: dict, opts: QuantizeOptions) -> list[str]:
    """Reasons the int8 model fails the gate (empty when it passes)."""
    failures = []
    if result["mean_cosine"] < opts.gate_cosine:
        failures.append(f"mean cosine int8 vs float {result['mean_cosine']:.4f} < {opts.gate_cosine}")
    if "auc_drop" in result and result["auc_drop"] > opts.gate_auc_drop:
        failures.append(f"AUC drop {result['auc_drop']:.4f} > {opts.gate_auc_drop}")
    return failures


def calibrate_and_quantize(graph: Graph, opts: QuantizeOptions) -> tuple[QGraph, dict, HeldOut]:
    """Calibrate on the calibration set and quantize; returns (qgraph, calibration info, held-out set)."""
    if opts.algo not in ALGORITHMS:
        raise BadInput(f"--algo {opts.algo}: expected one of {', '.join(ALGORITHMS)}")
    height, width = graph.image_hw()
    calib, held = datasets(opts, height, width)
    for warning in calib.warnings:
        ui.warn(warning)
    with ui.progress(f"calibrating ({opts.algo}) on {len(calib.images)} images") as advance:
        ranges = observe_ranges(graph, calib.images, opts.algo, advance)
    qgraph = quantize(graph, ranges, opts.mode)
    info = {
        "mode": opts.mode,
        "algorithm": opts.algo,
        "n_calib": len(calib.images),
        "calib_source": calib.source,
        "warnings": calib.warnings,
    }
    return qgraph, info, held


def measure(graph: Graph, qgraph: QGraph, held: HeldOut, opts: QuantizeOptions) -> dict:
    """Accuracy, gate verdict and the worst layers, for the report."""
    with ui.step(f"int8 vs float on {len(held.images)} held-out images"):
        result = accuracy(graph, qgraph, held)
    with ui.step("per-layer error analysis"):
        layers = layer_errors(graph, qgraph, held.images[:ANALYSIS_IMAGES])
    result["gate"] = {
        "mean_cosine_min": opts.gate_cosine,
        "auc_drop_max": opts.gate_auc_drop,
        "failures": gate(result, opts),
    }
    result["passed"] = not result["gate"]["failures"]
    result["layers"] = layers
    result["worst_layers"] = [r["layer"] for r in layers[:5]]
    return result
