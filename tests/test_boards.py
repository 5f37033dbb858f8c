"""Bare-metal board ports (firmware/boards/) behave as mfn_port.h promises.

The echo firmware (firmware/boards/tests/echo_main.c) is built with the cross compiler
exactly as a generated firmware Makefile would build a board (include board.mk, compile
BOARD_SOURCES with BOARD_CFLAGS and -Werror, link with BOARD_LDFLAGS), with a 1.2 MB
read-only blob standing in for the model weights and a 1 MiB .bss.mfn_arena array.

QEMU boards (mps3-an547, mps2-an500) run it under `qemu-system-arm -icount shift=0`
with the UART on a TCP socket: banner, read timeouts that expire while the CPU sleeps,
a rising counter at the documented clock, an exact echo of 40,000 random bytes sent in
4 KiB pieces, no loss or corruption when input overflows the receive ring, binary-clean
bulk transfers both ways, and every region loaded where the linker script put it.
stm32h743 has no emulator: its image must link and fit its memory regions.

Missing tools skip the tests, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time
import tomllib
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOARDS_DIR = ROOT / "firmware" / "boards"
ECHO_DIR = BOARDS_DIR / "tests"
QEMU = "qemu-system-arm"
CC = "arm-none-eabi-gcc"

BLOB_BYTES = 1_200_000  # about the int8 MobileFaceNet's weights
ARENA_BYTES = {"mps3-an547": 1 << 20, "mps2-an500": 1 << 20, "stm32h743": 400 * 1024}

# Where each board's linker script must put things: (start, size) of each region.
REGIONS = {
    "mps3-an547": {
        "code": (0x00000000, 512 << 10),
        "weights": (0x28000000, 8 << 20),
        "arena": (0x21000000, 4 << 20),
        "data": (0x20000000, 512 << 10),
    },
    "mps2-an500": {
        "code": (0x00000000, 4 << 20),
        "weights": (0x00000000, 4 << 20),
        "arena": (0x20000000, 4 << 20),
        "data": (0x20000000, 4 << 20),
    },
    "stm32h743": {
        "code": (0x08000000, 2 << 20),
        "weights": (0x08000000, 2 << 20),
        "arena": (0x24000000, 512 << 10),
        "data": (0x20000000, 128 << 10),
    },
}
QEMU_BOARDS = ["mps3-an547", "mps2-an500"]
COMMAND_BYTES = set(range(1, 9))  # echo_main.c answers these instead of echoing them


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have {tool} (make setup installs it)")
        pytest.skip(f"{tool} not installed")


def _target(board: str) -> dict:
    return tomllib.loads((ROOT / "targets" / f"{board}.toml").read_text())


def _in_region(board: str, region: str, address: int, size: int = 1) -> bool:
    start, length = REGIONS[board][region]
    return start <= address and address + size <= start + length


def _make(board: str, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(ECHO_DIR), f"BOARD={board}", f"OUT={out}", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("blob") / "weights.bin"
    data = random.Random(7).randbytes(BLOB_BYTES)
    path.write_bytes(data)
    return path, zlib.crc32(data)


_built: dict[tuple[str, int | None], Path] = {}


def _echo_elf(
    board: str, blob: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory, ring: int | None = None
) -> Path:
    """The echo firmware with the weights blob and arena; ring overrides the 4 KiB receive ring."""
    _need(CC)
    if (board, ring) not in _built:
        out = tmp_path_factory.mktemp(f"echo-{board}")
        extra = [f"RX_RING_BYTES={ring}"] if ring else []
        _make(board, out, f"ECHO_BLOB={blob[0]}", f"ECHO_ARENA_BYTES={ARENA_BYTES[board]}", *extra)
        _built[board, ring] = out / "echo.elf"
    return _built[board, ring]


def _sections(elf: Path) -> dict[str, tuple[int, int]]:
    """name -> (size, address) from arm-none-eabi-size -A."""
    text = subprocess.run(
        ["arm-none-eabi-size", "-A", "-d", str(elf)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(board: str, elf: Path, port: int) -> list[str]:
    """The exact command line docs/boards.md gives."""
    return [
        QEMU,
        "-M",
        _target(board)["emulation"]["machine"],
        "-kernel",
        str(elf),
        "-display",
        "none",
        "-nodefaults",
        "-monitor",
        "none",
        "-icount",
        "shift=0",
        "-serial",
        f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
    ]


class Link:
    """The echo firmware's serial link: pyserial over QEMU's TCP server."""

    def __init__(self, port) -> None:
        self.port = port

    def line(self, timeout: float = 10.0) -> str:
        self.port.timeout = timeout
        raw = self.port.read_until(b"\n")
        assert raw.endswith(b"\n"), f"no complete line within {timeout} s (got {raw!r})"
        return raw.decode("ascii").rstrip("\n")

    def command(self, byte: int, payload: bytes = b"", timeout: float = 10.0) -> str:
        self.port.write(bytes([byte]) + payload)
        return self.line(timeout)

    def exact(self, count: int, timeout: float) -> bytes:
        self.port.timeout = timeout
        data = self.port.read(count)
        assert len(data) == count, f"{len(data)} of {count} bytes within {timeout} s"
        return data


@contextmanager
def running(board: str, elf: Path):
    """Boots the firmware in QEMU; yields a Link past the banner; always kills QEMU."""
    _need(QEMU)
    serial = pytest.importorskip("serial")
    port_number = _free_port()
    qemu = subprocess.Popen(
        qemu_command(board, elf, port_number),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    port = None
    try:
        deadline = time.monotonic() + 15
        while port is None:
            try:
                port = serial.serial_for_url(f"socket://127.0.0.1:{port_number}", timeout=10, write_timeout=30)
            except serial.SerialException:
                assert qemu.poll() is None, f"QEMU exited: {qemu.communicate(timeout=10)[0]!r}"
                assert time.monotonic() < deadline, "QEMU never listened on its serial port"
                time.sleep(0.1)
        link = Link(port)
        banner = link.line()
        unit, clock = _target_counter(board)
        assert banner == f"mfn-echo ready unit={unit} clock={clock}"
        yield link
    finally:
        if port is not None:
            port.close()
        qemu.kill()
        qemu.communicate(timeout=10)


def _target_counter(board: str) -> tuple[str, int]:
    clock_mhz = _target(board)["cpu"]["cores"][0]["clock_mhz"]
    return ("systick" if board in QEMU_BOARDS else "cycles"), clock_mhz * 1_000_000


def _counter(link: Link) -> int:
    reply = link.command(1).split()
    assert reply[0] == "counter", reply
    return int(reply[1])


def _payload(size: int, seed: int) -> bytes:
    allowed = bytes(b for b in range(256) if b not in COMMAND_BYTES)
    rng = random.Random(seed)
    return bytes(rng.choice(allowed) for _ in range(size))


def _report(name: str, **numbers: float) -> None:
    """Measured numbers, shown by `pytest -s` (docs/boards.md quotes them)."""
    print(f"\n[{name}] " + " ".join(f"{k}={v:.6g}" for k, v in numbers.items()))


@pytest.fixture(params=QEMU_BOARDS)
def echo(request, blob, tmp_path_factory):
    board = request.param
    elf = _echo_elf(board, blob, tmp_path_factory)
    with running(board, elf) as link:
        yield board, link


def test_board_mk_contract(tmp_path):
    """board.mk works from another directory and carries the target's CPU flags."""
    for board in REGIONS:
        text = _make(board, tmp_path, "print-board").stdout
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert values["CC"] == _target(board)["toolchain"]["cc"]
        for flag in _target(board)["toolchain"]["cflags"]:
            if not flag.startswith("-O"):
                assert flag in values["BOARD_CFLAGS"].split(), (board, flag)
                assert flag in values["BOARD_LDFLAGS"].split(), (board, flag)
        assert f"-T{BOARDS_DIR / board / 'link.ld'}" in values["BOARD_LDFLAGS"].split()
        for source in values["BOARD_SOURCES"].split():
            assert Path(source).is_absolute() and Path(source).is_file(), source


