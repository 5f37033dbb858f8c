"""The integer epilogues of our quantized ops as TE computes (TIR expressions).

Each is one elementwise kernel with exactly `calibration.golden`'s arithmetic, written
as one expression per output element. As Relax elementwise ops instead, a conv's
epilogue was ~30 loop nests over int64 buffers (LLVM took 1.5 s per kernel, 31 s for
MobileFaceNet), and inlining them duplicated nested subexpressions (10 s for one
kernel). The expressions here reuse only the accumulator (a load and an add), never a
rounded intermediate, and contain no `Let`: MetaSchedule's FLOP estimator rejects
`tirx.Let` ("Do not have a default for prim.Let"). FuseOps fuses each epilogue into the
conv2d before it, so a conv is one kernel: reduction + epilogue.

Per-channel constants are int64 [C] kernel arguments; a constant with the same value
on every channel becomes a literal instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tvm import te, tirx
from tvm.ir.expr import Expr as PrimExpr

I64 = "int64"

Getter = Callable[[str], PrimExpr]


def i64(value: int) -> PrimExpr:
    return tirx.IntImm(I64, int(value))


# ---------------------------------------------------------------- requantization constants


def q31_rows(prefix: str, mult: np.ndarray, shift: np.ndarray) -> dict[str, np.ndarray]:
    """Constants of MultiplyByQuantizedMultiplier (Q31 multiplier, TFLite's 8-bit kernels)."""
    mult = np.asarray(mult, dtype=np.int64).reshape(-1)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1)
    if np.any(mult < 0):
        raise ValueError("a negative multiplier is not a QuantizeMultiplier result")
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    return {
        f"{prefix}lmul": np.int64(1) << left,
        f"{prefix}mult": mult,
        f"{prefix}rshift": right,
        f"{prefix}half": half,
        f"{prefix}half_neg": np.maximum(half - 1, 0),
    }


def q15_rows(prefix: str, mult: np.ndarray, shift: np.ndarray) -> dict[str, np.ndarray]:
    """Constants of the 64-bit variant (TFLite's 16x8 kernels): Q15 multiplier, one rounding."""
    mult = np.asarray(mult, dtype=np.int64).reshape(-1)
    total = 15 - np.asarray(shift, dtype=np.int64).reshape(-1)
    if np.any(total < 1):
        raise ValueError(f"a 16x8 requantization shift of {int(total.min())} is out of range")
    return {
        f"{prefix}mult": np.where(mult < 0x7FFF0000, (mult + (1 << 15)) >> 16, 0x7FFF),
        f"{prefix}rounding": np.int64(1) << (total - 1),
        f"{prefix}rshift": total,
    }


def mbqm(x: PrimExpr, get: Getter, prefix: str = "") -> PrimExpr:
    """TFLite's MultiplyByQuantizedMultiplier on an int64 value, equal to fixedpoint.py's
    wherever that is defined: x * 2^left within int32, as in TFLite (beyond, the golden's
    int64 arithmetic overflows: -2^31 * 2^2 times a multiplier of 2^30 is -2^63).

    SaturatingRoundingDoublingHighMul: the golden nudges a*b by +2^30 (a*b >= 0) or by
    1-2^30 (a*b < 0) and truncates /2^31 toward zero; both cases equal floor((a*b +
    2^30) / 2^31): one add and one arithmetic shift. (Its saturation needs a multiplier
    of INT32_MIN, which QuantizeMultiplier never returns.)
    RoundingDivideByPOT of h by e > 0 rounds half away from zero: floor((h + 2^(e-1) -
    [h < 0]) / 2^e) = (h + (h < 0 ? half - 1 : half)) >> e; by e == 0 it is h. With a
    multiplier >= 0, h < 0 implies x < 0, and x < 0 with h == 0 rounds to 0 with either
    nudge, so the sign is taken from x: h is used once, x is the only value reused.
    """
    lmul = get(prefix + "lmul")
    if not (isinstance(lmul, tirx.IntImm) and lmul.value == 1):
        x = x * lmul
    high = (x * get(prefix + "mult") + i64(1 << 30)) >> i64(31)
    right = get(prefix + "rshift")
    if isinstance(right, tirx.IntImm) and right.value == 0:
        return high
    return (high + tirx.Select(x < i64(0), get(prefix + "half_neg"), get(prefix + "half"))) >> right


