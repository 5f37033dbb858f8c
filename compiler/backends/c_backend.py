"""`build --backend c`: the generated C model, its memory plan against the target, and
(on the x86_64 host) a first run of the compiled program against the golden simulator.

OUT/c/ is a self-contained source tree: the generated model, the kernels, the HIL
protocol and the target's port, with a Makefile, so it builds without mfnc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.qgraph import QGraph
from compiler import ui
from compiler.backends.c_emitter import ArenaPlan, emit_c
from compiler.backends.c_host import golden_as_device
from compiler.backends.firmware import PROGRAM, assemble_tree, build_firmware, memory_from_map
from compiler.errors import BadInput
from compiler.hil.link import DeviceLink
from compiler.hil.pipe import PipePort
from compiler.hil.session import run_inputs
from compiler.targets import Target

DEVICE_CHECK_IMAGES = 4


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
    """Emit OUT/c/, check memory, build the device program, and on x86_64 run it against the golden."""
    src = out / "c"
    plan = emit_c(graph, src, model_hash)
    memory = check_fits(target, plan, constant_bytes(graph))
    port = assemble_tree(src, target)
    layers = [n.name for n in graph.nodes if n.op in ("conv", "add")]
    result: dict = {"source_dir": str(src), "memory": memory, "arena_plan": plan.summary(), "layer_names": layers}
    if port is None:
        result["firmware"] = None
        result["firmware_note"] = f"no device program for {target.name} yet: OUT/c/ holds the model and kernels only"
        return result
    with ui.step(f"building the device program for {target.name} ({target.toolchain.cc})"):
        program = build_firmware(src, target)
    memory.update(memory_from_map(src / f"{PROGRAM}.map", target, plan.arena_bytes))
    result["firmware"] = {"program": str(program), "map": str(src / f"{PROGRAM}.map"), "port": port.kind}
    if target.cpu.arch == "x86_64":
        with ui.step("running the device program on this host over the HIL protocol"):
            result["host_check"] = host_check(graph, program, images[:DEVICE_CHECK_IMAGES])
    return result


def host_check(graph: QGraph, program: Path, pixels: np.ndarray) -> dict:
    """The compiled x86_64 program through the protocol, against the golden simulator."""
    with DeviceLink(f"pipe:{program.name}", port=PipePort.for_program(program)) as link:
        runs = run_inputs(link, pixels)
    expected = golden_as_device(graph, pixels)
    equal = sum(bool(np.array_equal(d, e)) for d, e in zip(runs.outputs, expected, strict=True))
    return {"n_inputs": len(pixels), "bit_exact": equal}
