"""The benchmark harness: its statistics, and `bench.run --quick` end to end (smoke run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import interleave, ratio_to_best, summarize

ROOT = Path(__file__).resolve().parents[1]


def test_summarize_gives_median_and_interquartile_range():
    row = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert row["median"] == 3.0
    assert (row["q1"], row["q3"]) == (2.0, 4.0)
    assert row["min"] == 1.0 and row["runs"] == 5


def test_ratio_to_best_compares_with_the_fastest_peer_never_with_ours():
    rows = {"ours: c": {"median": 1.0}, "peer a": {"median": 4.0}, "peer b": {"median": 2.0}}
    best = ratio_to_best(rows)
    assert best == {"best_peer": "peer b", "value": 2.0}
    assert rows["ours: c"]["vs_best_peer"] == 0.5
    assert rows["peer a"]["vs_best_peer"] == 2.0


def test_interleave_rotates_engines_and_counts_every_run():
    order: list[str] = []

    def engine(name: str):
        def run(n: int) -> list[float]:
            order.extend([name] * n)
            return [1.0] * n

        return run

    rows = interleave({"a": engine("a"), "b": engine("b")}, rounds=2, runs=3, settle_s=0, warmup=1)
    assert rows["a"]["runs"] == rows["b"]["runs"] == 6
    timed = order[2:]  # after one warm-up call each
    assert timed[:6] == ["a"] * 3 + ["b"] * 3 and timed[6:] == ["b"] * 3 + ["a"] * 3


def test_bad_rounds_are_refused_with_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--rounds", "0", "--json", str(tmp_path / "r.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "--rounds" in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_quick_run_writes_results_and_regenerates_the_tables(tmp_path):
    if not (ROOT.parent / "shared" / "data" / "real" / "friends").is_dir() and os.environ.get("CI") == "true":
        pytest.fail("CI must have ../shared/data/real")
    results, page = tmp_path / "results.json", tmp_path / "docs" / "benchmarks.md"
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench.run", "--quick", "--rounds", "1", "--runs", "1",
            "--json", str(results), "--docs", str(page),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(results.read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    sections = data["sections"]

    host = sections["host"]["default"]["threads_1"]["rows"]
    assert "ours: C runtime int8 (1 thread)" in host
    for name in ("onnxruntime fp32", "onnxruntime int8 (QDQ)", "LiteRT fp32 (XNNPACK)", "LiteRT int8 (XNNPACK)"):
        assert host[name]["median"] > 0 and host[name]["runs"] >= 1
    assert sections["host"]["default"]["threads_1"]["best_peer"]["best_peer"] in host

    memory = sections["memory"]["default"]
    # The fused expand + depthwise plan is the point of our C runtime: far below TFLite Micro's arena.
    assert 0 < memory["ours"]["arena_bytes"] < memory["tflite_micro"]["arena_bytes"]
    assert memory["vela"]["sram_bytes"] > 0

    accuracy = {r["quantizer"]: r for r in sections["accuracy"]["default"]["rows"]}
    assert accuracy["ours: mse, fused"]["mean_cosine"] > 0.99
    assert 0.5 < accuracy["onnxruntime quantize_static (QDQ)"]["mean_cosine"] <= 1.0

    compiled = {r["target"]: r for r in sections["compile"]["default"]}
    assert set(compiled) == {"(any)", "x86_64", "mps3-an547"}
    assert compiled["(any)"]["backend"] == "quantize" and compiled["(any)"]["seconds"] > 0

    a72 = sections["instructions"]["default"]["cortex_a72"]["c_neon"]
    assert a72["bit_exact"] and a72["optimised"] < a72["portable"]  # NEON kernels beat the portable C
    m55 = sections["instructions"]["default"]["cortex_m"]["mps3-an547"]
    assert m55["bit_exact"] and 0 < m55["optimised_per_mac"] < m55["portable_per_mac"]

    text = page.read_text()
    headings = (
        "## 1. Host latency",
        "## 2. Cortex-A72",
        "## 3. Cortex-M",
        "## 4. Memory",
        "## 5. int8",
        "## 6. Compile",
    )
    for heading in headings:
        assert heading in text
    assert "| ours: C runtime int8 (1 thread) |" in text
    plots = list((page.parent / "benchmarks").glob("*.png"))
    assert any(p.name.startswith("host-default") for p in plots)


def _results() -> dict:
    """A results JSON as bench.run writes it, small but with every kind of row."""
    row = {"median": 2.0, "q1": 1.9, "q3": 2.2, "min": 1.8, "runs": 10}
    return {
        "date": "2026-01-01",
        "command": "python -m bench.run",
        "seconds": 120.0,
        "section_seconds": {"host": 60.0},
        "settings": {"rounds": 2, "runs": 5},
        "machine": {
            "cpu": "Test CPU", "arch": "x86_64", "cores": 2, "memory_gb": 8.0, "vector_flags": ["avx2"],
            "kernel": "6.1", "python": "3.11.7", "load_average": [0.1, 0.1, 0.1], "versions": {"numpy": "2.4.6"},
        },
        "failed_sections": {"accuracy_extra": "RuntimeError: toolkit crashed"},
        "sections": {
            "host": {
                "default": {
                    "rounds": 2,
                    "runs_per_round": 5,
                    "threads_1": {
                        "rows": {"ours: C runtime int8 (1 thread)": {**row, "vs_best_peer": 0.5},
                                 "LiteRT fp32 (XNNPACK)": {**row, "median": 4.0, "vs_best_peer": 1.0}},
                        "best_peer": {"best_peer": "LiteRT fp32 (XNNPACK)", "value": 4.0},
                        "skipped": {"ncnn fp32": "ncnn is not installed"},
                    },
                }
            },
            "instructions": {
                "default": {
                    "macs": 221_000_000,
                    "cortex_a72": {
                        "c_neon": {"optimised": 104e6, "portable": 790e6, "speedup": 7.6, "bit_exact": True},
                        "tvm": {"instructions": 300e6, "tuned": False},
                        "peers": {
                            "rows": [{"engine": "ncnn fp32 (pnnx)", "instructions": 73e6},
                                     {"engine": "onnxruntime fp32", "instructions": None, "error": "timed out"}],
                            "skipped": {"LiteRT": "wheel missing"},
                        },
                        "cycle_lower_bound": {"int8": 27.6e6, "fp32": 55.2e6},
                    },
                    "cortex_m": {
                        "mps3-an547": {"optimised": 118e6, "portable": 1656e6, "speedup": 14.0, "bit_exact": True,
                                       "optimised_per_mac": 0.54, "portable_per_mac": 7.5},
                        "mps2-an500": {"skipped": "needs qemu-system-arm"},
                    },
                }
            },
            "memory": {
                "default": {
                    "ours": {"arena_bytes": 222_208, "unfused_arena_bytes": 408_576, "flash_bytes": 1_194_656},
                    "tflite_micro": {"arena_bytes": 932_096},
                    "vela": {"sram_bytes": 1_204_224, "off_chip_flash_bytes": 1_089_008, "cycles_estimate": 24_441_709,
                             "inference_ms_estimate": 48.9, "accelerator": "ethos-u55-128", "system_config": "X",
                             "operators": ["NPU operators = 179 (100.0%)"]},
                }
            },
            "accuracy": {
                "default": {
                    "source": "friends",
                    "rows": [
                        {"quantizer": "ours: mse, fused", "mean_cosine": 0.999, "min_cosine": 0.998,
                         "auc_float": 0.62, "auc_int8": 0.63, "auc_drop": -0.01, "n_eval": 145, "int16_tensors": 1},
                        {"quantizer": "TensorFlow int8 converter", "mean_cosine": 0.996, "min_cosine": 0.994,
                         "auc_float": 0.62, "auc_int8": 0.61, "auc_drop": 0.01, "n_eval": 145},
                        {"quantizer": "ours: kl, fused", "mean_cosine": 0.5, "min_cosine": 0.1,
                         "auc_float": 0.62, "auc_int8": 0.5, "auc_drop": 0.12, "n_eval": 145},
                        {"quantizer": "rknn-toolkit2 (rk3588)", "error": "toolkit crashed"},
                    ],
                }
            },
            "compile": {"default": [{"target": "x86_64", "backend": "c", "seconds": 20.0},
                                    {"target": "rk3588", "backend": "rknn", "error": "no toolkit"}]},
        },
    }  # fmt: skip


def test_report_renders_every_section_with_ratios_plots_and_failures(tmp_path):
    from bench.report import render

    page = tmp_path / "docs" / "benchmarks.md"
    text = render(_results(), page, tmp_path / "bench" / "results" / "r.json")
    assert "| ours: C runtime int8 (1 thread) | 2.00 | 1.90-2.20 | 10 | 0.50x |" in text
    assert "- ncnn fp32: not measured: ncnn is not installed" in text
    # A72: ours against the best measured peer (ncnn, 73 M), a failed peer keeps its row and reason.
    assert "| ours: C runtime int8, NEON kernels | 104.0 M | 0.47 | 1.42x | bit-exact |" in text
    assert "| onnxruntime fp32 | - | - | - | timed out |" in text
    assert "27.6 M cycles in int8" in text
    assert "| default | mps3-an547 (Helium (MVE)) | 118.0 M | 0.54 |" in text
    assert "needs qemu-system-arm" in text
    assert "| default | 217 KiB (399 KiB unfused) | 1,167 KiB | 910 KiB | 4.19x | 1,176 KiB | 1,063 KiB |" in text
    assert "| ours: mse, fused | 0.9990 | 0.9980 | 0.6200 -> 0.6300 | -0.0100 | 1 int16 tensors |" in text
    assert "| rknn-toolkit2 (rk3588) | - | - | - | - | toolkit crashed |" in text
    assert "| default | rk3588 | rknn | - | no toolkit |" in text
    assert "**Section `accuracy_extra` failed in this run:** RuntimeError: toolkit crashed" in text
    assert "python -m bench.report bench/results/r.json" in text
    behind = text[text.index("## Where we are behind") : text.index("## Where we are ahead")]
    ahead = text[text.index("## Where we are ahead") : text.index("## 1. Host latency")]
    assert "ncnn fp32 (pnnx) needs 1.42x fewer instructions than our C runtime, NEON (73.0 M vs 104.0 M)" in behind
    assert "TensorFlow int8 converter" not in behind  # ours is more accurate in this fixture
    assert "our kl, fused reaches only 0.5000 mean cosine (every peer in the table does better)" in behind
    assert "our C runtime int8 (1 thread) 2.00 ms is 2.00x faster than the best peer (LiteRT fp32" in ahead
    assert "Cortex-M arena: ours 217 KiB vs TFLite Micro's minimum 910 KiB (4.19x)" in ahead
    plots = sorted(p.name for p in (page.parent / "benchmarks").glob("*.png"))
    assert plots == ["a72-default.png", "accuracy-default.png", "host-default-1t.png", "memory-default.png"]


def test_report_command_refuses_a_missing_results_file(tmp_path):
    from bench.report import main

    assert main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "b.md")]) == 2
    assert not (tmp_path / "b.md").exists()


@pytest.mark.slow
def test_default_model_rebuilt_in_keras_matches_onnxruntime():
    from bench import keras_weights

    model = keras_weights.load(ROOT / "compiler" / "models" / "default.onnx")  # checks itself, 1e-4
    assert model.count_params() > 990_000
