"""The TVM device program ("runner") for Linux targets: x86_64 and aarch64.

`build_runner(qgraph, target, out_dir, model_hash)` writes a directory that runs on
the target as it is:

- `model.so`: the integer Relax module (`tvm_relax.build_relax_int`), compiled for the
  target (untuned, or with a tuning database) and exported with the target's C++
  compiler (`aarch64-linux-gnu-g++` for a board);
- `libtvm_runtime.so`, `libtvm_ffi.so`: TVM's runtime for the target's architecture
  (from the installed apache-tvm wheel on x86_64; from the aarch64 wheels of the same
  versions, downloaded once into a cache, for aarch64);
- `mfn_tvm_runner`: firmware/tvm/mfn_tvm_runner.cc (C++) with the HIL protocol loop
  (firmware/device/, C) and the POSIX port (stdin/stdout), linked against the runtime
  with rpath `$ORIGIN`. It loads `model.so` from its own folder (or argv[1]).

Under qemu-aarch64, `-L /usr/aarch64-linux-gnu` supplies the dynamic loader,
libstdc++ and libc (Debian's cross packages); a board has them already.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import __version__
from compiler.errors import BadInput, ExternalFailure
from compiler.targets import Target

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
PROGRAM = "mfn_tvm_runner"
LIBRARY = "model.so"
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post0"  # DESIGN section 7: 0.1.15.x segfaults on IR JSON
# The aarch64 wheels of these versions are tagged manylinux_2_28 (no manylinux2014 build).
AARCH64_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
C_SOURCES = (
    "device/mfn_proto.c",
    "device/mfn_device.c",
    "ports/posix/mfn_port_posix.c",
    "ports/posix/icount.c",
)
RUNNER_SOURCE = "tvm/mfn_tvm_runner.cc"
STRICT = ("-Wall", "-Wextra", "-Werror")
BUILD_TIMEOUT_S = 600
DOWNLOAD_TIMEOUT_S = 600
SUPPORTED_ARCHS = ("x86_64", "aarch64")


@dataclass
class RunnerBuild:
    program: Path
    kernels: dict  # {"total", "scheduled"}: kernels of the primary library a database scheduled
    libraries: dict[str, str]  # core -> library file next to the program (the first is the default)


def cache_dir() -> Path:
    """Where downloaded runtimes live: $MFNC_TVM_RUNTIME_CACHE, else $MFNC_CACHE_DIR/tvm-runtime,
    else ~/.cache/mfnc/tvm-runtime."""
    if os.environ.get("MFNC_TVM_RUNTIME_CACHE"):
        return Path(os.environ["MFNC_TVM_RUNTIME_CACHE"])
    root = os.environ.get("MFNC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "mfnc") / "tvm-runtime"


def ffi_include_dirs() -> list[Path]:
    """The tvm-ffi C++ headers and dlpack (architecture-independent, from the installed wheel)."""
    import tvm_ffi

    base = Path(tvm_ffi.__file__).resolve().parent / "include"
    dirs = [base, base / "dlpack"] if (base / "dlpack" / "dlpack.h").exists() else [base]
    if not (base / "tvm" / "ffi" / "function.h").exists():
        raise ExternalFailure(f"{base}: the installed apache-tvm-ffi has no C++ headers (reinstall it)")
    return dirs


def host_runtime_dir() -> dict[str, Path]:
    """libtvm_runtime.so and libtvm_ffi.so of the installed (x86_64) wheels."""
    import tvm
    import tvm_ffi

    found = {
        "libtvm_runtime.so": Path(tvm.__file__).resolve().parent / "lib" / "libtvm_runtime.so",
        "libtvm_ffi.so": Path(tvm_ffi.__file__).resolve().parent / "lib" / "libtvm_ffi.so",
    }
    for name, path in found.items():
        if not path.is_file():
            raise ExternalFailure(f"{path}: {name} is missing from the installed TVM wheels (reinstall apache-tvm)")
    return found


def download_aarch64_wheels(
    folder: Path, pins: dict[str, str], platforms: tuple[str, ...] = AARCH64_PLATFORMS
) -> dict[str, Path]:
    """cp311 aarch64 wheels of `pins` ({distribution: version}) in `folder`: downloaded
    once with `pip download`; wheels put there by hand (machines without network) are
    used as they are."""
    folder.mkdir(parents=True, exist_ok=True)

    def find(dist: str, version: str) -> Path | None:
        found = sorted(folder.glob(f"{dist.replace('-', '_')}-{version}-*aarch64*.whl"))
        return found[-1] if found else None

    missing = [f"{dist}=={version}" for dist, version in pins.items() if find(dist, version) is None]
    if missing:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            *(arg for platform in platforms for arg in ("--platform", platform)),
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "-d",
            str(folder),
            *missing,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ExternalFailure(
                f"pip download of aarch64 wheels ({', '.join(missing)}): over {DOWNLOAD_TIMEOUT_S} s"
            ) from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            why = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "no output")
            raise ExternalFailure(
                f"cannot download the aarch64 wheels {', '.join(missing)}: {why.strip()}; "
                f"without network, put the cp311 aarch64 wheels in {folder}"
            )
    wheels = {dist: find(dist, version) for dist, version in pins.items()}
    lost = [dist for dist, path in wheels.items() if path is None]
    if lost:
        raise ExternalFailure(f"pip download left no aarch64 wheel of {', '.join(lost)} in {folder}")
    return wheels  # type: ignore[return-value]


def aarch64_tvm_wheels(cache: Path | None = None) -> dict[str, Path]:
    """The apache-tvm and apache-tvm-ffi aarch64 wheels of our pins."""
    folder = (cache or cache_dir()) / f"aarch64-tvm{TVM_VERSION}-ffi{TVM_FFI_VERSION}"
    return download_aarch64_wheels(folder, {"apache-tvm": TVM_VERSION, "apache-tvm-ffi": TVM_FFI_VERSION})


def aarch64_runtime(cache: Path | None = None) -> dict[str, Path]:
    """The aarch64 libtvm_runtime.so + libtvm_ffi.so, extracted from the wheels of our
    pinned versions (`aarch64_tvm_wheels`)."""
    folder = (cache or cache_dir()) / f"aarch64-tvm{TVM_VERSION}-ffi{TVM_FFI_VERSION}"
    libs = {name: folder / name for name in RUNTIME_LIBS}
    if all(path.is_file() for path in libs.values()):
        return libs
    wheels = aarch64_tvm_wheels(cache)
    members = {
        "libtvm_runtime.so": ("apache-tvm", "tvm/lib/libtvm_runtime.so"),
        "libtvm_ffi.so": ("apache-tvm-ffi", "tvm_ffi/lib/libtvm_ffi.so"),
    }
    for name, (dist, member) in members.items():
        wheel = wheels[dist]
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(member)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ExternalFailure(f"{wheel}: no {member} in it ({exc}); delete it to download again") from None
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", dir=folder)  # concurrent builds never see half a file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp_name).chmod(0o755)
        Path(tmp_name).replace(libs[name])
    return libs


def runtime_libraries(arch: str, cache: Path | None = None) -> dict[str, Path]:
    if arch == "x86_64":
        return host_runtime_dir()
    if arch == "aarch64":
        return aarch64_runtime(cache)
    raise BadInput(f"the TVM runner supports {', '.join(SUPPORTED_ARCHS)} Linux targets, not {arch}")


def tvm_target(target: Target, threads: int = 1, core: str | None = None):
    """The TVM llvm target for a Linux target: this host's features on x86_64, the
    primary cluster's -mcpu (or `core`'s) on aarch64."""
    import tvm

    from compiler.backends.tvm_compile import x86_target

    if target.cpu.arch == "x86_64":
        return x86_target(threads)
    spec = {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": core or target.cpu.primary.core,
        "mattr": ["+neon"],
        "num-cores": int(threads),
    }
    return tvm.target.Target(spec)


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=cwd, check=False)
    except FileNotFoundError:
        raise ExternalFailure(f"{cmd[0]}: not installed (needed for {what})") from None
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"{cmd[0]}: {what} took more than {BUILD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "no output")
        raise ExternalFailure(f"{cmd[0]}: {what} failed: {first.strip()}")


def _output_facts(qgraph) -> tuple[int, int, int, int, str]:
    """(H, W, output count, output bytes, output dtype) of a quantized graph."""
    _, c, h, w = qgraph.tensors[qgraph.input].shape
    if c != 3:
        raise BadInput(f"the TVM runner takes RGB images, the model's input has {c} channels")
    out = qgraph.tensors[qgraph.outputs[0]]
    dtype = str(out.dtype)
    if dtype not in ("int8", "int16"):
        raise BadInput(f"the TVM runner returns int8 or int16 outputs, not {dtype}")
    count = int(np.prod(out.shape[1:]))
    return int(h), int(w), count, count * np.dtype(dtype).itemsize, dtype


def compile_library(qgraph, target: Target, path: Path, database_dir: Path | None = None, core: str | None = None):
    """Relax from the quantized IR, compiled for the target (its `core` cluster on a
    big.LITTLE chip) and exported to `path`. Returns the `tvm_compile.Compiled` (its
    `seconds` is fuse + compile)."""
    import tvm

    from compiler.backends.tuning_db import MODULE_EQUALITY
    from compiler.backends.tvm_compile import build, export_library
    from compiler.backends.tvm_relax import build_relax_int

    compiled = build(
        build_relax_int(qgraph),
        tvm_target(target, core=core),
        database_dir=database_dir,
        module_equality=MODULE_EQUALITY,
    )
    fcompile = None
    if target.cpu.arch != "x86_64":
        cxx = target.toolchain.cxx or ""
        fcompile = tvm.support.cc.cross_compiler(cxx)
    try:
        export_library(compiled.executable, path, fcompile=fcompile)
    except Exception as exc:  # tvm.support.cc raises RuntimeError with the linker's whole output
        first = next((ln for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc).splitlines()[0])
        raise ExternalFailure(f"exporting the TVM library for {target.name} failed: {first.strip()}") from None
    return compiled


def build_runner(
    qgraph,
    target: Target,
    out_dir: Path,
    model_hash: str,
    *,
    database_dir: Path | None = None,
    cache: Path | None = None,
) -> RunnerBuild:
    """Build the TVM device program for `target` into out_dir.

    On a chip with a second kind of core (rk3399's Cortex-A53s next to its A72s) the
    bundle also holds `model-<core>.so` compiled for it, which the same runner loads
    when given its name (pin the program to those cores with taskset). The tuning
    database, tuned on the primary cluster, is applied to both.
    """
    arch = target.cpu.arch
    if target.os != "linux" or arch not in SUPPORTED_ARCHS:
        raise BadInput(f"{target.name}: the TVM runner needs a Linux {' or '.join(SUPPORTED_ARCHS)} target")
    cc, cxx = target.toolchain.cc, target.toolchain.cxx
    if not cxx:
        raise BadInput(f"{target.name}: the target file names no C++ compiler (toolchain.cxx)")
    for tool in (cc, cxx):
        if shutil.which(tool) is None:
            raise ExternalFailure(f"{tool}: not installed (run `make setup` or install it)")
    h, w, count, out_bytes, out_dtype = _output_facts(qgraph)
    if out_bytes > 2048:
        raise BadInput(f"the model's output is {out_bytes} bytes, the protocol carries at most 2048")
    libs = runtime_libraries(arch, cache)  # first: a missing runtime fails before minutes of compiling
    includes = ffi_include_dirs()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in libs.items():
        shutil.copy2(path, out_dir / name)
    compiled = compile_library(qgraph, target, out_dir / LIBRARY, database_dir)
    libraries = {target.cpu.primary.core if arch != "x86_64" else arch: LIBRARY}
    if arch == "aarch64":
        for group in target.cpu.cores[1:]:
            if group.core not in libraries:
                name = f"model-{group.core}.so"
                compile_library(qgraph, target, out_dir / name, database_dir, core=group.core)
                libraries[group.core] = name

    opt = [f for f in target.toolchain.cflags if f.startswith(("-O", "-m"))] or ["-O2"]
    defines = [
        f'-DMFN_TARGET="{target.name}"',
        f'-DMFN_FIRMWARE_VERSION="mfnc-{__version__}"',
        f'-DMFN_MODEL_HASH="{model_hash}"',
        f'-DMFN_KERNELS="{"tvm-tuned" if database_dir else "tvm-untuned"}"',
        f'-DMFN_TVM_LIBRARY="{LIBRARY}"',
        f"-DMFN_INPUT_H={h}",
        f"-DMFN_INPUT_W={w}",
        f"-DMFN_OUTPUT_COUNT={count}",
        f"-DMFN_OUTPUT_BYTES={out_bytes}",
        f'-DMFN_OUTPUT_DTYPE="{out_dtype}"',
    ]
    firmware_includes = [f"-I{FIRMWARE_DIR / d}" for d in ("device", "ports/posix")]
    with tempfile.TemporaryDirectory(prefix="mfn-tvm-runner-") as tmp_name:
        tmp = Path(tmp_name)
        objects = []
        for source in C_SOURCES:
            obj = tmp / (Path(source).stem + ".o")
            _run(
                [
                    cc,
                    "-std=c99",
                    *STRICT,
                    *opt,
                    *defines,
                    *firmware_includes,
                    "-c",
                    str(FIRMWARE_DIR / source),
                    "-o",
                    str(obj),
                ],
                f"compiling {source} for {target.name}",
                tmp,
            )
            objects.append(str(obj))
        program = out_dir / PROGRAM
        tmp_program = tmp / PROGRAM
        _run(
            [
                cxx,
                "-std=c++17",
                *STRICT,
                *opt,
                *defines,
                *firmware_includes,
                *(f"-isystem{d}" for d in includes),
                str(FIRMWARE_DIR / RUNNER_SOURCE),
                *objects,
                f"-L{out_dir}",
                "-Wl,--no-as-needed",
                "-ltvm_runtime",
                "-ltvm_ffi",
                "-Wl,--as-needed",
                "-Wl,-rpath,$ORIGIN",
                "-o",
                str(tmp_program),
            ],
            f"building the TVM runner for {target.name}",
            tmp,
        )
        shutil.move(str(tmp_program), program)
    from compiler.backends.tvm_compile import scheduled_kernels

    return RunnerBuild(program, scheduled_kernels(compiled.fused), libraries)


def qemu_command(program: Path, target: Target, sysroot: str = "/usr/aarch64-linux-gnu") -> list[str]:
    """The plain qemu-aarch64 command (no icount plugin) that runs an aarch64 runner here."""
    return ["qemu-aarch64", "-cpu", target.cpu.primary.core, "-L", sysroot, str(program)]
