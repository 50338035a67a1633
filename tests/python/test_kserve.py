"""Interop with KServe's own Python client (`kserve` from PyPI): its v2 `InferenceGRPCClient` and
`InferenceRESTClient` against a running Ferry, so that KServe users can put Ferry where Triton was.

Run (the server must serve BOTH repositories and the REST front end):

    FERRY_GRPC_URL=127.0.0.1:8001 FERRY_HTTP_URL=127.0.0.1:8000 FERRY_REPO_ROOT=$PWD \
        pytest tests/python/test_kserve.py

Environment:
    FERRY_GRPC_URL   host:port of Ferry's gRPC endpoint (required: without it every test FAILS)
    FERRY_HTTP_URL   host:port of Ferry's HTTP/REST endpoint (required, likewise)
    FERRY_REPO_ROOT  the repository root holding examples/ and tests/ (defaults to this checkout)

KServe's clients have calls for health and inference only; server and model metadata go through KServe's own
generated v2 stubs (`kserve.protocol.grpc.grpc_predict_v2_pb2_grpc`) and, over REST, are read into KServe's own
v2 data models (`kserve.protocol.rest.v2_datamodels`), which reject a body that does not fit the spec. Every
numeric answer is checked against the `onnxruntime` Python package on the same model and inputs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.rest.v2_datamodels import (
    ModelMetadataResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)

from reference import assert_tensor_equal, model_dir, random_tensor, run_reference

TIMEOUT_S = 30.0
# identity_typed's inputs (IN_<type> -> OUT_<type>): every datatype that has a typed field in the protocol.
TYPED = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64", "BYTES"]
# KServe's client encodes BYTES as UTF-8 text in REST JSON, so the REST round trip uses text-safe samples.
TEXT_BYTES = [b"", b"ferry", "h\u00e9llo \u2603".encode(), b"x" * 300]


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set: start Ferry and set it to host:port", returncode=1)
    return value


@pytest.fixture(scope="session")
def grpc_url() -> str:
    return _required_env("FERRY_GRPC_URL")


@pytest.fixture(scope="session")
def rest_base() -> str:
    return f"http://{_required_env('FERRY_HTTP_URL')}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(os.environ.get("FERRY_REPO_ROOT") or Path(__file__).resolve().parents[2])


def run(coroutine):
    """Runs one of KServe's async client calls to completion (its clients are asyncio-only)."""
    return asyncio.run(coroutine)


async def _with_grpc(grpc_url: str, call):
    # retries=0: a request that fails must fail at once with the server's status, not be retried.
    async with InferenceGRPCClient(grpc_url, timeout=TIMEOUT_S, retries=0) as client:
        return await call(client)


async def _with_rest(call):
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=TIMEOUT_S, retries=0)) as client:
        return await call(client)


async def _with_stub(grpc_url: str, call):
    async with grpc.aio.insecure_channel(grpc_url) as channel:
        return await call(GRPCInferenceServiceStub(channel))


def _input(name: str, array: np.ndarray, datatype: str, *, binary: bool) -> InferInput:
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _simple_request(a: np.ndarray, b: np.ndarray, *, binary: bool, model: str = "simple") -> InferRequest:
    return InferRequest(
        model_name=model,
        infer_inputs=[_input("INPUT0", a, "INT32", binary=binary), _input("INPUT1", b, "INT32", binary=binary)],
        request_id="kserve-simple",
    )


def _simple_feeds() -> tuple[np.ndarray, np.ndarray]:
    base = np.arange(16, dtype=np.int32).reshape(1, 16)
    return base, base * 3 - 7


def _output(response, name: str) -> np.ndarray:
    output = response.get_output_by_name(name)
    assert output is not None, f"output {name} missing from {response}"
    return output.as_numpy()


# --------------------------------------------------------------------------- health


