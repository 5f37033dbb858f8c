"""mark_gdconv: recognise the global depthwise convolution (GDConv) of MobileFaceNet.

A depthwise conv whose kernel covers its whole unpadded input is the paper's GDConv
(7x7 at 112x112, 7x6 at 112x96). Backends give it its own kernel: it is a per-channel
dot product, not a sliding window.
"""

from __future__ import annotations

from compiler.ir import Graph


def mark_gdconv(graph: Graph) -> Graph:
    g = graph.copy()
    for node in g.nodes:
        if node.op != "Conv":
            continue
        _, cin, h, w = g.shapes[node.inputs[0]]
        weight = g.constants[node.inputs[1]]
        depthwise = node.attrs["group"] == cin and weight.shape[1] == 1
        whole = tuple(weight.shape[2:]) == (h, w) and not any(node.attrs["pads"])
        node.attrs["gdconv"] = bool(depthwise and whole and h * w > 1)
    return g
