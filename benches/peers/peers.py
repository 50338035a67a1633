#!/usr/bin/env python3
"""Ferry side by side with tritonserver 2.51, in-process ONNX Runtime and the loopback limit.

    PEERS=$HOME/ferry-peers .venv/bin/python benches/peers/peers.py [--only CHECK,...] [--sweep 1,8,32,128]

Runs the checks of ../shared/bench/compare/compare.sh (read-only, shared with the peers toolkit) in each of its
modes, then a concurrency sweep on mlp_small under h2load (Ferry vs Triton and Ferry vs the loopback limit at each
concurrency), and writes benches/results/peers.md (the figures, ratios, gates, machine and exact commands) and
peers.svg (throughput and p99 against concurrency). `make bench-peers` runs it; not part of `make test` or CI.

Every check is one compare.sh run: it starts each server in turn on the same ports, measures it and stops it by
its PID. This script only chooses the knobs per check, keeps compare.sh's work folder (KEEP_WORK=1) to read its
results.tsv and logs, and removes that folder afterwards (--keep-work keeps it). compare.sh's own knobs pass
through from the environment: ROUNDS, PA_WINDOW_MS, PA_TRIALS, PA_STABILITY, PA_TIMEOUT, FERRY_START,
FERRY_FLAVOR, FERRY_ARGS, TRITON_ARGS, ORT_DYLIB_PATH, HTTP_PORT, GRPC_PORT, METRICS_PORT.
h2load runs through benches/peers/bin/h2load, which adds --log-file, so that h2load runs get a p50 and p99 too.

Exit: 0 when every gate held and every measurement succeeded; 1 otherwise; 2 when it cannot run at all.
"""

import argparse
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import report

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# compare.sh's knobs that pass through from the environment (and so belong in the recorded commands)
PASSED_KNOBS = ["ROUNDS", "PA_WINDOW_MS", "PA_TRIALS", "PA_STABILITY", "PA_TIMEOUT", "FERRY_START", "FERRY_FLAVOR",
                "FERRY_ARGS", "TRITON_ARGS", "ORT_DYLIB_PATH", "HTTP_PORT", "GRPC_PORT", "METRICS_PORT"]
# knobs each check sets itself: an inherited value would silently change what a check measures
CHECK_KNOBS = ["MODELS", "CONCURRENCY", "LOADGEN", "MIN_RATIO", "GATE", "TRITON_START", "KEEP_WORK"]
RUN_TIMEOUT_S = 3600  # one compare.sh run; its own pieces are bounded far below this
CEILING_BUILD_S = 1800


@dataclass
class Check:
    """One compare.sh run: its arguments, the knobs it sets, and how the report names its two sides."""
    key: str
    title: str
    args: list
    env: dict
    labels: tuple  # compare.sh's row labels: (side A, side B)
    names: tuple  # the report's names for them
    gated: bool = True
    concurrency: int = 0  # the sweep's concurrency; 0 for the fixed checks


@dataclass
class Row:
    """One measurement of compare.sh's results.tsv, with h2load's percentiles filled in from its log."""
    label: str
    model: str
    concurrency: int
    round: int
    ok: bool
    throughput: float = 0.0
    p50_us: float = -1.0
    p99_us: float = -1.0
    loadgen_cores: float = 0.0
    latency_from: str = ""
    why: str = ""


@dataclass
class Run:
    """What one check's run left: its command, exit status, rows, compare.sh's own summary and the load around it."""
    check: Check
    command: str
    rc: int
    seconds: float
    load_before: tuple
    load_after: tuple
    header: list = field(default_factory=list)
    summary: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    triton_version: str = ""
    error: str = ""

    def best(self, label, model):
        """The round with the highest throughput (compare.sh's rule: outside work only ever slows a run down)."""
        ok = [r for r in self.rows if r.label == label and r.model == model and r.ok]
        return max(ok, key=lambda r: r.throughput) if ok else None


def checks(bench_display, sweep):
    ceiling = f"{bench_display}/ceiling/start.sh"
    fixed = [
        Check("triton", "Ferry vs tritonserver 2.51, perf_analyzer, batch 1, 32 in flight", [],
              {"MIN_RATIO": "2.0"}, ("ferry", "triton"), ("Ferry", "Triton")),
        Check("limit", "Ferry vs the loopback limit, h2load, mlp_small, 32 in flight", [],
              {"LOADGEN": "h2load", "MODELS": "mlp_small", "MIN_RATIO": "0.7", "TRITON_START": ceiling},
              ("ferry", "triton"), ("Ferry", "limit")),
        Check("batching-off", "Ferry with dynamic batching vs without, perf_analyzer, mlp_big, 32 in flight",
              ["--batching-off"], {"MIN_RATIO": "3.0"}, ("ferry-batching", "ferry-nobatch"),
              ("batching on", "batching off")),
        Check("vs-limit", "Ferry vs in-process ONNX Runtime at batch 64, h2load, mlp_big, 64 in flight",
              ["--vs-limit"], {"LOADGEN": "h2load", "GATE": "adjusted", "MIN_RATIO": "0.9"},
              ("ferry", "inproc"), ("Ferry", "in-process ORT")),
    ]
    swept = []
    for c in sweep:
        common = {"LOADGEN": "h2load", "MODELS": "mlp_small", "CONCURRENCY": str(c), "MIN_RATIO": "0"}
        swept.append(Check(f"sweep-triton-c{c}", f"Sweep: Ferry vs Triton, h2load, mlp_small, {c} in flight", [],
                           common, ("ferry", "triton"), ("Ferry", "Triton"), gated=False, concurrency=c))
        swept.append(Check(f"sweep-limit-c{c}", f"Sweep: Ferry vs the loopback limit, h2load, mlp_small, {c} in flight",
                           [], {**common, "TRITON_START": ceiling}, ("ferry", "triton"), ("Ferry", "limit"),
                           gated=False, concurrency=c))
    return fixed, swept


