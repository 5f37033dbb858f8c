"""canonicalise_input_layout: make the graph input NCHW.

tf2onnx exports of Keras/TFLite models take NHWC and transpose to NCHW right away,
sometimes after an explicit zero Pad (TFLite's 'same' padding). Dropping that
transpose (moving any Pad behind it) gives every later stage one layout.
"""

from __future__ import annotations

from compiler.errors import BadInput
from compiler.ir import Graph, Node

_NHWC_TO_NCHW = [0, 3, 1, 2]


def _only_consumer(g: Graph, tensor: str) -> Node | None:
    users = g.consumers(tensor)
    return users[0] if len(users) == 1 and tensor not in g.outputs else None


def canonicalise_input_layout(graph: Graph) -> Graph:
    g = graph.copy()
    if g.meta.get("source_layout") != "NHWC" or g.meta.get("input_layout") == "NCHW":
        g.meta["input_layout"] = "NCHW"
        return g
    inp = g.inputs[0]
    pads: list[Node] = []
    node = _only_consumer(g, inp)
    while node is not None and node.op == "Pad":
        pads.append(node)
        node = _only_consumer(g, node.outputs[0])
    if node is None or node.op != "Transpose" or node.attrs["perm"] != _NHWC_TO_NCHW:
        users = ", ".join(f"{n.name} ({n.op})" for n in g.consumers(inp)) or "nothing"
        raise BadInput(f"{g.name}: NHWC input '{inp}' feeds {users}; expected a transpose to NCHW")
    for pad in pads:  # NHWC pads -> NCHW pads; the pads now run after the (removed) transpose
        begin, end = pad.attrs["pads"][:4], pad.attrs["pads"][4:]
        pad.attrs["pads"] = [begin[i] for i in _NHWC_TO_NCHW] + [end[i] for i in _NHWC_TO_NCHW]
    g.replace_uses(node.outputs[0], node.inputs[0])
    g.remove_nodes([node])
    n, h, w, c = g.shapes[inp]
    g.shapes[inp] = (n, c, h, w)
    for pad in pads:
        _, _, ph, pw = g.shapes[pad.outputs[0]]
        g.shapes[pad.outputs[0]] = (n, c, ph, pw)
    g.meta["input_layout"] = "NCHW"
    return g
