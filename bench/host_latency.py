"""Section 1: latency on this host, ours and the peers, 1 and 2 threads, interleaved.

Every engine runs the same model on the same held-out face:
- ours: the C runtime (x86_64 build, optimised kernels, one thread: it has no thread
  pool), timed by the device program itself over the HIL pipe; TVM int8 tuned and
  untuned and TVM float32 untuned (our Relax modules; their schedules are built for
  one thread, so they appear in the 1-thread table only);
- onnxruntime fp32 on the source ONNX and int8 on its own `quantize_static` QDQ model;
- LiteRT (XNNPACK, its default CPU delegate) on our float and our int8 `.tflite` exports;
- ncnn fp32 on a pnnx conversion of the source ONNX, when ncnn is installed;
- TFLite Micro on our int8 `.tflite` (a host reference: its portable kernels are what
  a Cortex-M runs without CMSIS-NN; capped at one run per round, it is slow).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.artifacts import Artifacts
from bench.common import Engine, interleave, ratio_to_best, timed
from compiler import ui


def _capped(fn: Callable[[], object], cap: int) -> Engine:
    run = timed(fn)
    return lambda n: run(min(n, cap))


def c_runtime_engine(art: Artifacts) -> tuple[Engine, Callable[[], None]]:
    """Our x86_64 device program, timed by its own clock (µs), bit-exact-checked first."""
    from compiler.backends.c_host import golden_as_device
    from compiler.hil.link import DeviceLink
    from compiler.hil.pipe import PipePort
    from compiler.hil.session import run_inputs

    program = art.c_program()
    link = DeviceLink(str(program), port=PipePort.for_program(program))
    info = link.info()
    image = art.image()
    check = run_inputs(link, image, timed=1, info=info)
    if not np.array_equal(check.outputs, golden_as_device(art.quantized()[0], image)):
        link.close()
        raise SystemExit(f"error: {art.model.name}: the C runtime is not bit-exact with the golden simulator")

    def run(n: int) -> list[float]:
        return [us / 1e3 for us in run_inputs(link, image, timed=n, info=info).elapsed]

    return run, link.close


def ort_engine(path: Path, feed: np.ndarray, threads: int) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return timed(lambda: session.run(None, {name: feed}))


def litert_engine(path: Path, feed: np.ndarray, threads: int) -> Engine:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], feed.astype(detail["dtype"]).reshape(detail["shape"]))
    return timed(interpreter.invoke)


def tflm_engine(path: Path, feed: np.ndarray) -> Engine:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(path.read_bytes(), arena_size=4 * 1024 * 1024)
    interpreter.set_input(feed, 0)
    return _capped(interpreter.invoke, 1)


def _feeds(art: Artifacts) -> dict[str, np.ndarray]:
    from calibration import golden

    image = art.image()
    return {
        "source": art.normalized(image),
        "nchw": art.normalized(image, layout="NCHW"),
        "pixels_nhwc": np.ascontiguousarray(image.transpose(0, 2, 3, 1), dtype=np.float32),
        "int8_nhwc": np.ascontiguousarray(golden.pixels_to_input(image).transpose(0, 2, 3, 1)),
    }


def peer_engines(art: Artifacts, threads: int, skipped: dict[str, str]) -> dict[str, Engine]:
    feeds = _feeds(art)
    engines: dict[str, Engine] = {
        "onnxruntime fp32": ort_engine(art.source_onnx(), feeds["source"], threads),
        "onnxruntime int8 (QDQ)": ort_engine(art.ort_qdq(), feeds["source"], threads),
        "LiteRT fp32 (XNNPACK)": litert_engine(art.float_tflite(), feeds["pixels_nhwc"], threads),
        "LiteRT int8 (XNNPACK)": litert_engine(art.int8_tflite(), feeds["int8_nhwc"], threads),
    }
    try:
        from bench import ncnn_peer

        why = ncnn_peer.available()
        if why is None:
            param, weights = ncnn_peer.convert(art.source_onnx(), art.work / f"{art.model.name}-ncnn")
            call = ncnn_peer.make_engine(param, weights, threads, feeds["nchw"])
            engines["ncnn fp32"] = timed(call)
        else:
            skipped["ncnn fp32"] = why
    except (ImportError, RuntimeError) as exc:
        skipped["ncnn fp32"] = str(exc).splitlines()[0]
    if threads == 1:
        engines["TFLite Micro int8 (reference kernels)"] = tflm_engine(art.int8_tflite(), feeds["int8_nhwc"])
    return engines


def tvm_engines(art: Artifacts, trials: int) -> tuple[dict[str, Engine], dict]:
    """Our TVM modules for the saved int8 model; tuning (cached per model) runs first when trials > 0."""
    from bench.tvm_speed import tvm_calls
    from compiler.tune_cmd import TuneOptions, tune_model

    os.environ.setdefault("TVM_NUM_THREADS", "1")
    info: dict = {"trials": 0}
    database = None
    if trials > 0:
        tuned = tune_model(TuneOptions("x86_64", str(art.mfnq()), art.model.preprocess, trials=trials))
        database = Path(tuned["database"]["path"])
        info = {"trials": tuned["database"]["trials"], "tuning_seconds_this_run": round(tuned["seconds"], 1)}
    calls = tvm_calls(art.quantized()[0], art.lowered()[1], database)
    info["kernels"] = calls.pop("_kernels")
    return {f"ours: {name.replace('tvm', 'TVM')}": timed(call) for name, call in calls.items()}, info


def run(arts: list[Artifacts], rounds: int, runs: int, tvm_trials: int | None) -> dict:
    """Per model: a 1-thread and a 2-thread table, each from one interleaved session."""
    out: dict = {}
    cpus = os.sched_getaffinity(0)
    for art in arts:
        model: dict = {}
        c_engine, close = c_runtime_engine(art)
        try:
            tvm, tvm_info = ({}, None) if tvm_trials is None else tvm_engines(art, tvm_trials)
            for threads in (1, 2):
                os.sched_setaffinity(0, cpus)  # whatever a library pinned, each table starts with every core
                skipped: dict[str, str] = {}
                engines = {"ours: C runtime int8 (1 thread)": c_engine}
                if threads == 1:
                    engines.update(tvm)
                engines.update(peer_engines(art, threads, skipped))
                rows = interleave(engines, rounds, runs, title=f"{art.model.name}: {threads} thread(s), interleaved")
                best = ratio_to_best(rows)
                model[f"threads_{threads}"] = {
                    "unit": "ms",
                    "rows": rows,
                    "best_peer": best,
                    "skipped": skipped,
                    "cpus_after": len(os.sched_getaffinity(0)),  # 1 here would mean a library pinned us mid-table
                }
                summary = ", ".join(f"{n} {r['median']:.2f}" for n, r in rows.items())
                ui.info(f"{art.model.name} {threads} thread(s), ms: {summary}")
            if tvm_info is not None:
                model["tvm"] = tvm_info
        finally:
            close()
        model["rounds"], model["runs_per_round"] = rounds, runs
        out[art.model.name] = model
    return out
