"""Optimised kernels vs the portable ones, per target, measured side by side.

    python -m bench.kernel_speed [--targets x86_64 rk3399 mps3-an547 mps2-an500]
                                 [--images 2] [--model mobilefacenet] [--json FILE]

For each target the same quantized model (default: the `mobilefacenet` family model,
int8, fused) is built twice, with the kernels the target selects (`make`) and with
`make KERNELS=portable`, and both device programs run the same images through the HIL
protocol. Each inference is reported in the honest unit for where it ran:

- mps3-an547, mps2-an500 (qemu-system-arm -icount shift=0): instructions, from the
  SysTick ticks x 1e9 / clock_hz (compiler/hil/emulate.py ticks_to_instructions);
- rk3399 (qemu-aarch64 -cpu cortex-a72 with our TCG plugin): instructions;
- x86_64 (native): microseconds, the median over every timed run; the two programs
  are run alternately, round after round, so both see the same machine load (the
  per-layer split is the median over the rounds of one run each).

Emulated instruction counts say nothing about cycles on the real cores (the M55 runs
most MVE instructions in two beats, the A72 dual-issues, ...): they compare code, not
silicon. Every output is also compared with the golden simulator. The figures quoted in
docs/kernels.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from calibration.observers import observe_ranges
from calibration.quantizer import quantize
from compiler.backends.c_emitter import emit_c
from compiler.backends.c_host import golden_as_device
from compiler.backends.firmware import PROGRAM, assemble_tree, port_for
from compiler.frontend import load_model
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from compiler.targets import Target, load_target

TARGETS = ("x86_64", "rk3399", "mps3-an547", "mps2-an500")
NEEDS = {
    "x86_64": ("gcc",),
    "rk3399": ("aarch64-linux-gnu-gcc", "qemu-aarch64", "socat"),
    "mps3-an547": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "mps2-an500": ("arm-none-eabi-gcc", "qemu-system-arm"),
}
NATIVE_ROUNDS, NATIVE_TIMED = 5, 10  # x86_64: rounds x timed runs per image and program


def quantized_model(spec: str, preprocess: str, calib: int = 2):
    graph = load_model(spec).graph
    for _, fn in pipeline(parse_preprocess(preprocess)):
        graph = fn(graph)
    images = synthetic_eval_set(calib, seed=4)[0]
    return quantize(graph, observe_ranges(graph, images, "minmax"), "fused")


def build(target: Target, qgraph, folder: Path, kernels: str) -> Path:
    """The device program in folder (make, or make KERNELS=portable)."""
    emit_c(qgraph, folder, "kernel-speed")
    assemble_tree(folder, target)
    proc = subprocess.run(
        ["make", "-s", "-B", "-C", str(folder), PROGRAM, f"KERNELS={kernels}"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{target.name} ({kernels}): build failed:\n{proc.stderr[-2000:]}")
    return folder / PROGRAM


_CONV = re.compile(r"static const mfn_conv_t (\w+) = \{([^}]*)\}")
_ADD = re.compile(r"static const mfn_add_t (\w+) = ")
_FUSED = re.compile(r"mfn_expand_depthwise\(&(\w+), &(\w+)")
_NAMES = re.compile(r"mfn_layer_names\[MFN_LAYER_COUNT\] = \{(.*?)\};", re.S)


def layer_kinds(model_c: Path) -> list[str]:
    """The kind of each timed layer, from the generated model.c (a fused pair counts on its expansion)."""
    text = model_c.read_text()
    kinds: dict[str, str] = {}
    for name, fields in _CONV.findall(text):
        f = [v.strip() for v in fields.split(",")]
        kh, kw, depthwise = int(f[6]), int(f[7]), int(f[12])
        kinds[name] = "depthwise" if depthwise else ("pointwise" if kh == kw == 1 else "dense")
    for name in _ADD.findall(text):
        kinds[name] = "add"
    for expand, dw in _FUSED.findall(text):
        kinds[expand], kinds[dw] = "pointwise+depthwise (fused)", "(in its expansion)"
    names = re.findall(r'"([^"]*)"', _NAMES.search(text).group(1))
    return [kinds.get(n, "other") for n in names]


class Device:
    """One running device program and its link."""

    def __init__(self, target: Target, program: Path, workdir: Path) -> None:
        from compiler.hil import emulate
        from compiler.hil.link import DeviceLink, open_port
        from compiler.hil.pipe import PipePort

        self.board = None
        if target.emulation.kind == "native":
            port = PipePort.for_program(program)
        else:
            self.board = emulate.start(target, program, workdir)
            port = open_port(self.board.url, 115200, 10.0)
        self.link = DeviceLink(str(program), port=port)
        self.info = self.link.info()

    def per_inference(self, counts: list[int]) -> list[float]:
        """Counter deltas in the honest unit: SysTick ticks become instructions under -icount."""
        if self.info.get("counter") == "systick" and self.board and self.board.ticks_to_instructions:
            scale = self.board.ticks_to_instructions / int(self.info["clock_hz"])
            return [c * scale for c in counts]
        return [float(c) for c in counts]

    def unit(self) -> str:
        counter = self.info.get("counter", "none")
        if counter == "systick" and self.board and self.board.ticks_to_instructions:
            return "instructions"
        return counter

    def close(self) -> None:
        self.link.close()
        if self.board:
            self.board.stop()


def measure_target(name: str, qgraph, images: np.ndarray, workdir: Path) -> dict:
    from compiler.hil.session import run_inputs

    target = load_target(name)
    programs = {k: build(target, qgraph, workdir / f"{name}-{k}", k) for k in ("auto", "portable")}
    kinds = layer_kinds(workdir / f"{name}-auto" / "model.c")
    expected = golden_as_device(qgraph, images)
    devices = {k: Device(target, p, workdir / f"{name}-{k}-emu") for k, p in programs.items()}
    try:
        native = target.emulation.kind == "native"
        values: dict[str, list[float]] = {k: [] for k in devices}
        layer_runs: dict[str, list[list[float]]] = {k: [] for k in devices}
        exact: dict[str, bool] = {k: True for k in devices}
        rounds = NATIVE_ROUNDS if native else 1
        for _ in range(rounds):
            for k, dev in devices.items():  # alternate the two programs round by round
                runs = run_inputs(
                    dev.link,
                    images,
                    warmup=2 if native else 0,
                    timed=NATIVE_TIMED if native else 1,
                    per_layer=True,  # the first image's last timed run, every round
                    run_timeout_s=600,
                )
                values[k] += dev.per_inference(runs.elapsed)
                if runs.layers:
                    layer_runs[k].append(dev.per_inference(runs.layers))
                exact[k] &= all(np.array_equal(d, e) for d, e in zip(runs.outputs, expected, strict=True))
        unit = devices["auto"].unit()
    finally:
        for dev in devices.values():
            dev.close()
    median = {k: statistics.median(v) for k, v in values.items()}
    layers = {k: [statistics.median(col) for col in zip(*v, strict=True)] if v else None for k, v in layer_runs.items()}
    by_kind: dict[str, dict[str, float]] = {}
    if layers.get("auto") and layers.get("portable"):
        for kind, a, p in zip(kinds, layers["auto"], layers["portable"], strict=False):
            entry = by_kind.setdefault(kind, {"auto": 0.0, "portable": 0.0})
            entry["auto"] += a
            entry["portable"] += p
    return {
        "target": name,
        "unit": unit,
        "portable": median["portable"],
        "optimised": median["auto"],
        "speedup": median["portable"] / median["auto"],
        "runs": {k: len(v) for k, v in values.items()},
        "bit_exact": exact,
        "by_kind": by_kind,
    }


def available(name: str) -> str | None:
    """Why a target cannot be measured here, or None."""
    missing = [tool for tool in NEEDS[name] if shutil.which(tool) is None]
    if port_for(load_target(name)) is None:
        missing.append("a device port")
    return f"needs {', '.join(missing)}" if missing else None


def _fmt(value: float, unit: str) -> str:
    return f"{value / 1e6:,.1f} M" if unit == "instructions" else f"{value / 1000:,.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernel_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--images", type=int, default=2, help="images per program (default 2)")
    ap.add_argument("--model", default="mobilefacenet", help="model spec (default: the family model)")
    ap.add_argument("--preprocess", default="paper", help="its preprocessing (imagenet for the foamliu model)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--workdir", type=Path, help="keep the builds here (default: a temporary folder)")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} cores")
    qgraph = quantized_model(args.model, args.preprocess)
    images = synthetic_eval_set(args.images, seed=9)[0]
    results, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="kernel-speed-") as tmp:
        workdir = args.workdir or Path(tmp)
        for name in args.targets:
            why = available(name)
            if why:
                skipped[name] = why
                print(f"{name}: skipped ({why})")
                continue
            started = time.monotonic()
            row = measure_target(name, qgraph, images, workdir)
            row["seconds"] = round(time.monotonic() - started, 1)
            results.append(row)
            print(
                f"{name:11s} {row['unit']:12s} portable {_fmt(row['portable'], row['unit']):>10s}"
                f"  optimised {_fmt(row['optimised'], row['unit']):>10s}  x{row['speedup']:.2f}"
                f"  bit-exact {row['bit_exact']['auto'] and row['bit_exact']['portable']}",
                flush=True,
            )
            for kind, v in row["by_kind"].items():
                if kind != "(in its expansion)" and v["portable"] and v["auto"]:
                    print(
                        f"    {kind:28s} {_fmt(v['portable'], row['unit']):>10s} -> "
                        f"{_fmt(v['auto'], row['unit']):>10s}  x{v['portable'] / v['auto']:.2f}"
                    )
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "images": args.images,
                    "load_before": load_before,
                    "load_after": load_after,
                    "results": results,
                    "skipped": skipped,
                },
                indent=2,
            )
        )
    return 0 if all(r["bit_exact"]["auto"] and r["bit_exact"]["portable"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
