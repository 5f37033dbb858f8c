"""Observers: run the float IR over calibration images and record per-tensor statistics.

Min/max are gathered in one pass; algorithms that need a histogram make a second pass
with fixed bin edges over the observed range (keeping every activation of every image
would cost gigabytes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from calibration.ranges import BINS, choose_range
from compiler import executor
from compiler.ir import Graph

Progress = Callable[[int, int], None]


def _activations(graph: Graph, pixels: np.ndarray) -> dict[str, np.ndarray]:
    values = executor.run(graph, pixels.astype(np.float32), keep=True)
    return {k: v for k, v in values.items() if k not in graph.constants}


def observe_ranges(
    graph: Graph, images: np.ndarray, algo: str, progress: Progress | None = None
) -> dict[str, tuple[float, float]]:
    """Per-tensor [lo, hi] for quantization, from uint8 RGB NCHW calibration images."""
    passes = 1 if algo == "minmax" else 2
    total = passes * len(images)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for i in range(len(images)):
        for name, value in _activations(graph, images[i : i + 1]).items():
            lo[name] = min(lo.get(name, np.inf), float(value.min()))
            hi[name] = max(hi.get(name, -np.inf), float(value.max()))
        if progress:
            progress(i + 1, total)
    if passes == 1:
        return {k: (lo[k], hi[k]) for k in lo}
    hists = {k: np.zeros(BINS) for k in lo}
    edges = {k: np.linspace(lo[k], hi[k] if hi[k] > lo[k] else lo[k] + 1e-6, BINS + 1) for k in lo}
    for i in range(len(images)):
        for name, value in _activations(graph, images[i : i + 1]).items():
            hists[name] += np.histogram(value, bins=edges[name])[0]
        if progress:
            progress(len(images) + i + 1, total)
    return {k: choose_range(algo, hists[k], edges[k], lo[k], hi[k]) for k in lo}
