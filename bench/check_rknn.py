"""The NPU accuracy check: real models on Rockchip chips, through rknn-toolkit2.

    python -m bench.check_rknn [--chips rk3588 rk3568 rv1106] [--models foamliu default]
                               [--json FILE]

For each (model, chip): `build --target CHIP` with 100 Friends faces for calibration
(the foamliu model with imagenet preprocessing, the default model with paper's), the
rest held out. The goal (issue: Rockchip NPU backend): mean cosine >= 0.99 vs float
and an AUC drop <= 0.005, with the step of the ladder that got there, and the wall
time of the build (a normal, non-mmse build: under 60 s on an idle machine). Needs
../shared/data/real. Takes ~1 min per row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MODELS = {
    "foamliu": (str(REAL / "mobilefacenet_foamliu.onnx"), "imagenet"),
    "default": ("default", "paper"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.check_rknn", description=__doc__.split("\n")[0])
    parser.add_argument("--chips", nargs="+", default=["rk3588", "rk3568", "rv1106"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (REAL / "friends").is_dir():
        print(f"error: {REAL / 'friends'} is missing (real test data)", file=sys.stderr)
        return 2

    from compiler.build import BuildOptions, build
    from compiler.quantization import QuantizeOptions

    rows = []
    with tempfile.TemporaryDirectory(prefix="check-rknn-") as tmp:
        for name in args.models:
            model, pre = MODELS[name]
            for chip in args.chips:
                quant = QuantizeOptions(calib=REAL / "friends", calib_limit=100)
                start = time.monotonic()
                report = build(BuildOptions(chip, model, "auto", pre, Path(tmp) / f"{name}-{chip}", quant))
                seconds = time.monotonic() - start
                q = report["quantization"]
                rows.append(
                    {
                        "model": name,
                        "chip": chip,
                        "step": q["step"],
                        "mean_cosine": round(q["mean_cosine"], 4),
                        "min_cosine": round(q["min_cosine"], 4),
                        "auc_float": round(q["float"]["auc"], 4) if "float" in q else None,
                        "auc_npu": round(q["int8"]["auc"], 4) if "int8" in q else None,
                        "auc_drop": round(q["auc_drop"], 4) if "auc_drop" in q else None,
                        "passed": q["passed"],
                        "n_eval": q["n_eval"],
                        "ladder": [s["step"] for s in q["ladder"]],
                        "seconds": round(seconds, 1),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    failed = [r for r in rows if not r["passed"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} (model, chip) pairs pass the gate", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
