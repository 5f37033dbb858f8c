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
