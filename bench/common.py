"""What every benchmark section shares: the machine description, the models compared,
and interleaved timing with medians and interquartile ranges.

Timings from different runs of a shared 2-core machine do not compare, so every
latency figure here comes from one process run in which the engines take turns,
round after round, in a rotating order; a short settle pause after each engine lets
idle thread pools stop spinning (onnxruntime's keep a core busy ~33 ms after a call).
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from compiler import ui

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
FRIENDS = REAL / "friends"
FOAMLIU = REAL / "mobilefacenet_foamliu.onnx"

# Run n inferences, return each one's milliseconds.
Engine = Callable[[int], list[float]]


@dataclass(frozen=True)
class BenchModel:
    """A model every section runs, with the preprocessing it was trained with."""

    name: str
    spec: str  # what `mfnc build --model` takes
    preprocess: str
    onnx: Path

    @property
    def calib(self) -> Path | None:
        """Real faces to calibrate and evaluate on, when the shared data is present."""
        return FRIENDS if FRIENDS.is_dir() else None


def bench_models(names: list[str] | None = None) -> list[BenchModel]:
    """The default PReLU model, and the real foamliu ReLU6 model when it is present."""
    models = [BenchModel("default", "default", "paper", ROOT / "compiler" / "models" / "default.onnx")]
    if FOAMLIU.exists():
        models.append(BenchModel("foamliu", str(FOAMLIU), "imagenet", FOAMLIU))
    else:
        ui.warn(f"{FOAMLIU} not present: benchmarking the default model only")
    if names:
        unknown = set(names) - {m.name for m in models}
        if unknown:
            raise SystemExit(f"error: --models: unknown or absent {', '.join(sorted(unknown))}")
        models = [m for m in models if m.name in names]
    return models


def _cpu_model() -> tuple[str, list[str]]:
    name, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    return name, flags


INTERESTING_FLAGS = (
    *("sse4_2", "avx", "avx2", "fma", "f16c"),
    *("avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"),
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """CPU, vector extensions, cores, load and library versions: what a reader needs to compare."""
    cpu, flags = _cpu_model()
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "arch": platform.machine(),
        "vector_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            p: _version(p)
            for p in (
                "onnxruntime",
                "ai-edge-litert",
                "tensorflow",
                "apache-tvm",
                "ncnn",
                "pnnx",
                "tflite_micro",
                "ethos-u-vela",
                "numpy",
            )
        },
    }


def summarize(values: list[float]) -> dict:
    """Median and interquartile range (the middle half of the runs), in the values' unit."""
    ordered = sorted(values)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "median": round(statistics.median(ordered), 4),
        "q1": round(q1, 4),
        "q3": round(q3, 4),
        "min": round(ordered[0], 4),
        "runs": len(ordered),
    }


def timed(fn: Callable[[], object]) -> Engine:
    """An engine from a zero-argument inference call, timed with perf_counter."""

    def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
        return out

    return run


def interleave(
    engines: dict[str, Engine], rounds: int, runs: int, settle_s: float = 0.05, warmup: int = 2, title: str = ""
) -> dict[str, dict]:
    """Each engine's ms per inference over rounds x runs, engines rotating within each round."""
    names = list(engines)
    for name in names:  # first-call allocations, caches, JIT, thread pools
        engines[name](warmup)
    times: dict[str, list[float]] = {name: [] for name in names}
    with ui.progress(title or "timing, interleaved") as advance:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(settle_s)
                times[name] += engines[name](runs)
            advance(r + 1, rounds)
    return {name: summarize(t) for name, t in times.items()}


def ratio_to_best(rows: dict[str, dict], key: str = "median", ours: tuple[str, ...] = ("ours",)) -> dict:
    """Each row's value over the best peer's (not ours): > 1 is slower/larger than the best peer."""
    peers = {n: r[key] for n, r in rows.items() if not n.startswith(ours) and r.get(key)}
    if not peers:
        return {}
    best_name = min(peers, key=peers.__getitem__)
    best = peers[best_name]
    for row in rows.values():
        if row.get(key):
            row["vs_best_peer"] = round(row[key] / best, 3)
    return {"best_peer": best_name, "value": best}
