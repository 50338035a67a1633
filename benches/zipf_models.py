#!/usr/bin/env python3
"""A Zipf access pattern over many models under a memory budget that holds a tenth of them.

    python3 benches/zipf_models.py --ferry target/debug/ferry [--models 1000] [--hold 100] [--requests 4000]
                                   [--clients 4] [--exponent 1.0] [--out FILE]

Writes a repository of `--models` copies of benches/many_models.py's small MLP, measures what one loaded
model takes (the median `ferry_model_memory_bytes` of 16 models on a probe server), and starts `ferry --model-control-mode explicit
--load-on-demand --model-memory-budget <hold x that>`. `--clients` threads then send `--requests` REST
requests in all, each to a model drawn from a Zipf distribution (probability of the k-th most popular model
proportional to 1/k^exponent). Before each request a client asks ModelReady (untimed): a request whose
model was ready is a hit, the others waited for a load on demand (a miss). The same request sequence,
restricted to the `--hold` most popular models, then runs against a server that loaded only those at start,
for the hit latency to compare with. Reported: hit latency p50/p99 on both servers, miss latency
percentiles, the server's load-on-demand histogram, evictions, loads, resident memory at the end, failures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from many_models import Server, proc_status, write_repository  # noqa: E402

BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}).encode()


def metrics(server: Server, port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        return answer.read().decode()


def metrics_port(server: Server) -> int:
    args = server.process.args
    return int(args[args.index("--metrics-port") + 1])


def run(server: Server, sequence: list[int], clients: int, check_ready: bool) -> list[tuple[float, bool, bool]]:
    """(latency s, hit, ok) per request, the sequence split round-robin between the clients."""
    results: list[tuple[float, bool, bool]] = []
    lock = threading.Lock()

    def client(part: list[int]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.http, timeout=120)
        mine = []
        for model in part:
            name = f"m{model:04d}"
            hit = True
            if check_ready:
                connection.request("GET", f"/v2/models/{name}/ready")
                answer = connection.getresponse()
                answer.read()
                hit = answer.status == 200
            started = time.perf_counter()
            connection.request("POST", f"/v2/models/{name}/infer", body=BODY, headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            mine.append((time.perf_counter() - started, hit, answer.status == 200))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(sequence[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ms = np.array(values) * 1000
    return " / ".join(f"{np.percentile(ms, p):.1f}" for p in (50, 90, 99)) + f" / {ms.max():.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferry", required=True)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--hold", type=int, default=100)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--exponent", type=float, default=1.0)
    parser.add_argument("--out")
    options = parser.parse_args()

    ranks = np.arange(1, options.models + 1)
    weights = 1.0 / ranks**options.exponent
    rng = np.random.default_rng(7)
    sequence = [int(m) for m in rng.choice(options.models, size=options.requests, p=weights / weights.sum())]
    explicit = ["--model-control-mode", "explicit", "--load-on-demand"]
    with tempfile.TemporaryDirectory(prefix="ferry-zipf-") as tmp:
        repository = Path(tmp)
        write_repository(repository, options.models)

        probe = Server(options.ferry, repository, explicit)
        try:
            probe.wait_ready()
            run(probe, list(range(16)), 1, False)
            sizes = [int(v) for v in re.findall(r"^ferry_model_memory_bytes\{[^}]*\} (\d+)$", metrics(probe, metrics_port(probe)), re.M)]
        finally:
            probe.stop()
        # The first load in a process also starts ONNX Runtime's pools and arenas: the median is one model.
        per_model = int(np.median(sizes))
        budget = per_model * options.hold

        managed = Server(options.ferry, repository, [*explicit, "--model-memory-budget", str(budget)])
        try:
            managed.wait_ready()
            started = time.monotonic()
            results = run(managed, sequence, options.clients, True)
            took = time.monotonic() - started
            text = metrics(managed, metrics_port(managed))
            rss_mb = proc_status(managed.process.pid)["VmRSS"] / 1024
            threads = proc_status(managed.process.pid)["Threads"]
        finally:
            managed.stop()
        evictions = sum(int(v) for v in re.findall(r"^ferry_model_evictions_total\{[^}]*\} (\d+)$", text, re.M))
        loads = sum(int(v) for v in re.findall(r"^ferry_model_loads_total\{[^}]*\} (\d+)$", text, re.M))
        histogram = re.findall(r'^ferry_model_load_on_demand_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$', text, re.M)

        hot = [m for m in sequence if m < options.hold]
        only = Server(
            options.ferry,
            repository,
            ["--model-control-mode", "explicit", *[arg for m in range(options.hold) for arg in ("--load-model", f"m{m:04d}")]],
        )
        try:
            only.wait_ready()
            baseline = run(only, hot, options.clients, False)
        finally:
            only.stop()

    hits = [latency for latency, hit, ok in results if hit and ok]
    misses = [latency for latency, hit, ok in results if not hit and ok]
    failed = sum(1 for _, _, ok in results if not ok)
    lines = [
        f"{options.models} models, a budget of {budget} bytes ({options.hold} x {per_model} bytes, the median "
        f"of what 16 models took at load), {options.requests} requests from {options.clients} clients, Zipf exponent "
        f"{options.exponent}: {len(results)} answered in {took:.1f} s, {failed} failed.",
        "",
        "| | requests | p50 / p90 / p99 / max |",
        "|---|---|---|",
        f"| hits (model loaded), budget server | {len(hits)} | {percentiles(hits)} |",
        f"| the same sequence's requests to the {options.hold} most popular models, server with only those | "
        f"{len(baseline)} | {percentiles([l for l, _, ok in baseline if ok])} |",
        f"| misses (waited for a load on demand) | {len(misses)} | {percentiles(misses)} |",
        "",
        f"Loads {loads}, evictions {evictions}; resident memory at the end {rss_mb:.0f} MB, {threads} threads.",
        "",
        "Server-side load-on-demand histogram (cumulative): "
        + ", ".join(f"≤{le} s: {count}" for le, count in histogram if le in ("0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf")),
    ]
    text = "\n".join(lines)
    print(text)
    if options.out:
        Path(options.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
