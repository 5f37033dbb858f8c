"""Export a float IR graph as a float32 `.tflite` flatbuffer.

Benchmarks compare our kernels with LiteRT's fp32 kernels, which is only fair if
LiteRT runs exactly our lowered model: same folded weights, same folded
preprocessing, same borders. So the IR is written op for op with TensorFlow's
flatbuffer schema (object API), like `calibration.tflite_export` does for int8.

Layout: 4-D activations are NHWC (the IR is NCHW); other ranks are unchanged. The
input is whatever the IR input expects, transposed to NHWC: for a lowered graph
(preprocessing folded, `meta["input_kind"] == "pixels"`) that is raw RGB pixels
0..255 as float32, i.e. `ir_feed(graph, pixels, pre).transpose(0, 2, 3, 1)`.

TFLite convolutions pad only with SAME/VALID geometry and with zeros; other
paddings become explicit PAD ops, and the folded first conv's per-channel mean
padding becomes PADV2 (one op if all channels share the value, else SPLIT -> PADV2
per channel -> CONCATENATION), so borders match the IR exactly. A Relu/ReLU6 that is
the only consumer of a conv or add is fused into it, as TFLite converters do.
"""

from __future__ import annotations

import math

import numpy as np

from calibration.tflite_export import _nhwc, _schema, _tflite_padding, finish_model
from compiler.errors import BadInput
from compiler.ir import Graph, Node

_NCHW_TO_NHWC = (0, 2, 3, 1)
_NHWC_TO_NCHW = [0, 3, 1, 2]
_RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


