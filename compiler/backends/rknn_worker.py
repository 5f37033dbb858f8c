"""One rknn-toolkit2 conversion, run by the toolkit's own Python (never imported by mfnc).

    <toolkit venv>/bin/python rknn_worker.py REQUEST.json

rknn-toolkit2 pins numpy<=1.26.4, onnx<=1.18 and torch, and can abort the process it
runs in, so each conversion is a separate process in the toolkit's virtualenv
(`rknn_env.py`). This file uses only the standard library, numpy and the toolkit.

REQUEST.json: onnx, input_name, input_shape [1,3,H,W], platform, mean/std (per model
input channel, pixel units: the toolkit normalises, once), algorithm, method,
quantize (false = fp16), auto_hybrid, dataset (a text file listing NCHW uint8 .npy
files), analyse (optional: one .npy for the toolkit's per-layer accuracy analysis,
written to `snapshot/` next to the result), eval_npz (`images`: uint8 NCHW in the model's channel order), rknn (output
path), outputs_npz (output path), result (output path).

The result JSON says `ok` and, on failure, the `stage` and the toolkit's message; the
simulator outputs (float32, one row per image) go to outputs_npz. The simulator only
runs in the process that built the model, hence build + check in one worker.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time


def _fail(result_path: str, stage: str, message: str, log: str) -> int:
    lines = [ln.strip() for ln in log.splitlines() if "E " in ln or "error" in ln.lower()]
    detail = message if not lines else f"{message}: {lines[-1][:300]}"
    with open(result_path, "w") as handle:
        json.dump({"ok": False, "stage": stage, "message": detail}, handle)
    return 3


def main(request_path: str) -> int:
    with open(request_path) as handle:
        req = json.load(handle)
    if os.environ.get("MFNC_RKNN_WORKER_FAULT") == "abort":  # lets tests check crash isolation
        os.abort()
    import numpy as np
    from rknn.api import RKNN

    log = io.StringIO()
    timings = {}
    rknn = RKNN(verbose=False)
    try:
        with contextlib.redirect_stdout(log):
            start = time.monotonic()
            if rknn.config(
                mean_values=[req["mean"]],
                std_values=[req["std"]],
                target_platform=req["platform"],
                quantized_algorithm=req["algorithm"],
                quantized_method=req["method"],
                optimization_level=3,
            ):
                return _fail(req["result"], "config", "rknn.config refused the settings", log.getvalue())
            if rknn.load_onnx(model=req["onnx"], inputs=[req["input_name"]], input_size_list=[req["input_shape"]]):
                return _fail(req["result"], "load_onnx", f"cannot load {req['onnx']}", log.getvalue())
            if rknn.build(
                do_quantization=req["quantize"],
                dataset=req["dataset"] if req["quantize"] else None,
                auto_hybrid=req["auto_hybrid"],
            ):
                return _fail(req["result"], "build", "rknn.build failed", log.getvalue())
            if rknn.export_rknn(req["rknn"]):
                return _fail(req["result"], "export", "rknn.export_rknn failed", log.getvalue())
            timings["build_s"] = round(time.monotonic() - start, 2)
            if req.get("analyse"):  # per-layer error vs the toolkit's float run, on one image
                start = time.monotonic()
                snapshot = os.path.join(os.path.dirname(req["result"]), "snapshot")
                if rknn.accuracy_analysis(inputs=[req["analyse"]], output_dir=snapshot) == 0:
                    timings["analysis_s"] = round(time.monotonic() - start, 2)
            start = time.monotonic()
            if rknn.init_runtime():
                return _fail(req["result"], "init_runtime", "the simulator did not start", log.getvalue())
            images = np.load(req["eval_npz"])["images"]
            rows = []
            for image in images:
                outputs = rknn.inference(inputs=[image[None]], data_format="nchw")
                if outputs is None:
                    return _fail(req["result"], "inference", "simulator inference failed", log.getvalue())
                rows.append(np.asarray(outputs[0], dtype=np.float32).reshape(-1))
            timings["simulate_s"] = round(time.monotonic() - start, 2)
        np.savez(req["outputs_npz"], outputs=np.stack(rows))
        with open(req["result"], "w") as handle:
            json.dump({"ok": True, "timings": timings, "rknn_bytes": os.path.getsize(req["rknn"])}, handle)
        return 0
    finally:
        rknn.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
