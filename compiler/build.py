"""`build`: ingest, lower through the checked passes, calibrate and quantize, measure,
and write the artifact and its report.

Later stages (backends, HIL) extend the same pipeline and report; what ran is listed
in `stages`, so a report never claims more than was done.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from calibration import qgraph as qformat
from compiler import __version__, ui
from compiler.errors import AccuracyGateFailed, BadInput
from compiler.lowering import ingest_and_lower
from compiler.preprocess import parse_preprocess
from compiler.quantization import QuantizeOptions, quantize_and_measure, quantized_meta
from compiler.summary import summarize
from compiler.targets import load_target, select_backend


@dataclass
class BuildOptions:
    target: str
    model: str
    backend: str = "auto"
    preprocess: str = "paper"
    out: Path | None = None
    quant: QuantizeOptions = field(default_factory=QuantizeOptions)


def build(opts: BuildOptions) -> dict:
    """Run the pipeline; returns the report (also written to OUT/report.json).

    A model that misses the int8 gate still gets its report; `gate_error` says so.
    """
    target = load_target(opts.target)
    backend = select_backend(target, opts.backend)
    pre = parse_preprocess(opts.preprocess)
    out = opts.out or Path("build") / target.name
    if opts.quant.synthetic is not None and opts.quant.synthetic < 2:
        raise BadInput(f"--synthetic {opts.quant.synthetic}: need at least 2 images")

    model, lowered, records, image_info = ingest_and_lower(opts.model, pre, opts.quant.calib)
    graph = model.graph
    summary = summarize(lowered)

    qgraph, quant_info = quantize_and_measure(lowered, opts.quant)
    qgraph.meta = quantized_meta(model, pre, quant_info)

    report = {
        "mfnc_version": __version__,
        "target": target.name,
        "backend": backend,
        "backend_reason": _backend_reason(opts.backend, backend),
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
        "quantization": quant_info,
        "artifacts": {"quantized_model": "model.mfnq"},
        "stages": ["ingest", "passes", "float_equivalence", "calibration", "quantization", "int8_accuracy"],
        "notes": model.notes,
    }
    report["out"] = str(out)
    _write_outputs(out, report, qgraph)
    return report


def gate_error(report: dict) -> AccuracyGateFailed | None:
    """The exit-3 error for a report whose int8 model missed the gate, else None."""
    q = report["quantization"]
    if q["passed"]:
        return None
    return AccuracyGateFailed(
        f"int8 accuracy gate failed: {'; '.join(q['gate']['failures'])} "
        f"(worst layers: {', '.join(q['worst_layers'][:3])}; report in {Path(report['out']) / 'report.json'})"
    )


def _backend_reason(requested: str, chosen: str) -> str:
    if requested != "auto":
        return "requested with --backend"
    if chosen == "rknn":
        return "auto: the target has a supported Rockchip NPU"
    return "auto: no TVM tuning database for this target and model, so the C runtime"


def _write_outputs(out: Path, report: dict, qgraph: qformat.QGraph) -> None:
    """Write OUT/report.json, report.html and model.mfnq; a fresh OUT that fails half-way is removed."""
    from compiler.report_html import render_html

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        qformat.save(qgraph, out / "model.mfnq")
        ui.write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
        ui.write_atomic(out / "report.html", render_html(report))
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
