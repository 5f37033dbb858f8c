"""Per-layer quantization error: where int8 loses the float model's function.

For each quantized op, its dequantized output is compared with the float tensor of
the same name, two ways:
- entire: the int8 graph run end to end, so errors accumulate as on the device;
- single: the op alone, fed its float inputs quantized with their own parameters,
  which isolates the op's own rounding and clipping from what came before.
"""

from __future__ import annotations

import numpy as np

from calibration import golden
from calibration.qgraph import QGraph, QNode
from compiler import executor
from compiler.ir import Graph


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 1.0


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max())
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max())


def _quantize_tensor(graph: QGraph, name: str, value: np.ndarray) -> np.ndarray:
    t = graph.tensors[name]
    lo, hi = golden.LIMITS[t.dtype]
    return np.clip(np.round(value / np.float32(t.scale)) + t.zero_point, lo, hi).astype(t.dtype)


def _run_single(graph: QGraph, node: QNode, float_env: dict[str, np.ndarray]) -> np.ndarray:
    args = [
        golden.pixels_to_input(np.clip(np.round(float_env[t]), 0, 255).astype(np.uint8))
        if t == graph.input
        else _quantize_tensor(graph, t, float_env[t])
        for t in node.inputs
    ]
    return golden.run_node(graph, node, args)


def layer_errors(float_graph: Graph, qgraph: QGraph, images: np.ndarray) -> list[dict]:
    """Per quantized op: cosine and max|a-b|/max|b| vs float, entire and single, worst first."""
    rows: dict[str, dict] = {}
    for i in range(len(images)):
        pixels = images[i : i + 1]
        float_env = executor.run(float_graph, pixels.astype(np.float32), keep=True)
        int_env = golden.run(qgraph, pixels, keep=True)
        for node in qgraph.nodes:
            if node.op == "reshape":
                continue
            ref = float_env[node.output]
            out_t = qgraph.tensors[node.output]
            entire = out_t.dequantize(int_env[node.output])
            single = out_t.dequantize(_run_single(qgraph, node, float_env))
            row = rows.setdefault(
                node.output,
                {
                    "layer": node.name,
                    "op": node.op,
                    "cos_entire": [],
                    "cos_single": [],
                    "rel_entire": [],
                    "rel_single": [],
                },
            )
            row["cos_entire"].append(_cosine(entire, ref))
            row["cos_single"].append(_cosine(single, ref))
            row["rel_entire"].append(_rel(entire, ref))
            row["rel_single"].append(_rel(single, ref))
    result = []
    for tensor, row in rows.items():
        t = qgraph.tensors[tensor]
        result.append(
            {
                "layer": row["layer"],
                "op": row["op"],
                "tensor": tensor,
                "scale": float(t.scale),
                "zero_point": int(t.zero_point),
                "cosine_entire": float(np.mean(row["cos_entire"])),
                "cosine_single": float(np.mean(row["cos_single"])),
                "rel_err_entire": float(np.mean(row["rel_entire"])),
                "rel_err_single": float(np.mean(row["rel_single"])),
            }
        )
    return sorted(result, key=lambda r: r["cosine_single"])