def test_ticks_counter_and_clock(echo):
    """1000 ms read timeouts expire while idle; the counter runs at the target's clock."""
    board, link = echo
    start = time.monotonic()
    assert link.line(timeout=10) == "tick"
    first_tick = time.monotonic() - start
    before, wall_before = _counter(link), time.monotonic()
    assert link.line(timeout=10) == "tick"
    assert link.line(timeout=10) == "tick"
    after, wall_after = _counter(link), time.monotonic()
    assert after > before
    rate = (after - before) / (wall_after - wall_before)
    _report(f"{board} clock", first_tick_s=first_tick, systick_hz_vs_wall=rate)
    # Idle, QEMU's virtual clock follows the host clock, a little slower (it is late by the
    # host's timer latency at each 1 ms SysTick deadline): the rate is the SysTick clock.
    assert 0.6 < rate / _target_counter(board)[1] < 1.1


def test_read_timeout_expires(echo):
    """mfn_port_read(..., 200) with nothing sent returns 0 after 200 ms of counter time."""
    board, link = echo
    clock = _target_counter(board)[1]
    for _ in range(3):
        start = time.monotonic()
        reply = link.command(2)
        wall = time.monotonic() - start
        match = re.fullmatch(r"timeout got=(\d+) ticks=(\d+)", reply)
        assert match, reply
        assert int(match[1]) == 0
        waited_ms = int(match[2]) * 1000 / clock
        _report(f"{board} timeout", asked_ms=200, counter_ms=waited_ms, wall_ms=wall * 1000)
        assert 199.0 <= waited_ms <= 201.0
        assert 0.15 < wall < 5.0


