"""Section 6: what a `build` costs per target, after setup (wall seconds, in-process).

Each build is the whole pipeline a user runs: ingest, lower, calibrate, quantize with
accuracy measurement on the held-out faces, then the backend (C emitter and cross
compile; TVM compilation with the cached tuning database when one exists; rknn-toolkit2
conversion and simulation). Toolchain and virtualenv setup are not counted: the first
NPU build of a machine adds ~1 min for rknn-toolkit2's virtualenv.
"""

from __future__ import annotations

from bench.artifacts import Artifacts
from compiler import ui

FULL = (
    ("x86_64", "c"),
    ("x86_64", "tvm"),
    ("rk3399", "c"),
    ("rk3399", "tvm"),
    ("mps3-an547", "c"),
    ("mps2-an500", "c"),
    ("stm32h743", "c"),
    ("rk3588", "rknn"),
)
QUICK = (("x86_64", "c"), ("mps3-an547", "c"))


def run(arts: list[Artifacts], quick: bool, with_rknn: bool) -> dict:
    out: dict = {}
    for art in arts:
        rows = []
        for target, backend in QUICK if quick else FULL:
            if backend == "rknn" and not with_rknn:
                continue
            try:
                report, seconds = art.build(target, "auto" if backend == "rknn" else backend)
            except Exception as exc:  # a failing target is a result too, not the end of the run
                rows.append({"target": target, "backend": backend, "error": str(exc).splitlines()[0]})
                continue
            row = {"target": target, "backend": report["backend"], "seconds": round(seconds, 1)}
            if report.get("tvm"):
                row["tuned"] = report["tvm"].get("tuned")
            rows.append(row)
            ui.info(f"{art.model.name}: build --target {target} ({report['backend']}) {seconds:.1f} s")
        out[art.model.name] = rows
    return out
