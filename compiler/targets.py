"""The target catalogue: one TOML file per board in `targets/`, loaded and validated here.

Targets are data, not code, so that a user can describe their own board in a file and
pass `--target ./myboard.toml`. Because a typo in such a file would otherwise surface much
later as a wrong build, every file is validated strictly on load: unknown fields, wrong
types and inconsistent values are all refused with one line naming the file and the field.
The schema is documented field by field in docs/targets.md.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import shlex
import string
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from compiler.errors import BadInput

BACKENDS = ("c", "tvm", "rknn")
OS_KINDS = ("linux", "baremetal")
ARCHES = (
    "aarch64",
    "armv7-a",
    "armv6-m",
    "armv7-m",
    "armv7e-m",
    "armv8-m.main",
    "armv8.1-m.main",
    "x86_64",
)
# ISA features the backends know how to use; anything else would be silently ignored.
FEATURES = (
    "neon",
    "dotprod",
    "i8mm",
    "fp16",
    "sve",
    "vfpv4",
    "mve",
    "dsp",
    "fpu",
    "sse4.2",
    "avx2",
    "avx512",
)
NPU_TOOLKITS = ("rknn-toolkit2", "rknn-toolkit-v1")
# target_platform values rknn-toolkit2 2.5 accepts (rk2118 is left out: it aborts the process).
RKNN2_PLATFORMS = (
    "rk3588",
    "rk3576",
    "rk3568",
    "rk3566",
    "rk3562",
    "rv1106",
    "rv1106b",
    "rv1103",
    "rv1103b",
    "rv1126b",
)
REGION_KINDS = ("flash", "ram")
FLASH_METHODS = ("scp", "openocd", "st-flash", "pyocd", "command", "none")
FLASH_PLACEHOLDERS = ("artifact", "host")
# Emulation kinds, with the fields each one needs and the ones it may also have.
EMULATION_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "qemu-system": (frozenset({"program", "machine"}), frozenset({"cpu", "args"})),
    "qemu-user": (frozenset({"program", "cpu"}), frozenset({"sysroot", "args"})),
    "native": (frozenset(), frozenset()),
    "none": (frozenset(), frozenset()),
}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TARGETS_DIR_ENV = "MFNC_TARGETS_DIR"


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class CoreGroup:
    """A cluster of identical cores; `core` is the GCC/LLVM -mcpu name."""

    core: str
    count: int
    clock_mhz: int | None


@dataclass(frozen=True)
class Cpu:
    arch: str
    cores: tuple[CoreGroup, ...]
    features: tuple[str, ...]

    @property
    def primary(self) -> CoreGroup:
        """The cluster code is tuned and timed for: the first one listed (the big cores)."""
        return self.cores[0]

    @property
    def core_count(self) -> int:
        return sum(group.count for group in self.cores)


@dataclass(frozen=True)
class Region:
    name: str
    kind: str
    origin: int
    size_kib: int

    @property
    def end(self) -> int:
        return self.origin + self.size_kib * 1024


@dataclass(frozen=True)
class Memory:
    """Sizes in KiB (`ram_mib` in a file is converted). Regions matter for bare metal."""

    ram_kib: int
    flash_kib: int | None
    largest_ram_bank_kib: int
    regions: tuple[Region, ...]
    code_region: str | None
    weights_region: str | None
    arena_region: str | None

    def region(self, name: str) -> Region | None:
        return next((r for r in self.regions if r.name == name), None)


@dataclass(frozen=True)
class Npu:
    toolkit: str
    platform: str | None
    supported: bool
    reason: str


@dataclass(frozen=True)
class Toolchain:
    cc: str
    cxx: str | None
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]


@dataclass(frozen=True)
class Flash:
    method: str
    command: str | None
    note: str

    def argv(self, artifact: str, host: str | None = None) -> list[str]:
        """The flash command for `artifact`, split before substitution so paths may hold spaces."""
        if self.command is None:
            raise BadInput(f"flash method '{self.method}' has no command to run")
        if "{host}" in self.command and not host:
            raise BadInput("this target is flashed over the network: give the board's address (user@host)")
        values = {"artifact": artifact, "host": host or ""}
        return [arg.format(**values) for arg in shlex.split(self.command)]


@dataclass(frozen=True)
class Serial:
    port: str | None
    baud: int
    uart: str | None
    uart_base: int | None


@dataclass(frozen=True)
class Emulation:
    kind: str
    program: str | None = None
    machine: str | None = None
    cpu: str | None = None
    sysroot: str | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """One validated target file. `raw` is the parsed TOML, for fields a backend adds later."""

    name: str
    description: str
    os: str
    backends: tuple[str, ...]
    cpu: Cpu
    memory: Memory
    toolchain: Toolchain
    flash: Flash
    serial: Serial | None
    emulation: Emulation
    npu: Npu | None
    notes: str
    verified_on_hardware: bool
    path: Path
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def npu_usable(self) -> bool:
        return self.npu is not None and self.npu.supported


# ----------------------------------------------------------------- field reading


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML, short enough for a one-line error."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | list | dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


class _Table:
    """A TOML table being read: knows its file and dotted prefix, so errors can name both."""

    def __init__(self, file: str, prefix: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
        self.file = file
        self.prefix = prefix
        self.data = data
        allowed = tuple(allowed)
        for key in data:
            if key not in allowed:
                where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
                raise BadInput(
                    f"{file}: unknown field '{prefix}{key}' ({_suggest(key, allowed)}"
                    f"valid at {where}: {', '.join(allowed)})"
                )

    def fail(self, key: str, problem: str) -> NoReturn:
        raise BadInput(f"{self.file}: field '{self.prefix}{key}' {problem}")

    def bad(self, key: str, expected: str) -> NoReturn:
        self.fail(key, f"must be {expected}, got {_show(self.data[key])}")

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, required: bool, when: str = "") -> Any:
        if key not in self.data and required:
            self.fail(key, f"is required {when}".rstrip())
        return self.data.get(key)

    def text(self, key: str, required: bool = True, choices: tuple[str, ...] = (), when: str = "") -> str | None:
        """A non-empty string; `when` explains a conditional requirement in the error."""
        value = self._get(key, required, when)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.bad(key, "a non-empty string")
        if choices and value not in choices:
            hint = _suggest(value, choices)
            self.fail(
                key, f"must be one of {', '.join(choices)}, got {_show(value)}" + (f" ({hint.strip()})" if hint else "")
            )
        return value

    def integer(self, key: str, required: bool = True, minimum: int = 1) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.bad(key, "a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        return value

    def flag(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default is None)
        if value is None:
            return bool(default)
        if not isinstance(value, bool):
            self.bad(key, "true or false")
        return value

    def texts(self, key: str, required: bool = True, choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(key, required)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.bad(key, "a list of strings")
        for item in value:
            if choices and item not in choices:
                self.fail(
                    key, f"has unknown entry {_show(item)} ({_suggest(item, choices)}valid: {', '.join(choices)})"
                )
            if value.count(item) > 1:
                self.fail(key, f"lists {_show(item)} twice")
        return tuple(value)

    def table(self, key: str, allowed: Iterable[str], required: bool = True) -> _Table | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.bad(key, f"a table ([{self.prefix}{key}])")
        return _Table(self.file, f"{self.prefix}{key}.", value, allowed)

    def tables(self, key: str, allowed: Iterable[str], required: bool = True) -> list[_Table]:
        value = self._get(key, required)
        if value is None:
            return []
        if not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
            self.bad(key, "a non-empty list of tables ({ ... }, { ... })")
        return [_Table(self.file, f"{self.prefix}{key}[{i}].", item, allowed) for i, item in enumerate(value)]


# ---------------------------------------------------------------------- sections


def _read_cpu(top: _Table) -> Cpu:
    cpu = top.table("cpu", ("arch", "cores", "features"))
    assert cpu is not None
    groups = tuple(
        CoreGroup(
            core=item.text("core") or "",
            count=item.integer("count", required=False) or 1,
            clock_mhz=item.integer("clock_mhz", required=False),
        )
        for item in cpu.tables("cores", ("core", "count", "clock_mhz"))
    )
    return Cpu(
        arch=cpu.text("arch", choices=ARCHES) or "",
        cores=groups,
        features=cpu.texts("features", required=False, choices=FEATURES),
    )


_MEMORY_FIELDS = (
    "ram_kib",
    "ram_mib",
    "flash_kib",
    "largest_ram_bank_kib",
    "regions",
    "code_region",
    "weights_region",
    "arena_region",
)
_PLACEMENTS = ("code_region", "weights_region", "arena_region")


def _read_regions(memory: _Table) -> tuple[Region, ...]:
    regions = tuple(
        Region(
            name=item.text("name") or "",
            kind=item.text("kind", choices=REGION_KINDS) or "",
            origin=item.integer("origin", minimum=0) or 0,
            size_kib=item.integer("size_kib") or 0,
        )
        for item in memory.tables("regions", ("name", "kind", "origin", "size_kib"), required=False)
    )
    names = [r.name for r in regions]
    ordered = sorted(regions, key=lambda r: r.origin)
    for i, region in enumerate(regions):
        if names.count(region.name) > 1:
            memory.fail(f"regions[{i}].name", f"repeats region name {_show(region.name)}")
    for low, high in itertools.pairwise(ordered):
        if high.origin < low.end:
            i = regions.index(high)
            memory.fail(
                f"regions[{i}]",
                f"'{high.name}' at {high.origin:#x} overlaps '{low.name}' ({low.origin:#x}-{low.end:#x})",
            )
    return regions


def _read_ram_kib(memory: _Table) -> int:
    if memory.has("ram_kib") and memory.has("ram_mib"):
        memory.fail("ram_mib", "conflicts with 'memory.ram_kib': give only one of them")
    if not memory.has("ram_kib") and not memory.has("ram_mib"):
        memory.fail("ram_kib", "is required (or 'memory.ram_mib')")
    if memory.has("ram_mib"):
        return (memory.integer("ram_mib") or 0) * 1024
    return memory.integer("ram_kib") or 0


def _read_memory(top: _Table, os_kind: str) -> Memory:
    memory = top.table("memory", _MEMORY_FIELDS)
    assert memory is not None
    ram_kib = _read_ram_kib(memory)
    ram_field = "ram_mib" if memory.has("ram_mib") else "ram_kib"
    flash_kib = memory.integer("flash_kib", required=False)
    regions = _read_regions(memory)
    ram_banks = [r.size_kib for r in regions if r.kind == "ram"]
    if sum(ram_banks) > ram_kib:
        memory.fail("regions", f"add up to {sum(ram_banks)} KiB of RAM, more than 'memory.{ram_field}' ({ram_kib} KiB)")
    largest = memory.integer("largest_ram_bank_kib", required=False) or max(ram_banks, default=ram_kib)
    if largest > ram_kib:
        memory.fail("largest_ram_bank_kib", f"({largest}) exceeds the total RAM ({ram_kib} KiB)")
    if ram_banks and largest < max(ram_banks):
        memory.fail("largest_ram_bank_kib", f"({largest}) is smaller than a RAM region ({max(ram_banks)} KiB)")
    flash_total = sum(r.size_kib for r in regions if r.kind == "flash")
    if flash_kib is not None and flash_total > flash_kib:
        memory.fail("regions", f"add up to {flash_total} KiB of flash, more than 'memory.flash_kib' ({flash_kib} KiB)")
    placement = {key: _read_placement(memory, key, regions, os_kind) for key in _PLACEMENTS}
    return Memory(
        ram_kib=ram_kib,
        flash_kib=flash_kib,
        largest_ram_bank_kib=largest,
        regions=regions,
        code_region=placement["code_region"],
        weights_region=placement["weights_region"],
        arena_region=placement["arena_region"],
    )


def _read_placement(memory: _Table, key: str, regions: tuple[Region, ...], os_kind: str) -> str | None:
    """Where the firmware links code, weights and the arena; bare metal cannot do without it."""
    name = memory.text(key, required=os_kind == "baremetal", when="for os 'baremetal' (the firmware links there)")
    if name is None:
        return None
    names = tuple(r.name for r in regions)
    if name not in names:
        known = ", ".join(names) if names else "none: add memory.regions"
        memory.fail(key, f"names no region in memory.regions: {_show(name)} (regions: {known})")
    if key == "arena_region" and next(r for r in regions if r.name == name).kind != "ram":
        memory.fail(key, f"must name a RAM region, but {_show(name)} is flash")
    return name


def _read_npu(top: _Table) -> Npu | None:
    npu = top.table("npu", ("toolkit", "platform", "supported", "reason"), required=False)
    if npu is None:
        return None
    toolkit = npu.text("toolkit", choices=NPU_TOOLKITS) or ""
    supported = npu.flag("supported")
    if supported and toolkit != "rknn-toolkit2":
        npu.fail("supported", f"cannot be true with toolkit {_show(toolkit)}: only rknn-toolkit2 is installable")
    platform = npu.text(
        "platform",
        required=supported,
        choices=RKNN2_PLATFORMS if supported else (),
        when="when npu.supported is true (rknn-toolkit2's target_platform)",
    )
    reason = npu.text("reason", required=not supported, when="when npu.supported is false (say why)") or ""
    return Npu(toolkit=toolkit, platform=platform, supported=supported, reason=" ".join(reason.split()))


def _read_toolchain(top: _Table) -> Toolchain:
    tools = top.table("toolchain", ("cc", "cxx", "cflags", "ldflags"))
    assert tools is not None
    return Toolchain(
        cc=tools.text("cc") or "",
        cxx=tools.text("cxx", required=False),
        cflags=tools.texts("cflags", required=False),
        ldflags=tools.texts("ldflags", required=False),
    )


def _read_flash(top: _Table) -> Flash:
    flash = top.table("flash", ("method", "command", "note"), required=False)
    if flash is None:
        return Flash(method="none", command=None, note="")
    method = flash.text("method", choices=FLASH_METHODS) or ""
    command = flash.text("command", required=method != "none", when=f"for flash.method {_show(method)}")
    if method == "none" and command is not None:
        flash.fail("command", "must be absent when flash.method is 'none'")
    if command is not None:
        _check_flash_command(flash, command)
    return Flash(method=method, command=command, note=flash.text("note", required=False) or "")


def _check_flash_command(flash: _Table, command: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(command) if name is not None]
        shlex.split(command)
    except ValueError as exc:
        flash.fail("command", f"cannot be parsed ({exc}): {_show(command)}")
    for name in names:
        if name not in FLASH_PLACEHOLDERS:
            allowed = ", ".join("{" + p + "}" for p in FLASH_PLACEHOLDERS)
            flash.fail("command", f"uses unknown placeholder {{{name}}} (allowed: {allowed})")
    if "artifact" not in names:
        flash.fail("command", "must contain {artifact} (the file to put on the board)")


def _read_serial(top: _Table) -> Serial | None:
    serial = top.table("serial", ("port", "baud", "uart", "uart_base"), required=False)
    if serial is None:
        return None
    return Serial(
        port=serial.text("port", required=False),
        baud=serial.integer("baud", required=False) or 115200,
        uart=serial.text("uart", required=False),
        uart_base=serial.integer("uart_base", required=False, minimum=0),
    )


def _read_emulation(top: _Table) -> Emulation:
    every = ("kind", "program", "machine", "cpu", "sysroot", "args")
    emu = top.table("emulation", every, required=False)
    if emu is None:
        return Emulation(kind="none")
    kind = emu.text("kind", choices=tuple(EMULATION_FIELDS)) or ""
    needed, optional = EMULATION_FIELDS[kind]
    for key in every[1:]:
        if emu.has(key) and key not in needed | optional:
            emu.fail(key, f"does not apply to emulation.kind {_show(kind)}")
    return Emulation(
        kind=kind,
        program=emu.text("program", required="program" in needed, when=f"for emulation.kind {_show(kind)}"),
        machine=emu.text("machine", required="machine" in needed, when=f"for emulation.kind {_show(kind)}"),
        cpu=emu.text("cpu", required="cpu" in needed, when=f"for emulation.kind {_show(kind)}"),
        sysroot=emu.text("sysroot", required=False),
        args=emu.texts("args", required=False),
    )


def _check_backends(top: _Table, backends: tuple[str, ...], os_kind: str, npu: Npu | None) -> None:
    """Backends must agree with the rest of the file, so select_backend can trust them."""
    if "rknn" in backends and npu is None:
        top.fail("backends", "lists 'rknn' but the file has no [npu] table")
    if "rknn" in backends and npu is not None and not npu.supported:
        top.fail("backends", f"lists 'rknn' but npu.supported is false ({npu.reason})")
    if npu is not None and npu.supported and "rknn" not in backends:
        top.fail("backends", "must list 'rknn' since npu.supported is true")
    if "tvm" in backends and os_kind != "linux":
        top.fail("backends", "lists 'tvm' but os is not 'linux' (TVM 0.27 has no bare-metal path)")


_TOP_FIELDS = (
    "name",
    "description",
    "os",
    "backends",
    "verified_on_hardware",
    "notes",
    "cpu",
    "memory",
    "npu",
    "toolchain",
    "flash",
    "serial",
    "emulation",
)


def _parse(data: Mapping[str, Any], path: Path, display: str) -> Target:
    top = _Table(display, "", data, _TOP_FIELDS)
    name = top.text("name") or ""
    if not NAME_PATTERN.match(name):
        top.fail(
            "name", f"must use only letters, digits, '.', '_' and '-' (it names build/<target>/), got {_show(name)}"
        )
    os_kind = top.text("os", choices=OS_KINDS) or ""
    backends = top.texts("backends", choices=BACKENDS)
    npu = _read_npu(top)
    _check_backends(top, backends, os_kind, npu)
    return Target(
        name=name,
        description=top.text("description") or "",
        os=os_kind,
        backends=backends,
        cpu=_read_cpu(top),
        memory=_read_memory(top, os_kind),
        toolchain=_read_toolchain(top),
        flash=_read_flash(top),
        serial=_read_serial(top),
        emulation=_read_emulation(top),
        npu=npu,
        notes=" ".join((top.text("notes", required=False) or "").split()),
        verified_on_hardware=top.flag("verified_on_hardware", default=False),
        path=path,
        raw=data,
    )


# ------------------------------------------------------------------------ loading


def catalogue_dir() -> Path:
    """The shipped catalogue, next to the package; MFNC_TARGETS_DIR points elsewhere."""
    override = os.environ.get(TARGETS_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "targets"


def _display(path: Path) -> str:
    """The path as short as possible: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _load_file(path: Path, expect_name: str | None) -> Target:
    display = _display(path)
    if not path.exists():
        raise BadInput(f"target file {display} not found")
    if not path.is_file():
        raise BadInput(f"target file {display} is not a file")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"{display}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{display}: TOML syntax error: {exc}") from None
    except OSError as exc:
        raise BadInput(f"{display}: cannot be read ({exc.strerror})") from None
    target = _parse(data, path, display)
    if expect_name is not None and target.name != expect_name:
        raise BadInput(f"{display}: field 'name' must match the file name '{expect_name}', got {_show(target.name)}")
    return target


