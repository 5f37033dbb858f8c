"""The target catalogue loads, says the truth about each board, and refuses bad files clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.errors import BadInput
from compiler.targets import list_targets, load_target, select_backend, target_status

CATALOGUE = {
    "rk3399",
    "rpi4",
    "rk3399pro",
    "rk1808",
    "rv1126",
    "rv1109",
    "rk3588",
    "rk3576",
    "rk3568",
    "rk3566",
    "rk3562",
    "rv1106",
    "rv1103",
    "rv1126b",
    "mps3-an547",
    "mps2-an500",
    "stm32h743",
    "stm32f746",
    "x86_64",
}
REFUSED_NPU = ("rk3399pro", "rk1808", "rv1126", "rv1109")
RKNN_CHIPS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1106", "rv1103", "rv1126b")

MINIMAL = """\
name = "myboard"
description = "a test board"
os = "linux"
backends = ["c"]

[cpu]
arch = "aarch64"
cores = [{ core = "cortex-a53", count = 4, clock_mhz = 1200 }]

[memory]
ram_mib = 512

[toolchain]
cc = "aarch64-linux-gnu-gcc"
"""

BAREMETAL = """\
name = "mcu"
description = "a test microcontroller"
os = "baremetal"
backends = ["c"]

[cpu]
arch = "armv7e-m"
cores = [{ core = "cortex-m7", clock_mhz = 400 }]
features = ["dsp", "fpu"]

[memory]
flash_kib = 2048
ram_kib = 1024
code_region = "flash"
weights_region = "flash"
arena_region = "sram"
regions = [
  { name = "flash", kind = "flash", origin = 0x08000000, size_kib = 2048 },
  { name = "sram", kind = "ram", origin = 0x20000000, size_kib = 1024 },
]

