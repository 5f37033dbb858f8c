"""Turn a benchmark results JSON into `docs/benchmarks.md` with tables and PNG plots.

    python -m bench.report bench/results/<date>-<host>.json [--out docs/benchmarks.md]

The prose that does not depend on the numbers lives in `bench/benchmarks_intro.md`
(commands to reproduce, how to read each table); everything else is generated, so the
page always matches one run's JSON. Plots go next to the page, in `<page stem>/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler import ui

INTRO = Path(__file__).with_name("benchmarks_intro.md")
DEFAULT_QUANTIZER = "ours: mse, fused"  # what `build` uses; comparing our best row would be cherry-picking
ACCURACY_TIE = 0.0005  # mean-cosine differences below this are noise on ~145 faces


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _m(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f} M"


def _kib(v: float | None) -> str:
    return "-" if v is None else f"{v / 1024:,.0f} KiB"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _bar_plot(
    path: Path, title: str, labels: list[str], values: list[float], errors=None, xlabel: str = "", log: bool = False
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2), dpi=110)
    colors = ["#1f6feb" if label.startswith("ours") else "#8b949e" for label in labels]
    positions = range(len(labels))
    ax.barh(positions, values, xerr=errors, color=colors, capsize=3)
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _host(section: dict, plots: Path, rel: str) -> list[str]:
    lines = ["## 1. Host latency", ""]
    for model, data in section.items():
        for threads in (1, 2):
            table = data.get(f"threads_{threads}")
            if not table:
                continue
            rows = sorted(table["rows"].items(), key=lambda kv: kv[1]["median"])
            best = table.get("best_peer") or {}
            lines.append(
                f"**{model}, {threads} thread{'s' if threads > 1 else ''}** (ms per inference, median and "
                f"interquartile range of {data['rounds']} rounds x {data['runs_per_round']} runs; "
                f"best peer: {best.get('best_peer', '-')})"
            )
            lines.append("")
            lines += _table(
                ["engine", "median ms", "IQR ms", "runs", "vs best peer"],
                [
                    [n, _ms(r["median"]), f"{_ms(r['q1'])}-{_ms(r['q3'])}", str(r["runs"]), _x(r.get("vs_best_peer"))]
                    for n, r in rows
                ],
            )
            for name, why in table.get("skipped", {}).items():
                lines.append(f"- {name}: not measured: {why}")
            shown = [(n, r) for n, r in rows if not n.startswith("TFLite Micro")]
            png = plots / f"host-{model}-{threads}t.png"
            _bar_plot(
                png,
                f"{model}, {threads} thread(s): ms per inference (median, IQR)",
                [n for n, _ in shown],
                [r["median"] for _, r in shown],
                [
                    [max(0.0, r["median"] - r["q1"]) for _, r in shown],
                    [max(0.0, r["q3"] - r["median"]) for _, r in shown],
                ],
                "ms",
            )
            lines += [f"![{model} {threads} thread(s)]({rel}/{png.name})", ""]
        if data.get("tvm"):
            t = data["tvm"]
            k = t.get("kernels", {})
            lines.append(
                f"TVM: {t.get('trials', 0)} tuning trials in the database, {k.get('scheduled', '-')} of "
                f"{k.get('total', '-')} kernels scheduled."
            )
            lines.append("")
    return lines


def _instructions(section: dict, plots: Path, rel: str) -> list[str]:
    lines = ["## 2. Cortex-A72 instruction counts (qemu-aarch64, one inference)", ""]
    for model, data in section.items():
        a72 = data["cortex_a72"]
        rows: list[tuple[str, float | None, str]] = []
        c = a72.get("c_neon", {})
        if "optimised" in c:
            rows.append(
                ("ours: C runtime int8, NEON kernels", c["optimised"], "bit-exact" if c["bit_exact"] else "MISMATCH")
            )
            rows.append(("ours: C runtime int8, portable kernels", c["portable"], ""))
        tvm = a72.get("tvm", {})
        if "instructions" in tvm:
            note = "bit-exact" if tvm.get("bit_exact") else "MISMATCH"
            rows.append((f"ours: TVM int8 ({'tuned' if tvm.get('tuned') else 'untuned'})", tvm["instructions"], note))
        for peer in a72.get("peers", {}).get("rows", []):
            rows.append((peer["engine"], peer.get("instructions"), peer.get("error", "")))
        bound = a72["cycle_lower_bound"]
        lines.append(f"**{model}** ({data['macs'] / 1e6:.1f} M MACs)")
        lines.append("")
        measured = [(n, v, note) for n, v, note in rows if v]
        best_peer = min((v for n, v, _ in measured if not n.startswith("ours")), default=None)
        lines += _table(
            ["engine", "instructions", "per MAC", "vs best peer", "note"],
            [
                [
                    n,
                    _m(v),
                    "-" if not v else f"{v / data['macs']:.2f}",
                    _x(v / best_peer if v and best_peer else None),
                    note,
                ]
                for n, v, note in rows
            ],
        )
        lines.append(
            f"For context, not measured: one A72 needs at least {bound['int8'] / 1e6:.1f} M cycles in int8 "
            f"(8 MACs/cycle) and {bound['fp32'] / 1e6:.1f} M cycles in fp32 (4 FMAs/cycle) for this model."
        )
        for name, why in a72.get("peers", {}).get("skipped", {}).items():
            lines.append(f"- {name}: not measured: {why}")
        lines.append("")
        if measured:
            png = plots / f"a72-{model}.png"
            _bar_plot(
                png,
                f"{model}: Cortex-A72 instructions per inference (M)",
                [n for n, _, _ in measured],
                [v / 1e6 for _, v, _ in measured],
                xlabel="million instructions",
            )
            lines += [f"![{model} A72]({rel}/{png.name})", ""]
    lines += ["## 3. Cortex-M instruction counts (qemu-system-arm -icount shift=0)", ""]
    rows_m = []
    for model, data in section.items():
        for target, row in data["cortex_m"].items():
            if "optimised" not in row:
                rows_m.append([model, target, "-", "-", "-", "-", row.get("skipped", row.get("error", ""))])
                continue
            kernels = "Helium (MVE)" if target == "mps3-an547" else "DSP (SIMD32)"
            rows_m.append(
                [
                    model,
                    f"{target} ({kernels})",
                    _m(row["optimised"]),
                    f"{row['optimised_per_mac']:.2f}",
                    f"{_m(row['portable'])} ({row['portable_per_mac']:.2f}/MAC)",
                    _x(row["speedup"]),
                    "bit-exact" if row["bit_exact"] else "MISMATCH",
                ]
            )
    lines += _table(
        ["model", "board (our kernels)", "instructions", "per MAC", "portable C kernels", "speed-up", "output"], rows_m
    )
    return lines


def _memory(section: dict, plots: Path, rel: str) -> list[str]:
    lines = ["## 4. Memory (int8, same model)", ""]
    rows = []
    for model, data in section.items():
        ours, tflm, vela = data["ours"], data["tflite_micro"], data["vela"]
        rows.append(
            [
                model,
                f"{_kib(ours['arena_bytes'])} ({_kib(ours['unfused_arena_bytes'])} unfused)",
                _kib(ours["flash_bytes"]),
                _kib(tflm.get("arena_bytes")) if "arena_bytes" in tflm else tflm.get("error", "-"),
                _x(tflm["arena_bytes"] / ours["arena_bytes"]) if "arena_bytes" in tflm else "-",
                _kib(vela.get("sram_bytes")) if "sram_bytes" in vela else vela.get("error", "-"),
                _kib(vela.get("off_chip_flash_bytes")) if "sram_bytes" in vela else "-",
            ]
        )
        if "arena_bytes" in tflm and "sram_bytes" in vela:
            png = plots / f"memory-{model}.png"
            _bar_plot(
                png,
                f"{model}: activation memory (KiB)",
                [
                    "ours: C runtime arena",
                    "ours: arena without expand+depthwise fusion",
                    "TFLite Micro minimum arena",
                    "Vela SRAM (Ethos-U55-128)",
                ],
                [
                    ours["arena_bytes"] / 1024,
                    ours["unfused_arena_bytes"] / 1024,
                    tflm["arena_bytes"] / 1024,
                    vela["sram_bytes"] / 1024,
                ],
                xlabel="KiB",
            )
    lines += _table(
        ["model", "our arena", "our flash", "TFLite Micro min arena", "TFLM / ours", "Vela SRAM", "Vela flash"], rows
    )
    for model, data in section.items():
        v = data["vela"]
        if "cycles_estimate" in v:
            lines.append(
                f"- {model}: Vela ({v['accelerator']}, {v['system_config']}) estimates "
                f"{v['cycles_estimate'] / 1e6:.1f} M cycles ({v['inference_ms_estimate']} ms); "
                f"{'; '.join(v['operators'])}. An estimate, not a measurement."
            )
        if (plots / f"memory-{model}.png").exists():
            lines += ["", f"![{model} memory]({rel}/memory-{model}.png)"]
    return [*lines, ""]


def _accuracy(section: dict, plots: Path, rel: str) -> list[str]:
    lines = ["## 5. int8 accuracy vs float (held-out faces)", ""]
    for model, data in section.items():
        lines.append(f"**{model}** on {data['source']}")
        lines.append("")
        rows = []
        for r in data["rows"]:
            if "error" in r:
                rows.append([r["quantizer"], "-", "-", "-", "-", r["error"]])
                continue
            auc = "-" if r.get("auc_float") is None else f"{r['auc_float']:.4f} -> {r['auc_int8']:.4f}"
            drop = "-" if r.get("auc_drop") is None else f"{r['auc_drop']:+.4f}"
            note = f"{r['int16_tensors']} int16 tensors" if r.get("int16_tensors") else ""
            rows.append([r["quantizer"], f"{r['mean_cosine']:.4f}", f"{r['min_cosine']:.4f}", auc, drop, note])
        lines += _table(["quantizer", "mean cosine", "min cosine", "AUC float -> int8", "AUC drop", "note"], rows)
        ok = [r for r in data["rows"] if "mean_cosine" in r]
        if len(ok) > 1:
            slug = model.split()[0]
            png = plots / f"accuracy-{slug}.png"
            _bar_plot(
                png,
                f"{model}: 1 - mean cosine int8 vs float (lower is better)",
                [r["quantizer"] for r in ok],
                [max(1 - r["mean_cosine"], 1e-6) for r in ok],
                xlabel="1 - mean cosine (log scale)",
                log=True,
            )
            lines += [f"![{model} accuracy]({rel}/{png.name})", ""]
    return lines


def _compile(section: dict) -> list[str]:
    lines = ["## 6. Compile cost (`mfnc build`, wall seconds after setup)", ""]
    rows = []
    for model, items in section.items():
        for r in items:
            if "error" in r:
                rows.append([model, r["target"], r["backend"], "-", r["error"]])
            else:
                note = r.get("note") or (
                    "" if r.get("tuned") is None else ("tuned database applied" if r["tuned"] else "no database")
                )
                rows.append([model, r["target"], r["backend"], f"{r['seconds']:.1f}", note])
    return lines + _table(["model", "target", "backend", "seconds", "note"], rows)


def _machine(results: dict) -> list[str]:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    return [
        "## Machine",
        "",
        f"- {m['cpu']} ({m['arch']}), {m['cores']} cores, {m['memory_gb']} GB; vector extensions: "
        f"{', '.join(m['vector_flags']) or 'none listed'}; Linux {m['kernel']}; Python {m['python']}.",
        f"- Load average before / after: {m['load_average']} / {m.get('load_average_after', '-')}.",
        f"- {versions}.",
        f"- Run: `{results['command']}` on {results['date']}, {results['seconds'] / 60:.1f} min "
        f"({', '.join(f'{k} {v / 60:.1f}' for k, v in results.get('section_seconds', {}).items())}); "
        f"settings {results['settings']}.",
        *(
            f"- Rerun of {', '.join(r['sections'])}: `{r['command']}` on {r['date']}, load average "
            f"{r['machine']['load_average']} / {r.get('load_average_after', '-')}."
            for r in results.get("reruns", [])
        ),
        "",
    ]


def verdicts(sections: dict) -> tuple[list[str], list[str], list[str]]:
    """Plain statements of where we are behind, ahead of and level with the best peer, from the numbers."""
    behind: list[str] = []
    ahead: list[str] = []
    level: list[str] = []
    for model, data in sections.get("host", {}).items():
        for threads in (1, 2):
            rows = (data.get(f"threads_{threads}") or {}).get("rows", {})
            ours = {n: r["median"] for n, r in rows.items() if n.startswith("ours")}
            peers = {n: r["median"] for n, r in rows.items() if not n.startswith("ours")}
            if not ours or not peers:
                continue
            o, p = min(ours, key=ours.__getitem__), min(peers, key=peers.__getitem__)
            ours = {n.removeprefix("ours: "): v for n, v in ours.items()}
            o = o.removeprefix("ours: ")
            where = f"{model}, host latency, {threads} thread{'s' if threads > 1 else ''}"
            if peers[p] < ours[o]:
                behind.append(
                    f"{where}: {p} {peers[p]:.2f} ms is {ours[o] / peers[p]:.2f}x faster "
                    f"than our best ({o}, {ours[o]:.2f} ms)."
                )
            else:
                ahead.append(
                    f"{where}: our {o} {ours[o]:.2f} ms is {peers[p] / ours[o]:.2f}x faster "
                    f"than the best peer ({p}, {peers[p]:.2f} ms)."
                )
    for model, data in sections.get("instructions", {}).items():
        a72 = data["cortex_a72"]
        ours = {
            "C runtime, NEON": a72.get("c_neon", {}).get("optimised"),
            "TVM": a72.get("tvm", {}).get("instructions"),
        }
        ours = {n: v for n, v in ours.items() if v}
        peers = {r["engine"]: r["instructions"] for r in a72.get("peers", {}).get("rows", []) if r.get("instructions")}
        if ours and peers:
            o, p = min(ours, key=ours.__getitem__), min(peers, key=peers.__getitem__)
            where = f"{model}, Cortex-A72 instructions"
            if peers[p] < ours[o]:
                behind.append(
                    f"{where}: {p} needs {ours[o] / peers[p]:.2f}x fewer instructions "
                    f"than our {o} ({_m(peers[p])} vs {_m(ours[o])})."
                )
            else:
                ahead.append(
                    f"{where}: our {o} needs {peers[p] / ours[o]:.2f}x fewer instructions "
                    f"than {p} ({_m(ours[o])} vs {_m(peers[p])})."
                )
    for model, data in sections.get("memory", {}).items():
        ours, tflm = data["ours"]["arena_bytes"], data["tflite_micro"].get("arena_bytes")
        if tflm:
            (ahead if ours < tflm else behind).append(
                f"{model}, Cortex-M arena: ours {_kib(ours)} vs TFLite Micro's minimum "
                f"{_kib(tflm)} ({tflm / ours:.2f}x)."
            )
    for model, data in sections.get("accuracy", {}).items():
        rows = [r for r in data["rows"] if "mean_cosine" in r]
        default = next((r for r in rows if r["quantizer"] == DEFAULT_QUANTIZER), None)
        peers = [r for r in rows if not r["quantizer"].startswith("ours")]
        if default and peers:
            p = max(peers, key=lambda r: r["mean_cosine"])
            gap = default["mean_cosine"] - p["mean_cosine"]
            text = (
                f"{model}, int8 accuracy: our default quantizer (mse, fused) mean cosine "
                f"{default['mean_cosine']:.4f} vs the best peer, {p['quantizer']}, {p['mean_cosine']:.4f}"
            )
            if gap < -ACCURACY_TIE:
                behind.append(text + ".")
            elif gap > ACCURACY_TIE:
                ahead.append(text + ".")
            else:
                level.append(text + f": within {ACCURACY_TIE}.")
        broken = [r for r in rows if r["quantizer"].startswith("ours") and r["mean_cosine"] < 0.99]
        for r in broken:
            behind.append(
                f"{model}, int8 accuracy: our {r['quantizer'].removeprefix('ours: ')} reaches only "
                f"{r['mean_cosine']:.4f} mean cosine (every peer in the table does better)."
                if all(q["mean_cosine"] > r["mean_cosine"] for q in peers)
                else f"{model}, int8 accuracy: our {r['quantizer'].removeprefix('ours: ')} reaches only "
                f"{r['mean_cosine']:.4f} mean cosine."
            )
    return behind, ahead, level


def render(results: dict, docs: Path, json_path: Path) -> str:
    plots = docs.parent / docs.stem
    rel = docs.stem
    sections = results["sections"]
    intro = INTRO.read_text() if INTRO.exists() else "# Benchmarks\n"
    try:
        source = json_path.resolve().relative_to(docs.resolve().parents[1])
    except ValueError:
        source = json_path
    lines = [intro.rstrip(), "", f"Generated by `python -m bench.report {source}`: do not edit by hand.", ""]
    lines += _machine(results)
    for name, why in results.get("failed_sections", {}).items():
        lines += [f"**Section `{name}` failed in this run:** {why}", ""]
    behind, ahead, level = verdicts(sections)
    lines += ["## Where we are behind", ""] + ([f"- {v}" for v in behind] or ["- Nowhere in this run."]) + [""]
    lines += ["## Where we are ahead", ""] + ([f"- {v}" for v in ahead] or ["- Nowhere in this run."]) + [""]
    if level:
        lines += ["## Where we are level", "", *(f"- {v}" for v in level), ""]
    if "host" in sections:
        lines += _host(sections["host"], plots, rel)
    if "instructions" in sections:
        lines += _instructions(sections["instructions"], plots, rel)
    if "memory" in sections:
        lines += _memory(sections["memory"], plots, rel)
    if "accuracy" in sections:
        lines += _accuracy(sections["accuracy"], plots, rel)
    if "compile" in sections:
        lines += _compile(sections["compile"])
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict, docs: Path, json_path: Path) -> None:
    ui.write_atomic(docs, render(results, docs, json_path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = p.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {args.results}: {exc}", file=sys.stderr)
        return 2
    write_report(results, args.out, args.results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
