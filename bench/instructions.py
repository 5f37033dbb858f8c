"""Sections 2 and 3: instruction counts of one inference on emulated ARM cores.

These are **instruction counts**, not cycles: QEMU executes the code, it does not
model a pipeline. They compare code (how many instructions each engine needs for the
same model), not silicon.

- Cortex-A72 (`qemu-aarch64 -cpu cortex-a72` with our TCG counting plugin,
  docs/icount.md): our C runtime with its NEON kernels and with the portable ones, our
  TVM module (the rk3399 build), and the peers' own aarch64 builds (LiteRT, ncnn,
  onnxruntime wheels run by an emulated aarch64 Python: `bench/arm_peers.py`), each
  after a warm-up inference. DESIGN section 6's cycle lower bound for one A72 at
  8 int8 MACs or 4 fp32 FMAs per cycle is given for context, not as a measurement.
- Cortex-M (`qemu-system-arm -icount shift=0`): our kernels for the M55 (Helium/MVE)
  and the M7 (DSP) against our portable C kernels, per inference and per MAC.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.artifacts import Artifacts
from compiler import ui
from compiler.summary import summarize

A72_INT8_MACS_PER_CYCLE = 8  # SMLAL, no dot product on the A72 (DESIGN section 6)
A72_FP32_FMAS_PER_CYCLE = 4


def ours_c(art: Artifacts, target: str, images: int) -> dict:
    """Optimised vs portable kernels of our C runtime on one emulated target (bit-exact checked)."""
    from bench.kernel_speed import available, measure_target

    why = available(target)
    if why:
        return {"skipped": why}
    pixels = art.datasets()[1].images[:images]
    with tempfile.TemporaryDirectory(prefix=f"bench-{target}-", dir=art.work) as tmp:
        row = measure_target(target, art.quantized()[0], pixels, Path(tmp))
    return {
        "unit": row["unit"],
        "optimised": row["optimised"],
        "portable": row["portable"],
        "speedup": round(row["speedup"], 3),
        "bit_exact": all(row["bit_exact"].values()),
        "by_kind": row["by_kind"],
    }


def ours_tvm_a72(art: Artifacts) -> dict:
    """Our TVM rk3399 build (untuned unless a database is cached) under the counting emulator."""
    from compiler.hil.check import HilOptions, run_hil

    report, _ = art.build("rk3399", "tvm")
    folder = Path(report["out"])
    result = run_hil(HilOptions("rk3399", emulate=True, build=folder, synthetic=2, warmup=1, repeat=1))
    return {
        "unit": result["latency"]["unit"],
        "instructions": result["latency"]["median"],
        "bit_exact": result["bit_exact"] == result["n_inputs"],
        "tuned": report["tvm"]["tuned"],
        "kernels": report["tvm"]["kernels"],
    }


def run(arts: list[Artifacts], quick: bool, with_peers: bool) -> dict:
    out: dict = {}
    images = 1 if quick else 2
    for art in arts:
        macs = summarize(art.lowered()[1])["macs"]
        a72: dict = {"c_neon": ours_c(art, "rk3399", images)}
        if not quick:
            try:
                a72["tvm"] = ours_tvm_a72(art)
            except Exception as exc:  # one engine's failure must not cost the rest of the section
                a72["tvm"] = {"error": str(exc).splitlines()[0]}
        if with_peers:
            from bench import arm_peers

            a72["peers"] = arm_peers.count_all(art)
        a72["cycle_lower_bound"] = {
            "int8": macs / A72_INT8_MACS_PER_CYCLE,
            "fp32": macs / A72_FP32_FMAS_PER_CYCLE,
        }
        cortex_m = {t: ours_c(art, t, images) for t in ("mps3-an547", "mps2-an500")}
        for row in cortex_m.values():
            if "optimised" in row:
                row["optimised_per_mac"] = round(row["optimised"] / macs, 3)
                row["portable_per_mac"] = round(row["portable"] / macs, 3)
        out[art.model.name] = {"macs": macs, "cortex_a72": a72, "cortex_m": cortex_m}
        ui.info(f"{art.model.name}: instruction counts done")
    return out
