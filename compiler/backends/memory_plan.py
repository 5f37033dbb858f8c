"""The C backend's memory planner: where every activation lives in the one static arena.

Three ideas, each general (nothing here knows MobileFaceNet):

1. **Fusion.** A 1x1 dense conv (stride 1, no padding) whose output is read only by
   the depthwise conv that follows it is computed row by row into a ring of `kh`
   expanded rows, and the depthwise runs on that ring (`mfn_expand_depthwise`): the
   expanded tensor never exists whole, and no row is computed twice. Which pairs to
   fuse is decided by the arena: plan with every fusible pair fused, then unfuse
   each pair (smallest expanded tensor first) whose unfusing does not make the arena
   larger. Fusion is kept only where it lowers the peak.

2. **In place.** The kernels compute output rows top to bottom (see the contract in
   firmware/runtime/mfn_kernels.h), so an output may overlap an input that dies with
   the call, provided that output row y never lands on an input row still to be read.
   For each (op, dying input) this gives the largest allowed `O - I` (output offset
   minus input offset): `min over y of safe(y) * in_row_bytes - (y + 1) * out_row_bytes`,
   where safe(y) is the first input row the kernel may still read once it writes
   output row y (y*stride - pad for a conv, one past the last row pulled into the
   ring for a fused pair). Elementwise ops (add) allow `O <= I`.

3. **Placement.** Tensors with overlapping lifetimes must not overlap in memory
   unless (2) allows it. Several greedy placements are tried (orders: by birth, by
   size, by lifetime, reversed birth; policies: lowest free offset, or the offset
   that grows the arena least, allowing it to grow downwards) and the smallest is
   kept. Every plan is re-checked pair by pair (`check_plan`) before it is returned.

The arena holds activations, the input (the device may upload pixels straight into
it, see `input_offset`) and the fused pairs' ring buffers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from calibration.qgraph import QGraph, QNode

ALIGN = 16
MAX_KERNEL_H = 32  # MFN_MAX_KERNEL_H in firmware/runtime/mfn_kernels.h
NO_LIMIT = 1 << 62


@dataclass
class Op:
    """One kernel call of the generated model: a node, or a fused expansion + depthwise."""

    nodes: tuple[QNode, ...]
    inputs: list[str]  # tensors read (alias roots)
    output: str
    scratch: str | None = None  # the ring buffer of a fused pair

    @property
    def name(self) -> str:
        return "+".join(n.name for n in self.nodes)


@dataclass
class ArenaPlan:
    """Byte offset of every tensor in the one static arena, and how the plan was made.

    offsets/sizes cover every tensor that exists in memory (reshapes alias their input;
    the expanded tensor of a fused pair does not exist) and the ring buffers.
    """

    offsets: dict[str, int]
    sizes: dict[str, int]
    arena_bytes: int
    fused: list[tuple[str, str]] = field(default_factory=list)  # (expansion, depthwise) node names
    scratch: dict[str, int] = field(default_factory=dict)  # ring buffer -> bytes (also in offsets)
    in_place: list[tuple[str, str]] = field(default_factory=list)  # (output, input) sharing bytes
    input_offset: int = 0
    peak_layer: str = ""  # the call whose live tensors span the most bytes
    peak_live_bytes: int = 0  # bytes of the union of the live tensors during that call
    strategy: str = ""  # the placement order/policy that won
    unfused_arena_bytes: int = 0  # the same placement with no fusion, for comparison
    flash_bytes: int = 0  # constants of the generated model.c (set by the emitter)

    @property
    def scratch_bytes(self) -> int:
        return sum(self.scratch.values())

    def summary(self) -> dict:
        """The numbers a build report shows."""
        return {
            "arena_bytes": self.arena_bytes,
            "unfused_arena_bytes": self.unfused_arena_bytes,
            "peak_layer": self.peak_layer,
            "peak_live_bytes": self.peak_live_bytes,
            "fused_pairs": [list(p) for p in self.fused],
            "scratch_bytes": self.scratch_bytes,
            "in_place": len(self.in_place),
            "input_offset": self.input_offset,
            "strategy": self.strategy,
            "flash_bytes": self.flash_bytes,
        }


def nbytes(graph: QGraph, tensor: str) -> int:
    t = graph.tensors[tensor]
    return int(np.prod(t.shape[1:])) * (2 if t.dtype == "int16" else 1)


def _rows(graph: QGraph, tensor: str) -> tuple[int, int]:
    """(rows, bytes per row) of a tensor in the device's NHWC layout."""
    t = graph.tensors[tensor]
    size = 2 if t.dtype == "int16" else 1
    if len(t.shape) == 4:
        _, c, h, w = t.shape
        return int(h), int(w * c * size)
    return 1, nbytes(graph, tensor)


