"""peers.md and peers.svg from the runs of peers.py: every figure comes from the runs' rows and output."""

import math
import re
from html import escape

COLORS = {"Ferry": "#1f77b4", "Triton": "#ff7f0e", "limit": "#555555"}


def per_s(row):
    return f"{row.throughput:,.0f}" if row else "–"


def ms(us):
    return f"{us / 1000:.2f}" if us is not None and us >= 0 else "–"


def ratio(a, b):
    return f"{a.throughput / b.throughput:.2f}" if a and b and b.throughput > 0 else "–"


def gated_line(run):
    """compare.sh's verdict line: the one that names the gate ("need ...: PASS|FAIL")."""
    return next((ln for ln in run.summary if re.search(r"need .*: (PASS|FAIL)", ln)), "")


def sweep_points(sweep_runs, sweep):
    """Per concurrency: the best round of each side in the run against Triton and in the run against the limit."""
    points = []
    for c in sweep:
        vs_triton = next((r for r in sweep_runs if r.check.key == f"sweep-triton-c{c}"), None)
        vs_limit = next((r for r in sweep_runs if r.check.key == f"sweep-limit-c{c}"), None)
        point = {"c": c}
        for name, run in (("t", vs_triton), ("l", vs_limit)):
            point[f"ferry_{name}"] = run.best("ferry", "mlp_small") if run else None
            point[f"other_{name}"] = run.best("triton", "mlp_small") if run else None
        ferries = [r for r in (point["ferry_t"], point["ferry_l"]) if r]
        # the plot's Ferry line: its best round at this concurrency, whichever run it came from
        point["ferry"] = max(ferries, key=lambda r: r.throughput) if ferries else None
        points.append(point)
    return points


def markdown(info, fixed_runs, sweep_runs, points, note, has_sweep):
    cores = info["cores"]
    lb, la = info["load_before"], info["load_after"]
    out = [
        "# Side-by-side checks: Ferry, tritonserver, in-process ONNX Runtime and the loopback limit",
        "",
        f"Made by `make bench-peers` (`benches/peers/peers.py`, which runs the checks of `../shared/bench/compare/`) "
        f"on {info['date']}, commit `{info['commit'] or 'unknown'}`.",
        "",
    ]
    if note:
        out += [f"**Note:** {note}", ""]
    # before the first check nothing of this run is running: what the load average shows is other work
    if lb[0] >= 0.5:
        out += [f"**Noise:** the 1-minute load average was {lb[0]:.2f} on {cores} cores before the run started: "
                "other work shared the machine, so the figures are noisier than on an idle one. Compare ratios "
                "measured in one run, not absolute figures across runs.", ""]
    out += [
        "## Machine and tools",
        "",
        "| CPU | cores | memory | kernel | load average before (1, 5, 15 min) | after |",
        "|---|---:|---:|---|---|---|",
        f"| {info['cpu']} | {cores} | {info['memory_gib']:.0f} GiB | {info['kernel']} | "
        f"{', '.join(f'{x:.2f}' for x in lb)} | {', '.join(f'{x:.2f}' for x in la)} |",
        "",
        f"tritonserver {info['triton'] or '(version not found in its log)'} (the `nvidia-pytriton` wheel, python "
        f"backend running the same `model.onnx` on onnxruntime); {info['perf_analyzer'] or 'perf_analyzer'}; "
        f"{info['h2load'] or 'h2load'}; Ferry's ONNX Runtime {info['onnxruntime'] or '(unknown)'}. "
        "Each figure is the best round of its side (compare.sh's rule: outside work only ever slows a run down); "
        "p50 and p99 come from perf_analyzer, or from h2load's per-request log (`--log-file`, added by "
        "`benches/peers/bin/h2load`).",
        "",
    ]
    if fixed_runs:
        out += ["## Checks", "",
                "| check | model | in flight | side A | A per s | A p99 ms | side B | B per s | B p99 ms | A / B "
                "| gate | result |",
                "|---|---|---:|---|---:|---:|---|---:|---:|---:|---|---|"]
        for run in fixed_runs:
            out += summary_rows(run)
        out.append("")
    if has_sweep:
        out += [
            "## Concurrency sweep (mlp_small, batch 1, h2load)",
            "",
            "![throughput and p99 against concurrency: Ferry, Triton and the loopback limit](peers.svg)",
            "",
            "At each concurrency two runs: Ferry then Triton, and Ferry then the loopback limit (a bare tonic "
            "server with a canned mlp_small reply, `../shared/bench/ceiling/`). Ratios are within one run; the "
            "plot's Ferry line is Ferry's best round at that concurrency from either run.",
            "",
            "| in flight | Ferry req/s | Triton req/s | Ferry / Triton | p99 ms Ferry, Triton "
            "| Ferry req/s | limit req/s | Ferry / limit | p99 ms Ferry, limit |",
            "|---:|---:|---:|---:|---|---:|---:|---:|---|",
        ]
        for p in points:
            ft, t, fl, lim = p["ferry_t"], p["other_t"], p["ferry_l"], p["other_l"]
            out.append(f"| {p['c']} | {per_s(ft)} | {per_s(t)} | {ratio(ft, t)} | "
                       f"{ms(ft.p99_us if ft else None)}, {ms(t.p99_us if t else None)} | {per_s(fl)} | "
                       f"{per_s(lim)} | {ratio(fl, lim)} | {ms(fl.p99_us if fl else None)}, "
                       f"{ms(lim.p99_us if lim else None)} |")
        out.append("")
    out += ["## Runs in detail", "",
            "Each run is one `compare.sh` invocation from the project root, with the command shown exactly; "
            "h2load rows give the mean as p50 in compare.sh's own summary, and the log's p50 here.", ""]
    for run in fixed_runs + sweep_runs:
        out += detail(run)
    return "\n".join(out).rstrip() + "\n"


