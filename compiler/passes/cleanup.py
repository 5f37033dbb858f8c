"""remove_identity and fold_constants: structural clean-ups with no numeric effect."""

from __future__ import annotations

import numpy as np

from compiler.executor import run_node
from compiler.ir import Graph

_NO_OPS = {"Identity", "Dropout"}


def remove_identity(graph: Graph) -> Graph:
    """Drop Identity/Dropout (inference-time no-ops), rewiring their consumers."""
    g = graph.copy()
    doomed = []
    for node in g.nodes:
        if node.op in _NO_OPS:
            if node.outputs[0] in g.outputs and node.inputs[0] in g.inputs:
                continue  # a graph that is only an identity keeps it
            if node.outputs[0] in g.outputs:
                # keep the public output name: rename the producer's output instead
                producer = g.producer(node.inputs[0])
                if producer is None or len(g.consumers(node.inputs[0])) != 1:
                    continue
                old = node.inputs[0]
                producer.outputs[0] = node.outputs[0]
                g.replace_uses(old, node.outputs[0])
            else:
                g.replace_uses(node.outputs[0], node.inputs[0])
            doomed.append(node)
    g.remove_nodes(doomed)
    g.prune()
    return g


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all constants and store the results as constants."""
    g = graph.copy()
    doomed = []
    for node in g.nodes:
        if node.inputs and all(t in g.constants for t in node.inputs) and node.outputs[0] not in g.outputs:
            value = run_node(node, [np.asarray(g.constants[t], dtype=np.float64) for t in node.inputs])
            source_dtype = g.constants[node.inputs[0]].dtype
            g.constants[node.outputs[0]] = np.asarray(value).astype(
                source_dtype if source_dtype.kind != "f" else np.float32
            )
            doomed.append(node)
    g.remove_nodes(doomed)
    g.prune()
    return g


def fold_pad(graph: Graph) -> Graph:
    """Merge a zero Pad of H and W into the convolution it feeds (one op, same result)."""
    g = graph.copy()
    doomed = []
    for pad in [n for n in g.nodes if n.op == "Pad"]:
        users = g.consumers(pad.outputs[0])
        pads = pad.attrs["pads"]
        spatial_only = len(pads) == 8 and not any(pads[i] for i in (0, 1, 4, 5))
        if len(users) != 1 or pad.outputs[0] in g.outputs or not spatial_only or pad.attrs.get("value", 0.0) != 0.0:
            continue
        conv = users[0]
        if conv.op != "Conv" or "pad_value" in conv.attrs:
            continue
        top, left, bottom, right = conv.attrs["pads"]
        conv.attrs["pads"] = [top + pads[2], left + pads[3], bottom + pads[6], right + pads[7]]
        g.replace_uses(pad.outputs[0], pad.inputs[0])
        doomed.append(pad)
    g.remove_nodes(doomed)
    g.prune()
    return g
