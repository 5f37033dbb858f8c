"""Device programs for protocol and HIL tests: a tiny model (fast even under QEMU) or a
real one, built for any target with a port, and opened as a pyserial-like port."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from calibration.observers import observe_ranges
from calibration.qgraph import QGraph
from calibration.quantizer import quantize
from compiler.backends.c_emitter import emit_c
from compiler.backends.firmware import assemble_tree, build_firmware, port_for
from compiler.frontend import load_model
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from compiler.targets import Target, load_target
from tests.onnx_builders import conv_bn_prelu

# Every device program mfnc builds, and what each needs on this machine.
DEVICE_TARGETS = {
    "x86_64": ("gcc",),
    "rk3399": ("aarch64-linux-gnu-gcc", "qemu-aarch64", "socat"),
    "mps3-an547": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "mps2-an500": ("arm-none-eabi-gcc", "qemu-system-arm"),
}
TINY_SIZE = 48  # 48x48x3 = 6,912 input bytes: two LOAD chunks


def require_tools(target: str) -> Target:
    """The target, or a skip (a failure under CI=true) when its toolchain or emulator is missing."""
    missing = [tool for tool in DEVICE_TARGETS[target] if shutil.which(tool) is None]
    loaded = load_target(target)
    if port_for(loaded) is None:
        missing.append(f"a port for {target}")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")
    return loaded


def tiny_qgraph(tmp: Path) -> QGraph:
    """conv3x3 s2 + PReLU, depthwise + LeakyReLU, global depthwise: every kernel kind, 8 outputs."""
    import onnx

    path = tmp / "tiny.onnx"
    onnx.save(conv_bn_prelu(TINY_SIZE), path)
    graph = load_model(str(path)).graph
    for _, fn in pipeline(parse_preprocess("paper")):
        graph = fn(graph)
    images = synthetic_eval_set(4, seed=3)[0][:, :, :TINY_SIZE, :TINY_SIZE]
    return quantize(graph, observe_ranges(graph, images, "minmax"), "fused")


def build_device(target: Target, qgraph: QGraph, out: Path, model_hash: str = "tiny") -> Path:
    src = out / target.name
    emit_c(qgraph, src, model_hash)
    assemble_tree(src, target)
    return build_firmware(src, target)


@contextlib.contextmanager
def open_device(target: Target, program: Path, workdir: Path) -> Iterator[object]:
    """A connected port to the running device program; stops it afterwards."""
    from compiler.hil import emulate
    from compiler.hil.link import open_port
    from compiler.hil.pipe import PipePort

    if target.emulation.kind == "native":
        port = PipePort.for_program(program)
        try:
            yield port
        finally:
            port.close()
        return
    board = emulate.start(target, program, workdir)
    try:
        port = open_port(board.url, 115200, 10.0)
        try:
            yield port
        finally:
            port.close()
    finally:
        board.stop()
