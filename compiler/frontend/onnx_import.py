"""ONNX -> our IR.

Accepts opset 9 and newer as written by PyTorch, PaddlePaddle and tf2onnx. The model
is simplified with onnxsim first (BatchNorm is kept: folding it is our pass, and the
report shows what it changed), then each node is mapped onto the IR op set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import BadInput
from compiler.executor import run_node
from compiler.ir import Graph, Node

_IMAGE_RANKS = 4


def read_onnx(path: Path) -> onnx.ModelProto:
    """Parse an ONNX file or fail with one line naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read model file ({exc.strerror})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        raise BadInput(f"{path}: not a valid ONNX model (could not parse the protobuf; truncated file?)") from None
    if not model.graph.node:
        raise BadInput(f"{path}: not a valid ONNX model (no graph nodes)")
    return model


def model_sha256(path: Path) -> str:
    """Hash of the model file, or of every file in a SavedModel directory."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def image_input(model: onnx.ModelProto, source: str) -> tuple[str, tuple[int, int, int, int], str]:
    """Find the single image input: (name, static NCHW-or-NHWC shape with batch 1, layout)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(vi.name for vi in inputs) or "none"
        raise BadInput(f"{source}: expected exactly one image input, found {len(inputs)} ({names})")
    vi = inputs[0]
    if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise BadInput(
            f"{source}: input '{vi.name}' must be float32 (a float model; quantized inputs are not accepted)"
        )
    dims = _dims(vi)
    if len(dims) != _IMAGE_RANKS:
        raise BadInput(f"{source}: input '{vi.name}' has shape {dims}; expected a 4-D image [1,3,H,W] or [1,H,W,3]")
    batch, *rest = dims
    if any(not isinstance(d, int) or d <= 0 for d in rest):
        raise BadInput(
            f"{source}: input '{vi.name}' has dynamic spatial/channel dimensions {dims}; "
            "export it with a fixed H, W and 3 channels"
        )
    if isinstance(batch, int) and batch not in (0, 1):
        raise BadInput(f"{source}: input '{vi.name}' has batch {batch}; export with batch 1 (or a dynamic batch)")
    c1, h_or_c, w_or_h = rest[0], rest[1], rest[2]
    if c1 == 3 and w_or_h != 3:
        return vi.name, (1, 3, int(h_or_c), int(w_or_h)), "NCHW"
    if w_or_h == 3:
        return vi.name, (1, int(c1), int(h_or_c), 3), "NHWC"
    raise BadInput(f"{source}: input '{vi.name}' has shape {dims}; expected 3 colour channels (NCHW or NHWC)")


