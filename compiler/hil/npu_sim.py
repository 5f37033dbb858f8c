"""`hil --emulate` on an NPU (rknn) build: the rknn-toolkit2 simulator as the board.

The simulator only runs in the process that built the model, so the model is rebuilt
from the inputs the build recorded (`rknn/inputs/` and the conversion settings in
report.json) in one toolkit worker, which then embeds the HIL inputs. The NPU has no
golden simulator of ours, so `bit_exact` is null; what is checked is the cosine vs the
float model, the verification metrics on the simulator's embeddings, and that the
rebuilt model reproduces the build's outputs on the build's held-out images exactly
(so the check ran the model that will be deployed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from compiler import ui
from compiler.quantization import row_cosines


def run_simulated(target, artifact, faces, opts, float_embeddings: Callable, verification: Callable) -> dict:
    from compiler.backends.rknn_backend import simulate
    from compiler.backends.rknn_env import TOOLKIT_VERSION

    started = time.monotonic()
    report = artifact.report
    n = len(faces.pixels)
    ui.info(f"{n} input(s) from {faces.source}")
    with ui.step(f"rebuilding the {target.name} model in the rknn-toolkit2 simulator and running {n} input(s)"):
        outputs, identical = simulate(artifact.folder, report, faces.pixels)
    if not identical:
        ui.warn("the rebuilt model's outputs differ from the build's: the toolkit did not rebuild it exactly")
    with ui.step("float reference"):
        floats = float_embeddings(report, {"sha256": report["model"]["sha256"]}, faces.pixels)
    cosines = row_cosines(outputs.astype(np.float64), floats) if floats is not None else None
    section = report["rknn"]
    return {
        "target": target.name,
        "backend": "rknn",
        "transport": "simulator",
        "url": None,
        "emulated": True,
        "n_inputs": n,
        "bit_exact": None,  # the NPU has no golden: its arithmetic is the toolkit's
        "mismatched_inputs": [],
        "cosine_vs_float": None
        if cosines is None
        else {"mean": float(np.mean(cosines)), "min": float(np.min(cosines))},
        "latency": {"unit": "none", "median": None, "p90": None, "n": 0},
        "link": {"bytes_per_s": None, "retries": 0, "device_resets": 0, "damaged_frames": 0},
        "device": {
            "firmware": f"rknn-toolkit2 {TOOLKIT_VERSION} simulator",
            "platform": section["platform"],
            "conversion": report["quantization"].get("step"),
            "rebuilt_identical_outputs": identical,
            "arena_bytes": 0,
        },
        "inputs": faces.source,
        "seconds": time.monotonic() - started,
        "verification": verification(outputs.astype(np.float64), faces, opts),
    }
