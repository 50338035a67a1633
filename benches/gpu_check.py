#!/usr/bin/env python3
"""The client side of benches/gpu_check.sh: run against a Ferry serving a KIND_GPU model on a GPU machine.

    python3 benches/gpu_check.py prepare <repository-dir>
    python3 benches/gpu_check.py check <repository-dir> <grpc-port> <metrics-port> <ferry-log> <report.md>

`prepare` writes the repository: `mlp_big` (x FP32 [batch, 2048] -> 4096 -> 4096 -> 4096 -> 2048, Relu between,
50 M weights, about 100 MFLOP per row: compute-bound on a GPU) served KIND_GPU with dynamic batching up to 64.
`check` runs each step, records what it saw, and writes the report; a step that fails is reported as failed and
the others still run. The exit code is 1 when any step failed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

WIDTHS = [2048, 4096, 4096, 4096, 2048]
MAX_BATCH = 64
MODEL = "mlp_big"
CLIENTS = (1, 8, 32, 64)
SECONDS = 8.0


def prepare(repository: Path) -> None:
    import onnx

    from generate_bench_models import mlp

    folder = repository / MODEL
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(mlp(MODEL, WIDTHS, 7), folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(
        f"""max_batch_size: {MAX_BATCH}
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ {WIDTHS[0]} ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ {WIDTHS[-1]} ] }} ]
instance_group [ {{ kind: KIND_GPU, gpus: [ 0 ], count: 1 }} ]
dynamic_batching {{ }}
"""
    )
    print(f"wrote {folder}")


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []

    def step(self, title: str, run) -> None:
        self.lines.append(f"\n## {title}\n")
        started = time.monotonic()
        try:
            run(self)
            self.lines.append(f"\n_passed in {time.monotonic() - started:.1f} s_\n")
        except Exception as error:  # every step is reported, whatever breaks
            self.failed.append(title)
            self.lines.append(f"\n**FAILED**: `{error!r}`\n\n```\n{traceback.format_exc()[-2000:]}\n```\n")

    def say(self, text: str) -> None:
        print(text)
        self.lines.append(text + "\n")


def reference_session():
    import onnxruntime as ort

    return ort.InferenceSession(
        str(REPOSITORY / MODEL / "1" / "model.onnx"),
        providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"],
    )


def step_startup(report: Report) -> None:
    log = Path(FERRY_LOG).read_text(errors="replace")
    gpu_lines = [line for line in log.splitlines() if "GPU(s):" in line or "no GPU:" in line]
    report.say(f"start-up line: `{gpu_lines[0].strip() if gpu_lines else 'missing'}`")
    assert gpu_lines and "GPU(s):" in gpu_lines[0], "Ferry did not find the GPU"


def step_infer(report: Report) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"localhost:{GRPC_PORT}")
    metadata = client.get_server_metadata(as_json=True)
    report.say(f"extensions: {', '.join(metadata['extensions'])}")
    assert "cuda_shared_memory" in metadata["extensions"]
    x = np.random.default_rng(1).standard_normal((4, WIDTHS[0])).astype(np.float32)
    given = grpcclient.InferInput("x", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    served = client.infer(MODEL, [given]).as_numpy("y")
    expected = reference_session().run(None, {"x": x})[0]
    error = float(np.max(np.abs(served - expected)))
    report.say(f"KIND_GPU answer vs in-process ONNX Runtime CUDA: max abs difference {error:.2e} ({served.shape})")
    assert served.shape == expected.shape and error < 1e-2


def step_cuda_shm(report: Report) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.utils.cuda_shared_memory as cudashm

    client = grpcclient.InferenceServerClient(f"localhost:{GRPC_PORT}")
    client.unregister_cuda_shared_memory()
    x = np.random.default_rng(2).standard_normal((8, WIDTHS[0])).astype(np.float32)
    out_bytes = 8 * WIDTHS[-1] * 4
    input_region = cudashm.create_shared_memory_region("gpu_check_in", x.nbytes, 0)
    output_region = cudashm.create_shared_memory_region("gpu_check_out", out_bytes, 0)
    try:
        cudashm.set_shared_memory_region(input_region, [x])
        client.register_cuda_shared_memory("gpu_check_in", cudashm.get_raw_handle(input_region), 0, x.nbytes)
        client.register_cuda_shared_memory("gpu_check_out", cudashm.get_raw_handle(output_region), 0, out_bytes)
        status = client.get_cuda_shared_memory_status(as_json=True)
        report.say(f"status: {status}")
        given = grpcclient.InferInput("x", list(x.shape), "FP32")
        given.set_shared_memory("gpu_check_in", x.nbytes)
        wanted = grpcclient.InferRequestedOutput("y")
        wanted.set_shared_memory("gpu_check_out", out_bytes)
        client.infer(MODEL, [given], outputs=[wanted])
        served = cudashm.get_contents_as_numpy(output_region, np.float32, [8, WIDTHS[-1]])
        expected = reference_session().run(None, {"x": x})[0]
        error = float(np.max(np.abs(served - expected)))
        report.say(f"CUDA shared memory in and out: max abs difference {error:.2e}")
        assert error < 1e-2
        client.unregister_cuda_shared_memory()
        assert not client.get_cuda_shared_memory_status(as_json=True).get("regions")
    finally:
        cudashm.destroy_shared_memory_region(input_region)
        cudashm.destroy_shared_memory_region(output_region)


def statistics(client) -> tuple[int, int]:
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def served_throughput(clients: int) -> tuple[float, float]:
    """Rows per second through Ferry with `clients` closed-loop clients of one row each, and the mean batch."""
    import tritonclient.grpc as grpcclient

    x = np.random.default_rng(3).standard_normal((1, WIDTHS[0])).astype(np.float32)
    stop = time.monotonic() + SECONDS
    done = [0] * clients

    def loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(f"localhost:{GRPC_PORT}")
        given = grpcclient.InferInput("x", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        while time.monotonic() < stop:
            client.infer(MODEL, [given])
            done[index] += 1

    watcher = grpcclient.InferenceServerClient(f"localhost:{GRPC_PORT}")
    before = statistics(watcher)
    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    after = statistics(watcher)
    executions = max(after[1] - before[1], 1)
    return sum(done) / elapsed, (after[0] - before[0]) / executions


def reference_throughput(session, batch: int) -> float:
    x = np.random.default_rng(4).standard_normal((batch, WIDTHS[0])).astype(np.float32)
    for _ in range(5):
        session.run(None, {"x": x})
    runs = 0
    started = time.monotonic()
    while time.monotonic() - started < SECONDS / 2:
        session.run(None, {"x": x})
        runs += 1
    return runs * batch / (time.monotonic() - started)


def step_throughput(report: Report) -> None:
    session = reference_session()
    report.say("| clients | Ferry rows/s | mean batch Ferry formed | in-process ORT CUDA at that batch, rows/s | ratio |")
    report.say("|---|---|---|---|---|")
    for clients in CLIENTS:
        served, batch = served_throughput(clients)
        size = max(1, round(batch))
        reference = reference_throughput(session, size)
        report.say(f"| {clients} | {served:.0f} | {batch:.1f} | {reference:.0f} (batch {size}) | {served / reference:.2f} |")


def step_staging(report: Report) -> None:
    from cuda.bindings import runtime as cudart

    def check(result):
        error = result[0]
        assert error == cudart.cudaError_t.cudaSuccess, error
        return result[1] if len(result) == 2 else result[1:]

    check(cudart.cudaSetDevice(0))
    report.say("| bytes (batch x 2048 FP32) | pageable H2D, µs | pinned H2D, µs | speed-up |")
    report.say("|---|---|---|---|")
    for batch in (1, 8, 64):
        size = batch * WIDTHS[0] * 4
        device = check(cudart.cudaMalloc(size))
        pageable = np.ones(size, dtype=np.uint8)
        pinned = check(cudart.cudaMallocHost(size))
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice

        def timed(source) -> float:
            for _ in range(10):
                check(cudart.cudaMemcpy(device, source, size, kind))
            rounds = 200
            started = time.perf_counter()
            for _ in range(rounds):
                check(cudart.cudaMemcpy(device, source, size, kind))
            return (time.perf_counter() - started) / rounds * 1e6

        slow = timed(pageable.ctypes.data)
        fast = timed(pinned)
        report.say(f"| {size} ({batch}) | {slow:.1f} | {fast:.1f} | {slow / fast:.2f}x |")
        check(cudart.cudaFreeHost(pinned))
        check(cudart.cudaFree(device))


def step_metrics(report: Report) -> None:
    text = urllib.request.urlopen(f"http://localhost:{METRICS_PORT}/metrics", timeout=10).read().decode()
    families = [
        "nv_gpu_utilization",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        "nv_energy_consumption",
    ]
    for family in families:
        samples = [line for line in text.splitlines() if line.startswith(family + "{")]
        report.say(f"- `{samples[0] if samples else family + ' MISSING'}`")
        assert samples, f"{family} missing"


def check(argv: list[str]) -> int:
    global REPOSITORY, GRPC_PORT, METRICS_PORT, FERRY_LOG
    REPOSITORY, GRPC_PORT, METRICS_PORT, FERRY_LOG, out = Path(argv[0]), argv[1], argv[2], argv[3], Path(argv[4])
    report = Report()
    report.step("Start-up discovery", step_startup)
    report.step("tritonclient against the KIND_GPU model", step_infer)
    report.step("CUDA shared memory end to end", step_cuda_shm)
    report.step(f"Ferry vs in-process ONNX Runtime CUDA on {MODEL} ({SECONDS:.0f} s per row)", step_throughput)
    report.step("Host to device staging: pageable vs pinned", step_staging)
    report.step("GPU metrics", step_metrics)
    head = [
        "# GPU check (benches/gpu_check.sh)\n",
        f"\nRun {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on `{os.uname().nodename}`; "
        f"{'all steps passed' if not report.failed else 'FAILED: ' + ', '.join(report.failed)}.\n",
    ]
    out.write_text("".join(head + report.lines))
    print(f"wrote {out}")
    return 1 if report.failed else 0


REPOSITORY = Path(".")
GRPC_PORT = METRICS_PORT = FERRY_LOG = ""

if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
        sys.exit(0)
    if len(sys.argv) == 7 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
