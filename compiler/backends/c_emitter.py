"""The C backend: a fused-mode QGraph -> a self-contained C99 model (model.c / model.h).

The generated model reads like a recipe: weights as `const` arrays (they land in
flash), one static arena with offsets from the memory planner (`memory_plan.py`:
liveness, outputs in place, fused expansion + depthwise pairs), and one kernel call
per layer or fused pair, named after the layer. No interpreter and no malloc. The
arithmetic is the portable kernels' (firmware/runtime), which match the golden
simulator bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calibration.qgraph import QGraph, QNode
from calibration.requant import add_multipliers, conv_multipliers, prelu_negative_multipliers
from compiler.backends.memory_plan import ALIGN, MAX_KERNEL_H, ArenaPlan, plan_arena, ring_name
from compiler.errors import BadInput

__all__ = ["RUNTIME_DIR", "ArenaPlan", "emit_c", "plan_arena"]

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "firmware" / "runtime"

# Bytes of the parameter structs in flash on a 32-bit target (ints and pointers of 4 bytes).
CONV_STRUCT_BYTES = 19 * 4 + 8 * 4
ADD_STRUCT_BYTES = 12 * 4
_CTYPE_BYTES = {"int8_t": 1, "int16_t": 2, "int32_t": 4}


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


def _comment(text: str) -> str:
    return text.replace("*/", "* /")


def _array(ctype: str, name: str, values: np.ndarray) -> tuple[str, int]:
    """A const array definition and its bytes."""
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat)
    return f"static const {ctype} {name}[{flat.size}] = {{{body}}};\n", flat.size * _CTYPE_BYTES[ctype]


class _Emitter:
    def __init__(self, graph: QGraph, fuse: str | Iterable[str] = "auto") -> None:
        if graph.mode != "fused":
            raise BadInput(f"{graph.name}: the C backend compiles fused-mode models (got {graph.mode})")
        self.g = graph
        self.plan = plan_arena(graph, fuse)
        self.used: set[str] = set()
        self.constants: list[str] = []
        self.flash = 0
        self.calls: list[str] = []
        self.layer_names: list[str] = []
        self.fused_expansion = {e: d for e, d in self.plan.fused}
        self.pending: dict[str, str] = {}  # fused expansion node -> its struct, until its depthwise

    def const(self, ctype: str, name: str, values: np.ndarray) -> None:
        text, size = _array(ctype, name, values)
        self.constants.append(text)
        self.flash += size

    def layer(self, name: str) -> int:
        self.layer_names.append(re.sub(r"[^0-9a-zA-Z_./:-]", "_", name))
        return len(self.layer_names) - 1

    def hook(self, index: int) -> None:
        """Call the hook after a layer so the device can time each one."""
        self.calls.append(f"    if (hook) {{\n        hook({index}, context);\n    }}")

    def ptr(self, tensor: str) -> str:
        return f"(arena + {self.plan.offsets[tensor]})"

    def conv_struct(self, node: QNode) -> str:
        """The constants and the mfn_conv_t of one conv; returns the struct's name."""
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
        if kh > MAX_KERNEL_H:
            raise BadInput(f"{node.name}: kernels taller than {MAX_KERNEL_H} rows are not supported in C")
        if xt.dtype == "int8" and int(np.abs(weight.astype(np.int64)).reshape(cout, -1).sum(1).max()) * 255 >= 2**31:
            raise BadInput(f"{node.name}: the int8 accumulator could overflow 32 bits (kernel too large)")
        w = weight[:, 0].transpose(1, 2, 0) if depthwise else weight.transpose(0, 2, 3, 1)
        mult, shift = conv_multipliers(g, node)
        self.const("int8_t", f"{name}_w", w)
        self.const("int32_t", f"{name}_b", node.arrays["bias"])
        self.const("int32_t", f"{name}_m", mult)
        self.const("int32_t", f"{name}_s", shift)
        neg = "NULL, NULL, NULL"
        if "slope" in node.arrays:
            nm, ns, sign = prelu_negative_multipliers(g, node)
            self.const("int32_t", f"{name}_nm", nm)
            self.const("int32_t", f"{name}_ns", ns)
            self.const("int8_t", f"{name}_sign", sign)
            neg = f"{name}_nm, {name}_ns, {name}_sign"
        pad = "NULL"
        if "pad_q" in a:
            self.const("int16_t", f"{name}_pad", np.asarray(a["pad_q"]))
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
        self.flash += CONV_STRUCT_BYTES
        return name

    def conv(self, node: QNode) -> None:
        name = self.conv_struct(node)
        if node.name in self.fused_expansion:
            self.pending[node.name] = name
            return
        expansion = next((e for e, d in self.plan.fused if d == node.name), None)
        if expansion is None:
            self.calls.append(f"    mfn_conv(&{name}, {self.ptr(node.inputs[0])}, {self.ptr(node.output)});")
            self.hook(self.layer(node.name))
            return
        source = self.g.node_producing(node.inputs[0])
        assert source is not None and source.name == expansion
        ring = ring_name(node.name)
        self.calls.append(
            f"    /* {_comment(expansion)} + {_comment(node.name)}: fused, the expanded tensor never exists whole */\n"
            f"    mfn_expand_depthwise(&{self.pending.pop(expansion)}, &{name}, {self.ptr(source.inputs[0])}, "
            f"{self.ptr(ring)}, {self.ptr(node.output)});"
        )
        first = self.layer(expansion)
        self.hook(first)
        self.hook(self.layer(node.name))

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
        self.flash += ADD_STRUCT_BYTES
        a, b = (self.ptr(t) for t in node.inputs)
        self.calls.append(
            f"    mfn_add(&{name}, (const int8_t *){a}, (const int8_t *){b}, (int8_t *){self.ptr(node.output)});"
        )
        self.hook(self.layer(node.name))

    def reshape(self, node: QNode) -> None:
        shape = self.g.tensors[node.inputs[0]].shape
        if len(shape) == 4 and shape[2:] != (1, 1) and len(self.g.tensors[node.output].shape) != 4:
            raise BadInput(f"{node.name}: flattening a spatial map is not supported in C (NHWC order differs)")
        self.calls.append(f"    /* {_comment(node.name)}: reshape, same bytes */")

    def emit(self, model_hash: str) -> tuple[str, str]:
        g, plan = self.g, self.plan
        for node in g.nodes:
            if node.op == "prelu":
                raise BadInput(f"{node.name}: a standalone PReLU is not supported in C (fuse it into the conv)")
            getattr(self, node.op)(node)
        _, c, h, w = g.tensors[g.input].shape
        out = g.outputs[0]
        out_bytes = plan.sizes[out]
        out_t = g.tensors[out]
        names = ", ".join(f'"{n}"' for n in self.layer_names)
        self.flash += sum(len(n) + 1 for n in self.layer_names) + 4 * len(self.layer_names)
        plan.flash_bytes = self.flash
        fused = "".join(f"\n *   {_comment(e)} + {_comment(d)}" for e, d in plan.fused) or " none"
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
/* Activations, input and scratch (MFN_SCRATCH_BYTES of ring buffers) in one arena. */
#define MFN_ARENA_BYTES {plan.arena_bytes}
#define MFN_SCRATCH_BYTES {plan.scratch_bytes}
/* Where the input tensor lives in the arena: see mfn_model_input(). */
#define MFN_INPUT_OFFSET {plan.input_offset}
#define MFN_MODEL_HASH "{model_hash}"
#define MFN_LAYER_COUNT {len(self.layer_names)}
#define MFN_FUSED_PAIRS {len(plan.fused)}