def _is_depthwise(graph: QGraph, node: QNode) -> bool:
    if node.op != "conv":
        return False
    channels = graph.tensors[node.inputs[0]].shape[1]
    return node.attrs["group"] > 1 and node.attrs["group"] == channels == node.arrays["weight"].shape[0]


def fusible_pairs(graph: QGraph) -> list[tuple[QNode, QNode]]:
    """(expansion, depthwise) pairs the fused kernel computes exactly.

    The expansion is a dense 1x1 conv with stride 1 and no padding; its output is read
    by the very next node only, a depthwise conv (multiplier 1, no dilation, kernel at
    most MAX_KERNEL_H rows), and is not a model output.
    """
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for t in set(node.inputs):
            readers[t] = readers.get(t, 0) + 1
    pairs = []
    for first, second in zip(graph.nodes, graph.nodes[1:], strict=False):
        if first.op != "conv" or not _is_depthwise(graph, second) or second.inputs != [first.output]:
            continue
        a, w = first.attrs, first.arrays["weight"]
        if a["group"] != 1 or w.shape[2:] != (1, 1) or a["strides"] != [1, 1] or any(a["pads"]):
            continue
        if len(graph.tensors[first.inputs[0]].shape) != 4 or readers.get(first.output) != 1:
            continue
        if first.output in graph.outputs or second.attrs["dilations"] != [1, 1]:
            continue
        if second.arrays["weight"].shape[2] > MAX_KERNEL_H:
            continue
        pairs.append((first, second))
    return pairs


def ring_name(depthwise: str) -> str:
    """The arena name of a fused pair's ring buffer (named after its depthwise node)."""
    return f"{depthwise}:ring"


def _ring_bytes(graph: QGraph, dw: QNode) -> int:
    _, row = _rows(graph, dw.inputs[0])
    return dw.arrays["weight"].shape[2] * row


def _ops(graph: QGraph, fused: Iterable[tuple[QNode, QNode]]) -> tuple[list[Op], dict[str, str]]:
    """The calls in execution order, and reshape aliases (alias -> root tensor)."""
    alias: dict[str, str] = {}
    for n in graph.nodes:
        if n.op == "reshape":
            alias[n.output] = alias.get(n.inputs[0], n.inputs[0])
    pair_of = {e.name: d for e, d in fused}
    ops: list[Op] = []
    skip = set()
    for node in graph.nodes:
        if node.op == "reshape" or node.name in skip:
            continue
        inputs = list(dict.fromkeys(alias.get(t, t) for t in node.inputs))
        if node.name in pair_of:
            dw = pair_of[node.name]
            skip.add(dw.name)
            ops.append(Op((node, dw), inputs, dw.output, ring_name(dw.name)))
        else:
            ops.append(Op((node,), inputs, node.output))
    return ops, alias


def _max_shift(graph: QGraph, op: Op, tensor: str) -> int | None:
    """Largest allowed (output offset - input offset) when the output overlaps `tensor`.

    None: the op cannot share bytes with this input.
    """
    first = op.nodes[0]
    if first.op == "add":
        return 0 if nbytes(graph, tensor) == nbytes(graph, op.output) else None
    if first.op != "conv" or len(graph.tensors[tensor].shape) != 4 or len(graph.tensors[op.output].shape) != 4:
        return None
    last = op.nodes[-1]  # the node whose rows are written (the depthwise of a fused pair)
    h_in, r_in = _rows(graph, tensor)
    h_out, r_out = _rows(graph, op.output)
    stride, pad, kh = last.attrs["strides"][0], last.attrs["pads"][0], last.arrays["weight"].shape[2]
    reach = kh if len(op.nodes) == 2 else 0  # a fused pair pulls rows into its ring before writing

    def safe(y: int) -> int:
        return min(max(y * stride - pad + reach, 0), h_in)

    return min(safe(y) * r_in - (y + 1) * r_out for y in range(h_out))


