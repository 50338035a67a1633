"""How peers.py reads compare.sh's work folder and how report.py turns runs into peers.md and peers.svg.

    .venv/bin/python -m pytest benches/peers

Needs no peers toolkit: the work folder and compare.sh's summary lines are written here in the formats that
../shared/bench/compare/loadgen.py, compare.sh and pa_summary.py produce.
"""

import xml.etree.ElementTree as ET

import peers
import report


def write_log(path, times_us, failed=0):
    rows = [f"{1_700_000_000_000_000 + i}\t200\t{t}\n" for i, t in enumerate(times_us)]
    rows += [f"{1_700_000_000_000_000}\t-1\t5\n"] * failed
    path.write_text("".join(rows))


def test_percentiles_are_nearest_rank_over_answered_requests(tmp_path):
    log = tmp_path / "x.h2log"
    write_log(log, list(range(100, 0, -1)), failed=3)  # out of order, as with several h2load threads
    assert peers.percentiles(log) == (50.0, 99.0)
    write_log(log, [7])
    assert peers.percentiles(log) == (7.0, 7.0)
    write_log(log, [], failed=2)
    assert peers.percentiles(log) is None
    assert peers.percentiles(tmp_path / "missing.h2log") is None


def test_rows_take_h2load_percentiles_from_its_log(tmp_path):
    (tmp_path / "pa").mkdir()
    (tmp_path / "results.tsv").write_text(
        "ferry\tmlp_small\t32\t1\tOK\t18538.2\t1500\t3800\t0.62\n"  # perf_analyzer: p99 given
        "triton\tmlp_small\t32\t1\tOK\t21570\t1400\t-1\t0.28\n"  # h2load: mean as p50, no p99
        "ferry\tmlp_small\t32\t2\tOK\t10681\t2910\t-1\t0.17\n"  # h2load, log missing
        "inproc\tmlp_big\t64\t1\tOK\t789\t76600\t0\t0\n"
        "triton\tmlp_small\t32\t2\tFAIL\tthe server exited during the run (h2load rc=1)\n")
    write_log(tmp_path / "pa" / "triton.mlp_small.c32.r1.h2log", [1000] * 98 + [5000, 9000])
    rows = peers.read_rows(tmp_path)
    assert [(r.label, r.round, r.ok) for r in rows] == [
        ("ferry", 1, True), ("triton", 1, True), ("ferry", 2, True), ("inproc", 1, True), ("triton", 2, False)]
    pa, h2, nolog, inproc, failed = rows
    assert (pa.p50_us, pa.p99_us, pa.latency_from) == (1500, 3800, "perf_analyzer")
    assert (h2.p50_us, h2.p99_us, h2.latency_from) == (1000, 5000, "h2load log")
    assert (nolog.p50_us, nolog.p99_us) == (-1, -1) and "no h2load log" in nolog.latency_from
    assert inproc.p99_us == -1 and inproc.throughput == 789
    assert failed.why.startswith("the server exited")


def run_of(check, rows, summary, rc=0):
    return peers.Run(check, "cmd", rc, 10.0, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), summary=summary, rows=rows)


def row(label, conc, thr, p99, model="mlp_small"):
    return peers.Row(label, model, conc, 1, True, thr, p99 / 2, p99, 0.2, "h2load log")


def test_report_quotes_the_gate_and_plots_three_lines_per_panel():
    fixed, swept = peers.checks("../shared/bench", [1, 32])
    vs_limit = next(c for c in fixed if c.key == "vs-limit")
    gate_run = run_of(vs_limit, [row("ferry", 64, 638, 152_000, "mlp_big"), row("inproc", 64, 789, -1, "mlp_big")],
                      ["ferry/inproc mlp_big c=64: 0.81 of the limit (ferry 638/s p99 n/a, in-process ORT batch 64 "
                       "x 2 threads 789 rows/s; h2load took 0.02 of 2 cores, 0.82 of what the rest allows) "
                       "[per round 0.81; need adjusted >= 0.9: FAIL]"], rc=1)
    sweep_runs = []
    for check in swept:
        ferry = row("ferry", check.concurrency, 1000 * check.concurrency, 900)
        # no limit measurement at 32, and no p99 for it at 1 (h2load's log missing): both stay out of the plot
        p99 = -1 if check.key == "sweep-limit-c1" else 1200
        other = [] if check.key == "sweep-limit-c32" else [row("triton", check.concurrency, 500, p99)]
        sweep_runs.append(run_of(check, [ferry] + other, []))
    points = report.sweep_points(sweep_runs, [1, 32])
    info = {"cores": 2, "load_before": (0.1, 0.1, 0.1), "load_after": (0.2, 0.2, 0.2), "date": "d", "commit": "c",
            "cpu": "cpu", "memory_gib": 8, "kernel": "k", "triton": "2.51.0", "perf_analyzer": "pa",
            "h2load": "h2", "onnxruntime": "1"}
    triton = next(c for c in fixed if c.key == "triton")
    failed_run = run_of(triton, [row("ferry", 32, 639, 146_000, "mlp_big"),
                                 peers.Row("triton", "mlp_big", 32, 1, False, why="perf_analyzer rc=2: unstable")],
                        ["ferry/triton mlp_small c=32: 1.56x (...) [per round 1.56; need >= 2x: FAIL]"], rc=1)
    md = report.markdown(info, [gate_run, failed_run], sweep_runs, points, "", True)
    assert "| triton | mlp_big | 32 | Ferry | 639 | 146.00 | Triton | – | – | – | not gated " \
           "| no result: Triton: perf_analyzer rc=2: unstable |" in md
    assert "| vs-limit | mlp_big | 64 | Ferry | 638 | 152.00 | in-process ORT | 789 | – | 0.81 (0.82 adjusted) " \
           "| adjusted ≥ 0.9 | FAIL |" in md
    assert "| 32 | 32,000 | 500 | 64.00 | 0.90, 1.20 | 32,000 | – | – | 0.90, – |" in md
    assert "| 1 | 1,000 | 500 | 2.00 | 0.90, 1.20 | 1,000 | 500 | 2.00 | 0.90, – |" in md
    assert "Noise" not in md, "a machine quiet before the run gets no noise warning"
    busy = report.markdown({**info, "load_before": (3.5, 3.0, 2.0)}, [gate_run], [], [], "", False)
    assert "**Noise:** the 1-minute load average was 3.50 on 2 cores" in busy
    assert "peers.svg" not in busy, "no sweep, no plot"
    svg = report.svg(points)
    root = ET.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 5, "Ferry and Triton in both panels, the limit only where it was measured"
    limit_points = [ln.get("points").split() for ln in lines if ln.get("stroke-dasharray")]
    assert [len(p) for p in limit_points] == [1], "the limit's throughput at 1 in flight, and nothing else"
    assert "loopback limit (bare tonic) (not measured)" in svg
