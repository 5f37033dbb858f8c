"""Per-layer summary of a model (what `inspect` prints): op, shapes, params, MACs.

Counts follow the paper's convention: parameters after BatchNorm folding (weights,
biases, PReLU slopes), and MACs (= MAdds) of convolutions and matrix products only.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node


def node_params(graph: Graph, node: Node) -> int:
    if node.op == "BatchNorm":  # an unfolded BN is a per-channel scale and shift
        return 2 * int(graph.constants[node.inputs[1]].size)
    return sum(
        int(graph.constants[t].size)
        for t in node.inputs
        if t in graph.constants and graph.constants[t].dtype.kind == "f" and node.op not in ("Reshape",)
    )


def node_macs(graph: Graph, node: Node) -> int:
    if node.op == "Conv":
        cout, cin_per_group, kh, kw = graph.constants[node.inputs[1]].shape
        out = graph.shapes[node.outputs[0]]
        return int(cout * cin_per_group * kh * kw * out[2] * out[3])
    if node.op in ("Gemm", "MatMul"):
        a = graph.shapes.get(node.inputs[0]) or graph.constants[node.inputs[0]].shape
        out = graph.shapes[node.outputs[0]]
        k = a[0] if node.attrs.get("transA") else a[-1]
        return int(np.prod(out, dtype=np.int64) * k)
    return 0


def describe(node: Node) -> str:
    """Short human label: conv kind, kernel and stride."""
    if node.op != "Conv":
        return node.op
    kind = "GDConv" if node.attrs.get("gdconv") else ("DWConv" if node.attrs["group"] > 1 else "Conv")
    suffix = " (pixels)" if "pad_value" in node.attrs else ""
    return f"{kind} s{node.attrs['strides'][0]}{suffix}"


def summarize(graph: Graph) -> dict:
    """{"params", "macs", "layers": [...]} for the graph as it stands."""
    layers = []
    for node in graph.nodes:
        inp = next((t for t in node.inputs if t not in graph.constants), node.inputs[0])
        row = {
            "name": node.name,
            "op": node.op,
            "kind": describe(node),
            "input_shape": list(graph.shapes.get(inp, ())),
            "output_shape": list(graph.shapes[node.outputs[0]]),
            "params": node_params(graph, node),
            "macs": node_macs(graph, node),
        }
        if node.op == "Conv":
            row["kernel"] = list(graph.constants[node.inputs[1]].shape[2:])
        layers.append(row)
    return {
        "model": graph.name,
        "input_shape": list(graph.input_shape()),
        "params": sum(r["params"] for r in layers),
        "macs": sum(r["macs"] for r in layers),
        "layers": layers,
    }
