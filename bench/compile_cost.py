"""Section 6: what compiling costs, after setup (wall seconds, in-process).

As a user targeting several boards would: quantize once (calibrate, quantize, measure
int8 against float on the held-out faces: the `quantize` row), then `build` every CPU
and MCU target from that `.mfnq` (C emitter and cross compile; TVM compilation with
the cached tuning database when one exists). NPU targets build from the float model:
rknn-toolkit2 quantizes, converts and simulates it itself, and we measure its accuracy.
Toolchain and virtualenv setup are not counted: the first NPU build of a machine adds
~1 min for rknn-toolkit2's virtualenv.
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
        art.mfnq()
        opts = art.quant_options()
        rows = [
            {
                "target": "(any)",
                "backend": "quantize",
                "seconds": round(art.seconds[("quantize", "mse", "fused")], 1),
                "note": f"calibrate on {opts.calib_limit or opts.synthetic} faces ({opts.algo}), "
                f"measure on {len(art.datasets()[1].images)} held-out",
            }
        ]
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
