"""The NPU backend's board program: firmware/rknn/mfn_rknn_runner.c linked against
Rockchip's runtime from the user's SDK.

Rockchip's runtime (`librknnrt.so`, `rknn_api.h`) is proprietary and not on PyPI; mfnc
never ships it. Point `build --rknn-sdk DIR` (or `$MFNC_RKNN_SDK`) at a folder that
holds `rknn_api.h` and the board's `librknnrt.so` (e.g. rknn-toolkit2's
`rknpu2/runtime/Linux/librknn_api`, whose `include/` and `aarch64/` or `armhf/`
sub-folders are found). The program links it dynamically with rpath `$ORIGIN`
(so the library may sit next to it) and otherwise takes the board's `/usr/lib` copy.
rv1103/rv1106 run 32-bit Linux: their target file names the SDK's armhf toolchain.
Without an SDK the build still succeeds (the .rknn is checked in the simulator) and
the report says why there is no board program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compiler import __version__
from compiler.errors import BadInput, ExternalFailure

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
PROGRAM = "mfn_rknn_runner"
C_SOURCES = (
    "device/mfn_proto.c",
    "device/mfn_device.c",
    "ports/posix/mfn_port_posix.c",
    "ports/posix/icount.c",
    "rknn/mfn_rknn_runner.c",
)
STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror")
BUILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class Sdk:
    include: Path
    lib: Path


def find_sdk(explicit: Path | None, arch: str) -> Sdk | None:
    """The SDK folder from --rknn-sdk or $MFNC_RKNN_SDK, or None when neither is set."""
    root = explicit or (Path(os.environ["MFNC_RKNN_SDK"]) if os.environ.get("MFNC_RKNN_SDK") else None)
    if root is None:
        return None
    if not root.is_dir():
        raise BadInput(f"--rknn-sdk {root}: not a folder")
    headers = sorted(root.rglob("rknn_api.h"))
    sub = {"aarch64": ("aarch64", "arm64-v8a", "lib"), "armhf": ("armhf", "armhf-uclibc", "armeabi-v7a", "lib")}[arch]
    libraries = [p for p in sorted(root.rglob("librknnrt.so")) if p.parent.name in sub]
    if not headers or not libraries:
        missing = "rknn_api.h" if not headers else f"librknnrt.so for {arch}"
        raise BadInput(f"--rknn-sdk {root}: no {missing} in it (Rockchip's rknpu2 runtime folder is expected)")
    return Sdk(headers[0].parent, libraries[0].parent)


def build_program(
    target, out_dir: Path, model_hash: str, hw: tuple[int, int], outputs: int, bgr: bool, sdk: Sdk
) -> Path:
    """Compile the runner for the target with its toolchain; returns the program's path."""
    cc = target.toolchain.cc
    if shutil.which(cc) is None:
        raise ExternalFailure(f"{cc}: not installed (the board program for {target.name} needs it)")
    if outputs * 4 > 2048:
        raise BadInput(f"the model's output is {outputs * 4} bytes, the protocol carries at most 2048")
    opt = [f for f in target.toolchain.cflags if f.startswith(("-O", "-m"))] or ["-O2"]
    defines = [
        f'-DMFN_TARGET="{target.name}"',
        f'-DMFN_FIRMWARE_VERSION="mfnc-{__version__}"',
        f'-DMFN_MODEL_HASH="{model_hash}"',
        f"-DMFN_INPUT_H={hw[0]}",
        f"-DMFN_INPUT_W={hw[1]}",
        f"-DMFN_OUTPUT_COUNT={outputs}",
        f"-DMFN_SWAP_RB={1 if bgr else 0}",
    ]
    includes = [f"-I{FIRMWARE_DIR / d}" for d in ("device", "ports/posix")] + [f"-I{sdk.include}"]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mfn-rknn-runner-") as tmp:
        program = Path(tmp) / PROGRAM
        cmd = [
            cc,
            *STRICT,
            *opt,
            *defines,
            *includes,
            *(str(FIRMWARE_DIR / s) for s in C_SOURCES),
            f"-L{sdk.lib}",
            "-lrknnrt",
            "-Wl,-rpath,$ORIGIN",
            "-o",
            str(program),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ExternalFailure(f"{cc}: building the NPU board program took over {BUILD_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "no output")
            raise ExternalFailure(f"{cc}: building the NPU board program failed: {first.strip()}")
        shutil.move(str(program), out_dir / PROGRAM)
    return out_dir / PROGRAM
