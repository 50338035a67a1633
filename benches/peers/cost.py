#!/usr/bin/env python3
"""What one request costs the server: CPU time and context switches under load, and latency at 1 in flight.

    PEERS=$HOME/ferry-peers .venv/bin/python benches/peers/cost.py [--ferry BIN] [--baseline BIN] [--rounds 2]
                                                                   [--seconds 6]

For mlp_small (the request-bound model of ../shared/bench/compare/make_models.py) it measures, servers one at a
time on the same ports:
  - under h2load at 32 in flight (4 connections), the server's CPU time and context switches per request, from
    `perf stat -e task-clock,context-switches -p PID` over a window in the middle of the run, divided by the
    requests h2load finished in that window (its rate times the window): Ferry and the loopback limit (the bare
    tonic server of ../shared/bench/ceiling);
  - at 1 in flight (h2load -c1 -m1), the mean latency of Ferry with `dynamic_batching { }`, with
    `max_queue_delay_microseconds: 500`, with that delay and `ferry.adaptive_queue_delay`, and of the limit.
With --baseline, a second Ferry binary (an earlier build) is measured the same way in every round, for a
before/after table. Rounds alternate the servers; each figure is the best round (outside work only slows a run down). Prints a
Markdown table; writes nothing else. Not part of `make test` or CI.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT.parent / "shared" / "bench" / "compare"
CEILING = ROOT.parent / "shared" / "bench" / "ceiling" / "start.sh"
GRPC_PORT = int(os.environ.get("GRPC_PORT", "28001"))
DELAY_US = 500


def configs(models):
    """The model repositories to compare: mlp_small with each batching configuration."""
    base = models / "onnx" / "mlp_small"
    text = (base / "config.pbtxt").read_text()
    stanza = re.search(r"^dynamic_batching.*$", text, re.M).group(0)
    variants = {
        "no delay": "dynamic_batching { }",
        f"{DELAY_US} µs delay": f"dynamic_batching {{ max_queue_delay_microseconds: {DELAY_US} }}",
        f"{DELAY_US} µs adaptive": (f"dynamic_batching {{ max_queue_delay_microseconds: {DELAY_US} }}\n"
                                   'parameters { key: "ferry.adaptive_queue_delay" value { string_value: "true" } }'),
    }
    repos = {}
    for name, replacement in variants.items():
        repo = models / re.sub(r"\W+", "_", name)
        shutil.copytree(base, repo / "mlp_small")
        (repo / "mlp_small" / "config.pbtxt").write_text(text.replace(stanza, replacement))
        repos[name] = repo
    return repos


class Server:
    """One server process, started on the shared port and stopped by its PID."""

    def __init__(self, cmd, log, python):
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ready = subprocess.run([python, str(COMPARE / "wait_ready.py"), f"127.0.0.1:{GRPC_PORT}", "mlp_small",
                                "--pid", str(self.proc.pid), "--timeout", "120"], check=False)
        if ready.returncode != 0:
            self.stop()
            raise RuntimeError(f"{cmd[0]} did not become ready (log {log.name})")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def h2load(body, conns, streams, seconds, out):
    """Starts h2load replaying one ModelInfer request with conns × streams in flight."""
    cmd = ["h2load", "-D", str(seconds), "--warm-up-time", "1", "-c", str(conns), "-m", str(streams), "-t", "1",
           "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{GRPC_PORT}/inference.GRPCInferenceService/ModelInfer"]
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def h2load_figures(path):
    """(requests/s, mean latency µs) from h2load's report; fails on any failed or errored request."""
    text = Path(path).read_text()
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                     text)
    if not done or int(done.group(3)) or int(done.group(4)) or not int(done.group(2)):
        raise RuntimeError(f"h2load failed: {path}")
    rate = float(re.search(r"finished in .*?, ([\d.]+) req/s", text).group(1))
    lat = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    mean = float(lat.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[lat.group(2)]
    return rate, mean


def cost_under_load(server, body, seconds, work, tag):
    """(µs of CPU per request, context switches per request, requests/s) at 32 in flight."""
    out = work / f"{tag}.h2load"
    with open(out, "w") as sink:
        load = h2load(body, 4, 8, seconds, sink)
        time.sleep(2)  # warm-up (1 s) and the first second of the measured phase
        window = max(1, seconds - 2)
        stat = subprocess.run(["perf", "stat", "-x", ",", "-e", "task-clock,context-switches", "-p",
                               str(server.proc.pid), "--", "sleep", str(window)],
                              capture_output=True, text=True, check=False)
        load.wait(timeout=seconds + 60)
    rate, _ = h2load_figures(out)
    counters = {}
    for line in stat.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            counters[fields[2]] = float(fields[0])
    if "task-clock" not in counters:
        raise RuntimeError(f"perf stat gave no task-clock: {stat.stderr.strip()}")
    requests = rate * window
    return counters["task-clock"] * 1000 / requests, counters.get("context-switches", 0) / requests, rate


def latency_one_in_flight(body, seconds, work, tag):
    out = work / f"{tag}.h2load"
    with open(out, "w") as sink:
        h2load(body, 1, 1, seconds, sink).wait(timeout=seconds + 60)
    return h2load_figures(out)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default=str(ROOT / "target" / "release" / "ferry"))
    ap.add_argument("--baseline", help="an earlier ferry binary, measured alongside for a before/after table")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=6)
    args = ap.parse_args()
    peers = Path(os.environ.get("PEERS", ""))
    python = peers / "venv" / "bin" / "python"
    ferries = {"ferry": args.ferry, **({"baseline": args.baseline} if args.baseline else {})}
    for need in (python, *map(Path, ferries.values())):
        if not need.exists():
            sys.exit(f"cost: missing {need} (set PEERS; cargo build --release -p ferry-server --bin ferry)")
    for tool in ("h2load", "perf"):
        if not shutil.which(tool):
            sys.exit(f"cost: no {tool} on PATH (apt nghttp2-client linux-perf)")
    work = Path(tempfile.mkdtemp(prefix="ferry-cost."))
    subprocess.run([python, str(COMPARE / "make_models.py"), str(work / "models"), "--models", "mlp_small",
                    "--flavors", "onnx"], check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(COMPARE))
    from grpc_body import write_body
    body = work / "mlp_small.body"
    write_body("mlp_small", 64, str(body))
    repos = configs(work / "models")
    ports = [f"--grpc-port={GRPC_PORT}", "--http-port=28000", "--metrics-port=28002"]
    best = {}

    def keep(key, value, lower=True):
        old = best.get(key)
        best[key] = value if old is None or (value < old if lower else value > old) else old

    for round_ in range(args.rounds):
        for side, binary in ferries.items():
            for name, repo in repos.items():
                tag = f"{side}.{round_}.{len(name)}"
                with open(work / f"{tag}.log", "w") as log:
                    server = Server([binary, f"--model-repository={repo}", *ports], log, python)
                try:
                    if name == "no delay":
                        cpu, switches, rate = cost_under_load(server, body, args.seconds, work, f"{tag}.load")
                        keep((side, "cpu"), cpu)
                        keep((side, "switches"), switches)
                        keep((side, "rate"), rate, lower=False)
                    keep((side, name), latency_one_in_flight(body, args.seconds, work, f"{tag}.one"))
                finally:
                    server.stop()
        with open(work / f"limit.{round_}.log", "w") as log:
            server = Server([str(CEILING), f"--grpc-port={GRPC_PORT}"], log, python)
        try:
            cpu, switches, rate = cost_under_load(server, body, args.seconds, work, f"l{round_}")
            keep(("limit", "cpu"), cpu)
            keep(("limit", "switches"), switches)
            keep(("limit", "rate"), rate, lower=False)
            keep(("limit", "latency"), latency_one_in_flight(body, args.seconds, work, f"l1{round_}"))
        finally:
            server.stop()
    sides = [side for side in ("baseline", "ferry") if side in ferries]
    heads = {"baseline": f"Ferry before ({args.baseline})", "ferry": f"Ferry ({args.ferry})"}
    print(f"mlp_small, {args.rounds} rounds of {args.seconds} s, best round each\n")
    print("| figure | " + " | ".join(heads[s] for s in sides) + " | loopback limit |")
    print("|---|" + "---|" * len(sides) + "---|")

    def row(figure, key, form, limit=""):
        print(f"| {figure} | " + " | ".join(form.format(best[side, key]) for side in sides) + f" | {limit} |")

    row("server CPU per request, 32 in flight", "cpu", "{:.1f} µs", f"{best['limit', 'cpu']:.1f} µs")
    row("context switches per request, 32 in flight", "switches", "{:.2f}", f"{best['limit', 'switches']:.2f}")
    row("requests/s, 32 in flight", "rate", "{:,.0f}", f"{best['limit', 'rate']:,.0f}")
    for name in repos:
        limit = f"{best['limit', 'latency']:.0f} µs" if name == "no delay" else ""
        row(f"mean latency, 1 in flight, {name}", name, "{:.0f} µs", limit)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
