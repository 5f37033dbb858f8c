"""Range algorithms: from a tensor's observed values to the [lo, hi] its int8 grid covers.

- minmax: the observed extremes (no clipping; outliers stretch the grid).
- percentile: clip the rarest 0.01 % on each side.
- kl: TensorRT-style entropy calibration on |x|, symmetric threshold.
- mse: the clipping range that minimises the expected squared quantization error,
  searched on the histogram (what PReLU's outlier-heavy tensors need).
"""

from __future__ import annotations

import numpy as np

ALGORITHMS = ("minmax", "percentile", "kl", "mse")
BINS = 2048
LEVELS = 255


def _centres(edges: np.ndarray) -> np.ndarray:
    return (edges[:-1] + edges[1:]) / 2


def percentile_range(hist: np.ndarray, edges: np.ndarray, pct: float = 99.99) -> tuple[float, float]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    lo = edges[np.searchsorted(cdf, (100 - pct) / 100)]
    hi = edges[min(np.searchsorted(cdf, pct / 100) + 1, len(edges) - 1)]
    return float(lo), float(hi)


def quantization_mse(hist: np.ndarray, centres: np.ndarray, lo: float, hi: float) -> float:
    """Expected squared error of quantizing the histogram to LEVELS steps on [lo, hi]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / LEVELS
    if scale <= 0:
        return float(np.sum(hist * centres**2))
    q = np.clip(np.round((centres - lo) / scale), 0, LEVELS) * scale + lo
    inside = (centres >= lo) & (centres <= hi)
    err = (centres - q) ** 2 + np.where(inside, scale**2 / 12, 0.0)
    return float(np.sum(hist * err))


def mse_range(hist: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    centres = _centres(edges)
    lo0, hi0 = min(float(edges[0]), 0.0), max(float(edges[-1]), 0.0)
    fractions = np.concatenate([np.geomspace(0.02, 1.0, 40)])
    best = (quantization_mse(hist, centres, lo0, hi0), lo0, hi0)
    for a in fractions if lo0 < 0 else [1.0]:
        for b in fractions if hi0 > 0 else [1.0]:
            err = quantization_mse(hist, centres, lo0 * a, hi0 * b)
            if err < best[0]:
                best = (err, lo0 * a, hi0 * b)
    return best[1], best[2]


def kl_range(hist: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """Symmetric threshold minimising KL(P || Q) of |x| with 128 levels (TensorRT's method)."""
    centres = _centres(edges)
    limit = max(abs(float(edges[0])), abs(float(edges[-1])))
    if limit == 0:
        return 0.0, 0.0
    abs_hist, abs_edges = np.histogram(np.abs(centres), bins=BINS, range=(0, limit), weights=hist)
    # Zero is exact on every int8 grid, and ReLU/ReLU6 outputs are mostly exact zeros: left in,
    # that spike gets spread over its merged neighbours as soon as a candidate grid is coarser
    # than the histogram, so every threshold above the first looked costly and KL clipped
    # [0, 6] to [0, 0.375]. The search weighs only the values quantization can get wrong.
    abs_hist[0] = 0.0
    levels = 128
    best_kl, best_t = np.inf, limit
    for i in range(levels, BINS + 1, 16):
        p = abs_hist[:i].astype(np.float64).copy()
        p[-1] += abs_hist[i:].sum()
        if p.sum() == 0:
            continue
        chunks = np.array_split(abs_hist[:i].astype(np.float64), levels)
        q = np.concatenate([np.where(c > 0, c.sum() / max((c > 0).sum(), 1), 0.0) for c in chunks])
        p /= p.sum()
        q /= max(q.sum(), 1e-30)
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_t = kl, float(abs_edges[i])
    return max(float(edges[0]), -best_t), min(float(edges[-1]), best_t)


def choose_range(algo: str, hist: np.ndarray, edges: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] for one tensor by the named algorithm (histogram spans the observed [lo, hi])."""
    if algo == "minmax" or hi <= lo:
        return lo, hi
    if algo == "percentile":
        return percentile_range(hist, edges)
    if algo == "kl":
        return kl_range(hist, edges)
    if algo == "mse":
        return mse_range(hist, edges)
    raise ValueError(algo)