/*
 * Called after each layer with its index (0 .. MFN_LAYER_COUNT-1), e.g. to time it.
 * A fused pair (expansion + depthwise computed together, row by row) is one call:
 * the hook then sees both of its layers, in order, after the pair, so the pair's
 * time shows on the expansion and the depthwise's reads ~0. Fused pairs:{fused}
 */
typedef void (*mfn_layer_hook_t)(int32_t layer, void *context);

/* Layer names, in the order the hook sees them. */
extern const char *const mfn_layer_names[MFN_LAYER_COUNT];

/*
 * pixels: raw RGB, HWC, uint8; output: MFN_OUTPUT_COUNT int8 (or int16) values.
 * hook may be NULL.
 */
void mfn_model_run(const uint8_t *pixels, void *output, mfn_layer_hook_t hook, void *context);

/*
 * The input tensor's MFN_INPUT_BYTES inside the arena. Writing the pixels there and
 * passing this pointer to mfn_model_run converts them in place, so the device needs
 * no separate input buffer. The run overwrites them: upload again before each run.
 */
uint8_t *mfn_model_input(void);

#endif
"""
        body = "".join(self.constants)
        calls = "\n".join(self.calls)
        source = f"""/* Generated by mfnc from {g.meta.get("model", g.name)}: do not edit. */
#include <stddef.h>
#include <string.h>

#include "mfn_kernels.h"
#include "model.h"

/*
 * One static arena for every activation; linker scripts may place .bss.mfn_arena.
 * Offsets come from the memory planner (compiler/backends/memory_plan.py): an output
 * may overlap an input that dies with the call, as the kernels' row order allows.
 */
static int8_t arena[MFN_ARENA_BYTES] __attribute__((aligned({ALIGN}), section(".bss.mfn_arena")));

const char *const mfn_layer_names[MFN_LAYER_COUNT] = {{{names}}};

{body}
uint8_t *mfn_model_input(void)
{{
    return (uint8_t *)(arena + MFN_INPUT_OFFSET);
}}

void mfn_model_run(const uint8_t *pixels, void *output, mfn_layer_hook_t hook, void *context)
{{
    mfn_pixels_to_input(pixels, {self.ptr(g.input)}, MFN_INPUT_BYTES);
{calls}
    memmove(output, {self.ptr(out)}, MFN_OUTPUT_BYTES);
}}
"""
        return header, source


def emit_c(graph: QGraph, out_dir: Path, model_hash: str = "", fuse: str | Iterable[str] = "auto") -> ArenaPlan:
    """Write model.h and model.c for a fused-mode quantized model; returns the arena plan
    (with `flash_bytes`, the constants model.c holds). fuse: see `plan_arena`."""
    emitter = _Emitter(graph, fuse)
    header, source = emitter.emit(model_hash)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.h").write_text(header)
    (out_dir / "model.c").write_text(source)
    return emitter.plan
