"""`build`: ingest, lower through the checked passes, calibrate and quantize, measure,
and write the artifact and its report.

Later stages (backends, HIL) extend the same pipeline and report; what ran is listed
in `stages`, so a report never claims more than was done.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from calibration import qgraph as qformat
from compiler import __version__, ui
from compiler.backends.c_backend import DEVICE_CHECK_IMAGES, arena_limit, compile_c, host_check
from compiler.backends.c_emitter import plan_arena
from compiler.errors import AccuracyGateFailed, BadInput
from compiler.faces import resize_pixels
from compiler.frontend.onnx_import import model_sha256
from compiler.lowering import ingest_and_lower
from compiler.preprocess import Preprocess, parse_preprocess
from compiler.quantization import QuantizeOptions, quantize_and_measure, quantized_meta
from compiler.summary import summarize
from compiler.synthetic import synthetic_eval_set
from compiler.targets import load_target, select_backend


@dataclass
class BuildOptions:
    target: str
    model: str
    backend: str = "auto"
    preprocess: str = "paper"
    out: Path | None = None
    quant: QuantizeOptions = field(default_factory=QuantizeOptions)
    tuning_db: Path | None = None  # a database folder or exported file; else the cache
    rknn_sdk: Path | None = None  # Rockchip's runtime (rknn_api.h, librknnrt.so); else $MFNC_RKNN_SDK


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
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").exists())):
        raise BadInput(f"--out {out}: exists and is not an mfnc build folder; refusing to replace it")
    if backend == "rknn":
        return _build_rknn(opts, target, pre, out)
    if backend == "tvm" and target.cpu.arch not in ("x86_64", "aarch64"):
        raise BadInput(
            f"--backend {backend} for {target.name}: that backend is not available in this version yet; "
            "use --backend c (the C runtime)"
        )

    if target.os == "baremetal" and opts.quant.fits is None:
        limit = arena_limit(target)
        opts.quant = replace(opts.quant, fits=lambda q: plan_arena(q).arena_bytes <= limit)
    if opts.tuning_db is not None and (opts.backend not in ("auto", "tvm") or not tvm_capable(target)):
        raise BadInput(f"--tuning-db is for TVM builds; {target.name} with --backend {opts.backend} does not use TVM")
    qgraph, front = quantized_model(opts, pre)
    hash_ = model_hash(front)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=_parent(out)))
    try:
        database = _tuning_database(opts, target, hash_, backend, staging)
        if opts.backend == "auto" and backend == "c" and database is not None:
            backend = "tvm"
        _, _, height, width = qgraph.tensors[qgraph.input].shape
        probe = resize_pixels(synthetic_eval_set(DEVICE_CHECK_IMAGES, seed=7)[0], height, width)
        if backend == "tvm":
            codegen = compile_tvm(qgraph, target, staging, hash_, probe, database)
        else:
            codegen = compile_c(qgraph, target, staging, hash_, probe)
        shutil.rmtree(staging / "tuning-db", ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    report = {
        "mfnc_version": __version__,
        "target": target.name,
        "backend": backend,
        "backend_reason": _backend_reason(opts.backend, backend, target, database),
        **front,
        "memory": codegen["memory"],
        backend: {k: v for k, v in codegen.items() if k != "memory"},
        "artifacts": {"quantized_model": "model.mfnq", f"{backend}_program": f"{backend}/"},
    }
    report["stages"] = (
        front["stages"]
        + [f"{backend}_codegen"]
        + (["firmware"] if codegen.get("firmware") else [])
        + (["host_check"] if "host_check" in codegen else [])
    )
    report["out"] = str(out)
    _write_outputs(out, staging, report, qgraph)
    return report


def _build_rknn(opts: BuildOptions, target, pre: Preprocess, out: Path) -> dict:
    """The NPU path: the float model goes to rknn-toolkit2 (our int8 graph is not used)."""
    from compiler.backends.rknn_backend import compile_rknn

    if opts.model.endswith(qformat.SUFFIX):
        raise BadInput(f"{opts.model}: the NPU backend needs the float model (rknn-toolkit2 quantizes it itself)")
    model, lowered, records, image_info = ingest_and_lower(opts.model, pre, opts.quant.calib)
    summary = summarize(lowered)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=_parent(out)))
    try:
        result = compile_rknn(model, lowered, pre, target, staging, opts.quant)
        section = result["rknn"]
        section.update(_rknn_board_program(opts, target, staging, model.sha256, lowered, pre))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    memory = section.pop("memory")
    report = {
        "mfnc_version": __version__,
        "target": target.name,
        "backend": "rknn",
        "backend_reason": _backend_reason(opts.backend, "rknn", target, None),
        "model": _model_facts(model, summary),
        "preprocess": {**pre.as_dict(), "folded_into": "the RKNN model (mean/std)"},
        "passes": [r.as_dict() for r in records],
        "equivalence": {"metric": "max|a-b|/max|b| vs onnxruntime on the original model", "images": image_info},
        "quantization": result["quantization"],
        "memory": memory,
        "rknn": section,
        "artifacts": {"rknn_model": "rknn/model.rknn", "toolkit_inputs": "rknn/inputs/"},
        "stages": ["ingest", "passes", "float_equivalence", "rknn_build", "rknn_simulator_check"],
        "notes": model.notes,
    }
    report["out"] = str(out)
    _write_outputs(out, staging, report, None)
    return report


def _rknn_board_program(opts: BuildOptions, target, staging: Path, model_hash: str, lowered, pre) -> dict:
    """The board program when a Rockchip SDK is given, else the reason there is none."""
    import numpy as np

    from compiler.backends import rknn_board

    arch = "aarch64" if target.cpu.arch == "aarch64" else "armhf"
    sdk = rknn_board.find_sdk(opts.rknn_sdk, arch)
    if sdk is None:
        reason = "no Rockchip SDK given (--rknn-sdk DIR or $MFNC_RKNN_SDK with rknn_api.h and librknnrt.so)"
        ui.warn(f"NPU board program not built: {reason}; the .rknn is checked in the simulator only")
        return {"board_program": {"built": False, "reason": reason}}
    outputs = int(np.load(staging / "rknn" / "inputs" / "eval_outputs.npy").shape[1])
    h, w = lowered.image_hw()
    with ui.step(f"building the NPU board program for {target.name} ({target.toolchain.cc})"):
        program = rknn_board.build_program(
            target, staging / "rknn", model_hash, (h, w), outputs, pre.order == "bgr", sdk
        )
    return {
        "board_program": {"built": True, "sdk_include": str(sdk.include), "sdk_lib": str(sdk.lib)},
        "firmware": {"program": str(program), "port": "posix", "output_dtype": "float32"},
    }


def quantized_model(opts: BuildOptions, pre: Preprocess) -> tuple[qformat.QGraph, dict]:
    """The int8 graph and the report's front part: a .mfnq loaded, or a float model quantized."""
    if opts.model.endswith(qformat.SUFFIX):
        return _load_quantized(Path(opts.model), opts)
    return _quantize_float_model(opts, pre)


