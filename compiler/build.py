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
from compiler.errors import BadInput
from compiler.faces import list_images, load_images, resize_pixels
from compiler.frontend import load_model
from compiler.passes import run_passes
from compiler.preprocess import parse_preprocess
from compiler.summary import summarize
from compiler.synthetic import synthetic_eval_set
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
    synthetic: int | None = None
    out: Path | None = None


def check_images(opts: BuildOptions, height: int, width: int) -> tuple[np.ndarray, dict]:
    """Seeded random pixels plus the first faces of --calib or --synthetic, if given."""
    images = random_pixels(RANDOM_CHECK_IMAGES, height, width, seed=0)
    info: dict = {"random": RANDOM_CHECK_IMAGES, "faces": 0}
    if opts.calib is not None:
        faces, resized = load_images(list_images(opts.calib)[:REAL_CHECK_IMAGES], height, width)
        info.update(faces_source=str(opts.calib), resized=resized)
    elif opts.synthetic:
        faces = resize_pixels(synthetic_eval_set(max(2, min(opts.synthetic, REAL_CHECK_IMAGES)))[0], height, width)
        info.update(faces_source=f"synthetic:{opts.synthetic}")
    else:
        return images, info
    info["faces"] = int(faces.shape[0])
    return np.concatenate([images, faces]), info


def build(opts: BuildOptions) -> dict:
    """Run the pipeline; returns the report (also written to OUT/report.json)."""
    target = load_target(opts.target)
    backend = select_backend(target, opts.backend)
    backend_reason = _backend_reason(opts.backend, backend)
    pre = parse_preprocess(opts.preprocess)
    out = opts.out or Path("build") / target.name

    if opts.synthetic is not None and opts.synthetic < 2:
        raise BadInput(f"--synthetic {opts.synthetic}: need at least 2 images")
    with ui.step(f"ingesting {opts.model}"):
        model = load_model(opts.model)
    graph = model.graph
    height, width = graph.image_hw()
    images, image_info = check_images(opts, height, width)
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


def _write_report(out: Path, report: dict) -> None:
    """Write OUT/report.json; a fresh OUT that fails half-way is removed again."""
    created = not out.exists()
    try:
        ui.write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
