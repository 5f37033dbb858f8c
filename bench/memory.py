"""Section 4: memory. Our arena and flash against TFLite Micro and Vela, same int8 model.

- ours: the arena and flash of the C runtime's plan for the Cortex-M55 board
  (`build --target mps3-an547` report: `c.arena_plan`, `memory`), fused expand +
  depthwise included;
- TFLite Micro: the smallest arena with which its interpreter allocates our int8
  `.tflite` export (the exact model we run), found by bisection, each probe in its own
  subprocess: an undersized arena can crash it (DESIGN section 4);
- Vela (Ethos-U55-128, its default system configuration): the SRAM and flash it plans
  for the same `.tflite`, and its cycle estimate (an estimate, not a measurement).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.artifacts import Artifacts
from compiler import ui

PROBE = (
    "import sys\n"
    "from tflite_micro.python.tflite_micro import runtime\n"
    "runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=int(sys.argv[2]))\n"
    "print('ok')\n"
)
PROBE_TIMEOUT_S = 120
GRANULARITY = 1024


def _fits(model: Path, arena: int) -> bool:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, str(model), str(arena)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and proc.stdout.strip().endswith("ok")


def tflm_min_arena(model: Path, low: int = 16 * 1024, high: int = 8 * 1024 * 1024) -> dict:
    """The smallest arena (to GRANULARITY bytes) that TFLite Micro accepts for this model."""
    start = time.monotonic()
    if not _fits(model, high):
        return {"error": f"TFLite Micro cannot allocate {model.name} even with {high} bytes"}
    probes = 1
    steps = max(1, (high - low).bit_length() - GRANULARITY.bit_length() + 1)
    with ui.progress(f"TFLite Micro arena bisection on {model.name}") as advance:
        while high - low > GRANULARITY:
            mid = (low + high) // 2
            if _fits(model, mid):
                high = mid
            else:
                low = mid
            probes += 1
            advance(min(probes, steps), steps)
    return {"arena_bytes": high, "probes": probes, "seconds": round(time.monotonic() - start, 1)}


def vela_estimate(model: Path, accelerator: str = "ethos-u55-128") -> dict:
    """Vela's plan for the model: SRAM, flash, NPU/CPU operator split and cycle estimate."""
    with tempfile.TemporaryDirectory(prefix="bench-vela-") as out:
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("vela")),
                str(model),
                "--accelerator-config",
                accelerator,
                "--output-dir",
                out,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        summaries = list(Path(out).glob("*_summary_*.csv"))
        if proc.returncode != 0 or not summaries:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no summary written"]
            return {"error": f"vela failed: {tail[0]}"}
        row = next(csv.DictReader(summaries[0].open()))
    npu_ops = [line for line in proc.stdout.splitlines() if line.startswith(("CPU operators", "NPU operators"))]
    return {
        "accelerator": accelerator,
        "system_config": summaries[0].stem.split("_summary_")[-1],
        "sram_bytes": round(float(row["sram_memory_used"]) * 1024),
        "off_chip_flash_bytes": round(float(row["off_chip_flash_memory_used"]) * 1024),
        "cycles_estimate": int(float(row["cycles_total"])),
        "inference_ms_estimate": round(float(row["inference_time"]) * 1e3, 2),
        "operators": [" ".join(line.split()) for line in npu_ops],
    }


def ours(art: Artifacts, target: str = "mps3-an547") -> dict:
    """Our C runtime's plan on a Cortex-M board, from a real build's report."""
    report, _ = art.build(target, "c")
    plan = report["c"]["arena_plan"]
    return {
        "target": target,
        "arena_bytes": plan["arena_bytes"],
        "unfused_arena_bytes": plan["unfused_arena_bytes"],
        "flash_bytes": report["memory"]["flash_bytes"],
        "weights_bytes": report["memory"]["weights_bytes"],
        "ram_bytes": report["memory"]["ram_bytes"],
    }


def run(arts: list[Artifacts]) -> dict:
    out = {}
    for art in arts:
        tflite = art.int8_tflite()
        row = {
            "ours": ours(art),
            "tflite_micro": tflm_min_arena(tflite),
            "vela": vela_estimate(tflite),
            "int8_tflite_bytes": tflite.stat().st_size,
        }
        ui.info(
            f"{art.model.name}: our arena {row['ours']['arena_bytes'] / 1024:.0f} KiB, TFLite Micro "
            f"{row['tflite_micro'].get('arena_bytes', 0) / 1024:.0f} KiB, Vela SRAM "
            f"{row['vela'].get('sram_bytes', 0) / 1024:.0f} KiB"
        )
        out[art.model.name] = row
    return out
