"""Injected link faults end in recovery or a clear exit-5 error, never a hang.

The device is the real x86_64 device program (tiny model) behind a fault-injecting
wrapper of its port: frames dropped, corrupted or padded with noise in either
direction, the device reset mid-session, the link closed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from compiler.backends.c_host import golden_as_device
from compiler.errors import ExternalFailure
from compiler.hil.link import DeviceLink
from compiler.hil.pipe import PipePort
from compiler.hil.session import run_inputs
from compiler.synthetic import synthetic_eval_set
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.device_helpers import TINY_SIZE, build_device, require_tools, tiny_qgraph


class FaultyPort:
    """A port that breaks the n-th write (host -> device) or read (device -> host) on purpose."""

    def __init__(self, program, faults: dict[str, set[int]]) -> None:
        self.program = program
        self.inner = PipePort.for_program(program)
        self.faults = faults
        self.writes = 0
        self.stream = bytearray()  # everything read, to find the frame to damage
        self.target: int | None = None

    @property
    def in_waiting(self) -> int:
        return self.inner.in_waiting

    def read(self, size: int = 1) -> bytes:
        data = bytearray(self.inner.read(size))
        base = len(self.stream)
        self.stream += data
        if "corrupt_run_reply" in self.faults and self.target is None:
            at = self.stream.find(b"MF\x01\x83")  # the first RUN reply's header
            self.target = at + 12 if at >= 0 else None  # a byte of its payload
        if self.target is not None and base <= self.target < base + len(data):
            data[self.target - base] ^= 0x01
            self.target = -1
        return bytes(data)

    def write(self, data: bytes) -> int:
        self.writes += 1
        n = self.writes
        if n in self.faults.get("reset_before_write", set()):
            self.inner.close()  # the board resets: a fresh program with no input
            self.inner = PipePort.for_program(self.program)
        if n in self.faults.get("close_before_write", set()):
            self.inner.close()
        if n in self.faults.get("drop_write", set()):
            return len(data)
        if n in self.faults.get("corrupt_write", set()):
            data = data[:-6] + bytes([data[-6] ^ 0x10]) + data[-5:]
        if n in self.faults.get("noise_write", set()):
            data = b"\x00noise MF\xff" + data + b"MF trailing"
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def tiny_device(tmp_path_factory):
    target = require_tools("x86_64")
    tmp = tmp_path_factory.mktemp("faults")
    qgraph = tiny_qgraph(tmp)
    images = synthetic_eval_set(4, seed=5)[0][:, :, :TINY_SIZE, :TINY_SIZE]
    return build_device(target, qgraph, tmp), images, golden_as_device(qgraph, images), qgraph


def _session(tiny_device, faults, **link_args):
    program, images, expected, _ = tiny_device
    port = FaultyPort(program, faults)
    with DeviceLink("faulty", port=port, link_timeout_s=0.5, **link_args) as link:
        started = time.monotonic()
        runs = run_inputs(link, images, run_timeout_s=3)
        assert np.array_equal(runs.outputs, expected), "recovered runs are still bit-exact"
        return link, time.monotonic() - started


@pytest.mark.parametrize(
    "fault",
    ["drop_write", "corrupt_write", "noise_write", "corrupt_run_reply"],
)
def test_a_damaged_or_lost_frame_is_retried_and_the_run_completes(tiny_device, fault):
    # write 1 is INFO; 2 and 3 are the first image's LOAD chunks; 4 its RUN
    link, seconds = _session(tiny_device, {fault: {3, 4}})
    assert link.retries_used >= (0 if fault == "noise_write" else 1)
    assert seconds < 15


def test_a_device_reset_mid_session_is_detected_and_the_input_uploaded_again(tiny_device):
    link, _ = _session(tiny_device, {"reset_before_write": {4}})  # just before the first RUN
    assert link.resets_seen == 1


def test_a_closed_link_is_a_clear_error_not_a_hang(tiny_device):
    program, images, _, _ = tiny_device
    started = time.monotonic()
    port = FaultyPort(program, {"close_before_write": {3}})
    with pytest.raises(ExternalFailure, match=r"link closed"), DeviceLink("x", port=port, link_timeout_s=0.5) as link:
        run_inputs(link, images)
    assert time.monotonic() - started < 10


def test_a_mute_device_fails_after_bounded_retries(tmp_path):
    started = time.monotonic()
    port = PipePort(["sleep", "60"])
    with (
        pytest.raises(ExternalFailure, match=r"INFO failed after 3 attempts \(no reply"),
        DeviceLink("mute", port=port, retries=2, link_timeout_s=0.3) as link,
    ):
        link.info()
    assert time.monotonic() - started < 5


def test_hil_on_a_port_nobody_listens_on_is_exit_5(capsys, tmp_path, tiny_device):
    from calibration.qgraph import save
    from compiler.hil.emulate import free_port

    build = tmp_path / "b"
    build.mkdir()
    save(tiny_device[3], build / "model.mfnq")
    (build / "report.json").write_text('{"target": "x86_64", "model": {"sha256": ""}, "out": "x"}')
    url = f"socket://127.0.0.1:{free_port()}"
    code, _, err = run_cli(capsys, "hil", "--target", "x86_64", "--port", url, "--build", str(build))
    assert code == 5, err
    assert_one_line_error(err, url, "cannot open")
