"""Triton's classification extension through NVIDIA's own clients, over gRPC and REST.

`InferRequestedOutput(name, class_count=k)` asks for an output's top k classes: the answer is a BYTES tensor
of "value:index" or "value:index:label" strings, shape [batch, k] for batching models and [k] for the
others, largest value first. Every answer is compared with the top k computed here from what onnxruntime
gives for the same .onnx file and inputs, formatted as Triton formats it (C's "%f" for floats, labels from the
output's `label_filename`).

What each test pins comes from Triton's source: server `src/classification.cc` (ranking, formatting, the
types it ranks), `src/grpc/infer_handler.h` and `src/http_server.cc` (rows and shape), `src/grpc/grpc_utils.cc`
(`ParseClassificationParams`) and `src/http_server.cc` (`CheckClassificationOutput`) for the parameter, and
core `src/label_provider.cc` for labels.

Environment (all required: without them the run FAILS, it is never skipped):
    FERRY_GRPC_URL, FERRY_HTTP_URL  host:port of a Ferry serving examples/ and tests/model_repository
    FERRY_REPO_ROOT                 the repository root
"""

from __future__ import annotations

import os
import queue
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from reference import model_dir, random_tensor, run_reference

# identity_types (max_batch_size 0) has one IN_/OUT_ pair per datatype.
RANKED_TYPES = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"]
UNRANKED_TYPES = ["BOOL", "FP16", "BYTES"]
IDENTITY_TYPES = RANKED_TYPES + UNRANKED_TYPES


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.exit(f"FAILED: {name} is not set; start Ferry on both repositories and point the tests at it",
                    returncode=1)
    return value


@pytest.fixture(scope="module")
def repo_root() -> Path:
    root = Path(_env("FERRY_REPO_ROOT"))
    assert (root / "tests/model_repository/mlp_labels").is_dir(), f"{root} is not the Ferry checkout"
    return root


@pytest.fixture(scope="module")
def grpc():
    with grpcclient.InferenceServerClient(_env("FERRY_GRPC_URL")) as client:
        yield client


@pytest.fixture(scope="module")
def http():
    with httpclient.InferenceServerClient(_env("FERRY_HTTP_URL"), network_timeout=30.0) as client:
        yield client


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240901)


# --------------------------------------------------------------------------- the expected answer


def read_labels(root: Path, model: str, file: str) -> list[bytes]:
    """A label file's lines as Triton's LabelProvider reads them (std::getline: split on \\n, no empty line
    after a final newline)."""
    lines = (model_dir(root, model) / file).read_bytes().split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def c_format(value) -> bytes:
    """std::to_string: integers in decimal, floats as C's "%f" of the value widened to double."""
    if isinstance(value, (np.floating, float)):
        return (b"%f" % float(value))
    return str(int(value)).encode()


def top_classes(values: np.ndarray, k: int, labels: list[bytes] | None) -> list[bytes]:
    """The top k of a flat row, largest first (ties in index order), as Triton writes them."""
    order = np.argsort(-values.astype(np.float64) if values.dtype.kind == "f" else -values.astype(object),
                       kind="stable")
    out = []
    for index in order[:k]:
        text = c_format(values[index]) + b":" + str(int(index)).encode()
        if labels is not None and index < len(labels) and labels[index]:
            text += b":" + labels[index]
        out.append(text)
    return out


def expected(values: np.ndarray, k: int, labels: list[bytes] | None, batched: bool) -> np.ndarray:
    """The whole answer: one row of classes per batch entry, or one flat list for models without batching."""
    if batched:
        rows = [top_classes(row.reshape(-1), k, labels) for row in values]
        return np.array(rows, dtype=np.object_).reshape(len(rows), -1)
    return np.array(top_classes(values.reshape(-1), k, labels), dtype=np.object_)


def as_bytes(array: np.ndarray) -> np.ndarray:
    """BYTES answers: bytes from gRPC and binary REST, str from JSON REST."""
    return np.array([x.encode() if isinstance(x, str) else bytes(x) for x in array.flat],
                    dtype=np.object_).reshape(array.shape)


def assert_classes(result, name: str, want: np.ndarray, what: str) -> None:
    got = result.as_numpy(name)
    assert got is not None, f"{what}: no output {name}"
    output = result.get_output(name)
    datatype = output.datatype if hasattr(output, "datatype") else output["datatype"]
    assert datatype == "BYTES", f"{what}: datatype {datatype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert as_bytes(got).tolist() == want.tolist(), f"{what}:\n{as_bytes(got)}\n!=\n{want}"


# --------------------------------------------------------------------------- requests


def grpc_infer(client, model, feeds: dict[str, np.ndarray], types: dict[str, str], outputs: dict[str, int]):
    inputs = []
    for name, array in feeds.items():
        tensor = grpcclient.InferInput(name, list(array.shape), types[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    wanted = [grpcclient.InferRequestedOutput(name, class_count=k) for name, k in outputs.items()]
    return client.infer(model, inputs, outputs=wanted)


def http_infer(client, model, feeds, types, outputs: dict[str, int], binary: bool):
    inputs = []
    for name, array in feeds.items():
        tensor = httpclient.InferInput(name, list(array.shape), types[name])
        # JSON has no form for FP16: it always travels as binary data, as in test_http.py.
        tensor.set_data_from_numpy(array, binary_data=binary or types[name] == "FP16")
        inputs.append(tensor)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=binary, class_count=k)
              for name, k in outputs.items()]
    return client.infer(model, inputs, outputs=wanted)


