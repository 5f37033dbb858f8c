"""The human view of a `hil` result (stderr); the JSON is the machine's."""

from __future__ import annotations

from rich.table import Table

from compiler import ui


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.4g}{unit}"


def print_hil_report(result: dict) -> None:
    table = Table(title=f"HIL: {result['target']} ({result['backend']}, {result['transport']})", show_header=False)
    table.add_column("what")
    table.add_column("value")
    exact = f"{result['bit_exact']}/{result['n_inputs']}" if result["bit_exact"] is not None else "n/a"
    colour = "green" if result["bit_exact"] == result["n_inputs"] else "red"
    table.add_row("bit-exact with the golden", f"[{colour}]{exact}[/]")
    cos = result["cosine_vs_float"]
    table.add_row("cosine vs float (mean / min)", "-" if cos is None else f"{cos['mean']:.4f} / {cos['min']:.4f}")
    lat = result["latency"]
    table.add_row(f"latency median / p90 ({lat['unit']})", f"{_num(lat['median'])} / {_num(lat['p90'])}")
    link = result["link"]
    speed = link["bytes_per_s"]
    table.add_row(
        "link",
        f"{_num(speed / 1024 if speed else None)} KiB/s upload, {link['retries']} retries, "
        f"{link['device_resets']} device resets, {link['damaged_frames']} damaged frames",
    )
    ver = result.get("verification")
    if ver:
        thr = ver.get("threshold_at_far_1e-3")
        table.add_row(
            "verification (device embeddings)",
            f"AUC {ver['auc']:.4f}, accuracy {ver['accuracy']:.4f}, threshold@FAR1e-3 "
            f"{'-' if thr is None else f'{thr:.4f}'} ({ver['n_pairs']} pairs)",
        )
    device = result["device"]
    table.add_row("device", f"{device.get('firmware')} arena {int(device.get('arena_bytes', 0)):,} B")
    ui.console.print(table)
    layers = result.get("per_layer") or []
    if layers:
        total = sum(row["count"] for row in layers) or 1
        slowest = sorted(layers, key=lambda row: -row["count"])[:5]
        ui.info(
            "slowest layers: "
            + ", ".join(f"{row['layer']} {100 * row['count'] / total:.1f}%" for row in slowest)
            + " (all of them in the JSON)"
        )
    for problem in result.get("failures", []):
        ui.warn(problem)
