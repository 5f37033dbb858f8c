"""Bit-exactness on every emulated device program, with the real and the default model.

    python -m bench.check_hil [--limit 20] [--targets ...] [--json FILE]

For each model (the real ReLU6 MobileFaceNet calibrated on 100 Friends faces, and the
shipped default model on synthetic faces) the int8 model is made once, then built for
each target and checked with `hil --emulate --limit N`. Fails (exit 1) unless every
output equals the golden simulator's. Figures quoted in docs/hil.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from compiler.cli import main as mfnc

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
TARGETS = ["mps3-an547", "mps2-an500", "rk3399", "x86_64"]


def _mfnc(*argv: object) -> dict:
    out = Path("build/check-hil/last.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    code = mfnc([*(str(a) for a in argv), "--json", str(out)])
    result = json.loads(out.read_text()) if out.exists() else {}
    out.unlink(missing_ok=True)
    if code not in (0, 4):
        raise SystemExit(f"mfnc {' '.join(map(str, argv))} failed with exit code {code}")
    return result


def cases(limit: int) -> list[dict]:
    found = [
        {
            "name": "default",
            "quantize": ["--model", "default", "--synthetic", "100"],
            "faces": ["--synthetic", str(limit)],
        }
    ]
    if (REAL / "mobilefacenet_foamliu.onnx").exists():
        found.insert(
            0,
            {
                "name": "foamliu",
                "quantize": [
                    "--model",
                    REAL / "mobilefacenet_foamliu.onnx",
                    "--preprocess",
                    "imagenet",
                    "--calib",
                    REAL / "friends",
                    "--calib-limit",
                    "100",
                ],
                "faces": ["--faces", REAL / "friends", "--limit", str(limit)],
            },
        )
    else:
        print(f"warning: no real model at {REAL}: default model only", file=sys.stderr)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path("build/check-hil")
    rows, ok = [], True
    for case in cases(args.limit):
        mfnq = work / f"{case['name']}.mfnq"
        _mfnc("quantize", *case["quantize"], "--out", mfnq)
        for target in args.targets:
            out = work / f"{case['name']}-{target}"
            build = _mfnc("build", "--target", target, "--model", mfnq, "--out", out)
            started = time.monotonic()
            hil = _mfnc("hil", "--target", target, "--emulate", "--build", out, *case["faces"])
            row = {
                "model": case["name"],
                "target": target,
                "n_inputs": hil["n_inputs"],
                "bit_exact": hil["bit_exact"],
                "cosine_vs_float": hil["cosine_vs_float"],
                "latency": hil["latency"],
                "link_kib_per_s": (hil["link"]["bytes_per_s"] or 0) / 1024,
                "memory": build["memory"],
                "hil_seconds": time.monotonic() - started,
            }
            ok &= row["bit_exact"] == row["n_inputs"]
            rows.append(row)
            lat = row["latency"]
            print(
                f"{case['name']:8} {target:11} bit-exact {row['bit_exact']}/{row['n_inputs']}  "
                f"cos {row['cosine_vs_float']['mean'] if row['cosine_vs_float'] else float('nan'):.4f}  "
                f"latency {lat['median']:,.0f} {lat['unit']}  arena {row['memory']['arena_bytes']:,} B  "
                f"flash {row['memory'].get('flash_bytes', 0):,} B  ({row['hil_seconds']:.0f} s)",
                file=sys.stderr,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "passed": ok}, indent=2) + "\n")
    print("PASS" if ok else "FAIL: some outputs differ from the golden simulator", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
