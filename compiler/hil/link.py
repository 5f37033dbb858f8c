"""The host side of the HIL protocol over any pyserial URL.

Every wait has a deadline; lost or damaged replies are retried a bounded number of
times (each command is idempotent, docs/protocol.md); anything else ends in
`ExternalFailure` (exit code 5) naming the link, the command and what was seen.
"""

from __future__ import annotations

import contextlib
import time

import serial

from compiler.errors import ExternalFailure
from compiler.hil import protocol
from compiler.hil.protocol import Command

# Slowest link we plan for: the emulated UART moves 11-37 KiB/s, a 115200 baud UART 11 KiB/s.
SLOWEST_LINK_BYTES_PER_S = 8 * 1024
LINK_TIMEOUT_S = 2.0
RETRIES = 3


class DeviceError(ExternalFailure):
    """The device answered with an explicit protocol error."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def open_port(url: str, baud: int, timeout_s: float) -> serial.SerialBase:
    """Open a pyserial URL, retrying while an emulator is still starting to listen."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return serial.serial_for_url(url, baudrate=baud, timeout=0.05, write_timeout=LINK_TIMEOUT_S * 5)
        except (serial.SerialException, OSError, ValueError) as exc:
            if isinstance(exc, ValueError) or time.monotonic() > deadline:
                raise ExternalFailure(f"{url}: cannot open the link ({exc})") from None
            time.sleep(0.1)


class DeviceLink:
    """One device program behind one serial link."""

    def __init__(
        self,
        url: str,
        *,
        baud: int = 115200,
        open_timeout_s: float = 10.0,
        retries: int = RETRIES,
        link_timeout_s: float = LINK_TIMEOUT_S,
        port: serial.SerialBase | None = None,
    ) -> None:
        self.url = url
        self.retries = retries
        self.link_timeout_s = link_timeout_s
        self.port = port or open_port(url, baud, open_timeout_s)
        self.reader = protocol.FrameReader()
        self.seq = 0
        self.resets_seen = 0
        self.replies = 0
        self.retries_used = 0

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self.seq = self.seq % 255 + 1  # 0 is the boot announcement's
        return self.seq

    def _read_some(self) -> bytes:
        try:
            return self.port.read(max(1, self.port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise ExternalFailure(f"{self.url}: the link closed ({exc})") from None

    def _write(self, frame: bytes) -> None:
        try:
            self.port.write(frame)
            self.port.flush()
        except (serial.SerialException, OSError) as exc:
            raise ExternalFailure(f"{self.url}: the link closed ({exc})") from None

    def request(self, command: Command, payload: bytes = b"", *, timeout_s: float | None = None) -> bytes:
        """Send one command and return its reply payload, retrying lost or damaged frames."""
        seq = self._next_seq()
        frame = protocol.encode(command, seq, payload)
        budget = (timeout_s or self.link_timeout_s) + 2 * len(frame) / SLOWEST_LINK_BYTES_PER_S
        problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retries_used += 1
            started = time.monotonic()
            self._write(frame)
            outcome = self._await_reply(command, seq, started + budget)
            if isinstance(outcome, bytes):
                self.replies += 1
                return outcome
            problem = outcome
        raise ExternalFailure(
            f"{self.url}: {command.name} failed after {self.retries + 1} attempts ({problem}; "
            f"{self.reader.bad_frames} damaged frames, {self.reader.dropped_bytes} stray bytes)"
        )

    def _await_reply(self, command: Command, seq: int, deadline: float) -> bytes | str:
        """The reply payload, or why this attempt failed (to retry)."""
        while time.monotonic() < deadline:
            for frame in self.reader.feed(self._read_some()):
                if frame.type == protocol.BOOT:
                    if self.replies == 0:
                        continue  # the program just started for this connection: not a reset
                    self.resets_seen += 1
                    return "the device reset"
                if frame.seq != seq:
                    continue  # a stale reply to an earlier attempt
                if frame.type == command | protocol.REPLY_BIT:
                    return frame.payload
                if frame.type == protocol.ERROR:
                    code, _, message = protocol.parse_error(frame.payload)
                    if code == protocol.ErrorCode.BAD_CRC:
                        return "the device saw a damaged frame"
                    raise DeviceError(
                        f"{self.url}: {command.name} refused: {protocol.error_name(code)}: {message}", code
                    )
        return "no reply in time"

    # Commands -----------------------------------------------------------------

    def info(self) -> dict[str, str]:
        return protocol.parse_info(self.request(Command.INFO))

    def echo(self, data: bytes) -> bytes:
        return self.request(Command.ECHO, data)

    def reset(self) -> None:
        self.request(Command.RESET)

    def load(self, data: bytes, chunk: int = protocol.LOAD_CHUNK) -> None:
        """Upload the input in chunks; the device must confirm every byte."""
        offset = 0
        while offset < len(data):
            piece = data[offset : offset + chunk]
            held = int.from_bytes(self.request(Command.LOAD, offset.to_bytes(4, "little") + piece)[:4], "little")
            if held < offset + len(piece):
                raise ExternalFailure(f"{self.url}: LOAD: the device holds {held} bytes after {offset + len(piece)}")
            offset += len(piece)

    def run(self, warmup: int = 0, timed: int = 1, per_layer: bool = False, timeout_s: float = 120.0):
        payload = self.request(Command.RUN, protocol.run_request(warmup, timed, per_layer), timeout_s=timeout_s)
        try:
            return protocol.parse_run(payload)
        except ValueError as exc:
            raise ExternalFailure(f"{self.url}: RUN: {exc}") from None

    def layers(self) -> list[int]:
        try:
            return protocol.parse_layers(self.request(Command.LAYERS))
        except ValueError as exc:
            raise ExternalFailure(f"{self.url}: LAYERS: {exc}") from None
