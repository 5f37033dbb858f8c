"""Our graph IR: a topologically ordered list of nodes over named tensors.

Activations are NCHW float32. Weights and other constants live in `Graph.constants`.
Every frontend produces this IR and every pass and backend consumes it, so it stays
deliberately small: the op set is the one MobileFaceNet-like networks need (each op's
meaning is its function in `compiler.executor`), and anything else is rejected at
ingest with the node's name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Node:
    """One operation. Inputs and outputs are tensor names."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """A model: nodes in execution order, constants, and graph inputs/outputs.

    `meta` records facts about the graph inputs that passes change, e.g.
    `input_kind` ("normalized" until preprocessing is folded in, then "pixels"),
    `source_layout` of the original model input ("NCHW" or "NHWC").
    """

    name: str
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Graph:
        """Deep copy of structure; constant arrays are copied too so passes may mutate."""
        return Graph(
            name=self.name,
            nodes=[Node(n.op, n.name, list(n.inputs), list(n.outputs), copy.deepcopy(n.attrs)) for n in self.nodes],
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            constants={k: v.copy() for k, v in self.constants.items()},
            shapes=dict(self.shapes),
            meta=copy.deepcopy(self.meta),
        )

    def producer(self, tensor: str) -> Node | None:
        for node in self.nodes:
            if tensor in node.outputs:
                return node
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [node for node in self.nodes if tensor in node.inputs]

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.constants

    def replace_uses(self, old: str, new: str) -> None:
        """Point every consumer (and the graph outputs) of `old` at `new`."""
        for node in self.nodes:
            node.inputs = [new if t == old else t for t in node.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]

    def remove_nodes(self, doomed: Iterable[Node]) -> None:
        ids = {id(n) for n in doomed}
        self.nodes = [n for n in self.nodes if id(n) not in ids]

    def prune(self) -> None:
        """Drop nodes whose outputs nobody uses and constants nobody reads."""
        changed = True
        while changed:
            used = set(self.outputs)
            for node in self.nodes:
                used.update(node.inputs)
            kept = [n for n in self.nodes if any(o in used for o in n.outputs)]
            changed = len(kept) != len(self.nodes)
            self.nodes = kept
        used = set(self.outputs)
        for node in self.nodes:
            used.update(node.inputs)
        self.constants = {k: v for k, v in self.constants.items() if k in used}
        self.shapes = {k: v for k, v in self.shapes.items() if k in used or any(k in n.outputs for n in self.nodes)}

    def unique_name(self, base: str) -> str:
        taken = set(self.constants) | set(self.inputs)
        for node in self.nodes:
            taken.update(node.outputs)
            taken.add(node.name)
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def input_shape(self) -> tuple[int, ...]:
        return self.shapes[self.inputs[0]]

    def image_hw(self) -> tuple[int, int]:
        """Input image (height, width), whether the input is still NHWC or already NCHW."""
        shape = self.input_shape()
        nhwc = self.meta.get("source_layout") == "NHWC" and self.meta.get("input_layout") != "NCHW"
        return (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
