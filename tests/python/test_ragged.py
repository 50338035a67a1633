"""Requests of different lengths sharing batches, through NVIDIA's own clients, checked against numpy.

The server serves tests/ragged_repository:
- `ragged_sum`: Triton's ragged batching (docs/user_guide/ragged_batching.md; batch input values as Triton's
  `BackendInputCollector::ProcessBatchInput` fills them). Each request sends INPUT [1, length]; Ferry runs
  a batch as one flat INPUT with the batch inputs INDEX (accumulated element counts), COUNT (element counts)
  and MAXLEN (shaped by the longest request), and each request gets its own row of SUM, MEAN and LONGEST.
- `bucket_tokens`: Ferry's pad-to-bucket (buckets 16, 32, 64, 128): y per token trimmed back to each request's
  length, pooled (a sum over tokens, which zero padding leaves alone) as computed.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL  host:port of a Ferry serving tests/ragged_repository
    FERRY_REPO_ROOT                 the repository root (set by ferry_tests::run_pytest)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import numpy_helper
from tritonclient.utils import InferenceServerException


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; run this through tests/tests/ragged.rs", returncode=1)
    return value


def _client(protocol: str):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    return httpclient, httpclient.InferenceServerClient(_env("FERRY_HTTP_URL"))


def _counts(protocol: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of `model` version 1."""
    _, client = _client(protocol)
    if protocol == "grpc":
        stats = client.get_inference_statistics(model, "1", as_json=True)
    else:
        stats = client.get_inference_statistics(model, "1")
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


def _concurrently(call, items):
    """`call(item)` for every item at once, each on a thread of its own, so that they meet in the batcher."""
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(call, items))


def _ragged_sum(protocol: str, values: np.ndarray) -> dict[str, np.ndarray]:
    module, client = _client(protocol)
    tensor = module.InferInput("INPUT", [1, len(values)], "FP32")
    tensor.set_data_from_numpy(values.reshape(1, -1))
    outputs = [module.InferRequestedOutput(name) for name in ("SUM", "MEAN", "LONGEST")]
    result = client.infer("ragged_sum", [tensor], outputs=outputs)
    return {name: result.as_numpy(name) for name in ("SUM", "MEAN", "LONGEST")}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ragged_requests_of_different_lengths_batch_and_each_gets_its_own_answer(protocol: str) -> None:
    rng = np.random.default_rng(3 if protocol == "grpc" else 4)
    lengths = [1, 2, 3, 5, 7, 8, 11, 13, 16, 20, 31, 40]
    requests = [rng.normal(0.0, 3.0, size=n).astype(np.float32) for n in lengths]
    before = _counts(protocol, "ragged_sum")
    answers = _concurrently(lambda values: _ragged_sum(protocol, values), requests)
    for values, answer in zip(requests, answers):
        assert answer["SUM"].shape == (1, 1) and answer["MEAN"].shape == (1, 1)
        np.testing.assert_allclose(answer["SUM"][0, 0], values.sum(dtype=np.float64), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(answer["MEAN"][0, 0], values.mean(dtype=np.float64), rtol=1e-5, atol=1e-5)
        # LONGEST is the longest request of the batch this one ran in.
        assert len(values) <= answer["LONGEST"][0, 0] <= max(lengths)
    after = _counts(protocol, "ragged_sum")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(lengths)
    assert executions < inferences, f"{inferences} requests ran in {executions} executions: nothing batched"
    assert any(answer["LONGEST"][0, 0] > len(values) for values, answer in zip(requests, answers)), (
        "no request shared a batch with a longer one"
    )


def test_a_batch_input_is_not_a_request_input() -> None:
    module, client = _client("grpc")
    inputs = [module.InferInput("INPUT", [1, 2], "FP32"), module.InferInput("INDEX", [1], "INT32")]
    inputs[0].set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    inputs[1].set_data_from_numpy(np.array([2], dtype=np.int32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("ragged_sum", inputs)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "INDEX" in raised.value.message()


def _weights() -> np.ndarray:
    path = Path(_env("FERRY_REPO_ROOT")) / "tests" / "ragged_repository" / "bucket_tokens" / "1" / "model.onnx"
    model = onnx.load(str(path))
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "w")


def _bucket_tokens(protocol: str, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    module, client = _client(protocol)
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = [module.InferRequestedOutput(name) for name in ("y", "pooled")]
    result = client.infer(model, [tensor], outputs=outputs)
    return {name: result.as_numpy(name) for name in ("y", "pooled")}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_padded_requests_batch_per_bucket_and_are_trimmed_back(protocol: str) -> None:
    w = _weights().astype(np.float64)
    rng = np.random.default_rng(5 if protocol == "grpc" else 6)
    # Lengths at and around the bucket edges, twice each, and a request of two rows.
    lengths = [1, 3, 15, 16, 17, 30, 32, 33, 64, 65, 100, 128] * 2
    requests = [rng.normal(0.0, 1.0, size=(1, n, 8)).astype(np.float32) for n in lengths]
    requests.append(rng.normal(0.0, 1.0, size=(2, 21, 8)).astype(np.float32))
    before = _counts(protocol, "bucket_tokens")
    answers = _concurrently(lambda x: _bucket_tokens(protocol, "bucket_tokens", x), requests)
    for x, answer in zip(requests, answers):
        expected = np.tanh(x.astype(np.float64) @ w)
        assert answer["y"].shape == x.shape, "y is trimmed back to the request's own length"
        np.testing.assert_allclose(answer["y"], expected, rtol=1e-4, atol=1e-5)
        assert answer["pooled"].shape == (x.shape[0], 8)
        np.testing.assert_allclose(answer["pooled"], expected.sum(axis=1), rtol=1e-4, atol=1e-4)
    after = _counts(protocol, "bucket_tokens")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    # Triton counts inferences by batch rows: the two-row request is two.
    assert inferences == sum(x.shape[0] for x in requests)
    assert executions < len(requests), f"{len(requests)} requests ran in {executions} executions: nothing batched"


def test_a_request_longer_than_the_largest_bucket_is_refused_naming_the_limit() -> None:
    for protocol in ("grpc", "http"):
        with pytest.raises(InferenceServerException) as raised:
            _bucket_tokens(protocol, "bucket_tokens", np.zeros((1, 129, 8), dtype=np.float32))
        message = raised.value.message()
        assert "length 129" in message and "largest bucket" in message and "128" in message, message
        if protocol == "grpc":
            assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
        else:
            assert raised.value.status() == "400"


def test_padding_changes_no_answer_against_the_same_model_unpadded() -> None:
    rng = np.random.default_rng(7)
    for n in (5, 16, 47):
        x = rng.normal(0.0, 1.0, size=(1, n, 8)).astype(np.float32)
        padded = _bucket_tokens("grpc", "bucket_tokens", x)
        plain = _bucket_tokens("grpc", "bucket_tokens_unbatched", x)
        np.testing.assert_allclose(padded["y"], plain["y"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(padded["pooled"], plain["pooled"], rtol=1e-5, atol=1e-5)
