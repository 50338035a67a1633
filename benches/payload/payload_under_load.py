#!/usr/bin/env python3
"""Payload logging under load: does logging every request lose a record or slow the requests down?

    .venv/bin/python benches/payload/payload_under_load.py [--ferry target/release/ferry] [--requests 20000]
                                                           [--rounds 3] [--rate 1]

Serves the example model `simple` (two INT32 [1, 16] inputs, examples/model_repository) twice per round, one
server at a time on the same ports: as it is, and with `ferry.payload_log.rate` `--rate` (default 1: every
request) under `--payload-log-dir`.
h2load sends the same fixed number of ModelInfer requests to each at 32 in flight (4 connections × 8
streams). For each it reports requests/s and mean latency (h2load), and for the logged server the records in
the files against the requests answered and Ferry's `ferry_payload_log_dropped_total`. Rounds alternate the
two servers; the table shows each round and the median ratio. Prints a Markdown table; writes nothing else.
Reported, not asserted; not part of `make test` or CI. Needs h2load (Debian's nghttp2-client).
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRPC, HTTP, METRICS = 28201, 28200, 28202


def body(path):
    """One gRPC-framed ModelInferRequest for `simple`, as h2load replays it."""
    from tritonclient.grpc import service_pb2
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
    values = struct.pack("<16i", *range(16))
    request.raw_input_contents.extend([values, values])
    message = request.SerializeToString()
    Path(path).write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)


def wait_ready(proc):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("ferry exited before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{HTTP}/v2/models/simple/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("ferry was not ready within 60 s")


def dropped():
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(r'^ferry_payload_log_dropped_total\{[^}]*\} (\S+)', text, re.M)
    return sum(float(v) for v in found)


def run(ferry, repo, logs, request_body, requests, expected=0):
    """(requests/s, mean µs, records written, records dropped) for one server."""
    cmd = [ferry, f"--model-repository={repo}", f"--grpc-port={GRPC}", f"--http-port={HTTP}",
           f"--metrics-port={METRICS}"]
    if logs:
        cmd.append(f"--payload-log-dir={logs}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(proc)
        out = subprocess.run(["h2load", "-n", str(requests), "-c", "4", "-m", "8", "-t", "1", "-d",
                              str(request_body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                              f"http://127.0.0.1:{GRPC}/inference.GRPCInferenceService/ModelInfer"],
                             capture_output=True, text=True, check=False).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        if not done or int(done.group(2)) != requests:
            raise RuntimeError(f"h2load did not finish every request:\n{out[-1500:]}")
        rate = float(re.search(r"finished in .*?, ([\d.]+) req/s", out).group(1))
        lat = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
        mean = float(lat.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[lat.group(2)]
        records, lost = 0, 0.0
        if logs:
            # The writer flushes whenever its queue is empty: wait (at most 10 s) until every record that
            # was not dropped is in the files, before the server stops.
            lost = dropped()
            deadline = time.time() + 10
            while True:
                records = sum(1 for f in Path(logs).rglob("*.jsonl") for _ in f.open())
                if records + lost >= expected or time.time() > deadline:
                    break
                time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    return rate, mean, records, lost


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", default=str(ROOT / "target" / "release" / "ferry"))
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", default="1", help="ferry.payload_log.rate of the logged server (default 1)")
    args = ap.parse_args()
    if not shutil.which("h2load"):
        sys.exit("payload_under_load: no h2load on PATH (apt nghttp2-client)")
    work = Path(tempfile.mkdtemp(prefix="ferry-payload-bench."))
    plain, logged = work / "plain", work / "logged"
    for repo in (plain, logged):
        shutil.copytree(ROOT / "examples" / "model_repository" / "simple", repo / "simple")
    config = logged / "simple" / "config.pbtxt"
    config.write_text(config.read_text()
                      + f'parameters {{ key: "ferry.payload_log.rate" value {{ string_value: "{args.rate}" }} }}\n')
    request_body = work / "simple.body"
    body(request_body)
    rows, ratios = [], []
    for round_ in range(args.rounds):
        logs = work / f"logs{round_}"
        base = run(args.ferry, plain, None, request_body, args.requests)
        expected = int(args.requests * float(args.rate))
        with_log = run(args.ferry, logged, logs, request_body, args.requests, expected)
        ratios.append(with_log[0] / base[0])
        rows.append((round_ + 1, base, with_log))
    print(f"`simple`, {args.requests} requests at 32 in flight per server and round, {args.ferry}\n")
    print(f"| round | req/s, no logging | req/s, rate {args.rate} logged | ratio | mean µs (off / on) "
          "| records written | records dropped |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for number, base, with_log in rows:
        print(f"| {number} | {base[0]:,.0f} | {with_log[0]:,.0f} | {with_log[0] / base[0]:.2f} | "
              f"{base[1]:.0f} / {with_log[1]:.0f} | {with_log[2]:,} of {expected:,} | {with_log[3]:.0f} |")
    print(f"\nmedian throughput ratio, logging on / off: {statistics.median(ratios):.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
