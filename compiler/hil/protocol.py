"""The HIL protocol's frames (docs/protocol.md), without any I/O.

Kept separate from the link so the framing can be tested byte for byte and reused by
fakes in tests; the C side is firmware/device/mfn_proto.c.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

VERSION = 1
MAGIC = b"MF"
HEADER_BYTES = 10
MAX_PAYLOAD = 4096
LOAD_CHUNK = MAX_PAYLOAD - 4
MAX_TIMED_RUNS = 64


class Command(IntEnum):
    INFO = 0x01
    LOAD = 0x02
    RUN = 0x03
    LAYERS = 0x04
    ECHO = 0x05
    RESET = 0x06


BOOT = 0x40
ERROR = 0x7F
REPLY_BIT = 0x80


class ErrorCode(IntEnum):
    BAD_CRC = 1
    BAD_VERSION = 2
    UNKNOWN_COMMAND = 3
    BAD_LENGTH = 4
    OUT_OF_RANGE = 5
    NOT_READY = 6
    TOO_LARGE = 7


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, the header check."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode(frame_type: int, seq: int, payload: bytes = b"", *, version: int = VERSION) -> bytes:
    """One frame: header with its CRC-16, payload, payload CRC-32."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes cannot be framed")
    head = MAGIC + struct.pack("<BBBBH", version, frame_type, seq & 0xFF, 0, len(payload))
    crc = zlib.crc32(payload) if payload else 0
    return head + struct.pack("<H", crc16(head)) + payload + struct.pack("<I", crc)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes


class FrameReader:
    """Incremental receiver: feed bytes, take complete frames; garbage is skipped.

    Damaged frames (bad header CRC, bad payload CRC) are counted and dropped, so the
    link can tell "nothing arrived" from "something arrived broken".
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.dropped_bytes = 0
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(MAGIC)
            if start < 0:
                keep = 1 if self.buffer.endswith(MAGIC[:1]) else 0
                self.dropped_bytes += len(self.buffer) - keep
                del self.buffer[: len(self.buffer) - keep]
                return frames
            self.dropped_bytes += start
            del self.buffer[:start]
            if len(self.buffer) < HEADER_BYTES:
                return frames
            head = bytes(self.buffer[:8])
            (header_crc,) = struct.unpack_from("<H", self.buffer, 8)
            _, _, frame_type, seq, _, length = struct.unpack("<2sBBBBH", head)
            if crc16(head) != header_crc or length > MAX_PAYLOAD:
                self.bad_frames += 1
                del self.buffer[:1]
                continue
            end = HEADER_BYTES + length + 4
            if len(self.buffer) < end:
                return frames
            payload = bytes(self.buffer[HEADER_BYTES : HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<I", self.buffer, HEADER_BYTES + length)
            if crc != (zlib.crc32(payload) if payload else 0):
                self.bad_frames += 1
                del self.buffer[:HEADER_BYTES]
                continue
            del self.buffer[:end]
            frames.append(Frame(frame_type, seq, payload))


def parse_info(payload: bytes) -> dict[str, str]:
    """INFO text (key=value lines) to a dict; unknown keys are kept, junk lines ignored."""
    info = {}
    for line in payload.decode("ascii", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            info[key.strip()] = value.strip()
    return info


def run_request(warmup: int, timed: int, per_layer: bool) -> bytes:
    return struct.pack("<HHB", warmup, timed, int(per_layer))


@dataclass(frozen=True)
class RunReply:
    elapsed: list[int]
    output: bytes


def parse_run(payload: bytes) -> RunReply:
    if len(payload) < 4:
        raise ValueError("RUN reply shorter than its header")
    runs, out_bytes = struct.unpack_from("<HH", payload)
    if len(payload) != 4 + 8 * runs + out_bytes:
        raise ValueError(f"RUN reply is {len(payload)} bytes, expected {4 + 8 * runs + out_bytes}")
    elapsed = list(struct.unpack_from(f"<{runs}Q", payload, 4))
    return RunReply(elapsed, payload[4 + 8 * runs :])


def parse_layers(payload: bytes) -> list[int]:
    if len(payload) < 2:
        raise ValueError("LAYERS reply shorter than its header")
    (count,) = struct.unpack_from("<H", payload)
    if len(payload) != 2 + 8 * count:
        raise ValueError(f"LAYERS reply is {len(payload)} bytes, expected {2 + 8 * count}")
    return list(struct.unpack_from(f"<{count}Q", payload, 2))


def parse_error(payload: bytes) -> tuple[int, int, str]:
    """(code, request type, message) of an error reply."""
    if len(payload) < 2:
        return 0, 0, "malformed error reply"
    return payload[0], payload[1], payload[2:].decode("ascii", errors="replace")


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"
