"""Tuned int8 TVM vs untuned TVM, TVM float, onnxruntime and LiteRT on this x86_64 host.

    python -m bench.tvm_speed [--trials 400] [--model mobilefacenet] [--rounds 7]
                              [--runs 5] [--skip-rk3399] [--json FILE]

Budget: tuning 400 trials takes ~15-25 min on 2 cores (it resumes from the tuning
cache, so a second run only measures); the measurement ~2 min. Run it alone: timings
of a loaded machine mean nothing.

1. `mfnc tune --target x86_64 --trials N` for the model (int8, synthetic calibration).
2. Engines, all single-threaded, all on the same architecture (the `mobilefacenet`
   family model by default, whose Keras definition LiteRT needs):
   - TVM int8 tuned: our integer Relax module with the tuning database applied;
   - TVM int8 untuned; TVM float32 (untuned) from the float IR;
   - onnxruntime fp32 on the ONNX model (CPU provider);
   - LiteRT fp32 and int8 (XNNPACK, its default CPU delegate) from TensorFlow's
     converter on the Keras model (int8: full-integer, per-channel, representative set).
3. Interleaved timing in one process: each round runs every engine `--runs` times on
   the same image, engines in a rotating order; the figure per engine is the median
   of all its runs. Ratios are against the tuned TVM int8 model.
4. rk3399: the wall time of `build --target rk3399 --backend tvm` with a cached
   database (from a small `tune --emulate` run): the issue's "under 90 s".

The TVM outputs are checked bit-exact with the golden simulator before timing.
"""

from __future__ import annotations

import os

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its thread pool

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compiler import ui
from compiler.quantization import QuantizeOptions

CALIB = QuantizeOptions(algo="minmax", synthetic=32, eval_limit=8)


def tvm_calls(qgraph, float_graph, database_dir: Path | None) -> dict[str, Callable]:
    """Zero-argument inference calls of our TVM modules (no tuned one without a database)."""
    from compiler.backends.c_host import golden_as_device
    from compiler.backends.tuning_db import MODULE_EQUALITY
    from compiler.backends.tvm_compile import build, scheduled_kernels, x86_target
    from compiler.backends.tvm_relax import build_relax_float, build_relax_int
    from compiler.backends.tvm_run import VmRunner
    from compiler.synthetic import synthetic_eval_set

    target = x86_target(1)
    images = synthetic_eval_set(2, seed=11)[0]
    builds = {"untuned": build(build_relax_int(qgraph), target)}
    if database_dir is not None:
        builds["tuned"] = build(
            build_relax_int(qgraph), target, database_dir=database_dir, module_equality=MODULE_EQUALITY
        )
        kernels = scheduled_kernels(builds["tuned"].fused)
        ui.info(f"tuned build: {kernels['scheduled']} of {kernels['total']} kernels scheduled")
    else:
        kernels = {"scheduled": 0, "total": scheduled_kernels(builds["untuned"].fused)["total"]}
    floating = build(build_relax_float(float_graph), target)
    runners = {name: VmRunner(c.executable) for name, c in builds.items()}
    golden = golden_as_device(qgraph, images)
    for name, runner in runners.items():
        if not np.array_equal(runner.run(images), golden):
            raise SystemExit(f"error: TVM int8 {name} is not bit-exact with the golden simulator")
    hwc = np.ascontiguousarray(images[0].transpose(1, 2, 0))
    float_runner = VmRunner(floating.executable)
    calls: dict = {f"tvm int8 {name}": (lambda r=runner: r.run_one(hwc)) for name, runner in runners.items()}
    calls["tvm float32 untuned"] = lambda: float_runner.run_one(hwc)
    calls["_kernels"] = kernels
    return calls


def _onnxruntime_engine(onnx_path: Path) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return lambda: session.run(None, {name: x})


