"""`build --backend c`: the generated C model, its memory plan against the target, and
(on the x86_64 host) a first run of the compiled program against the golden simulator.

OUT/c/ is a self-contained source tree: the generated model, the portable kernels and
the host runner, with a Makefile, so it builds without mfnc.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from calibration.qgraph import QGraph
from compiler.backends.c_emitter import RUNTIME_DIR, ArenaPlan, emit_c
from compiler.backends.c_host import HOST_DIR, build_host, golden_as_device, run_host
from compiler.errors import BadInput
from compiler.targets import Target

DEVICE_CHECK_IMAGES = 4

_MAKEFILE = """# Builds the host runner: make CC=gcc
CC ?= gcc
CFLAGS ?= -std=c99 -O2 -Wall -Wextra -Werror
mfn-host: model.c mfn_kernels.c main.c model.h mfn_kernels.h
\t$(CC) $(CFLAGS) -I. model.c mfn_kernels.c main.c -o $@
clean:
\trm -f mfn-host
"""


def constant_bytes(graph: QGraph) -> int:
    """Bytes of constant data the C model carries (weights, biases, multipliers, slopes)."""
    total = 0
    for node in graph.nodes:
        if node.op != "conv":
            continue
        weight = node.arrays["weight"]
        channels = weight.shape[0]
        total += weight.size + 4 * channels * 3  # int8 weights; int32 bias, multiplier, shift
        if "slope" in node.arrays:
            total += 9 * channels  # negative multipliers and shifts (int32), signs (int8)
    return int(total)


def arena_limit(target: Target) -> int:
    """Bytes of RAM the activation arena may use on a bare-metal target."""
    memory = target.memory
    region = memory.region(memory.arena_region) if memory.arena_region else None
    return (region.size_kib if region else memory.largest_ram_bank_kib) * 1024


def check_fits(target: Target, plan: ArenaPlan, weights: int) -> dict:
    """Memory numbers against the target; a bare-metal board that cannot hold them is exit 2."""
    memory = target.memory
    numbers = {"arena_bytes": plan.arena_bytes, "weights_bytes": weights}
    if target.os != "baremetal":
        return {**numbers, "ram_limit_bytes": memory.ram_kib * 1024}
    weights_region = memory.region(memory.weights_region) if memory.weights_region else None
    limit = arena_limit(target)
    flash_limit = (weights_region.size_kib if weights_region else (memory.flash_kib or 0)) * 1024
    numbers.update(arena_limit_bytes=limit, weights_limit_bytes=flash_limit)
    problems = []
    if plan.arena_bytes > limit:
        problems.append(f"activation arena {plan.arena_bytes:,} B > {limit:,} B of RAM ({memory.arena_region})")
    if flash_limit and weights > flash_limit:
        problems.append(f"weights {weights:,} B > {flash_limit:,} B of flash ({memory.weights_region})")
    if problems:
        raise BadInput(f"the model does not fit {target.name}: {'; '.join(problems)}")
    return numbers


def compile_c(graph: QGraph, target: Target, out: Path, model_hash: str, images: np.ndarray) -> dict:
    """Emit OUT/c/, check memory, and on x86_64 build and run it against the golden."""
    src = out / "c"
    plan = emit_c(graph, src, model_hash)
    memory = check_fits(target, plan, constant_bytes(graph))
    for path in (RUNTIME_DIR / "mfn_kernels.c", RUNTIME_DIR / "mfn_kernels.h", HOST_DIR / "main.c"):
        shutil.copy(path, src / path.name)
    (src / "Makefile").write_text(_MAKEFILE)
    result: dict = {"source_dir": str(src), "memory": memory}
    if target.name == "x86_64" or target.cpu.arch == "x86_64":
        binary, _ = build_host(graph, src, model_hash)
        check = images[:DEVICE_CHECK_IMAGES]
        device = run_host(binary, graph, check)
        expected = golden_as_device(graph, check)
        equal = sum(bool(np.array_equal(d, e)) for d, e in zip(device, expected, strict=True))
        result["binary"] = str(binary)
        result["host_check"] = {"n_inputs": len(check), "bit_exact": equal}
    return result
