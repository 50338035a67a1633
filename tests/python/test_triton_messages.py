"""Triton's own statuses and messages, through NVIDIA's `tritonclient` (gRPC and HTTP).

Clients and scripts compare Triton's error texts, so every case here asserts the exact status and the
exact message (or, where Ferry adds its own detail after Triton's text, Triton's text followed by "; ").
Each case names the Triton 2.51 source it pins: the server repository's `src/grpc/` and
`src/http_server.cc`, `src/shared_memory_manager.cc`, `src/common.cc`, and the core repository's
`src/model_repository_manager/`, `src/infer_request.cc`, `src/model.cc` and `src/tritonserver.cc`.

Two servers take part (the Rust runner `tests/tests/triton_messages.rs` starts both):

    FERRY_GRPC_URL, FERRY_HTTP_URL                    the example and test repositories, control mode none,
                                                      the default server name
    FERRY_EXPLICIT_GRPC_URL, FERRY_EXPLICIT_HTTP_URL  the same repositories in explicit mode with only
                                                      `simple` loaded, started with --server-name triton

Without them the run fails; it is never skipped.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from typing import Callable

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

TIMEOUT_S = 30.0

# Triton's note after a shape that does not fit a batching model (core infer_request.cc, Normalize).
BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended "
    "to each input shape. If you want to specify the full shape including the batch dim in your input dims "
    "config, try setting max_batch_size to zero. See the model configuration docs for more info on "
    "max_batch_size."
)


def _url(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set (host:port of a running Ferry server)", returncode=1)
    return value


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def grpc_client():
    return grpcclient.InferenceServerClient(url=_url("FERRY_GRPC_URL"))


@pytest.fixture(scope="module")
def http_client():
    return httpclient.InferenceServerClient(
        url=_url("FERRY_HTTP_URL"), connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
    )


@pytest.fixture(scope="module")
def stub():
    channel = grpc.insecure_channel(_url("FERRY_GRPC_URL"))
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def explicit_grpc():
    return grpcclient.InferenceServerClient(url=_url("FERRY_EXPLICIT_GRPC_URL"))


@pytest.fixture(scope="module")
def explicit_http():
    return httpclient.InferenceServerClient(
        url=_url("FERRY_EXPLICIT_HTTP_URL"), connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
    )


@pytest.fixture(scope="module")
def explicit_stub():
    channel = grpc.insecure_channel(_url("FERRY_EXPLICIT_GRPC_URL"))
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Expected:
    """What a failed call must answer: the gRPC code, the HTTP status, and the message, whole (`exact`) or
    Triton's text followed by Ferry's detail after "; " (`exact=False`)."""

    code: grpc.StatusCode
    http: str
    message: str
    exact: bool = True


def failure(call: Callable[[], object]) -> tuple[str, str]:
    """The status and message of the call, which must fail."""
    try:
        result = call()
    except InferenceServerException as exc:
        return str(exc.status()), exc.message()
    except grpc.RpcError as exc:
        return str(exc.code()), exc.details()
    raise AssertionError(f"the call succeeded: {result!r}")


def check(status: str, message: str, want: Expected, http: bool) -> None:
    expected_status = want.http if http else str(want.code)
    assert status == expected_status, f"status {status}, expected {expected_status}: {message!r}"
    if want.exact:
        assert message == want.message
    else:
        assert message.startswith(want.message + "; "), f"{message!r} does not start with {want.message!r}"


def tensor(module, name: str, array: np.ndarray, datatype: str, shape=None):
    """An input of `array`, sent with `shape` when given (the Triton tests' 'compromised shape')."""
    item = module.InferInput(name, list(array.shape), datatype)
    if module is httpclient:
        item.set_data_from_numpy(array, binary_data=True)
    else:
        item.set_data_from_numpy(array)
    if shape is not None:
        item.set_shape(list(shape))
    return item


ZEROS = np.zeros((1, 16), dtype=np.int32)


def simple_inputs(module, **overrides):
    inputs = {"INPUT0": tensor(module, "INPUT0", ZEROS, "INT32"), "INPUT1": tensor(module, "INPUT1", ZEROS, "INT32")}
    inputs.update(overrides)
    return [value for value in inputs.values() if value is not None]


PROTOCOLS = ["grpc", "http"]


# --------------------------------------------------------------------------- inference requests

# Each case: (id, call(module, client), expected). The same text comes back on both protocols: Triton's
# HTTP front end answers core's messages in {"error": ...} with the status HttpCodeFromError gives.
INFER_CASES = [
    # core model_lifecycle.cc ModelLifeCycle::GetModel, prefixed by ModelRepositoryManager::GetModel.
    ("unknown-model",
     lambda m, c: c.infer("no_such_model", simple_inputs(m)),
     Expected(grpc.StatusCode.NOT_FOUND, "404", "Request for unknown model: 'no_such_model' is not found")),
    ("unknown-version",
     lambda m, c: c.infer("simple", simple_inputs(m), model_version="7"),
     Expected(grpc.StatusCode.NOT_FOUND, "404", "Request for unknown model: 'simple' version 7 is not found")),
    # server common.cc GetModelVersionFromString (std::stol's what() is "stol").
    ("version-not-a-number",
     lambda m, c: c.infer("simple", simple_inputs(m), model_version="one"),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "failed to get model version from specified version string 'one' (details: stol), version "
              "should be an integral value > 0")),
    # ModelLifeCycle::GetModel: no READY version of a known model; Ferry adds why after Triton's text.
    ("no-available-version",
     lambda m, c: c.infer("corrupt", simple_inputs(m)),
     Expected(grpc.StatusCode.NOT_FOUND, "404",
              "Request for unknown model: 'corrupt' has no available versions", exact=False)),
    ("version-not-ready",
     lambda m, c: c.infer("corrupt", simple_inputs(m), model_version="1"),
     Expected(grpc.StatusCode.UNAVAILABLE, "503",
              "Request for unknown model: 'corrupt' version 1 is not at ready state", exact=False)),
    # core infer_request.cc Normalize, the input count, with LogRequest's tag.
    ("missing-input",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT1=None)),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'simple'. Got inputs "
              "['INPUT0'], but missing required inputs ['INPUT1']. Please provide all required inputs.")),
    ("request-id-tag",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT1=None), request_id="rid-7"),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: rid-7] expected 2 inputs but got 1 inputs for model 'simple'. Got inputs "
              "['INPUT0'], but missing required inputs ['INPUT1']. Please provide all required inputs.")),
    # core model.cc Model::GetInput (no tag: the model, not the request, words it).
    ("unknown-input",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT1=tensor(m, "INPUT9", ZEROS, "INT32"))),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400", "unexpected inference input 'INPUT9' for model 'simple'")),
    # core infer_request.cc AddOriginalInput.
    ("duplicate-input",
     lambda m, c: c.infer("simple", [*simple_inputs(m), tensor(m, "INPUT0", ZEROS, "INT32")]),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] input 'INPUT0' already exists in request")),
    # core infer_request.cc Normalize, the data type.
    ("wrong-datatype",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT0=tensor(m, "INPUT0", ZEROS.astype(np.float32), "FP32"))),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'FP32', but model 'simple' "
              "expects 'INT32'")),
    # core infer_request.cc Normalize, the shape, with its note for batching models.
    ("wrong-shape",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT0=tensor(m, "INPUT0", np.zeros((1, 15), np.int32), "INT32"))),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'simple'. Expected "
              f"[-1,16], got [1,15]. {BATCH_NOTE}")),
    # core infer_request.cc Normalize, the batch size.
    ("batch-over-max",
     lambda m, c: c.infer("simple", [tensor(m, name, np.zeros((9, 16), np.int32), "INT32") for name in ("INPUT0", "INPUT1")]),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] inference request batch-size must be <= 8 for 'simple'")),
    ("batch-sizes-differ",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT1=tensor(m, "INPUT1", np.zeros((2, 16), np.int32), "INT32"))),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] input 'INPUT1' batch size does not match other inputs for 'simple'")),
    # core infer_request.cc ValidateRequestInputs: the bytes must fit the shape (the Triton tests send 15
    # values under a 16-value shape the same way).
    ("byte-size",
     lambda m, c: c.infer("simple", simple_inputs(m, INPUT0=tensor(m, "INPUT0", np.zeros((1, 15), np.int32), "INT32", shape=(1, 16)))),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model 'simple'. "
              "Expected 64, got 60")),
    # core infer_request.cc ValidateBytesInputs: BYTES elements counted against the shape.
    ("string-elements-over",
     lambda m, c: c.infer("simple_identity", [tensor(m, "INPUT0", np.array([[b"a", b"b"]], dtype=np.object_), "BYTES", shape=(1, 1))]),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] unexpected number of string elements 2 for inference input 'INPUT0' "
              "for model 'simple_identity', expecting 1")),
    ("string-elements-under",
     lambda m, c: c.infer("simple_identity", [tensor(m, "INPUT0", np.array([[b"a"]], dtype=np.object_), "BYTES", shape=(1, 2))]),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
              "[request id: <id_unknown>] expected 2 string elements for inference input 'INPUT0' for model "
              "'simple_identity', got 1")),
    # core model.cc Model::GetOutput.
    ("unknown-output",
     lambda m, c: c.infer("simple", simple_inputs(m), outputs=[m.InferRequestedOutput("OUTPUT9")]),
     Expected(grpc.StatusCode.INVALID_ARGUMENT, "400", "unexpected inference output 'OUTPUT9' for model 'simple'")),
    # core DynamicBatchScheduler: a queued request whose timeout passed; Triton's own tests compare it whole.
    ("queue-timeout",
     lambda m, c: c.infer("add_one_queue", [tensor(m, "x", np.zeros((1, 4), np.float32), "FP32")], timeout=1000),
     Expected(grpc.StatusCode.UNAVAILABLE, "503", "Request timeout expired")),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", INFER_CASES, ids=[case[0] for case in INFER_CASES])
