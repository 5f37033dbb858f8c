"""Relax modules built directly from our IRs: the integer graph (bit-exact with the
golden simulator) and the float graph (for comparison).

TVM's own importers cannot give us real int8: from ONNX QDQ or TFLite they
dequantize and compute in float, and they reject int8 PReLU (DESIGN section 7). So we
write the Relax graph ourselves, op by op, from the QGraph, with exactly the integer
arithmetic of `calibration.golden`:

- activations are NHWC (the device's layout: the model takes uint8 HWC pixels
  [N, H, W, 3] and returns its output flattened in NHWC order, as the C runtime does);
- a convolution pads its raw int8 input explicitly with the input zero point (or, for
  the first conv, the per-channel pad value `pad_q`), runs an int8 x int8 conv2d
  accumulating in int32 (int16 x int8 in int64 for 16x8 layers) and folds the input
  zero point into the bias: conv(x - zp) = conv(x) - zp * sum(w), exact in integers;
- the epilogue (bias, TFLite's requantization, fused PReLU, zero point, clamps, cast)
  is one elementwise TE compute per conv (`tvm_qops`): MultiplyByQuantizedMultiplier
  in int64 arithmetic equal to the golden's for every input;
- add: TFLite's three multipliers on inputs shifted left by 20 bits, also one TE compute.

The convolution itself stays a Relax `nn.conv2d`, so TVM's own pipeline legalizes it,
FuseOps/FuseTIR fuse each conv with its epilogue into one kernel (the epilogue reads
its per-channel constants as a broadcast), and MetaSchedule can tune those kernels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from calibration.qgraph import QGraph, QNode
from calibration.requant import (
    ADD_LEFT_SHIFT,
    add_multipliers,
    conv_multipliers,
    prelu_multipliers,
    prelu_negative_multipliers,
)
from compiler.backends import tvm_qops as qops
from compiler.errors import BadInput
from compiler.ir import Graph, Node

LIMITS = {"int8": (-128, 127), "int16": (-32768, 32767)}


@dataclass
class Value:
    """A tensor while building: its Relax expression and how it is stored.

    `nhwc` is True for 4-D tensors (semantically NCHW, stored NHWC); other tensors
    (e.g. [N, C] embeddings) are stored in their own shape.
    """

    expr: relax.Expr
    nhwc: bool


def _const(value, dtype: str) -> relax.Constant:
    # relax.const narrows int64/float64 numpy arrays to int32/float32 unless told the dtype.
    return relax.const(np.asarray(value).astype(dtype), dtype)


def _name(text: str) -> str:
    return re.sub(r"\W", "_", text).strip("_") or "t"


class _Builder:
    """Shared plumbing of the two builders: input, layouts, reshapes and the output."""

    def __init__(self, name: str) -> None:
        self.bb = relax.BlockBuilder()
        self.name = name
        self.env: dict[str, Value] = {}

    def emit(self, expr: relax.Expr, hint: str = "") -> relax.Expr:
        return self.bb.emit(expr, _name(hint)) if hint else self.bb.emit(expr)

    def shape(self, expr: relax.Expr) -> list[int]:
        return [int(d) for d in expr.ty.shape]

    def to_plain(self, v: Value) -> relax.Expr:
        """The tensor in its semantic (NCHW) shape."""
        if not v.nhwc:
            return v.expr
        n, h, w, c = self.shape(v.expr)
        if h == 1 and w == 1:
            return self.emit(relax.op.reshape(v.expr, (n, c, 1, 1)))
        return self.emit(relax.op.permute_dims(v.expr, [0, 3, 1, 2]))

    def reshape(self, v: Value, shape: tuple[int, ...], hint: str) -> Value:
        """Reshape with NCHW semantics (what the IRs mean), keeping 4-D results NHWC.

        `shape` is the IR's shape; its batch dimension is replaced by the module's.
        """
        plain = self.to_plain(v)
        shape = (self.shape(plain)[0], *(int(d) for d in shape[1:]))
        out = self.emit(relax.op.reshape(plain, shape), hint)
        if len(shape) != 4:
            return Value(out, False)
        n, c, h, w = shape
        if h == 1 and w == 1:
            return Value(self.emit(relax.op.reshape(out, (n, 1, 1, c))), True)
        return Value(self.emit(relax.op.permute_dims(out, [0, 2, 3, 1])), True)

    def device_output(self, v: Value) -> relax.Expr:
        """Flattened in the device's order (NHWC for 4-D tensors)."""
        shape = self.shape(v.expr)
        return self.emit(relax.op.reshape(v.expr, (shape[0], int(np.prod(shape[1:])))))

    def pad(self, x: relax.Expr, pads: list[int], values: list[int] | list[float], dtype: str) -> relax.Expr:
        """Pad H and W of an NHWC tensor with one value per channel."""
        top, left, bottom, right = pads
        if not any(pads):
            return x
        if len(set(values)) == 1:
            return self.emit(relax.op.nn.pad(x, [0, 0, top, bottom, left, right, 0, 0], pad_value=float(values[0])))
        _, h, w, _ = self.shape(x)
        padded = self.emit(relax.op.nn.pad(x, [0, 0, top, bottom, left, right, 0, 0], pad_value=0.0))
        border = np.ones((1, h + top + bottom, w + left + right, 1), dtype=bool)
        border[:, top : top + h, left : left + w, :] = False
        return self.emit(relax.op.where(_const(border, "bool"), _const(values, dtype), padded))

    def finish(self, outputs: list[Value]) -> relax.Expr:
        flat = [self.device_output(v) for v in outputs]
        return flat[0] if len(flat) == 1 else relax.Tuple(flat)


