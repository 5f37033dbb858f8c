"""canonicalise_input_layout: make the graph input NCHW.

tf2onnx exports of Keras/TFLite models take NHWC and transpose to NCHW right away.
Dropping that transpose gives every later stage one layout to think about.
"""

from __future__ import annotations

from compiler.errors import BadInput
from compiler.ir import Graph

_NHWC_TO_NCHW = [0, 3, 1, 2]


def canonicalise_input_layout(graph: Graph) -> Graph:
    g = graph.copy()
    if g.meta.get("source_layout") != "NHWC" or g.meta.get("input_layout") == "NCHW":
        g.meta["input_layout"] = "NCHW"
        return g
    inp = g.inputs[0]
    users = g.consumers(inp)
    if not users or any(n.op != "Transpose" or n.attrs["perm"] != _NHWC_TO_NCHW for n in users):
        ops = ", ".join(f"{n.name} ({n.op})" for n in users) or "nothing"
        raise BadInput(f"{g.name}: NHWC input '{inp}' feeds {ops}; expected a transpose to NCHW")
    n, h, w, c = g.shapes[inp]
    for node in users:
        g.replace_uses(node.outputs[0], inp)
    g.remove_nodes(users)
    g.shapes[inp] = (n, c, h, w)
    g.meta["input_layout"] = "NCHW"
    return g