def simplify(model: onnx.ModelProto, input_name: str, shape: tuple[int, ...]) -> tuple[onnx.ModelProto, str]:
    """Run onnxsim with the batch fixed to 1; returns (model, note). Keeps BatchNorm."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(
            model, overwrite_input_shapes={input_name: list(shape)}, skip_fuse_bn=True, check_n=0
        )
    except Exception as exc:  # onnxsim raises many types on odd models; ingest goes on without it
        return model, f"onnxsim skipped: {str(exc).splitlines()[0][:120]}"
    if not ok:
        return model, "onnxsim skipped: its self-check failed"
    return simplified, "onnxsim applied"


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _same_pads(
    in_hw: tuple[int, int], kernel: list[int], strides: list[int], dilations: list[int], upper: bool
) -> list[int]:
    pads_begin, pads_end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        pads_begin.append(small if upper else big)
        pads_end.append(big if upper else small)
    return [pads_begin[0], pads_begin[1], pads_end[0], pads_end[1]]


class _Converter:
    """Maps ONNX nodes onto IR nodes one by one, knowing shapes seen so far."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.source = source
        self.model = model
        self.constants: dict[str, np.ndarray] = {}
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            self.constants[init.name] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
        self.nodes: list[Node] = []
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 9)

    def fail(self, node: onnx.NodeProto, why: str) -> BadInput:
        return BadInput(f"{self.source}: node '{node.name or node.output[0]}' ({node.op_type}): {why}")

    def const(self, node: onnx.NodeProto, tensor: str, what: str) -> np.ndarray:
        if tensor not in self.constants:
            raise self.fail(node, f"{what} must be a constant")
        return self.constants[tensor]

    def add(self, op: str, node: onnx.NodeProto, inputs: list[str], attrs: dict | None = None) -> None:
        name = node.name or f"{op}_{len(self.nodes)}"
        self.nodes.append(Node(op, name, inputs, [node.output[0]], attrs or {}))

    def convert(self, node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> None:
        op = node.op_type
        a = _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"custom-domain op '{node.domain}' is not supported")
        match op:
            case "Constant":
                value = a.get("value")
                if value is None:
                    raise self.fail(node, "only tensor-valued Constant nodes are supported")
                arr = numpy_helper.to_array(value)
                self.constants[node.output[0]] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr
            case "Conv":
                w = self.const(node, node.input[1], "weight")
                if w.ndim != _IMAGE_RANKS:
                    raise self.fail(node, f"only 2-D convolutions are supported (weight rank {w.ndim})")
                kernel = list(a.get("kernel_shape", w.shape[2:]))
                strides = list(a.get("strides", [1, 1]))
                dilations = list(a.get("dilations", [1, 1]))
                auto_pad = a.get("auto_pad", b"NOTSET")
                auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
                if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                    in_hw = shapes[node.input[0]][2:]
                    pads = _same_pads(in_hw, kernel, strides, dilations, auto_pad == "SAME_UPPER")
                else:
                    pads = list(a.get("pads", [0, 0, 0, 0]))
                inputs = [node.input[0], node.input[1]]
                if len(node.input) > 2 and node.input[2]:
                    self.const(node, node.input[2], "bias")
                    inputs.append(node.input[2])
                self.add(
                    "Conv",
                    node,
                    inputs,
                    {"strides": strides, "pads": pads, "dilations": dilations, "group": int(a.get("group", 1))},
                )
            case "BatchNormalization":
                for t, what in zip(node.input[1:5], ("scale", "bias", "mean", "var"), strict=True):
                    self.const(node, t, what)
                self.add("BatchNorm", node, list(node.input[:5]), {"epsilon": float(a.get("epsilon", 1e-5))})
            case "PRelu":
                slope = self.const(node, node.input[1], "slope")
                if slope.size > 1:
                    self.constants[node.input[1]] = slope.reshape(-1)
                self.add("PRelu", node, [node.input[0], node.input[1]])
            case "LeakyRelu":
                slope_name = f"{node.output[0]}_slope"
                self.constants[slope_name] = np.array(a.get("alpha", 0.01), dtype=np.float32)
                self.add("PRelu", node, [node.input[0], slope_name])
            case "Relu" | "Neg" | "Identity" | "GlobalAveragePool":
                self.add(op, node, [node.input[0]])
            case "Dropout":
                self.add("Identity", node, [node.input[0]])
            case "Clip":
                lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
                if len(node.input) > 1 and node.input[1]:
                    lo = float(self.const(node, node.input[1], "min"))
                if len(node.input) > 2 and node.input[2]:
                    hi = float(self.const(node, node.input[2], "max"))
                self.add("Clip", node, [node.input[0]], {"min": float(lo), "max": float(hi)})
            case "Add" | "Sub" | "Mul" | "Div" | "MatMul":
                self.add(op, node, [node.input[0], node.input[1]])
            case "Reshape":
                if len(node.input) > 1:
                    self.const(node, node.input[1], "shape")
                    self.add("Reshape", node, [node.input[0], node.input[1]])
                else:  # opset < 5 carried the shape as an attribute
                    shape_name = f"{node.output[0]}_shape"
                    self.constants[shape_name] = np.array(a["shape"], dtype=np.int64)
                    self.add("Reshape", node, [node.input[0], shape_name])
            case "Flatten":
                self.add("Flatten", node, [node.input[0]], {"axis": int(a.get("axis", 1))})
            case "Transpose":
                perm = list(a.get("perm", reversed(range(len(shapes[node.input[0]])))))
                self.add("Transpose", node, [node.input[0]], {"perm": perm})
            case "Squeeze" | "Unsqueeze":
                axes = a.get("axes")
                if axes is None and len(node.input) > 1:
                    axes = self.const(node, node.input[1], "axes").tolist()
                rank = len(shapes[node.input[0]]) + (len(axes or []) if op == "Unsqueeze" else 0)
                axes = [int(x) % rank for x in axes] if axes is not None else None
                if op == "Unsqueeze" and axes is None:
                    raise self.fail(node, "Unsqueeze needs axes")
                self.add(op, node, [node.input[0]], {"axes": axes})
            case "Gemm":
                self.const(node, node.input[1], "B")
                inputs = [node.input[0], node.input[1]] + (
                    [node.input[2]] if len(node.input) > 2 and node.input[2] else []
                )
                attrs = {k: a.get(k, d) for k, d in (("alpha", 1.0), ("beta", 1.0), ("transA", 0), ("transB", 0))}
                self.add("Gemm", node, inputs, attrs)
            case "Pad":
                mode = a.get("mode", b"constant")
                mode = mode.decode() if isinstance(mode, bytes) else mode
                if mode != "constant":
                    raise self.fail(node, f"only constant padding is supported (mode '{mode}')")
                pads = a.get("pads")
                value = float(a.get("value", 0.0))
                if pads is None:
                    pads = self.const(node, node.input[1], "pads").tolist()
                    if len(node.input) > 2 and node.input[2]:
                        value = float(self.const(node, node.input[2], "constant_value"))
                if len(node.input) > 3 and node.input[3]:
                    raise self.fail(node, "padding selected axes (the 'axes' input) is not supported")
                self.add("Pad", node, [node.input[0]], {"pads": [int(p) for p in pads], "value": value})
            case _:
                raise self.fail(node, f"op {op} is not supported by mfnc")


