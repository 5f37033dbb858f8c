"""Export a `tflite`-mode QGraph as an int8 `.tflite` flatbuffer.

The file is the outside proof that our integer arithmetic is right: LiteRT's
reference kernels and TFLite Micro must produce exactly the golden simulator's
integers on it. It is written with TensorFlow's own flatbuffer schema (object API).

TFLite convolutions only pad with SAME/VALID geometry and with the zero point; other
paddings become explicit PAD ops, and the first conv's per-channel mean padding (a
zero in normalised space) becomes SPLIT -> PADV2 per channel -> CONCATENATION.
"""

from __future__ import annotations

import numpy as np

from calibration.qgraph import QGraph, QNode, QTensor
from compiler.errors import BadInput


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


class _Writer:
    def __init__(self, graph: QGraph) -> None:
        self.schema = _schema()
        self.graph = graph
        self.tensors: list = []
        self.buffers: list = [self.schema.BufferT()]
        self.operators: list = []
        self.opcodes: dict[int, int] = {}
        self.index: dict[str, int] = {}

    # --- tensors -------------------------------------------------------------------
    def _quant(self, scales, zero_points, axis: int = 0):
        q = self.schema.QuantizationParametersT()
        q.scale = [float(s) for s in np.atleast_1d(np.asarray(scales, dtype=np.float32))]
        q.zeroPoint = [int(z) for z in np.atleast_1d(zero_points)]
        q.quantizedDimension = axis
        return q

    def add_tensor(self, name: str, shape: list[int], dtype: int, quant=None, data: np.ndarray | None = None) -> int:
        t = self.schema.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        t.type = dtype
        t.quantization = quant
        if data is None:
            t.buffer = 0
        else:
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def activation(self, name: str, qt: QTensor, nhwc_shape: list[int] | None = None) -> int:
        if name not in self.index:
            shape = nhwc_shape or _nhwc(qt.shape)
            self.index[name] = self.add_tensor(
                name, shape, self.schema.TensorType.INT8, self._quant(qt.scale, qt.zero_point)
            )
        return self.index[name]

    def const(self, name: str, data: np.ndarray, dtype: int, quant=None) -> int:
        return self.add_tensor(name, list(data.shape), dtype, quant, data)

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

    def pad(self, name: str, x: int, qt: QTensor, pads: list[int], out_shape: list[int]) -> int:
        """Zero-point PAD (a real zero) over H and W; pads are [top, left, bottom, right]."""
        s = self.schema
        top, left, bottom, right = pads
        paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
        p = self.const(f"{name}/paddings", paddings, s.TensorType.INT32)
        out = self.add_tensor(f"{name}/padded", out_shape, s.TensorType.INT8, self._quant(qt.scale, qt.zero_point))
        self.op(s.BuiltinOperator.PAD, [x, p], [out], s.BuiltinOptions.PadOptions, s.PadOptionsT())
        return out

    def channel_pad(
        self, name: str, x: int, qt: QTensor, pads: list[int], values: list[int], in_shape, out_shape
    ) -> int:
        """Pad each channel with its own value: SPLIT, PADV2 per channel, CONCATENATION."""
        s = self.schema
        n, h, w, c = in_shape
        axis = self.const(f"{name}/split_axis", np.array(3, dtype=np.int32), s.TensorType.INT32)
        parts = [
            self.add_tensor(f"{name}/ch{i}", [n, h, w, 1], s.TensorType.INT8, self._quant(qt.scale, qt.zero_point))
            for i in range(c)
        ]
        split = s.SplitOptionsT()
        split.numSplits = c
        self.op(s.BuiltinOperator.SPLIT, [axis, x], parts, s.BuiltinOptions.SplitOptions, split)
        top, left, bottom, right = pads
        paddings = self.const(
            f"{name}/paddings",
            np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32),
            s.TensorType.INT32,
        )
        padded = []
        for i, part in enumerate(parts):
            value = self.const(
                f"{name}/pad_value{i}",
                np.array([values[i]], dtype=np.int8),
                s.TensorType.INT8,
                self._quant(qt.scale, qt.zero_point),
            )
            out = self.add_tensor(
                f"{name}/ch{i}_padded",
                [n, out_shape[1], out_shape[2], 1],
                s.TensorType.INT8,
                self._quant(qt.scale, qt.zero_point),
            )
            self.op(
                s.BuiltinOperator.PADV2,
                [part, paddings, value],
                [out],
                s.BuiltinOptions.PadV2Options,
                s.PadV2OptionsT(),
            )
            padded.append(out)
        out = self.add_tensor(f"{name}/padded", out_shape, s.TensorType.INT8, self._quant(qt.scale, qt.zero_point))
        concat = s.ConcatenationOptionsT()
        concat.axis = 3
        self.op(s.BuiltinOperator.CONCATENATION, padded, [out], s.BuiltinOptions.ConcatenationOptions, concat)
        return out

    def conv(self, node: QNode) -> None:
        s = self.schema
        g = self.graph
        xq, yq = g.tensors[node.inputs[0]], g.tensors[node.output]
        a = node.attrs
        if a["dilations"] != [1, 1]:
            raise BadInput(f"{node.name}: dilated convolutions are not exported to TFLite")
        x = self.activation(node.inputs[0], xq)
        in_shape = _nhwc(xq.shape)
        weight = node.arrays["weight"]
        cout, _, kh, kw = weight.shape
        padding = _tflite_padding(in_shape[1:3], (kh, kw), a["strides"], a["pads"])
        if "pad_q" in a or padding is None:
            out_shape = [
                in_shape[0],
                in_shape[1] + a["pads"][0] + a["pads"][2],
                in_shape[2] + a["pads"][1] + a["pads"][3],
                in_shape[3],
            ]
            if "pad_q" in a and any(v != xq.zero_point for v in a["pad_q"]):
                x = self.channel_pad(node.name, x, xq, a["pads"], a["pad_q"], in_shape, out_shape)
            else:
                x = self.pad(node.name, x, xq, a["pads"], out_shape)
            padding = s.Padding.VALID
        depthwise = a["group"] > 1
        if depthwise and a["group"] != xq.shape[1]:
            raise BadInput(f"{node.name}: grouped (non-depthwise) convolutions are not exported to TFLite")
        w_scale = node.arrays["weight_scale"]
        if depthwise:
            filt = weight.transpose(1, 2, 3, 0)  # [1, kh, kw, Cout]
            w_quant = self._quant(w_scale, np.zeros(cout, dtype=int), axis=3)
        else:
            filt = weight.transpose(0, 2, 3, 1)  # [Cout, kh, kw, Cin]
            w_quant = self._quant(w_scale, np.zeros(cout, dtype=int), axis=0)
        w = self.const(f"{node.name}/weight", filt, s.TensorType.INT8, w_quant)
        bias_scale = (np.float32(xq.scale) * w_scale.astype(np.float32)).astype(np.float32)
        b = self.const(
            f"{node.name}/bias",
            node.arrays["bias"].astype(np.int32),
            s.TensorType.INT32,
            self._quant(bias_scale, np.zeros(cout, dtype=int)),
        )
        y = self.activation(node.output, yq)
        act = {"relu": s.ActivationFunctionType.RELU, "relu6": s.ActivationFunctionType.RELU6}.get(
            a.get("activation"), s.ActivationFunctionType.NONE
        )
        if a.get("activation") == "prelu":
            raise BadInput(f"{node.name}: fused PReLU exists only in fused mode; export the tflite mode")
        if depthwise:
            opts = s.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = cout // xq.shape[1]
            code, kind = s.BuiltinOperator.DEPTHWISE_CONV_2D, s.BuiltinOptions.DepthwiseConv2DOptions
        else:
            opts = s.Conv2DOptionsT()
            code, kind = s.BuiltinOperator.CONV_2D, s.BuiltinOptions.Conv2DOptions
        opts.padding = padding
        opts.strideH, opts.strideW = a["strides"]
        opts.dilationHFactor = opts.dilationWFactor = 1
        opts.fusedActivationFunction = act
        self.op(code, [x, w, b], [y], kind, opts)

    def prelu(self, node: QNode) -> None:
        s = self.schema
        g = self.graph
        x = self.activation(node.inputs[0], g.tensors[node.inputs[0]])
        alpha = node.arrays["alpha"].reshape(1, 1, -1)
        al = self.const(
            f"{node.name}/alpha",
            alpha,
            s.TensorType.INT8,
            self._quant(node.attrs["alpha_scale"], node.attrs["alpha_zero_point"]),
        )
        y = self.activation(node.output, g.tensors[node.output])
        self.op(s.BuiltinOperator.PRELU, [x, al], [y])

    def add(self, node: QNode) -> None:
        s = self.schema
        g = self.graph
        a = self.activation(node.inputs[0], g.tensors[node.inputs[0]])
        b = self.activation(node.inputs[1], g.tensors[node.inputs[1]])
        y = self.activation(node.output, g.tensors[node.output])
        opts = s.AddOptionsT()
        opts.fusedActivationFunction = {
            "relu": s.ActivationFunctionType.RELU,
            "relu6": s.ActivationFunctionType.RELU6,
        }.get(node.attrs.get("activation"), s.ActivationFunctionType.NONE)
        self.op(s.BuiltinOperator.ADD, [a, b], [y], s.BuiltinOptions.AddOptions, opts)

    def reshape(self, node: QNode) -> None:
        s = self.schema
        g = self.graph
        xq, yq = g.tensors[node.inputs[0]], g.tensors[node.output]
        if len(xq.shape) == 4 and xq.shape[2:] != (1, 1) and tuple(yq.shape) != tuple(xq.shape):
            raise BadInput(f"{node.name}: flattening a spatial map changes element order in NHWC; not exported")
        x = self.activation(node.inputs[0], xq)
        shape = _nhwc(yq.shape)
        y = self.activation(node.output, yq, shape)
        new_shape = self.const(f"{node.name}/shape", np.array(shape, dtype=np.int32), s.TensorType.INT32)
        opts = s.ReshapeOptionsT()
        opts.newShape = shape
        self.op(s.BuiltinOperator.RESHAPE, [x, new_shape], [y], s.BuiltinOptions.ReshapeOptions, opts)

    def build(self) -> bytes:
        g = self.graph
        if g.mode != "tflite":
            raise BadInput(f"{g.name}: only a tflite-mode quantized model can be exported to .tflite (got {g.mode})")
        self.activation(g.input, g.tensors[g.input])
        for node in g.nodes:
            getattr(self, node.op)(node)
        inputs, outputs = [self.index[g.input]], [self.index[o] for o in g.outputs]
        return finish_model(self, g.name, inputs, outputs, f"mfnc int8 export of {g.name}")