def model_hash(front: dict) -> str:
    """What builds and tuning databases are keyed on: the source model's sha256 (a .mfnq
    without one falls back to its own)."""
    return front["model"]["sha256"] or front["model"].get("quantized_sha256", "")


def tvm_capable(target) -> bool:
    return "tvm" in target.backends and target.os == "linux" and target.cpu.arch in ("x86_64", "aarch64")


def _tuning_database(opts: BuildOptions, target, hash_: str, backend: str, staging: Path):
    """The tuning database a TVM build would use: --tuning-db, else the cache's."""
    from compiler.backends import tuning_db

    if opts.tuning_db is not None:
        path = Path(opts.tuning_db)
        if path.is_dir():
            db = tuning_db.open_database(path)
            if db is None:
                raise BadInput(f"--tuning-db {path}: no tuning records in that folder")
            if db.meta.get("model_hash") not in (None, hash_):
                raise BadInput(f"--tuning-db {path}: tuned for another model ({str(db.meta['model_hash'])[:16]})")
            return db
        return tuning_db.materialize(path, target.name, hash_, staging)
    if backend in ("tvm", "c") and tvm_capable(target) and opts.backend in ("auto", "tvm"):
        return tuning_db.find_database(target.name, hash_)
    return None


def compile_tvm(qgraph: qformat.QGraph, target, out: Path, model_hash: str, images, database=None) -> dict:
    """The TVM device program (tuned when a database is given) and, on x86_64, its check
    against the golden."""
    from compiler.backends.tvm_runner import build_runner

    if database is None:
        ui.warn(
            f"TVM without a tuning database: expect it 7-10x slower than tuned code and slower than "
            f"the C runtime (--backend c); tune first with `mfnc tune --target {target.name}`"
        )
    else:
        ui.info(f"applying the tuning database {database.path} ({database.trials} trials)")
        if database.meta.get("measured_on") == "emulator":
            ui.warn(
                "that database was tuned on an emulator: its schedules are valid but were ranked by emulated timings"
            )
    with ui.step(f"compiling with TVM for {target.name} and building its runner"):
        built = build_runner(qgraph, target, out / "tvm", model_hash, database_dir=database.path if database else None)
    program = built.program
    library = program.parent / "model.so"
    result: dict = {
        "memory": {"library_bytes": library.stat().st_size},
        "firmware": {"program": str(program), "port": "posix"},
        "libraries": built.libraries,
        "tuned": database is not None,
        "kernels": built.kernels,
    }
    if database is not None:
        result["tuning"] = database.summary()
    if target.cpu.arch == "x86_64":
        with ui.step("running the TVM program on this host over the HIL protocol"):
            result["host_check"] = host_check(qgraph, program, images[:DEVICE_CHECK_IMAGES])
    return result


