"""report.html: the build report for people, with plots (the JSON stays the source of truth)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np


def _figure_png(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=90)
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _layer_plot(layers: list[dict]) -> str:
    def draw(ax):
        ordered = sorted(layers, key=lambda r: r["layer"])
        x = np.arange(len(ordered))
        ax.plot(x, [1 - r["cosine_entire"] for r in ordered], ".-", label="entire (accumulated)")
        ax.plot(x, [1 - r["cosine_single"] for r in ordered], ".-", label="single (float inputs)")
        ax.set_yscale("log")
        ax.set_xlabel("quantized op (execution order)")
        ax.set_ylabel("1 - cosine vs float")
        ax.legend()

    return _figure_png(draw)


def _cosine_plot(cosines: list[float]) -> str:
    def draw(ax):
        ax.hist(cosines, bins=30)
        ax.set_xlabel("cosine(int8 embedding, float embedding)")
        ax.set_ylabel("held-out images")

    return _figure_png(draw)


def _roc_plot(roc: dict) -> str:
    def draw(ax):
        for name, points in roc.items():
            pts = np.asarray(points)
            ax.plot(np.maximum(pts[:, 0], 1e-5), pts[:, 1], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        ax.legend()

    return _figure_png(draw)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _memory_section(report: dict) -> list[str]:
    """Memory from the plan and the linker map, and the device program."""
    memory = report.get("memory")
    if not memory or "arena_bytes" not in memory:
        return []
    rows = [["activation arena (plan)", f"{memory['arena_bytes']:,} B"]]
    rows.append(["constants (weights, biases, multipliers)", f"{memory['weights_bytes']:,} B"])
    if "flash_bytes" in memory:
        rows += [
            ["flash (linker map: code + constants + data)", f"{memory['flash_bytes']:,} B"],
            ["RAM (linker map: data + bss + arena + stack)", f"{memory['ram_bytes']:,} B"],
        ]
    for key, label in (("arena_limit_bytes", "arena limit"), ("weights_limit_bytes", "flash limit")):
        if key in memory:
            rows.append([label, f"{memory[key]:,} B"])
    c = report.get("c", {})
    plan = c.get("arena_plan")
    if plan:
        fused = ", ".join("+".join(pair) for pair in plan["fused_pairs"]) or "none"
        rows += [
            ["arena without fusion", f"{plan['unfused_arena_bytes']:,} B"],
            ["fused pairs (ring buffer)", f"{fused} ({plan['scratch_bytes']:,} B)"],
            ["layers computed in place", str(plan["in_place"])],
        ]
    if c.get("host_check"):
        check = c["host_check"]
        rows.append(["host run bit-exact", f"{check['bit_exact']}/{check['n_inputs']}"])
    if c.get("firmware"):
        rows.append(["device program", c["firmware"]["program"]])
    return ["<h2>Memory and device program</h2>", _table(rows, ["", ""])]


def render_html(report: dict) -> str:
    model, q = report["model"], report.get("quantization", {})
    parts = [
        f"<h1>mfnc build: {html.escape(model['name'])} for {html.escape(report['target'])}</h1>",
        f"<p>backend <b>{html.escape(report['backend'])}</b> ({html.escape(report['backend_reason'])}); "
        f"{model['params']:,} parameters, {model['macs'] / 1e6:.1f} M MACs; sha256 <code>{model['sha256']}</code></p>",
        "<h2>Graph passes</h2>",
        _table([[p["name"], f"{p['max_rel_err']:.2e}"] for p in report["passes"]], ["pass", "max|a-b|/max|b|"]),
    ]
    if q and q.get("recorded"):
        parts += [
            "<h2>int8 quantization</h2>",
            f"<p>loaded from a quantized model file; recorded mean cosine {q.get('mean_cosine')}</p>",
        ]
    elif q:
        verdict = "passed" if q["passed"] else "FAILED: " + "; ".join(q["gate"]["failures"])
        rows = [
            ["mode", q["mode"]],
            ["algorithm", q["algorithm"]],
            ["calibration images", f"{q['n_calib']} ({q['calib_source']})"],
            ["held-out images", f"{q['n_eval']} ({q['eval_source']})"],
            ["mean / min cosine", f"{q['mean_cosine']:.4f} / {q['min_cosine']:.4f}"],
            ["gate", verdict],
        ]
        if "float" in q:
            rows += [
                ["AUC float / int8", f"{q['float']['auc']:.4f} / {q['int8']['auc']:.4f}"],
                [
                    "threshold at FAR 1e-3 float / int8",
                    f"{q['float']['threshold_at_far_1e-3']} / {q['int8']['threshold_at_far_1e-3']}",
                ],
            ]
        parts += ["<h2>int8 quantization</h2>", _table(rows, ["", ""]), _cosine_plot(q["cosines"])]
        if "roc" in q:
            parts.append(_roc_plot(q["roc"]))
        if "ladder" in q:  # the NPU backend: every conversion tried, in order
            parts.append(
                _table(
                    [
                        [r["step"], f"{r['mean_cosine']:.4f}", f"{r['min_cosine']:.4f}", "yes" if r["passed"] else "no"]
                        for r in q["ladder"]
                    ],
                    ["rknn-toolkit2 conversion", "mean cosine", "min cosine", "passes the gate"],
                )
            )
        if "layers" in q:
            parts += [
                "<h3>Per-layer error</h3>",
                _layer_plot(q["layers"]),
                _table(
                    [
                        [r["layer"], r["op"], f"{r['cosine_single']:.5f}", f"{r['cosine_entire']:.5f}"]
                        for r in q["layers"][:10]
                    ],
                    ["worst layers", "op", "cosine single", "cosine entire"],
                ),
            ]
    parts += _memory_section(report)
    style = (
        "body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mfnc report</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
