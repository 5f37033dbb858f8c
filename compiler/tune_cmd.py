"""`tune`: MetaSchedule tuning of a model's conv kernels for a CPU target.

The model is quantized exactly as `build` would (same options, same hash), because the
database is keyed on (target, model hash) and `build --backend tvm|auto` looks it up
there. Where the kernels are measured:

- x86_64 target: on this machine;
- `--rpc HOST:PORT --key K`: on the board(s) registered with that TVM RPC tracker
  (checked first, so an unreachable tracker or board fails within its timeout);
- `--emulate`: on an RPC server this command starts under qemu-aarch64 (or natively
  for x86_64): the whole board path, but emulated timings rank nothing real.
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compiler import ui
from compiler.build import BuildOptions, model_hash, quantized_model, tvm_capable
from compiler.errors import BadInput
from compiler.preprocess import parse_preprocess
from compiler.quantization import QuantizeOptions
from compiler.targets import load_target


@dataclass
class TuneOptions:
    target: str
    model: str = "default"
    preprocess: str = "paper"
    quant: QuantizeOptions | None = None
    trials: int = 400
    rpc: str | None = None
    key: str | None = None
    emulate: bool = False
    rpc_timeout: float = 60.0
    import_db: Path | None = None
    export_db: Path | None = None
    tuning_db: Path | None = None  # import it when it exists, tune, export back to it


def _measurement(opts: TuneOptions, target):
    """(tracker or None, emulated?) after checking the options against the target."""
    from compiler.backends import tvm_rpc

    if opts.rpc and opts.emulate:
        raise BadInput("give --rpc or --emulate, not both")
    if opts.rpc:
        return tvm_rpc.parse_tracker(opts.rpc, opts.key), False
    if opts.key:
        raise BadInput("--key names a board at an RPC tracker: give --rpc HOST:PORT too")
    if opts.emulate:
        return None, True
    if target.cpu.arch != "x86_64" or platform.machine() != "x86_64":
        raise BadInput(
            f"tuning for {target.name} measures on the board: give --rpc HOST:PORT --key KEY (a TVM RPC "
            "tracker with the board's rpc_server, see docs/tvm.md), or --emulate to run the path on an emulator"
        )
    return None, False


def tune_model(opts: TuneOptions) -> dict:
    from compiler.backends import tuning_db, tvm_rpc, tvm_tune

    target = load_target(opts.target)
    if not tvm_capable(target):
        raise BadInput(f"target '{target.name}' has no TVM path (backends: {', '.join(target.backends) or 'none'})")
    if opts.trials < 0:
        raise BadInput(f"--trials {opts.trials}: must be 0 or more")
    tracker, emulated = _measurement(opts, target)
    if tracker is not None:  # fail fast, before minutes of quantizing
        with ui.step(f"checking the RPC tracker {tracker.address} for a '{tracker.key}' board"):
            tvm_rpc.wait_for_board(tracker, opts.rpc_timeout)

    build_opts = BuildOptions(opts.target, opts.model, "tvm", opts.preprocess, quant=opts.quant or QuantizeOptions())
    qgraph, front = quantized_model(build_opts, parse_preprocess(opts.preprocess))
    hash_ = model_hash(front)
    db_dir = tuning_db.database_dir(target.name, hash_)
    if opts.tuning_db is not None and (opts.import_db or opts.export_db):
        raise BadInput("--tuning-db FILE both imports and exports: give it alone, without --import/--export")
    import_db = opts.import_db or (opts.tuning_db if opts.tuning_db and opts.tuning_db.exists() else None)
    export_db = opts.export_db or opts.tuning_db
    if import_db is not None:
        imported = tuning_db.unpack_export(import_db, target.name, hash_, db_dir)
        ui.info(f"imported {imported.records} tuning records ({imported.trials} trials) into {db_dir}")
    existing = tuning_db.open_database(db_dir)
    done = existing.trials if existing else 0
    if opts.trials > done:
        todo = opts.trials - done
        where = "an emulated board" if emulated else (f"'{tracker.key}' boards" if tracker else "this machine")
        ui.info(
            f"tuning {target.name} on {where}: {todo} trials"
            + (f" (resuming at {done} of {opts.trials})" if done else "")
            + ("" if emulated else f", roughly {tvm_tune.estimated_minutes(todo):.0f} min on 2 cores")
        )
    elif opts.trials:
        ui.info(f"{db_dir} already holds {done} trials (>= --trials {opts.trials}); nothing to tune")

    with contextlib.ExitStack() as stack:
        if emulated and opts.trials > done:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mfnc-rpc-")))
            tracker = stack.enter_context(
                tvm_rpc.emulated_board(target.cpu.arch, target.cpu.primary.core, target.name, workdir)
            )
        with ui.progress(f"tuning {target.name} conv kernels") as advance:
            result = tvm_tune.tune(
                qgraph,
                target,
                hash_,
                opts.trials,
                db_dir,
                tracker=tracker,
                emulated=emulated,
                advance=advance,
            )
    payload = {
        "target": target.name,
        "model": {"name": front["model"]["name"], "sha256": hash_},
        "measured_on": result.database.meta.get("measured_on"),
        "trials_requested": opts.trials,
        "trials_run": result.trials_run,
        "failed_measurements": result.failed,
        "seconds": round(result.seconds, 1),
        "database": result.database.summary(),
        "tasks": result.tasks,
    }
    if export_db is not None:
        tuning_db.export_database(result.database, export_db)
        payload["exported"] = str(export_db)
    return payload


def print_tune_report(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"conv tasks of {result['model']['name']} on {result['target']}")
    for column in ("task", "kernels", "MFLOP", "best (us)"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in result["tasks"]:
        best = "-" if row["best_us"] is None else f"{row['best_us']:.1f}"
        table.add_row(row["task"], str(row["kernels"]), f"{row['mflop']:.2f}", best)
    ui.console.print(table)
    db = result["database"]
    note = " (emulated timings: functional check only)" if result["measured_on"] == "emulator" else ""
    ui.console.print(
        f"database {db['path']}: {db['trials']} trials, {db['records']} records{note}; "
        f"`mfnc build --target {result['target']}` now uses TVM with it"
    )
    if "exported" in result:
        ui.console.print(f"exported to {result['exported']}")
