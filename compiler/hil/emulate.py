"""Emulated boards behind a TCP port, so `hil` talks to them exactly as to a real board.

- bare-metal Cortex-M boards: qemu-system-arm, the UART as a TCP server
  (`-serial tcp:...,server=on,wait=on,nodelay=on`; without nodelay every round trip
  costs ~48 ms of Nagle delay);
- Linux aarch64 boards: the device program under qemu-aarch64 (with our instruction
  counting plugin), its stdio bridged to TCP by socat;
- x86_64: the device program itself, bridged by socat.

Each connection to a socat bridge starts a fresh device program (like a board reset);
QEMU's board keeps running across connections.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import BadInput, ExternalFailure
from compiler.targets import Target

START_TIMEOUT_S = 15.0


@dataclass
class EmulatedBoard:
    """A running emulator: where to connect, and how to read its counter."""

    target: str
    url: str
    pid: int
    command: list[str]
    log: Path
    # SysTick ticks -> instructions under -icount shift=0 (1 instruction per ns).
    ticks_to_instructions: float | None = None

    def stop(self) -> None:
        stop_process_group(self.pid)


def stop_process_group(pid: int) -> None:
    """Stop an emulator started by start(): SIGTERM to its group, SIGKILL if it lingers.

    The group is SIGKILLed at the end even when its leader exited on SIGTERM: children
    that ignore SIGTERM (TVM's tracker runs its server in a worker process) would
    otherwise outlive it as orphans.
    """
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:port (read from /proc, no connection made)."""
    needle = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == needle and fields[3] == "0A":  # 0A: LISTEN
                return True
    return False


def emulator_command(target: Target, program: Path, port: int, workdir: Path) -> tuple[list[str], float | None]:
    """The command that serves `program` for `target` on 127.0.0.1:port, and the counter conversion."""
    emu = target.emulation
    listen = f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,nodelay,fork"
    if emu.kind == "qemu-system":
        serial = f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"
        cmd = [emu.program or "qemu-system-arm", "-M", emu.machine or target.name, *emu.args]
        cmd += ["-nographic", "-monitor", "none", "-serial", serial, "-kernel", str(program)]
        shift0 = "shift=0" in " ".join(emu.args)
        return cmd, (1e9 if shift0 else None)
    if emu.kind == "qemu-user":
        from compiler.hil.icount import build_plugin, qemu_user_command

        plugin = build_plugin(workdir / "icount-plugin")
        inner = qemu_user_command(
            program,
            plugin,
            workdir / "icount.bin",
            cpu=emu.cpu or "cortex-a72",
            sysroot=emu.sysroot or "/usr/aarch64-linux-gnu",
        )
        return ["socat", listen, f"EXEC:{shlex.join(inner)}"], None
    if emu.kind == "native":
        return ["socat", listen, f"EXEC:{shlex.quote(str(program))}"], None
    raise BadInput(f"{target.name} has no emulator (emulation kind '{emu.kind}'): use --port with a real board")


def start(target: Target, program: Path, workdir: Path, port: int | None = None) -> EmulatedBoard:
    """Start the emulator in its own process group and wait until it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd, ticks = emulator_command(target, program, port, workdir)
    tool = cmd[0]
    if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
        raise ExternalFailure(f"{tool}: not installed (run `make setup`)")
    log = workdir / "emulator.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    board = EmulatedBoard(target.name, f"socket://127.0.0.1:{port}", proc.pid, cmd, log, ticks)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listening(port):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ExternalFailure(f"{tool} exited with {proc.returncode} before listening: {tail[0]}")
        if time.monotonic() > deadline:
            board.stop()
            raise ExternalFailure(f"{tool} did not listen on port {port} within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    return board
