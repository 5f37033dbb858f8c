"""Human rendering of a build report (the JSON is the source of truth)."""

from __future__ import annotations

from rich.table import Table

from compiler import ui


def print_build_report(report: dict) -> None:
    model = report["model"]
    ui.info(
        f"[bold]mfnc build[/bold]  target [bold]{report['target']}[/bold]  backend {report['backend']} "
        f"({report['backend_reason']})"
    )
    ui.info(
        f"model {model['name']}  sha256 {model['sha256'][:16]}  {model['params']:,} params  "
        f"{model['macs'] / 1e6:.1f} M MACs  input {'x'.join(map(str, model['input_shape']))}"
    )
    pre = report["preprocess"]
    ui.info(
        f"preprocess {pre['spec']} ({pre['order']}, mean {_fmt(pre['mean'])}, std {_fmt(pre['std'])}) "
        f"folded into {pre['folded_into']}"
    )
    if report["passes"]:
        table = Table(title="graph passes (max|a-b|/max|b| vs onnxruntime)")
        table.add_column("pass")
        table.add_column("ops changed")
        table.add_column("max rel err", justify="right")
        for rec in report["passes"]:
            if "ops" in rec:
                changed = ", ".join(f"{op} x{count}" for op, count in rec["ops"].items())
            else:
                changed = ", ".join(f"{op} {a}->{b}" for op, (a, b) in rec["ops_changed"].items()) or "-"
            table.add_row(rec["name"], changed, f"{rec['max_rel_err']:.2e}")
        ui.console.print(table)
    q = report.get("quantization")
    if q and q.get("recorded"):
        ui.info(
            f"int8 ({q.get('mode')}, {q.get('algorithm')}) loaded from a quantized model file; recorded cosine vs "
            f"float mean {q.get('mean_cosine', float('nan')):.4f} min {q.get('min_cosine', float('nan')):.4f}"
        )
    elif q:
        verdict = "[green]passed[/green]" if q["passed"] else "[red]FAILED[/red] " + "; ".join(q["gate"]["failures"])
        ui.info(
            f"int8 ({q['mode']}, {q['algorithm']}, {q['n_calib']} calibration images from {q['calib_source']}): "
            f"cosine vs float mean {q['mean_cosine']:.4f} min {q['min_cosine']:.4f} on {q['n_eval']} held-out "
            f"images ({q['eval_source']}); gate {verdict}"
        )
        if "float" in q:
            ui.info(f"verification AUC float {q['float']['auc']:.4f} -> int8 {q['int8']['auc']:.4f}")
        if q["int16"]["tensors"]:
            ui.info(f"int16 tensors: {', '.join(q['int16']['tensors'])} (+{q['int16']['extra_bytes']:,} B)")
        if q["worst_layers"]:
            ui.info(f"worst layers: {', '.join(q['worst_layers'][:3])}")
    memory = report.get("memory")
    if memory and "library_bytes" in memory:
        tvm = report.get("tvm", {})
        if tvm.get("tuned"):
            kernels, tuning = tvm["kernels"], tvm["tuning"]
            state = (
                f"tuned: {kernels['scheduled']} of {kernels['total']} kernels scheduled from "
                f"{tuning['trials']} trials on {tuning['measured_on']}"
            )
        else:
            state = "untuned"
        ui.info(f"TVM: model library {memory['library_bytes']:,} B ({state})")
    if memory and "arena_bytes" in memory:
        line = f"C runtime: arena {memory['arena_bytes']:,} B, constants {memory['weights_bytes']:,} B"
        if "flash_bytes" in memory:
            line += f"; linker map: flash {memory['flash_bytes']:,} B, RAM {memory['ram_bytes']:,} B"
        ui.info(line)
    section = report.get("c") or report.get("tvm") or {}
    plan = section.get("arena_plan")
    if plan:
        fused = ", ".join("+".join(pair) for pair in plan["fused_pairs"]) or "none"
        ui.info(
            f"memory plan: {plan['unfused_arena_bytes']:,} B without fusion; fused {fused} "
            f"(ring {plan['scratch_bytes']:,} B), {plan['in_place']} layers in place"
        )
    firmware = section.get("firmware")
    if firmware:
        ui.info(f"device program: {firmware['program']}")
    elif section.get("firmware_note"):
        ui.info(section["firmware_note"])
    check = section.get("host_check")
    if check:
        ui.info(f"host run: {check['bit_exact']}/{check['n_inputs']} outputs bit-exact with the golden simulator")
    ui.info(f"artifact: {report.get('out')}")
    for note in report.get("notes", []):
        ui.info(f"note: {note}")


def _fmt(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)
