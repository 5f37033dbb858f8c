"""A device program on this machine, talked to through its stdin/stdout.

Quacks like the part of a pyserial port that DeviceLink uses (read with a timeout,
in_waiting, write, flush, close), so the build's own check of the x86_64 program and
the tests use the very protocol code `hil` uses, without a TCP bridge.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from pathlib import Path

from compiler.errors import ExternalFailure


class PipePort:
    def __init__(self, argv: list[str], timeout: float = 0.05, env: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExternalFailure(f"{argv[0]}: cannot start ({exc})") from None
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out, selectors.EVENT_READ)
        self._pending = bytearray()
        self.is_open = True

    @classmethod
    def for_program(cls, program: Path) -> PipePort:
        return cls([str(program)])

    def _pull(self, wait_s: float) -> None:
        if not self._selector.select(wait_s):
            return
        try:
            data = os.read(self._out, 65536)
        except BlockingIOError:
            return
        if not data:
            raise OSError(f"the device program exited ({self.proc.poll()})")
        self._pending += data

    @property
    def in_waiting(self) -> int:
        self._pull(0)
        return len(self._pending)

    def read(self, size: int = 1) -> bytes:
        deadline = time.monotonic() + self.timeout
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            self._pull(left)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def write(self, data: bytes) -> int:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except ValueError:  # written after close()
            raise OSError("the link is closed") from None
        return len(data)

    def flush(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.flush()
        except ValueError:
            raise OSError("the link is closed") from None

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        self._selector.close()
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=1)  # a device program exits at end of input
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            assert self.proc.stdout is not None
            self.proc.stdout.close()
