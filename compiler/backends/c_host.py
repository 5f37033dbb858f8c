"""Build and run the C model as an x86_64 host program (stdin pixels -> stdout embeddings).

The host program is the quickest device to check the emitted C against the golden
simulator: same kernels and generated model as the boards, compiled with the
host's gcc under -Wall -Wextra -Werror.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from calibration.qgraph import QGraph
from compiler.backends.c_emitter import RUNTIME_DIR, ArenaPlan, emit_c
from compiler.errors import ExternalFailure

HOST_DIR = RUNTIME_DIR.parent / "host"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
TIMEOUT_S = 300


def build_host(graph: QGraph, out_dir: Path, model_hash: str = "", cc: str = "gcc") -> tuple[Path, ArenaPlan]:
    """Emit the model into out_dir and compile the host runner; returns (binary, arena plan)."""
    plan = emit_c(graph, out_dir, model_hash)
    binary = out_dir / "mfn-host"
    sources = [out_dir / "model.c", RUNTIME_DIR / "mfn_kernels.c", HOST_DIR / "main.c"]
    cmd = [cc, *CFLAGS, f"-I{RUNTIME_DIR}", f"-I{out_dir}", *map(str, sources), "-o", str(binary)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalFailure(f"{cc}: could not compile the host runner ({exc})") from None
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
        raise ExternalFailure(f"{cc}: compiling the generated model failed: {first}")
    return binary, plan


def run_host(binary: Path, graph: QGraph, pixels: np.ndarray) -> np.ndarray:
    """Run uint8 RGB NCHW images through the host program; returns outputs [N, count] (NHWC order)."""
    out = graph.tensors[graph.outputs[0]]
    dtype = np.int16 if out.dtype == "int16" else np.int8
    count = int(np.prod(out.shape[1:]))
    data = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).tobytes()
    try:
        proc = subprocess.run([str(binary)], input=data, capture_output=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"{binary}: no answer within {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise ExternalFailure(f"{binary}: exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[:200]}")
    return np.frombuffer(proc.stdout, dtype=dtype).reshape(len(pixels), count)


def golden_as_device(graph: QGraph, pixels: np.ndarray) -> np.ndarray:
    """The golden output in the device's layout (NHWC, flattened) for comparison."""
    from calibration import golden

    q = golden.run(graph, pixels)[graph.outputs[0]]
    if q.ndim == 4:
        q = q.transpose(0, 2, 3, 1)
    return q.reshape(len(pixels), -1)
