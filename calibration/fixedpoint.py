"""The fixed-point arithmetic of TFLite's reference kernels, vectorised with numpy.

Every integer kernel (our C runtime, TVM, the golden simulator) must round exactly
like this, so that the int8 `.tflite` export can be checked bit for bit against
LiteRT's reference kernels and TFLite Micro. Values are int64 arrays holding int32
quantities, so products of two int32 never overflow.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Real multiplier -> (Q31 multiplier, power-of-two shift), as TFLite's QuantizeMultiplier."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    q = int(_round_half_away(mantissa * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return q, shift


def _round_half_away(x: float) -> float:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """(a * b * 2) >> 32 with round-to-nearest, as gemmlowp's SaturatingRoundingDoublingHighMul."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    # C integer division truncates toward zero.
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """x / 2**exponent rounded to nearest, ties away from zero (gemmlowp)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int
) -> np.ndarray:
    """x * real_multiplier in fixed point: TFLite's MultiplyByQuantizedMultiplier (double rounding)."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.asarray(x, dtype=np.int64) * (np.int64(1) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def multiply_by_quantized_multiplier_64(
    x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int
) -> np.ndarray:
    """The 64-bit-accumulator variant (TFLite's 16x8 kernels): a Q15 multiplier, one rounding.

    Used where the input is int16, whose accumulators may exceed int32.
    """
    multiplier = np.asarray(multiplier, dtype=np.int64)
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total_shift = 15 - np.asarray(shift, dtype=np.int64)
    rounding = np.int64(1) << (total_shift - 1)
    return (np.asarray(x, dtype=np.int64) * reduced + rounding) >> total_shift