def _quantize_float_model(opts: BuildOptions, pre: Preprocess) -> tuple[qformat.QGraph, dict]:
    """Ingest, lower, calibrate, quantize and measure a float model: the report's first part."""
    model, lowered, records, image_info = ingest_and_lower(opts.model, pre, opts.quant.calib)
    summary = summarize(lowered)
    qgraph, quant_info = quantize_and_measure(lowered, opts.quant)
    qgraph.meta = quantized_meta(model, pre, quant_info)
    return qgraph, {
        "model": _model_facts(model, summary),
        "preprocess": {**pre.as_dict(), "folded_into": lowered.meta.get("preprocess_folded_into")},
        "passes": [r.as_dict() for r in records],
        "equivalence": {"metric": "max|a-b|/max|b| vs onnxruntime on the original model", "images": image_info},
        "quantization": quant_info,
        "stages": ["ingest", "passes", "float_equivalence", "calibration", "quantization", "int8_accuracy"],
        "notes": model.notes,
    }


def _model_facts(model, summary: dict) -> dict:
    """The report's `model` section for a float model (any backend)."""
    return {
        "name": model.name,
        "path": str(model.path),
        "format": model.source_format,
        "sha256": model.sha256,
        "params": summary["params"],
        "macs": summary["macs"],
        "input_shape": summary["input_shape"],
        "source_layout": model.graph.meta["source_layout"],
    }


def _load_quantized(path: Path, opts: BuildOptions) -> tuple[qformat.QGraph, dict]:
    """A .mfnq file from `quantize`: no float model here, so its recorded accuracy is reported."""
    qgraph = qformat.load(path)
    meta = qgraph.meta
    if opts.preprocess != "paper" and opts.preprocess != meta.get("preprocess", {}).get("spec"):
        ui.warn(f"{path}: --preprocess {opts.preprocess} ignored; the quantized model has its own built in")
    summary = qformat.summarize(qgraph)
    recorded = {
        k: meta[k] for k in ("mode", "algorithm", "n_calib", "calib_source", "mean_cosine", "min_cosine") if k in meta
    }
    failures = []
    if "mean_cosine" in meta and meta["mean_cosine"] < opts.quant.gate_cosine:
        failures.append(f"recorded mean cosine int8 vs float {meta['mean_cosine']:.4f} < {opts.quant.gate_cosine}")
    quantization = {
        **recorded,
        "recorded": True,
        "gate": {"mean_cosine_min": opts.quant.gate_cosine, "failures": failures},
        "passed": not failures,
        "int16": {"tensors": summary["int16_tensors"]},
        "worst_layers": [],
    }
    _, _, h, w = qgraph.tensors[qgraph.input].shape
    front = {
        "model": {
            "name": meta.get("model", path.stem),
            "path": str(path),
            "format": "mfnq",
            "sha256": meta.get("sha256", ""),
            "quantized_sha256": model_sha256(path),
            "params": summary["params"],
            "macs": summary["macs"],
            "input_shape": [1, 3, h, w],
        },
        "preprocess": {**meta.get("preprocess", {}), "folded_into": "the quantized model"},
        "passes": [],
        "quantization": quantization,
        "stages": ["load_quantized"],
        "notes": [],
    }
    return qgraph, front


def gate_error(report: dict) -> AccuracyGateFailed | None:
    """The exit-3 error for a report whose int8 model missed the gate, else None."""
    q = report["quantization"]
    if q["passed"]:
        return None
    return AccuracyGateFailed(
        f"int8 accuracy gate failed: {'; '.join(q['gate']['failures'])} "
        f"(worst layers: {', '.join(q['worst_layers'][:3])}; report in {Path(report['out']) / 'report.json'})"
    )


def _backend_reason(requested: str, chosen: str, target, database) -> str:
    if requested != "auto":
        return "requested with --backend"
    if chosen == "rknn":
        return "auto: the target has a supported Rockchip NPU"
    if chosen == "tvm":
        return f"auto: a TVM tuning database exists for {target.name} and this model ({database.trials} trials)"
    if tvm_capable(target):
        return f"auto: no TVM tuning database for {target.name} and this model (`mfnc tune`), so the C runtime"
    return "auto: the C runtime (TVM has no path for this target)"


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _write_outputs(out: Path, staging: Path, report: dict, qgraph: qformat.QGraph | None) -> None:
    """Finish the artifact in the staging folder, then swap it in for OUT in one step."""
    from compiler.report_html import render_html

    try:
        section = report.get("c") or report.get("tvm") or report.get("rknn") or {}
        for holder, key in (
            (section, "source_dir"),
            (section, "model"),
            (section, "inputs"),
            (section.get("firmware") or {}, "program"),
            (section.get("firmware") or {}, "map"),
        ):
            if key in holder:
                holder[key] = str(out / Path(holder[key]).relative_to(staging))
        if qgraph is not None:
            qformat.save(qgraph, staging / "model.mfnq")
        ui.write_atomic(staging / "report.json", json.dumps(report, indent=2) + "\n")
        ui.write_atomic(staging / "report.html", render_html(report))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
