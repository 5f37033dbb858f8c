"""int8 accuracy and golden-simulator speed on the real and the default model.

    python -m bench.check_int8 [--json FILE]

Checks (exit 1 when one fails), numbers quoted in docs/quantization.md:
- the real ReLU6 MobileFaceNet (../shared/data/real) on the Friends faces, calibrated
  on 100 of them, measured on the other 145: mean cosine int8 vs float >= 0.995,
  min >= 0.98, AUC drop <= 0.002 (fused mode, default algorithm);
- the shipped default model on synthetic identities: the same thresholds;
- the golden simulator takes <= 1 s per 112x112 image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from calibration import golden
from compiler.lowering import ingest_and_lower
from compiler.preprocess import parse_preprocess
from compiler.quantization import QuantizeOptions, quantize_and_measure
from compiler.synthetic import synthetic_eval_set

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
THRESHOLDS = {"mean_cosine": 0.995, "min_cosine": 0.98, "auc_drop": 0.002}


def run_case(name: str, spec: str, preprocess: str, opts: QuantizeOptions) -> dict:
    pre = parse_preprocess(preprocess)
    _, lowered, _, _ = ingest_and_lower(spec, pre, opts.calib)
    start = time.monotonic()
    qgraph, info = quantize_and_measure(lowered, opts)
    elapsed = time.monotonic() - start
    images = synthetic_eval_set(20, seed=5)[0]
    t0 = time.monotonic()
    golden.run(qgraph, images)
    per_image = (time.monotonic() - t0) / len(images)
    row = {
        "case": name,
        "mean_cosine": info["mean_cosine"],
        "min_cosine": info["min_cosine"],
        "auc_float": info.get("float", {}).get("auc"),
        "auc_int8": info.get("int8", {}).get("auc"),
        "auc_drop": info.get("auc_drop"),
        "n_calib": info["n_calib"],
        "n_eval": info["n_eval"],
        "int16_tensors": info["int16"]["tensors"],
        "int16_extra_bytes": info["int16"]["extra_bytes"],
        "golden_s_per_image": per_image,
        "quantize_s": elapsed,
    }
    row["checks"] = {
        "mean_cosine": row["mean_cosine"] >= THRESHOLDS["mean_cosine"],
        "min_cosine": row["min_cosine"] >= THRESHOLDS["min_cosine"],
        "auc_drop": row["auc_drop"] is not None and row["auc_drop"] <= THRESHOLDS["auc_drop"],
        "golden_speed": per_image <= 1.0,
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    strict = QuantizeOptions(gate_cosine=THRESHOLDS["mean_cosine"], gate_auc_drop=THRESHOLDS["auc_drop"])
    cases = []
    if (REAL / "mobilefacenet_foamliu.onnx").exists():
        opts = QuantizeOptions(**{**strict.__dict__, "calib": REAL / "friends", "calib_limit": 100})
        cases.append(run_case("foamliu (ReLU6) on Friends", str(REAL / "mobilefacenet_foamliu.onnx"), "imagenet", opts))
    else:
        print(f"skipping the real model: {REAL} not present", file=sys.stderr)
    synth = QuantizeOptions(**{**strict.__dict__, "synthetic": 100})
    cases.append(run_case("default (PReLU) on synthetic identities", "default", "paper", synth))
    print("| case | mean cos | min cos | AUC float -> int8 | int16 tensors (bytes) | golden s/image |")
    print("|---|---|---|---|---|---|")
    for c in cases:
        auc = f"{c['auc_float']:.4f} -> {c['auc_int8']:.4f}" if c["auc_float"] is not None else "-"
        print(
            f"| {c['case']} | {c['mean_cosine']:.4f} | {c['min_cosine']:.4f} | {auc} | "
            f"{len(c['int16_tensors'])} ({c['int16_extra_bytes']}) | {c['golden_s_per_image']:.3f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(cases, indent=2))
    failed = [(c["case"], k) for c in cases for k, ok in c["checks"].items() if not ok]
    for case, check in failed:
        print(f"FAILED: {case}: {check}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
