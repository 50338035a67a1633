#!/usr/bin/env python3
"""What one request costs the server in instructions and system calls: counts, not times, so that the figures
barely depend on what else the machine is doing.

    PEERS=$HOME/ferry-peers .venv/bin/python benches/peers/census.py [--ferry BIN] [--baseline BIN]
                                                    [--requests 200,800] [--kernel-requests 20000] [--no-limit]

For mlp_small (the request-bound model of ../shared/bench/compare/make_models.py, `dynamic_batching { }`), for
each server (Ferry, optionally an earlier Ferry, and the loopback limit), h2load sends a fixed number of
ModelInfer requests at 32 in flight (4 connections × 8 streams):
  - instructions: the server runs twice under `valgrind --tool=callgrind`, once per request count, and gets
    SIGTERM after the load; the difference in instructions executed by all its threads (Ir), divided by the
    difference in requests, is the per-request cost (start-up and shutdown cancel out). User space only:
    the kernel's share (system calls, wake-ups) is not in it. Threads that spin while they wait add
    instructions that depend on timing, so the figure repeats to a few percent, not exactly. Under valgrind
    the threads run one at a time, so batches form differently than on bare metal.
  - system calls, futex calls and context switches: the server runs natively while `perf stat` counts the
    kernel's tracepoints (`raw_syscalls:sys_enter`, `syscalls:sys_enter_futex`) and context switches over
    `--kernel-requests` requests. These depend on how requests batch, so they move a little with load.
Prints a Markdown table; writes nothing else. Not part of `make test` or CI.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT.parent / "shared" / "bench" / "compare"
CEILING = ROOT.parent / "shared" / "bench" / "ceiling" / "start.sh"
GRPC_PORT = int(os.environ.get("GRPC_PORT", "28101"))


def start(cmd, python, prefix, log):
    """Starts `cmd` (under `prefix`, e.g. valgrind) and waits until it serves mlp_small."""
    proc = subprocess.Popen([*prefix, *cmd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ready = subprocess.run([python, str(COMPARE / "wait_ready.py"), f"127.0.0.1:{GRPC_PORT}", "mlp_small",
                            "--pid", str(proc.pid), "--timeout", "600"], check=False)
    if ready.returncode != 0:
        stop(proc)
        raise RuntimeError(f"{cmd[0]} did not become ready (log {log.name})")
    return proc


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def load(body, requests):
    """Sends `requests` ModelInfer requests at 32 in flight; fails unless every one succeeds."""
    done = subprocess.run(["h2load", "-n", str(requests), "-c", "4", "-m", "8", "-t", "1", "-d", str(body),
                           "-H", "content-type: application/grpc", "-H", "te: trailers",
                           f"http://127.0.0.1:{GRPC_PORT}/inference.GRPCInferenceService/ModelInfer"],
                          capture_output=True, text=True, check=False)
    found = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", done.stdout)
    if not found or int(found.group(2)) != requests:
        raise RuntimeError(f"h2load did not finish {requests} requests:\n{done.stdout[-2000:]}")


def callgrind_run(cmd, python, body, requests, work, tag):
    """Instructions the server executed over its whole life, serving `requests` requests under callgrind."""
    out = work / f"{tag}.callgrind"
    with open(work / f"{tag}.log", "w") as log:
        proc = start(cmd, python, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], log)
        try:
            load(body, requests)
        finally:
            stop(proc)
    return instructions(out)


def kernel_counts(cmd, python, body, requests, work, tag):
    """(system calls, futex calls, context switches) per request, counted by perf over `requests` requests."""
    events = "raw_syscalls:sys_enter,syscalls:sys_enter_futex,context-switches"
    with open(work / f"{tag}.log", "w") as log:
        proc = start(cmd, python, [], log)
        try:
            stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(proc.pid)],
                                    stderr=subprocess.PIPE, text=True)
            load(body, requests)
            stat.send_signal(signal.SIGINT)
            _, err = stat.communicate(timeout=60)
        finally:
            stop(proc)
    counters = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].replace(".", "").isdigit():
            counters[fields[2]] = float(fields[0]) / requests
    missing = [e for e in events.split(",") if e not in counters]
    if missing:
        raise RuntimeError(f"perf stat counted no {missing}: {err.strip()}")
    return tuple(counters[e] for e in events.split(","))


def instructions(path):
    """Total instructions (Ir) of a callgrind output file: the `totals:` line, or the summed `summary:`."""
    text = Path(path).read_text(errors="replace")
    found = re.findall(r"^(?:totals|summary): (\d+)", text, re.M)
    if not found:
        raise RuntimeError(f"no totals in {path}")
    return int(found[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default=str(ROOT / "target" / "release" / "ferry"))
    ap.add_argument("--baseline", help="an earlier ferry binary, counted alongside for a before/after table")
    ap.add_argument("--requests", default="200,800", help="the two request counts, comma-separated")
    ap.add_argument("--kernel-requests", type=int, default=20000,
                    help="requests over which the kernel counts are taken (natively, so many are cheap)")
    ap.add_argument("--no-limit", action="store_true", help="skip the loopback limit server")
    args = ap.parse_args()
    low, high = (int(n) for n in args.requests.split(","))
    peers = Path(os.environ.get("PEERS", ""))
    python = peers / "venv" / "bin" / "python"
    for tool in ("valgrind", "h2load", "perf"):
        if not shutil.which(tool):
            sys.exit(f"census: no {tool} on PATH (apt valgrind nghttp2-client linux-perf)")
    if not python.exists():
        sys.exit(f"census: missing {python} (set PEERS to the peers toolkit)")
    work = Path(tempfile.mkdtemp(prefix="ferry-census."))
    subprocess.run([python, str(COMPARE / "make_models.py"), str(work / "models"), "--models", "mlp_small",
                    "--flavors", "onnx"], check=True, stdout=subprocess.DEVNULL)
    repo = work / "models" / "onnx"
    config = repo / "mlp_small" / "config.pbtxt"
    config.write_text(re.sub(r"^dynamic_batching.*$", "dynamic_batching { }", config.read_text(), flags=re.M))
    sys.path.insert(0, str(COMPARE))
    from grpc_body import write_body
    body = work / "mlp_small.body"
    write_body("mlp_small", 64, str(body))
    ports = [f"--grpc-port={GRPC_PORT}", "--http-port=28100", "--metrics-port=28102"]
    servers = {"ferry": [args.ferry, f"--model-repository={repo}", *ports]}
    if args.baseline:
        servers["baseline"] = [args.baseline, f"--model-repository={repo}", *ports]
    if not args.no_limit:
        ceiling = peers / "ceiling-target" / "release" / "ceiling"
        if not ceiling.exists():
            sys.exit(f"census: missing {ceiling}: build it once with `PEERS=$PEERS {CEILING}` (then stop it)")
        servers["limit"] = [str(ceiling), f"127.0.0.1:{GRPC_PORT}"]
    figures = {}
    for side, cmd in servers.items():
        few = callgrind_run(cmd, python, body, low, work, f"{side}.{low}")
        many = callgrind_run(cmd, python, body, high, work, f"{side}.{high}")
        figures[side] = ((many - few) / (high - low),
                         *kernel_counts(cmd, python, body, args.kernel_requests, work, f"{side}.kernel"))
    heads = {"baseline": f"Ferry before ({args.baseline})", "ferry": f"Ferry ({args.ferry})",
             "limit": "loopback limit"}
    sides = [s for s in ("baseline", "ferry", "limit") if s in figures]
    print(f"mlp_small, 32 in flight, per request (instructions: the difference of {high} and {low} requests "
          f"under callgrind; kernel counts: over {args.kernel_requests} requests)\n")
    print("| per request | " + " | ".join(heads[s] for s in sides) + " |")
    print("|---|" + "---|" * len(sides))
    for i, (name, form) in enumerate([("instructions (user space)", "{:,.0f}"), ("system calls", "{:.2f}"),
                                      ("futex calls", "{:.2f}"), ("context switches", "{:.2f}")]):
        print(f"| {name} | " + " | ".join(form.format(figures[s][i]) for s in sides) + " |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