# ---------------------------------------------------------------- integer graph


def _i64(value) -> relax.Constant:
    return _const(value, "int64")


class _IntBuilder(_Builder):
    def __init__(self, graph: QGraph) -> None:
        super().__init__(graph.name)
        self.g = graph

    def limits(self, node: QNode) -> tuple[int, int, int, str]:
        """(zero point, clamp low, clamp high, dtype) of a node's output."""
        out_t = self.g.tensors[node.output]
        lo, hi = LIMITS[out_t.dtype]
        return out_t.zero_point, int(node.attrs.get("act_min", lo)), int(node.attrs.get("act_max", hi)), out_t.dtype

    def conv(self, node: QNode, x: Value) -> Value:
        a = node.attrs
        in_t = self.g.tensors[node.inputs[0]]
        wide = in_t.dtype == "int16"
        weight = node.arrays["weight"].astype(np.int64)  # OIHW
        pad_values = [int(v) for v in a["pad_q"]] if "pad_q" in a else [in_t.zero_point]
        xp = self.pad(x.expr, list(a["pads"]), pad_values, in_t.dtype)
        hwio = _const(weight.transpose(2, 3, 1, 0), "int8")  # 16x8 layers: int16 data, int8 weights
        conv = self.emit(
            relax.op.nn.conv2d(
                xp,
                hwio,
                strides=list(a["strides"]),
                padding=[0, 0, 0, 0],
                dilation=list(a["dilations"]),
                groups=int(a["group"]),
                data_layout="NHWC",
                kernel_layout="HWIO",
                out_dtype="int64" if wide else "int32",
            ),
            node.name + "_acc",
        )
        # conv(x - zp) == conv(x) - zp * sum(w): the padding already holds zp (or pad_q).
        table = qops.Table()
        table.add({"bias": node.arrays["bias"].astype(np.int64) - in_t.zero_point * weight.sum(axis=(1, 2, 3))})
        rows = qops.q15_rows if wide else qops.q31_rows
        table.add(rows("pos_", *conv_multipliers(self.g, node)))
        prelu = "slope" in node.arrays
        if prelu:
            neg_mult, neg_shift, sign = prelu_negative_multipliers(self.g, node)
            table.add(rows("neg_", neg_mult, neg_shift))
            table.add({"sign": sign})
        epilogue = qops.ConvEpilogue(table, wide, prelu, *self.limits(node))
        params = [_i64(p) for p in table.arrays()]
        out = self.bb.emit_te(epilogue, conv, *params, primfunc_name_hint="requant")
        return Value(out, True)

    def prelu(self, node: QNode, x: Value) -> Value:
        """tflite mode PRELU: its own requantization, per-tensor int8 slopes."""
        m1, s1, m2, s2 = prelu_multipliers(self.g, node)
        table = qops.Table()
        table.add(qops.q31_rows("pos_", np.array([m1]), np.array([s1])))
        table.add(qops.q31_rows("neg_", np.array([m2]), np.array([s2])))
        table.add({"alpha": node.arrays["alpha"].astype(np.int64).reshape(-1) - int(node.attrs["alpha_zero_point"])})
        zp_in = self.g.tensors[node.inputs[0]].zero_point
        op = qops.PreluOp(table, zp_in, self.g.tensors[node.output].zero_point)
        params = [_i64(p) for p in table.arrays()]
        out = self.bb.emit_te(op, x.expr, *params, primfunc_name_hint="qprelu")
        return Value(out, x.nhwc)

    def add(self, node: QNode, a: Value, b: Value) -> Value:
        if a.nhwc != b.nhwc:
            raise BadInput(f"{self.g.name}: add '{node.name}' of tensors of different ranks")
        (m1, s1), (m2, s2), (mo, so) = add_multipliers(self.g, node)
        zp, lo, hi, _ = self.limits(node)
        op = qops.AddEpilogue(
            (self.g.tensors[node.inputs[0]].zero_point, self.g.tensors[node.inputs[1]].zero_point),
            (qops.q31_rows("a_", np.array([m1]), np.array([s1])), qops.q31_rows("b_", np.array([m2]), np.array([s2]))),
            qops.q31_rows("out_", np.array([mo]), np.array([so])),
            ADD_LEFT_SHIFT,
            zp,
            lo,
            hi,
        )
        return Value(self.bb.emit_te(op, a.expr, b.expr, primfunc_name_hint="qadd"), a.nhwc)

    def build(self, batch: int) -> tvm.IRModule:
        g = self.g
        in_shape = g.tensors[g.input].shape
        if len(in_shape) != 4:
            raise BadInput(f"{g.name}: the integer model's input must be an image (N, C, H, W), not {in_shape}")
        _, c, h, w = in_shape
        pixels = relax.Var("pixels", relax.TensorType((batch, h, w, c), "uint8"))
        with self.bb.function("main", [pixels]):
            with self.bb.dataflow():
                # golden.pixels_to_input: int8(pixel - 128), scale 1, zero point -128
                x = relax.op.subtract(relax.op.astype(pixels, "int16"), _const(128, "int16"))
                self.env[g.input] = Value(self.emit(relax.op.astype(x, "int8"), "input"), True)
                for node in g.nodes:
                    args = [self.env[t] for t in node.inputs]
                    self.env[node.output] = self.node(node, args)
                out = self.finish([self.env[t] for t in g.outputs])
                gv = self.bb.emit_output(out)
            self.bb.emit_func_output(gv)
        return self.bb.get()

    def node(self, node: QNode, args: list[Value]) -> Value:
        match node.op:
            case "conv":
                return self.conv(node, args[0])
            case "prelu":
                return self.prelu(node, args[0])
            case "add":
                return self.add(node, args[0], args[1])
            case "reshape":
                return self.reshape(args[0], self.g.tensors[node.output].shape, node.name)
        raise BadInput(f"{self.g.name}: node '{node.name}' ({node.op}) has no TVM integer lowering")


