"""Our own Keras -> ONNX exporter for the layer set the MobileFaceNet family uses.

tf2onnx folds BatchNormalization into the convolutions, which would leave the
compiler's BN-folding pass untested on exactly the models it exists for. This exporter
keeps one ONNX node per Keras layer (named after it), converts NHWC to NCHW once at the
input, and only folds ZeroPadding2D into the following Conv's `pads`, as PyTorch
exports look.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import BadInput

if TYPE_CHECKING:
    import keras

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


class _Exporter:
    """Walks a functional Keras model in topological order, emitting NCHW ONNX nodes."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[int, str] = {}  # id(KerasTensor) -> ONNX tensor name
        self.pending_pads: dict[int, list[int]] = {}  # id(pad output) -> pads, for the next conv
        self.used: set[str] = {INPUT_NAME, OUTPUT_NAME}
        self.consumers: dict[int, list[Any]] = {}
        for layer in model.layers:
            for t in _inputs(layer):
                self.consumers.setdefault(id(t), []).append(layer)

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def emit(self, layer: Any, op: str, inputs: list[str], **attrs: Any) -> None:
        out = layer.output
        name = OUTPUT_NAME if out is self.model.outputs[0] else self.unique(layer.name)
        self.nodes.append(helper.make_node(op, inputs, [name], name=layer.name, **attrs))
        self.names[id(out)] = name

    def run(self) -> onnx.GraphProto:
        keras = _keras()
        L = keras.layers
        if len(self.model.inputs) != 1 or len(self.model.outputs) != 1:
            raise BadInput("export_onnx handles models with exactly one input and one output")
        inp = self.model.inputs[0]
        if len(inp.shape) != 4 or any(d is None for d in inp.shape[1:]):
            raise BadInput(f"export_onnx needs a fixed NHWC image input, got shape {tuple(inp.shape)}")
        _, h, w, c = inp.shape
        self.names[id(inp)] = INPUT_NAME

        for layer in self.model.layers:
            if isinstance(layer, L.InputLayer):
                continue
            ins = _inputs(layer)
            if isinstance(layer, L.ZeroPadding2D):
                self._pad(layer, ins[0])
            elif isinstance(layer, L.DepthwiseConv2D | L.Conv2D):
                self._conv(layer, ins[0], keras)
            elif isinstance(layer, L.BatchNormalization):
                self._batchnorm(layer, ins[0])
            elif isinstance(layer, L.PReLU):
                alpha = np.asarray(layer.get_weights()[0], np.float32)  # (H|1, W|1, C)
                slope = self.const(f"{layer.name}.slope", alpha.transpose(2, 0, 1))
                self.emit(layer, "PRelu", [self.names[id(ins[0])], slope])
            elif isinstance(layer, L.ReLU) or (isinstance(layer, L.Activation) and _activation(layer) == "relu"):
                self._relu(layer, ins[0])
            elif isinstance(layer, L.Activation) and _activation(layer) == "linear":
                self.names[id(layer.output)] = self.names[id(ins[0])]
            elif isinstance(layer, L.Add):
                self._add(layer, ins)
            elif isinstance(layer, L.Flatten):
                self._flatten(layer, ins[0])
            else:
                raise BadInput(f"export_onnx: layer {layer.name!r} of type {type(layer).__name__} is not supported")

        out = self.model.outputs[0]
        if self.names.get(id(out)) != OUTPUT_NAME:  # output passed through unchanged (e.g. linear)
            self.nodes.append(helper.make_node("Identity", [self.names[id(out)]], [OUTPUT_NAME], name=OUTPUT_NAME))
        if len(out.shape) != 2 or out.shape[1] is None:
            raise BadInput(f"export_onnx expects a flat [batch, D] output, got shape {tuple(out.shape)}")
        return helper.make_graph(
            self.nodes,
            self.model.name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, c, h, w])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, out.shape[1]])],
            self.initializers,
        )

    def _pad(self, layer: Any, x: Any) -> None:
        """Fold into the consuming Conv when it is the only consumer, else emit a Pad."""
        if layer.data_format != "channels_last":
            raise BadInput(f"export_onnx: layer {layer.name!r} must be channels_last")
        (top, bottom), (left, right) = layer.padding
        pads = [top, left, bottom, right]
        users = self.consumers.get(id(layer.output), [])
        keras = _keras()
        conv = keras.layers.DepthwiseConv2D | keras.layers.Conv2D
        if len(users) == 1 and isinstance(users[0], conv) and layer.output is not self.model.outputs[0]:
            self.pending_pads[id(layer.output)] = pads
            self.names[id(layer.output)] = self.names[id(x)]
            return
        onnx_pads = self.const(f"{layer.name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        self.emit(layer, "Pad", [self.names[id(x)], onnx_pads], mode="constant")

    def _conv(self, layer: Any, x: Any, keras: Any) -> None:
        if layer.data_format != "channels_last":
            raise BadInput(f"export_onnx: layer {layer.name!r} must be channels_last")
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        weights = [np.asarray(wt, np.float32) for wt in layer.get_weights()]
        kernel = weights[0]
        kh, kw = kernel.shape[:2]
        if depthwise:  # (kh, kw, cin, mult) -> (cin*mult, 1, kh, kw); Keras orders outputs c*mult + m
            cin, mult = kernel.shape[2:]
            w = kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            group = cin
        else:  # (kh, kw, cin/groups, cout) -> (cout, cin/groups, kh, kw)
            w = kernel.transpose(3, 2, 0, 1)
            group = getattr(layer, "groups", 1)
        pads = self.pending_pads.pop(id(x), [0, 0, 0, 0])
        if layer.padding == "same":
            _, ih, iw, _ = x.shape
            same = _same_pads((ih, iw), (kh, kw), layer.strides, layer.dilation_rate)
            pads = [p + q for p, q in zip(pads, same, strict=True)]
        inputs = [self.names[id(x)], self.const(f"{layer.name}.weight", w)]
        if layer.use_bias:
            inputs.append(self.const(f"{layer.name}.bias", weights[1]))
        act = _activation(layer)
        if act not in ("linear", "relu"):
            raise BadInput(f"export_onnx: layer {layer.name!r} has unsupported fused activation {act!r}")
        attrs = {
            "kernel_shape": [kh, kw],
            "strides": list(layer.strides),
            "dilations": list(layer.dilation_rate),
            "pads": pads,
            "group": group,
        }
        if act == "linear":
            self.emit(layer, "Conv", inputs, **attrs)
            return
        pre = self.unique(f"{layer.name}_preact")
        self.nodes.append(helper.make_node("Conv", inputs, [pre], name=layer.name, **attrs))
        out = OUTPUT_NAME if layer.output is self.model.outputs[0] else self.unique(f"{layer.name}_relu")
        self.nodes.append(helper.make_node("Relu", [pre], [out], name=f"{layer.name}_relu"))
        self.names[id(layer.output)] = out

    def _batchnorm(self, layer: Any, x: Any) -> None:
        if layer.axis not in (-1, len(x.shape) - 1):
            raise BadInput(f"export_onnx: layer {layer.name!r} normalises axis {layer.axis}, expected channels")
        c = x.shape[-1]
        gamma = np.asarray(layer.gamma, np.float32) if layer.scale else np.ones(c, np.float32)
        beta = np.asarray(layer.beta, np.float32) if layer.center else np.zeros(c, np.float32)
        inputs = [
            self.names[id(x)],
            self.const(f"{layer.name}.scale", gamma),
            self.const(f"{layer.name}.bias", beta),
            self.const(f"{layer.name}.mean", np.asarray(layer.moving_mean, np.float32)),
            self.const(f"{layer.name}.var", np.asarray(layer.moving_variance, np.float32)),
        ]
        self.emit(layer, "BatchNormalization", inputs, epsilon=float(layer.epsilon))

    def _relu(self, layer: Any, x: Any) -> None:
        max_value = getattr(layer, "max_value", None)
        if getattr(layer, "negative_slope", 0.0) or getattr(layer, "threshold", 0.0):
            raise BadInput(f"export_onnx: layer {layer.name!r} is a leaky/thresholded ReLU, not supported")
        if max_value is None:
            self.emit(layer, "Relu", [self.names[id(x)]])
            return
        lo = self.const(f"{layer.name}.min", np.array(0.0, np.float32))
        hi = self.const(f"{layer.name}.max", np.array(float(max_value), np.float32))
        self.emit(layer, "Clip", [self.names[id(x)], lo, hi])

    def _add(self, layer: Any, ins: list[Any]) -> None:
        names = [self.names[id(t)] for t in ins]
        if len(names) != 2:
            raise BadInput(f"export_onnx: layer {layer.name!r} adds {len(names)} tensors, expected 2")
        self.emit(layer, "Add", names)

    def _flatten(self, layer: Any, x: Any) -> None:
        """Keras flattens HWC order; ONNX Flatten on NCHW gives CHW, so transpose unless 1x1."""
        src = self.names[id(x)]
        if len(x.shape) == 4 and (x.shape[1], x.shape[2]) != (1, 1):
            nhwc = self.unique(f"{layer.name}_nhwc")
            self.nodes.append(helper.make_node("Transpose", [src], [nhwc], name=nhwc, perm=[0, 2, 3, 1]))
            src = nhwc
        self.emit(layer, "Flatten", [src], axis=1)


def _keras() -> Any:
    from compiler.family.mobilefacenet import import_keras

    return import_keras()


def _inputs(layer: Any) -> list[Any]:
    """The KerasTensors a layer consumes (its single call in a functional model)."""
    if len(layer._inbound_nodes) != 1:
        raise BadInput(f"export_onnx: layer {layer.name!r} is called {len(layer._inbound_nodes)} times")
    ins = layer.input
    return list(ins) if isinstance(ins, list | tuple) else [ins]


def _activation(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    return "linear" if act is None else getattr(act, "__name__", str(act))


def _same_pads(
    size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int], dilation: tuple[int, int]
) -> list[int]:
    """TensorFlow's 'same' padding as explicit ONNX pads (extra pixel at the end)."""
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilation, strict=True):
        eff = (k - 1) * d + 1
        total = max((-(-n // s) - 1) * s + eff - n, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def export_onnx(model: keras.Model, path: Path, opset: int = 17) -> None:
    """Write `model` as ONNX (NCHW input `input` [1,3,H,W], output `embedding` [1,D]).

    Written to a temp file in the target folder and renamed, so readers never see a
    half-written model, even when two processes export the same path at once.
    """
    graph = _Exporter(model).run()
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version for the opset keeps older runtimes on boards able to load it.
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="mfnc", ir_version=helper.find_min_ir_version_for(opsets)
    )
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file should read like any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
