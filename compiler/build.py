"""`build`: ingest a model, lower it through the checked passes, write the report.

Later stages (calibration, quantization, backends, HIL) extend the same pipeline and
the same report; what runs today is recorded in `stages` so a report never claims
more than was done.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import __version__, ui
from compiler.equivalence import OnnxReference, random_pixels
from compiler.faces import list_images, load_images
from compiler.frontend import load_model
from compiler.passes import run_passes
from compiler.preprocess import parse_preprocess
from compiler.summary import summarize
from compiler.targets import load_target, select_backend

RANDOM_CHECK_IMAGES = 2
REAL_CHECK_IMAGES = 2


@dataclass
class BuildOptions:
    target: str
    model: str
    backend: str = "auto"
    preprocess: str = "paper"
    calib: Path | None = None
    out: Path | None = None


def check_images(calib: Path | None, height: int, width: int) -> tuple[np.ndarray, dict]:
    """Seeded random pixels plus the first real faces of --calib, if given."""
    images = random_pixels(RANDOM_CHECK_IMAGES, height, width, seed=0)
    info = {"random": RANDOM_CHECK_IMAGES, "real": 0}
    if calib is not None:
        real, resized = load_images(list_images(calib)[:REAL_CHECK_IMAGES], height, width)
        images = np.concatenate([images, real])
        info.update(real=int(real.shape[0]), real_source=str(calib), resized=resized)
    return images, info


def build(opts: BuildOptions) -> dict:
    """Run the pipeline; returns the report (also written to OUT/report.json)."""
    target = load_target(opts.target)
    backend = select_backend(target, opts.backend)
    backend_reason = _backend_reason(opts.backend, backend)
    pre = parse_preprocess(opts.preprocess)
    out = opts.out or Path("build") / target.name

    with ui.step(f"ingesting {opts.model}"):
        model = load_model(opts.model)
    graph = model.graph
    _, _, height, width = graph.input_shape() if graph.meta["source_layout"] == "NCHW" else _nchw(graph.input_shape())
    images, image_info = check_images(opts.calib, height, width)
    reference = OnnxReference(model.reference, graph.meta["source_input"], graph.meta["source_layout"], pre)
    with ui.step("graph passes with float equivalence checks"):
        lowered, records = run_passes(graph, reference, images, pre)
    summary = summarize(lowered)

    report = {
        "mfnc_version": __version__,
        "target": target.name,
        "backend": backend,
        "backend_reason": backend_reason,
        "model": {
            "name": model.name,
            "path": str(model.path),
            "format": model.source_format,
            "sha256": model.sha256,
            "params": summary["params"],
            "macs": summary["macs"],
            "input_shape": summary["input_shape"],
            "source_layout": graph.meta["source_layout"],
        },
        "preprocess": {**pre.as_dict(), "folded_into": lowered.meta.get("preprocess_folded_into")},
        "passes": [r.as_dict() for r in records],
        "equivalence": {"metric": "max|a-b|/max|b| vs onnxruntime on the original model", "images": image_info},
        "stages": ["ingest", "passes", "float_equivalence"],
        "notes": model.notes,
    }
    _write_report(out, report)
    return report


def _backend_reason(requested: str, chosen: str) -> str:
    if requested != "auto":
        return "requested with --backend"
    if chosen == "rknn":
        return "auto: the target has a supported Rockchip NPU"
    return "auto: no TVM tuning database for this target and model, so the C runtime"


def _nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    n, h, w, c = shape
    return n, c, h, w


def _write_report(out: Path, report: dict) -> None:
    """Write OUT/report.json; a fresh OUT that fails half-way is removed again."""
    created = not out.exists()
    try:
        ui.write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