def test_inference_errors_are_tritons(request, protocol, case):
    _, call, want = case
    module = httpclient if protocol == "http" else grpcclient
    client = request.getfixturevalue(f"{protocol}_client")
    status, message = failure(lambda: call(module, client))
    check(status, message, want, protocol == "http")


def _raw_request(**inputs) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name, contents in inputs.items():
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        if isinstance(contents, bytes):
            request.raw_input_contents.append(contents)
        elif contents is not None:
            tensor.contents.int_contents.extend(contents)
    return request


# Requests tritonclient never builds, sent through the raw gRPC stub (grpc/infer_handler.cc InferGRPCToInput).
RAW_CASES = [
    ("contents-with-raw",
     _raw_request(INPUT0=ZEROS.tobytes(), INPUT1=[0] * 16),
     "contents field must not be specified when using raw_input_contents for 'INPUT1' for model 'simple'"),
    ("no-data",
     _raw_request(INPUT0=ZEROS.tobytes(), INPUT1=None),
     "unable to find data for input tensor 'INPUT1' for model 'simple' in request."),
]


@pytest.mark.parametrize("case", RAW_CASES, ids=[case[0] for case in RAW_CASES])
def test_grpc_data_source_errors_are_tritons(stub, case):
    _, raw, message = case
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(raw, timeout=TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == message


# --------------------------------------------------------------------------- other RPCs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata_config_and_statistics_errors_are_tritons(request, protocol):
    client = request.getfixturevalue(f"{protocol}_client")
    http = protocol == "http"
    # ModelMetadata and ModelConfig resolve the model as inference does (ModelRepositoryManager::GetModel).
    unknown = Expected(grpc.StatusCode.NOT_FOUND, "404", "Request for unknown model: 'no_such_model' is not found")
    check(*failure(lambda: client.get_model_metadata("no_such_model")), unknown, http)
    check(*failure(lambda: client.get_model_config("no_such_model")), unknown, http)
    check(*failure(lambda: client.get_model_config("simple", "9")),
          Expected(grpc.StatusCode.NOT_FOUND, "404", "Request for unknown model: 'simple' version 9 is not found"),
          http)
    # core tritonserver.cc TRITONSERVER_ServerModelStatistics.
    check(*failure(lambda: client.get_inference_statistics("no_such_model")),
          Expected(grpc.StatusCode.INVALID_ARGUMENT, "400", "requested model 'no_such_model' is not available"),
          http)
    check(*failure(lambda: client.get_inference_statistics("simple", "9")),
          Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
                   "requested model version is not available for model 'simple'"),
          http)
    # ModelReady: only a version string that is not a number is an error (grpc_server.cc RegisterModelReady).
    assert not client.is_model_ready("corrupt")
    assert not client.is_model_ready("no_such_model")
    # core model_repository_manager.cc LoadUnloadModel, outside explicit mode.
    check(*failure(lambda: client.load_model("simple")),
          Expected(grpc.StatusCode.UNAVAILABLE, "503",
                   "explicit model load / unload is not allowed if polling is enabled"),
          http)
    check(*failure(lambda: client.unload_model("simple")),
          Expected(grpc.StatusCode.UNAVAILABLE, "503",
                   "explicit model load / unload is not allowed if polling is enabled"),
          http)