def _litert_engines(family_name: str, size: tuple[int, int]) -> dict[str, Callable]:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from compiler.family import build_keras_model
    from compiler.family.mobilefacenet import import_keras

    keras = import_keras()
    h, w = size
    inner = build_keras_model(family_name)
    pixels = keras.Input((h, w, 3), batch_size=1)  # TFLite wants a fixed batch of 1 (DESIGN section 4)
    saved = tempfile.mkdtemp(prefix="bench-savedmodel-")
    keras.Model(pixels, inner(pixels)).export(saved, verbose=False)  # from_keras_model leaves READ_VARIABLE ops
    rng = np.random.default_rng(0)

    def convert(int8: bool) -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [rng.uniform(-1, 1, (1, h, w, 3)).astype(np.float32)] for _ in range(16)
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()

    engines = {}
    for label, int8 in (("litert fp32 (xnnpack)", False), ("litert int8 (xnnpack)", True)):
        interpreter = Interpreter(model_content=convert(int8), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        x = (
            rng.integers(-128, 127, detail["shape"], dtype=np.int8)
            if int8
            else rng.uniform(-1, 1, detail["shape"]).astype(np.float32)
        )
        interpreter.set_tensor(detail["index"], x)

        def run(interpreter=interpreter) -> None:
            interpreter.invoke()

        engines[label] = run
    return engines


def interleaved_medians(engines: dict[str, Callable], rounds: int, runs: int) -> dict[str, dict]:
    """Median ms per engine over rounds x runs, the engines rotating within each round."""
    names = list(engines)
    for name in names:  # warm-up: first-call allocations, caches, JIT
        for _ in range(2):
            engines[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    with ui.progress("timing engines, interleaved") as advance:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for _ in range(runs):
                    start = time.perf_counter()
                    engines[name]()
                    times[name].append((time.perf_counter() - start) * 1e3)
            advance(r + 1, rounds)
    return {
        name: {
            "median_ms": round(statistics.median(t), 3),
            "min_ms": round(min(t), 3),
            "p90_ms": round(sorted(t)[int(0.9 * (len(t) - 1))], 3),
            "runs": len(t),
        }
        for name, t in times.items()
    }


def _rk3399_build_seconds(model: str, work: Path) -> dict:
    """`build --target rk3399 --backend tvm` wall time with a cached (emulated) database."""
    from compiler.build import BuildOptions, build
    from compiler.tune_cmd import TuneOptions, tune_model

    tune_model(TuneOptions("rk3399", model, quant=CALIB, trials=8, emulate=True))
    start = time.monotonic()
    report = build(BuildOptions("rk3399", model, "auto", out=work / "rk3399", quant=CALIB))
    seconds = time.monotonic() - start
    return {
        "seconds": round(seconds, 1),
        "backend": report["backend"],
        "tuned": report["tvm"]["tuned"],
        "kernels": report["tvm"]["kernels"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tvm_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilefacenet", help="family model (default mobilefacenet)")
    parser.add_argument("--trials", type=int, default=400, help="tuning budget (default 400)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-rk3399", action="store_true", help="skip the rk3399 build-time check")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    from compiler.backends.tvm_compile import host_x86_features
    from compiler.build import BuildOptions, model_hash, quantized_model
    from compiler.family import family_onnx
    from compiler.lowering import ingest_and_lower
    from compiler.preprocess import parse_preprocess
    from compiler.tune_cmd import TuneOptions, tune_model

    start = time.monotonic()
    tuned = tune_model(TuneOptions("x86_64", args.model, quant=CALIB, trials=args.trials))
    ui.info(f"tuning: {tuned['database']['trials']} trials in the database ({tuned['seconds']:.0f} s this run)")
    pre = parse_preprocess("paper")
    qgraph, front = quantized_model(BuildOptions("x86_64", args.model, "tvm", quant=CALIB), pre)
    if model_hash(front) != tuned["model"]["sha256"]:
        raise SystemExit("error: the tuned and the measured model differ")
    _, lowered, _, _ = ingest_and_lower(args.model, pre, None)
    _, _, h, w = qgraph.tensors[qgraph.input].shape

    engines = tvm_calls(qgraph, lowered, Path(tuned["database"]["path"]))
    kernels = engines.pop("_kernels")
    engines["onnxruntime fp32"] = _onnxruntime_engine(family_onnx(args.model))
    engines.update(_litert_engines(args.model, (h, w)))
    medians = interleaved_medians(engines, args.rounds, args.runs)
    base = medians["tvm int8 tuned"]["median_ms"]
    for row in medians.values():
        row["vs_tuned_int8"] = round(row["median_ms"] / base, 2)

    result = {
        "model": args.model,
        "threads": 1,
        "llvm_features": host_x86_features(),
        "tuning": {**tuned["database"], "trials_this_run": tuned["trials_run"], "seconds_this_run": tuned["seconds"]},
        "tuned_kernels": kernels,
        "engines": medians,
        "speedup_tuned_vs_untuned": round(medians["tvm int8 untuned"]["median_ms"] / base, 2),
        "tuned_vs_onnxruntime": round(medians["onnxruntime fp32"]["median_ms"] / base, 2),
    }
    if not args.skip_rk3399:
        with tempfile.TemporaryDirectory(prefix="bench-tvm-") as work:
            result["rk3399_build"] = _rk3399_build_seconds(args.model, Path(work))
    result["seconds"] = round(time.monotonic() - start, 1)

    from rich.table import Table

    table = Table(title=f"{args.model}, 1 thread, median of {args.rounds}x{args.runs} interleaved runs")
    for column in ("engine", "median ms", "p90 ms", "x tuned int8"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for name, row in sorted(medians.items(), key=lambda kv: kv[1]["median_ms"]):
        table.add_row(name, f"{row['median_ms']:.2f}", f"{row['p90_ms']:.2f}", f"{row['vs_tuned_int8']:.2f}")
    ui.console.print(table)
    if "rk3399_build" in result:
        ui.console.print(f"build --target rk3399 with a cached database: {result['rk3399_build']['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
