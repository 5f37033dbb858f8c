"""`tune` (MetaSchedule) and tuned TVM builds: x86_64 measured here, rk3399 through the
RPC tracker with an rpc_server under qemu-aarch64, the database cache, export/import,
and the failures a user meets (no board, unreachable tracker, wrong target).

A tiny 48x48 model keeps each tuning run to seconds; the trial budgets are the issue's
(8 on x86_64, 4 on the emulated board). Every tuned build is checked bit-exact with the
golden simulator through the HIL protocol.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli
from tests.device_helpers import TINY_SIZE, require_tools

try:
    import tvm  # noqa: F401
    from tvm.s_tir import meta_schedule  # noqa: F401

    from compiler.backends import tuning_db, tvm_tune
except ImportError as exc:  # apache-tvm is pinned in requirements.lock
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"needs apache-tvm with MetaSchedule ({exc})", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny conv/depthwise/GDConv model, quantized to a .mfnq by the CLI."""
    import onnx

    from compiler.cli import main
    from tests.onnx_builders import conv_bn_prelu, seeded

    folder = tmp_path_factory.mktemp("tune-model")
    with seeded():
        onnx.save(conv_bn_prelu(TINY_SIZE), folder / "tiny.onnx")
    model = folder / "tiny.mfnq"
    argv = ["quantize", "--model", str(folder / "tiny.onnx"), "--synthetic", "8", "--eval-limit", "4"]
    assert main([*argv, "--algo", "minmax", "--out", str(model)]) == 0
    return model


@pytest.fixture
def tuning_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MFNC_TUNING_DIR", str(tmp_path / "tuning"))
    return tmp_path / "tuning"


def _tune(capsys, *argv: object) -> tuple[int, dict | None, str]:
    """`mfnc tune` in its own process, as users run it: MetaSchedule configures the
    process's logging and keeps worker pools, which must not leak into the test process."""
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", "tune", *map(str, argv), "--json", "-"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else None), proc.stderr


def _hil_json(capsys, target: str, out: Path) -> dict:
    code, stdout, err = run_cli(
        capsys, "hil", "--target", target, "--emulate", "--build", out, "--synthetic", "3", "--json", "-"
    )
    assert code == 0, err
    return json.loads(stdout)


def test_only_conv_tasks_are_tuned_and_rounds_fit_the_budget(tiny_model):
    from calibration import qgraph as qformat
    from compiler.backends.tvm_compile import fuse, x86_target
    from compiler.backends.tvm_relax import build_relax_int

    target = x86_target(1)
    tasks, skipped = tvm_tune.conv_tasks(fuse(build_relax_int(qformat.load(tiny_model)), target), target)
    # conv 3x3, depthwise 3x3, global depthwise; the input conversion, a pad and the reshape are skipped
    assert len(tasks) == 3 and skipped == 3
    assert all("conv2d" in t.name for t in tasks)
    assert [t.flops * t.weight for t in tasks] == sorted((t.flops * t.weight for t in tasks), reverse=True)
    assert tvm_tune.trials_per_round(8, 21) == 1
    assert tvm_tune.trials_per_round(400, 21) == 9  # two rounds over every task, the rest by gradient
    assert tvm_tune.trials_per_round(10_000, 3) == 64