def test_model_ready_with_a_bad_version_is_invalid(grpc_client):
    """grpc_server.cc RegisterModelReady parses the version first (common.cc GetModelVersionFromString)."""
    status, message = failure(lambda: grpc_client.is_model_ready("simple", "one"))
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert message == (
        "failed to get model version from specified version string 'one' (details: stol), version should "
        "be an integral value > 0"
    )


def test_http_model_not_ready_and_unknown_paths_are_tritons():
    """http_server.cc: HandleModelReady answers 400 "Model version not ready"; HandleServerHealth and an
    unknown path answer 400 with no body; a wrong method is 405 "Method Not Allowed"."""
    base = f"http://{_url('FERRY_HTTP_URL')}"

    def send(method: str, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=TIMEOUT_S) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    assert send("GET", "/v2/models/corrupt/ready") == (400, b'{"error":"Model version not ready"}')
    assert send("GET", "/v2/nothing/here") == (400, b"")
    assert send("DELETE", "/v2/models/simple") == (405, b'{"error":"Method Not Allowed"}')


def test_shared_memory_errors_are_tritons(grpc_client):
    """src/shared_memory_manager.cc: RegisterSystemSharedMemory, GetStatus, OpenSharedMemoryRegion."""
    key = f"/ferry_messages_{os.getpid()}"
    handle = shm.create_shared_memory_region("msgs", key, 64)
    try:
        grpc_client.register_system_shared_memory("msgs", key, 64)
        status, message = failure(lambda: grpc_client.register_system_shared_memory("msgs", key, 64))
        assert (status, message) == (str(grpc.StatusCode.ALREADY_EXISTS), "shared memory region 'msgs' already in manager")
        status, message = failure(lambda: grpc_client.register_system_shared_memory("past", key, 32, offset=48))
        assert status == str(grpc.StatusCode.INVALID_ARGUMENT)
        assert message.startswith("failed to register shared memory region 'past': invalid args; "), message
        status, message = failure(lambda: grpc_client.get_system_shared_memory_status("nowhere"))
        assert (status, message) == (
            str(grpc.StatusCode.NOT_FOUND), "Unable to find system shared memory region: 'nowhere'"
        )
        missing = f"/ferry_messages_missing_{os.getpid()}"
        status, message = failure(lambda: grpc_client.register_system_shared_memory("missing", missing, 8))
        assert status == str(grpc.StatusCode.INTERNAL)
        assert message.startswith(f"Unable to open shared memory region: '{missing}'; "), message
        # grpc/infer_handler.cc ParseSharedMemoryParams and ResponseAllocatorHelper.
        inputs = simple_inputs(grpcclient)
        output = grpcclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("msgs", 32)
        status, message = failure(lambda: grpc_client.infer("simple", inputs, outputs=[output]))
        assert (status, message) == (
            str(grpc.StatusCode.INTERNAL),
            "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at "
            "least 64 bytes to hold the results",
        )
        inputs[0].set_shared_memory("unregistered", 64)
        status, message = failure(lambda: grpc_client.infer("simple", inputs))
        assert (status, message) == (str(grpc.StatusCode.NOT_FOUND), "Unable to find shared memory region: 'unregistered'")
    finally:
        grpc_client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle)


