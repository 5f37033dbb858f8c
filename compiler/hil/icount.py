"""Guest instruction counts under qemu-aarch64 (user mode) with our own TCG plugin.

The plugin (firmware/tools/qemu-icount/mfn_icount.c) counts executed guest
instructions; the device program asks for the count with a marker syscall and reads
it back from a host file (firmware/ports/posix/icount.c). Plugin and program find
that file through the environment variable MFN_ICOUNT_FILE. See docs/icount.md.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from compiler.errors import BadInput, ExternalFailure

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "firmware" / "tools" / "qemu-icount" / "mfn_icount.c"
# Same flags as firmware/tools/qemu-icount/Makefile.
PLUGIN_CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden")
COUNT_FILE_ENV = "MFN_ICOUNT_FILE"
GCC_TIMEOUT_S = 60


def build_plugin(out_dir: Path, cc: str = "gcc") -> Path:
    """Compile the plugin into out_dir (cached by source and flags); return the .so."""
    source = PLUGIN_SOURCE.read_bytes()
    key = hashlib.sha256(source + "\0".join((cc, *PLUGIN_CFLAGS)).encode()).hexdigest()[:16]
    out_dir = Path(out_dir)
    plugin = out_dir / f"libmfn_icount-{key}.so"
    if plugin.is_file():
        return plugin
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent builders never see half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=".libmfn_icount-", suffix=".so", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [cc, *PLUGIN_CFLAGS, "-o", str(tmp), str(PLUGIN_SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=GCC_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            first_error = next((ln for ln in lines if "error" in ln), lines[0] if lines else "no output")
            raise ExternalFailure(f"{cc}: cannot build the icount plugin: {first_error.strip()}")
        tmp.chmod(0o755)
        tmp.replace(plugin)
    except FileNotFoundError:
        raise ExternalFailure(f"{cc}: not installed (needed to build the QEMU icount plugin)") from None
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"{cc}: building the icount plugin took more than {GCC_TIMEOUT_S} s") from None
    finally:
        tmp.unlink(missing_ok=True)
    return plugin


def qemu_user_command(
    program: Path,
    plugin: Path,
    count_file: Path,
    cpu: str = "cortex-a72",
    sysroot: str = "/usr/aarch64-linux-gnu",
    args: Sequence[str] = (),
    qemu: str = "qemu-aarch64",
) -> list[str]:
    """The command that runs `program` under qemu user mode with the icount plugin.

    The count file goes through the environment (`env MFN_ICOUNT_FILE=... qemu ...`):
    the plugin reads it from QEMU's environment and the guest inherits it. So the
    command has no comma, which socat's EXEC address would take for an option.

    Counts are deterministic for the same program, arguments and environment; code
    whose path depends on data alignment (glibc's string functions) can shift by a
    few instructions with the size of the environment, so run it with a fixed one.
    """
    paths = {"program": program, "plugin": plugin, "count file": count_file, "sysroot": sysroot}
    for what, path in paths.items():
        if "," in str(path):
            raise BadInput(f"{what} {path}: a comma in the path breaks QEMU and socat options; use another folder")
    return [
        "env",
        f"{COUNT_FILE_ENV}={Path(count_file).resolve()}",
        qemu,
        "-cpu",
        cpu,
        "-L",
        str(sysroot),
        "-plugin",
        f"file={Path(plugin).resolve()}",  # explicit key: a bare path with '=' would parse as one
        str(program),
        *args,
    ]