PROTOCOLS = ["grpc", "http-json", "http-binary"]


def infer(protocol: str, grpc, http, model, feeds, types, outputs):
    if protocol == "grpc":
        return grpc_infer(grpc, model, feeds, types, outputs)
    return http_infer(http, model, feeds, types, outputs, binary=protocol == "http-binary")


def onnx_file(root: Path, model: str, version: str = "1") -> Path:
    return model_dir(root, model) / version / "model.onnx"


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("k", [1, 3, 10, 1000])
def test_batched_model_with_labels(grpc, http, repo_root, rng, protocol, k):
    """mlp_labels: three rows, each ranked on its own into [3, min(k, 10)]; class 4 (empty label line) and
    class 9 (no line) come back without a label, the others with theirs."""
    features = rng.normal(size=(3, 32)).astype(np.float32)
    reference = run_reference(onnx_file(repo_root, "mlp_labels"), {"features": features})
    result = infer(protocol, grpc, http, "mlp_labels", {"features": features}, {"features": "FP32"},
                   {"probabilities": k})
    labels = read_labels(repo_root, "mlp_labels", "labels.txt")
    assert_classes(result, "probabilities", expected(reference["probabilities"], k, labels, batched=True),
                   f"{protocol} k={k}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_batched_model_without_labels(grpc, http, repo_root, rng, protocol):
    """mlp_classifier (no label_filename): "value:index" strings; an INT64 output ranks too, and an output
    requested without class_count keeps its raw values."""
    features = rng.normal(size=(2, 32)).astype(np.float32)
    reference = run_reference(onnx_file(repo_root, "mlp_classifier", "2"), {"features": features})
    result = infer(protocol, grpc, http, "mlp_classifier", {"features": features}, {"features": "FP32"},
                   {"probabilities": 3, "label": 2})
    assert_classes(result, "probabilities", expected(reference["probabilities"], 3, None, batched=True),
                   f"{protocol} probabilities")
    assert_classes(result, "label", expected(reference["label"], 2, None, batched=True), f"{protocol} label")

    if protocol == "grpc":
        raw = grpc.infer("mlp_classifier", [_grpc_input("features", features)],
                         outputs=[grpcclient.InferRequestedOutput("probabilities")])
        np.testing.assert_allclose(raw.as_numpy("probabilities"), reference["probabilities"], rtol=1e-5)


def _grpc_input(name: str, array: np.ndarray, datatype: str = "FP32"):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unbatched_model_ranks_the_whole_tensor(grpc, http, repo_root, rng, protocol):
    """mlp_labels_flat (max_batch_size 0): the [2, 10] output is one flat list of 20 classes, shape [k];
    only indices below 9 have labels."""
    features = rng.normal(size=(2, 32)).astype(np.float32)
    reference = run_reference(onnx_file(repo_root, "mlp_labels_flat"), {"features": features})
    labels = read_labels(repo_root, "mlp_labels_flat", "labels.txt")
    for k in (5, 20, 50):
        result = infer(protocol, grpc, http, "mlp_labels_flat", {"features": features},
                       {"features": "FP32"}, {"probabilities": k})
        assert_classes(result, "probabilities",
                       expected(reference["probabilities"], k, labels, batched=False), f"{protocol} k={k}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_densenet_twin_as_triton_image_client_uses_it(grpc, http, repo_root, rng, protocol):
    """densenet_onnx's fc6_1 is [1, 1000, 1, 1] in the model and [1000] in the config (reshape): the classes
    rank the reshaped row, shape [1, k], labelled from densenet_labels.txt, as image_client.py -c 3 asks."""
    image = rng.uniform(0.0, 1.0, size=(1, 3, 224, 224)).astype(np.float32)
    reference = run_reference(onnx_file(repo_root, "densenet_onnx"), {"data_0": image})["fc6_1"].reshape(1, -1)
    labels = read_labels(repo_root, "densenet_onnx", "densenet_labels.txt")
    result = infer(protocol, grpc, http, "densenet_onnx", {"data_0": image}, {"data_0": "FP32"}, {"fc6_1": 3})
    assert_classes(result, "fc6_1", expected(reference, 3, labels, batched=True), protocol)
    # What image_client.py prints: value, index and label parsed back out of each string.
    top = as_bytes(result.as_numpy("fc6_1"))[0][0].decode().split(":")
    assert len(top) == 3 and top[2] == f"class {int(top[1]):04d}", top
    # ModelConfig keeps label_filename; ModelMetadata shows the output's own type and shape, as Triton's do.
    if protocol == "grpc":
        assert grpc.get_model_config("densenet_onnx").config.output[0].label_filename == "densenet_labels.txt"
        metadata = grpc.get_model_metadata("densenet_onnx").outputs[0]
        assert (metadata.datatype, list(metadata.shape)) == ("FP32", [-1, 1000])
    else:
        assert http.get_model_config("densenet_onnx")["output"][0]["label_filename"] == "densenet_labels.txt"
        metadata = http.get_model_metadata("densenet_onnx")["outputs"][0]
        assert (metadata["datatype"], metadata["shape"]) == ("FP32", [-1, 1000])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_ranked_type_formats_as_triton(grpc, http, rng, protocol):
    """identity_types: each integer type prints in decimal, FP32 and FP64 with six decimals; the values are
    distinct so the order is unique."""
    feeds, types = {}, {}
    for dt in IDENTITY_TYPES:
        data = random_tensor(rng, dt, (6,))
        if dt in RANKED_TYPES:
            data = np.unique(data)[:6]
            rng.shuffle(data)
        feeds[f"IN_{dt}"], types[f"IN_{dt}"] = data, dt
    outputs = {f"OUT_{dt}": 4 for dt in RANKED_TYPES}
    result = infer(protocol, grpc, http, "identity_types", feeds, types, outputs)
    for dt in RANKED_TYPES:
        want = expected(feeds[f"IN_{dt}"], 4, None, batched=False)
        assert_classes(result, f"OUT_{dt}", want, f"{protocol} {dt}")


# --------------------------------------------------------------------------- errors


def identity_feeds(rng) -> tuple[dict, dict]:
    feeds = {f"IN_{dt}": random_tensor(rng, dt, (3,)) for dt in IDENTITY_TYPES}
    return feeds, {name: name[3:] for name in feeds}


@pytest.mark.parametrize("dt", UNRANKED_TYPES)
def test_unranked_types_are_refused(grpc, http, rng, dt):
    """TopkClassifications ranks no BOOL, FP16 (nor BF16) and BYTES: INVALID_ARGUMENT / 400 with its text."""
    feeds, types = identity_feeds(rng)
    message = f"class result not available for output due to unsupported type '{dt}'"
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc_infer(grpc, "identity_types", feeds, types, {f"OUT_{dt}": 2})
    assert grpc_error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in grpc_error.value.message()
    with pytest.raises(InferenceServerException) as http_error:
        http_infer(http, "identity_types", feeds, types, {f"OUT_{dt}": 2}, binary=True)
    assert http_error.value.status() == "400"
    assert message in http_error.value.message()


def test_a_negative_class_count_is_refused(grpc, http, rng):
    """gRPC: ParseClassificationParams wants an int64 above 0; REST: CheckClassificationOutput wants an
    unsigned JSON integer."""
    features = rng.normal(size=(1, 32)).astype(np.float32)
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc_infer(grpc, "mlp_labels", {"features": features}, {"features": "FP32"}, {"probabilities": -1})
    assert grpc_error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert grpc_error.value.message().startswith(
        "invalid value for 'classification' parameter, expected >= 0")
    with pytest.raises(InferenceServerException) as http_error:
        http_infer(http, "mlp_labels", {"features": features}, {"features": "FP32"}, {"probabilities": -1},
                   binary=False)
    # TritonJson's errors are INTERNAL in http_server.cc, which HttpCodeFromError answers 500.
    assert http_error.value.status() == "500"
    assert http_error.value.message().startswith(
        "Unable to set 'classification': attempt to access JSON non-unsigned-integer as unsigned-integer")


def test_a_classified_output_cannot_go_to_shared_memory(grpc, rng):
    """InferAllocatorPayload refuses an output with both parameters, before any region is looked up."""
    features = rng.normal(size=(1, 32)).astype(np.float32)
    output = grpcclient.InferRequestedOutput("probabilities")
    output.set_shared_memory("no_such_region", 40)
    # tritonclient refuses to add class_count after set_shared_memory; a client that sends both anyway:
    output._get_tensor().parameters["classification"].int64_param = 3
    with pytest.raises(InferenceServerException) as error:
        grpc.infer("mlp_labels", [_grpc_input("features", features)], outputs=[output])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert error.value.message().startswith(
        "output can't set both 'shared_memory_region' and 'classification'")


# --------------------------------------------------------------------------- streaming


def test_stream_requests_are_classified_too(grpc, repo_root, rng):
    """ModelStreamInfer answers each request through the same path as ModelInfer."""
    answers: queue.Queue = queue.Queue()
    grpc.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
    try:
        sent = {}
        for i in range(3):
            features = rng.normal(size=(2, 32)).astype(np.float32)
            sent[f"s{i}"] = features
            grpc.async_stream_infer(
                "mlp_labels", [_grpc_input("features", features)], request_id=f"s{i}",
                outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=2)])
        labels = read_labels(repo_root, "mlp_labels", "labels.txt")
        for _ in sent:
            result, error = answers.get(timeout=30)
            assert error is None, error
            features = sent[result.get_response().id]
            reference = run_reference(onnx_file(repo_root, "mlp_labels"), {"features": features})
            assert_classes(result, "probabilities",
                           expected(reference["probabilities"], 2, labels, batched=True), "stream")
    finally:
        grpc.stop_stream()

