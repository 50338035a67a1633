"""The flows of Triton's own Python client examples, run against Ferry with both `tritonclient` protocols.

Triton's client repository (`src/python/examples/`) ships example programs that its QA runs against the models of
`docs/examples/model_repository`. Each test here makes the calls one of those programs makes, against Ferry's
ONNX twins of those models (same names, tensor names, datatypes, shapes and configs: `simple` in
examples/model_repository, `simple_int8`, `simple_string`, `simple_identity` in tests/model_repository), and checks
the answers the example checks. The test names say which example each one follows.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL   host:port of Ferry's gRPC endpoint
    FERRY_HTTP_URL   host:port of Ferry's HTTP/REST endpoint
"""

from __future__ import annotations

import os
import queue
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

TIMEOUT_S = 30.0
PROTOCOLS = ("grpc", "http")


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set: it must be host:port of a running Ferry server", returncode=1)
    return value


@pytest.fixture(scope="module")
def clients():
    """One client per protocol, keyed by protocol name."""
    made = {
        "grpc": grpcclient.InferenceServerClient(_required_env("FERRY_GRPC_URL")),
        "http": httpclient.InferenceServerClient(
            _required_env("FERRY_HTTP_URL"), connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
        ),
    }
    yield made
    for client in made.values():
        client.close()


def _module(protocol: str):
    return grpcclient if protocol == "grpc" else httpclient


def _inputs(protocol: str, tensors: dict[str, np.ndarray], datatype: str, binary: bool = True) -> list:
    module = _module(protocol)
    made = []
    for name, data in tensors.items():
        tensor = module.InferInput(name, list(data.shape), datatype)
        if protocol == "http":
            tensor.set_data_from_numpy(data, binary_data=binary)
        else:
            tensor.set_data_from_numpy(data)
        made.append(tensor)
    return made


def _outputs(protocol: str, names, binary: bool = True) -> list:
    module = _module(protocol)
    if protocol == "http":
        return [module.InferRequestedOutput(name, binary_data=binary) for name in names]
    return [module.InferRequestedOutput(name) for name in names]


# --------------------------------------------------------------------------- simple_{grpc,http}_health_metadata.py


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_metadata(clients, protocol: str):
    client = clients[protocol]
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    metadata = client.get_server_metadata()
    extensions = metadata.extensions if protocol == "grpc" else metadata["extensions"]
    assert "model_repository" in extensions
    assert "classification" in extensions  # served on both protocols (test_classification.py)
    model = client.get_model_metadata("simple")
    if protocol == "grpc":
        shapes = {tensor.name: (tensor.datatype, list(tensor.shape)) for tensor in model.inputs}
        assert model.name == "simple"
    else:
        shapes = {tensor["name"]: (tensor["datatype"], tensor["shape"]) for tensor in model["inputs"]}
        assert model["name"] == "simple"
    assert shapes == {"INPUT0": ("INT32", [-1, 16]), "INPUT1": ("INT32", [-1, 16])}


# --------------------------------------------------------------------------- simple_{grpc,http}_infer_client.py


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model,dtype,datatype", [("simple", np.int32, "INT32"), ("simple_int8", np.int8, "INT8")])
def test_infer_client(clients, protocol: str, model: str, dtype, datatype: str):
    input0 = np.arange(start=0, stop=16, dtype=dtype).reshape(1, 16)
    input1 = np.full((1, 16), -1 if dtype == np.int8 else 1, dtype=dtype)
    result = clients[protocol].infer(
        model,
        _inputs(protocol, {"INPUT0": input0, "INPUT1": input1}, datatype),
        outputs=_outputs(protocol, ["OUTPUT0", "OUTPUT1"]),
        request_id="example-1",
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), input0 + input1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), input0 - input1)
    response = result.get_response()
    assert (response.id if protocol == "grpc" else response["id"]) == "example-1"


def test_int8_sums_wrap_around(clients):
    """simple_int8 is INT8 end to end: 127 + 1 wraps to -128, as the INT8 add in Triton's model does."""
    input0 = np.full((1, 16), 127, dtype=np.int8)
    input1 = np.ones((1, 16), dtype=np.int8)
    result = clients["grpc"].infer("simple_int8", _inputs("grpc", {"INPUT0": input0, "INPUT1": input1}, "INT8"))
    assert result.as_numpy("OUTPUT0").dtype == np.int8
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), -128, dtype=np.int8))


# --------------------------------------------------------------------------- simple_{grpc,http}_string_infer_client.py


