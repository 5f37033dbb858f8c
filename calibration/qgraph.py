"""The quantized model: our int8 IR, and its file format (`.mfnq`).

A QGraph is what the quantizer produces and every integer backend consumes. It holds
only what defines the arithmetic: int8 weights, per-channel weight scales, int32
biases, float32 activation scales and zero points, activation clamps. Fixed-point
multipliers are derived from the float32 scales exactly as TFLite derives them
(`calibration.requant`), so the `.tflite` export and our kernels cannot drift apart.

Layout: activations are NCHW like the float IR; the device's input is raw uint8 RGB
pixels, i.e. int8 (pixel - 128) with scale 1 and zero point -128.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import BadInput

FORMAT = "mfnc-quantized"
FORMAT_VERSION = 1
SUFFIX = ".mfnq"


@dataclass
class QTensor:
    """An activation tensor: shape (NCHW or NC), per-tensor affine int8 quantization."""

    shape: tuple[int, ...]
    scale: float
    zero_point: int
    dtype: str = "int8"

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float64) - self.zero_point) * float(np.float32(self.scale))


@dataclass
class QNode:
    """One integer op. `op` is conv, prelu, add or reshape; `arrays` holds its constants."""

    op: str
    name: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class QGraph:
    """A quantized model in execution order."""

    name: str
    mode: str  # "fused" or "tflite"
    input: str
    outputs: list[str]
    tensors: dict[str, QTensor]
    nodes: list[QNode]
    meta: dict[str, Any] = field(default_factory=dict)

    def node_producing(self, tensor: str) -> QNode | None:
        return next((n for n in self.nodes if n.output == tensor), None)


def save(graph: QGraph, path: Path) -> None:
    """Write a `.mfnq` file: graph.json (structure, scales) + arrays.npz (constants)."""
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": graph.name,
        "mode": graph.mode,
        "input": graph.input,
        "outputs": graph.outputs,
        "meta": graph.meta,
        "tensors": {k: asdict(v) for k, v in graph.tensors.items()},
        "nodes": [
            {"op": n.op, "name": n.name, "inputs": n.inputs, "output": n.output, "attrs": n.attrs} for n in graph.nodes
        ],
    }
    arrays = {f"{i}/{key}": value for i, n in enumerate(graph.nodes) for key, value in n.arrays.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("graph.json", json.dumps(header, indent=1))
        archive.writestr("arrays.npz", buffer.getvalue())
    tmp.replace(path)


def load(path: Path) -> QGraph:
    """Read a `.mfnq` file; errors name the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            header = json.loads(archive.read("graph.json"))
            arrays = np.load(io.BytesIO(archive.read("arrays.npz")))
            flat = {k: arrays[k] for k in arrays.files}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path}: not a readable mfnc quantized model ({exc})") from None
    if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
        raise BadInput(f"{path}: unsupported quantized model format {header.get('format')} v{header.get('version')}")
    nodes = []
    for i, n in enumerate(header["nodes"]):
        prefix = f"{i}/"
        node_arrays = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        nodes.append(QNode(n["op"], n["name"], n["inputs"], n["output"], n["attrs"], node_arrays))
    tensors = {
        k: QTensor(tuple(v["shape"]), v["scale"], v["zero_point"], v["dtype"]) for k, v in header["tensors"].items()
    }
    return QGraph(header["name"], header["mode"], header["input"], header["outputs"], tensors, nodes, header["meta"])


def summarize(graph: QGraph) -> dict:
    """Per-op view of a quantized model (what `inspect` prints for a .mfnq file)."""
    layers = []
    for node in graph.nodes:
        out = graph.tensors[node.output]
        weight = node.arrays.get("weight")
        macs = 0
        if weight is not None:
            macs = int(np.prod(weight.shape) * int(np.prod(out.shape[2:])))
        layers.append(
            {
                "name": node.name,
                "op": node.op,
                "kind": node.attrs.get("kind", node.op),
                "activation": node.attrs.get("activation", "none"),
                "output_shape": list(out.shape),
                "dtype": out.dtype,
                "scale": float(out.scale),
                "zero_point": int(out.zero_point),
                "params": int(sum(a.size for k, a in node.arrays.items() if k in ("weight", "bias", "slope", "alpha"))),
                "macs": macs,
            }
        )
    weight_bytes = sum(int(n.arrays["weight"].size) for n in graph.nodes if "weight" in n.arrays)
    return {
        "model": graph.meta.get("model", graph.name),
        "mode": graph.mode,
        "params": sum(r["params"] for r in layers),
        "macs": sum(r["macs"] for r in layers),
        "weight_bytes": weight_bytes,
        "int16_tensors": sorted(k for k, v in graph.tensors.items() if v.dtype == "int16"),
        "meta": graph.meta,
        "layers": layers,
    }