def test_tune_x86_resumes_and_the_tuned_build_is_bit_exact(capsys, tmp_path, tuning_dir, tiny_model):
    require_tools("x86_64")
    code, result, err = _tune(capsys, "--target", "x86_64", "--model", tiny_model, "--trials", "8")
    assert code == 0, err
    assert result["trials_run"] == 8 and result["failed_measurements"] == 0
    assert result["measured_on"] == "this host"
    db = result["database"]
    assert db["trials"] == 8 and db["records"] == 8 and Path(db["path"]).is_relative_to(tuning_dir)
    assert all(row["best_us"] is None or row["best_us"] > 0 for row in result["tasks"])
    assert any(row["best_us"] for row in result["tasks"])

    # --trials is the total: a rerun with the same budget measures nothing, a larger one resumes
    code, again, err = _tune(capsys, "--target", "x86_64", "--model", tiny_model, "--trials", "8")
    assert code == 0 and again["trials_run"] == 0 and "nothing to tune" in err
    code, more, err = _tune(capsys, "--target", "x86_64", "--model", tiny_model, "--trials", "10")
    assert code == 0 and more["trials_run"] == 2 and more["database"]["trials"] == 10, err

    out = tmp_path / "x86-tuned"
    code, stdout, err = run_cli(
        capsys, "build", "--target", "x86_64", "--model", tiny_model, "--out", out, "--json", "-"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["backend"] == "tvm" and "tuning database exists" in report["backend_reason"]  # auto chose TVM
    assert report["tvm"]["tuned"] and report["tvm"]["tuning"]["trials"] == 10
    assert 1 <= report["tvm"]["kernels"]["scheduled"] <= 3
    assert report["tvm"]["host_check"] == {"n_inputs": 4, "bit_exact": 4}
    assert "without a tuning database" not in err
    hil = _hil_json(capsys, "x86_64", out)
    assert hil["backend"] == "tvm" and hil["bit_exact"] == 3 and hil["device"]["kernels"] == "tvm-tuned"

    # --backend c still wins when asked for
    code, stdout, err = run_cli(
        capsys, "build", "--target", "x86_64", "--model", tiny_model, "--backend", "c", "--out", tmp_path / "c"
    )
    assert code == 0, err


def test_tune_rk3399_on_the_emulated_board_through_rpc(capsys, tmp_path, tuning_dir, tiny_model):
    require_tools("rk3399")
    code, result, err = _tune(capsys, "--target", "rk3399", "--emulate", "--model", tiny_model, "--trials", "4")
    assert code == 0, err
    assert result["measured_on"] == "emulator" and result["trials_run"] == 4
    assert result["failed_measurements"] == 0  # every candidate was cross-built, uploaded and run on the server
    assert result["database"]["records"] == 4
    assert not [
        p for p in subprocess.run(["pgrep", "-f", "tvm.exec.rpc_"], capture_output=True, text=True).stdout.split()
    ]

    out = tmp_path / "rk-tuned"
    code, stdout, err = run_cli(
        capsys, "build", "--target", "rk3399", "--backend", "tvm", "--model", tiny_model, "--out", out, "--json", "-"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["tvm"]["tuned"] and report["tvm"]["kernels"]["scheduled"] >= 1
    assert "tuned on an emulator" in err
    hil = _hil_json(capsys, "rk3399", out)
    assert hil["bit_exact"] == 3 and hil["latency"]["unit"] == "instructions"


def test_export_import_and_build_with_an_exported_database(capsys, tmp_path, tuning_dir, tiny_model, monkeypatch):
    require_tools("x86_64")
    exported = tmp_path / "x86.tuning.json"
    code, result, err = _tune(
        capsys, "--target", "x86_64", "--model", tiny_model, "--trials", "3", "--export", exported
    )
    assert code == 0, err
    payload = json.loads(exported.read_text())
    assert payload["mfnc_tuning_db"] == 1 and len(payload["records"]) == 3

    monkeypatch.setenv("MFNC_TUNING_DIR", str(tmp_path / "elsewhere"))  # another machine's empty cache
    out = tmp_path / "from-file"
    code, stdout, err = run_cli(
        capsys,
        "build",
        "--target",
        "x86_64",
        "--model",
        tiny_model,
        "--tuning-db",
        exported,
        "--out",
        out,
        "--json",
        "-",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["backend"] == "tvm" and report["tvm"]["tuning"]["records"] == 3
    assert report["tvm"]["host_check"]["bit_exact"] == 4
    assert not (out / "tuning-db").exists()

    code, result, err = _tune(
        capsys, "--target", "x86_64", "--model", tiny_model, "--trials", "0", "--import", exported
    )
    assert code == 0, err
    assert result["database"]["records"] == 3 and Path(result["database"]["path"]).is_relative_to(
        tmp_path / "elsewhere"
    )

    code, _, err = _tune(capsys, "--target", "rk3399", "--emulate", "--model", tiny_model, "--import", exported)
    assert code == 2
    assert_one_line_error(err, "x86.tuning.json", "x86_64", "rk3399")

    # --tuning-db FILE: resume from the file, write the grown database back to it
    code, result, err = _tune(
        capsys, "--target", "x86_64", "--model", tiny_model, "--trials", "5", "--tuning-db", exported
    )
    assert code == 0, err
    assert result["trials_run"] == 2 and len(json.loads(exported.read_text())["records"]) == 5


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracker_exits_5_within_its_timeout(capsys, tuning_dir, tiny_model):
    start = time.monotonic()
    code, _, err = _tune(
        capsys, "--target", "rk3399", "--rpc", f"127.0.0.1:{_unused_port()}", "--key", "rk3399", "--rpc-timeout", "3"
    )
    assert code == 5
    assert_one_line_error(err, "RPC tracker 127.0.0.1:", "unreachable")
    assert time.monotonic() - start < 30


def test_tracker_without_the_board_exits_5_within_its_timeout(capsys, tmp_path, tuning_dir, tiny_model):
    port = _unused_port()
    log = (tmp_path / "tracker.log").open("wb")
    tracker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tvm.exec.rpc_tracker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--port-end",
            str(port + 1),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the tracker serves from a worker process: stop the whole group
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        start = time.monotonic()
        code, _, err = _tune(
            capsys, "--target", "rk3399", "--rpc", f"127.0.0.1:{port}", "--key", "rk3399", "--rpc-timeout", "3"
        )
        assert code == 5
        assert_one_line_error(err, "no board registered with key 'rk3399'", f"127.0.0.1:{port}", "3 s")
        assert time.monotonic() - start < 30
    finally:
        from compiler.hil.emulate import stop_process_group

        stop_process_group(tracker.pid)
        log.close()


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--target", "rk3399"], ["rk3399", "--rpc HOST:PORT --key KEY", "--emulate"]),
        (["--target", "mps3-an547"], ["mps3-an547", "no TVM path"]),
        (["--target", "x86_64", "--key", "k"], ["--key", "--rpc"]),
        (["--target", "rk3399", "--rpc", "nohost", "--key", "k"], ["--rpc nohost", "HOST:PORT"]),
        (["--target", "x86_64", "--trials", "-1"], ["--trials -1"]),
    ],
)
def test_bad_tune_usage_is_one_line_exit_2(capsys, tuning_dir, argv, fragments):
    code, _, err = _tune(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, *fragments)


def test_a_database_for_another_model_is_never_applied(tmp_path, tuning_dir):
    folder = tuning_db.database_dir("x86_64", "ab" * 32)
    folder.mkdir(parents=True)
    (folder / tuning_db.RECORDS).write_text('{"record": 1}\n')
    (folder / tuning_db.META).write_text(json.dumps({"model_hash": "ab" * 8 + "cd" * 24, "target": "x86_64"}))
    assert tuning_db.find_database("x86_64", "ab" * 32) is None  # same 16-digit prefix, other model
    (folder / tuning_db.META).write_text(json.dumps({"model_hash": "ab" * 32, "target": "x86_64", "trials": 1}))
    assert tuning_db.find_database("x86_64", "ab" * 32).records == 1
    assert tuning_db.find_database("rk3399", "ab" * 32) is None
