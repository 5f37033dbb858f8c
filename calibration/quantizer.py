"""The quantizer: float IR + calibrated ranges -> QGraph, to the TFLite int8 spec.

Weights: int8, symmetric, per output channel. Activations: int8, asymmetric, per
tensor. Biases: int32 at scale in_scale * w_scale. Two modes of the same graph:

- `fused` (deployment default): each conv absorbs the activation after it (PReLU
  with per-channel slopes, ReLU, ReLU6/Clip) into its requantization epilogue, so the
  pre-activation tensor is never rounded to int8 on its own.
- `tflite`: ops requantize separately as in a TFLite int8 model (PReLU is its own op
  with per-tensor int8 slopes; ReLU/ReLU6 stay fused as TFLite fuses them), so the
  graph can be exported and checked against LiteRT and TFLite Micro.
"""

from __future__ import annotations

import numpy as np

from calibration.qgraph import QGraph, QNode, QTensor
from compiler.errors import BadInput
from compiler.ir import Graph, Node

MODES = ("fused", "tflite")
INPUT_SCALE, INPUT_ZERO_POINT = 1.0, -128  # raw pixels: real value == pixel value
_SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 tensor covering [lo, hi] (always including 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / 255.0)) if hi > lo else 1.0
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def int16_qparams(lo: float, hi: float) -> tuple[float, int]:
    """TFLite's 16x8 scheme: symmetric int16 activations (zero point 0)."""
    bound = max(abs(lo), abs(hi))
    return (float(np.float32(bound / 32767.0)) if bound > 0 else 1.0), 0