def percentiles(log_path):
    """p50 and p99 in µs from an h2load --log-file (start µs, HTTP status, µs to the end of the response)."""
    times = []
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] == "200":
                    times.append(float(parts[2]))
    except OSError:
        return None
    if not times:
        return None
    times.sort()

    def rank(p):  # nearest rank
        return times[min(len(times), max(1, math.ceil(p * len(times)))) - 1]

    return rank(0.50), rank(0.99)


def read_rows(work):
    rows = []
    path = work / "results.tsv"
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        f = line.split("\t")
        if len(f) < 5:
            continue
        label, model, conc, rnd, status = f[0], f[1], int(f[2]), int(f[3]), f[4]
        if status != "OK" or len(f) < 9:
            rows.append(Row(label, model, conc, rnd, False, why=f[5] if len(f) > 5 else "?"))
            continue
        row = Row(label, model, conc, rnd, True, float(f[5]), float(f[6]), float(f[7]), float(f[8]))
        if label == "inproc":
            row.latency_from, row.p99_us = "inproc.py (median run)", -1.0
        elif row.p99_us >= 0:
            row.latency_from = "perf_analyzer"
        else:
            found = percentiles(work / "pa" / f"{label}.{model}.c{conc}.r{rnd}.h2log")
            if found:
                row.p50_us, row.p99_us = found
                row.latency_from = "h2load log"
            else:
                row.p50_us, row.latency_from = -1.0, "none (no h2load log)"
        rows.append(row)
    return rows


def triton_version(work):
    for log in sorted((work / "logs").glob("triton.*.log")):
        m = re.search(r"server_version\s*\|\s*(\S+)", log.read_text(errors="replace"))
        if m:
            return m.group(1)
    return ""


CURRENT = []  # the compare.sh process running now, for the signal handler


