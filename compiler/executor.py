"""Numpy float executor of the IR: the reference every graph pass is checked with.

It computes in float64 so that its own rounding is far below the 1e-5 equivalence
tolerance; what remains is the float32 rounding of the runtime it is compared with.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.errors import BadInput
from compiler.ir import Graph, Node


def _pad_hw(x: np.ndarray, pads: list[int], pad_value: list[float] | float | None) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    out = np.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    if pad_value is None:
        out[...] = 0.0
    else:
        out[...] = np.broadcast_to(np.asarray(pad_value, dtype=x.dtype).reshape(1, -1, 1, 1), (n, c, 1, 1))
    out[:, :, top : top + h, left : left + w] = x
    return out


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
    pad_value: list[float] | None = None,
) -> np.ndarray:
    """Grouped 2-D convolution as a sum over kernel taps (one matmul per tap and group)."""
    x = _pad_hw(x, pads, pad_value)
    n, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    sh, sw = strides
    dh, dw = dilations
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    cout_g = cout // group
    out = np.zeros((n, cout, oh, ow), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            tap = weight[:, :, i, j]
            if group == cin and cin_g == 1 and cout == cin:
                out += patch * tap[:, 0].reshape(1, cout, 1, 1)
            elif group == 1:
                out += np.einsum("oc,nchw->nohw", tap, patch, optimize=True)
            else:
                for g in range(group):
                    xs = patch[:, g * cin_g : (g + 1) * cin_g]
                    ws = tap[g * cout_g : (g + 1) * cout_g]
                    out[:, g * cout_g : (g + 1) * cout_g] += np.einsum("oc,nchw->nohw", ws, xs, optimize=True)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def _channel_param(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broadcast a per-channel parameter of shape (C,) or (C,1,1) against NCHW or NC."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 1:
        return p.reshape(())
    if x.ndim == 4 and p.ndim == 1:
        return p.reshape(1, -1, 1, 1)
    return p


def _gemm(node: Node, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
    if node.attrs.get("transA"):
        a = a.T
    if node.attrs.get("transB"):
        b = b.T
    y = node.attrs.get("alpha", 1.0) * (a @ b)
    if c is not None:
        y = y + node.attrs.get("beta", 1.0) * c
    return y


def _reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = [int(s) for s in shape]
    target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def run_node(node: Node, args: list[np.ndarray | None]) -> np.ndarray:
    a = node.attrs
    x = args[0]
    match node.op:
        case "Conv":
            return conv2d(
                x,
                args[1],
                args[2] if len(args) > 2 else None,
                a["strides"],
                a["pads"],
                a["dilations"],
                a["group"],
                a.get("pad_value"),
            )
        case "BatchNorm":
            scale, bias, mean, var = (_channel_param(p, x) for p in args[1:5])
            return (x - mean) / np.sqrt(var + a["epsilon"]) * scale + bias
        case "PRelu":
            slope = _channel_param(args[1], x)
            return np.where(x >= 0, x, x * slope)
        case "Relu":
            return np.maximum(x, 0.0)
        case "Clip":
            return np.clip(x, a.get("min", -np.inf), a.get("max", np.inf))
        case "Add":
            return x + args[1]
        case "Sub":
            return x - args[1]
        case "Mul":
            return x * args[1]
        case "Div":
            return x / args[1]
        case "Neg":
            return -x
        case "Identity":
            return x
        case "Reshape":
            return _reshape(x, args[1])
        case "Flatten":
            axis = a.get("axis", 1)
            return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
        case "Transpose":
            return np.transpose(x, a["perm"])
        case "Squeeze":
            return np.squeeze(x, axis=tuple(a["axes"])) if a.get("axes") else np.squeeze(x)
        case "Unsqueeze":
            for axis in sorted(a["axes"]):
                x = np.expand_dims(x, axis)
            return x
        case "Gemm":
            return _gemm(node, x, args[1], args[2] if len(args) > 2 else None)
        case "MatMul":
            return x @ args[1]
        case "GlobalAveragePool":
            return x.mean(axis=(2, 3), keepdims=True)
        case "Pad":
            rank = x.ndim
            widths = [(a["pads"][i], a["pads"][i + rank]) for i in range(rank)]
            return np.pad(x, widths, mode="constant", constant_values=a.get("value", 0.0))
    raise BadInput(f"node '{node.name}': op {node.op} is not supported by the float executor")


Hook = Callable[[Node, list[np.ndarray]], None]


def run(graph: Graph, inputs: dict[str, np.ndarray] | np.ndarray, keep: bool = False) -> dict[str, np.ndarray]:
    """Execute the graph; returns its outputs (or every tensor with keep=True) as float32."""
    if isinstance(inputs, np.ndarray):
        inputs = {graph.inputs[0]: inputs}
    env: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float64) for k, v in graph.constants.items()}
    for name, value in inputs.items():
        env[name] = np.asarray(value, dtype=np.float64)
    for node in graph.nodes:
        args = [env[t] if t else None for t in node.inputs]
        env[node.outputs[0]] = np.asarray(run_node(node, args))
    wanted = env if keep else {k: env[k] for k in graph.outputs}
    return {k: np.asarray(v, dtype=np.float32) for k, v in wanted.items()}
