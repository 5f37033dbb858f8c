"""The device program for a target: the generated model, the kernels, the HIL protocol
and the target's port (a bare-metal board, or Linux stdio), built with the target's
cross compiler under -Wall -Wextra -Werror.

The tree under OUT/c/ is self-contained with its Makefile (`make -C OUT/c`), so users
can rebuild it without mfnc; mfnc runs the same Makefile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compiler import __version__
from compiler.errors import BadInput, ExternalFailure
from compiler.targets import Target

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
BUILD_TIMEOUT_S = 600
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
PROGRAM = "firmware.elf"
COMMON_SOURCES = [
    "model.c",
    "runtime/mfn_kernels.c",
    "device/mfn_proto.c",
    "device/mfn_device.c",
    "device/mfn_main_c.c",
]


@dataclass(frozen=True)
class Port:
    """How the device program is put together for one kind of target."""

    kind: str  # "posix" or "board"
    dirs: tuple[str, ...]  # firmware/ sub-folders copied into the tree
    sources: tuple[str, ...]
    ldflags: tuple[str, ...]
    include_mk: str | None = None  # a board's Makefile fragment


def port_for(target: Target) -> Port | None:
    """The port that serves `target`, or None when mfnc has no device program for it yet."""
    if target.os == "linux" and target.cpu.arch in ("x86_64", "aarch64"):
        static = ("-static",) if target.cpu.arch == "aarch64" else ()
        return Port("posix", ("ports/posix",), ("ports/posix/mfn_port_posix.c", "ports/posix/icount.c"), static)
    board = FIRMWARE_DIR / "boards" / target.name
    if target.os == "baremetal" and (board / "board.mk").exists():
        return Port("board", ("boards/common", f"boards/{target.name}"), (), (), f"boards/{target.name}/board.mk")
    return None


def assemble_tree(src: Path, target: Target) -> Port | None:
    """Copy the runtime, the protocol and the port next to the generated model; write the Makefile."""
    port = port_for(target)
    for sub in ("runtime", "device", *(port.dirs if port else ())):
        dest = src / sub
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(FIRMWARE_DIR / sub, dest, ignore=shutil.ignore_patterns("tests", "*.o", "*.elf"))
    if port:
        (src / "Makefile").write_text(_makefile(target, port))
    return port


def _makefile(target: Target, port: Port) -> str:
    cflags = " ".join([*STRICT, *target.toolchain.cflags])
    includes = "-I. -Iruntime -Idevice " + " ".join(f"-I{d}" for d in port.dirs)
    board = f"BOARDS_DIR := $(CURDIR)/boards\ninclude {port.include_mk}\n" if port.include_mk else ""
    sources = " ".join([*COMMON_SOURCES, *port.sources])
    if port.include_mk:  # the board's Makefile fragment names its compiler and flags
        cflags = " ".join([*STRICT, *(f for f in target.toolchain.cflags if f.startswith("-O"))])
    ldflags = " ".join([*target.toolchain.ldflags, *port.ldflags])
    return f"""# The mfnc device program for {target.name}: `make` builds {PROGRAM} (and {PROGRAM}.map).
CC := {target.toolchain.cc}
{board}CFLAGS := {cflags} -DMFN_TARGET='"{target.name}"' -DMFN_FIRMWARE_VERSION='"mfnc-{__version__}"'
# `make -B KERNELS=portable` rebuilds with the portable reference kernels only (for comparison).
KERNELS ?= auto
ifeq ($(KERNELS),portable)
CFLAGS += -DMFN_PORTABLE_KERNELS
endif
LDFLAGS := {ldflags}
SOURCES := {sources} $(BOARD_SOURCES)

{PROGRAM}: $(SOURCES) $(wildcard *.h runtime/*.h device/*.h)
\t$(CC) $(CFLAGS) $(BOARD_CFLAGS) {includes} $(SOURCES) $(LDFLAGS) $(BOARD_LDFLAGS) -Wl,-Map={PROGRAM}.map -o $@

clean:
\trm -f {PROGRAM} {PROGRAM}.map
.PHONY: clean
"""


def build_firmware(src: Path, target: Target) -> Path:
    """Run the tree's Makefile; returns the program. Compiler errors are exit 5 with the first error."""
    if shutil.which(target.toolchain.cc) is None:
        raise ExternalFailure(f"{target.toolchain.cc}: not installed (run `make setup` or install it)")
    try:
        proc = subprocess.run(
            ["make", "-s", "-C", str(src), PROGRAM],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalFailure(f"make -C {src}: could not build the device program ({exc})") from None
    if proc.returncode != 0:
        lines = proc.stderr.splitlines()
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "no output")
        raise ExternalFailure(f"{target.toolchain.cc}: building the device program for {target.name} failed: {first}")
    return src / PROGRAM


_SECTION = re.compile(r"^(\.[\w.]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", re.MULTILINE)
_SECTION_WRAPPED = re.compile(r"^(\.[\w.]+)\n\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", re.MULTILINE)
_LOAD_ADDRESS = re.compile(r"load address (0x[0-9a-f]+)")


@dataclass(frozen=True)
class Section:
    name: str
    address: int
    size: int
    load_address: int


def map_sections(map_file: Path) -> list[Section]:
    """Output sections (name, address, size, load address) from a GNU ld map file."""
    text = map_file.read_text(errors="replace")
    start = text.find("Linker script and memory map")
    body = text[start:] if start >= 0 else text
    sections = []
    for pattern in (_SECTION, _SECTION_WRAPPED):
        for m in pattern.finditer(body):
            size = int(m.group(3), 16)
            if size == 0:
                continue
            line_end = body.find("\n", m.end())
            load = _LOAD_ADDRESS.search(body[m.end() : line_end if line_end >= 0 else None])
            address = int(m.group(2), 16)
            sections.append(Section(m.group(1), address, size, int(load.group(1), 16) if load else address))
    return sections


_NOT_LOADED = (".comment", ".debug", ".ARM.attributes", ".stab", ".note.gnu.build-id", ".gnu.attributes")
_NO_BITS = (".bss", ".tbss", ".mfn_arena", ".noinit", ".stack", ".heap")
_WRITABLE = (*_NO_BITS, ".data", ".tdata", ".got", ".init_array", ".fini_array")


def memory_from_map(map_file: Path, target: Target, arena_bytes: int) -> dict:
    """flash_bytes: the image a board must store (code, constants, initial data);
    ram_bytes: the writable memory the program uses (data, bss, arena, stack);
    arena_bytes: the activation arena alone.

    Read-only sections count as flash even where a board runs them from RAM (QEMU's
    MPS2 loads everything into SSRAM); on a bare-metal board every section must lie in
    one of the target's memory regions.
    """
    flash = ram = 0
    regions = target.memory.regions if target.os == "baremetal" else ()
    for s in map_sections(map_file):
        if s.name.startswith(_NOT_LOADED):
            continue
        if regions and not any(r.origin <= s.address < r.origin + r.size_kib * 1024 for r in regions):
            raise BadInput(f"{map_file}: section {s.name} at {s.address:#x} is outside {target.name}'s memory")
        if not s.name.startswith(_NO_BITS):
            flash += s.size
        if s.name.startswith(_WRITABLE):
            ram += s.size
    return {"flash_bytes": flash, "ram_bytes": ram, "arena_bytes": arena_bytes}
