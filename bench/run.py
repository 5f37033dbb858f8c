"""The benchmark against the peers: every section, one JSON, regenerated tables and plots.

    python -m bench.run              # `make bench`: full (~45 min on 2 cores), writes
                                     # bench/results/<date>-<host>.json and docs/benchmarks.md
    python -m bench.run --quick      # `make bench-quick`: < 5 min, default model, short
                                     # timings; writes ...-quick.json and build/bench-quick/

Sections (see each module's docstring): host latency (`host_latency`), ARM and
Cortex-M instruction counts (`instructions`), memory (`memory`), int8 accuracy
(`accuracy`), compile cost (`compile_cost`). Run it on an otherwise idle machine:
latency tables from a loaded machine mean nothing (the load average is recorded).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, before any import of it

import argparse
import datetime as dt
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench.artifacts import Artifacts
from bench.common import ROOT, bench_models, machine
from compiler import ui

SECTIONS = ("host", "compile", "memory", "accuracy", "instructions")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the < 5 min smoke run (default model, short timings)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, help="only these sections (default: all)")
    p.add_argument("--models", nargs="+", help="default, foamliu (default: both when present; --quick: default)")
    p.add_argument("--rounds", type=int, help="timing rounds (default 7, --quick 2)")
    p.add_argument("--runs", type=int, help="runs per engine per round (default 5, --quick 2)")
    p.add_argument("--tvm-trials", type=int, help="TVM tuning trials per model (default 400; 0: untuned only)")
    p.add_argument("--no-tvm", action="store_true", help="leave TVM out of the host latency section")
    p.add_argument("--no-rknn", action="store_true", help="leave rknn-toolkit2 out (it needs its own virtualenv)")
    p.add_argument("--json", type=Path, help="results file (default bench/results/<date>-<host>[-quick].json)")
    p.add_argument("--docs", type=Path, help="markdown to regenerate (default docs/benchmarks.md; --quick: build/)")
    p.add_argument("--workdir", type=Path, help="keep intermediate models and builds here")
    p.add_argument(
        "--update",
        type=Path,
        metavar="RESULTS",
        help="rerun --sections into an existing results file (kept as the results file; its settings are reused)",
    )
    return p


def _load_previous(path: Path, sections: list[str] | None) -> dict | None:
    """The results file --update reruns sections into; None (after saying why) if unusable."""
    if not sections:
        print("error: --update needs --sections (which sections to rerun)", file=sys.stderr)
        return None
    try:
        results = json.loads(path.read_text())
        if not isinstance(results.get("sections"), dict):
            raise KeyError("sections")
    except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        print(f"error: --update {path}: not a results file of bench.run ({exc})", file=sys.stderr)
        return None
    for name in sections:
        results.get("failed_sections", {}).pop(name, None)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quick = args.quick
    sections = args.sections or list(SECTIONS)
    rounds = (2 if quick else 7) if args.rounds is None else args.rounds
    runs = (2 if quick else 5) if args.runs is None else args.runs
    if rounds < 1 or runs < 1:
        print("error: --rounds and --runs must be at least 1", file=sys.stderr)
        return 2
    tvm_trials = None if (args.no_tvm or quick) else (400 if args.tvm_trials is None else args.tvm_trials)
    with_rknn = not (args.no_rknn or quick)
    stamp = dt.date.today().isoformat()
    suffix = "-quick" if quick else ""
    json_path = args.json or ROOT / "bench" / "results" / f"{stamp}-{socket.gethostname()}{suffix}.json"
    docs = args.docs or (ROOT / "build" / "bench-quick" / "benchmarks.md" if quick else ROOT / "docs" / "benchmarks.md")

    from bench import accuracy, compile_cost, host_latency, instructions, memory
    from bench.report import write_report

    started = time.monotonic()
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.update is not None:
        previous = _load_previous(args.update, args.sections)
        if previous is None:
            return 2
        results = previous
        json_path = args.json or args.update
        reruns = results.setdefault("reruns", [])
        reruns.append({"command": command, "date": stamp, "sections": sections, "machine": machine()})
    else:
        results = {
            "date": stamp,
            "quick": quick,
            "command": command,
            "machine": machine(),
            "settings": {"rounds": rounds, "runs": runs, "tvm_trials": tvm_trials, "rknn": with_rknn},
            "sections": {},
        }
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mfnc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        models = bench_models(args.models or (["default"] if quick else None))
        arts = [Artifacts(m, work, quick) for m in models]
        results["models"] = [{"name": m.name, "spec": m.spec, "preprocess": m.preprocess} for m in models]
        for art in arts:
            art.lowered()  # imports and ingestion once, so no section's first figure pays for them
            results.setdefault("eval_sources", {})[art.model.name] = art.datasets()[1].source
        plan = {
            "host": lambda: host_latency.run(arts, rounds, runs, tvm_trials),
            "compile": lambda: compile_cost.run(arts, quick, with_rknn),
            "memory": lambda: memory.run(arts),
            "accuracy": lambda: accuracy.run(arts, quick, with_rknn, with_tensorflow=not quick),
            "instructions": lambda: instructions.run(arts, quick, with_peers=not quick),
        }
        for name in SECTIONS:
            if name not in sections:
                continue
            t0 = time.monotonic()
            ui.info(f"[bold]section: {name}[/bold]")
            try:
                results["sections"][name] = plan[name]()
            except Exception as exc:  # keep the other sections' numbers; the page names the failure
                ui.warn(f"section {name} failed: {type(exc).__name__}: {exc}")
                results.setdefault("failed_sections", {})[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)
            ui.write_atomic(json_path, json.dumps(results, indent=2) + "\n")  # partial results survive a crash
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.update is not None:
        results["reruns"][-1]["seconds"] = round(time.monotonic() - started, 1)
        results["reruns"][-1]["load_average_after"] = machine()["load_average"]
    else:
        results["seconds"] = round(time.monotonic() - started, 1)
        results["machine"]["load_average_after"] = machine()["load_average"]
    ui.write_atomic(json_path, json.dumps(results, indent=2) + "\n")
    write_report(results, docs, json_path)
    ui.info(f"wrote {json_path} and {docs} ({(time.monotonic() - started) / 60:.1f} min)")
    return 1 if results.get("failed_sections") else 0


if __name__ == "__main__":
    sys.exit(main())
