"""The C backend: a fused-mode QGraph -> a self-contained C99 model (model.c / model.h).

The generated model reads like a recipe: weights as `const` arrays (they land in
flash), one static arena with offsets from `plan_arena`, and one kernel call per
layer, named after the layer. No interpreter and no malloc. The arithmetic is the
portable kernels' (firmware/runtime), which match the golden simulator bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.qgraph import QGraph, QNode
from calibration.requant import add_multipliers, conv_multipliers, prelu_negative_multipliers
from compiler.errors import BadInput

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "firmware" / "runtime"
ALIGN = 16


@dataclass
class ArenaPlan:
    """Byte offset of every activation tensor in the one static arena."""

    offsets: dict[str, int]
    sizes: dict[str, int]
    arena_bytes: int


def _nbytes(graph: QGraph, tensor: str) -> int:
    t = graph.tensors[tensor]
    return int(np.prod(t.shape[1:])) * (2 if t.dtype == "int16" else 1)


def plan_arena(graph: QGraph) -> ArenaPlan:
    """First-fit placement by liveness: a tensor lives from its producer to its last reader.

    Reshapes alias their input (same bytes, another shape).
    """
    alias = {n.output: n.inputs[0] for n in graph.nodes if n.op == "reshape"}

    def root(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    order = [graph.input] + [n.output for n in graph.nodes if n.op != "reshape"]
    born = {graph.input: 0} | {n.output: step for step, n in enumerate(graph.nodes, 1) if n.op != "reshape"}
    last = dict(born)
    for step, node in enumerate(graph.nodes, start=1):
        for t in node.inputs:
            last[root(t)] = max(last[root(t)], step)
    for out in graph.outputs:
        last[root(out)] = len(graph.nodes) + 1
    offsets: dict[str, int] = {}
    live: list[tuple[int, int, str]] = []  # (offset, size, tensor)
    sizes = {t: _nbytes(graph, t) for t in order}
    for t in order:
        live = [(o, s, name) for o, s, name in live if last[name] >= born[t]]
        offset = 0
        for o, s, _ in sorted(live):
            if offset + sizes[t] <= o:
                break
            offset = max(offset, -(-(o + s) // ALIGN) * ALIGN)
        offsets[t] = offset
        live.append((offset, sizes[t], t))
    for t, src in alias.items():
        offsets[t] = offsets[root(src)]
        sizes[t] = sizes[root(src)]
    arena = max(offsets[t] + sizes[t] for t in order)
    return ArenaPlan(offsets, sizes, -(-arena // ALIGN) * ALIGN)


def _ident(name: str, used: set[str]) -> str:
    base = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "layer"
    if base[0].isdigit():
        base = f"l_{base}"
    ident, i = base, 1
    while ident in used:
        i += 1
        ident = f"{base}_{i}"
    used.add(ident)
    return ident


def _array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat)
    return f"static const {ctype} {name}[{flat.size}] = {{{body}}};\n"


class _Emitter:
    def __init__(self, graph: QGraph) -> None:
        if graph.mode != "fused":
            raise BadInput(f"{graph.name}: the C backend compiles fused-mode models (got {graph.mode})")
        self.g = graph
        self.plan = plan_arena(graph)
        self.used: set[str] = set()
        self.constants: list[str] = []
        self.calls: list[str] = []
        self.layer_names: list[str] = []

    def layer_done(self, name: str) -> None:
        """Call the hook after a layer so the device can time each one."""
        index = len(self.layer_names)
        self.layer_names.append(re.sub(r'[^0-9a-zA-Z_./:-]', "_", name))
        self.calls.append(f"    if (hook) {{\n        hook({index}, context);\n    }}")

    def ptr(self, tensor: str) -> str:
        return f"(arena + {self.plan.offsets[tensor]})"

    def conv(self, node: QNode) -> None:
        g, a = self.g, node.attrs
        xt, yt = g.tensors[node.inputs[0]], g.tensors[node.output]
        name = _ident(node.name, self.used)
        weight = node.arrays["weight"]
        cout, _, kh, kw = weight.shape
        depthwise = a["group"] > 1
        if depthwise and (a["group"] != xt.shape[1] or cout != xt.shape[1]):
            raise BadInput(f"{node.name}: only depthwise convolutions with multiplier 1 are supported in C")
        if not depthwise and a["group"] != 1:
            raise BadInput(f"{node.name}: grouped convolutions are not supported in C")
        if a["dilations"] != [1, 1]:
            raise BadInput(f"{node.name}: dilated convolutions are not supported in C")
        w = weight[:, 0].transpose(1, 2, 0) if depthwise else weight.transpose(0, 2, 3, 1)
        mult, shift = conv_multipliers(g, node)
        self.constants += [
            _array("int8_t", f"{name}_w", w),
            _array("int32_t", f"{name}_b", node.arrays["bias"]),
            _array("int32_t", f"{name}_m", mult),
            _array("int32_t", f"{name}_s", shift),
        ]
        neg = "NULL, NULL, NULL"
        if "slope" in node.arrays:
            nm, ns, sign = prelu_negative_multipliers(g, node)
            self.constants += [
                _array("int32_t", f"{name}_nm", nm),
                _array("int32_t", f"{name}_ns", ns),
                _array("int8_t", f"{name}_sign", sign),
            ]
            neg = f"{name}_nm, {name}_ns, {name}_sign"
        pad = "NULL"
        if "pad_q" in a:
            self.constants.append(_array("int16_t", f"{name}_pad", np.asarray(a["pad_q"])))
            pad = f"{name}_pad"
        lo, hi = (-32768, 32767) if yt.dtype == "int16" else (-128, 127)
        _, cin, ih, iw = xt.shape
        _, _, oh, ow = yt.shape
        params = (
            f"{ih}, {iw}, {cin}, {oh}, {ow}, {cout}, {kh}, {kw}, {a['strides'][0]}, {a['strides'][1]}, "
            f"{a['pads'][0]}, {a['pads'][1]}, {int(depthwise)}, {int(xt.dtype == 'int16')}, "
            f"{int(yt.dtype == 'int16')}, {xt.zero_point}, {yt.zero_point}, {a.get('act_min', lo)}, "
            f"{a.get('act_max', hi)}, {name}_w, {name}_b, {name}_m, {name}_s, {neg}, {pad}"
        )
        self.constants.append(f"static const mfn_conv_t {name} = {{{params}}};\n")
        self.calls.append(f"    mfn_conv(&{name}, {self.ptr(node.inputs[0])}, {self.ptr(node.output)});")
        self.layer_done(node.name)

    def add(self, node: QNode) -> None:
        g = self.g
        name = _ident(node.name, self.used)
        (m1, s1), (m2, s2), (mo, so) = add_multipliers(g, node)
        za, zb = (g.tensors[t].zero_point for t in node.inputs)
        out = g.tensors[node.output]
        count = int(np.prod(out.shape[1:]))
        params = (
            f"{count}, {za}, {zb}, {out.zero_point}, {m1}, {s1}, {m2}, {s2}, {mo}, {so}, "
            f"{node.attrs.get('act_min', -128)}, {node.attrs.get('act_max', 127)}"
        )
        self.constants.append(f"static const mfn_add_t {name} = {{{params}}};\n")
        a, b = (self.ptr(t) for t in node.inputs)
        self.calls.append(
            f"    mfn_add(&{name}, (const int8_t *){a}, (const int8_t *){b}, (int8_t *){self.ptr(node.output)});"
        )
        self.layer_done(node.name)

    def reshape(self, node: QNode) -> None:
        shape = self.g.tensors[node.inputs[0]].shape
        if len(shape) == 4 and shape[2:] != (1, 1) and len(self.g.tensors[node.output].shape) != 4:
            raise BadInput(f"{node.name}: flattening a spatial map is not supported in C (NHWC order differs)")
        self.calls.append(f"    /* {node.name}: reshape, same bytes */")

    def emit(self, model_hash: str) -> tuple[str, str]:
        g = self.g
        for node in g.nodes:
            if node.op == "prelu":
                raise BadInput(f"{node.name}: a standalone PReLU is not supported in C (fuse it into the conv)")
            getattr(self, node.op)(node)
        _, c, h, w = g.tensors[g.input].shape
        out = g.outputs[0]
        out_bytes = self.plan.sizes[out]
        out_t = g.tensors[out]
        header = f"""/* Generated by mfnc from {g.meta.get("model", g.name)}: do not edit. */
