"""The golden integer simulator: executes a QGraph with exactly the integer arithmetic
the kernels use. Every backend (C runtime, TVM, the .tflite export) is checked
against it bit for bit.

Convolutions accumulate in float64 BLAS: every product of an int8 weight and an
offset int8 activation is below 2**15 and a MobileFaceNet dot product has at most
1152 terms, so partial sums stay far below 2**53 and are exact integers.
"""

from __future__ import annotations

import numpy as np

from calibration.fixedpoint import multiply_by_quantized_multiplier as mbqm
from calibration.fixedpoint import multiply_by_quantized_multiplier_64 as mbqm64
from calibration.qgraph import QGraph, QNode
from calibration.requant import (
    ADD_LEFT_SHIFT,
    add_multipliers,
    conv_multipliers,
    prelu_multipliers,
    prelu_negative_multipliers,
)
from compiler.executor import conv2d

INT8_MIN, INT8_MAX = -128, 127
LIMITS = {"int8": (-128, 127), "int16": (-32768, 32767)}


def pixels_to_input(pixels: np.ndarray) -> np.ndarray:
    """Raw uint8 RGB pixels -> the int8 input tensor (scale 1, zero point -128)."""
    return (pixels.astype(np.int16) - 128).astype(np.int8)


def _conv_accumulators(graph: QGraph, node: QNode, x: np.ndarray) -> np.ndarray:
    zp_in = graph.tensors[node.inputs[0]].zero_point
    a = node.attrs
    pad_value = None
    if "pad_q" in a:  # padding with a per-channel value instead of the zero point
        pad_value = [float(v - zp_in) for v in a["pad_q"]]
    acc = conv2d(
        x.astype(np.float64) - zp_in,
        node.arrays["weight"].astype(np.float64),
        None,
        a["strides"],
        a["pads"],
        a["dilations"],
        a["group"],
        pad_value,
    )
    acc = np.rint(acc).astype(np.int64)
    return acc + node.arrays["bias"].astype(np.int64).reshape(1, -1, 1, 1)


def run_conv(graph: QGraph, node: QNode, x: np.ndarray) -> np.ndarray:
    acc = _conv_accumulators(graph, node, x)
    # int16 inputs (16x8) accumulate beyond int32 and requantize with the 64-bit variant.
    requant = mbqm64 if graph.tensors[node.inputs[0]].dtype == "int16" else mbqm
    mult, shift = conv_multipliers(graph, node)
    mult, shift = mult.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1)
    out = requant(acc, mult, shift)
    if "slope" in node.arrays:  # fused PReLU: negative accumulators take the slope's multiplier
        neg_mult, neg_shift, sign = (v.reshape(1, -1, 1, 1) for v in prelu_negative_multipliers(graph, node))
        out = np.where(acc < 0, sign * requant(acc, neg_mult, neg_shift), out)
    out_t = graph.tensors[node.output]
    lo, hi = LIMITS[out_t.dtype]
    out = np.clip(out + out_t.zero_point, node.attrs.get("act_min", lo), node.attrs.get("act_max", hi))
    return out.astype(out_t.dtype)


def run_prelu(graph: QGraph, node: QNode, x: np.ndarray) -> np.ndarray:
    value = x.astype(np.int64) - graph.tensors[node.inputs[0]].zero_point
    alpha = node.arrays["alpha"].astype(np.int64).reshape(1, -1, *([1] * (x.ndim - 2))) - node.attrs["alpha_zero_point"]
    m1, s1, m2, s2 = prelu_multipliers(graph, node)
    out = np.where(value >= 0, mbqm(value, m1, s1), mbqm(value * alpha, m2, s2))
    out = out + graph.tensors[node.output].zero_point
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


def run_add(graph: QGraph, node: QNode, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    (m1, s1), (m2, s2), (mo, so) = add_multipliers(graph, node)
    za, zb = graph.tensors[node.inputs[0]].zero_point, graph.tensors[node.inputs[1]].zero_point
    sa = mbqm((a.astype(np.int64) - za) << ADD_LEFT_SHIFT, m1, s1)
    sb = mbqm((b.astype(np.int64) - zb) << ADD_LEFT_SHIFT, m2, s2)
    out = mbqm(sa + sb, mo, so) + graph.tensors[node.output].zero_point
    return np.clip(out, node.attrs.get("act_min", INT8_MIN), node.attrs.get("act_max", INT8_MAX)).astype(np.int8)


def run(graph: QGraph, pixels: np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Execute on uint8 RGB NCHW pixels; returns int8 outputs (every tensor with keep=True)."""
    env = {graph.input: pixels_to_input(pixels)}
    for node in graph.nodes:
        env[node.output] = run_node(graph, node, [env[t] for t in node.inputs])
    return env if keep else {k: env[k] for k in graph.outputs}


def run_node(graph: QGraph, node: QNode, args: list[np.ndarray]) -> np.ndarray:
    """One op on integer inputs (batch first)."""
    match node.op:
        case "conv":
            return run_conv(graph, node, args[0])
        case "prelu":
            return run_prelu(graph, node, args[0])
        case "add":
            return run_add(graph, node, args[0], args[1])
        case "reshape":
            return args[0].reshape(args[0].shape[0], *graph.tensors[node.output].shape[1:])
    raise ValueError(f"golden simulator: unknown op {node.op} in {node.name}")


def embed(graph: QGraph, pixels: np.ndarray) -> np.ndarray:
    """Dequantized first output (the embedding), float64 [N, D]."""
    out = graph.outputs[0]
    q = run(graph, pixels)[out]
    return graph.tensors[out].dequantize(q).reshape(q.shape[0], -1)
