#!/usr/bin/env python3
"""Threads, memory and time to ready of a server holding many small models.

    python3 benches/many_models.py --ferry target/debug/ferry [--counts 1,50,200,1000] [--out FILE]
                                   [--extra-args "--instance-idle-ms 0"]

For each count N it writes a repository of N copies of one small MLP (x FP32 [batch, 64] -> 128 -> 128 -> 16,
Relu between, 26 K weights, 103 KB; config with max_batch_size 8 and Triton's default of two CPU instances),
starts `ferry` on it, and reports:

  ready     seconds from starting the process to /v2/health/ready answering 200 (every model loaded)
  cpu       CPU seconds the process used until then (on a shared machine, wall time includes waiting for
            a core; CPU time does not)
  threads   the process's threads (/proc/PID/status) one second after ready, before any request
  rss       the process's resident memory then, in MB
  threads after traffic   the same after one request to each of up to 50 models (instances woken)

The results table is printed, and written to --out (Markdown) when given.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTHS = [64, 128, 128, 16]
CONFIG = """max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 16 ] } ]
"""


def mlp() -> bytes:
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for layer, (fan_in, fan_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{layer}"), numpy_helper.from_array(np.zeros(fan_out, np.float32), f"B{layer}")]
        nodes.append(helper.make_node("MatMul", [current, f"W{layer}"], [f"mm{layer}"]))
        last = layer == len(WIDTHS) - 2
        nodes.append(helper.make_node("Add", [f"mm{layer}", f"B{layer}"], ["y" if last else f"pre{layer}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{layer}"], [f"h{layer}"]))
            current = f"h{layer}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def write_repository(root: Path, count: int, config: str = CONFIG) -> None:
    blob = mlp()
    for i in range(count):
        folder = root / f"m{i:04d}"
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "1" / "model.onnx").write_bytes(blob)
        (folder / "config.pbtxt").write_text(config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            fields[key] = int(value.split()[0])
    return fields


class Server:
    def __init__(self, ferry: str, repository: Path, extra: list[str]):
        self.http = free_port()
        args = [
            ferry,
            "--model-repository", str(repository),
            "--http-port", str(self.http),
            "--grpc-port", str(free_port()),
            "--metrics-port", str(free_port()),
            "--http-address", "127.0.0.1",
            "--grpc-address", "127.0.0.1",
            "--metrics-address", "127.0.0.1",
            *extra,
        ]
        self.started = time.monotonic()
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"

    def wait_ready(self, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ferry exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url("/v2/health/ready"), timeout=1) as answer:
                    if answer.status == 200:
                        return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError("not ready in time")

    def infer(self, model: str) -> float:
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
        ).encode()
        request = urllib.request.Request(
            self.url(f"/v2/models/{model}/infer"), data=body, headers={"Content-Type": "application/json"}
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
        return time.monotonic() - started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(ferry: str, count: int, extra: list[str], instances: int | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ferry-many-") as tmp:
        repository = Path(tmp)
        config = CONFIG
        if instances is not None:
            config += f"instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]\n"
        write_repository(repository, count, config)
        server = Server(ferry, repository, extra)
        try:
            ready = server.wait_ready()
            cpu = cpu_seconds(server.process.pid)
            time.sleep(1.0)
            idle = proc_status(server.process.pid)
            for i in range(min(count, 50)):
                server.infer(f"m{i:04d}")
            busy = proc_status(server.process.pid)
        finally:
            server.stop()
    return {
        "models": count,
        "ready_s": ready,
        "cpu_s": cpu,
        "threads": idle["Threads"],
        "rss_mb": idle["VmRSS"] / 1024,
        "threads_after": busy["Threads"],
    }


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| models | time to ready | CPU until ready | threads | RSS | threads after a request to each of up to 50 models |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['models']} | {row['ready_s']:.2f} s | {row['cpu_s']:.2f} s | {row['threads']} | {row['rss_mb']:.0f} MB | "
            f"{row['threads_after']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferry", required=True)
    parser.add_argument("--counts", default="1,50,200,1000")
    parser.add_argument("--extra-args", default="")
    parser.add_argument("--instances", type=int, help="instance_group count (default: none, Triton's two)")
    parser.add_argument("--out")
    options = parser.parse_args()
    extra = shlex.split(options.extra_args)
    rows = [measure(options.ferry, int(n), extra, options.instances) for n in options.counts.split(",")]
    text = table(rows)
    print(text)
    if options.out:
        header = f"`ferry {options.extra_args}`".replace("` `", "`(defaults)`") if options.extra_args else "defaults"
        Path(options.out).write_text(f"Server flags: {header}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