def build_relax_int(qgraph: QGraph, batch: int = 1) -> tvm.IRModule:
    """The QGraph as a Relax module `main(pixels: uint8[batch, H, W, 3]) -> int8/int16[batch, count]`.

    Every op is integer arithmetic reproducing `calibration.golden` bit for bit; the
    output is the golden's output tensor flattened in NHWC order (c_host.golden_as_device).
    """
    return _IntBuilder(qgraph).build(batch)


# ---------------------------------------------------------------- float graph

_RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def _f32(value) -> relax.Constant:
    return _const(np.asarray(value, dtype=np.float64), "float32")


class _FloatBuilder(_Builder):
    def __init__(self, graph: Graph) -> None:
        super().__init__(graph.name)
        self.g = graph

    def channel_param(self, node: Node, name: str, v: Value) -> relax.Constant:
        """A per-channel (or scalar) constant shaped to broadcast against the stored tensor."""
        p = np.asarray(self.g.constants[name], dtype=np.float64)
        if p.size == 1:
            return _f32(p.reshape(()))
        if v.nhwc or len(self.shape(v.expr)) == 2:
            return _f32(p.reshape(-1))
        raise BadInput(f"{self.g.name}: node '{node.name}': parameter {name} {p.shape} has no TVM lowering")

    def conv(self, node: Node, x: Value) -> Value:
        a = node.attrs
        pad_value = a.get("pad_value")
        values = [float(v) for v in pad_value] if pad_value is not None else [0.0]
        xp = self.pad(x.expr, list(a["pads"]), values, "float32")
        weight = self.g.constants[node.inputs[1]].astype(np.float32)
        y = self.emit(
            relax.op.nn.conv2d(
                xp,
                _const(weight.transpose(2, 3, 1, 0), "float32"),
                strides=list(a["strides"]),
                padding=[0, 0, 0, 0],
                dilation=list(a["dilations"]),
                groups=int(a["group"]),
                data_layout="NHWC",
                kernel_layout="HWIO",
                out_dtype="float32",
            ),
            node.name,
        )
        if len(node.inputs) > 2 and node.inputs[2]:
            y = self.emit(relax.op.add(y, _f32(self.g.constants[node.inputs[2]].reshape(-1))))
        return Value(y, True)

    def node(self, node: Node) -> Value:
        g = self.g
        a = node.attrs
        x = self.env[node.inputs[0]]
        match node.op:
            case "Conv":
                return self.conv(node, x)
            case "PRelu":
                slope = self.channel_param(node, node.inputs[1], x)
                neg = relax.op.multiply(x.expr, slope)
                cond = relax.op.greater_equal(x.expr, _f32(0.0))
                return Value(self.emit(relax.op.where(cond, x.expr, neg), node.name), x.nhwc)
            case "Relu":
                return Value(self.emit(relax.op.nn.relu(x.expr), node.name), x.nhwc)
            case "Clip":
                y = x.expr
                if "min" in a:
                    y = relax.op.maximum(y, _f32(a["min"]))
                if "max" in a:
                    y = relax.op.minimum(y, _f32(a["max"]))
                return Value(self.emit(y, node.name), x.nhwc)
            case "Add":
                if node.inputs[1] in g.constants:
                    other = self.channel_param(node, node.inputs[1], x)
                else:
                    other = self.env[node.inputs[1]]
                    if other.nhwc != x.nhwc:
                        raise BadInput(f"{g.name}: node '{node.name}' adds tensors of different ranks")
                    other = other.expr
                return Value(self.emit(relax.op.add(x.expr, other), node.name), x.nhwc)
            case op if op in _RESHAPES:
                return self.reshape(x, g.shapes[node.outputs[0]], node.name)
        raise BadInput(f"{g.name}: node '{node.name}' ({node.op}) has no TVM float lowering")

    def build(self, batch: int) -> tvm.IRModule:
        g = self.g
        if g.meta.get("input_kind") != "pixels" or g.meta.get("input_layout", "NCHW") != "NCHW":
            raise BadInput(f"{g.name}: build the float module after the passes (NCHW input of raw pixels)")
        _, c, h, w = g.input_shape()
        pixels = relax.Var("pixels", relax.TensorType((batch, h, w, c), "uint8"))
        with self.bb.function("main", [pixels]):
            with self.bb.dataflow():
                self.env[g.inputs[0]] = Value(self.emit(relax.op.astype(pixels, "float32"), "input"), True)
                for node in g.nodes:
                    self.env[node.outputs[0]] = self.node(node)
                out = self.finish([self.env[t] for t in g.outputs])
                gv = self.bb.emit_output(out)
            self.bb.emit_func_output(gv)
        return self.bb.get()


def build_relax_float(graph: Graph, batch: int = 1) -> tvm.IRModule:
    """The float graph (after the passes: raw-pixel input, preprocessing folded) as a Relax
    module `main(pixels: uint8[batch, H, W, 3]) -> float32[batch, count]` (NHWC order)."""
    return _FloatBuilder(graph).build(batch)


def compile_and_run_x86(mod: tvm.IRModule, pixels: np.ndarray) -> np.ndarray:
    """Compile untuned for this x86 host and run uint8 NCHW images: [N, count] in device order."""
    from compiler.backends.tvm_run import compile_and_run_x86 as run

    return run(mod, pixels)
