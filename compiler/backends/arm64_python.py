"""An aarch64 Python 3.11 with TVM's runtime, run by qemu-aarch64: an emulated board
for TVM's RPC server.

The board side of tuning is `python -m tvm.exec.rpc_server` from the aarch64
apache-tvm wheel (docs/tvm.md). To exercise that exact path here we assemble:

- a sysroot from Debian bookworm's arm64 packages (libc, libstdc++, python3.11 and the
  libraries it links), fetched with apt-get using a private state folder and
  `APT::Architecture=arm64`: no `dpkg --add-architecture`, nothing installed into the
  system, no root needed;
- a site folder with the aarch64 wheels of apache-tvm (runtime library only: the
  240 MB compiler library is skipped), apache-tvm-ffi and numpy, plus the pure-Python
  typing_extensions and cloudpickle copied from this environment;
- `python-aarch64`, a host shell script that runs that Python under qemu-aarch64
  (`-cpu $MFN_QEMU_CPU`, default cortex-a72).
  It is also the guest's `sys.executable`: TVM's server re-executes Python for its
  worker, and qemu-user passes `execve` to the host kernel, which runs the script.

Everything lives in `<cache>/arm64-python/`, built in a staging folder and renamed
when complete, so an interrupted setup never leaves half a sysroot.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from compiler import ui
from compiler.backends import tvm_runner
from compiler.errors import ExternalFailure

DEBIAN_PACKAGES = (
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libexpat1",
    "zlib1g",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libcrypt1",
    "libdb5.3",
    "libnsl2",
    "libtirpc3",
    "libgssapi-krb5-2",
    "libkrb5-3",
    "libk5crypto3",
    "libcom-err2",
    "libkrb5support0",
    "libkeyutils1",
)
NUMPY_VERSION = "2.4.6"  # requirements.lock's numpy
PURE_PACKAGES = ("typing_extensions", "cloudpickle")
# The compiler and CUDA libraries (~240 MB) are not needed to run compiled modules.
SKIPPED_MEMBERS = (
    "tvm/lib/libtvm.so",
    "tvm/lib/libtvm_compiler.so",
    "tvm/lib/libtvm_runtime_cuda.so",
    "tvm/include/",
    "3rdparty/",
)
LAUNCHER = "python-aarch64"
STAMP = ".complete"
APT_TIMEOUT_S = 600
# Runs inside the emulated Python: make the launcher its sys.executable, then start
# TVM's RPC server with the arguments that follow.
SERVER_BOOT = (
    "import sys, runpy; sys.executable = sys.argv[1]; sys.argv = ['rpc_server'] + sys.argv[2:]; "
    "runpy.run_module('tvm.exec.rpc_server', run_name='__main__')"
)


def home(cache: Path | None = None) -> Path:
    return (cache or tvm_runner.cache_dir().parent) / "arm64-python"


def _apt(state: Path, *args: str, cwd: Path) -> None:
    cmd = [
        "apt-get",
        "-q",
        "-o",
        "APT::Architecture=arm64",
        "-o",
        "APT::Architectures=arm64",
        "-o",
        f"Dir::State::Lists={state / 'lists'}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
        "-o",
        "Dir::State::status=/dev/null",
        "-o",
        "Debug::NoLocking=1",
        *args,
    ]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ExternalFailure(
            "apt-get: not found; the emulated TVM board needs Debian's apt (see docs/tvm.md)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"apt-get {args[0]} (arm64 packages) took over {APT_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("E:")] or proc.stderr.splitlines()[-1:]
        raise ExternalFailure(f"apt-get {args[0]} (arm64 packages) failed: {(lines or ['no output'])[0]}")


def _extract_wheel(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if not any(member.startswith(skip) or f"/{skip}" in member for skip in SKIPPED_MEMBERS):
                archive.extract(member, site)
    for so in site.rglob("*.so*"):
        so.chmod(0o755)


def _copy_pure(name: str, site: Path) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ExternalFailure(f"{name} is not installed here; it is needed by TVM's RPC server (pip install {name})")
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        shutil.copytree(origin.parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(origin, site / origin.name)


def _write_launcher(folder: Path, final: Path) -> None:
    root, site = final / "root", final / "site"
    script = (
        "#!/bin/sh\n"
        "# aarch64 Python 3.11 + TVM runtime under qemu-aarch64 (mfnc's emulated TVM board)\n"
        f'export PYTHONPATH="{site}" TVM_USE_RUNTIME_LIB=1 PYTHONDONTWRITEBYTECODE=1\n'
        f'exec qemu-aarch64 -cpu "${{MFN_QEMU_CPU:-cortex-a72}}" -L "{root}" "{root}/usr/bin/python3.11" "$@"\n'
    )
    (folder / LAUNCHER).write_text(script)
    (folder / LAUNCHER).chmod(0o755)


def ensure(cache: Path | None = None) -> Path:
    """The launcher of the emulated aarch64 Python, set up on first use (~145 MB on disk)."""
    final = home(cache)
    if (final / STAMP).exists():
        return final / LAUNCHER
    if shutil.which("qemu-aarch64") is None:
        raise ExternalFailure("qemu-aarch64: not installed (run `make setup`)")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".arm64-python-", dir=final.parent))
    try:
        with ui.step("setting up an emulated aarch64 Python with TVM's runtime (once)"):
            state, debs, root, site = (staging / n for n in ("apt", "debs", "root", "site"))
            for folder in (state / "lists" / "partial", state / "cache" / "archives" / "partial", debs, root, site):
                folder.mkdir(parents=True)
            _apt(state, "update", cwd=staging)
            _apt(state, "download", *DEBIAN_PACKAGES, cwd=debs)
            for deb in sorted(debs.glob("*.deb")):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True, timeout=120)
            wheels = tvm_runner.aarch64_tvm_wheels(cache / "tvm-runtime" if cache else None)
            numpy_folder = (cache or tvm_runner.cache_dir().parent) / "aarch64-wheels"
            wheels.update(tvm_runner.download_aarch64_wheels(numpy_folder, {"numpy": NUMPY_VERSION}))
            for wheel in wheels.values():
                _extract_wheel(wheel, site)
            for name in PURE_PACKAGES:
                _copy_pure(name, site)
            shutil.rmtree(state)
            shutil.rmtree(debs)
            _write_launcher(staging, final)
            (staging / STAMP).write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final / LAUNCHER
