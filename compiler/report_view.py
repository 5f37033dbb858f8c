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
    for note in report.get("notes", []):
        ui.info(f"note: {note}")


def _fmt(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)
