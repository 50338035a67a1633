#!/usr/bin/env python3
"""`ferry batch` against a plain onnxruntime loop in Python over the same `.npy` file.

Writes a seeded float32 input for the example `mlp_classifier` (32 features -> 10 probabilities and a label),
then, ROUNDS times each, in turn:

- onnxruntime, one row per `session.run` (the plainest loop), outputs kept in memory;
- onnxruntime, `--rows-per-request` rows per `session.run`, outputs kept in memory;
- onnxruntime, the same chunks, writing the same JSON lines `ferry batch` writes;
- `ferry batch` with `--rows-per-request` rows per request and `--concurrency` in flight;
- `ferry batch` with one row per request.

Every figure is rows per second over the loop alone (session creation and model loading excluded; ferry's own
summary says its load time), the median of the rounds. Ferry's labels are checked against onnxruntime's for
every row. Reported, not asserted: the figures depend on the machine and its load, which the report records.

    .venv/bin/python benches/batch/batch_vs_onnxruntime.py [--ferry target/release/ferry] [--rows 50000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mlp_classifier"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_ferry = ROOT / "target/release/ferry"
    if not default_ferry.exists():
        default_ferry = ROOT / "target/debug/ferry"
    parser.add_argument("--ferry", type=Path, default=default_ferry, help="the ferry binary (default: release, else debug)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows in the input file")
    parser.add_argument("--per-row-rows", type=int, default=10_000, help="rows for the one-row-per-call loops")
    parser.add_argument("--rows-per-request", type=int, default=64, help="rows per request / session.run")
    parser.add_argument("--concurrency", type=int, default=4, help="ferry batch --concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", type=Path, default=ROOT / "benches/results/batch.md")
    return parser.parse_args()


def session():
    model = ROOT / f"examples/model_repository/{MODEL}/2/model.onnx"
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def ort_loop(x, chunk, write_to=None):
    """Rows per second of a loop of session.run over `chunk` rows at a time."""
    s = session()
    name = s.get_inputs()[0].name
    outputs = [o.name for o in s.get_outputs()]
    s.run(None, {name: x[:chunk]})  # warm-up, as ferry warms its model up when it loads
    out = open(write_to, "w") if write_to else None
    started = time.perf_counter()
    kept = []
    for start in range(0, len(x), chunk):
        results = s.run(None, {name: x[start:start + chunk]})
        if out:
            for i in range(len(results[0])):
                row = {o: r[i].tolist() for o, r in zip(outputs, results)}
                out.write(json.dumps({"row": start + i, "outputs": row}, separators=(",", ":")) + "\n")
        else:
            kept.append(results)
    if out:
        out.close()
    return len(x) / (time.perf_counter() - started), kept


def ferry_batch(args, npy, output, rows_per_request, concurrency):
    """ferry batch's summary (a fresh output each time)."""
    if output.exists():
        output.unlink()
    command = [
        str(args.ferry), "batch", "--model-repository", str(ROOT / "examples/model_repository"),
        "--model", MODEL, "--input", str(npy), "--output", str(output), "--quiet", "--summary-json",
        "--rows-per-request", str(rows_per_request), "--concurrency", str(concurrency),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"ferry batch failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout), command


def main():
    args = parse_args()
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        x = rng.standard_normal((args.rows, 32)).astype(np.float32)
        npy, small = work / "features.npy", work / "features_small.npy"
        np.save(npy, x)
        np.save(small, x[: args.per_row_rows])
        rows = {name: [] for name in ["ort_row", "ort_chunk", "ort_chunk_write", "ferry_chunk", "ferry_row"]}
        load = []
        command = None
        for _ in range(args.rounds):
            rows["ort_row"].append(ort_loop(x[: args.per_row_rows], 1)[0])
            rate, kept = ort_loop(x, args.rows_per_request)
            rows["ort_chunk"].append(rate)
            rows["ort_chunk_write"].append(ort_loop(x, args.rows_per_request, work / "ort.jsonl")[0])
            summary, command = ferry_batch(args, npy, work / "ferry.jsonl", args.rows_per_request, args.concurrency)
            rows["ferry_chunk"].append(summary["rows_per_second"])
            load.append(summary["load_seconds"])
            summary, _ = ferry_batch(args, small, work / "ferry_row.jsonl", 1, args.concurrency)
            rows["ferry_row"].append(summary["rows_per_second"])
        # Ferry's answers against onnxruntime's, every row.
        labels = np.concatenate([chunk[1] for chunk in kept]).reshape(-1)
        with open(work / "ferry.jsonl") as out:
            next(out)
            ferry_labels = np.array([json.loads(line)["outputs"]["label"][0] for line in out])
        agree = bool(np.array_equal(labels, ferry_labels))
    median = {name: statistics.median(values) for name, values in rows.items()}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    profile = "release" if "release" in str(args.ferry) else "debug"
    lines = [
        "# `ferry batch` vs a plain onnxruntime loop",
        "",
        f"`{' '.join(sys.argv)}` at {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before the run; ferry {profile} build "
        f"(`{args.ferry}`); onnxruntime {ort.__version__}; model `{MODEL}` version 2 (32 -> 10, float32); "
        f"median of {args.rounds} rounds; rows per second over the loop alone (session creation and model "
        f"loading excluded: ferry loaded in {statistics.median(load):.2f} s).",
        "",
        "| run | rows | rows per call | rows/s |",
        "| --- | ---: | ---: | ---: |",
        f"| onnxruntime loop, one row per `run` | {args.per_row_rows} | 1 | {median['ort_row']:.0f} |",
        f"| onnxruntime loop, chunks | {args.rows} | {args.rows_per_request} | {median['ort_chunk']:.0f} |",
        f"| onnxruntime loop, chunks, writing the same JSON lines | {args.rows} | {args.rows_per_request} | {median['ort_chunk_write']:.0f} |",
        f"| `ferry batch`, concurrency {args.concurrency} | {args.rows} | {args.rows_per_request} | {median['ferry_chunk']:.0f} |",
        f"| `ferry batch`, concurrency {args.concurrency} | {args.per_row_rows} | 1 | {median['ferry_row']:.0f} |",
        "",
        f"Ferry's labels equal onnxruntime's for all {args.rows} rows: {'yes' if agree else 'NO'}.",
        f"ferry's command: `{' '.join(command)}` (paths of a temporary folder).",
        "",
    ]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
