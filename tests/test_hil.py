"""`build` + `hil --emulate` end to end on every emulated device program, with the
shipped model: the device's integers equal the golden simulator's, on real and
synthetic faces. Also `flash` for emulated boards, and the hardware-only paths
(openocd, scp/ssh) against fakes on PATH.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import FRIENDS
from tests.device_helpers import DEVICE_TARGETS, require_tools

QUICK = ["--synthetic", "10", "--eval-limit", "4", "--algo", "minmax"]


@pytest.fixture(scope="module")
def x86_build(tmp_path_factory):
    """The default model built for this host from its float source (the others reuse its int8 model)."""
    require_tools("x86_64")
    out = tmp_path_factory.mktemp("hil") / "x86_64"
    from compiler.cli import main

    assert main(["build", "--target", "x86_64", "--model", "default", *QUICK, "--out", str(out)]) == 0
    return out


def _build_from(capsys, target: str, x86_build: Path) -> Path:
    if target == "x86_64":
        return x86_build
    out = x86_build.parent / target
    if not (out / "report.json").exists():
        code, _, err = run_cli(capsys, "build", "--target", target, "--model", x86_build / "model.mfnq", "--out", out)
        assert code == 0, err
    return out


def _real_faces() -> list[str]:
    if FRIENDS.exists():
        return ["--faces", str(FRIENDS), "--limit", "3"]
    if os.environ.get("CI") == "true":
        pytest.fail("CI must have the real faces")
    return []


@pytest.mark.parametrize("target", list(DEVICE_TARGETS))
def test_hil_on_the_emulated_board_is_bit_exact_on_real_and_synthetic_faces(capsys, tmp_path, target, x86_build):
    require_tools(target)
    build = _build_from(capsys, target, x86_build)
    report = json.loads((build / "report.json").read_text())
    assert report["memory"]["arena_bytes"] <= 512 * 1024
    if target.startswith("mps"):
        assert report["memory"]["flash_bytes"] <= 1.15 * 1024 * 1024
    for faces in ([*_real_faces()], ["--synthetic", "2"]):
        if not faces:
            continue
        junit = tmp_path / "hil.xml"
        code, stdout, err = run_cli(
            capsys, "hil", "--target", target, "--emulate", "--build", build, *faces, "--json", "-", "--junit", junit
        )
        assert code == 0, err
        result = json.loads(stdout)
        assert result["n_inputs"] == int(faces[-1]) and result["bit_exact"] == result["n_inputs"]
        assert result["device"]["model"] == report["model"]["sha256"]
        unit = {"x86_64": "us", "rk3399": "instructions"}.get(target, "instructions")
        assert result["latency"]["unit"] == unit and result["latency"]["median"] > 0
        if unit == "instructions":  # 221 M MACs: ~0.1 G (MVE, NEON) to ~2 G (portable) instructions
            assert 5e7 < result["latency"]["median"] < 3e9
        assert result["link"]["retries"] == 0 and result["link"]["bytes_per_s"] > 1000
        assert 'failures="0"' in junit.read_text() and f'tests="{result["n_inputs"] + 1}"' in junit.read_text()
        # the int8 model file remembers its float source, so every board gets the float comparison
        assert result["cosine_vs_float"]["mean"] > 0.98


def test_flash_starts_the_emulator_and_hil_reaches_it_by_url(capsys, x86_build):
    require_tools("mps3-an547")
    build = _build_from(capsys, "mps3-an547", x86_build)
    code, stdout, err = run_cli(capsys, "flash", "--target", "mps3-an547", "--build", build)
    assert code == 0, err
    url = stdout.strip()
    assert url.startswith("socket://127.0.0.1:")
    try:
        code, stdout, err = run_cli(
            capsys, "hil", "--target", "mps3-an547", "--port", url, "--build", build, "--synthetic", "2", "--json", "-"
        )
        assert code == 0, err
        assert json.loads(stdout)["bit_exact"] == 2
        # flash recorded that this URL is QEMU: emulated time is instructions, never cycles
        assert json.loads(stdout)["latency"]["unit"] == "instructions"
    finally:
        code, _, err = run_cli(capsys, "flash", "--target", "mps3-an547", "--build", build, "--stop")
        assert code == 0, err
    assert not (build / "emulator.json").exists()


def _fake_tool(bin_dir: Path, name: str, exit_code: int = 0) -> Path:
    """A stand-in for a hardware tool: records its arguments, then exits with exit_code."""
    log = bin_dir / f"{name}.log"
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_stm32h743_builds_fits_and_flashes_through_openocd(capsys, tmp_path, x86_build, monkeypatch):
    require_tools("mps3-an547")  # the same arm-none-eabi toolchain
    build = _build_from(capsys, "stm32h743", x86_build)
    report = json.loads((build / "report.json").read_text())
    memory = report["memory"]
    assert memory["arena_bytes"] <= 512 * 1024 and memory["flash_bytes"] <= 1.15 * 1024 * 1024
    assert memory["ram_bytes"] < 512 * 1024 + 128 * 1024  # AXI SRAM arena + DTCM
    code, stdout, err = run_cli(capsys, "flash", "--target", "stm32h743", "--build", build, "--dry-run")
    assert code == 0, err
    assert stdout.startswith("openocd -f interface/stlink.cfg -f target/stm32h7x.cfg -c 'program ")
    assert "firmware.elf verify reset exit'" in stdout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = _fake_tool(bin_dir, "openocd")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    code, _, err = run_cli(capsys, "flash", "--target", "stm32h743", "--build", build)
    assert code == 0, err
    assert "target/stm32h7x.cfg" in log.read_text() and "firmware.elf verify reset exit" in log.read_text()
    _fake_tool(bin_dir, "openocd", exit_code=1)
    code, _, err = run_cli(capsys, "flash", "--target", "stm32h743", "--build", build)
    assert code == 5
    assert_one_line_error(err, "openocd failed")


def test_linux_board_is_deployed_over_ssh(capsys, tmp_path, x86_build, monkeypatch):
    require_tools("rk3399")
    build = _build_from(capsys, "rk3399", x86_build)
    code, _, err = run_cli(capsys, "flash", "--target", "rk3399", "--build", build, "--dry-run")
    assert code == 2
    assert_one_line_error(err, "--host")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    logs = [_fake_tool(bin_dir, tool) for tool in ("scp", "ssh")]
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    code, stdout, err = run_cli(capsys, "flash", "--target", "rk3399", "--build", build, "--host", "root@board")
    assert code == 0, err
    assert stdout.strip() == "socket://board:4700"
    assert "root@board:/tmp/mfnc-device" in logs[0].read_text()
    assert "TCP-LISTEN:4700" in logs[1].read_text()


def test_lab_file_names_boards(capsys, tmp_path, x86_build):
    lab = tmp_path / "lab.toml"
    lab.write_text('[boards.desk-h7]\ntarget = "stm32h743"\nport = "/dev/ttyACM7"\nbaud = 921600\n')
    code, _, err = run_cli(capsys, "hil", "--board", "desk-h7", "--lab", lab, "--build", tmp_path / "none")
    assert code == 2
    assert_one_line_error(err, "no report.json")
    lab.write_text('[boards.desk-h7]\ntarget = "stm32h743"\nspeed = 3\n')
    code, _, err = run_cli(capsys, "hil", "--board", "desk-h7", "--lab", lab)
    assert code == 2
    assert_one_line_error(err, "boards.desk-h7", "unknown key", "speed")


@pytest.mark.parametrize("target", ["x86_64", "rk3399"])
def test_tvm_build_runs_bit_exact_through_hil(capsys, tmp_path, target, x86_build):
    require_tools(target)
    out = tmp_path / f"tvm-{target}"
    code, stdout, err = run_cli(
        capsys,
        "build",
        "--target",
        target,
        "--backend",
        "tvm",
        "--model",
        x86_build / "model.mfnq",
        "--out",
        out,
        "--json",
        "-",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["backend"] == "tvm" and "tvm_codegen" in report["stages"] and not report["tvm"]["tuned"]
    assert "without a tuning database" in err
    if target == "x86_64":
        assert report["tvm"]["host_check"] == {"n_inputs": 4, "bit_exact": 4}
    code, stdout, err = run_cli(
        capsys, "hil", "--target", target, "--emulate", "--build", out, "--synthetic", "2", "--json", "-"
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["backend"] == "tvm" and result["bit_exact"] == 2 and result["device"]["kernels"].startswith("tvm")