def test_echo_40000_random_bytes_in_4k_pieces(echo):
    board, link = echo
    assert link.command(5) == "quiet"  # no "tick" inside the echo stream
    data = _payload(40_000, seed=1)
    start = time.monotonic()
    for at in range(0, len(data), 4096):
        piece = data[at : at + 4096]
        link.port.write(piece)
        assert link.exact(len(piece), timeout=60) == piece, f"echo differs in piece at {at}"
    elapsed = time.monotonic() - start
    _report(f"{board} echo", bytes=len(data), round_trip_bytes_per_s=len(data) / elapsed)


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_ring_overflow_loses_and_corrupts_nothing(board, blob, tmp_path_factory):
    """With a 64-byte ring, 16 KiB sent while the firmware does not read comes back intact."""
    with running(board, _echo_elf(board, blob, tmp_path_factory, ring=64)) as link:
        assert link.command(5) == "quiet"
        burst = _payload(16 * 1024, seed=2)
        link.port.write(b"\x03" + burst)  # stall 300 ms first: the ring fills 256 times over
        stalled = link.line(timeout=60)
        assert stalled.startswith("stalled ticks="), stalled
        assert link.exact(len(burst), timeout=60) == burst
        data = _payload(40_000, seed=3)  # and an echo sent in one go, without pacing
        link.port.write(data)
        assert link.exact(len(data), timeout=120) == data
        assert " ok=1" in link.command(4, timeout=60)  # .data (next to the ring) still intact


def test_bulk_transfers_are_binary_clean(echo):
    """64 KiB of every byte value each way, command bytes included; measures the rates."""
    board, link = echo
    assert link.command(5) == "quiet"
    size = 64 * 1024
    data = bytes(range(256)) * (size // 256)  # every byte value, command bytes included
    start = time.monotonic()
    link.port.write(b"\x06" + struct.pack("<I", size) + data)
    reply = link.line(timeout=120)
    host_to_device = size / (time.monotonic() - start)
    assert reply.startswith(f"sink got={size} crc={zlib.crc32(data):08x} "), reply

    start = time.monotonic()
    link.port.write(b"\x07" + struct.pack("<I", size))
    received = link.exact(size, timeout=120)
    device_to_host = size / (time.monotonic() - start)
    assert received == data
    assert link.line(timeout=10).startswith("source ticks=")
    _report(f"{board} bulk", host_to_device_bytes_per_s=host_to_device, device_to_host_bytes_per_s=device_to_host)


def test_regions_are_loaded_where_linked(echo, blob):
    """Weights blob, arena, .data and stack sit in the intended regions and hold the right bytes."""
    board, link = echo
    reply = link.command(4, timeout=60)
    fields = dict(item.split("=", 1) for item in reply.split()[1:])
    blob_address, blob_size = (int(v, 16) if i == 0 else int(v) for i, v in enumerate(fields["blob"].split("+")))
    arena_address, arena_size = (int(v, 16) if i == 0 else int(v) for i, v in enumerate(fields["arena"].split("+")))
    assert blob_size == BLOB_BYTES and int(fields["crc"], 16) == blob[1], "weights not loaded intact"
    assert _in_region(board, "weights", blob_address, blob_size)
    assert arena_size == ARENA_BYTES[board] and arena_address % 16 == 0
    assert _in_region(board, "arena", arena_address, arena_size)
    assert fields["zero"] == "1" and fields["rw"] == "1", reply
    assert _in_region(board, "data", int(fields["data"], 16)) and fields["ok"] == "1", reply
    assert _in_region(board, "data", int(fields["stack"], 16)), reply
    assert fields["fpu"] == "337", reply
    assert fields["mve"] == ("144" if "mve" in _target(board)["cpu"]["features"] else "none"), reply


def test_fault_is_reported_on_the_uart(echo):
    """A fault prints one line (which exception, where) instead of a silent hang."""
    _, link = echo
    assert link.command(5) == "quiet"
    link.port.write(b"\x08")
    assert link.line(timeout=10) == "\r"  # the report starts on a fresh line
    report = link.line(timeout=10)
    assert report.startswith("mfn FAULT usagefault exc=00000006 pc="), report
    assert "cfsr=00010000" in report, report  # UNDEFINSTR


def test_stm32h743_links_and_fits(blob, tmp_path_factory):
    board = "stm32h743"
    elf = _echo_elf(board, blob, tmp_path_factory)
    sections = _sections(elf)
    for name, region in [(".text", "code"), (".rodata", "weights"), (".mfn_arena", "arena"), (".bss", "data")]:
        size, address = sections[name]
        assert _in_region(board, region, address, size), (name, hex(address), size)
    assert sections[".rodata"][0] >= BLOB_BYTES
    assert sections[".mfn_arena"][0] == ARENA_BYTES[board]
    flash_used = sum(sections[n][0] for n in (".text", ".ARM.exidx", ".rodata", ".data") if n in sections)
    _report("stm32h743 size", flash_bytes=flash_used, arena_bytes=sections[".mfn_arena"][0])
    assert flash_used <= REGIONS[board]["code"][1]


def test_stm32h743_rejects_an_arena_that_does_not_fit(blob, tmp_path):
    _need(CC)
    result = _make("stm32h743", tmp_path, f"ECHO_BLOB={blob[0]}", "ECHO_ARENA_BYTES=600000", check=False)
    assert result.returncode != 0
    assert "AXI_SRAM" in result.stderr and "overflowed" in result.stderr, result.stderr[-2000:]