class _FloatWriter:
    def __init__(self, graph: Graph) -> None:
        self.schema = _schema()
        self.graph = graph
        self.tensors: list = []
        self.buffers: list = [self.schema.BufferT()]
        self.operators: list = []
        self.opcodes: dict[int, int] = {}
        self.index: dict[str, int] = {}
        self.fused: dict[str, Node] = {}  # producer node name -> the activation fused into it
        self.skipped: set[str] = set()  # activation nodes written as fused activations

    # --- tensors -------------------------------------------------------------------
    def add_tensor(self, name: str, shape: list[int], dtype: int | None = None, data: np.ndarray | None = None) -> int:
        t = self.schema.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        t.type = self.schema.TensorType.FLOAT32 if dtype is None else dtype
        if data is None:
            t.buffer = 0
        else:
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name: str, data: np.ndarray, dtype: int | None = None) -> int:
        if dtype is None:
            data = np.asarray(data, dtype=np.float32)
        return self.add_tensor(name, list(data.shape), dtype, data)

    def int_const(self, name: str, data) -> int:
        return self.const(name, np.asarray(data, dtype=np.int32), self.schema.TensorType.INT32)

    def shape(self, tensor: str) -> tuple[int, ...]:
        if tensor not in self.graph.shapes:
            raise BadInput(f"{self.graph.name}: tensor '{tensor}' has no known shape")
        return tuple(self.graph.shapes[tensor])

    def activation(self, name: str) -> int:
        """The float32 tensor of an IR activation (NHWC if 4-D), created on first use."""
        if name not in self.index:
            self.index[name] = self.add_tensor(name, _nhwc(self.shape(name)))
        return self.index[name]

    def operand(self, name: str, out_shape: tuple[int, ...]) -> int:
        """An activation, or a constant broadcast to the NCHW output shape and laid out like it.

        Broadcasting first keeps NCHW broadcasting rules (a (C,) constant aligns with W, not C).
        """
        g = self.graph
        if name not in g.constants:
            return self.activation(name)
        value = np.broadcast_to(np.asarray(g.constants[name], dtype=np.float32), out_shape)
        if value.ndim == 4:
            value = value.transpose(_NCHW_TO_NHWC)
        return self.const(name, np.ascontiguousarray(value))

    # --- operators -----------------------------------------------------------------
    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        o = self.schema.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs = inputs
        o.outputs = outputs
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.operators.append(o)

    def _fusable(self, node: Node) -> int | None:
        """TFLite's fused-activation code for a Relu/Clip node, or None."""
        act = self.schema.ActivationFunctionType
        if node.op == "Relu":
            return act.RELU
        if node.op == "Clip":
            return {(0.0, math.inf): act.RELU, (0.0, 6.0): act.RELU6, (-1.0, 1.0): act.RELU_N1_TO_1}.get(
                (node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf))
            )
        return None

    def plan_fusion(self) -> None:
        """Fuse a Relu/ReLU6 into the conv or add it is the only consumer of."""
        g = self.graph
        for node in g.nodes:
            if node.op not in ("Conv", "Add") or node.outputs[0] in g.outputs:
                continue
            users = g.consumers(node.outputs[0])
            if len(users) == 1 and self._fusable(users[0]) is not None:
                self.fused[node.name] = users[0]
                self.skipped.add(users[0].name)

    def output_of(self, node: Node) -> tuple[int, int]:
        """(output tensor, fused activation code): a fused activation's output replaces the node's."""
        act = self.fused.get(node.name)
        if act is None:
            return self.activation(node.outputs[0]), self.schema.ActivationFunctionType.NONE
        return self.activation(act.outputs[0]), self._fusable(act)

    def pad(self, name: str, x: int, paddings: np.ndarray, value: float, out_shape: list[int], out: int = -1) -> int:
        """PAD with zeros, or PADV2 with `value` (paddings: NHWC [[begin, end], ...])."""
        s = self.schema
        p = self.int_const(f"{name}/paddings", paddings)
        if out < 0:
            out = self.add_tensor(f"{name}/padded", out_shape)
        if value == 0.0:
            self.op(s.BuiltinOperator.PAD, [x, p], [out], s.BuiltinOptions.PadOptions, s.PadOptionsT())
        else:
            v = self.const(f"{name}/pad_value", np.array([value], dtype=np.float32))
            self.op(s.BuiltinOperator.PADV2, [x, p, v], [out], s.BuiltinOptions.PadV2Options, s.PadV2OptionsT())
        return out

    def channel_pad(self, name: str, x: int, paddings: np.ndarray, values: list[float], in_shape, out_shape) -> int:
        """Pad each channel with its own value: SPLIT, PADV2 per channel, CONCATENATION."""
        s = self.schema
        n, h, w, c = in_shape
        axis = self.int_const(f"{name}/split_axis", 3)
        parts = [self.add_tensor(f"{name}/ch{i}", [n, h, w, 1]) for i in range(c)]
        split = s.SplitOptionsT()
        split.numSplits = c
        self.op(s.BuiltinOperator.SPLIT, [axis, x], parts, s.BuiltinOptions.SplitOptions, split)
        padded = [
            self.pad(f"{name}/ch{i}", part, paddings, float(values[i]), [n, out_shape[1], out_shape[2], 1])
            for i, part in enumerate(parts)
        ]
        out = self.add_tensor(f"{name}/padded", out_shape)
        concat = s.ConcatenationOptionsT()
        concat.axis = 3
        self.op(s.BuiltinOperator.CONCATENATION, padded, [out], s.BuiltinOptions.ConcatenationOptions, concat)
        return out

    # --- IR ops --------------------------------------------------------------------
    def conv(self, node: Node) -> None:
        s = self.schema
        g = self.graph
        a = node.attrs
        if list(a["dilations"]) != [1, 1]:
            raise BadInput(f"{node.name}: dilated convolutions are not exported to TFLite")
        in_shape = _nhwc(self.shape(node.inputs[0]))
        cin = in_shape[3]
        depthwise = a["group"] > 1
        if depthwise and a["group"] != cin:
            raise BadInput(f"{node.name}: grouped (non-depthwise) convolutions are not exported to TFLite")
        x = self.activation(node.inputs[0])
        weight = np.asarray(g.constants[node.inputs[1]], dtype=np.float32)
        cout, _, kh, kw = weight.shape
        pads = list(a["pads"])
        values = [float(v) for v in np.broadcast_to(np.asarray(a.get("pad_value", 0.0), dtype=np.float64), (cin,))]
        padding = _tflite_padding(in_shape[1:3], (kh, kw), a["strides"], pads)
        if any(pads) and (padding is None or any(values)):
            top, left, bottom, right = pads
            paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]])
            out_shape = [in_shape[0], in_shape[1] + top + bottom, in_shape[2] + left + right, cin]
            if len(set(values)) == 1:
                x = self.pad(node.name, x, paddings, values[0], out_shape)
            else:
                x = self.channel_pad(node.name, x, paddings, values, in_shape, out_shape)
            padding = s.Padding.VALID
        # depthwise [1, kh, kw, Cout], else OHWI [Cout, kh, kw, Cin]
        filt = weight.transpose(1, 2, 3, 0) if depthwise else weight.transpose(0, 2, 3, 1)
        w = self.const(f"{node.name}/weight", np.ascontiguousarray(filt))
        bias = g.constants[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else np.zeros(cout)
        b = self.const(f"{node.name}/bias", np.asarray(bias, dtype=np.float32).reshape(cout))
        y, act = self.output_of(node)
        if depthwise:
            opts = s.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = cout // cin
            code, kind = s.BuiltinOperator.DEPTHWISE_CONV_2D, s.BuiltinOptions.DepthwiseConv2DOptions
        else:
            opts = s.Conv2DOptionsT()
            code, kind = s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions
        opts.padding = padding
        opts.strideH, opts.strideW = a["strides"]
        opts.dilationHFactor = opts.dilationWFactor = 1
        opts.fusedActivationFunction = act
        self.op(code, [x, w, b], [y], kind, opts)

    def prelu(self, node: Node) -> None:
        shape = self.shape(node.inputs[0])
        if len(shape) not in (2, 4):
            raise BadInput(f"{node.name}: PReLU of a rank-{len(shape)} tensor is not exported to TFLite")
        channels = shape[1]
        slope = np.asarray(self.graph.constants[node.inputs[1]], dtype=np.float32)
        if slope.size not in (1, channels):
            raise BadInput(f"{node.name}: PReLU slope of shape {slope.shape} is not per-channel")
        alpha = np.broadcast_to(slope.reshape(-1), (channels,))
        alpha = alpha.reshape(1, 1, channels) if len(shape) == 4 else alpha
        al = self.const(f"{node.name}/alpha", np.ascontiguousarray(alpha))
        x = self.activation(node.inputs[0])
        self.op(self.schema.BuiltinOperator.PRELU, [x, al], [self.activation(node.outputs[0])])

    def relu(self, node: Node) -> None:
        x = self.activation(node.inputs[0])
        self.op(self.schema.BuiltinOperator.RELU, [x], [self.activation(node.outputs[0])])

    def clip(self, node: Node) -> None:
        """RELU/RELU6/RELU_N1_TO_1 when the range is one of theirs, else MAXIMUM then MINIMUM."""
        s = self.schema
        lo, hi = node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf)
        code = {
            (0.0, math.inf): s.BuiltinOperator.RELU,
            (0.0, 6.0): s.BuiltinOperator.RELU6,
            (-1.0, 1.0): s.BuiltinOperator.RELU_N1_TO_1,
        }.get((lo, hi))
        x = self.activation(node.inputs[0])
        y = self.activation(node.outputs[0])
        if code is not None:
            self.op(code, [x], [y])
            return
        steps = [(s.BuiltinOperator.MAXIMUM, lo, -math.inf), (s.BuiltinOperator.MINIMUM, hi, math.inf)]
        steps = [(c, v) for c, v, unbounded in steps if v != unbounded]
        for i, (c, v) in enumerate(steps):
            bound = self.const(f"{node.name}/bound{i}", np.array([v], dtype=np.float32))
            out = (
                y
                if i == len(steps) - 1
                else self.add_tensor(f"{node.name}/step{i}", _nhwc(self.shape(node.outputs[0])))
            )
            self.op(c, [x, bound], [out])
            x = out
        if not steps:
            self._reshape_to(node, x, y)

    def _binary(self, node: Node, code: int, options_type: int, options) -> None:
        out_shape = self.shape(node.outputs[0])
        ranks = {len(self.shape(t)) for t in node.inputs if t not in self.graph.constants}
        if ranks != {len(out_shape)}:
            raise BadInput(f"{node.name}: {node.op} of tensors of different ranks is not exported to TFLite")
        a = self.operand(node.inputs[0], out_shape)
        b = self.operand(node.inputs[1], out_shape)
        y, act = self.output_of(node)
        options.fusedActivationFunction = act
        self.op(code, [a, b], [y], options_type, options)

    def add(self, node: Node) -> None:
        s = self.schema
        self._binary(node, s.BuiltinOperator.ADD, s.BuiltinOptions.AddOptions, s.AddOptionsT())

    def sub(self, node: Node) -> None:
        s = self.schema
        self._binary(node, s.BuiltinOperator.SUB, s.BuiltinOptions.SubOptions, s.SubOptionsT())

    def mul(self, node: Node) -> None:
        s = self.schema
        self._binary(node, s.BuiltinOperator.MUL, s.BuiltinOptions.MulOptions, s.MulOptionsT())

    def _reshape_to(self, node: Node, x: int, y: int) -> None:
        s = self.schema
        shape = self.tensors[y].shape
        new_shape = self.int_const(f"{node.name}/shape", shape)
        opts = s.ReshapeOptionsT()
        opts.newShape = list(shape)
        self.op(s.BuiltinOperator.RESHAPE, [x, new_shape], [y], s.BuiltinOptions.ReshapeOptions, opts)

    def _transpose(self, name: str, x: int, perm: list[int], out: int) -> int:
        s = self.schema
        p = self.int_const(f"{name}/perm", perm)
        self.op(s.BuiltinOperator.TRANSPOSE, [x, p], [out], s.BuiltinOptions.TransposeOptions, s.TransposeOptionsT())
        return out

    def reshape(self, node: Node) -> None:
        """Reshape/Flatten/Squeeze/Unsqueeze: NCHW element order, so NHWC maps with H*W > 1 and
        C > 1 go through a TRANSPOSE to NCHW first (and back if the result is such a map)."""
        in_shape, out_shape = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        x = self.activation(node.inputs[0])
        if _reordered(in_shape):
            nchw_in = self.add_tensor(f"{node.name}/nchw_in", list(in_shape))
            x = self._transpose(f"{node.name}/to_nchw", x, _NHWC_TO_NCHW, nchw_in)
        y = self.activation(node.outputs[0])
        if _reordered(out_shape):
            nchw = self.add_tensor(f"{node.name}/nchw_out", list(out_shape))
            self._reshape_to(node, x, nchw)
            self._transpose(f"{node.name}/to_nhwc", nchw, list(_NCHW_TO_NHWC), y)
        else:
            self._reshape_to(node, x, y)

    def gemm(self, node: Node) -> None:
        """FULLY_CONNECTED: alpha and beta are folded into the weights and bias."""
        g = self.graph
        a = node.attrs
        if a.get("transA") or len(self.shape(node.inputs[0])) != 2 or node.inputs[1] not in g.constants:
            raise BadInput(f"{node.name}: only Gemm of a 2-D activation by constant weights is exported to TFLite")
        b = np.asarray(g.constants[node.inputs[1]], dtype=np.float64)
        weight = (b if a.get("transB") else b.T) * a.get("alpha", 1.0)  # [out, in]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            if node.inputs[2] not in g.constants or g.constants[node.inputs[2]].size not in (1, weight.shape[0]):
                raise BadInput(f"{node.name}: Gemm's C must be a constant per-output bias to export to TFLite")
            c = np.asarray(g.constants[node.inputs[2]], dtype=np.float64).reshape(-1)
            bias = np.broadcast_to(c, (weight.shape[0],)) * a.get("beta", 1.0)
        self._fully_connected(node, weight, bias)

    def matmul(self, node: Node) -> None:
        g = self.graph
        if len(self.shape(node.inputs[0])) != 2 or node.inputs[1] not in g.constants:
            raise BadInput(f"{node.name}: only MatMul of a 2-D activation by constant weights is exported to TFLite")
        self._fully_connected(node, np.asarray(g.constants[node.inputs[1]]).T, None)

    def _fully_connected(self, node: Node, weight: np.ndarray, bias: np.ndarray | None) -> None:
        s = self.schema
        x = self.activation(node.inputs[0])
        w = self.const(f"{node.name}/weight", np.ascontiguousarray(weight, dtype=np.float32))
        b = -1 if bias is None else self.const(f"{node.name}/bias", np.asarray(bias, dtype=np.float32))
        opts = s.FullyConnectedOptionsT()
        opts.fusedActivationFunction = s.ActivationFunctionType.NONE
        opts.keepNumDims = False
        y = self.activation(node.outputs[0])
        self.op(s.BuiltinOperator.FULLY_CONNECTED, [x, w, b], [y], s.BuiltinOptions.FullyConnectedOptions, opts)

    def global_average_pool(self, node: Node) -> None:
        s = self.schema
        x = self.activation(node.inputs[0])
        axes = self.int_const(f"{node.name}/axes", [1, 2])
        opts = s.ReducerOptionsT()
        opts.keepDims = True
        y = self.activation(node.outputs[0])
        self.op(s.BuiltinOperator.MEAN, [x, axes], [y], s.BuiltinOptions.ReducerOptions, opts)

    def pad_node(self, node: Node) -> None:
        pads = list(node.attrs["pads"])
        rank = len(pads) // 2
        if any(p < 0 for p in pads):
            raise BadInput(f"{node.name}: negative padding (cropping) is not exported to TFLite")
        paddings = np.array([[pads[i], pads[i + rank]] for i in range(rank)])
        if rank == 4:
            paddings = paddings[list(_NCHW_TO_NHWC)]
        x = self.activation(node.inputs[0])
        y = self.activation(node.outputs[0])
        self.pad(node.name, x, paddings, float(node.attrs.get("value", 0.0)), [], out=y)

    def build(self) -> bytes:
        g = self.graph
        if len(g.inputs) != 1:
            raise BadInput(f"{g.name}: only single-input graphs are exported to TFLite")
        self.activation(g.inputs[0])
        self.plan_fusion()
        handlers = {
            "Conv": self.conv,
            "PRelu": self.prelu,
            "Relu": self.relu,
            "Clip": self.clip,
            "Add": self.add,
            "Sub": self.sub,
            "Mul": self.mul,
            "Gemm": self.gemm,
            "MatMul": self.matmul,
            "GlobalAveragePool": self.global_average_pool,
            "Pad": self.pad_node,
            **dict.fromkeys(_RESHAPES, self.reshape),
        }
        for node in g.nodes:
            if node.name in self.skipped:
                continue
            handler = handlers.get(node.op)
            if handler is None:
                raise BadInput(f"{node.name}: op {node.op} is not supported by the float TFLite export")
            handler(node)
        inputs, outputs = [self.index[g.inputs[0]]], [self.activation(o) for o in g.outputs]
        kind = g.meta.get("input_kind", "normalized")
        return finish_model(self, g.name, inputs, outputs, f"mfnc float32 export of {g.name} (NHWC input: {kind})")


def _reordered(shape: tuple[int, ...]) -> bool:
    """True if the NHWC and NCHW element orders of this shape differ."""
    return len(shape) == 4 and shape[1] > 1 and shape[2] * shape[3] > 1


def export_float_tflite(graph: Graph) -> bytes:
    """The float32 .tflite flatbuffer of a float IR graph (NHWC input and activations)."""
    return _FloatWriter(graph).build()
