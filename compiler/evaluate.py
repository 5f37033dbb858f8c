"""`eval`: face-verification accuracy of a model's float original on a folder of faces.

This is the yardstick a compiled or quantized model is held to, so it runs the
model's *original* ONNX under onnxruntime (the same reference the graph passes are
checked against), fed exactly as the device will be: raw RGB pixels through the
model's preprocessing. The metrics themselves live in `compiler.verification`.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.qgraph import SUFFIX as QUANTIZED_SUFFIX
from compiler import ui
from compiler.equivalence import OnnxReference
from compiler.errors import BadInput
from compiler.faces import list_images, load_images, resize_pixels
from compiler.frontend import LoadedModel, load_model
from compiler.preprocess import Preprocess, parse_preprocess
from compiler.verification import (
    Pairs,
    all_pairs,
    pair_scores,
    read_pairs,
    resolve_pairs,
    roc_curve,
    verification_metrics,
)

LABELS_FILE = "labels.csv"
HOW_TO_LABEL = f"add {LABELS_FILE} (columns file,identity) or put each identity's images in DIR/<identity>/"


@dataclass(frozen=True)
class EvalOptions:
    """The `eval` command line, as data."""

    model: str
    faces: Path | None = None
    synthetic: int | None = None
    pairs: Path | None = None
    preprocess: str = "paper"
    flip: bool = False
    limit: int | None = None
    plot: Path | None = None


@dataclass(frozen=True)
class FaceSet:
    """Pixels (uint8 RGB NCHW), identity per image, and each image's path relative to the folder."""

    pixels: np.ndarray
    labels: np.ndarray
    files: list[str]
    source: str


# --- faces ---------------------------------------------------------------------------


def _read_labels_csv(folder: Path) -> tuple[list[str], list[str]]:
    """(files, identities) from DIR/labels.csv, sorted by file; every named file must exist."""
    path = folder / LABELS_FILE
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"{path}: cannot read labels ({exc})") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "file" not in header or "identity" not in header:
        raise BadInput(f"{path}: the first row must be a header with columns 'file' and 'identity'")
    col_file, col_id = header.index("file"), header.index("identity")
    labelled: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(col_file, col_id) or not row[col_file].strip() or not row[col_id].strip():
            raise BadInput(f"{path}:{line}: expected a file and an identity")
        file = Path(row[col_file].strip()).as_posix().removeprefix("./")
        if not (folder / file).is_file():
            raise BadInput(f"{path}:{line}: {file}: no such image in {folder}")
        labelled[file] = row[col_id].strip()
    if not labelled:
        raise BadInput(f"{path}: no labelled images")
    unlabelled = len(list_images(folder)) - len(labelled)
    if unlabelled > 0:
        ui.warn(f"{unlabelled} image(s) in {folder} are not in {LABELS_FILE} and are ignored")
    files = sorted(labelled)
    return files, [labelled[f] for f in files]


def _folder_identities(folder: Path) -> tuple[list[str], list[str]]:
    """(files, identities) from DIR/<identity>/ sub-folders."""
    files = [p.relative_to(folder) for p in list_images(folder)]
    loose = [f for f in files if len(f.parts) < 2]
    if loose:
        raise BadInput(f"{folder}: cannot tell who {loose[0]} is (no {LABELS_FILE}); {HOW_TO_LABEL}")
    return [f.as_posix() for f in files], [f.parts[0] for f in files]


def face_index(folder: Path) -> tuple[list[str], list[str]]:
    """Every labelled image of a faces folder (relative paths, sorted) and its identity."""
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder of face images")
    if (folder / LABELS_FILE).is_file():
        return _read_labels_csv(folder)
    return _folder_identities(folder)


def load_faces(folder: Path, height: int, width: int, files: list[str], identities: list[str]) -> FaceSet:
    """Load the images, resizing (with one warning) those not already at the model's input size."""
    pixels, resized = load_images([folder / f for f in files], height, width)
    if resized:
        ui.warn(
            f"{resized} of {len(files)} image(s) were resized to {height}x{width}: "
            "unaligned faces lower every metric; align them to the ArcFace 112x112 template first"
        )
    return FaceSet(pixels, np.asarray(identities), files, str(folder))


