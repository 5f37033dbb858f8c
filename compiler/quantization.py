"""The int8 step of `build` and `quantize`: calibrate, quantize, and measure what int8 cost.

Accuracy is measured on images that took no part in calibration: `--eval-faces`, or a
seeded held-out split of `--calib`, or held-out synthetic identities. The gate
(mean cosine int8 vs float, AUC drop) decides whether the artifact is good enough.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration import golden
from calibration.analysis import layer_errors
from calibration.dataset import CalibrationSet, load_calibration_files, synthetic_calibration
from calibration.observers import observe_ranges
from calibration.qgraph import QGraph
from calibration.quantizer import int16_candidates, quantize
from calibration.ranges import ALGORITHMS
from compiler import executor, ui
from compiler.errors import BadInput
from compiler.faces import list_images
from compiler.frontend import LoadedModel
from compiler.ir import Graph
from compiler.preprocess import Preprocess
from compiler.verification import (
    Pairs,
    all_pairs,
    pair_scores,
    read_pairs,
    resolve_pairs,
    roc_curve,
    verification_metrics,
)

DEFAULT_CALIB_LIMIT = 100
DEFAULT_SYNTHETIC_CALIB = 100
DEFAULT_SYNTHETIC_EVAL = 100
MAX_HELD_OUT = 200
ANALYSIS_IMAGES = 4
INT16_PROBE_IMAGES = 16
MAX_INT16_TENSORS = 4
INT16_MARGIN = 0.001  # stop once the probe clears the gate by this much


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
    int16: str = "auto"  # "auto", "none", or comma-separated tensor names
    eval_limit: int = MAX_HELD_OUT
    pairs: Path | None = None  # LFW pairs.txt or CSV over --eval-faces
    # Memory-bound targets: a candidate int16 model must pass this check (the backend's arena plan).
    fits: Callable[[QGraph], bool] | None = None


@dataclass
class HeldOut:
    """Images for accuracy numbers, with identity labels when known."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    pairs: Pairs | None = None


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
    """The calibration set and the held-out set (at most --eval-limit images), per DESIGN section 8."""
    if opts.pairs is not None and opts.eval_faces is None:
        raise BadInput("--pairs needs --eval-faces (the pairs name files of that folder)")
    if opts.eval_limit < 2:
        raise BadInput(f"--eval-limit {opts.eval_limit}: need at least 2 images")
    calib, held = _datasets(opts, height, width)
    limit = opts.eval_limit
    labels = None if held.labels is None else held.labels[:limit]
    pairs = None
    if opts.pairs is not None and opts.eval_faces is not None:
        pairs = _pairs_within(opts.pairs, opts.eval_faces, limit)
    return calib, HeldOut(held.images[:limit], labels, held.source, pairs)


def _pairs_within(path: Path, folder: Path, limit: int) -> Pairs:
    """The pairs of --pairs whose two images are among the first `limit` of --eval-faces."""
    from compiler.evaluate import face_index

    files, identities = face_index(folder)
    lines, n_folds = read_pairs(path)
    pairs = resolve_pairs(lines, n_folds, files, identities, path)
    inside = (pairs.a < limit) & (pairs.b < limit)
    if not inside.any():
        raise BadInput(f"{path}: no pair falls within the first {limit} images of {folder} (raise --eval-limit)")
    return Pairs(pairs.a[inside], pairs.b[inside], pairs.same[inside])


def _datasets(opts: QuantizeOptions, height: int, width: int) -> tuple[CalibrationSet, HeldOut]:
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
    rest = {str(files[i].relative_to(opts.calib)) for i in sorted(order[limit:])[: opts.eval_limit]}
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


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a with the same row of b (int8 vs float, per image)."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def accuracy(graph: Graph, qgraph: QGraph, held: HeldOut) -> dict:
    """int8 vs float on the held-out images: cosine per image, and verification if labelled."""
    return compare_embeddings(float_embeddings(graph, held.images), golden.embed(qgraph, held.images), held)


def compare_embeddings(reference: np.ndarray, quantized: np.ndarray, held: HeldOut) -> dict:
    """A quantized model's embeddings vs the float ones on the held-out images (any backend)."""
    cos = row_cosines(reference, quantized)
    result: dict = {
        "n_eval": len(held.images),
        "eval_source": held.source,
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "cosines": cos.tolist(),
    }
    if held.labels is not None and len(np.unique(held.labels)) > 1:
        f = verification_metrics(reference, held.labels, held.pairs)
        q = verification_metrics(quantized, held.labels, held.pairs)
        result["float"] = {k: f[k] for k in ("auc", "accuracy", "threshold_at_far_1e-3", "rank1")}
        result["int8"] = {k: q[k] for k in ("auc", "accuracy", "threshold_at_far_1e-3", "rank1")}
        result["auc_drop"] = f["auc"] - q["auc"]
        result["n_pairs"] = f["n_pairs"]
        result["roc"] = {
            "float": _roc_points(reference, held.labels, held.pairs),
            "int8": _roc_points(quantized, held.labels, held.pairs),
        }
    return result


def _roc_points(embeddings: np.ndarray, labels: np.ndarray, pairs: Pairs | None, n: int = 120) -> list[list[float]]:
    """A downsampled ROC curve [[far, tar], ...] for the report's plot."""
    pairs = all_pairs(labels) if pairs is None else pairs
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


