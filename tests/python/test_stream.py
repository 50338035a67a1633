"""ModelStreamInfer through NVIDIA's Python client: `start_stream` / `async_stream_infer`.

Needs a running Ferry: FERRY_GRPC_URL (host:port) and FERRY_REPO_ROOT (for the ONNX files).
"""

import os
import queue
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

URL = os.environ.get("FERRY_GRPC_URL")
ROOT = Path(os.environ.get("FERRY_REPO_ROOT", "."))


@pytest.fixture(scope="module")
def client():
    if not URL:
        pytest.fail("FERRY_GRPC_URL is not set: start Ferry and point the tests at its gRPC port")
    with grpcclient.InferenceServerClient(URL) as c:
        yield c


def test_stream_answers_match_onnxruntime_and_carry_their_ids(client):
    """Every streamed request of the MLP comes back once, under its id, with onnxruntime's outputs."""
    session = ort.InferenceSession(str(ROOT / "examples/model_repository/mlp_classifier/2/model.onnx"))
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    rng = np.random.default_rng(3)
    sent = {}
    try:
        for i in range(40):
            features = rng.standard_normal((1 + i % 3, 32)).astype(np.float32)
            tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
            tensor.set_data_from_numpy(features)
            client.async_stream_infer("mlp_classifier", [tensor], request_id=f"s{i}")
            sent[f"s{i}"] = features
        received = {}
        for _ in sent:
            result, error = answers.get(timeout=30)
            assert error is None, error
            received[result.get_response().id] = result
    finally:
        client.stop_stream()
    assert received.keys() == sent.keys()
    for request_id, features in sent.items():
        expected = session.run(["probabilities"], {"features": features})[0]
        np.testing.assert_allclose(received[request_id].as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)


def test_a_bad_request_on_a_stream_is_an_error_and_the_stream_goes_on(client):
    """A wrong shape is reported to the callback as an error; the next request is still answered."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        bad = grpcclient.InferInput("features", [1, 31], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 31), dtype=np.float32))
        client.async_stream_infer("mlp_classifier", [bad], request_id="bad")
        _, error = answers.get(timeout=30)
        assert isinstance(error, InferenceServerException)
        assert "features" in error.message()
        good = grpcclient.InferInput("features", [1, 32], "FP32")
        good.set_data_from_numpy(np.zeros((1, 32), dtype=np.float32))
        client.async_stream_infer("mlp_classifier", [good], request_id="good")
        result, error = answers.get(timeout=30)
        assert error is None, error
        assert result.get_response().id == "good"
    finally:
        client.stop_stream()
