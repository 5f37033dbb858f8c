"""fold_batchnorm: merge inference-mode BatchNorm into the preceding conv or linear layer.

BN(W*x + b) = s*(W*x + b - mean) + beta with s = gamma / sqrt(var + eps), so scaling
each output channel's weights by s and adjusting the bias removes the BN node
(Jacob et al. 2018, section 3.2, as the MobileFaceNet paper prescribes).
A BN that follows a conv through a flatten/reshape of a 1x1 map (PyTorch's
Linear + BatchNorm1d tails) folds the same way.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node

_SHAPE_ONLY = {"Reshape", "Flatten", "Squeeze"}


def _layer_before(g: Graph, bn: Node) -> Node | None:
    """The Conv/Gemm whose every output channel maps 1:1 to the BN's channels, if any."""
    tensor = bn.inputs[0]
    while True:
        node = g.producer(tensor)
        if node is None or len(g.consumers(tensor)) != 1 or tensor in g.outputs:
            return None
        if node.op == "Conv":
            return node
        if node.op == "Gemm" and not node.attrs.get("transA"):
            return node
        if node.op in _SHAPE_ONLY:
            shape = g.shapes[node.inputs[0]]
            if len(shape) == 4 and shape[2:] == (1, 1):
                tensor = node.inputs[0]
                continue
        return None


def _bias_of(g: Graph, layer: Node, channels: int) -> np.ndarray:
    if layer.op == "Conv" and len(layer.inputs) > 2:
        return g.constants[layer.inputs[2]].astype(np.float64)
    if layer.op == "Gemm" and len(layer.inputs) > 2:
        c = g.constants[layer.inputs[2]].astype(np.float64) * layer.attrs.get("beta", 1.0)
        return np.broadcast_to(c.reshape(-1), (channels,)).copy()
    return np.zeros(channels)


def fold_batchnorm(graph: Graph) -> Graph:
    g = graph.copy()
    for bn in [n for n in g.nodes if n.op == "BatchNorm"]:
        layer = _layer_before(g, bn)
        if layer is None:
            continue
        gamma, beta, mean, var = (g.constants[t].astype(np.float64).reshape(-1) for t in bn.inputs[1:5])
        scale = gamma / np.sqrt(var + bn.attrs["epsilon"])
        weight = g.constants[layer.inputs[1]].astype(np.float64)
        if layer.op == "Conv":
            channels = weight.shape[0]
            new_weight = weight * scale.reshape(-1, 1, 1, 1)
        else:
            alpha = layer.attrs.get("alpha", 1.0)
            channels = weight.shape[0] if layer.attrs.get("transB") else weight.shape[1]
            new_weight = weight * (scale.reshape(-1, 1) if layer.attrs.get("transB") else scale.reshape(1, -1)) * alpha
        if scale.size != channels:
            continue
        bias = (_bias_of(g, layer, channels) - mean) * scale + beta
        w_name = g.unique_name(f"{layer.name}_weight_folded")
        g.constants[w_name] = new_weight.astype(np.float32)
        b_name = g.unique_name(f"{layer.name}_bias_folded")
        g.constants[b_name] = bias.astype(np.float32)
        layer.inputs = [layer.inputs[0], w_name, b_name]
        if layer.op == "Gemm":
            layer.attrs.update(alpha=1.0, beta=1.0)
        g.replace_uses(bn.outputs[0], bn.inputs[0])
        if bn.outputs[0] in graph.outputs:
            _keep_output_name(g, bn)
        g.remove_nodes([bn])
    g.prune()
    return g


def _keep_output_name(g: Graph, bn: Node) -> None:
    """When the BN produced a graph output, the node before it takes over that name."""
    producer = g.producer(bn.inputs[0])
    assert producer is not None
    old, new = bn.inputs[0], bn.outputs[0]
    producer.outputs[0] = new
    g.replace_uses(old, new)
    g.shapes[new] = g.shapes[old]
