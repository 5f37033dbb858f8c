"""Compile a Relax module: targets, the fused module, the executable.

Two steps, kept apart because tuning sits between them (DESIGN section 7):

1. `fuse(mod, target)`: DecomposeOpsForInference + CanonicalizeBindings +
   `relax.get_pipeline("zero")` (legalize to TIR, fuse each conv with its epilogue).
   MetaSchedule extracts its tasks from this fused module, and a tuning database must
   be applied to it (`relax.transform.MetaScheduleApplyDatabase`), not to the unfused one.
2. `compile_module(fused, target)`: `tvm.compile` to a VM executable (the remaining
   default passes leave the fused functions alone).

Targets are JSON dicts wrapped in `tvm.target.Target` (`tvm.compile` rejects a bare
dict). The host target lists the CPU features /proc/cpuinfo reports rather than
`mcpu` = LLVM's idea of the host: under a hypervisor LLVM may name a CPU (znver4)
whose AVX2/AVX-512 the guest does not have, and the code would die of SIGILL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import relax

# /proc/cpuinfo flag -> LLVM x86 feature, for what a MobileFaceNet's kernels can use.
_X86_FEATURES = {
    "ssse3": "+ssse3",
    "sse4_1": "+sse4.1",
    "sse4_2": "+sse4.2",
    "popcnt": "+popcnt",
    "avx": "+avx",
    "f16c": "+f16c",
    "fma": "+fma",
    "avx2": "+avx2",
    "avx512f": "+avx512f",
    "avx512bw": "+avx512bw",
    "avx512dq": "+avx512dq",
    "avx512vl": "+avx512vl",
    "avx512_vnni": "+avx512vnni",
    "avx_vnni": "+avxvnni",
}


def host_x86_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """LLVM features of this machine's CPU, from the flags the kernel reports."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [feature for flag, feature in _X86_FEATURES.items() if flag in flags]


def x86_target(threads: int = 1, features: list[str] | None = None) -> tvm.target.Target:
    """An llvm target for this x86_64 host (`num-cores` is what MetaSchedule tunes for)."""
    spec: dict = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "num-cores": int(threads)}
    mattr = host_x86_features() if features is None else features
    if mattr:
        spec["mattr"] = mattr
    return tvm.target.Target(spec)


def fuse(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    database_dir: Path | None = None,
    module_equality: str = "structural",
) -> tvm.IRModule:
    """The fused module (TIR kernels + Relax calls), with a tuning database applied if given.

    `module_equality` must be the one the database was tuned with: "anchor-block" lets
    kernels that differ only in their epilogue constants share one conv task (21
    instead of 50 conv tasks on MobileFaceNet).
    """
    with target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.get_pipeline("zero"),
            ]
        )(mod)
        if database_dir is not None:
            from tvm.s_tir import meta_schedule as ms

            database = ms.database.JSONDatabase(work_dir=str(database_dir), module_equality=module_equality)
            with database:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    return mod


def compile_module(fused: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """The VM executable of a fused module."""
    return tvm.compile(fused, target=target)


@dataclass
class Compiled:
    executable: relax.VMExecutable
    fused: tvm.IRModule
    target: tvm.target.Target
    seconds: float  # wall time of fuse + compile


def build(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    database_dir: Path | None = None,
    module_equality: str = "structural",
) -> Compiled:
    """fuse + compile_module, timed."""
    start = time.perf_counter()
    fused = fuse(mod, target, database_dir, module_equality)
    executable = compile_module(fused, target)
    return Compiled(executable, fused, target, time.perf_counter() - start)


def export_library(executable: relax.VMExecutable, path: Path, fcompile=None) -> Path:
    """Write the executable as a shared library (kernels + VM bytecode + constants).

    `fcompile` links it, e.g. `tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++")`
    for a board; the host's compiler by default.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcompile is None:
        executable.export_library(str(path))
    else:
        executable.export_library(str(path), fcompile=fcompile)
    return path


def kernel_names(fused: tvm.IRModule) -> list[str]:
    """The TIR kernels of a fused module (what tuning works on). FuseTIR keeps one copy
    of structurally equal kernels, so two layers may share one."""
    return sorted(gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def kernel_calls(fused: tvm.IRModule, function: str = "main") -> list[str]:
    """The kernel each `call_tir` of the Relax function runs, in execution order."""
    calls = []
    for block in fused[function].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
                calls.append(value.args[0].name_hint)
    return calls


def scheduled_kernels(fused: tvm.IRModule) -> dict:
    """How many TIR kernels of a fused module a tuning database scheduled (it marks
    them `tirx.is_scheduled`), so a build can say how much of the model is tuned."""
    kernels = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    scheduled = sum(1 for f in kernels if f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False)))
    return {"total": len(kernels), "scheduled": scheduled}