def summary_rows(run):
    line = gated_line(run)
    need = re.search(r"need (.*?): (PASS|FAIL)", line)
    gated_model = re.search(r"(\w+) c=\d+:", line)
    adjusted = re.search(r"([\d.]+) of what the rest allows", line)
    la, lb = run.check.labels
    na, nb = run.check.names
    rows = []
    models = sorted({r.model for r in run.rows}) or ["–"]
    for model in models:
        a, b = run.best(la, model), run.best(lb, model)
        conc = next((r.concurrency for r in run.rows if r.model == model), "–")
        value = ratio(a, b)
        if adjusted and gated_model and gated_model.group(1) == model:
            value += f" ({adjusted.group(1)} adjusted)"
        if gated_model and gated_model.group(1) == model and need:
            gate, result = need.group(1).replace(">=", "≥"), need.group(2)
        elif run.rc == 2 or not run.rows:
            gate, result = "–", f"could not run: {run.error}"
        else:
            failed = [f"{dict(zip(run.check.labels, run.check.names)).get(r.label, r.label)}: {r.why}"
                      for r in run.rows if r.model == model and not r.ok]
            gate, result = "not gated", ("no result: " + "; ".join(failed)) if not (a and b) and failed else "–"
        rows.append(f"| {run.check.key} | {model} | {conc} | {na} | {per_s(a)} | {ms(a.p99_us if a else None)} | {nb} "
                    f"| {per_s(b)} | {ms(b.p99_us if b else None)} | {value} | {gate} | {result} |")
    return rows


def detail(run):
    la, lb = run.check.labels
    names = dict(zip(run.check.labels, run.check.names))
    out = [
        f"### {run.check.title}",
        "",
        f"```sh\n{run.command}\n```",
        "",
        f"Exit {run.rc}, {run.seconds:.0f} s; load average {run.load_before[0]:.2f} before, "
        f"{run.load_after[0]:.2f} after." + (f" {run.header[0]}" if run.header else ""),
        "",
    ]
    if run.rows:
        out += ["| side | model | in flight | round | per s | p50 ms | p99 ms | latency from | load generator cores |",
                "|---|---|---:|---:|---:|---:|---:|---|---:|"]
        for r in sorted(run.rows, key=lambda r: (r.model, r.round, r.label != la, r.label != lb)):
            side = names.get(r.label, r.label)
            if r.ok:
                cores = f"{r.loadgen_cores:.2f}" if r.label != "inproc" else "–"
                out.append(f"| {side} | {r.model} | {r.concurrency} | {r.round} | {r.throughput:,.0f} | "
                           f"{ms(r.p50_us)} | {ms(r.p99_us)} | {r.latency_from} | {cores} |")
            else:
                out.append(f"| {side} | {r.model} | {r.concurrency} | {r.round} | failed: {r.why} | | | | |")
        out.append("")
    else:
        out += [f"No measurements: {run.error}", ""]
    if run.summary:
        relabel = " (it labels the loopback-limit server `triton`)" if "TRITON_START" in run.check.env else ""
        out += [f"compare.sh's summary{relabel}:", "", "```", *run.summary, "```", ""]
    return out