def _catalogue_files() -> list[Path]:
    directory = catalogue_dir()
    if not directory.is_dir():
        raise BadInput(f"target catalogue {directory} not found (set {TARGETS_DIR_ENV} to a folder of .toml files)")
    return sorted(directory.glob("*.toml"))


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".toml") or "/" in spec or os.sep in spec


def load_target(spec: str) -> Target:
    """A catalogue name ("rk3399") or a path to a board file ("./myboard.toml"), validated."""
    spec = spec.strip()
    if not spec:
        raise BadInput("empty target name (give a catalogue name or a path to a .toml file)")
    if _looks_like_path(spec):
        return _load_file(Path(spec), expect_name=None)
    known = [p.stem for p in _catalogue_files()]
    if spec not in known:
        raise BadInput(
            f"unknown target '{spec}' ({_suggest(spec, known)}known: {', '.join(known)}; "
            "or pass a path to a .toml file)"
        )
    return _load_file(catalogue_dir() / f"{spec}.toml", expect_name=spec)


def list_targets() -> list[Target]:
    """Every catalogue target, sorted by name; one bad file fails the listing loudly."""
    return sorted((_load_file(p, expect_name=p.stem) for p in _catalogue_files()), key=lambda t: t.name)


# ------------------------------------------------------------------ status, backend


