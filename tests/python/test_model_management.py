"""Loading on first request and the model memory budget, through NVIDIA's own client.

The server runs in explicit mode with `--load-on-demand` and a memory budget (tests/tests/model_management.rs);
its repository starts empty and each test writes the models it needs into it. Triton has neither feature
(its users load and unload models themselves); what these tests pin that is Triton's is the index of
unloaded models (`ModelRepositoryManager::RepositoryIndex` in core `model_repository_manager.cc`: a model
folder that is not loaded is listed with empty state, one unloaded is `UNAVAILABLE` with reason
"unloaded") and ModelReady being false for a model that is not loaded.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL     host:port of the server
    FERRY_METRICS_URL  host:port of its metrics endpoint
    FERRY_REPOSITORY   the server's (empty at start) model repository, writable
    FERRY_BUDGET       the server's --model-memory-budget in bytes
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

ROWS = 262144  # 4 MiB of weights per model: memory is measured, at least the file's size
CONFIG = """max_batch_size: 8
input [ { name: "INDEX", data_type: TYPE_INT64, dims: [ 1 ] } ]
output [ { name: "ROW", data_type: TYPE_FP32, dims: [ 1, 4 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; run this through tests/tests/model_management.rs", returncode=1)
    return value


REPOSITORY = Path(_env("FERRY_REPOSITORY"))
BUDGET = int(_env("FERRY_BUDGET"))


def client() -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))


def gather_model(seed: int) -> bytes:
    """ROW = WEIGHTS[INDEX]: a lookup that keeps all of its 4 MiB of weights (nothing to fold away)."""
    weights = np.full((ROWS, 4), float(seed), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["WEIGHTS", "INDEX"], ["ROW"], axis=0)],
        "gather",
        inputs=[helper.make_tensor_value_info("INDEX", TensorProto.INT64, ["batch", 1])],
        outputs=[helper.make_tensor_value_info("ROW", TensorProto.FLOAT, ["batch", 1, 4])],
        initializer=[numpy_helper.from_array(weights, "WEIGHTS")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def write_model(name: str, seed: int, config: str = CONFIG, blob: bytes | None = None) -> None:
    folder = REPOSITORY / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.onnx").write_bytes(gather_model(seed) if blob is None else blob)
    (folder / "config.pbtxt").write_text(config)


def infer(name: str, index: int = 0, timeout: float | None = None) -> np.ndarray:
    request = grpcclient.InferInput("INDEX", [1, 1], "INT64")
    request.set_data_from_numpy(np.array([[index]], dtype=np.int64))
    answer = client().infer(name, [request], client_timeout=timeout)
    return answer.as_numpy("ROW")


def metrics() -> str:
    with urllib.request.urlopen(f"http://{_env('FERRY_METRICS_URL')}/metrics", timeout=10) as answer:
        return answer.read().decode()


def loads(name: str) -> int:
    found = re.search(rf'^ferry_model_loads_total{{model="{name}"}} (\d+)$', metrics(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def evictions(name: str) -> int:
    found = re.search(rf'^ferry_model_evictions_total{{model="{name}"}} (\d+)$', metrics(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def total_evictions() -> int:
    return sum(int(v) for v in re.findall(r"^ferry_model_evictions_total\{[^}]*\} (\d+)$", metrics(), re.MULTILINE))


def index_state(name: str) -> tuple[str, str]:
    rows = [row for row in client().get_model_repository_index(as_json=True).get("models", []) if row["name"] == name]
    assert rows, f"{name} is not in the repository index"
    return rows[0].get("state", ""), rows[0].get("reason", "")


def loaded(names: list[str]) -> set[str]:
    c = client()
    return {name for name in names if c.is_model_ready(name)}


def test_a_cold_model_loads_once_for_32_concurrent_requests() -> None:
    write_model("cold", 3)
    # In the repository, not loaded: listed with empty state, as Triton lists a model never loaded.
    assert index_state("cold") == ("", "")
    assert not client().is_model_ready("cold")
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        rows = list(pool.map(lambda i: infer("cold", i % ROWS), range(32)))
    assert all(np.array_equal(row, np.full((1, 1, 4), 3.0, np.float32)) for row in rows)
    assert loads("cold") == 1, "one load served all 32 waiting requests"
    assert client().is_model_ready("cold")
    assert index_state("cold")[0] == "READY"
    assert re.search(r"^ferry_model_load_on_demand_duration_seconds_count [1-9]", metrics(), re.MULTILINE)


def test_a_broken_cold_model_fails_every_waiting_request_with_the_reason_until_its_files_change() -> None:
    write_model("broken", 0, blob=b"this is not an onnx model")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(infer, "broken") for _ in range(8)]
        errors = []
        for future in futures:
            with pytest.raises(InferenceServerException) as raised:
                future.result()
            errors.append(raised.value.message())
    assert all("its load on demand failed" in error and "broken" in error for error in errors), errors
    # The server goes on, and the same files are not loaded again.
    write_model("healthy", 4)
    assert infer("healthy")[0, 0, 0] == 4.0
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as raised:
        infer("broken")
    assert "its load on demand failed" in raised.value.message()
    assert time.monotonic() - started < 5
    # New files: the next request loads them.
    write_model("broken", 5)
    assert infer("broken")[0, 0, 0] == 5.0


def test_the_least_recently_used_idle_model_is_evicted_first_and_a_pinned_one_never() -> None:
    pinned = CONFIG + 'parameters { key: "ferry.pinned" value { string_value: "true" } }\n'
    write_model("lru_pinned", 10, config=pinned)
    names = [f"lru_{i}" for i in range(16)]
    for i, name in enumerate(names):
        write_model(name, 20 + i)
    infer("lru_pinned")
    recency = ["lru_pinned"]  # least recently used first
    evicted_total = 0
    for round_ in range(2):
        for name in names:
            before = loaded(names + ["lru_pinned"])
            assert infer(name)[0, 0, 0] == 20 + names.index(name)
            if name in recency:
                recency.remove(name)
            recency.append(name)
            after = loaded(names + ["lru_pinned"])
            gone = before - after
            evicted_total += len(gone)
            # What went are the least recently used of the unpinned models that were loaded.
            candidates = [m for m in recency if m in before and m != "lru_pinned" and m != name]
            assert gone == set(candidates[: len(gone)]), (round_, name, recency, before, after)
            assert "lru_pinned" in after, "a pinned model is never evicted"
            for model in gone:
                assert index_state(model) == ("UNAVAILABLE", "unloaded")
    assert evicted_total > 0, f"sixteen 4 MiB models never filled a budget of {BUDGET} bytes"
    assert sum(evictions(name) for name in names) == evicted_total
    assert evictions("lru_pinned") == 0


def test_a_model_larger_than_the_budget_fails_fast_naming_it() -> None:
    # A model file bigger than the whole budget: padded with an initializer no node uses.
    model = onnx.load_from_string(gather_model(1))
    padding = np.zeros((BUDGET // 4 + 1,), dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(padding, "PADDING"))
    write_model("too_big", 1, blob=model.SerializeToString())
    ready_before = loaded([f"lru_{i}" for i in range(16)])
    with pytest.raises(InferenceServerException) as raised:
        infer("too_big")
    message = raised.value.message()
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED", raised.value.status()
    assert "--model-memory-budget" in message and str(BUDGET) in message, message
    assert loaded([f"lru_{i}" for i in range(16)]) == ready_before, "nothing was evicted for a load that cannot fit"


def test_an_unload_while_requests_are_queued_answers_them_first() -> None:
    slow = CONFIG + "dynamic_batching { max_queue_delay_microseconds: 1500000 preferred_batch_size: [ 8 ] }\n"
    write_model("queued", 7, config=slow)
    infer("queued")  # loads it; the next requests wait in its queue for the delay
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(infer, "queued", i) for i in range(4)]
        time.sleep(0.5)
        client().unload_model("queued")
        rows = [future.result(timeout=30) for future in futures]
    assert all(row[0, 0, 0] == 7.0 for row in rows)
    assert index_state("queued") == ("UNAVAILABLE", "unloaded")


def test_a_model_with_queued_requests_is_never_evicted() -> None:
    # Its requests wait in the queue for the delay (or 8 of them) while other loads need room.
    slow = CONFIG + "dynamic_batching { max_queue_delay_microseconds: 15000000 preferred_batch_size: [ 8 ] }\n"
    write_model("busy", 8, config=slow)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(infer, "busy", i) for i in range(2)]
        time.sleep(1.0)
        evicted_before = total_evictions()
        started = time.monotonic()
        fillers = [f"filler_{i}" for i in range(10)]
        for i, name in enumerate(fillers):
            write_model(name, 40 + i)
            assert infer(name)[0, 0, 0] == 40 + i
        assert time.monotonic() - started < 12, "the fillers took longer than the queue delay: inconclusive"
        assert total_evictions() > evicted_before, "the fillers needed room: something was evicted"
        assert client().is_model_ready("busy"), "the least recently used model had requests queued"
        assert evictions("busy") == 0
        rows = [future.result(timeout=60) for future in futures]
    assert all(row[0, 0, 0] == 8.0 for row in rows)