# ---------------------------------------------------------------------------------------------------------------
# SVG: the layout of benches/src/plot.rs (panels side by side, concurrency as categories, dashed references),
# with tick labels that also suit values below 1 (latencies in ms).

PANEL_W, PANEL_H, LEFT, TOP, PLOT_W, PLOT_H = 460, 330, 70, 40, 340, 200


def svg(points):
    xs = [str(p["c"]) for p in points]

    def series(attr, scale):
        lines = []
        for name, key, dashed in (("Ferry", "ferry", False), ("Triton", "other_t", False),
                                  ("limit", "other_l", True)):
            values = []
            for p in points:
                row = p[key]
                v = getattr(row, attr) if row else None
                values.append(v * scale if v is not None and v >= 0 else None)
            label = {"Ferry": "Ferry", "Triton": "tritonserver", "limit": "loopback limit (bare tonic)"}[name]
            lines.append((label, COLORS[name], dashed, values))
        return lines

    panels = [("mlp_small throughput, h2load", "requests/s", series("throughput", 1.0)),
              ("mlp_small p99 latency, h2load", "p99 ms", series("p99_us", 0.001))]
    width = PANEL_W * len(panels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{PANEL_H}" fill="white"/>']
    for i, (title, y_label, lines) in enumerate(panels):
        parts += panel(PANEL_W * i, title, y_label, xs, lines)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def panel(left, title, y_label, xs, lines):
    x0, y0 = left + LEFT, TOP
    top = 4 * tick_step(max([v for *_, values in lines for v in values if v is not None] + [0.0]))
    steps = max(len(xs), 2) - 1

    def x_at(i):
        return x0 + PLOT_W * i / steps

    def y_at(v):
        return y0 + PLOT_H * (1 - v / top)

    parts = [f'<text x="{x0}" y="20" font-size="13" font-weight="bold">{escape(title)}</text>',
             f'<rect x="{x0}" y="{y0}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#888"/>']
    for tick in range(5):
        v = top * tick / 4
        y = y_at(v)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PLOT_W}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{tick_label(v)}</text>')
    for i, label in enumerate(xs):
        parts.append(f'<text x="{x_at(i):.1f}" y="{y0 + PLOT_H + 16}" text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<text x="{x0 + PLOT_W / 2:.1f}" y="{y0 + PLOT_H + 32}" text-anchor="middle">'
                 "concurrency (requests in flight)</text>")
    parts.append(f'<text transform="translate({left + 14:.1f},{y0 + PLOT_H / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for row, (label, color, dashed, values) in enumerate(lines):
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        pts = [(x_at(i), y_at(v)) for i, v in enumerate(values) if v is not None]
        if pts:
            joined = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{joined}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        else:
            label += " (not measured)"
        ly = y0 + PLOT_H + 48 + 13 * row
        parts.append(f'<line x1="{x0}" y1="{ly - 4}" x2="{x0 + 20}" y2="{ly - 4}" stroke="{color}" '
                     f'stroke-width="2"{dash}/><text x="{x0 + 26}" y="{ly}">{escape(label)}</text>')
    return parts


def tick_step(peak):
    """The smallest round step (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) that fits the peak plus 5%
    in four ticks."""
    if peak <= 0:
        return 0.25
    want = peak * 1.05 / 4
    power = 10 ** math.floor(math.log10(want))
    return next(m * power for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * power >= want)


def tick_label(v):
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"