# --------------------------------------------------------------------------- explicit mode and the server name


def test_server_name_is_ferry_by_default_and_configurable(grpc_client, http_client, explicit_grpc, explicit_http):
    """ServerMetadata's name: "ferry" unless --server-name says otherwise ("triton" for a drop-in)."""
    assert grpc_client.get_server_metadata().name == "ferry"
    assert http_client.get_server_metadata()["name"] == "ferry"
    assert explicit_grpc.get_server_metadata().name == "triton"
    assert explicit_http.get_server_metadata()["name"] == "triton"


def test_explicit_index_lists_every_model(explicit_grpc, explicit_http, explicit_stub):
    """core model_repository_manager.cc RepositoryIndex lists every model folder; tritonserver.cc
    TRITONSERVER_ServerModelIndex writes a model never loaded with its name only (gRPC: empty version,
    state and reason); with ready=true only READY versions are listed."""
    rows = {(m.name, m.version): (m.state, m.reason) for m in explicit_grpc.get_model_repository_index().models}
    assert rows[("simple", "1")] == ("READY", "")
    for never_loaded in ("simple_int8", "simple_string", "densenet_onnx", "bad_config"):
        assert rows[(never_loaded, "")] == ("", ""), never_loaded
    index = explicit_http.get_model_repository_index()
    by_name = {entry["name"]: entry for entry in index}
    assert by_name["simple"] == {"name": "simple", "version": "1", "state": "READY"}
    for never_loaded in ("simple_int8", "simple_string", "densenet_onnx", "bad_config"):
        assert by_name[never_loaded] == {"name": never_loaded}
    ready = explicit_stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=TIMEOUT_S)
    assert [(m.name, m.version, m.state) for m in ready.models] == [("simple", "1", "READY")]
    request = urllib.request.Request(
        f"http://{_url('FERRY_EXPLICIT_HTTP_URL')}/v2/repository/index", data=b'{"ready": true}', method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
        assert json.loads(answer.read()) == [{"name": "simple", "version": "1", "state": "READY"}]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_explicit_load_errors_are_tritons(request, protocol):
    """core model_repository_manager.cc LoadUnloadModel and LoadUnloadModels."""
    client = request.getfixturevalue(f"explicit_{protocol}")
    http = protocol == "http"
    # A model in no repository cannot be polled.
    check(*failure(lambda: client.load_model("nope")),
          Expected(grpc.StatusCode.INTERNAL, "500",
                   "failed to load 'nope', failed to poll from model repository; model not found in any model "
                   "repository"),
          http)
    # A malformed config override fails the poll too (InitializeModelInfo, "Invalid config override").
    check(*failure(lambda: client.load_model("simple", config="{not json")),
          Expected(grpc.StatusCode.INTERNAL, "500",
                   "failed to load 'simple', failed to poll from model repository", exact=False),
          http)
    # A version that fails to load (ModelLifeCycle::OnLoadComplete's reason, one line per model).
    status, message = failure(lambda: client.load_model("corrupt"))
    assert status == ("400" if http else str(grpc.StatusCode.INVALID_ARGUMENT)), message
    assert message.startswith("load failed for model 'corrupt': version 1 is at UNAVAILABLE state: "), message
    assert message.endswith(";\n"), message
    # Names Triton refuses (ValidateModelName); over HTTP such a name is not one path segment.
    if not http:
        check(*failure(lambda: client.load_model("../simple")),
              Expected(grpc.StatusCode.INVALID_ARGUMENT, "400",
                       "invalid model name '../simple', model name must not contain path traversal characters"),
              http)
    # Unloading a model that is not loaded succeeds, as in Triton; the served model is untouched.
    client.unload_model("simple_int8")
    client.unload_model("nope")
    assert client.is_model_ready("simple")


# --------------------------------------------------------------------------- malformed REST bodies

_SIMPLE_INPUT1 = {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}
_UINT = "attempt to access JSON non-unsigned-integer as unsigned-integer"

# (case, path, headers, body, status, Triton's text the message starts with). Triton's JSON reader
# (`TritonJson` in triton_json.h) reports INTERNAL errors, which http_server.cc's HttpCodeFromError answers 500.
_MALFORMED_BODIES = [
    # TritonJson::Value::Parse, via EVBufferToJson in http_server.cc.
    ("not JSON", "/v2/models/simple/infer", {}, b"{inputs", 500,
     "failed to parse the request JSON buffer: Missing a name for object member. at 1"),
    ("index not JSON", "/v2/repository/index", {}, b"{", 500,
     "failed to parse the request JSON buffer: Missing a name for object member. at 1"),
    # ParseJsonTritonIO: MemberAsArray("inputs") under "Unable to parse 'inputs'".
    ("no inputs", "/v2/models/simple/infer", {}, b"{}", 500,
     "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"),
    # ParseJsonTritonIO: MemberAsString("name").
    ("input without name", "/v2/models/simple/infer", {},
     json.dumps({"inputs": [{"datatype": "INT32", "shape": [1, 16], "data": [0] * 16}, _SIMPLE_INPUT1]}).encode(),
     500, "Unable to parse 'name': attempt to access non-existing object member 'name'"),
    # ParseJsonTritonIO: IndexAsUInt on each dimension.
    ("negative dimension", "/v2/models/simple/infer", {},
     json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16], "data": [0] * 16},
                            _SIMPLE_INPUT1]}).encode(),
     500, f"Unable to parse 'shape': {_UINT}"),
    # ReadDataFromJson: the count of values differs from the shape.
    ("count differs", "/v2/models/simple/infer", {},
     json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [0] * 15},
                            _SIMPLE_INPUT1]}).encode(),
     500, "Unable to parse 'data': Shape does not match true shape of 'data' field"),
    # ReadDataFromJsonHelper: AsInt on an INT32 element.
    ("not an integer", "/v2/models/simple/infer", {},
     json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [0.5] * 16},
                            _SIMPLE_INPUT1]}).encode(),
     500, "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer"),
    # ParseJsonTritonParams: MemberAsUInt("priority").
    ("negative priority", "/v2/models/simple/infer", {},
     json.dumps({"parameters": {"priority": -1}, "inputs": [dict(_SIMPLE_INPUT1, name="INPUT0"), _SIMPLE_INPUT1]}).encode(),
     500, f"Unable to parse 'priority': {_UINT}"),
    # SetTritonParameterFromJsonParameter.
    ("array parameter", "/v2/models/simple/infer", {},
     json.dumps({"parameters": {"k": [1]}, "inputs": [dict(_SIMPLE_INPUT1, name="INPUT0"), _SIMPLE_INPUT1]}).encode(),
     400, "parameter 'k' has invalid type. It should be either 'int', 'bool', or 'string'."),
    # ParseJsonTritonIO: binary data shorter than binary_data_size.
    ("binary too short", "/v2/models/simple/infer", {"Inference-Header-Content-Length": "HEADER"},
     [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
      {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}],
     400, "unexpected size for input 'INPUT1', expecting 54 additional bytes for model 'simple'"),
    # GetInferenceHeaderLength: a length past the body.
    ("header past the body", "/v2/models/simple/infer", {"Inference-Header-Content-Length": "100000"},
     json.dumps({"inputs": [dict(_SIMPLE_INPUT1, name="INPUT0"), _SIMPLE_INPUT1]}).encode(),
     400, "inference header size should be in range (0, "),
    # HandleRepositoryControl: "Unable to parse 'unload_dependents'".
    ("unload_dependents not a boolean", "/v2/repository/models/simple/unload", {},
     json.dumps({"parameters": {"unload_dependents": "yes"}}).encode(), 500,
     "Unable to parse 'unload_dependents': attempt to access JSON non-boolean as boolean"),
]


@pytest.mark.parametrize("case", _MALFORMED_BODIES, ids=[c[0] for c in _MALFORMED_BODIES])
def test_malformed_rest_bodies_get_tritons_texts(case):
    """Raw HTTP (tritonclient cannot send these bodies); each case names the http_server.cc function."""
    import http.client

    _, path, headers, body, status, text = case
    headers = dict(headers)
    if isinstance(body, list):
        header = json.dumps({"inputs": body}).encode()
        headers["Inference-Header-Content-Length"] = str(len(header))
        body = header + bytes(64) + bytes(10)
    host, port = _url("FERRY_HTTP_URL").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == status, answer
    assert answer["error"].startswith(text), answer
