"""canonicalise_activations: one spelling per activation.

After this pass activations are PRelu (per-channel slope of shape (C,)), Relu, or
Clip (ReLU6 is Clip(0, 6)). tf2onnx spells Keras PReLU as
Add(Relu(x), k * Relu(Neg(x))) with k = -alpha, possibly through extra Neg/Mul nodes;
that pattern is rewritten into one PRelu node.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node


def _single_use(g: Graph, tensor: str) -> bool:
    return len(g.consumers(tensor)) == 1 and tensor not in g.outputs


def _negative_branch(g: Graph, tensor: str) -> tuple[str, np.ndarray, list[Node]] | None:
    """If `tensor` = k * Relu(Neg(x)) through Mul-by-constant/Neg nodes: (x, k, nodes)."""
    k = np.ones((), dtype=np.float64)
    chain: list[Node] = []
    while True:
        node = g.producer(tensor)
        if node is None or not _single_use(g, tensor):
            return None
        chain.append(node)
        if node.op == "Neg":
            k = -k
            tensor = node.inputs[0]
        elif node.op == "Mul" and sum(t in g.constants for t in node.inputs) == 1:
            const = next(t for t in node.inputs if t in g.constants)
            k = k * g.constants[const].astype(np.float64)
            tensor = next(t for t in node.inputs if t not in g.constants)
        elif node.op == "Relu":
            neg = g.producer(node.inputs[0])
            if neg is None or neg.op != "Neg" or not _single_use(g, node.inputs[0]):
                return None
            chain.append(neg)
            return neg.inputs[0], k, chain
        else:
            return None


def _per_channel(slope: np.ndarray, channels: int) -> np.ndarray | None:
    slope = np.asarray(slope, dtype=np.float32)
    if slope.size == 1:
        return np.full(channels, float(slope.reshape(())), dtype=np.float32)
    if slope.size == channels and max(slope.shape) == channels:
        return slope.reshape(channels)
    return None


def _fuse_prelu_patterns(g: Graph) -> None:
    for add in [n for n in g.nodes if n.op == "Add"]:
        if add not in g.nodes:
            continue
        for pos_t, neg_t in (add.inputs, add.inputs[::-1]):
            pos = g.producer(pos_t)
            if pos is None or pos.op != "Relu" or not _single_use(g, pos_t):
                continue
            found = _negative_branch(g, neg_t)
            if found is None or found[0] != pos.inputs[0]:
                continue
            x, k, chain = found
            channels = g.shapes[x][1]
            slope = _per_channel(-k, channels)
            if slope is None:
                continue
            slope_name = g.unique_name(f"{add.name}_slope")
            g.constants[slope_name] = slope
            index = g.nodes.index(add)
            g.nodes[index] = Node("PRelu", add.name, [x, slope_name], list(add.outputs))
            g.remove_nodes([pos, *chain])
            break


def canonicalise_activations(graph: Graph) -> Graph:
    g = graph.copy()
    _fuse_prelu_patterns(g)
    for i, node in enumerate(g.nodes):
        if node.op == "Clip" and node.attrs.get("min") == 0.0 and node.attrs.get("max") == float("inf"):
            g.nodes[i] = Node("Relu", node.name, node.inputs[:1], node.outputs)
        elif node.op == "PRelu" and len(g.shapes.get(node.inputs[0], ())) == 4:
            slope = _per_channel(g.constants[node.inputs[1]], g.shapes[node.inputs[0]][1])
            if slope is not None:
                name = g.unique_name(f"{node.name}_slope")
                g.constants[name] = slope
                node.inputs[1] = name
    g.prune()
    return g
