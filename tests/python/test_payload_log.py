"""Payload logging (`ferry.payload_log.*`), through tritonclient against a real Ferry.

Triton's `simple` example (INT32 [batch, 16] INPUT0 and INPUT1; OUTPUT0 = sum, OUTPUT1 = difference) is copied
into the empty repository of a Ferry started in explicit mode with a payload log folder and 4 KiB files,
under several configs, and loaded through tritonclient. Requests go over gRPC and REST; the JSON-lines files
under `<log dir>/<model>/<version>/` must then hold one complete record per sampled request, keyed by its id,
with the values sent and answered.

Payload logging is Ferry's own. The one Triton behaviour pinned is the response id: Triton echoes the
request's id and leaves it empty when the client sent none (gRPC: `InferResponseCompleteCommon` in
`src/grpc/infer_handler.cc` sets the response id from the request's; REST: `http_server.cc` writes "id" only
when it is not empty). Ferry does the same, except for a sampled request without an id, which gets one.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL, FERRY_METRICS_URL  host:port of the Ferry under test and its metrics
    FERRY_PAYLOAD_REPOSITORY                            the empty model repository it serves
    FERRY_PAYLOAD_LOG_DIR                               its --payload-log-dir
    FERRY_PAYLOAD_MAX_FILE_BYTES                        its --payload-log-max-file-bytes
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this suite through `cargo test -p ferry-tests --test payload_log`")
    return value


SIMPLE = Path(_env("FERRY_REPO_ROOT")) / "examples/model_repository/simple"
REPOSITORY = Path(_env("FERRY_PAYLOAD_REPOSITORY"))
LOGS = Path(_env("FERRY_PAYLOAD_LOG_DIR"))
MAX_FILE_BYTES = int(_env("FERRY_PAYLOAD_MAX_FILE_BYTES"))


def _add(name: str, parameters: dict[str, str]) -> None:
    """Copies `simple` into the repository as `name`, with `parameters` in its config."""
    folder = REPOSITORY / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(SIMPLE / "1/model.onnx", folder / "1/model.onnx")
    config = (SIMPLE / "config.pbtxt").read_text().replace('name: "simple"', f'name: "{name}"')
    for key, value in parameters.items():
        config += f'parameters {{ key: "ferry.payload_log.{key}" value {{ string_value: "{value}" }} }}\n'
    (folder / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def grpc():
    return grpcclient.InferenceServerClient(url=_env("FERRY_GRPC_URL"))


@pytest.fixture(scope="module")
def http():
    return httpclient.InferenceServerClient(url=_env("FERRY_HTTP_URL"))


def _inputs(module, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, (1, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (1, 16), dtype=np.int32)
    tensors = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    tensors[0].set_data_from_numpy(a)
    tensors[1].set_data_from_numpy(b)
    return tensors, a, b


def _records(model: str, count: int, timeout: float = 10.0) -> list[dict]:
    """The records of version 1 of `model`, in file order, once there are at least `count`."""
    folder = LOGS / model / "1"
    deadline = time.monotonic() + timeout
    while True:
        records = []
        files = sorted(folder.glob("payload-*.jsonl"), key=lambda p: int(p.stem.split("-")[1])) if folder.exists() else []
        for path in files:
            records += [json.loads(line) for line in path.read_text().splitlines()]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def _metric(name: str, model: str) -> float:
    text = urllib.request.urlopen(f"http://{_env('FERRY_METRICS_URL')}/metrics").read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, f"{name} for {model} missing from /metrics"
    return float(match.group(1))


def test_rate_one_logs_every_request_with_its_id_and_values(grpc, http):
    _add("logged", {"rate": "1"})
    grpc.load_model("logged")
    sent = {}
    for i in range(30):
        module, client = (grpcclient, grpc) if i % 2 == 0 else (httpclient, http)
        tensors, a, b = _inputs(module, i)
        result = client.infer("logged", tensors, request_id=f"req-{i}")
        assert (result.as_numpy("OUTPUT0") == a + b).all()
        sent[f"req-{i}"] = (a, b)
    records = _records("logged", len(sent))
    assert len(records) == len(sent)
    assert {r["id"] for r in records} == set(sent)
    for record in records:
        a, b = sent[record["id"]]
        assert record["model"] == "logged" and record["version"] == "1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["timestamp"])
        assert record["latency_us"] >= 0
        inputs = {t["name"]: t for t in record["inputs"]}
        outputs = {t["name"]: t for t in record["outputs"]}
        assert inputs["INPUT0"]["datatype"] == "INT32" and inputs["INPUT0"]["shape"] == [1, 16]
        assert inputs["INPUT0"]["data"] == a.flatten().tolist()
        assert inputs["INPUT1"]["data"] == b.flatten().tolist()
        assert outputs["OUTPUT0"]["data"] == (a + b).flatten().tolist()
        assert outputs["OUTPUT1"]["data"] == (a - b).flatten().tolist()
    assert _metric("ferry_payload_log_records_total", "logged") == len(sent)
    assert _metric("ferry_payload_log_dropped_total", "logged") == 0


def test_files_rotate_by_size_without_splitting_a_record(grpc):
    # test_rate_one_logs_every_request_with_its_id_and_values wrote 30 records of about 900 bytes each.
    files = list((LOGS / "logged" / "1").glob("payload-*.jsonl"))
    assert len(files) >= 3, files
    for path in files:
        text = path.read_text()
        assert len(text.encode()) <= MAX_FILE_BYTES, path
        assert text.endswith("\n")
        for line in text.splitlines():
            json.loads(line)


def test_rate_zero_logs_nothing(grpc):
    _add("unlogged", {"rate": "0"})
    grpc.load_model("unlogged")
    for i in range(5):
        tensors, _, _ = _inputs(grpcclient, i)
        grpc.infer("unlogged", tensors, request_id=f"quiet-{i}")
    time.sleep(0.3)
    assert not (LOGS / "unlogged").exists()


def test_half_rate_logs_every_second_request(grpc):
    _add("halved", {"rate": "0.5"})
    grpc.load_model("halved")
    for i in range(10):
        tensors, _, _ = _inputs(grpcclient, i)
        grpc.infer("halved", tensors, request_id=f"half-{i}")
    _records("halved", 5)
    time.sleep(0.3)
    assert len(_records("halved", 5)) == 5


def test_redacted_tensors_keep_their_shape_but_not_their_values(grpc):
    _add("redacted", {"rate": "1", "redact": "INPUT1, OUTPUT1", "outputs": "OUTPUT1"})
    grpc.load_model("redacted")
    tensors, a, _ = _inputs(grpcclient, 1)
    grpc.infer("redacted", tensors, request_id="secret")
    (record,) = _records("redacted", 1)
    inputs = {t["name"]: t for t in record["inputs"]}
    assert inputs["INPUT0"]["data"] == a.flatten().tolist()
    assert inputs["INPUT1"] == {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": "[redacted]"}
    assert record["outputs"] == [{"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "data": "[redacted]"}]


def test_tensors_past_the_record_budget_are_marked_truncated(grpc):
    # 64 bytes: INPUT0 (16 INT32) fits, nothing after it does.
    _add("capped", {"rate": "1", "max_bytes": "64", "inputs": "INPUT0,INPUT1"})
    grpc.load_model("capped")
    tensors, a, _ = _inputs(grpcclient, 2)
    grpc.infer("capped", tensors, request_id="big")
    (record,) = _records("capped", 1)
    inputs = {t["name"]: t for t in record["inputs"]}
    assert inputs["INPUT0"]["data"] == a.flatten().tolist()
    assert inputs["INPUT1"] == {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "truncated": True}
    assert all(t.get("truncated") is True and "data" not in t for t in record["outputs"])


def test_a_sampled_request_without_an_id_gets_one_in_its_response(grpc, http):
    _add("assigned", {"rate": "1"})
    grpc.load_model("assigned")
    tensors, _, _ = _inputs(grpcclient, 3)
    grpc_id = grpc.infer("assigned", tensors).get_response().id
    tensors, _, _ = _inputs(httpclient, 4)
    http_id = http.infer("assigned", tensors).get_response()["id"]
    for assigned in (grpc_id, http_id):
        assert re.fullmatch(r"[0-9a-f]{32}", assigned), assigned
    assert grpc_id != http_id
    records = _records("assigned", 2)
    assert [r["id"] for r in records] == [grpc_id, http_id]
    # A request that is not sampled keeps Triton's empty id (gRPC) and absent "id" (REST).
    tensors, _, _ = _inputs(grpcclient, 5)
    assert grpc.infer("unlogged", tensors).get_response().id == ""
    tensors, _, _ = _inputs(httpclient, 5)
    assert "id" not in http.infer("unlogged", tensors).get_response()


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("rate", "2", "from 0 to 1"),
        ("max_bytes", "lots", "from 0 to"),
        ("redact", "INPUT9", "not a tensor of the model"),
        ("sample", "1", "unknown parameter"),
    ],
)
def test_bad_parameters_refuse_the_load_naming_the_key(grpc, key, value, expected):
    name = f"bad_{key}"
    _add(name, {key: value})
    with pytest.raises(InferenceServerException) as error:
        grpc.load_model(name)
    message = str(error.value)
    assert f"ferry.payload_log.{key}" in message and expected in message, message


def test_an_ensemble_logs_its_own_inputs_and_outputs(grpc):
    # A one-step ensemble over `logged`: the record is the ensemble's, with its tensor names.
    folder = REPOSITORY / "wrapped"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(
        'name: "wrapped"\nplatform: "ensemble"\nmax_batch_size: 8\n'
        'input [ { name: "A", data_type: TYPE_INT32, dims: [ 16 ] }, { name: "B", data_type: TYPE_INT32, dims: [ 16 ] } ]\n'
        'output [ { name: "SUM", data_type: TYPE_INT32, dims: [ 16 ] } ]\n'
        'ensemble_scheduling { step [ { model_name: "logged" model_version: -1\n'
        '  input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }\n'
        '  output_map { key: "OUTPUT0" value: "SUM" } } ] }\n'
        'parameters { key: "ferry.payload_log.rate" value { string_value: "1" } }\n'
    )
    grpc.load_model("wrapped")
    rng = np.random.default_rng(9)
    a, b = (rng.integers(-9, 9, (1, 16), dtype=np.int32) for _ in range(2))
    tensors = [grpcclient.InferInput("A", [1, 16], "INT32"), grpcclient.InferInput("B", [1, 16], "INT32")]
    tensors[0].set_data_from_numpy(a)
    tensors[1].set_data_from_numpy(b)
    grpc.infer("wrapped", tensors, request_id="through-ensemble")
    (record,) = _records("wrapped", 1)
    assert record["id"] == "through-ensemble"
    assert [t["name"] for t in record["inputs"]] == ["A", "B"]
    assert record["outputs"] == [{"name": "SUM", "datatype": "INT32", "shape": [1, 16], "data": (a + b).flatten().tolist()}]


def test_a_classified_output_is_logged_as_the_strings_the_client_got(grpc):
    _add("classified", {"rate": "1", "outputs": "OUTPUT0"})
    grpc.load_model("classified")
    tensors, _, _ = _inputs(grpcclient, 6)
    wanted = [grpcclient.InferRequestedOutput("OUTPUT0", class_count=3)]
    result = grpc.infer("classified", tensors, outputs=wanted, request_id="ranked")
    answered = [item.decode() for item in result.as_numpy("OUTPUT0").flatten()]
    (record,) = _records("classified", 1)
    (output,) = record["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 3]
    assert output["data"] == answered