#ifndef MFN_MODEL_H
#define MFN_MODEL_H

#include <stdint.h>

#define MFN_INPUT_H {h}
#define MFN_INPUT_W {w}
#define MFN_INPUT_C {c}
#define MFN_INPUT_BYTES {h * w * c}
#define MFN_OUTPUT_COUNT {int(np.prod(out_t.shape[1:]))}
#define MFN_OUTPUT_BYTES {out_bytes}
#define MFN_OUTPUT_INT16 {int(out_t.dtype == "int16")}
#define MFN_OUTPUT_SCALE {float(out_t.scale)!r}f
#define MFN_OUTPUT_ZERO_POINT {out_t.zero_point}
#define MFN_ARENA_BYTES {self.plan.arena_bytes}
#define MFN_MODEL_HASH "{model_hash}"
#define MFN_LAYER_COUNT {len(self.layer_names)}

/* Called after each layer with its index (0 .. MFN_LAYER_COUNT-1), e.g. to time it. */
typedef void (*mfn_layer_hook_t)(int32_t layer, void *context);

/* Layer names, in the order the hook sees them. */
extern const char *const mfn_layer_names[MFN_LAYER_COUNT];

/*
 * pixels: raw RGB, HWC, uint8; output: MFN_OUTPUT_COUNT int8 (or int16) values.
 * hook may be NULL.
 */
void mfn_model_run(const uint8_t *pixels, void *output, mfn_layer_hook_t hook, void *context);

#endif
"""
        body = "".join(self.constants)
        calls = "\n".join(self.calls)
        names = ", ".join(f'"{n}"' for n in self.layer_names)
        source = f"""/* Generated by mfnc from {g.meta.get("model", g.name)}: do not edit. */
#include <stddef.h>
#include <string.h>

#include "mfn_kernels.h"
#include "model.h"

/* One static arena for every activation; linker scripts may place .bss.mfn_arena. */
static int8_t arena[MFN_ARENA_BYTES] __attribute__((aligned({ALIGN}), section(".bss.mfn_arena")));

const char *const mfn_layer_names[MFN_LAYER_COUNT] = {{{names}}};

{body}
void mfn_model_run(const uint8_t *pixels, void *output, mfn_layer_hook_t hook, void *context)
{{
    mfn_pixels_to_input(pixels, {self.ptr(g.input)}, MFN_INPUT_BYTES);
{calls}
    memcpy(output, {self.ptr(out)}, MFN_OUTPUT_BYTES);
}}
"""
        return header, source


def emit_c(graph: QGraph, out_dir: Path, model_hash: str = "") -> ArenaPlan:
    """Write model.h and model.c for a fused-mode quantized model; returns the arena plan."""
    emitter = _Emitter(graph)
    header, source = emitter.emit(model_hash)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.h").write_text(header)
    (out_dir / "model.c").write_text(source)
    return emitter.plan