def run_check(check, env_base, bench_display, peers, keep_work):
    env = {k: v for k, v in env_base.items() if k not in CHECK_KNOBS}
    env.update(check.env)
    env["KEEP_WORK"] = "1"
    shown = [f"PEERS={peers}"] + [f"{k}={shq(env[k])}" for k in PASSED_KNOBS if k in env]
    shown += [f"{k}={shq(v)}" for k, v in check.env.items()] + ["KEEP_WORK=1", "PATH=benches/peers/bin:$PATH"]
    script = f"{bench_display}/compare/compare.sh"
    command = " ".join(shown + [script] + check.args)
    print(f"\n== {check.title}\n$ {command}", flush=True)
    load_before, t0 = os.getloadavg(), time.monotonic()
    proc = subprocess.Popen([script] + check.args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    CURRENT.append(proc)
    watchdog = threading.Timer(RUN_TIMEOUT_S, proc.terminate)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            print("  " + line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:  # interrupted: compare.sh's trap stops its server and removes nothing we need
            proc.terminate()
            proc.wait(timeout=120)
        CURRENT.remove(proc)
    run = Run(check, command, rc, time.monotonic() - t0, load_before, os.getloadavg())
    kept = [ln.split("work folder kept: ", 1)[1].strip() for ln in lines if "work folder kept: " in ln]
    measured = next((i for i, ln in enumerate(lines) if ln.startswith("compare: measured in")), None)
    run.header = [ln for ln in lines if ln.startswith("compare: mode ")]
    if measured is not None:
        run.summary = [ln for ln in lines[measured + 1:] if not ln.startswith("compare: work folder kept")]
    if kept:
        work = Path(kept[-1])
        run.rows = read_rows(work)
        run.triton_version = triton_version(work)
        if not keep_work and work.name.startswith("ferry-compare."):
            shutil.rmtree(work, ignore_errors=True)
    if not run.rows:
        run.error = next((ln for ln in reversed(lines) if ln.strip()), f"compare.sh exited {rc} with no output")
    return run


def shq(value):
    return value if re.fullmatch(r"[\w./:=,+-]*", value) else "'" + value.replace("'", "'\\''") + "'"


def ensure_ceiling(bench, peers):
    """ceiling/start.sh builds the loopback-limit server on first use; do that here, outside compare.sh's
    120 s readiness wait, by starting it once on a free port and stopping it when it listens."""
    if (Path(peers) / "ceiling-target" / "release" / "ceiling").exists():
        return True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = ROOT / "target" / "peers-ceiling-build.log"
    log.parent.mkdir(exist_ok=True)
    print(f"peers: building the loopback-limit server once (at most {CEILING_BUILD_S} s; log {log})", flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([str(bench / "ceiling" / "start.sh"), f"--grpc-port={port}"], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline, up = time.monotonic() + CEILING_BUILD_S, False
    while time.monotonic() < deadline and proc.poll() is None and not up:
        time.sleep(1)
        with socket.socket() as s:
            up = s.connect_ex(("127.0.0.1", port)) == 0
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: start.sh and the cargo it may still be running
        proc.wait(timeout=60)
    if not up:
        print(f"peers: the loopback-limit server did not start; last lines of {log}:")
        print("\n".join(log.read_text(errors="replace").splitlines()[-10:]))
    return up


def command_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(peers):
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), "0")
    commit = command_line(["git", "rev-parse", "HEAD"])
    dirty = command_line(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benches/results"])
    ort = command_line([f"{peers}/venv-pyt-deb/bin/python", "-c", "import onnxruntime; print(onnxruntime.__version__)"])
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": int(mem) / 1024 / 1024, "kernel": platform.release(),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "h2load": command_line(["h2load", "--version"]),
        "perf_analyzer": command_line([f"{peers}/venv/bin/perf_analyzer", "--version"]),
        "onnxruntime": ort,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-dir", default=str(ROOT.parent / "shared" / "bench"),
                    help="the shared checks (default: ../shared/bench from the project root)")
    ap.add_argument("--only", default="", help="comma-separated: triton, limit, batching-off, vs-limit, sweep")
    ap.add_argument("--sweep", default="1,8,32,128", help="concurrencies of the sweep (default 1,8,32,128)")
    ap.add_argument("--out", default=str(ROOT / "benches" / "results"), help="where peers.md and peers.svg go")
    ap.add_argument("--note", default="", help="a remark for the top of peers.md (why this run, what was special)")
    ap.add_argument("--keep-work", action="store_true", help="keep compare.sh's work folders (models, logs, CSVs)")
    a = ap.parse_args()

    peers = os.environ.get("PEERS", "")
    bench = Path(a.bench_dir).resolve()
    if not peers or not Path(peers, "venv", "bin", "perf_analyzer").exists():
        print("peers: PEERS is not set to the peers toolkit; set it up with "
              "PEERS=$HOME/ferry-peers ../shared/bench/peers/setup.sh")
        return 2
    if not (bench / "compare" / "compare.sh").exists():
        print(f"peers: no compare/compare.sh in {bench} (--bench-dir)")
        return 2
    if "FERRY_START" not in os.environ and not (ROOT / "target" / "release" / "ferry").exists():
        print("peers: no target/release/ferry: cargo build --release -p ferry-server --bin ferry")
        return 2
    try:
        sweep = [int(c) for c in a.sweep.split(",") if c.strip()]
    except ValueError:
        print(f"peers: --sweep takes comma-separated integers, got '{a.sweep}'")
        return 2
    if any(c < 1 or c > 1024 for c in sweep):
        print(f"peers: --sweep concurrencies must be 1 to 1024, got '{a.sweep}'")
        return 2
    only = {k for k in a.only.split(",") if k}
    known = {"triton", "limit", "batching-off", "vs-limit", "sweep"}
    if only - known:
        print(f"peers: unknown check(s) {', '.join(sorted(only - known))}; known: {', '.join(sorted(known))}")
        return 2

    bench_display = os.path.relpath(bench, ROOT)
    fixed, swept = checks(bench_display, sweep)
    fixed = [c for c in fixed if not only or c.key in only]
    swept = swept if not only or "sweep" in only else []

    env = dict(os.environ)
    env["PATH"] = f"{HERE / 'bin'}:{env.get('PATH', '')}"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    info = machine(peers)
    info["load_before"] = os.getloadavg()
    if any("TRITON_START" in c.env for c in fixed + swept):
        ensure_ceiling(bench, peers)
    runs = [run_check(c, env, bench_display, peers, a.keep_work) for c in fixed + swept]
    info["load_after"] = os.getloadavg()
    info["triton"] = next((r.triton_version for r in runs if r.triton_version), "")

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fixed_runs = [r for r in runs if r.check.gated]
    sweep_runs = [r for r in runs if not r.check.gated]
    points = report.sweep_points(sweep_runs, sweep)
    (out / "peers.md").write_text(report.markdown(info, fixed_runs, sweep_runs, points, a.note, bool(swept)))
    if swept:
        (out / "peers.svg").write_text(report.svg(points))
    print(f"\npeers: wrote {out / 'peers.md'}" + (f" and {out / 'peers.svg'}" if swept else ""))
    return 0 if all(r.rc == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
