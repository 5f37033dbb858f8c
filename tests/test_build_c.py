"""`build --backend c`: the generated source tree, memory against the target, and the
first run of the compiled model on this host."""

from __future__ import annotations

import json
import subprocess

from tests.cli_helpers import assert_one_line_error, run_cli

QUICK = ["--model", "mobilefacenet", "--synthetic", "10", "--eval-limit", "4", "--algo", "minmax"]


def test_x86_64_build_runs_bit_exact_and_its_tree_builds_alone(capsys, tmp_path):
    out = tmp_path / "x86"
    code, stdout, err = run_cli(capsys, "build", "--target", "x86_64", *QUICK, "--out", str(out), "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["backend"] == "c" and "c_codegen" in report["stages"]
    assert report["c"]["host_check"] == {"n_inputs": 4, "bit_exact": 4}
    memory = report["memory"]
    assert 0 < memory["arena_bytes"] < 1_000_000
    assert 900_000 < memory["weights_bytes"] < 1_300_000
    # from the linker map: the image holds the weights plus code; RAM holds at least the arena
    assert memory["weights_bytes"] < memory["flash_bytes"] < memory["weights_bytes"] + 200_000
    assert memory["arena_bytes"] <= memory["ram_bytes"] < memory["arena_bytes"] + 200_000
    tree = out / "c"
    names = {str(p.relative_to(tree)) for p in tree.rglob("*")}
    assert {"model.c", "model.h", "Makefile", "runtime/mfn_kernels.c", "device/mfn_proto.c"} <= names
    assert {"ports/posix/mfn_port_posix.c", "firmware.elf", "firmware.elf.map"} <= names
    (tree / "firmware.elf").unlink()
    subprocess.run(["make", "-s", "-C", str(tree)], check=True, timeout=300, capture_output=True)
    assert (tree / "firmware.elf").exists()


def test_board_too_small_fails_with_the_numbers_and_leaves_nothing(capsys, tmp_path):
    out = tmp_path / "f7"
    code, _, err = run_cli(capsys, "build", "--target", "stm32f746", *QUICK, "--out", str(out))
    assert code == 2
    # the planner fits the arena in its 320 KiB of SRAM; the weights miss its 1 MiB of flash
    assert_one_line_error(err, "does not fit stm32f746", "weights 1,1", "> 1,048,576 B of flash")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_backends_a_target_cannot_use_are_refused_clearly(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "build", "--target", "mps3-an547", "--backend", "tvm", *QUICK, "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert_one_line_error(err, "mps3-an547", "'tvm'", "bare-metal")
    assert not (tmp_path / "o").exists()


def test_out_folder_that_is_not_a_build_is_not_replaced(capsys, tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "build", "--target", "x86_64", *QUICK, "--out", str(precious))
    assert code == 2
    assert_one_line_error(err, "refusing to replace")
    assert (precious / "notes.txt").read_text() == "keep me"


def test_build_from_a_quantized_model_file(capsys, tmp_path):
    qfile = tmp_path / "m.mfnq"
    code, _, err = run_cli(capsys, "quantize", *QUICK, "--int16", "none", "--out", str(qfile))
    assert code == 0, err
    out = tmp_path / "from-mfnq"
    code, stdout, err = run_cli(
        capsys, "build", "--target", "x86_64", "--model", str(qfile), "--out", str(out), "--json", "-"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["stages"][0] == "load_quantized" and report["model"]["format"] == "mfnq"
    assert report["quantization"]["recorded"] and report["quantization"]["mode"] == "fused"
    assert report["c"]["host_check"] == {"n_inputs": 4, "bit_exact": 4}
    assert report["preprocess"]["spec"] == "paper"