def finish_model(writer, name: str, inputs: list[int], outputs: list[int], description: str) -> bytes:
    """One subgraph of a writer's tensors, operators and buffers, packed as a .tflite file
    (shared by the int8 and the float writer)."""
    import flatbuffers

    s = writer.schema
    sub = s.SubGraphT()
    sub.tensors = writer.tensors
    sub.inputs = inputs
    sub.outputs = outputs
    sub.operators = writer.operators
    sub.name = name
    model = s.ModelT()
    model.version = 3
    model.description = description
    model.subgraphs = [sub]
    model.buffers = writer.buffers
    codes = []
    for code, _ in sorted(writer.opcodes.items(), key=lambda kv: kv[1]):
        oc = s.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        codes.append(oc)
    model.operatorCodes = codes
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _nhwc(shape: tuple[int, ...]) -> list[int]:
    return [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else list(shape)


def _tflite_padding(in_hw, kernel, strides, pads) -> int | None:
    """SAME or VALID if TFLite's geometry equals these explicit pads, else None."""
    s = _schema()
    if not any(pads):
        return s.Padding.VALID
    begin, end = [], []
    for size, k, st in zip(in_hw, kernel, strides, strict=True):
        out = -(-size // st)
        total = max((out - 1) * st + k - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return s.Padding.SAME if [begin[0], begin[1], end[0], end[1]] == list(pads) else None


def export_tflite(graph: QGraph) -> bytes:
    """The int8 .tflite flatbuffer of a tflite-mode QGraph."""
    return _Writer(graph).build()