def emulation_for(t: Target, backend: str) -> str | None:
    """How `backend` runs on this host for target `t`: an emulation kind, or None (board only)."""
    if backend not in t.backends:
        return None
    if backend == "rknn":
        return "rknn-simulator" if t.npu_usable else None
    return None if t.emulation.kind == "none" else t.emulation.kind


def _emulator_words(t: Target) -> str:
    emu = t.emulation
    if emu.kind == "native":
        return "natively"
    if emu.kind == "qemu-system":
        return f"under {emu.program} -M {emu.machine}"
    return f"under {emu.program} -cpu {emu.cpu}"


def _status_parts(t: Target, by_backend: dict[str, str | None]) -> list[str]:
    parts = []
    if by_backend.get("rknn"):
        parts.append("rknn runs here in the rknn-toolkit2 simulator")
    cpu_backends = [b for b in t.backends if b != "rknn" and by_backend[b]]
    if cpu_backends:
        parts.append(f"{', '.join(cpu_backends)} run{'s' * (len(cpu_backends) == 1)} here {_emulator_words(t)}")
    if t.backends and not any(by_backend.values()):
        parts.append("real board only: no emulator for it here")
    if t.npu is not None and not t.npu.supported:
        parts.append(f"NPU not supported: {t.npu.reason}")
    if t.notes:
        parts.append(t.notes.rstrip("."))
    if not t.verified_on_hardware and t.emulation.kind != "native":  # native: this host is the hardware
        parts.append("not yet verified on hardware")
    return parts


