"""REST interop tests: a running Ferry server, driven by NVIDIA's `tritonclient.http`.

Ferry's HTTP/REST front end must look like Triton's to `tritonclient.http`, with tensors sent
both as JSON and with the binary tensor data extension. Every numeric answer is checked
against the `onnxruntime` Python package run on the same inputs and the same .onnx files.

Run (the server must serve BOTH repositories, i.e. two --model-repository flags):

    <start ferry with --model-repository examples/model_repository
                      --model-repository tests/model_repository --http-port 8000>
    FERRY_HTTP_URL=127.0.0.1:8000 FERRY_REPO_ROOT=$PWD pytest tests/python/test_http.py

Environment (both required: without them the run FAILS, it is never skipped):
    FERRY_HTTP_URL   host:port of Ferry's HTTP/REST endpoint
    FERRY_REPO_ROOT  the repository root holding examples/ and tests/
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from reference import (  # noqa: E402  (tests/python is on pytest's path)
    REPOSITORIES,
    assert_tensor_equal,
    model_dir,
    random_tensor,
    run_reference,
)

URL_ENV = "FERRY_HTTP_URL"
ROOT_ENV = "FERRY_REPO_ROOT"
TIMEOUT_S = 30.0

# identity_types has one IN_<DT>/OUT_<DT> pair per entry (BF16 is a model of its own).
IDENTITY_TYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]
# JSON has no form for FP16 (nor for NaN and infinities): FP16 always travels as binary data.
JSON_TYPES = [dt for dt in IDENTITY_TYPES if dt != "FP16"]


# --------------------------------------------------------------------------- fixtures


def _required_env(name: str, example: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(
            f"FAILED: {name} is not set. These tests need a running Ferry server started with "
            f"--model-repository examples/model_repository --model-repository tests/model_repository; "
            f"set {URL_ENV} to host:port of its HTTP endpoint and {ROOT_ENV} to the repository root "
            f"(e.g. {name}={example}).",
            returncode=1,
        )
    return value


@pytest.fixture(scope="session")
def repo_root() -> Path:
    root = Path(_required_env(ROOT_ENV, "$PWD"))
    for repo in REPOSITORIES:
        if not (root / repo).is_dir():
            pytest.exit(f"FAILED: {root / repo} does not exist: {ROOT_ENV} must be Ferry's repository root", returncode=1)
    return root


@pytest.fixture(scope="session")
def client():
    url = _required_env(URL_ENV, "127.0.0.1:8000")
    c = httpclient.InferenceServerClient(url=url, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)
    try:
        live = c.is_server_live()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same thing here
        c.close()
        pytest.exit(f"FAILED: cannot reach Ferry at {URL_ENV}={url}: {exc}", returncode=1)
    assert live, "the server answered but is not live"
    yield c
    c.close()


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test id: random, but reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------- onnxruntime reference


def onnx_file(root: Path, model: str, version: str) -> Path:
    return model_dir(root, model) / version / "model.onnx"


# --------------------------------------------------------------------------- data helpers


def make_inputs(feeds: dict[str, np.ndarray], datatypes: dict[str, str], binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for name, data in feeds.items():
        tensor = httpclient.InferInput(name, list(data.shape), datatypes[name])
        # FP16 has no JSON form: it is binary whatever the rest of the request does.
        tensor.set_data_from_numpy(data, binary_data=binary or datatypes[name] == "FP16")
        inputs.append(tensor)
    return inputs


def assert_http_error(call, status: str, needles=()) -> str:
    """`call` must fail with HTTP `status` and a message holding every needle."""
    try:
        result = call()
    except InferenceServerException as exc:
        got, message = exc.status() or "", exc.message() or ""
    else:
        raise AssertionError(f"expected HTTP {status}, but the call succeeded: {result!r}")
    assert got == status, f"expected HTTP {status}, got {got}: {message!r}"
    for needle in needles:
        assert needle.lower() in message.lower(), f"error message {message!r} should mention {needle!r}"
    return message


# --------------------------------------------------------------------------- health, metadata, config


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "ferry"
    assert "model_repository" in metadata["extensions"]


def test_model_readiness(client):
    assert client.is_model_ready("simple")
    assert client.is_model_ready("mlp_classifier", "1")
    assert client.is_model_ready("mlp_classifier", "2")
    assert not client.is_model_ready("mlp_classifier", "3")
    assert not client.is_model_ready("corrupt")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata_and_config(client):
    metadata = client.get_model_metadata("mlp_classifier")
    assert metadata["name"] == "mlp_classifier"
    assert metadata["versions"] == ["2", "1"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 32]}]
    assert {o["name"] for o in metadata["outputs"]} == {"probabilities", "label"}
    assert client.get_model_metadata("simple", "1")["platform"] == "onnxruntime_onnx"
    config = client.get_model_config("simple")
    assert config["name"] == "simple"
    assert config["max_batch_size"] == 8
    assert [i["name"] for i in config["input"]] == ["INPUT0", "INPUT1"]
    assert config["input"][0]["dims"] == [16]
    assert config["input"][0]["data_type"] == "TYPE_INT32"
    auto = client.get_model_config("linear_auto")
    assert auto["max_batch_size"] == 4 and auto["input"][0]["dims"] == [8]
    assert_http_error(lambda: client.get_model_metadata("no_such_model"), "404", ["no_such_model"])
    assert_http_error(lambda: client.get_model_config("simple", "9"), "404", ["9"])


def test_repository_index_and_statistics(client):
    index = client.get_model_repository_index()
    states = {(m["name"], m.get("version", "")): m["state"] for m in index}
    assert states[("simple", "1")] == "READY"
    assert states[("mlp_classifier", "2")] == "READY"
    corrupt = [m for m in index if m["name"] == "corrupt"]
    assert corrupt and all(m["state"] == "UNAVAILABLE" and m["reason"] for m in corrupt)
    stats = client.get_inference_statistics("simple")
    assert [(s["name"], s["version"]) for s in stats["model_stats"]] == [("simple", "1")]
    assert "success" in stats["model_stats"][0]["inference_stats"]
    everything = client.get_inference_statistics()
    assert {"simple", "mlp_classifier"} <= {s["name"] for s in everything["model_stats"]}


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_simple_int32(client, repo_root, rng, binary_in, binary_out):
    a = rng.integers(-1000, 1000, size=(3, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(3, 16), dtype=np.int32)
    feeds = {"INPUT0": a, "INPUT1": b}
    inputs = make_inputs(feeds, {"INPUT0": "INT32", "INPUT1": "INT32"}, binary_in)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("simple", inputs, outputs=outputs, request_id="req-1")
    response = result.get_response()
    assert response["model_name"] == "simple" and response["model_version"] == "1"
    assert response["id"] == "req-1"
    expected = run_reference(onnx_file(repo_root, "simple", "1"), feeds)
    for name in ("OUTPUT0", "OUTPUT1"):
        assert_tensor_equal(result.as_numpy(name), expected[name], "INT32", exact=True, what=name)


@pytest.mark.parametrize("version", ["", "1", "2"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_mlp_classifier_fp32(client, repo_root, rng, version, binary):
    features = rng.normal(0.0, 1.0, size=(4, 32)).astype(np.float32)
    inputs = make_inputs({"features": features}, {"features": "FP32"}, binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
    result = client.infer("mlp_classifier", inputs, model_version=version, outputs=outputs)
    served = version or "2"
    assert result.get_response()["model_version"] == served
    expected = run_reference(onnx_file(repo_root, "mlp_classifier", served), {"features": features})
    assert_tensor_equal(result.as_numpy("probabilities"), expected["probabilities"], "FP32", exact=False, what="probabilities")
    assert_tensor_equal(result.as_numpy("label"), expected["label"], "INT64", exact=True, what="label")


def test_all_outputs_come_back_binary_when_none_is_named(client, repo_root, rng):
    features = rng.normal(0.0, 1.0, size=(2, 32)).astype(np.float32)
    result = client.infer("mlp_classifier", make_inputs({"features": features}, {"features": "FP32"}, False))
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert all("binary_data_size" in o.get("parameters", {}) for o in outputs.values()), outputs
    expected = run_reference(onnx_file(repo_root, "mlp_classifier", "2"), {"features": features})
    assert_tensor_equal(result.as_numpy("probabilities"), expected["probabilities"], "FP32", exact=False, what="probabilities")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_identity_types_every_datatype(client, repo_root, rng, binary):
    """Every datatype round trips exactly; FP16 as binary data in both runs, BYTES as JSON strings
    (UTF-8) in the JSON run."""
    feeds = {f"IN_{dt}": random_tensor(rng, dt, (2 + i,)) for i, dt in enumerate(IDENTITY_TYPES)}
    datatypes = {f"IN_{dt}": dt for dt in IDENTITY_TYPES}
    outputs = [
        httpclient.InferRequestedOutput(f"OUT_{dt}", binary_data=binary or dt == "FP16") for dt in IDENTITY_TYPES
    ]
    result = client.infer("identity_types", make_inputs(feeds, datatypes, binary), outputs=outputs)
    expected = run_reference(onnx_file(repo_root, "identity_types", "1"), feeds)
    for dt in IDENTITY_TYPES:
        name = f"OUT_{dt}"
        assert_tensor_equal(result.as_numpy(name), expected[name], dt, exact=True, what=f"{name} ({'binary' if binary else 'json'})")


def test_special_float_values_travel_as_binary(client):
    """NaN, infinities and -0.0 have no JSON form; as binary data they come back bit for bit."""
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(np.float32).max], dtype=np.float32)
    feeds = {f"IN_{dt}": np.zeros((1,), dtype=triton_to_np_dtype(dt)) for dt in IDENTITY_TYPES if dt != "BYTES"}
    feeds["IN_BYTES"] = np.array([b"x"], dtype=np.object_)
    feeds["IN_FP32"] = special
    datatypes = {f"IN_{dt}": dt for dt in IDENTITY_TYPES}
    result = client.infer(
        "identity_types",
        make_inputs(feeds, datatypes, True),
        outputs=[httpclient.InferRequestedOutput("OUT_FP32", binary_data=True)],
    )
    assert result.as_numpy("OUT_FP32").tobytes() == special.tobytes()
    # The same output asked for as JSON is refused with a message that says what to do.
    assert_http_error(
        lambda: client.infer(
            "identity_types",
            make_inputs(feeds, datatypes, True),
            outputs=[httpclient.InferRequestedOutput("OUT_FP32", binary_data=False)],
        ),
        "400",
        ["OUT_FP32", "binary_data"],
    )


# --------------------------------------------------------------------------- errors


def test_errors_carry_triton_statuses(client):
    a = np.zeros((1, 16), dtype=np.int32)
    inputs = make_inputs({"INPUT0": a, "INPUT1": a}, {"INPUT0": "INT32", "INPUT1": "INT32"}, False)
    assert_http_error(lambda: client.infer("no_such_model", inputs), "404", ["no_such_model"])
    assert_http_error(lambda: client.infer("simple", inputs, model_version="7"), "404", ["7"])
    # Triton's statuses: no version available is NOT_FOUND (404), a version not ready UNAVAILABLE (503).
    assert_http_error(lambda: client.infer("corrupt", inputs), "404", ["corrupt", "has no available versions"])
    assert_http_error(
        lambda: client.infer("corrupt", inputs, model_version="1"), "503", ["corrupt", "not at ready state"]
    )
    wrong = make_inputs({"INPUT0": a.astype(np.float32), "INPUT1": a}, {"INPUT0": "FP32", "INPUT1": "INT32"}, True)
    assert_http_error(lambda: client.infer("simple", wrong), "400", ["INPUT0", "FP32", "INT32"])
    fp16 = httpclient.InferInput("INPUT0", [1, 16], "FP16")
    fp16.set_data_from_numpy(np.zeros((1, 16), dtype=np.float16), binary_data=False)
    assert_http_error(lambda: client.infer("simple", [fp16, inputs[1]]), "400", ["FP16", "binary"])
    assert_http_error(
        lambda: client.infer("simple", inputs, outputs=[httpclient.InferRequestedOutput("OUTPUT9")]),
        "400",
        ["OUTPUT9"],
    )
