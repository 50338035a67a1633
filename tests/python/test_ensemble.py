"""Ensembles through NVIDIA's own clients, over gRPC and REST, checked against running the steps by hand.

The server serves tests/ensemble_repository: `pipeline` (scale_pre -> relu_shift -> row_sum) and `diamond`
(scale_pre at the top, relu_shift and scale_pre as parallel branches, add_pair joining them). Here each
member's model.onnx runs in onnxruntime, step by step, and the ensemble's answer must be the same bytes.
An ensemble is described like any model (Triton's `ensemble_scheduler.cc` serves it as one model whose
metadata has platform "ensemble").

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL  host:port of a Ferry serving tests/ensemble_repository
    FERRY_REPO_ROOT                 the repository root (set by ferry_tests::run_pytest)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; run this through tests/tests/ensemble.rs", returncode=1)
    return value


def _member(name: str):
    """A function running member `name`'s model.onnx on its inputs with onnxruntime."""
    path = Path(_env("FERRY_REPO_ROOT")) / "tests" / "ensemble_repository" / name / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda **feeds: session.run(None, feeds)[0]


def _client(protocol: str):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    return httpclient, httpclient.InferenceServerClient(_env("FERRY_HTTP_URL"))


ROWS = np.array([[-1.0, 0.5, 2.0, 3.0], [1.5, 4.0, -2.0, 10.0], [0.0, 0.25, 7.0, -3.5]], dtype=np.float32)


def _infer(protocol: str, model: str, input_name: str, outputs: list[str]) -> dict[str, np.ndarray]:
    module, client = _client(protocol)
    tensor = module.InferInput(input_name, list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    requested = [module.InferRequestedOutput(name) for name in outputs]
    result = client.infer(model, [tensor], outputs=requested)
    return {name: result.as_numpy(name) for name in outputs}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_pipeline_answers_as_its_steps_run_in_onnxruntime(protocol: str) -> None:
    scaled = _member("scale_pre")(x=ROWS)
    features = _member("relu_shift")(x=scaled)
    score = _member("row_sum")(x=features)
    answer = _infer(protocol, "pipeline", "RAW", ["FEATURES", "SCORE"])
    np.testing.assert_array_equal(answer["FEATURES"], features)
    np.testing.assert_array_equal(answer["SCORE"], score)
    assert answer["SCORE"].shape == (3, 1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_diamond_answers_as_its_steps_run_in_onnxruntime(protocol: str) -> None:
    top = _member("scale_pre")(x=ROWS)
    left = _member("relu_shift")(x=top)
    right = _member("scale_pre")(x=top)
    total = _member("add_pair")(a=left, b=right)
    answer = _infer(protocol, "diamond", "X", ["SUM"])
    np.testing.assert_array_equal(answer["SUM"], total)


def test_an_ensemble_is_described_like_any_model() -> None:
    client = grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL"))
    assert client.is_model_ready("pipeline")
    metadata = client.get_model_metadata("pipeline", as_json=True)
    assert metadata["platform"] == "ensemble"
    assert [i["name"] for i in metadata["inputs"]] == ["RAW"]
    config = httpclient.InferenceServerClient(_env("FERRY_HTTP_URL")).get_model_config("diamond")
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["add_pair", "relu_shift", "scale_pre", "scale_pre"]
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["diamond"]["state"] == "READY"