def target_status(t: Target) -> dict[str, Any]:
    """What can be done with `t` here: "emulated", "supported" (real board only) or "unsupported"."""
    by_backend = {b: emulation_for(t, b) for b in t.backends}
    parts = _status_parts(t, by_backend)
    if not t.backends:
        status, emulation = "unsupported", None
        parts.insert(0, "no backend can run it")
    else:
        status = "emulated" if any(by_backend.values()) else "supported"
        emulation = by_backend[select_backend(t, "auto")] or next((e for e in by_backend.values() if e), None)
    return {
        "status": status,
        "reason": "; ".join(parts),
        "backends": list(t.backends),
        "emulation": emulation,
        "emulation_by_backend": by_backend,
    }


def _use_instead(t: Target, exclude: str) -> str:
    others = [b for b in t.backends if b != exclude]
    return f"use --backend {'|'.join(others)}" if others else "no other backend can run it"


def select_backend(t: Target, requested: str) -> str:
    """Check a requested backend ("auto", "c", "tvm", "rknn") against `t`; resolve "auto".

    "auto" picks "rknn" on a chip whose NPU is supported, else "c" here: whether a TVM
    tuning database exists for (target, model hash) is only known once the model is
    loaded, so `build` turns that "c" into "tvm" then (DESIGN section 8).
    """
    where = _display(t.path)
    if requested == "auto":
        if not t.backends:
            reason = t.npu.reason if t.npu is not None and not t.npu.supported else t.notes
            raise BadInput(f"target '{t.name}' ({where}): no backend can run it" + (f": {reason}" if reason else ""))
        if t.npu_usable:
            return "rknn"
        return "c" if "c" in t.backends else t.backends[0]
    if requested not in BACKENDS:
        raise BadInput(f"unknown backend '{requested}' (valid: auto, {', '.join(BACKENDS)})")
    if requested == "rknn" and t.npu is None:
        raise BadInput(f"target '{t.name}' has no NPU ({where} has no [npu] table); {_use_instead(t, 'rknn')}")
    if requested == "rknn" and t.npu is not None and not t.npu.supported:
        raise BadInput(
            f"target '{t.name}': its NPU is not supported ({where}, npu.reason): {t.npu.reason}; "
            f"{_use_instead(t, 'rknn')}"
        )
    if requested not in t.backends:
        why = " (TVM 0.27 has no bare-metal path)" if requested == "tvm" and t.os == "baremetal" else ""
        raise BadInput(
            f"target '{t.name}' cannot use backend '{requested}'{why}: {where} field 'backends' is "
            f"{', '.join(t.backends) or 'empty'}; {_use_instead(t, requested)}"
        )
    return requested
