"""Triton's restricted protocol groups through NVIDIA's Python clients, with their `headers=` argument.

The server runs with
    --grpc-restricted-protocol=model-repository:admin-key=admin-value
    --grpc-restricted-protocol=inference,health:infer-key=infer-value
and the same groups for REST (--http-restricted-api), in explicit model control mode with `simple` and
`mlp_classifier` loaded. Triton's own test of the same flags is `RestrictedProtocolTest` in its
`qa/L0_grpc/grpc_client_test.py`: gRPC refusals are UNAVAILABLE "This protocol is restricted, expecting
header 'triton-grpc-protocol-<key>'", REST ones 403 "This API is restricted, expecting header '<key>'".

Needs FERRY_GRPC_URL and FERRY_HTTP_URL (host:port).
"""

import os
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

GRPC_URL = os.environ.get("FERRY_GRPC_URL")
HTTP_URL = os.environ.get("FERRY_HTTP_URL")
PREFIX = "triton-grpc-protocol-"
GRPC_INFER = {PREFIX + "infer-key": "infer-value"}
GRPC_ADMIN = {PREFIX + "admin-key": "admin-value"}


@pytest.fixture(scope="module")
def grpc():
    if not GRPC_URL:
        pytest.fail("FERRY_GRPC_URL is not set")
    with grpcclient.InferenceServerClient(GRPC_URL) as client:
        yield client


@pytest.fixture(scope="module")
def http():
    if not HTTP_URL:
        pytest.fail("FERRY_HTTP_URL is not set")
    with httpclient.InferenceServerClient(HTTP_URL) as client:
        yield client


def simple_inputs(module):
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.ones((1, 16), dtype=np.int32))
    return inputs


def test_unrestricted_groups_need_no_header(grpc, http):
    grpc.get_inference_statistics("simple")
    grpc.get_inference_statistics("simple", headers=GRPC_INFER)
    http.get_inference_statistics("simple")
    assert grpc.get_model_metadata("simple").name == "simple"


def test_health_needs_the_infer_header(grpc, http):
    with pytest.raises(InferenceServerException, match="This protocol is restricted, expecting header "
                       "'triton-grpc-protocol-infer-key'") as refused:
        grpc.is_server_live()
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert grpc.is_server_live(headers=GRPC_INFER)
    assert grpc.is_model_ready("simple", headers=GRPC_INFER)
    # tritonclient.http reports liveness as a boolean: a refused request is simply not live.
    assert not http.is_server_live()
    assert http.is_server_live(headers={"infer-key": "infer-value"})


def test_inference_needs_the_infer_header_not_the_admin_one(grpc, http):
    with pytest.raises(InferenceServerException, match="This protocol is restricted"):
        grpc.infer("simple", simple_inputs(grpcclient), headers={"test": "1"})
    with pytest.raises(InferenceServerException, match="This protocol is restricted"):
        grpc.infer("simple", simple_inputs(grpcclient), headers=GRPC_ADMIN)
    result = grpc.infer("simple", simple_inputs(grpcclient), headers=GRPC_INFER)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2, dtype=np.int32))
    with pytest.raises(InferenceServerException, match="This API is restricted, expecting header 'infer-key'") as refused:
        http.infer("simple", simple_inputs(httpclient))
    assert refused.value.status() == "403"
    result = http.infer("simple", simple_inputs(httpclient), headers={"infer-key": "infer-value"})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 16), dtype=np.int32))


def test_model_repository_needs_the_admin_header(grpc, http):
    with pytest.raises(InferenceServerException, match="This protocol is restricted"):
        grpc.unload_model("mlp_classifier", headers=GRPC_INFER)
    with pytest.raises(InferenceServerException, match="This API is restricted, expecting header 'admin-key'"):
        http.get_model_repository_index()
    grpc.unload_model("mlp_classifier", headers=GRPC_ADMIN)
    http.load_model("mlp_classifier", headers={"admin-key": "admin-value"})
    assert grpc.is_model_ready("mlp_classifier", headers=GRPC_INFER)


def test_a_stream_without_the_header_ends_with_the_refusal(grpc):
    answers = queue.Queue()
    # The stream opens; the refusal arrives as its status, which the client hands to the callback.
    grpc.start_stream(callback=lambda result, error: answers.put((result, error)), headers={"test": "1"})
    try:
        time.sleep(1)
        with pytest.raises(InferenceServerException, match="The stream is no longer in valid state"):
            grpc.async_stream_infer("simple", simple_inputs(grpcclient))
        _, error = answers.get(timeout=10)
        assert "This protocol is restricted" in str(error)
    finally:
        grpc.stop_stream()
    grpc.start_stream(callback=lambda result, error: answers.put((result, error)), headers=GRPC_INFER)
    try:
        grpc.async_stream_infer("simple", simple_inputs(grpcclient))
        result, error = answers.get(timeout=10)
        assert error is None, error
        assert result.as_numpy("OUTPUT0").shape == (1, 16)
    finally:
        grpc.stop_stream()
