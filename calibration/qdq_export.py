"""Export a QGraph as a QDQ ONNX model, for comparisons with onnxruntime.

Every activation passes through QuantizeLinear/DequantizeLinear with our scales and
zero points, weights and biases are our integers behind DequantizeLinear, and the ops
in between run in float. onnxruntime then simulates our quantization with its own
rounding: close to the golden simulator (not bit-exact: float accumulation, and
QuantizeLinear rounds half to even), which is what a side-by-side comparison needs.
The input is raw RGB pixels (float32 NCHW, 0-255), like the device's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.qgraph import QGraph, QNode, QTensor

OPSET_INT8 = 19
OPSET_INT16 = 21  # int16 QuantizeLinear/DequantizeLinear need opset 21


class _Builder:
    def __init__(self, graph: QGraph) -> None:
        self.g = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}__{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def qdq(self, x: str, t: QTensor, base: str) -> str:
        """Round x to the tensor's integer grid and back (QuantizeLinear clamps to its type)."""
        dtype = np.int16 if t.dtype == "int16" else np.int8
        scale = self.const(f"{base}_scale", np.float32(t.scale))
        zero = self.const(f"{base}_zp", dtype(t.zero_point))
        q = self.node("QuantizeLinear", [x, scale, zero], f"{base}_q")
        return self.node("DequantizeLinear", [q, scale, zero], f"{base}_dq")

    def conv(self, node: QNode, x: str) -> str:
        g, a = self.g, node.attrs
        xt, yt = g.tensors[node.inputs[0]], g.tensors[node.output]
        weight_scale = node.arrays["weight_scale"].astype(np.float32)
        w = self.node(
            "DequantizeLinear",
            [
                self.const("w", node.arrays["weight"]),
                self.const("w_scale", weight_scale),
                self.const("w_zp", np.zeros(weight_scale.size, np.int8)),
            ],
            "weight",
            axis=0,
        )
        bias_scale = (np.float32(xt.scale) * weight_scale).astype(np.float32)
        b = self.node(
            "DequantizeLinear",
            [
                self.const("b", node.arrays["bias"].astype(np.int32)),
                self.const("b_scale", bias_scale),
                self.const("b_zp", np.zeros(bias_scale.size, np.int32)),
            ],
            "bias",
            axis=0,
        )
        pads = list(a["pads"])
        if "pad_q" in a:  # border = a per-channel value: shift it to zero, pad, shift back
            centre = ((np.asarray(a["pad_q"]) - xt.zero_point) * np.float32(xt.scale)).astype(np.float32)
            centre = self.const("pad_centre", centre.reshape(1, -1, 1, 1))
            shifted = self.node("Sub", [x, centre], "centred")
            onnx_pads = self.const("pads", np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64))
            padded = self.node("Pad", [shifted, onnx_pads], "padded", mode="constant")
            x = self.node("Add", [padded, centre], "uncentred")
            pads = [0, 0, 0, 0]
        y = self.node(
            "Conv", [x, w, b], node.name, group=a["group"], strides=a["strides"], pads=pads, dilations=a["dilations"]
        )
        if "slope" in node.arrays:
            slope = self.const("slope", node.arrays["slope"].astype(np.float32).reshape(-1, 1, 1))
            y = self.node("PRelu", [y, slope], f"{node.name}_prelu")
        y = self.clamp(y, node, yt)
        return self.qdq(y, yt, node.name)

    def clamp(self, y: str, node: QNode, t: QTensor) -> str:
        if "act_min" not in node.attrs and "act_max" not in node.attrs:
            return y
        lo, hi = (-32768, 32767) if t.dtype == "int16" else (-128, 127)
        low = np.float32((node.attrs.get("act_min", lo) - t.zero_point) * np.float32(t.scale))
        high = np.float32((node.attrs.get("act_max", hi) - t.zero_point) * np.float32(t.scale))
        return self.node("Clip", [y, self.const("lo", low), self.const("hi", high)], f"{node.name}_clip")

    def prelu(self, node: QNode, x: str) -> str:
        alpha = node.arrays["alpha"].astype(np.float32) - node.attrs["alpha_zero_point"]
        slope = self.const("alpha", (alpha * np.float32(node.attrs["alpha_scale"])).reshape(-1, 1, 1))
        return self.qdq(self.node("PRelu", [x, slope], node.name), self.g.tensors[node.output], node.name)

    def add(self, node: QNode, a: str, b: str) -> str:
        y = self.clamp(self.node("Add", [a, b], node.name), node, self.g.tensors[node.output])
        return self.qdq(y, self.g.tensors[node.output], node.name)

    def reshape(self, node: QNode, x: str) -> str:
        shape = self.const("shape", np.array([1, *self.g.tensors[node.output].shape[1:]], np.int64))
        return self.node("Reshape", [x, shape], node.name)

    def build(self) -> onnx.ModelProto:
        g = self.g
        _, c, h, w = g.tensors[g.input].shape
        env = {g.input: self.qdq("pixels", g.tensors[g.input], "input")}
        for node in g.nodes:
            args = [env[t] for t in node.inputs]
            env[node.output] = getattr(self, node.op)(node, *args)
        out_shape = [1, *g.tensors[g.outputs[0]].shape[1:]]
        self.nodes.append(helper.make_node("Identity", [env[g.outputs[0]]], ["embedding"], name="embedding"))
        graph = helper.make_graph(
            self.nodes,
            f"{g.name}_qdq",
            [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, c, h, w])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        opset = OPSET_INT16 if any(t.dtype == "int16" for t in g.tensors.values()) else OPSET_INT8
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mfnc")
        model.ir_version = 10
        onnx.checker.check_model(model)
        return model


def export_qdq(graph: QGraph) -> onnx.ModelProto:
    """The QDQ ONNX model of a quantized graph (input: float RGB pixels NCHW)."""
    return _Builder(graph).build()