def mbqm64(x: PrimExpr, get: Getter, prefix: str = "") -> PrimExpr:
    """The 16x8 variant: (x * reduced + rounding) >> (15 - shift)."""
    return (x * get(prefix + "mult") + get(prefix + "rounding")) >> get(prefix + "rshift")


@dataclass
class Table:
    """Per-channel int64 constants by name; a row whose value is the same on every
    channel becomes a literal, the others are [C] kernel arguments (each read as
    param[c], so that FuseOps sees a broadcast and fuses the epilogue into the conv)."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, rows: dict[str, np.ndarray]) -> None:
        self.rows.update({k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in rows.items()})

    def varying(self) -> list[str]:
        return [k for k, v in self.rows.items() if v.size > 1 and np.any(v != v[0])]

    def arrays(self) -> list[np.ndarray]:
        return [self.rows[k] for k in self.varying()]

    def getter(self, params: tuple[te.Tensor, ...], channel: PrimExpr | None) -> Getter:
        index = {k: i for i, k in enumerate(self.varying())}

        def get(name: str) -> PrimExpr:
            if name in index:
                return params[index[name]][channel]
            return i64(int(self.rows[name][0]))

        return get


def clamp_cast(x: PrimExpr, zero_point: int, lo: int, hi: int, dtype: str) -> PrimExpr:
    return tirx.max(tirx.min(x + i64(zero_point), i64(hi)), i64(lo)).astype(dtype)


# ---------------------------------------------------------------- the epilogues


@dataclass
class ConvEpilogue:
    """bias + requantization (+ fused PReLU: a second multiplier and the slope's sign for
    negative accumulators) + output zero point + clamps, on a conv accumulator (channel last)."""

    table: Table
    wide: bool  # 16x8: Q15 multipliers on an int64 accumulator
    prelu: bool
    zero_point: int
    lo: int
    hi: int
    dtype: str

    def __call__(self, acc: te.Tensor, *params: te.Tensor) -> te.Tensor:
        requant = mbqm64 if self.wide else mbqm

        def element(*idx):
            get = self.table.getter(params, idx[-1])
            a = acc[idx].astype(I64) + get("bias")
            out = requant(a, get, "pos_")
            if self.prelu:
                neg = requant(a, get, "neg_")
                sign = get("sign")
                if not (isinstance(sign, tirx.IntImm) and sign.value == 1):
                    neg = neg * sign
                out = tirx.Select(a < i64(0), neg, out)
            return clamp_cast(out, self.zero_point, self.lo, self.hi, self.dtype)

        return te.compute(acc.shape, element, name="requant")


@dataclass
class AddEpilogue:
    """TFLite int8 ADD: each input (x - zp) << 20 to the common scale, the sum to the output."""

    zero_points: tuple[int, int]
    sides: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # q31_rows of each input
    out_rows: dict[str, np.ndarray]
    left_shift: int
    zero_point: int
    lo: int
    hi: int

    def __call__(self, a: te.Tensor, b: te.Tensor) -> te.Tensor:
        table = Table()
        table.add(self.sides[0])
        table.add(self.sides[1])
        table.add(self.out_rows)
        get = table.getter((), None)  # every row is a scalar

        def element(*idx):
            scaled = [
                mbqm((x[idx].astype(I64) - i64(zp)) * i64(1 << self.left_shift), get, prefix)
                for x, zp, prefix in ((a, self.zero_points[0], "a_"), (b, self.zero_points[1], "b_"))
            ]
            return clamp_cast(mbqm(scaled[0] + scaled[1], get, "out_"), self.zero_point, self.lo, self.hi, "int8")

        return te.compute(a.shape, element, name="qadd")


@dataclass
class PreluOp:
    """tflite mode PRELU: x >= 0 scaled by (m1, s1), else x * alpha[c] scaled by (m2, s2)."""

    table: Table  # pos_*, neg_* (scalars) and alpha (per channel)
    zero_point_in: int
    zero_point: int

    def __call__(self, x: te.Tensor, *params: te.Tensor) -> te.Tensor:
        def element(*idx):
            get = self.table.getter(params, idx[-1])
            v = x[idx].astype(I64) - i64(self.zero_point_in)
            out = tirx.Select(v >= i64(0), mbqm(v, get, "pos_"), mbqm(v * get("alpha"), get, "neg_"))
            return clamp_cast(out, self.zero_point, -128, 127, "int8")

        return te.compute(x.shape, element, name="qprelu")
