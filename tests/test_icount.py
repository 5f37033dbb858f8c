"""Instruction counts under qemu-aarch64 user mode with our TCG plugin (compiler/hil/icount.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.errors import BadInput, ExternalFailure
from compiler.hil import icount
from compiler.hil.icount import build_plugin, qemu_user_command

ROOT = Path(__file__).resolve().parents[1]
POSIX_PORT = ROOT / "firmware" / "ports" / "posix"
TIMEOUT_S = 60
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]

# Times a loop of N iterations for each N on the command line: "N instructions" lines.
LOOP_PROGRAM = r"""
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include "icount.h"

static void work(uint64_t n)
{
    volatile uint64_t acc = 0;
    for (uint64_t i = 0; i < n; i++) {
        acc += i * i;
    }
}

int main(int argc, char **argv)
{
    if (!mfn_icount_available()) {
        printf("unavailable\n");
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        uint64_t n = strtoull(argv[i], NULL, 10);
        uint64_t before = mfn_icount_read();
        work(n);
        uint64_t after = mfn_icount_read();
        if (before == 0 || after <= before) {
            printf("bad %" PRIu64 " %" PRIu64 "\n", before, after);
            return 1;
        }
        printf("%" PRIu64 " %" PRIu64 "\n", n, after - before);
    }
    return 0;
}
"""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have {tool}")
        pytest.skip(f"{tool} not installed")
    return path


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}"
    return proc


def _compile(cc: str, out: Path, *extra: str) -> Path:
    src = out.parent / "loop.c"
    src.write_text(LOOP_PROGRAM)
    _run([cc, *CFLAGS, *extra, f"-I{POSIX_PORT}", str(src), str(POSIX_PORT / "icount.c"), "-o", str(out)])
    return out


@pytest.fixture(scope="module")
def aarch64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(plugin, static aarch64 loop program)."""
    _need("gcc")
    cc = _need("aarch64-linux-gnu-gcc")
    _need("qemu-aarch64")
    work = tmp_path_factory.mktemp("icount")
    plugin = build_plugin(work / "plugin")
    return plugin, _compile(cc, work / "loop-aarch64", "-static")


def _counts(stdout: str) -> dict[int, int]:
    rows = [line.split() for line in stdout.strip().splitlines()]
    return {int(n): int(c) for n, c in rows}


def test_counts_are_exact_deterministic_and_linear(aarch64: tuple[Path, Path], tmp_path: Path) -> None:
    plugin, program = aarch64
    n1, n2 = 10_000, 20_000
    runs = []
    for i in range(2):
        count_file = tmp_path / f"count{i}.bin"
        cmd = qemu_user_command(program, plugin, count_file, args=[str(n1), str(n2)])
        runs.append(_run(cmd, env={"PATH": os.environ.get("PATH", "")}).stdout)  # a fixed environment
        total = int.from_bytes(count_file.read_bytes()[8:16], "little")  # written by the plugin at exit
        assert total > 0
    assert runs[0] == runs[1], f"counts differ between two runs:\n{runs[0]}\n{runs[1]}"
    counts = _counts(runs[0])
    c1, c2 = counts[n1], counts[n2]
    assert c1 > n1 and c2 > n2
    # The loop body is a fixed instruction sequence: the difference is exactly per_iter * (n2 - n1),
    # and the rest is the small constant cost of the two reads.
    per_iter, rest = divmod(c2 - c1, n2 - n1)
    assert rest == 0 and 3 <= per_iter <= 20, (c1, c2)
    overhead = c1 - per_iter * n1
    assert 0 < overhead < 1000, (c1, c2, per_iter)
    assert c2 / c1 == pytest.approx(n2 / n1, rel=0.01)


def test_unavailable_without_the_plugin(aarch64: tuple[Path, Path], tmp_path: Path) -> None:
    _, program = aarch64
    count_file = tmp_path / "count.bin"
    count_file.write_bytes(bytes(range(16)))  # looks like the plugin's file, but nobody answers
    proc = _run(["qemu-aarch64", "-cpu", "cortex-a72", str(program), "100"], env={"MFN_ICOUNT_FILE": str(count_file)})
    assert proc.stdout.strip() == "unavailable"
    assert count_file.read_bytes() == bytes(range(16)), "the round trip must restore a file nobody answered"


def test_unavailable_on_the_host(tmp_path: Path) -> None:
    """x86_64 (or whatever the host is): no plugin, so never available, whatever the variable says."""
    cc = _need("gcc")
    program = _compile(cc, tmp_path / "loop-host")
    plugin_like = tmp_path / "count.bin"
    plugin_like.write_bytes(b"A" * 16)
    other = tmp_path / "notes.txt"
    other.write_text("not a count file\n")
    for env in (
        {},
        {"MFN_ICOUNT_FILE": ""},
        {"MFN_ICOUNT_FILE": str(tmp_path / "missing")},
        {"MFN_ICOUNT_FILE": str(plugin_like)},
        {"MFN_ICOUNT_FILE": str(other)},
    ):
        assert _run([str(program), "100"], env=env).stdout.strip() == "unavailable", env
    assert plugin_like.read_bytes() == b"A" * 16
    assert other.read_text() == "not a count file\n"


def test_plugin_is_cached_and_build_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need("gcc")
    first = build_plugin(tmp_path / "p")
    assert build_plugin(tmp_path / "p") == first
    assert [p.name for p in (tmp_path / "p").iterdir()] == [first.name]
    broken = tmp_path / "broken.c"
    broken.write_text("int qemu_plugin_version = ;\n")
    monkeypatch.setattr(icount, "PLUGIN_SOURCE", broken)
    with pytest.raises(ExternalFailure) as err:
        build_plugin(tmp_path / "p")
    assert "error" in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "p").iterdir()] == [first.name]  # no half-built leftovers


def test_command_has_no_comma_and_names_the_count_file(tmp_path: Path) -> None:
    cmd = qemu_user_command(Path("/opt/prog"), tmp_path / "lib.so", tmp_path / "c.bin", args=["-x"])
    assert cmd[:2] == ["env", f"MFN_ICOUNT_FILE={(tmp_path / 'c.bin').resolve()}"]
    assert cmd[2:7] == ["qemu-aarch64", "-cpu", "cortex-a72", "-L", "/usr/aarch64-linux-gnu"]
    assert cmd[-2:] == ["/opt/prog", "-x"]
    assert not any("," in part for part in cmd)
    with pytest.raises(BadInput):
        qemu_user_command(Path("/opt/prog"), tmp_path / "lib.so", tmp_path / "a,b.bin")
