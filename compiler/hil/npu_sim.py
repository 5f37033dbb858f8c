"""`hil` on an NPU (rknn) build: on the board (its program over the serial protocol),
or with `--emulate` in the rknn-toolkit2 simulator.

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


def run_on_board(target, artifact, faces, opts, float_embeddings: Callable, verification: Callable) -> dict:
    """The board program over the protocol: float32 embeddings, compared with the float model."""
    from compiler.hil.link import DeviceLink
    from compiler.hil.session import check_identity, run_inputs

    started = time.monotonic()
    report = artifact.report
    n = len(faces.pixels)
    url = opts.port
    baud = opts.baud or (target.serial.baud if target.serial else 115200)
    with DeviceLink(url, baud=baud) as link:
        info = link.info()
        check_identity(info, {"model": artifact.model_hash, "target": target.name}, url)
        with ui.progress(f"running on {target.name}'s NPU") as advance:
            done = [0]

            def tick() -> None:
                done[0] += 1
                advance(done[0], n)

            runs = run_inputs(
                link,
                faces.pixels,
                warmup=opts.warmup,
                timed=opts.repeat,
                per_layer=False,
                run_timeout_s=opts.run_timeout_s,
                advance=tick,
                info=info,
            )
        link_stats = {
            "bytes_per_s": runs.upload_bytes / runs.upload_seconds if runs.upload_seconds else None,
            "retries": link.retries_used,
            "device_resets": link.resets_seen,
            "damaged_frames": link.reader.bad_frames,
        }
    with ui.step("float reference"):
        floats = float_embeddings(report, {"sha256": report["model"]["sha256"]}, faces.pixels)
    outputs = runs.outputs.astype(np.float64)
    cosines = row_cosines(outputs, floats) if floats is not None else None
    elapsed = np.asarray(runs.elapsed, dtype=np.float64)
    unit = info.get("counter", "none")
    return {
        "target": target.name,
        "backend": "rknn",
        "transport": url.split("://")[0] if "://" in url else "serial",
        "url": url,
        "emulated": False,
        "n_inputs": n,
        "bit_exact": None,
        "mismatched_inputs": [],
        "cosine_vs_float": None
        if cosines is None
        else {"mean": float(np.mean(cosines)), "min": float(np.min(cosines))},
        "latency": {
            "unit": unit if elapsed.size else "none",
            "median": float(np.median(elapsed)) if elapsed.size else None,
            "p90": float(np.percentile(elapsed, 90)) if elapsed.size else None,
            "n": int(elapsed.size),
        },
        "link": link_stats,
        "device": info,
        "inputs": faces.source,
        "seconds": time.monotonic() - started,
        "verification": verification(outputs, faces, opts),
    }