@dataclass
class Calibrated:
    """Everything quantization needs again when it re-quantizes with int16 layers."""

    graph: Graph
    ranges: dict[str, tuple[float, float]]
    info: dict
    held: HeldOut


def calibrate_and_quantize(graph: Graph, opts: QuantizeOptions) -> tuple[QGraph, Calibrated]:
    """Calibrate on the calibration set and quantize."""
    if opts.algo not in ALGORITHMS:
        raise BadInput(f"--algo {opts.algo}: expected one of {', '.join(ALGORITHMS)}")
    height, width = graph.image_hw()
    calib, held = datasets(opts, height, width)
    for warning in calib.warnings:
        ui.warn(warning)
    with ui.progress(f"calibrating ({opts.algo}) on {len(calib.images)} images") as advance:
        ranges = observe_ranges(graph, calib.images, opts.algo, advance)
    int16 = _explicit_int16(opts)
    qgraph = quantize(graph, ranges, opts.mode, int16)
    info = {
        "mode": opts.mode,
        "algorithm": opts.algo,
        "n_calib": len(calib.images),
        "calib_source": calib.source,
        "warnings": calib.warnings,
    }
    return qgraph, Calibrated(graph, ranges, info, held)


def _explicit_int16(opts: QuantizeOptions) -> frozenset[str]:
    if opts.int16 in ("auto", "none", ""):
        return frozenset()
    if opts.mode != "fused":
        raise BadInput("--int16 layers need --mode fused")
    return frozenset(t.strip() for t in opts.int16.split(",") if t.strip())


def _mean_cosine(reference: np.ndarray, qgraph: QGraph, images: np.ndarray) -> float:
    return float(row_cosines(reference, golden.embed(qgraph, images)).mean())


def escalate_int16(qgraph: QGraph, cal: Calibrated, opts: QuantizeOptions) -> tuple[QGraph, list[dict]]:
    """Move tensors around the worst layers to int16, one at a time, while the gate fails.

    Each round tries the inputs and output of the three worst layers (single-layer
    cosine) and keeps the one that raises the mean cosine most on a probe subset.
    """
    probe = cal.held.images[:INT16_PROBE_IMAGES]
    reference = float_embeddings(cal.graph, probe)
    current = _mean_cosine(reference, qgraph, probe)
    chosen: list[str] = sorted(_explicit_int16(opts))
    steps: list[dict] = []
    for _ in range(MAX_INT16_TENSORS):
        if current >= opts.gate_cosine + INT16_MARGIN:
            break
        candidates = int16_candidates(qgraph) - set(chosen)
        worst = layer_errors(cal.graph, qgraph, probe[:2])[:3]
        producers = {n.output: n for n in qgraph.nodes}
        options: list[str] = []
        for row in worst:
            node = producers[row["tensor"]]
            options += [t for t in [*node.inputs, node.output] if t in candidates and t not in options]
        best: tuple[float, str, QGraph] | None = None
        for tensor in options:
            trial = quantize(cal.graph, cal.ranges, opts.mode, frozenset([*chosen, tensor]))
            if opts.fits is not None and not opts.fits(trial):
                continue  # would not fit the target's RAM
            score = _mean_cosine(reference, trial, probe)
            if best is None or score > best[0]:
                best = (score, tensor, trial)
        if best is None or best[0] <= current + 1e-5:
            break
        steps.append({"tensor": best[1], "probe_mean_cosine_before": current, "probe_mean_cosine_after": best[0]})
        ui.info(f"int16 for {best[1]}: probe mean cosine {current:.4f} -> {best[0]:.4f}")
        current, qgraph = best[0], best[2]
        chosen.append(best[1])
    return qgraph, steps


def int16_cost(qgraph: QGraph) -> dict:
    """Which tensors are int16 and the extra activation bytes they cost."""
    wide = {k: v for k, v in qgraph.tensors.items() if v.dtype == "int16"}
    return {"tensors": sorted(wide), "extra_bytes": int(sum(np.prod(v.shape[1:]) for v in wide.values()))}


def quantize_and_measure(graph: Graph, opts: QuantizeOptions) -> tuple[QGraph, dict]:
    """Calibrate, quantize, measure; with --int16 auto, widen layers while the gate fails."""
    qgraph, cal = calibrate_and_quantize(graph, opts)
    result = measure(graph, qgraph, cal.held, opts)
    steps: list[dict] = []
    if not result["passed"] and opts.int16 == "auto" and opts.mode == "fused":
        with ui.step("int16 fallback for the most sensitive layers"):
            qgraph, steps = escalate_int16(qgraph, cal, opts)
        if steps:
            result = measure(graph, qgraph, cal.held, opts)
    return qgraph, {**cal.info, **result, "int16": {**int16_cost(qgraph), "policy": opts.int16, "steps": steps}}


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


def quantized_meta(model: LoadedModel, pre: Preprocess, info: dict) -> dict:
    """What a .mfnq file records about where it came from (so eval/build need no flags)."""
    keep = ("mode", "algorithm", "n_calib", "calib_source", "mean_cosine", "min_cosine")
    return {
        "model": model.name,
        "sha256": model.sha256,
        "path": str(model.path),
        "preprocess": pre.as_dict(),
        "int16": info["int16"]["tensors"],
        **{k: info[k] for k in keep},
    }