[toolchain]
cc = "arm-none-eabi-gcc"
"""


def write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(BadInput) as info:
        load_target(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


# ------------------------------------------------------------------- catalogue


def test_every_catalogue_file_loads() -> None:
    targets = list_targets()
    assert {t.name for t in targets} == CATALOGUE
    assert [t.name for t in targets] == sorted(t.name for t in targets)
    for t in targets:
        assert load_target(t.name) == t
        assert t.path.name == f"{t.name}.toml"
        assert t.backends, t.name
        assert t.memory.ram_kib > 0
        assert t.cpu.cores and t.cpu.core_count >= 1


def test_rk3399_runs_under_qemu_user() -> None:
    t = load_target("rk3399")
    assert t.npu is None
    assert t.cpu.primary.core == "cortex-a72"
    assert [(g.core, g.count) for g in t.cpu.cores] == [("cortex-a72", 2), ("cortex-a53", 4)]
    status = target_status(t)
    assert status["status"] == "emulated"
    assert status["emulation"] == "qemu-user"
    assert status["backends"] == ["tvm", "c"]
    assert "qemu-aarch64" in status["reason"]


def test_stm32h743_is_real_board_only() -> None:
    t = load_target("stm32h743")
    status = target_status(t)
    assert status["status"] == "supported"
    assert status["emulation"] is None
    assert "real board only" in status["reason"]
    assert t.memory.flash_kib == 2048
    assert t.memory.largest_ram_bank_kib == 512
    arena = t.memory.region(t.memory.arena_region or "")
    assert arena is not None and arena.origin == 0x24000000 and arena.size_kib == 512


def test_stm32f746_loads_with_its_real_memory() -> None:
    """It must load: the "does not fit" refusal belongs to the memory planner, with numbers."""
    t = load_target("stm32f746")
    assert t.backends == ("c",)
    assert (t.memory.flash_kib, t.memory.ram_kib) == (1024, 320)
    assert "does not fit" in target_status(t)["reason"]


@pytest.mark.parametrize("name", REFUSED_NPU)
def test_refused_npu_says_why_and_points_at_cpu_backends(name: str) -> None:
    t = load_target(name)
    assert t.npu is not None and not t.npu.supported
    assert "RKNN-Toolkit v1" in t.npu.reason
    assert "rknn" not in t.backends and "c" in t.backends
    with pytest.raises(BadInput) as info:
        select_backend(t, "rknn")
    message = str(info.value)
    assert "RKNN-Toolkit v1" in message and f"{name}.toml" in message and "npu.reason" in message
    assert "--backend " in message
    assert select_backend(t, "c") == "c"
    assert select_backend(t, "auto") == "c"
    assert target_status(t)["status"] == "emulated"


def test_rk3399pro_cpu_backends_work_like_rk3399() -> None:
    pro, plain = load_target("rk3399pro"), load_target("rk3399")
    assert pro.cpu == plain.cpu
    assert pro.backends == plain.backends == ("tvm", "c")
    assert select_backend(pro, "tvm") == "tvm"
    with pytest.raises(BadInput, match=r"--backend tvm\|c"):
        select_backend(pro, "rknn")


@pytest.mark.parametrize("name", RKNN_CHIPS)
def test_rknn_chips_default_to_the_npu_simulator(name: str) -> None:
    t = load_target(name)
    assert t.npu is not None and t.npu.supported and t.npu.platform == name
    assert select_backend(t, "auto") == "rknn"
    status = target_status(t)
    assert status["status"] == "emulated"
    assert status["emulation"] == "rknn-simulator"
    assert status["emulation_by_backend"]["c"] == "qemu-user"


def test_qemu_boards_carry_their_memory_map() -> None:
    an547 = load_target("mps3-an547")
    assert an547.emulation.kind == "qemu-system" and an547.emulation.machine == "mps3-an547"
    assert an547.serial is not None and an547.serial.uart_base == 0x49303000
    regions = {r.name: (r.origin, r.size_kib) for r in an547.memory.regions}
    assert regions["isram"] == (0x21000000, 4096)
    assert regions["qspi"] == (0x28000000, 8192)
    assert an547.memory.weights_region == "qspi" and an547.memory.arena_region == "isram"
    an500 = load_target("mps2-an500")
    assert an500.serial is not None and an500.serial.uart_base == 0x40004000
    assert {(r.origin, r.size_kib) for r in an500.memory.regions} == {(0, 4096), (0x20000000, 4096)}
    assert target_status(an500)["emulation"] == "qemu-system"


def test_x86_64_is_native() -> None:
    status = target_status(load_target("x86_64"))
    assert status["status"] == "emulated" and status["emulation"] == "native"
    assert status["backends"] == ["tvm", "c"]


def test_flash_command_substitutes_artifact_and_host() -> None:
    flash = load_target("rk3399").flash
    assert flash.argv("build/my model", host="root@board") == ["scp", "build/my model", "root@board:/tmp/"]
    with pytest.raises(BadInput, match="user@host"):
        flash.argv("build/x")


# ------------------------------------------------------------------ lookups


def test_unknown_target_lists_the_catalogue() -> None:
    with pytest.raises(BadInput) as info:
        load_target("foo")
    message = str(info.value)
    assert message.startswith("unknown target 'foo' (")
    assert "rk3399" in message and "stm32h743" in message and "or pass a path to a .toml file" in message


def test_unknown_target_suggests_a_close_name() -> None:
    with pytest.raises(BadInput, match="did you mean 'rk3399'"):
        load_target("rk3339")


def test_custom_board_file_loads_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL, "myboard.toml")
    t = load_target(str(path))
    assert t.name == "myboard" and t.path == path
    assert t.memory.ram_kib == 512 * 1024
    assert t.emulation.kind == "none" and t.flash.method == "none" and t.serial is None
    assert t.raw["cpu"]["arch"] == "aarch64"
    assert target_status(t)["status"] == "supported"
    monkeypatch.chdir(tmp_path)
    assert load_target("./myboard.toml").name == "myboard"


def test_custom_baremetal_board_loads(tmp_path: Path) -> None:
    t = load_target(str(write(tmp_path, BAREMETAL)))
    assert t.cpu.primary.count == 1
    assert t.memory.largest_ram_bank_kib == 1024  # derived from the regions
    assert select_backend(t, "auto") == "c"


def test_board_without_backends_is_unsupported(tmp_path: Path) -> None:
    text = MINIMAL.replace('backends = ["c"]', "backends = []").replace(
        'os = "linux"', 'os = "linux"\nnotes = "nothing here runs MobileFaceNet"'
    )
    t = load_target(str(write(tmp_path, text)))
    status = target_status(t)
    assert status["status"] == "unsupported" and status["emulation"] is None
    assert "no backend can run it" in status["reason"] and "nothing here" in status["reason"]
    with pytest.raises(BadInput, match="no backend can run it"):
        select_backend(t, "auto")


def test_targets_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL, "myboard.toml")
    monkeypatch.setenv("MFNC_TARGETS_DIR", str(tmp_path))
    assert [t.name for t in list_targets()] == ["myboard"]
    assert load_target("myboard").name == "myboard"


def test_catalogue_file_name_must_match_its_name_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL, "other.toml")
    monkeypatch.setenv("MFNC_TARGETS_DIR", str(tmp_path))
    with pytest.raises(BadInput, match=r"other\.toml: field 'name' must match the file name 'other'"):
        load_target("other")


# ----------------------------------------------------------------- bad files


def test_missing_file_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.toml")
    assert "nope.toml" in message and "not found" in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, MINIMAL.replace("ram_mib = 512", "ram_mib = = 512")))
    assert "board.toml" in message and "TOML syntax error" in message and "line 11" in message


def test_wrong_type_message_is_exact(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, MINIMAL.replace("[memory]\nram_mib = 512", '[memory]\nram_kib = "abc"')))
    assert message.endswith("board.toml: field 'memory.ram_kib' must be a positive integer, got \"abc\"")


BAD_FILES = [
    ("missing required field", MINIMAL.replace('arch = "aarch64"\n', ""), "'cpu.arch' is required"),
    ("missing table", MINIMAL.replace('[toolchain]\ncc = "aarch64-linux-gnu-gcc"\n', ""), "'toolchain' is required"),
    ("wrong type", MINIMAL.replace('backends = ["c"]', 'backends = "c"'), "'backends' must be a list of strings"),
    ("bool is not an int", MINIMAL.replace("ram_mib = 512", "ram_mib = true"), "'memory.ram_mib' must be a positive"),
    ("unknown top-level key", "colour = 'red'\n" + MINIMAL, "unknown field 'colour'"),
    ("typo in a table", MINIMAL.replace("ram_mib = 512", "ram_mb = 512"), "unknown field 'memory.ram_mb'"),
    ("typo in a core", MINIMAL.replace("count = 4", "cuont = 4"), "unknown field 'cpu.cores[0].cuont'"),
    ("negative memory", MINIMAL.replace("ram_mib = 512", "ram_mib = -512"), "'memory.ram_mib' must be a positive"),
    ("zero cores", MINIMAL.replace("count = 4", "count = 0"), "'cpu.cores[0].count' must be a positive"),
    ("unknown backend", MINIMAL.replace('backends = ["c"]', 'backends = ["c", "cuda"]'), "'backends' has unknown"),
    ("duplicate backend", MINIMAL.replace('backends = ["c"]', 'backends = ["c", "c"]'), "'backends' lists \"c\" twice"),
    ("unknown os", MINIMAL.replace('os = "linux"', 'os = "windows"'), "'os' must be one of linux, baremetal"),
    ("unknown arch", MINIMAL.replace('"aarch64"', '"arm64"'), "'cpu.arch' must be one of aarch64, armv7-a"),
    ("unknown feature", MINIMAL.replace('arch = "aarch64"', 'arch = "aarch64"\nfeatures = ["neno"]'), "did you mean"),
    ("both ram units", MINIMAL.replace("ram_mib = 512", "ram_mib = 512\nram_kib = 4"), "'memory.ram_mib' conflicts"),
    ("no ram", MINIMAL.replace("ram_mib = 512", "flash_kib = 4"), "'memory.ram_kib' is required"),
    ("bad name", MINIMAL.replace('name = "myboard"', 'name = "my board"'), "field 'name' must use only"),
    ("rknn without npu", MINIMAL.replace('backends = ["c"]', 'backends = ["rknn", "c"]'), "'backends' lists 'rknn'"),
    (
        "refused npu without reason",
        MINIMAL + '[npu]\ntoolkit = "rknn-toolkit-v1"\nsupported = false\n',
        "'npu.reason' is required when npu.supported is false",
    ),
    (
        "v1 toolkit cannot be supported",
        MINIMAL.replace('["c"]', '["rknn", "c"]') + '[npu]\ntoolkit = "rknn-toolkit-v1"\nsupported = true\n',
        "'npu.supported' cannot be true with toolkit \"rknn-toolkit-v1\"",
    ),
    (
        "supported npu without platform",
        MINIMAL.replace('["c"]', '["rknn", "c"]') + '[npu]\ntoolkit = "rknn-toolkit2"\nsupported = true\n',
        "'npu.platform' is required when npu.supported is true",
    ),
    (
        "unknown rknn platform",
        MINIMAL.replace('["c"]', '["rknn", "c"]')
        + '[npu]\ntoolkit = "rknn-toolkit2"\nplatform = "rk3688"\nsupported = true\n',
        "'npu.platform' must be one of",
    ),
    (
        "npu supported but rknn not listed",
        MINIMAL + '[npu]\ntoolkit = "rknn-toolkit2"\nplatform = "rk3588"\nsupported = true\n',
        "'backends' must list 'rknn'",
    ),
    ("tvm on bare metal", BAREMETAL.replace('backends = ["c"]', 'backends = ["tvm"]'), "'backends' lists 'tvm'"),
    (
        "overlapping regions",
        BAREMETAL.replace("origin = 0x20000000", "origin = 0x08100000"),
        "'memory.regions[1]' 'sram' at 0x8100000 overlaps 'flash'",
    ),
    ("arena in unknown region", BAREMETAL.replace('arena_region = "sram"', 'arena_region = "dram"'), "arena_region"),
    ("arena in flash", BAREMETAL.replace('arena_region = "sram"', 'arena_region = "flash"'), "must name a RAM region"),
    (
        "baremetal without placement",
        BAREMETAL.replace('code_region = "flash"\n', ""),
        "'memory.code_region' is required for os",
    ),
    ("regions exceed ram", BAREMETAL.replace("ram_kib = 1024", "ram_kib = 512"), "'memory.regions' add up to 1024 KiB"),
    (
        "bank smaller than a region",
        BAREMETAL.replace("ram_kib = 1024", "ram_kib = 1024\nlargest_ram_bank_kib = 512"),
        "'memory.largest_ram_bank_kib' (512) is smaller than a RAM region (1024 KiB)",
    ),
    (
        "unknown flash placeholder",
        MINIMAL + '[flash]\nmethod = "scp"\ncommand = "scp {file} {host}:/tmp/"\n',
        "'flash.command' uses unknown placeholder {file}",
    ),
    (
        "qemu-user without cpu",
        MINIMAL + '[emulation]\nkind = "qemu-user"\nprogram = "qemu-aarch64"\n',
        "'emulation.cpu' is required for emulation.kind \"qemu-user\"",
    ),
    (
        "field that does not apply",
        MINIMAL + '[emulation]\nkind = "native"\nmachine = "virt"\n',
        "'emulation.machine' does not apply",
    ),
    (
        "value where a table belongs",
        MINIMAL.replace('[toolchain]\ncc = "aarch64-linux-gnu-gcc"\n', "").replace(
            'os = "linux"', 'os = "linux"\ntoolchain = "gcc"'
        ),
        "'toolchain' must be a table ([toolchain]), got \"gcc\"",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_file_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert Path(message.split(": ", 1)[0]).resolve() == path.resolve()  # shown relative to the cwd when under it
    assert expected in message


# ---------------------------------------------------------------- backends


def test_unknown_backend_lists_valid_ones() -> None:
    with pytest.raises(BadInput, match=r"unknown backend 'cuda' \(valid: auto, c, tvm, rknn\)"):
        select_backend(load_target("rk3399"), "cuda")


def test_rknn_on_a_chip_without_npu() -> None:
    with pytest.raises(BadInput) as info:
        select_backend(load_target("rk3399"), "rknn")
    message = str(info.value)
    assert "has no NPU" in message and "rk3399.toml" in message and "--backend tvm|c" in message


def test_tvm_on_bare_metal_is_refused() -> None:
    with pytest.raises(BadInput) as info:
        select_backend(load_target("stm32h743"), "tvm")
    message = str(info.value)
    assert "bare-metal" in message and "field 'backends'" in message and "--backend c" in message


def test_explicit_and_auto_backends() -> None:
    assert select_backend(load_target("rk3588"), "c") == "c"
    assert select_backend(load_target("rk3588"), "tvm") == "tvm"
    assert select_backend(load_target("rk3588"), "rknn") == "rknn"
    assert select_backend(load_target("rk3399"), "auto") == "c"
    assert select_backend(load_target("mps3-an547"), "auto") == "c"
    with pytest.raises(BadInput, match="cannot use backend 'tvm'"):
        select_backend(load_target("rv1106"), "tvm")


# -------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parent.parent / "docs" / "targets.md"


def test_docs_list_every_catalogue_target() -> None:
    text = DOCS.read_text()
    for name in CATALOGUE:
        assert f"| `{name}` |" in text, name


def test_docs_example_board_file_loads(tmp_path: Path) -> None:
    text = DOCS.read_text()
    example = text.split("A minimal Linux board:\n\n```toml\n", 1)[1].split("```", 1)[0]
    t = load_target(str(write(tmp_path, example, "myboard.toml")))
    assert t.name == "myboard" and target_status(t)["status"] == "emulated"
