"""Run a compiled Relax executable in-process with the VM (the host runner).

Inputs follow the project's convention for image batches in Python (uint8 RGB NCHW,
as `golden.run` and `c_host.run_host` take them); the module itself takes one
device-style uint8 HWC image per call and returns its output flattened in the
device's (NHWC) order, like `c_host.golden_as_device`.

Threads: TVM's thread pool reads TVM_NUM_THREADS when it starts; `VmRunner` also
sets the pool size explicitly (`runtime.config_threadpool`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from compiler.backends.tvm_compile import build, x86_target


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool (mode 0: default affinity).

    Sizing the pool pins the calling thread to one core, and every thread or process
    started from it afterwards inherits that mask (onnxruntime's pools, compilers run
    by later build steps): measured, a 2-thread onnxruntime session ran at half the
    speed of a 1-thread one. The caller's CPU set is restored."""
    allowed = os.sched_getaffinity(0)
    tvm_ffi.get_global_func("runtime.config_threadpool")(0, int(threads))
    os.sched_setaffinity(0, allowed)


@dataclass
class Latency:
    median_ms: float
    mean_ms: float
    runs: int


class VmRunner:
    """An executable loaded into a VM on the CPU, fed one image at a time."""

    def __init__(self, executable: relax.VMExecutable | tvm.runtime.Module, threads: int = 1) -> None:
        set_threads(threads)
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.device)

    @classmethod
    def load(cls, library: Path, threads: int = 1) -> VmRunner:
        """A runner for a library written by `tvm_compile.export_library`."""
        return cls(tvm.runtime.load_module(str(library)), threads)

    def run_one(self, hwc: np.ndarray) -> list[np.ndarray]:
        """One uint8 image [H, W, 3] -> the module's outputs, each [count]."""
        x = tvm.runtime.tensor(np.ascontiguousarray(hwc[None]), self.device)
        out = self.vm["main"](x)
        outs = list(out) if isinstance(out, tvm_ffi.Array | tuple | list) else [out]
        return [o.numpy().reshape(-1) for o in outs]

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB NCHW images [N, 3, H, W] -> first output [N, count] (device order)."""
        return np.stack([self.run_one(image.transpose(1, 2, 0))[0] for image in pixels])

    def latency(self, hwc: np.ndarray, number: int = 5, repeat: int = 3) -> Latency:
        """Time `main` on one image (after one discarded warm-up run)."""
        x = tvm.runtime.tensor(np.ascontiguousarray(hwc[None]), self.device)
        result = self.vm.time_evaluator("main", self.device, number=number, repeat=repeat)(x)
        costs = np.asarray(list(result.results)) * 1e3
        return Latency(float(np.median(costs)), float(np.mean(costs)), number * repeat)


def compile_and_run_x86(mod: tvm.IRModule, pixels: np.ndarray, threads: int = 1) -> np.ndarray:
    """Compile untuned for this x86 host and run uint8 NCHW images: [N, count] in device order."""
    compiled = build(mod, x86_target(threads))
    return VmRunner(compiled.executable, threads).run(pixels)