def synthetic_faces(count: int, height: int, width: int) -> FaceSet:
    """Seeded synthetic identities (never seen in training), sized for the model."""
    from compiler.synthetic import synthetic_eval_set

    pixels, labels = synthetic_eval_set(count, seed=0)
    if pixels.shape[2:] != (height, width):
        ui.warn(f"synthetic faces are {pixels.shape[2]}x{pixels.shape[3]}; resized to the model's {height}x{width}")
        pixels = resize_pixels(pixels, height, width)
    return FaceSet(pixels, np.asarray(labels), [], f"synthetic:{count}")


# --- embeddings ----------------------------------------------------------------------


def _reference(model: LoadedModel, pre: Preprocess) -> OnnxReference:
    meta = model.graph.meta
    return OnnxReference(model.reference, meta["source_input"], meta["source_layout"], pre, cache=False)


def _embed_one(reference: OnnxReference, pixels: np.ndarray) -> np.ndarray:
    output = reference(pixels)[reference.output_names[0]]
    return np.asarray(output, dtype=np.float64).ravel()


@dataclass(frozen=True)
class Embedder:
    """A model as `eval` sees it: pixels [1,3,H,W] -> embedding, whatever runs it."""

    name: str
    sha256: str
    preprocess: str
    height: int
    width: int
    one: Callable[[np.ndarray], np.ndarray]


def float_embedder(model: LoadedModel, pre: Preprocess) -> Embedder:
    """The original float model under onnxruntime."""
    reference = _reference(model, pre)
    height, width = model.graph.image_hw()
    return Embedder(model.name, model.sha256, pre.spec, height, width, lambda px: _embed_one(reference, px))


def quantized_embedder(path: Path, preprocess: str) -> Embedder:
    """Our int8 model file through the golden simulator; preprocessing is inside the model."""
    from calibration import golden
    from calibration import qgraph as qformat
    from compiler.frontend.onnx_import import model_sha256

    qgraph = qformat.load(path)
    recorded = qgraph.meta.get("preprocess", {}).get("spec", "?")
    if preprocess != "paper" and preprocess != recorded:
        ui.warn(f"{path}: --preprocess {preprocess} ignored; the quantized model has {recorded} built in")
    _, _, height, width = qgraph.tensors[qgraph.input].shape
    name = f"{qgraph.meta.get('model', path.stem)} (int8 {qgraph.mode})"
    return Embedder(name, model_sha256(path), recorded, height, width, lambda px: golden.embed(qgraph, px).ravel())