def onnx_to_ir(model: onnx.ModelProto, source: str, name: str) -> Graph:
    """Convert a (simplified) ONNX model to the IR; shapes are filled by one execution."""
    input_name, shape, layout = image_input(model, source)
    conv = _Converter(model, source)
    graph = Graph(name=name, nodes=conv.nodes, inputs=[input_name], outputs=[], constants=conv.constants)
    graph.shapes = {input_name: shape}
    for node in model.graph.node:
        conv.convert(node, graph.shapes)
        if conv.nodes and conv.nodes[-1].outputs[0] == node.output[0]:
            _infer_last(graph, conv, node)
    graph.outputs = [o.name for o in model.graph.output]
    for out in graph.outputs:
        if out not in graph.shapes and out not in graph.constants:
            raise BadInput(f"{source}: graph output '{out}' is not produced by any supported node")
    graph.meta = {"source_layout": layout, "source_input": input_name, "input_kind": "normalized"}
    graph.prune()
    return graph


def _infer_last(graph: Graph, conv: _Converter, node: onnx.NodeProto) -> None:
    """Shape of the node just converted, by running it on zeros (errors name the node)."""
    ir_node = conv.nodes[-1]
    args = []
    for t in ir_node.inputs:
        if t in graph.constants:
            args.append(np.asarray(graph.constants[t], dtype=np.float64))
        elif t in graph.shapes:
            args.append(np.zeros(graph.shapes[t]))
        else:
            raise conv.fail(node, f"input '{t}' is produced by no supported node")
    try:
        out = run_node(ir_node, args)
    except BadInput:
        raise
    except Exception as exc:
        raise conv.fail(
            node, f"cannot be evaluated with the input shapes {[tuple(x.shape) for x in args]} ({exc})"
        ) from None
    graph.shapes[ir_node.outputs[0]] = tuple(int(d) for d in np.shape(out))