@dataclass
class _Problem:
    """What placement must respect: sizes, lifetimes, and allowed overlaps."""

    ops: list[Op]
    alias: dict[str, str]
    sizes: dict[str, int]
    born: dict[str, int]
    last: dict[str, int]
    allowed: dict[tuple[str, str], tuple[int, int]]  # (a, b) -> allowed window of off[a] - off[b]
    neighbours: dict[str, set[str]] = field(default_factory=dict)  # tensors whose lifetimes overlap

    def conflicts(self, a: str, b: str) -> bool:
        return self.born[a] <= self.last[b] and self.born[b] <= self.last[a]


def _problem(graph: QGraph, fused: Iterable[tuple[QNode, QNode]]) -> _Problem:
    ops, alias = _ops(graph, fused)
    sizes = {graph.input: nbytes(graph, graph.input)}
    born = {graph.input: 0}
    for step, op in enumerate(ops, start=1):
        sizes[op.output] = nbytes(graph, op.output)
        born[op.output] = step
        if op.scratch:
            sizes[op.scratch] = _ring_bytes(graph, op.nodes[-1])
            born[op.scratch] = step
    last = dict(born)
    for step, op in enumerate(ops, start=1):
        for t in op.inputs:
            last[t] = max(last[t], step)
    for out in graph.outputs:
        last[alias.get(out, out)] = len(ops) + 1
    allowed: dict[tuple[str, str], tuple[int, int]] = {}
    for step, op in enumerate(ops, start=1):
        for t in op.inputs:
            if last[t] != step:
                continue
            shift = _max_shift(graph, op, t)
            if shift is not None and shift > -sizes[op.output]:
                allowed[(op.output, t)] = (-NO_LIMIT, shift)
                allowed[(t, op.output)] = (-shift, NO_LIMIT)
    p = _Problem(ops, alias, sizes, born, last, allowed)
    p.neighbours = {t: {o for o in sizes if o != t and p.conflicts(t, o)} for t in sizes}
    return p