def embed(model: Embedder, pixels: np.ndarray, flip: bool = False) -> np.ndarray:
    """L2-normalised embeddings [N,D], one image at a time (models have batch 1), with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    rows = []
    start = time.monotonic()
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=ui.console, transient=True, disable=not ui.console.is_terminal) as bar:
        task = bar.add_task("embedding", total=pixels.shape[0])
        for i in range(pixels.shape[0]):
            image = pixels[i : i + 1]
            vector = model.one(image)
            if flip:  # the mirror is as valid a view of the face; summing steadies the embedding
                vector = vector + model.one(np.ascontiguousarray(image[..., ::-1]))
            rows.append(vector)
            bar.advance(task)
    norms = np.linalg.norm(np.stack(rows), axis=1, keepdims=True)
    ui.info(f"[green]done[/green] embedded {pixels.shape[0]} faces ({time.monotonic() - start:.1f} s)")
    return np.stack(rows) / np.where(norms > 0, norms, 1.0)


# --- the command ---------------------------------------------------------------------


def _check_options(opts: EvalOptions) -> None:
    if (opts.faces is None) == (opts.synthetic is None):
        raise BadInput("give exactly one of --faces DIR or --synthetic N")
    if opts.synthetic is not None and opts.synthetic < 2:
        raise BadInput(f"--synthetic {opts.synthetic}: need at least 2 images")
    if opts.limit is not None and opts.limit < 2:
        raise BadInput(f"--limit {opts.limit}: need at least 2 images")
    if opts.pairs is not None and opts.faces is None:
        raise BadInput("--pairs needs --faces: pairs name image files, and synthetic faces have none")


def _pairs_for(opts: EvalOptions, files: list[str], identities: list[str], kept: int) -> Pairs | None:
    """Pairs from --pairs resolved against all labelled files, then cut to the first `kept` images."""
    if opts.pairs is None:
        return None
    lines, n_folds = read_pairs(opts.pairs)
    pairs = resolve_pairs(lines, n_folds, files, identities, opts.pairs)
    inside = (pairs.a < kept) & (pairs.b < kept)
    if inside.all():
        return pairs
    ui.warn(f"--limit {kept}: {int(np.sum(~inside))} of {len(pairs)} pairs name later images and are skipped")
    return Pairs(pairs.a[inside], pairs.b[inside], pairs.same[inside])


def evaluate(opts: EvalOptions) -> tuple[dict, np.ndarray, np.ndarray]:
    """Run `eval`: (JSON result, pair scores, pair ground truth)."""
    _check_options(opts)
    index = face_index(opts.faces) if opts.faces is not None else None
    with ui.step(f"ingesting {opts.model}"):
        if opts.model.endswith(QUANTIZED_SUFFIX):
            model = quantized_embedder(Path(opts.model), opts.preprocess)
        else:
            model = float_embedder(load_model(opts.model), parse_preprocess(opts.preprocess))
    height, width = model.height, model.width
    pairs = None
    if index is not None:
        files, identities = index
        kept = min(len(files), opts.limit or len(files))
        pairs = _pairs_for(opts, files, identities, kept)
        faces = load_faces(opts.faces, height, width, files[:kept], identities[:kept])  # type: ignore[arg-type]
    else:
        faces = synthetic_faces(opts.synthetic, height, width)  # type: ignore[arg-type]
        if opts.limit is not None:
            faces = FaceSet(faces.pixels[: opts.limit], faces.labels[: opts.limit], [], faces.source)
    embeddings = embed(model, faces.pixels, opts.flip)
    pairs = all_pairs(faces.labels) if pairs is None else pairs
    metrics = verification_metrics(embeddings, faces.labels, pairs)
    result = {
        **metrics,
        "model": model.name,
        "sha256": model.sha256,
        "preprocess": model.preprocess,
        "flip": opts.flip,
        "source": faces.source,
    }
    return result, pair_scores(embeddings, pairs), pairs.same


# --- output --------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a (too few pairs)" if value is None else f"{value:.{digits}f}"


def print_eval_table(result: dict) -> None:
    """The headline numbers, on stderr."""
    from rich.table import Table

    table = Table(title=f"eval {result['model']}")
    table.caption = f"{result['source']}, preprocess {result['preprocess']}, flip {result['flip']}"
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("ROC AUC", _fmt(result["auc"]))
    table.add_row("accuracy (10-fold)", _fmt(result["accuracy"]))
    for far, tar in result["tar_at_far"].items():
        table.add_row(f"TAR @ FAR {far}", _fmt(tar))
    table.add_row("threshold @ FAR 1e-3", _fmt(result["threshold_at_far_1e-3"]))
    table.add_row("rank-1 identification", _fmt(result["rank1"]))
    table.add_row("pairs (same identity)", f"{result['n_pairs']:,} ({result['n_positive_pairs']:,})")
    table.add_row("images (identities)", f"{result['n_images']:,} ({result['n_identities']:,})")
    ui.console.print(table)


def write_plot(path: Path, scores: np.ndarray, same: np.ndarray, title: str) -> None:
    """ROC (TAR vs FAR, log FAR) and the same/different score histograms, as one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    far, tar, _ = roc_curve(scores, same)
    n_neg = max(int(np.sum(~same)), 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    roc, hist = fig.subplots(1, 2)
    roc.plot(np.maximum(far, 1.0 / n_neg), tar)  # FAR 0 cannot sit on a log axis: draw it at 1/negatives
    roc.set(xscale="log", xlim=(1.0 / n_neg, 1.0), ylim=(0.0, 1.01), xlabel="FAR", ylabel="TAR", title="ROC")
    roc.grid(True, which="both", alpha=0.3)
    bins = np.linspace(float(scores.min()), float(scores.max()), 60)
    hist.hist(scores[~same], bins=bins, density=True, alpha=0.6, label=f"different ({n_neg:,})")
    hist.hist(scores[same], bins=bins, density=True, alpha=0.6, label=f"same ({int(np.sum(same)):,})")
    hist.set(xlabel="cosine similarity", ylabel="density", title="pair scores")
    hist.legend()
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    ui.write_atomic(path, buffer.getvalue())
