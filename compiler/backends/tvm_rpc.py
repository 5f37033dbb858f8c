"""TVM's RPC tracker and servers, for tuning on boards (and on emulated ones).

On a real setup the user runs a tracker on the host and `rpc_server` on each board
(docs/tvm.md); `tune --rpc HOST:PORT --key K` then checks, within a timeout, that the
tracker answers and a board is registered under K before spending minutes building
candidates. `--emulate` starts both here: a tracker (this Python) and a server under
qemu-aarch64 (`arm64_python`) for aarch64 targets, or a native server for x86_64.
Both run in their own process groups and are stopped when tuning ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compiler import ui
from compiler.errors import BadInput, ExternalFailure
from compiler.hil.emulate import free_port, stop_process_group

CONNECT_TIMEOUT_S = 10.0
SERVER_START_TIMEOUT_S = 180.0  # the emulated Python imports TVM in ~10 s; CI machines are slower


@dataclass(frozen=True)
class Tracker:
    host: str
    port: int
    key: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_tracker(value: str, key: str | None) -> Tracker:
    """HOST:PORT and a key, checked."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--rpc {value}: expected HOST:PORT of a TVM RPC tracker, e.g. 192.168.1.10:9190")
    if not key:
        raise BadInput("--rpc needs --key, the key the board's rpc_server registered with (e.g. rk3399)")
    return Tracker(host, int(port), key)


def probe(tracker: Tracker, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (exit 5) when nothing answers at the tracker's address."""
    try:
        with socket.create_connection((tracker.host, tracker.port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ExternalFailure(
            f"RPC tracker {tracker.address} unreachable ({why} within {timeout_s:.0f} s); "
            "start it with `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190`"
        ) from None


def _queue(tracker: Tracker) -> dict:
    import tvm.rpc

    session = tvm.rpc.connect_tracker(tracker.host, tracker.port)
    try:
        return session.summary().get("queue_info", {}).get(tracker.key, {})
    finally:
        with contextlib.suppress(Exception):
            session.close()


def wait_for_board(tracker: Tracker, timeout_s: float, alive=None) -> dict:
    """Poll the tracker until a server is registered under the key; its queue entry.

    `alive` (optional) is called while waiting and raises when the board died.
    """
    probe(tracker)
    deadline = time.monotonic() + timeout_s
    while True:
        queue = _queue(tracker)
        if queue.get("free", 0) + queue.get("pending", 0) > 0 or queue.get("total", 0) > 0:
            return queue
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise ExternalFailure(
                f"no board registered with key '{tracker.key}' at tracker {tracker.address} within "
                f"{timeout_s:.0f} s; on the board run `python -m tvm.exec.rpc_server --tracker "
                f"{tracker.address} --key {tracker.key}`"
            )
        time.sleep(1.0)


def _start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"


@contextlib.contextmanager
def emulated_board(arch: str, cpu: str, key: str, workdir: Path, cache: Path | None = None) -> Iterator[Tracker]:
    """A tracker and one rpc_server (qemu-aarch64 for aarch64, native for x86_64),
    registered under `key`; both stopped on exit. Logs: workdir/{tracker,server}.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    if arch == "aarch64":
        from compiler.backends import arm64_python

        launcher = arm64_python.ensure(cache)
        python_cmd = [str(launcher), "-c", arm64_python.SERVER_BOOT, str(launcher)]
    elif arch == "x86_64":
        python_cmd = [sys.executable, "-m", "tvm.exec.rpc_server"]
    else:
        raise BadInput(f"--emulate: no emulated TVM board for {arch}")
    tracker = Tracker("127.0.0.1", free_port(), key)
    server_port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            _start(
                [
                    sys.executable,
                    "-m",
                    "tvm.exec.rpc_tracker",
                    "--host",
                    tracker.host,
                    "--port",
                    str(tracker.port),
                    "--port-end",
                    str(tracker.port + 1),
                ],
                workdir / "tracker.log",
            )
        )
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            if procs[0].poll() is not None:
                raise ExternalFailure(f"the RPC tracker exited: {_tail(workdir / 'tracker.log')}")
            with contextlib.suppress(OSError), socket.create_connection((tracker.host, tracker.port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise ExternalFailure(f"the RPC tracker did not listen within {CONNECT_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        env = {**os.environ, "MFN_QEMU_CPU": cpu, "TVM_NUM_THREADS": "1"}
        server_cmd = [
            *python_cmd,
            "--tracker",
            tracker.address,
            "--key",
            key,
            "--host",
            "127.0.0.1",
            "--port",
            str(server_port),
            "--port-end",
            str(server_port + 1),
        ]
        procs.append(_start(server_cmd, workdir / "server.log", env))

        def alive() -> None:
            if procs[1].poll() is not None:
                raise ExternalFailure(f"the emulated rpc_server exited: {_tail(workdir / 'server.log')}")

        with ui.step(f"starting the emulated {arch} RPC server ({cpu}) and its tracker"):
            wait_for_board(tracker, SERVER_START_TIMEOUT_S, alive)
        yield tracker
    finally:
        for proc in reversed(procs):
            stop_process_group(proc.pid)