def _align_up(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


def _align_down(x: int) -> int:
    return (x // ALIGN) * ALIGN


def _forbidden(p: _Problem, t: str, other: str, at: int) -> list[tuple[int, int]]:
    """Closed ranges of offsets for t that clash with `other` placed at `at`."""
    lo, hi = at - p.sizes[t] + 1, at + p.sizes[other] - 1  # any overlap
    if (t, other) not in p.allowed:
        return [(lo, hi)]
    a_lo, a_hi = p.allowed[(t, other)]
    pieces = [(lo, min(hi, at + a_lo - 1)), (max(lo, at + a_hi + 1), hi)]
    return [(a, b) for a, b in pieces if a <= b]


def _place(p: _Problem, order: list[str], policy: str) -> dict[str, int]:
    offsets: dict[str, int] = {}
    bottom, top = 0, 0
    for t in order:
        size = p.sizes[t]
        ranges = [r for o in p.neighbours[t] if o in offsets for r in _forbidden(p, t, o, offsets[o])]

        def free(x: int, ranges: list[tuple[int, int]] = ranges) -> bool:
            return all(not a <= x <= b for a, b in ranges)

        candidates = {0} | {_align_up(b + 1) for _, b in ranges}
        if policy == "lowest":
            offsets[t] = min(c for c in candidates if c >= 0 and free(c))
        else:  # "compact": the offset that grows the arena least, below 0 allowed
            candidates |= {_align_down(a - 1) for a, _ in ranges}
            if offsets:
                candidates |= {_align_up(top), _align_down(bottom - size)}
            fits = [c for c in candidates if free(c)]
            offsets[t] = min(fits, key=lambda c: (max(top, c + size) - min(bottom, c), abs(c)))
        if len(offsets) == 1:
            bottom, top = offsets[t], offsets[t] + size
        bottom, top = min(bottom, offsets[t]), max(top, offsets[t] + size)
    return {t: o - bottom for t, o in offsets.items()}


_ORDERS = {
    "birth": lambda p, t: (p.born[t], -p.sizes[t]),
    "size": lambda p, t: (-p.sizes[t], p.born[t]),
    "lifetime": lambda p, t: (-(p.last[t] - p.born[t]), -p.sizes[t], p.born[t]),
    "reverse": lambda p, t: (-p.born[t], -p.sizes[t]),
}


def _best_placement(p: _Problem) -> tuple[dict[str, int], int, str]:
    best: tuple[dict[str, int], int, str] | None = None
    for order_name, key in _ORDERS.items():
        order = sorted(p.sizes, key=lambda t, key=key: key(p, t))
        for policy in ("compact", "lowest"):
            offsets = _place(p, order, policy)
            arena = _align_up(max(offsets[t] + p.sizes[t] for t in offsets))
            if best is None or arena < best[1]:
                best = (offsets, arena, f"{order_name}/{policy}")
    assert best is not None
    return best


def _check(p: _Problem, offsets: dict[str, int]) -> None:
    names = list(p.sizes)
    for t in names:
        if offsets[t] % ALIGN or offsets[t] < 0:
            raise AssertionError(f"memory plan: {t} at {offsets[t]} is not aligned")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if not p.conflicts(a, b):
                continue
            oa, ob = offsets[a], offsets[b]
            if oa + p.sizes[a] <= ob or ob + p.sizes[b] <= oa:
                continue
            lo, hi = p.allowed.get((a, b), (1, 0))
            if not lo <= oa - ob <= hi:
                raise AssertionError(f"memory plan: live tensors {a} and {b} overlap")


def _plan(graph: QGraph, fused: list[tuple[QNode, QNode]]) -> tuple[_Problem, dict[str, int], int, str]:
    p = _problem(graph, fused)
    offsets, arena, strategy = _best_placement(p)
    _check(p, offsets)
    return p, offsets, arena, strategy


def _peak(p: _Problem, offsets: dict[str, int]) -> tuple[str, int]:
    """The call whose live tensors cover the most bytes (their union), and those bytes."""
    best = ("", 0)
    for step, op in enumerate(p.ops, start=1):
        spans = sorted((offsets[t], offsets[t] + p.sizes[t]) for t in p.sizes if p.born[t] <= step <= p.last[t])
        covered, end = 0, -1
        for a, b in spans:
            covered += max(0, b - max(a, end))
            end = max(end, b)
        if covered > best[1]:
            best = (op.name, covered)
    return best


def plan_arena(graph: QGraph, fuse: str | Iterable[str] = "auto") -> ArenaPlan:
    """Plan the arena. fuse: "auto" (where it lowers the arena), "all", "none", or the
    names of the depthwise nodes whose expansion to fuse."""
    pairs = fusible_pairs(graph)
    if fuse == "none":
        chosen: list[tuple[QNode, QNode]] = []
    elif fuse in ("auto", "all"):
        chosen = list(pairs)
    else:
        wanted = set(fuse)
        chosen = [pr for pr in pairs if pr[1].name in wanted]
    p, offsets, arena, strategy = _plan(graph, chosen)
    if fuse == "auto" and chosen:
        for pair in sorted(pairs, key=lambda pr: nbytes(graph, pr[0].output)):
            trial = [pr for pr in chosen if pr is not pair]
            plan = _plan(graph, trial)
            if plan[2] <= arena:
                chosen, (p, offsets, arena, strategy) = trial, plan
    unfused = arena if not chosen else _plan(graph, [])[2]
    sizes = dict(p.sizes)
    for t, root in p.alias.items():
        offsets[t], sizes[t] = offsets[root], sizes[root]
    in_place = [
        (a, b)
        for (a, b), (lo, _) in p.allowed.items()
        if lo == -NO_LIMIT and offsets[a] < offsets[b] + p.sizes[b] and offsets[b] < offsets[a] + p.sizes[a]
    ]
    peak_layer, peak_live = _peak(p, offsets)
    return ArenaPlan(
        offsets=offsets,
        sizes=sizes,
        arena_bytes=arena,
        fused=[(e.name, d.name) for e, d in chosen],
        scratch={op.scratch: p.sizes[op.scratch] for op in p.ops if op.scratch},
        in_place=in_place,
        input_offset=offsets[graph.input],
        peak_layer=peak_layer,
        peak_live_bytes=peak_live,
        strategy=strategy,
        unfused_arena_bytes=unfused,
    )


def check_plan(graph: QGraph, plan: ArenaPlan) -> None:
    """Re-derive lifetimes and allowed overlaps for the plan's fused pairs and verify
    every pair of live tensors; raises AssertionError on the first violation."""
    names = {d for _, d in plan.fused}
    p = _problem(graph, [pr for pr in fusible_pairs(graph) if pr[1].name in names])
    if set(p.sizes) - set(plan.offsets):
        raise AssertionError(f"memory plan: no offset for {sorted(set(p.sizes) - set(plan.offsets))}")
    _check(p, plan.offsets)
    if max(plan.offsets[t] + p.sizes[t] for t in p.sizes) > plan.arena_bytes:
        raise AssertionError("memory plan: a tensor ends past the arena")