def test_grpc_health(grpc_url):
    async def check(client: InferenceGRPCClient):
        return (
            await client.is_server_live(),
            await client.is_server_ready(),
            await client.is_model_ready("simple"),
            # Triton answers ModelReady for a model it does not know with ready false, not an error
            # (`InferenceServer::ModelIsReady` in core/src/server.cc).
            await client.is_model_ready("no_such_model"),
        )

    assert run(_with_grpc(grpc_url, check)) == (True, True, True, False)


def test_rest_health_reads_the_v2_bodies(rest_base):
    async def check(client: InferenceRESTClient):
        return (
            await client.is_server_live(rest_base),
            await client.is_server_ready(rest_base),
            await client.is_model_ready(rest_base, "simple"),
            await client.is_model_ready(rest_base, "no_such_model"),
        )

    # `is_server_live` / `is_server_ready` return the body's "live" / "ready" value: None for Triton's empty body.
    assert run(_with_rest(check)) == (True, True, True, False)
    assert ServerLiveResponse.model_validate_json(httpx.get(f"{rest_base}/v2/health/live").content).live
    assert ServerReadyResponse.model_validate_json(httpx.get(f"{rest_base}/v2/health/ready").content).ready


# --------------------------------------------------------------------------- metadata


def test_grpc_server_and_model_metadata(grpc_url):
    async def fetch(stub: GRPCInferenceServiceStub):
        server = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT_S)
        model = await stub.ModelMetadata(pb.ModelMetadataRequest(name="simple"), timeout=TIMEOUT_S)
        return server, model

    server, model = run(_with_stub(grpc_url, fetch))
    assert server.name == "ferry"
    assert "model_repository" in server.extensions
    assert (model.name, model.platform) == ("simple", "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    assert [t.name for t in model.outputs] == ["OUTPUT0", "OUTPUT1"]


def test_rest_server_and_model_metadata_fit_kserve_models(rest_base):
    server = ServerMetadataResponse.model_validate_json(httpx.get(f"{rest_base}/v2").content)
    assert server.name == "ferry" and "model_repository" in server.extensions
    model = ModelMetadataResponse.model_validate_json(httpx.get(f"{rest_base}/v2/models/mlp_classifier").content)
    assert model.versions == ["2", "1"]
    assert [(t.name, t.datatype, t.shape) for t in model.inputs] == [("features", "FP32", [-1, 32])]


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("binary", [True, False], ids=["raw", "typed"])
def test_grpc_infer_int32(grpc_url, binary):
    a, b = _simple_feeds()
    response = run(_with_grpc(grpc_url, lambda client: client.infer(_simple_request(a, b, binary=binary))))
    assert response.id == "kserve-simple"
    np.testing.assert_array_equal(_output(response, "OUTPUT0"), a + b)
    np.testing.assert_array_equal(_output(response, "OUTPUT1"), a - b)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_rest_infer_int32(rest_base, binary):
    a, b = _simple_feeds()
    request = _simple_request(a, b, binary=binary)
    response = run(_with_rest(lambda client: client.infer(rest_base, request, model_name="simple")))
    np.testing.assert_array_equal(_output(response, "OUTPUT0"), a + b)
    np.testing.assert_array_equal(_output(response, "OUTPUT1"), a - b)


def _mlp_request(features: np.ndarray, *, binary: bool) -> InferRequest:
    return InferRequest(
        model_name="mlp_classifier",
        infer_inputs=[_input("features", features, "FP32", binary=binary)],
    )


def test_grpc_and_rest_infer_fp32_match_onnxruntime(grpc_url, rest_base, repo_root):
    features = np.random.default_rng(14).normal(size=(3, 32)).astype(np.float32)
    # No version asked for: the newest (2) answers, over both transports.
    expected = run_reference(model_dir(repo_root, "mlp_classifier") / "2" / "model.onnx", {"features": features})
    over_grpc = run(_with_grpc(grpc_url, lambda client: client.infer(_mlp_request(features, binary=True))))
    over_rest = run(
        _with_rest(
            lambda client: client.infer(rest_base, _mlp_request(features, binary=False), model_name="mlp_classifier")
        )
    )
    for response in (over_grpc, over_rest):
        for name, datatype in [("probabilities", "FP32"), ("label", "INT64")]:
            assert_tensor_equal(_output(response, name), expected[name], datatype, exact=False, what=name)


def test_grpc_infer_bytes(grpc_url):
    # simple_string (Triton's example twin): decimal strings in, their sums and differences out as strings.
    a = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    b = np.array([[b"1"] * 16], dtype=np.object_)
    request = InferRequest(
        model_name="simple_string",
        infer_inputs=[_input("INPUT0", a, "BYTES", binary=True), _input("INPUT1", b, "BYTES", binary=True)],
    )
    response = run(_with_grpc(grpc_url, lambda client: client.infer(request)))
    assert [bytes(x) for x in _output(response, "OUTPUT0").flat] == [str(i + 1).encode() for i in range(16)]
    assert [bytes(x) for x in _output(response, "OUTPUT1").flat] == [str(i - 1).encode() for i in range(16)]


def _typed_feeds(seed: int, *, text_bytes: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {f"IN_{datatype}": random_tensor(rng, datatype, (5,)) for datatype in TYPED}
    if text_bytes:
        feeds["IN_BYTES"] = np.array(TEXT_BYTES + [b"ok"], dtype=np.object_)
    return feeds


@pytest.mark.parametrize("transport", ["grpc-raw", "grpc-typed", "rest-binary", "rest-json"])
def test_every_typed_datatype_round_trips(grpc_url, rest_base, repo_root, transport):
    """identity_typed returns each of its twelve inputs unchanged: BOOL, every integer width, FP32, FP64, BYTES."""
    binary = transport.endswith(("raw", "binary"))
    feeds = _typed_feeds(len(transport), text_bytes=not binary)
    request = InferRequest(
        model_name="identity_typed",
        infer_inputs=[_input(name, array, name[3:], binary=binary) for name, array in feeds.items()],
    )
    if transport.startswith("grpc"):
        response = run(_with_grpc(grpc_url, lambda client: client.infer(request)))
    else:
        response = run(_with_rest(lambda client: client.infer(rest_base, request, model_name="identity_typed")))
    expected = run_reference(model_dir(repo_root, "identity_typed") / "1" / "model.onnx", feeds)
    for datatype in TYPED:
        name = f"OUT_{datatype}"
        assert_tensor_equal(_output(response, name), expected[name], datatype, exact=True, what=f"{transport} {name}")


# --------------------------------------------------------------------------- errors


def test_grpc_errors_carry_tritons_status(grpc_url):
    a, b = _simple_feeds()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        run(_with_grpc(grpc_url, lambda client: client.infer(_simple_request(a, b, binary=True, model="nope"))))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in unknown.value.details()

    # FP32 where the model takes INT32: INVALID_ARGUMENT naming the input (Triton's `ValidateInputs`).
    wrong = InferRequest(
        model_name="simple",
        infer_inputs=[_input("INPUT0", a.astype(np.float32), "FP32", binary=True), _input("INPUT1", b, "INT32", binary=True)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        run(_with_grpc(grpc_url, lambda client: client.infer(wrong)))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INPUT0" in invalid.value.details()


def test_rest_errors_carry_tritons_status(rest_base):
    a, b = _simple_feeds()
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        run(_with_rest(lambda client: client.infer(rest_base, _simple_request(a, b, binary=False), model_name="nope")))
    assert unknown.value.response.status_code == 404
    # KServe's client puts the JSON body's "error" in its message.
    assert "nope" in str(unknown.value)

    short = _simple_request(a[:, :15], b[:, :15], binary=False)
    with pytest.raises(httpx.HTTPStatusError) as invalid:
        run(_with_rest(lambda client: client.infer(rest_base, short, model_name="simple")))
    assert invalid.value.response.status_code == 400
    assert "INPUT0" in str(invalid.value)