# tritonclient.grpc always sends tensors as raw bytes; tritonclient.http sends them as binary data or JSON.
@pytest.mark.parametrize("protocol,binary", [("grpc", True), ("http", True), ("http", False)])
def test_string_infer_client(clients, protocol: str, binary: bool):
    """simple_string reads numbers from strings; its warm-up must not have made it unloadable (issue 9, item 1:
    a zero warm-up would send empty strings, which its Cast rejects)."""
    numbers0 = np.arange(start=0, stop=16, dtype=np.int32).reshape(1, 16)
    numbers1 = np.full((1, 16), 3, dtype=np.int32)
    as_strings = np.vectorize(lambda n: str(n).encode())
    tensors = {"INPUT0": as_strings(numbers0).astype(np.object_), "INPUT1": as_strings(numbers1).astype(np.object_)}
    result = clients[protocol].infer(
        "simple_string",
        _inputs(protocol, tensors, "BYTES", binary),
        outputs=_outputs(protocol, ["OUTPUT0", "OUTPUT1"], binary),
    )
    sums = result.as_numpy("OUTPUT0")
    differences = result.as_numpy("OUTPUT1")
    assert sums.shape == (1, 16) and differences.shape == (1, 16)
    as_ints = np.vectorize(lambda s: int(s.decode() if isinstance(s, bytes) else s))
    np.testing.assert_array_equal(as_ints(sums), numbers0 + numbers1)
    np.testing.assert_array_equal(as_ints(differences), numbers0 - numbers1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_string_model_is_ready_and_in_the_index(clients, protocol: str):
    client = clients[protocol]
    assert client.is_model_ready("simple_string")
    index = client.get_model_repository_index()
    entries = index.models if protocol == "grpc" else index
    states = {
        (entry.name if protocol == "grpc" else entry["name"]): (entry.state if protocol == "grpc" else entry["state"])
        for entry in entries
    }
    assert states.get("simple_string") == "READY", states


# --------------------------------------------------------------------------- the simple_identity model


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_returns_the_bytes_sent(clients, protocol: str):
    """Like Triton's identity tests: BYTES of any length and content, a batch of 2 rows of 3, back unchanged."""
    data = np.array([[b"", b"\x00\xff binary", "ünïcode".encode()], [b"a", b"bb", b"ccc" * 100]], dtype=np.object_)
    result = clients[protocol].infer(
        "simple_identity", _inputs(protocol, {"INPUT0": data}, "BYTES"), outputs=_outputs(protocol, ["OUTPUT0"])
    )
    echoed = result.as_numpy("OUTPUT0")
    assert echoed.shape == data.shape
    assert echoed.tolist() == data.tolist()


# --------------------------------------------------------------------------- simple_{grpc,http}_async_infer_client.py


def test_grpc_async_infer_client(clients):
    answers: queue.Queue = queue.Queue()
    input0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    input1 = np.full((1, 16), 2, dtype=np.int32)
    for _ in range(4):
        clients["grpc"].async_infer(
            "simple",
            _inputs("grpc", {"INPUT0": input0, "INPUT1": input1}, "INT32"),
            partial(lambda q, result, error: q.put((result, error)), answers),
        )
    for _ in range(4):
        result, error = answers.get(timeout=TIMEOUT_S)
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), input0 + input1)


def test_http_async_infer_client():
    client = httpclient.InferenceServerClient(_required_env("FERRY_HTTP_URL"), concurrency=4)
    try:
        input0 = np.arange(16, dtype=np.int32).reshape(1, 16)
        input1 = np.full((1, 16), 5, dtype=np.int32)
        pending = [
            client.async_infer("simple", _inputs("http", {"INPUT0": input0, "INPUT1": input1}, "INT32"))
            for _ in range(4)
        ]
        for request in pending:
            np.testing.assert_array_equal(request.get_result().as_numpy("OUTPUT1"), input0 - input1)
    finally:
        client.close()


# --------------------------------------------------------------------------- simple_grpc_stream_infer_client.py


def test_grpc_stream_infer_client():
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(_required_env("FERRY_GRPC_URL"))
    try:
        client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
        sent = {}
        for i in range(5):
            input0 = np.full((1, 16), i, dtype=np.int32)
            input1 = np.full((1, 16), 10, dtype=np.int32)
            client.async_stream_infer(
                "simple", _inputs("grpc", {"INPUT0": input0, "INPUT1": input1}, "INT32"), request_id=str(i)
            )
            sent[str(i)] = input0 + input1
        for _ in sent:
            result, error = answers.get(timeout=TIMEOUT_S)
            assert error is None, error
            request_id = result.get_response().id
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), sent[request_id])
    finally:
        client.stop_stream()
        client.close()


# --------------------------------------------------------------------------- statistics, as *_infer_client.py prints


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_count_the_requests(clients, protocol: str):
    client = clients[protocol]

    def successes() -> int:
        stats = client.get_inference_statistics(model_name="simple_int8")
        if protocol == "grpc":
            return sum(s.inference_stats.success.count for s in stats.model_stats)
        return sum(s["inference_stats"]["success"]["count"] for s in stats["model_stats"])

    before = successes()
    input0 = np.zeros((2, 16), dtype=np.int8)
    client.infer("simple_int8", _inputs(protocol, {"INPUT0": input0, "INPUT1": input0}, "INT8"))
    assert successes() == before + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_raises(clients, protocol: str):
    with pytest.raises(InferenceServerException):
        clients[protocol].get_model_metadata("no_such_model")
