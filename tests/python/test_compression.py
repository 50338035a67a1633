"""Compression through NVIDIA's Python clients, as Triton serves it.

- gRPC: `compression_algorithm="gzip"|"deflate"` on `infer` and on `start_stream` compresses every
  request message (gRPC's own per-message compression); the server started by the Rust runner compresses
  its inference answers too (`--grpc-infer-response-compression-level low`), which the client inflates.
- REST: `request_compression_algorithm` sends the body with `Content-Encoding`, and
  `response_compression_algorithm` asks for a compressed answer with `Accept-Encoding`, with tensors as
  JSON and as binary data (`Inference-Header-Content-Length` counts in the uncompressed body, as in
  Triton's `HandleInfer`, src/http_server.cc).

Environment (required; the run fails without them):
    FERRY_GRPC_URL   host:port of Ferry's gRPC endpoint
    FERRY_HTTP_URL   host:port of Ferry's HTTP/REST endpoint
Both must serve examples/model_repository (`simple`) and tests/model_repository (`simple_identity`).
"""

from __future__ import annotations

import os
import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ALGORITHMS = ["gzip", "deflate"]


def _url(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(f"{name} is not set: start Ferry and point the tests at it")
    return value


@pytest.fixture(scope="module")
def grpc_client():
    with grpcclient.InferenceServerClient(_url("FERRY_GRPC_URL")) as client:
        yield client


@pytest.fixture(scope="module")
def http_client():
    client = httpclient.InferenceServerClient(_url("FERRY_HTTP_URL"), network_timeout=60.0)
    yield client
    client.close()


def _simple_inputs(module, binary=None):
    """`simple`'s two INT32 [1, 16] inputs, and what OUTPUT0 (sum) and OUTPUT1 (difference) must be."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    for tensor, data in zip(inputs, [a, b]):
        if binary is None:
            tensor.set_data_from_numpy(data)
        else:
            tensor.set_data_from_numpy(data, binary_data=binary)
    return inputs, a + b, a - b


def _strings(count: int) -> np.ndarray:
    """A BYTES batch that compresses well: long repetitive strings, one per row."""
    return np.array([[(b"ferry compresses %d " % i) * 5000] for i in range(count)], dtype=np.object_)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grpc_infer_with_compressed_requests_and_answers(grpc_client, algorithm):
    inputs, total, difference = _simple_inputs(grpcclient)
    result = grpc_client.infer("simple", inputs, compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), total)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), difference)

    strings = _strings(4)
    tensor = grpcclient.InferInput("INPUT0", list(strings.shape), "BYTES")
    tensor.set_data_from_numpy(strings)
    result = grpc_client.infer("simple_identity", [tensor], compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), strings)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grpc_errors_keep_their_status_with_compression(grpc_client, algorithm):
    inputs, _, _ = _simple_inputs(grpcclient)
    with pytest.raises(InferenceServerException) as error:
        grpc_client.infer("no_such_model", inputs, compression_algorithm=algorithm)
    assert error.value.status() == "StatusCode.NOT_FOUND", error.value
    assert "no_such_model" in error.value.message()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grpc_stream_with_compressed_messages(grpc_client, algorithm):
    answers: queue.Queue = queue.Queue()
    grpc_client.start_stream(
        callback=lambda result, error: answers.put((result, error)), compression_algorithm=algorithm
    )
    try:
        for i in range(5):
            strings = _strings(i + 1)
            tensor = grpcclient.InferInput("INPUT0", list(strings.shape), "BYTES")
            tensor.set_data_from_numpy(strings)
            grpc_client.async_stream_infer("simple_identity", [tensor], request_id=f"s{i}")
        seen = {}
        for _ in range(5):
            result, error = answers.get(timeout=60)
            assert error is None, error
            seen[result.get_response().id] = result.as_numpy("OUTPUT0")
    finally:
        grpc_client.stop_stream()
    for i in range(5):
        np.testing.assert_array_equal(seen[f"s{i}"], _strings(i + 1))


@pytest.mark.parametrize("request_algorithm", [None] + ALGORITHMS)
@pytest.mark.parametrize("response_algorithm", [None] + ALGORITHMS)
@pytest.mark.parametrize("binary", [False, True])
def test_http_infer_with_compressed_bodies(http_client, request_algorithm, response_algorithm, binary):
    inputs, total, difference = _simple_inputs(httpclient, binary)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary),
    ]
    result = http_client.infer(
        "simple",
        inputs,
        outputs=outputs,
        request_compression_algorithm=request_algorithm,
        response_compression_algorithm=response_algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), total)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), difference)

    strings = _strings(3)
    tensor = httpclient.InferInput("INPUT0", list(strings.shape), "BYTES")
    tensor.set_data_from_numpy(strings, binary_data=binary)
    result = http_client.infer(
        "simple_identity",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
        request_compression_algorithm=request_algorithm,
        response_compression_algorithm=response_algorithm,
    )
    got = result.as_numpy("OUTPUT0")
    if not binary:
        # JSON carries BYTES as text, which the client hands back as str.
        got = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[np.object_])(got)
    np.testing.assert_array_equal(got, strings)
