"""Fixed-point multipliers derived from float32 scales, exactly as TFLite derives them.

TFLite stores scales as float32 and computes each kernel's multipliers at load time,
with a specific mix of float32 and double arithmetic. We repeat that mix here, so that
the same `.tflite` file gives the same integers in LiteRT, TFLite Micro, the golden
simulator and our C kernels.
"""

from __future__ import annotations

import numpy as np

from calibration.fixedpoint import quantize_multiplier
from calibration.qgraph import QGraph, QNode

ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD works on inputs shifted left by 20 bits


def f32(x: float) -> np.float32:
    return np.float32(x)


def conv_multipliers(graph: QGraph, node: QNode) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (multiplier, shift): in_scale * w_scale[c] / out_scale, in double."""
    in_scale = float(f32(graph.tensors[node.inputs[0]].scale))
    out_scale = float(f32(graph.tensors[node.output].scale))
    pairs = [
        quantize_multiplier(in_scale * float(ws) / out_scale) for ws in node.arrays["weight_scale"].astype(np.float32)
    ]
    return _split(pairs)


def prelu_negative_multipliers(graph: QGraph, node: QNode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused mode: per channel (multiplier, shift, sign) for negative accumulators (x slope)."""
    in_scale = float(f32(graph.tensors[node.inputs[0]].scale))
    out_scale = float(f32(graph.tensors[node.output].scale))
    slopes = node.arrays["slope"].astype(np.float32).astype(np.float64)
    weight_scales = node.arrays["weight_scale"].astype(np.float32).astype(np.float64)
    pairs = [
        quantize_multiplier(in_scale * ws / out_scale * abs(a)) for ws, a in zip(weight_scales, slopes, strict=True)
    ]
    multipliers, shifts = _split(pairs)
    return multipliers, shifts, np.sign(slopes).astype(np.int64)


def prelu_multipliers(graph: QGraph, node: QNode) -> tuple[int, int, int, int]:
    """tflite mode PRELU: (m1, s1) for x >= 0, (m2, s2) for x * alpha, float32 products."""
    in_scale = f32(graph.tensors[node.inputs[0]].scale)
    out_scale = f32(graph.tensors[node.output].scale)
    alpha_scale = f32(node.attrs["alpha_scale"])
    m1, s1 = quantize_multiplier(float(np.float32(in_scale / out_scale)))
    m2, s2 = quantize_multiplier(float(np.float32(in_scale * alpha_scale / out_scale)))
    return m1, s1, m2, s2


def add_multipliers(graph: QGraph, node: QNode) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """TFLite int8 ADD: both inputs to a common scale (2 x the larger), then to the output."""
    s1 = f32(graph.tensors[node.inputs[0]].scale)
    s2 = f32(graph.tensors[node.inputs[1]].scale)
    so = f32(graph.tensors[node.output].scale)
    twice_max = float(np.float32(2 * max(s1, s2)))
    real1 = float(s1) / twice_max
    real2 = float(s2) / twice_max
    real_out = twice_max / float(np.float32((1 << ADD_LEFT_SHIFT) * so))
    return quantize_multiplier(real1), quantize_multiplier(real2), quantize_multiplier(real_out)


def _split(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([m for m, _ in pairs], dtype=np.int64), np.array([s for _, s in pairs], dtype=np.int64)