def quantize_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 (range -127..127) and the float32 scales."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    scale = (np.abs(flat).max(axis=1) / 127.0).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0))
    q = np.clip(np.round(flat / scale[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    return q.reshape(weight.shape), scale


def _tflite_round(value: float, scale: float) -> int:
    """round(value / scale) in float32, ties away from zero (TFLite's activation range)."""
    x = float(np.float32(value) / np.float32(scale))
    return int(np.floor(abs(x) + 0.5) * np.sign(x))


class _Quantizer:
    def __init__(
        self, graph: Graph, ranges: dict[str, tuple[float, float]], mode: str, int16: frozenset[str] = frozenset()
    ) -> None:
        if mode not in MODES:
            raise BadInput(f"--mode {mode}: expected one of {', '.join(MODES)}")
        if graph.meta.get("input_kind") != "pixels":
            raise BadInput(f"{graph.name}: quantize the graph after fold_preprocess (it must take raw pixels)")
        self.g = graph
        self.ranges = ranges
        self.mode = mode
        inp = graph.inputs[0]
        self.tensors = {inp: QTensor(graph.shapes[inp], INPUT_SCALE, INPUT_ZERO_POINT)}
        self.nodes: list[QNode] = []
        self.absorbed: set[int] = set()
        self.int16 = int16
        if int16 and mode != "fused":
            raise BadInput("int16 layers exist only in fused mode")

    def qtensor(self, name: str) -> QTensor:
        if name not in self.tensors:
            if name not in self.ranges:
                raise BadInput(f"{self.g.name}: tensor '{name}' has no calibration range")
            if name in self.int16:
                scale, zp = int16_qparams(*self.ranges[name])
                self.tensors[name] = QTensor(self.g.shapes[name], scale, zp, "int16")
            else:
                scale, zp = activation_qparams(*self.ranges[name])
                self.tensors[name] = QTensor(self.g.shapes[name], scale, zp)
        return self.tensors[name]

    def next_activation(self, node: Node) -> Node | None:
        """The activation consuming `node`'s output alone, if any."""
        users = self.g.consumers(node.outputs[0])
        if len(users) != 1 or node.outputs[0] in self.g.outputs:
            return None
        user = users[0]
        if user.op in ("Relu", "Clip"):
            return user
        if user.op == "PRelu" and self.mode == "fused" and node.op == "Conv":
            return user
        return None

    def clamps(self, act: Node | None, out: QTensor) -> dict:
        """Quantized clamp bounds for a fused ReLU/ReLU6/Clip (TFLite's activation range)."""
        if act is None or act.op == "PRelu":
            return {}
        lo = 0.0 if act.op == "Relu" else act.attrs.get("min", -np.inf)
        hi = np.inf if act.op == "Relu" else act.attrs.get("max", np.inf)
        attrs: dict = {}
        qmin, qmax = (-32768, 32767) if out.dtype == "int16" else (-128, 127)
        if np.isfinite(lo):
            attrs["act_min"] = int(max(qmin, out.zero_point + _tflite_round(lo, out.scale)))
        if np.isfinite(hi):
            attrs["act_max"] = int(min(qmax, out.zero_point + _tflite_round(hi, out.scale)))
        if self.mode == "tflite":
            kind = (
                "relu" if act.op == "Relu" or (lo == 0 and hi == np.inf) else ("relu6" if (lo, hi) == (0, 6) else None)
            )
            if kind is None:
                raise BadInput(f"{self.g.name}: node '{act.name}' Clip({lo}, {hi}) has no TFLite fused activation")
            attrs["activation"] = kind
        return attrs

    def conv(self, node: Node) -> None:
        act = self.next_activation(node)
        out_name = act.outputs[0] if act else node.outputs[0]
        x = self.qtensor(node.inputs[0])
        out = self.qtensor(out_name)
        weight = self.g.constants[node.inputs[1]]
        q_weight, w_scale = quantize_weights(weight)
        bias = self.g.constants[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(weight.shape[0])
        bias_scale = np.float32(x.scale) * w_scale.astype(np.float32)
        q_bias = np.clip(np.round(bias.astype(np.float64) / bias_scale.astype(np.float64)), -(2**31), 2**31 - 1)
        a = node.attrs
        attrs = {"strides": a["strides"], "pads": a["pads"], "dilations": a["dilations"], "group": a["group"]}
        attrs["kind"] = "gdconv" if a.get("gdconv") else ("depthwise" if a["group"] > 1 else "conv")
        if "pad_value" in a:
            attrs["pad_q"] = [int(np.clip(round(v / x.scale) + x.zero_point, -128, 127)) for v in a["pad_value"]]
        attrs.update(self.clamps(act, out))
        arrays = {"weight": q_weight, "weight_scale": w_scale, "bias": q_bias.astype(np.int32)}
        if act is not None and act.op == "PRelu":
            arrays["slope"] = self.g.constants[act.inputs[1]].astype(np.float32).reshape(-1)
            attrs["activation"] = "prelu"
        self.nodes.append(QNode("conv", node.name, [node.inputs[0]], out_name, attrs, arrays))
        if act is not None:
            self.absorbed.add(id(act))

    def prelu(self, node: Node) -> None:
        self.qtensor(node.inputs[0])
        self.qtensor(node.outputs[0])
        slope = self.g.constants[node.inputs[1]].astype(np.float64).reshape(-1)
        alpha_scale = float(np.float32(max(np.abs(slope).max(), 1e-8) / 127.0))
        alpha = np.clip(np.round(slope / alpha_scale), -127, 127).astype(np.int8)
        attrs = {"alpha_scale": alpha_scale, "alpha_zero_point": 0}
        self.nodes.append(QNode("prelu", node.name, [node.inputs[0]], node.outputs[0], attrs, {"alpha": alpha}))

    def add(self, node: Node) -> None:
        if any(t in self.g.constants for t in node.inputs):
            raise BadInput(f"{self.g.name}: node '{node.name}' adds a constant; only tensor + tensor is quantized")
        act = self.next_activation(node)
        if act is not None and act.op == "PRelu":
            act = None
        out_name = act.outputs[0] if act else node.outputs[0]
        for t in node.inputs:
            self.qtensor(t)
        out = self.qtensor(out_name)
        self.nodes.append(QNode("add", node.name, list(node.inputs[:2]), out_name, self.clamps(act, out)))
        if act is not None:
            self.absorbed.add(id(act))

    def reshape(self, node: Node) -> None:
        x = self.qtensor(node.inputs[0])
        self.tensors[node.outputs[0]] = QTensor(self.g.shapes[node.outputs[0]], x.scale, x.zero_point)
        self.nodes.append(QNode("reshape", node.name, [node.inputs[0]], node.outputs[0]))

    def run(self) -> QGraph:
        for node in self.g.nodes:
            if id(node) in self.absorbed:
                continue
            if node.op == "Conv":
                self.conv(node)
            elif node.op == "PRelu":
                self.prelu(node)
            elif node.op == "Add":
                self.add(node)
            elif node.op in _SHAPE_OPS:
                self.reshape(node)
            else:
                raise BadInput(f"{self.g.name}: node '{node.name}' ({node.op}) cannot be quantized to int8 yet")
        used = {self.g.inputs[0]} | {n.output for n in self.nodes}
        tensors = {k: v for k, v in self.tensors.items() if k in used}
        for node in self.nodes:
            wide = [t for t in node.inputs if tensors[t].dtype == "int16"]
            if wide and node.op != "conv":
                raise BadInput(f"{self.g.name}: node '{node.name}' ({node.op}) cannot take the int16 tensor {wide[0]}")
        return QGraph(self.g.name, self.mode, self.g.inputs[0], list(self.g.outputs), tensors, self.nodes, {})


def quantize(
    graph: Graph, ranges: dict[str, tuple[float, float]], mode: str = "fused", int16: frozenset[str] = frozenset()
) -> QGraph:
    """Quantize a lowered float graph (input = raw pixels) with the given activation ranges.

    `int16` names tensors to keep as int16 activations (TFLite's 16x8 scheme) in fused mode.
    """
    return _Quantizer(graph, ranges, mode, int16).run()


def int16_candidates(qgraph: QGraph) -> set[str]:
    """Tensors that may become int16: conv outputs read only by convs (or graph outputs)."""
    readers: dict[str, list[QNode]] = {}
    for node in qgraph.nodes:
        for t in node.inputs:
            readers.setdefault(t, []).append(node)
    return {
        n.output
        for n in qgraph.nodes
        if n.op == "conv"
        and all(r.op == "conv" for r in readers.get(n.output, []))
        and (readers.get(n.output) or n.output in qgraph.outputs)
    }
