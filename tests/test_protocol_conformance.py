"""The protocol conformance suite (docs/protocol.md), run against every device program:
the x86_64 host program, the aarch64 Linux program under qemu-aarch64, the bare-metal
firmware of the emulated Cortex-M boards, and the TVM runner on x86_64 and (under
qemu-aarch64) rk3399.

Each case sends raw bytes, so it checks the device, not our host library.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from compiler.backends.c_host import golden_as_device
from compiler.hil import protocol
from compiler.hil.protocol import Command, ErrorCode
from compiler.synthetic import synthetic_eval_set
from tests.device_helpers import DEVICE_TARGETS, TINY_SIZE, build_device, open_device, require_tools, tiny_qgraph


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    return tmp, tiny_qgraph(tmp)


@pytest.fixture(scope="module", params=[*DEVICE_TARGETS, "x86_64+tvm", "rk3399+tvm"])
def device(request, tiny):
    name, _, backend = request.param.partition("+")
    target = require_tools(name)
    tmp, qgraph = tiny
    if backend == "tvm":
        from compiler.backends.tvm_runner import build_runner

        program = build_runner(qgraph, target, tmp / f"{name}-tvm", "tiny").program
    else:
        program = build_device(target, qgraph, tmp)
    with open_device(target, program, tmp / f"{request.param}-emu") as port:
        yield Device(port, target.name, backend or "c"), qgraph


class Device:
    """Raw frame exchange with one device program."""

    def __init__(self, port, name: str, backend: str = "c") -> None:
        self.backend = backend
        self.port = port
        self.name = name
        self.reader = protocol.FrameReader()
        self.seq = 0

    def send_raw(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def frames(self, seconds: float) -> list[protocol.Frame]:
        deadline = time.monotonic() + seconds
        got: list[protocol.Frame] = []
        while time.monotonic() < deadline:
            got += self.reader.feed(self.port.read(max(1, self.port.in_waiting)))
        return got

    def reply(self, seq: int, seconds: float = 20.0) -> protocol.Frame | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for frame in self.reader.feed(self.port.read(max(1, self.port.in_waiting))):
                if frame.seq == seq and frame.type != protocol.BOOT:
                    return frame
        return None

    def call(self, command: int, payload: bytes = b"", *, version: int = protocol.VERSION, seconds: float = 20.0):
        self.seq = self.seq % 200 + 1
        self.send_raw(protocol.encode(command, self.seq, payload, version=version))
        frame = self.reply(self.seq, seconds)
        assert frame is not None, f"{self.name}: no reply to {command:#x}"
        return frame

    def ok(self, command: Command, payload: bytes = b"", seconds: float = 20.0) -> bytes:
        frame = self.call(command, payload, seconds=seconds)
        assert frame.type == command | protocol.REPLY_BIT, (frame, protocol.parse_error(frame.payload))
        return frame.payload

    def error(self, command: int, payload: bytes = b"", **kw) -> int:
        frame = self.call(command, payload, **kw)
        assert frame.type == protocol.ERROR, frame
        code, request, message = protocol.parse_error(frame.payload)
        assert request == command & 0xFF and message
        return code


def _load(dev: Device, data: bytes) -> None:
    for offset in range(0, len(data), protocol.LOAD_CHUNK):
        piece = data[offset : offset + protocol.LOAD_CHUNK]
        held = struct.unpack("<I", dev.ok(Command.LOAD, struct.pack("<I", offset) + piece))[0]
        assert held == offset + len(piece)


def test_info_names_the_device_and_its_model(device):
    dev, _ = device
    info = protocol.parse_info(dev.ok(Command.INFO))
    assert info["protocol"] == "1" and info["target"] == dev.name and info["model"] == "tiny"
    assert int(info["input_bytes"]) == TINY_SIZE * TINY_SIZE * 3
    assert info["input_shape"] == f"{TINY_SIZE}x{TINY_SIZE}x3"
    assert int(info["output_count"]) == 8 and info["output_dtype"] == "int8"
    assert info["counter"] in {"cycles", "systick", "instructions", "us"}
    assert int(info["max_payload"]) == protocol.MAX_PAYLOAD and info["backend"] == dev.backend
    if dev.backend == "tvm":  # the VM's pooled allocator owns the memory
        assert int(info["arena_bytes"]) == 0 and info["kernels"] == "tvm-untuned"
        return
    assert int(info["arena_bytes"]) > 0
    # x86_64 hosts without AVX2 run the portable kernels
    expected = {"x86_64": {"avx2", "portable"}, "rk3399": {"neon"}, "mps3-an547": {"mve"}, "mps2-an500": {"dsp"}}
    assert info["kernels"] in expected[dev.name]


def test_echo_round_trips_the_largest_payload_and_an_empty_one(device):
    dev, _ = device
    data = np.random.default_rng(0).integers(0, 256, protocol.MAX_PAYLOAD, dtype=np.uint8).tobytes()
    assert dev.ok(Command.ECHO, data) == data
    assert dev.ok(Command.ECHO, b"") == b""


def test_garbage_and_damaged_headers_are_skipped(device):
    dev, _ = device
    noise = bytes(range(256)) + b"MF" + b"\x00" * 20 + b"MFMFMF"
    dev.send_raw(noise)
    good = protocol.encode(Command.ECHO, 0xEE, b"after the noise")
    broken_header = bytearray(protocol.encode(Command.ECHO, 0xED, b"lost"))
    broken_header[6] ^= 0x40  # the length: the header CRC must catch it
    dev.send_raw(bytes(broken_header) + good)
    frame = dev.reply(0xEE)
    assert frame is not None and frame.payload == b"after the noise"
    assert all(f.seq != 0xED for f in dev.frames(0.3))


def test_damaged_payload_gets_bad_crc_and_the_next_frame_works(device):
    dev, _ = device
    frame = bytearray(protocol.encode(Command.ECHO, 0x31, b"x" * 100))
    frame[40] ^= 0x01
    dev.send_raw(bytes(frame))
    reply = dev.reply(0x31)
    assert reply is not None and reply.type == protocol.ERROR
    assert protocol.parse_error(reply.payload)[0] == ErrorCode.BAD_CRC
    assert dev.ok(Command.ECHO, b"still here") == b"still here"


def test_truncated_frame_is_dropped_after_the_link_goes_quiet(device):
    dev, _ = device
    dev.send_raw(protocol.encode(Command.ECHO, 0x41, b"y" * 500)[:200])
    time.sleep(0.6)  # more than the device's 250 ms quiet limit
    assert dev.ok(Command.ECHO, b"fresh") == b"fresh"


def test_oversized_version_unknown_and_malformed_requests_are_refused(device):
    dev, _ = device
    dev.seq = dev.seq % 200 + 1
    header = b"MF" + struct.pack("<BBBBH", 1, Command.ECHO, dev.seq, 0, protocol.MAX_PAYLOAD + 1)
    dev.send_raw(header + struct.pack("<H", protocol.crc16(header)))
    reply = dev.reply(dev.seq)
    assert reply is not None and protocol.parse_error(reply.payload)[0] == ErrorCode.TOO_LARGE
    assert dev.error(Command.INFO, version=2) == ErrorCode.BAD_VERSION
    assert dev.error(0x33) == ErrorCode.UNKNOWN_COMMAND
    assert dev.error(Command.LOAD, b"\x00\x00") == ErrorCode.BAD_LENGTH
    assert dev.error(Command.RUN, b"\x00") == ErrorCode.BAD_LENGTH
    assert dev.ok(Command.ECHO, b"ok") == b"ok"


def test_load_is_bounds_checked_and_run_needs_a_complete_input(device):
    dev, _ = device
    size = TINY_SIZE * TINY_SIZE * 3
    dev.ok(Command.RESET)
    assert dev.error(Command.RUN, protocol.run_request(0, 1, False)) == ErrorCode.NOT_READY
    assert dev.error(Command.LOAD, struct.pack("<I", 10) + b"z") == ErrorCode.OUT_OF_RANGE  # a gap
    dev.ok(Command.LOAD, struct.pack("<I", 0) + b"z" * 4000)
    past_end = struct.pack("<I", 4000) + b"z" * (size - 4000 + 1)
    assert dev.error(Command.LOAD, past_end) == ErrorCode.OUT_OF_RANGE
    assert dev.error(Command.LOAD, struct.pack("<I", 0xFFFFFFFF) + b"z") == ErrorCode.OUT_OF_RANGE
    assert dev.error(Command.RUN, protocol.run_request(0, 1, False)) == ErrorCode.NOT_READY
    assert dev.error(Command.RUN, protocol.run_request(0, 0, False)) == ErrorCode.OUT_OF_RANGE
    assert dev.error(Command.RUN, protocol.run_request(0, 65, False)) == ErrorCode.OUT_OF_RANGE


def test_run_returns_the_golden_output_with_timings_and_layers(device):
    dev, qgraph = device
    image = synthetic_eval_set(2, seed=9)[0][:1, :, :TINY_SIZE, :TINY_SIZE]
    dev.ok(Command.RESET)
    assert dev.error(Command.LAYERS) == ErrorCode.NOT_READY
    _load(dev, np.ascontiguousarray(image[0].transpose(1, 2, 0)).tobytes())
    run = protocol.parse_run(dev.ok(Command.RUN, protocol.run_request(1, 3, True), seconds=120))
    assert np.array_equal(np.frombuffer(run.output, np.int8), golden_as_device(qgraph, image)[0])
    assert len(run.elapsed) == 3 and all(e > 0 for e in run.elapsed)
    layers = protocol.parse_layers(dev.ok(Command.LAYERS))
    # the C runtime times conv1, dw, gdconv; the TVM model is one call
    assert len(layers) == (1 if dev.backend == "tvm" else 3) and all(c > 0 for c in layers)
    assert sum(layers) <= max(run.elapsed) * 1.5
    again = protocol.parse_run(dev.ok(Command.RUN, protocol.run_request(0, 1, False), seconds=120))
    assert again.output == run.output  # RUN is repeatable: a host may retry it
    dev.ok(Command.RESET)
    assert dev.error(Command.RUN, protocol.run_request(0, 1, False)) == ErrorCode.NOT_READY
