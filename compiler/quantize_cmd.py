"""`quantize`: calibrate and quantize a model to our int8 file (and optionally .tflite)."""

from __future__ import annotations

from pathlib import Path

from calibration import qgraph as qformat
from calibration.qdq_export import export_qdq
from calibration.tflite_export import export_tflite
from compiler import ui
from compiler.errors import BadInput
from compiler.lowering import ingest_and_lower
from compiler.preprocess import parse_preprocess
from compiler.quantization import QuantizeOptions, quantize_and_measure, quantized_meta


def quantize_model(
    spec: str, preprocess: str, opts: QuantizeOptions, out: Path | None, tflite: Path | None, qdq: Path | None = None
) -> dict:
    pre = parse_preprocess(preprocess)
    if tflite is not None and opts.mode != "tflite":
        raise BadInput("--tflite needs --mode tflite (the fused mode's PReLU epilogue has no TFLite op)")
    model, lowered, _, _ = ingest_and_lower(spec, pre, opts.calib)
    qgraph, info = quantize_and_measure(lowered, opts)
    qgraph.meta = quantized_meta(model, pre, info)
    result = {"model": model.name, "sha256": model.sha256, "preprocess": pre.spec, **info}
    out = out or Path(f"{Path(model.name).stem}-{opts.mode}{qformat.SUFFIX}")
    qformat.save(qgraph, out)
    result["output"] = str(out)
    if tflite is not None:
        ui.write_atomic(tflite, export_tflite(qgraph))
        result["tflite"] = str(tflite)
    if qdq is not None:
        ui.write_atomic(qdq, export_qdq(qgraph).SerializeToString())
        result["qdq"] = str(qdq)
    ui.info(
        f"int8 ({opts.mode}, {opts.algo}): mean cosine {result['mean_cosine']:.4f}, min {result['min_cosine']:.4f} "
        f"on {result['n_eval']} held-out images; wrote {out}" + (f" and {tflite}" if tflite else "")
    )
    if "float" in result:
        ui.info(f"AUC float {result['float']['auc']:.4f} -> int8 {result['int8']['auc']:.4f}")
    return result
