"""Command line: `python -m compiler <command>` (console script `mfnc`).

Follows DESIGN section 8: `--json FILE|-` on every command, human output on stderr,
one-line errors and the documented exit codes.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from compiler import __version__, ui
from compiler.errors import MfncError

if TYPE_CHECKING:
    from compiler.quantization import QuantizeOptions


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's one-line usage errors (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _add_quantize_args(p: argparse.ArgumentParser) -> None:
    faces = p.add_mutually_exclusive_group()
    faces.add_argument("--calib", type=Path, help="folder of aligned faces to calibrate with (default: synthetic)")
    faces.add_argument("--synthetic", type=int, metavar="N", help="calibrate on N synthetic faces (default 100)")
    p.add_argument("--calib-limit", type=int, metavar="N", help="calibrate on N images of --calib (default 100)")
    p.add_argument("--eval-faces", type=Path, help="held-out faces for accuracy (default: the rest of --calib)")
    p.add_argument("--eval-limit", type=int, default=200, metavar="N", help="at most N held-out images (default 200)")
    p.add_argument("--pairs", type=Path, help="LFW pairs.txt or CSV file_a,file_b,same over --eval-faces")
    p.add_argument("--algo", default="mse", choices=["minmax", "percentile", "kl", "mse"], help="range algorithm")
    p.add_argument("--mode", default="fused", choices=["fused", "tflite"], help="int8 graph mode (default fused)")
    p.add_argument("--strict", action="store_true", help="treat calibration-set warnings as errors")
    p.add_argument(
        "--int16",
        default="auto",
        metavar="auto|none|TENSORS",
        help="int16 activations: auto (widen sensitive layers while the gate fails; default), none, or names",
    )


def _quantize_options(args: argparse.Namespace) -> QuantizeOptions:
    from compiler.errors import BadInput
    from compiler.quantization import QuantizeOptions

    extra = {k: getattr(args, k) for k in ("gate_cosine", "gate_auc_drop") if hasattr(args, k)}
    if "gate_cosine" in extra and not 0.0 < extra["gate_cosine"] <= 1.0:
        raise BadInput(f"--gate-cosine {extra['gate_cosine']}: a cosine gate must be in (0, 1]")
    if "gate_auc_drop" in extra and not 0.0 <= extra["gate_auc_drop"] < 1.0:
        raise BadInput(f"--gate-auc-drop {extra['gate_auc_drop']}: an AUC drop must be in [0, 1)")
    return QuantizeOptions(
        args.algo,
        args.mode,
        args.calib,
        args.synthetic,
        args.calib_limit,
        args.eval_faces,
        args.strict,
        int16=args.int16,
        eval_limit=args.eval_limit,
        pairs=args.pairs,
        **extra,
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the machine-readable result to FILE ('-' for stdout)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mfnc",
        description="Edge deployment compiler for MobileFaceNet face-verification networks.",
    )
    parser.add_argument("--version", action="version", version=f"mfnc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("targets", help="list the target catalogue and what works here")
    _add_json(p)

    p = sub.add_parser("inspect", help="per-layer table of a model: op, shapes, params, MACs")
    p.add_argument(
        "--model", required=True, help="model file (.onnx, .keras, .h5, .tflite, SavedModel dir) or family name"
    )
    p.add_argument("--all", action="store_true", help="list every node, not only conv/linear layers")
    _add_json(p)

    p = sub.add_parser("build", help="compile a model for a target and write its report")
    p.add_argument("--target", required=True, help="catalogue name (see `targets`) or path to a target .toml")
    p.add_argument(
        "--backend", default="auto", choices=["auto", "c", "tvm", "rknn"], help="code generator (default: auto)"
    )
    p.add_argument("--model", default="default", help="model file or family name (default: the shipped trained model)")
    p.add_argument("--preprocess", default="paper", help="paper (default), imagenet, or rgb|bgr:MR,MG,MB:SR,SG,SB")
    _add_quantize_args(p)
    p.add_argument("--gate-cosine", type=float, default=0.99, help="minimum mean cosine int8 vs float (default 0.99)")
    p.add_argument("--gate-auc-drop", type=float, default=0.005, help="maximum AUC drop (default 0.005)")
    p.add_argument("--out", type=Path, help="output folder (default: build/<target>/)")
    p.add_argument(
        "--tuning-db", type=Path, metavar="FILE|DIR", help="TVM tuning database to apply (default: the tune cache)"
    )
    p.add_argument(
        "--rknn-sdk", type=Path, metavar="DIR", help="Rockchip runtime (rknn_api.h, librknnrt.so) for the NPU program"
    )
    _add_json(p)

    p = sub.add_parser("tune", help="autotune the TVM kernels of a model for a CPU target (MetaSchedule)")
    p.add_argument("--target", required=True, help="catalogue name or target .toml (x86_64 or aarch64 Linux)")
    p.add_argument("--model", default="default", help="model file or family name (default: the shipped trained model)")
    p.add_argument("--preprocess", default="paper", help="paper (default), imagenet, or rgb|bgr:MR,MG,MB:SR,SG,SB")
    _add_quantize_args(p)
    p.add_argument("--trials", type=int, default=400, help="total measured candidates (default 400; resumes)")
    board = p.add_mutually_exclusive_group()
    board.add_argument("--rpc", metavar="HOST:PORT", help="TVM RPC tracker the board's rpc_server registered with")
    board.add_argument("--emulate", action="store_true", help="measure on an emulated board (functional only)")
    p.add_argument("--key", help="the board's key at the tracker (e.g. rk3399)")
    p.add_argument("--rpc-timeout", type=float, default=60.0, help="seconds to wait for the tracker/board (default 60)")
    p.add_argument("--import", dest="import_db", type=Path, metavar="FILE", help="load an exported database first")
    p.add_argument("--export", dest="export_db", type=Path, metavar="FILE", help="write the database to FILE after")
    p.add_argument(
        "--tuning-db", type=Path, metavar="FILE", help="a database file to resume from (if it exists) and write back"
    )
    _add_json(p)

    p = sub.add_parser("quantize", help="calibrate and quantize a model to int8 (.mfnq, optionally .tflite)")
    p.add_argument("--model", required=True, help="model file or family name")
    p.add_argument("--preprocess", default="paper", help="paper (default), imagenet, or rgb|bgr:MR,MG,MB:SR,SG,SB")
    _add_quantize_args(p)
    p.add_argument("--out", type=Path, help="quantized model file (default: <model>-<mode>.mfnq)")
    p.add_argument("--tflite", type=Path, metavar="FILE", help="also export an int8 .tflite (needs --mode tflite)")
    p.add_argument("--qdq", type=Path, metavar="FILE", help="also export a QDQ ONNX model (for onnxruntime)")
    _add_json(p)

    p = sub.add_parser("eval", help="face-verification metrics of a model on a folder of faces")
    p.add_argument("--model", required=True, help="model file or family name")
    p.add_argument("--faces", type=Path, help="folder of aligned faces (labels.csv or one sub-folder per identity)")
    p.add_argument("--synthetic", type=int, metavar="N", help="N seeded synthetic faces instead of --faces")
    p.add_argument("--pairs", type=Path, help="LFW pairs.txt or CSV file_a,file_b,same (default: all pairs)")
    p.add_argument("--preprocess", default="paper", help="paper (default), imagenet, or rgb|bgr:MR,MG,MB:SR,SG,SB")
    p.add_argument("--flip", action="store_true", help="add the embedding of the mirrored face")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N images (sorted)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write the ROC curve and score histograms")
    _add_json(p)

    p = sub.add_parser("flash", help="put a built device program on a board (or start its emulator)")
    _add_board_args(p)
    p.add_argument("--host", help="user@board for Linux boards (copy over ssh, serve on a TCP port)")
    p.add_argument("--remote-port", type=int, help="TCP port the Linux board serves on (default 4700)")
    p.add_argument("--emulate", action="store_true", help="start the emulator even for a flashable board")
    p.add_argument("--stop", action="store_true", help="stop the emulator a previous flash started")
    p.add_argument("--dry-run", action="store_true", help="print the exact commands instead of running them")
    _add_json(p)

    p = sub.add_parser("hil", help="check a build on a board over serial: bit-exactness, accuracy, latency")
    _add_board_args(p)
    link = p.add_mutually_exclusive_group()
    link.add_argument("--port", help="pyserial URL: /dev/ttyACM0, socket://host:port, rfc2217://host:port")
    link.add_argument("--emulate", action="store_true", help="run the board's emulator (QEMU, or a local process)")
    p.add_argument("--baud", type=int, help="serial baud rate (default: the target's)")
    faces = p.add_mutually_exclusive_group()
    faces.add_argument("--faces", type=Path, help="folder of aligned faces (labels.csv or one sub-folder per identity)")
    faces.add_argument("--synthetic", type=int, metavar="N", help="N seeded synthetic faces (default 8)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N images")
    p.add_argument("--pairs", type=Path, help="LFW pairs.txt or CSV file_a,file_b,same over --faces")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs before timing each input (default 0)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per input, 1-64 (default 1)")
    p.add_argument("--per-layer", action="store_true", help="also time each layer (first input)")
    p.add_argument("--min-cosine", type=float, help="fail (exit 4) if the mean cosine vs float is below this")
    p.add_argument("--run-timeout", type=float, default=600.0, help="seconds one RUN may take (default 600)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML for CI")
    _add_json(p)
    return parser


def _add_board_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help="catalogue name or target .toml (or take it from --board)")
    p.add_argument("--board", help="a board named in the lab file (fills target, port, baud, host)")
    p.add_argument("--lab", type=Path, help="lab file (default: $MFNC_LAB or ./lab.toml)")
    p.add_argument("--build", type=Path, help="build folder (default: build/<target>/)")


def _board_defaults(args: argparse.Namespace) -> None:
    """Fill target/port/baud/host from --board; explicit flags win."""
    from compiler.errors import BadInput
    from compiler.hil.lab import load_board

    if args.board:
        board = load_board(args.board, args.lab)
        if args.target and args.target != board.target:
            raise BadInput(f"--board {board.name} is a {board.target}, not a {args.target}")
        args.target = board.target
        for key in ("port", "baud", "host", "remote_port"):
            if hasattr(args, key) and getattr(args, key) is None and getattr(board, key) is not None:
                if key == "port" and getattr(args, "emulate", False):
                    continue
                setattr(args, key, getattr(board, key))
    if not args.target:
        raise BadInput("give --target (or --board with a lab file)")


def _cmd_targets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from compiler.targets import list_targets, target_status

    rows = []
    for target in list_targets():
        rows.append({"name": target.name, "description": target.description, **target_status(target)})
    table = Table(title="mfnc targets")
    for column in ("target", "status", "backends", "emulated by", "notes"):
        table.add_column(column)
    colour = {"emulated": "green", "supported": "cyan", "unsupported": "red"}
    for row in rows:
        status = f"[{colour.get(row['status'], 'white')}]{row['status']}[/]"
        table.add_row(
            row["name"], status, ", ".join(row["backends"]) or "-", row.get("emulation") or "-", row.get("reason", "")
        )
    ui.console.print(table)
    ui.emit_json(args.json, {"targets": rows})
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rich.table import Table

    from compiler.frontend import load_model
    from compiler.passes import apply_passes
    from compiler.summary import summarize

    if args.model.endswith(".mfnq"):
        return _inspect_quantized(args)
    with ui.step(f"ingesting {args.model}"):
        model = load_model(args.model)
    summary = summarize(apply_passes(model.graph))
    summary["model"] = model.name
    summary["sha256"] = model.sha256
    table = Table(title=f"{model.name}  (after BatchNorm folding)")
    for column, justify in (
        ("#", "right"),
        ("layer", "left"),
        ("op", "left"),
        ("kernel", "left"),
        ("in", "left"),
        ("out", "left"),
        ("params", "right"),
        ("MACs", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for i, row in enumerate(summary["layers"]):
        if not args.all and not row["macs"]:
            continue
        shape = lambda s: "x".join(str(d) for d in s[1:])  # noqa: E731
        kernel = "x".join(str(k) for k in row.get("kernel", [])) or "-"
        table.add_row(
            str(i),
            row["name"],
            row["kind"],
            kernel,
            shape(row["input_shape"]),
            shape(row["output_shape"]),
            f"{row['params']:,}",
            f"{row['macs']:,}",
        )
    ui.console.print(table)
    ui.info(
        f"total: {summary['params']:,} params ({summary['params'] / 1e6:.3f} M), "
        f"{summary['macs']:,} MACs ({summary['macs'] / 1e6:.1f} M)"
    )
    ui.emit_json(args.json, summary)
    return 0


def _inspect_quantized(args: argparse.Namespace) -> int:
    from rich.table import Table

    from calibration import qgraph as qformat

    summary = qformat.summarize(qformat.load(Path(args.model)))
    table = Table(title=f"{summary['model']}  (int8, {summary['mode']} mode)")
    for column in ("#", "layer", "op", "activation", "out", "dtype", "scale", "zero point", "params"):
        table.add_column(column)
    for i, row in enumerate(summary["layers"]):
        out = "x".join(str(d) for d in row["output_shape"][1:])
        table.add_row(
            str(i),
            row["name"],
            row["kind"],
            row["activation"],
            out,
            row["dtype"],
            f"{row['scale']:.5g}",
            str(row["zero_point"]),
            f"{row['params']:,}",
        )
    ui.console.print(table)
    ui.info(
        f"total: {summary['params']:,} params, {summary['macs'] / 1e6:.1f} M MACs, "
        f"{summary['weight_bytes']:,} weight bytes; int16 tensors: {', '.join(summary['int16_tensors']) or 'none'}"
    )
    ui.emit_json(args.json, summary)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from compiler.build import BuildOptions, build, gate_error
    from compiler.report_view import print_build_report

    report = build(
        BuildOptions(
            args.target,
            args.model,
            args.backend,
            args.preprocess,
            args.out,
            _quantize_options(args),
            args.tuning_db,
            args.rknn_sdk,
        )
    )
    print_build_report(report)
    ui.emit_json(args.json, report)
    error = gate_error(report)
    if error is not None:
        raise error
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from compiler.tune_cmd import TuneOptions, print_tune_report, tune_model

    opts = TuneOptions(
        args.target,
        args.model,
        args.preprocess,
        _quantize_options(args),
        args.trials,
        args.rpc,
        args.key,
        args.emulate,
        args.rpc_timeout,
        args.import_db,
        args.export_db,
        args.tuning_db,
    )
    result = tune_model(opts)
    print_tune_report(result)
    ui.emit_json(args.json, result)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from compiler.quantize_cmd import quantize_model

    result = quantize_model(args.model, args.preprocess, _quantize_options(args), args.out, args.tflite, args.qdq)
    ui.emit_json(args.json, result)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from compiler.evaluate import EvalOptions, evaluate, print_eval_table, write_plot

    opts = EvalOptions(
        args.model, args.faces, args.synthetic, args.pairs, args.preprocess, args.flip, args.limit, args.plot
    )
    result, scores, same = evaluate(opts)
    print_eval_table(result)
    if args.plot is not None:
        write_plot(args.plot, scores, same, f"{result['model']} on {result['source']}")
        ui.info(f"plot written to {args.plot}")
    ui.emit_json(args.json, result)
    return 0


def _cmd_flash(args: argparse.Namespace) -> int:
    import shlex

    from compiler.flash import FlashOptions, flash

    _board_defaults(args)
    opts = FlashOptions(args.target, args.build, args.host, args.remote_port, args.emulate, args.stop, args.dry_run)
    result = flash(opts)
    if args.json != "-":  # stdout carries the result for scripts: the URL, or the commands
        for cmd in result.get("commands", []) if result.get("dry_run") else []:
            print(shlex.join(cmd))
        if "url" in result:
            print(result["url"])
    ui.emit_json(args.json, result)
    return 0


def _cmd_hil(args: argparse.Namespace) -> int:
    from compiler.hil.check import HilOptions, failures, hil_failed, junit_cases, run_hil
    from compiler.hil.junit import junit_xml
    from compiler.hil.report import print_hil_report

    _board_defaults(args)
    opts = HilOptions(
        args.target,
        args.port,
        args.emulate,
        args.build,
        args.faces,
        args.synthetic,
        args.limit,
        args.pairs,
        args.warmup,
        args.repeat,
        args.per_layer,
        args.baud,
        args.min_cosine,
        args.run_timeout,
    )
    result = run_hil(opts)
    problems = failures(result, opts)
    result["passed"] = not problems
    result["failures"] = problems
    print_hil_report(result)
    if args.junit:
        cases = [*junit_cases(result), ("checks", "; ".join(problems) or None)]
        ui.write_atomic(args.junit, junit_xml(f"mfnc.hil.{result['target']}", cases, result["seconds"]))
    ui.emit_json(args.json, result)
    if problems:
        raise hil_failed(problems, result["target"])
    return 0


COMMANDS = {
    "targets": _cmd_targets,
    "inspect": _cmd_inspect,
    "build": _cmd_build,
    "tune": _cmd_tune,
    "quantize": _cmd_quantize,
    "eval": _cmd_eval,
    "flash": _cmd_flash,
    "hil": _cmd_hil,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MfncError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # our bug: say so in one line, keep the traceback behind --debug
        if args.debug:
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it", file=sys.stderr)
        return 1
