"""Graph passes, run in order and each checked for float equivalence.

Each pass is a small function from IR to IR. `run_passes` applies them one by one,
measures max|a-b|/max|b| against onnxruntime on the original model after each, and
stops with an error naming the pass if one breaks the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from compiler.equivalence import OnnxReference, compare
from compiler.errors import MfncError
from compiler.ir import Graph
from compiler.passes.activations import canonicalise_activations
from compiler.passes.batchnorm import fold_batchnorm
from compiler.passes.cleanup import fold_constants, fold_pad, remove_identity
from compiler.passes.gdconv import mark_gdconv
from compiler.passes.layout import canonicalise_input_layout
from compiler.passes.preprocess import fold_preprocess

__all__ = [
    "EQUIVALENCE_TOLERANCE",
    "apply_passes",
    "canonicalise_activations",
    "canonicalise_input_layout",
    "fold_batchnorm",
    "fold_constants",
    "fold_pad",
    "fold_preprocess",
    "mark_gdconv",
    "remove_identity",
    "run_passes",
]
from compiler.preprocess import Preprocess
from compiler.summary import describe

EQUIVALENCE_TOLERANCE = 1e-5

Pass = Callable[[Graph], Graph]


@dataclass
class PassRecord:
    name: str
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    max_rel_err: float

    def as_dict(self) -> dict:
        if self.name == "ingest":
            return {"name": self.name, "max_rel_err": self.max_rel_err, "ops": dict(sorted(self.ops_after.items()))}
        changed = {
            op: [self.ops_before.get(op, 0), self.ops_after.get(op, 0)]
            for op in sorted(set(self.ops_before) | set(self.ops_after))
            if self.ops_before.get(op, 0) != self.ops_after.get(op, 0)
        }
        return {"name": self.name, "max_rel_err": self.max_rel_err, "ops_changed": changed}


def pipeline(pre: Preprocess) -> list[tuple[str, Pass]]:
    """The pass list, in order."""
    return [
        ("canonicalise_input_layout", canonicalise_input_layout),
        ("remove_identity", remove_identity),
        ("fold_pad", fold_pad),
        ("fold_constants", fold_constants),
        ("canonicalise_activations", canonicalise_activations),
        ("fold_batchnorm", fold_batchnorm),
        ("fold_constants", fold_constants),
        ("mark_gdconv", mark_gdconv),
        ("fold_preprocess", partial(fold_preprocess, pre=pre)),
    ]


def _ops(graph: Graph) -> dict[str, int]:
    """Node counts by kind (e.g. 'DWConv s2', 'GDConv s1', 'PRelu'), so every pass's effect shows."""
    return dict(Counter(describe(n) for n in graph.nodes))


def run_passes(
    graph: Graph,
    reference: OnnxReference,
    images: np.ndarray,
    pre: Preprocess,
    on_pass: Callable[[str], None] | None = None,
) -> tuple[Graph, list[PassRecord]]:
    """Apply every pass with an equivalence check after each; the first record is ingest."""
    records = [PassRecord("ingest", {}, _ops(graph), compare(graph, reference, images))]
    if records[0].max_rel_err > EQUIVALENCE_TOLERANCE:
        raise MfncError(
            f"internal error: the imported IR differs from onnxruntime by {records[0].max_rel_err:.2e} "
            f"(tolerance {EQUIVALENCE_TOLERANCE:.0e})"
        )
    for name, fn in pipeline(pre):
        if on_pass:
            on_pass(name)
        before = _ops(graph)
        graph = fn(graph)
        err = compare(graph, reference, images)
        records.append(PassRecord(name, before, _ops(graph), err))
        if err > EQUIVALENCE_TOLERANCE:
            raise MfncError(
                f"internal error: pass {name} changed the model output by {err:.2e} "
                f"(tolerance {EQUIVALENCE_TOLERANCE:.0e})"
            )
    return graph, records


def apply_passes(graph: Graph, skip: tuple[str, ...] = ("fold_preprocess",)) -> Graph:
    """The pipeline without equivalence checks (for quick structural views like inspect)."""
    pre = Preprocess("paper", "rgb", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
    for name, fn in pipeline(pre):
        if name not in skip:
            graph = fn(graph)
    return graph
