"""fold_preprocess: the compiled model takes raw RGB pixels (0-255) and normalises inside.

Normalisation x = (p - mean) / std (plus an RGB->BGR swap if the model wants BGR) is
linear per channel, so it folds into the first conv: W' = W / std (channels
permuted), b' = b - sum(W' * mean). The conv's zero padding was zero in normalised
space, i.e. `mean` in pixel space, so the folded conv pads each channel with its
mean (`pad_value`): borders stay exact. When the input does not feed exactly one
ungrouped conv, an explicit 1x1 normalisation conv is inserted instead (also exact).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import BadInput
from compiler.ir import Graph, Node
from compiler.preprocess import Preprocess


def _normalisation_matrix(pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) such that model_input[j] = sum_c A[j, c] * pixel[c] + c[j]."""
    a = np.zeros((3, 3))
    offset = np.zeros(3)
    for j, src in enumerate(pre.source_channel):
        a[j, src] = 1.0 / pre.std[src]
        offset[j] = -pre.mean[src] / pre.std[src]
    return a, offset


def fold_preprocess(graph: Graph, pre: Preprocess) -> Graph:
    g = graph.copy()
    if g.meta.get("input_kind") == "pixels":
        return g
    inp = g.inputs[0]
    if g.shapes[inp][1] != 3:
        raise BadInput(f"{g.name}: input '{inp}' has {g.shapes[inp][1]} channels; preprocessing needs 3 (RGB)")
    a, offset = _normalisation_matrix(pre)
    users = g.consumers(inp)
    first = users[0] if len(users) == 1 else None
    if first is not None and first.op == "Conv" and first.attrs["group"] == 1 and "pad_value" not in first.attrs:
        weight = g.constants[first.inputs[1]].astype(np.float64)
        new_weight = np.einsum("ojhw,jc->ochw", weight, a)
        old_bias = g.constants[first.inputs[2]].astype(np.float64) if len(first.inputs) > 2 else 0.0
        bias = old_bias + np.einsum("ojhw,j->o", weight, offset)
        w_name = g.unique_name(f"{first.name}_weight_pixels")
        b_name = g.unique_name(f"{first.name}_bias_pixels")
        g.constants[w_name] = new_weight.astype(np.float32)
        g.constants[b_name] = bias.astype(np.float32)
        first.inputs = [inp, w_name, b_name]
        first.attrs["pad_value"] = [float(m) for m in pre.mean]
        g.meta["preprocess_folded_into"] = first.name
    else:
        normalised = g.unique_name("normalised_input")
        w_name, b_name = g.unique_name("preprocess_weight"), g.unique_name("preprocess_bias")
        g.constants[w_name] = a.reshape(3, 3, 1, 1).astype(np.float32)
        g.constants[b_name] = offset.astype(np.float32)
        g.replace_uses(inp, normalised)
        attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
        g.nodes.insert(0, Node("Conv", "preprocess", [inp, w_name, b_name], [normalised], attrs))
        g.shapes[normalised] = g.shapes[inp]
        g.meta["preprocess_folded_into"] = "preprocess"
    g.meta["input_kind"] = "pixels"
    g.meta["preprocess"] = pre.as_dict()
    g.prune()
    return g
