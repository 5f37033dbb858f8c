"""A tiny training run end to end: render, train, monitor, export, ingest."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from compiler.frontend import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_training_run_learns_and_exports(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "compiler.family.train",
        "--out",
        str(tmp_path),
        "--identities",
        "4",
        "--per-identity",
        "4",
        "--steps",
        "50",
        "--stop-after",
        "40",
        "--batch",
        "16",
        "--lr",
        "3e-3",
        "--warmup",
        "0.1",
        "--eval-images",
        "10",
        "--eval-every",
        "10",
        "--workers",
        "1",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=480, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    assert log[-1]["loss"] < 0.7 * log[0]["loss"], "16 images of 4 people must be memorised"
    assert 0.0 <= log[-1]["eval_auc"] <= 1.0
    model = load_model(str(tmp_path / "model.onnx"))
    ops = Counter(n.op for n in model.graph.nodes)
    assert ops["BatchNorm"] == 50 and ops["PRelu"] == 33
    assert (tmp_path / "model.onnx").stat().st_size < 4.5 * 1024 * 1024
