"""Interop tests: a running Ferry server, driven by NVIDIA's Python client.

Ferry must look exactly like Triton to `tritonclient.grpc`. Every numeric
answer is checked against the `onnxruntime` Python package run on the same
inputs and the same .onnx files.

Run (the server must serve BOTH repositories, i.e. two --model-repository flags):

    <start ferry with --model-repository examples/model_repository
                      --model-repository tests/model_repository>
    FERRY_GRPC_URL=127.0.0.1:8001 FERRY_REPO_ROOT=$PWD pytest tests/python

Environment:
    FERRY_GRPC_URL   host:port of Ferry's gRPC endpoint (required: without it
                     every server test FAILS, it is never skipped)
    FERRY_REPO_ROOT  the repository root holding examples/ and tests/ (defaults
                     to the checkout this file lives in)

Only `tritonclient.grpc` talks to the server, except for requests the client
library refuses to build; those go through its raw stubs
(`tritonclient.grpc.service_pb2` / `service_pb2_grpc`). Tests marked "offline"
in their docstring need no server: they check the committed models and
configs against each other.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import ml_dtypes
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from reference import (  # noqa: E402  (tests/python is on pytest's path)
    BYTES_SAMPLES,
    FLOAT_TYPES,
    REPOSITORIES,
    assert_tensor_equal,
    model_dir,
    random_tensor,
    run_reference,
)

# --------------------------------------------------------------------------- constants

URL_ENV = "FERRY_GRPC_URL"
ROOT_ENV = "FERRY_REPO_ROOT"
RPC_TIMEOUT_S = 30.0


# model -> versions the server must serve
EXAMPLE_MODELS = {"simple": ["1"], "mlp_classifier": ["1", "2"], "linear_auto": ["1"]}
READY_TEST_MODELS = {
    "identity_types": ["1"],
    "identity_typed": ["1"],
    "identity_bf16": ["1"],
    "add_one_batched": ["1"],
}
READY_MODELS = {**EXAMPLE_MODELS, **READY_TEST_MODELS}
# model -> text its UNAVAILABLE reason must contain (None: any non-empty reason)
UNAVAILABLE_MODELS = {"corrupt": None, "bad_config": "max_batch_sise"}

# Datatypes in Triton's enum order; identity_types has one IN_/OUT_ pair per entry.
IDENTITY_TYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]
# InferTensorContents field per datatype; FP16 and BF16 have none (raw only).
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
TYPED_TYPES = [dt for dt in IDENTITY_TYPES if dt in TYPED_FIELD]  # identity_typed's pairs

ONNX_TO_TRITON = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
    onnx.TensorProto.BFLOAT16: "BF16",
}
CONFIG_TYPE_TO_TRITON = {f"TYPE_{dt}": dt for dt in ONNX_TO_TRITON.values() if dt != "BYTES"}
CONFIG_TYPE_TO_TRITON["TYPE_STRING"] = "BYTES"


# --------------------------------------------------------------------------- repository helpers


def default_repo_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or Path(__file__).resolve().parents[2])


def highest_version(model: str) -> str:
    return max(READY_MODELS[model], key=int)


def onnx_file(root: Path, model: str, version: str = "") -> Path:
    """The model.onnx a request for (model, version) must run; "" means the highest version."""
    return model_dir(root, model) / (version or highest_version(model)) / "model.onnx"


@dataclass(frozen=True)
class TensorSig:
    name: str
    datatype: str  # protocol datatype string, e.g. "FP32", "BYTES"
    shape: tuple[int, ...]  # -1 for every symbolic/unknown dimension


def onnx_signature(path: Path) -> tuple[list[TensorSig], list[TensorSig]]:
    """Inputs and outputs as the ONNX graph declares them (initializers are not inputs)."""
    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}

    def sig(value_info) -> TensorSig:
        t = value_info.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSig(value_info.name, ONNX_TO_TRITON[t.elem_type], shape)

    inputs = [sig(v) for v in graph.input if v.name not in initializers]
    return inputs, [sig(v) for v in graph.output]


def read_config(root: Path, model: str) -> model_config_pb2.ModelConfig:
    path = model_dir(root, model) / "config.pbtxt"
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# --------------------------------------------------------------------------- data helpers


def np_dtype(datatype: str):
    return triton_to_np_dtype(datatype)


def special_values(datatype: str) -> np.ndarray:
    """Edge values every datatype must carry unchanged (extremes, -0.0, inf, NaN, ...)."""
    if datatype == "BYTES":
        return np.array(BYTES_SAMPLES, dtype=np.object_)
    if datatype == "BOOL":
        return np.array([True, False, True], dtype=np.bool_)
    dtype = np_dtype(datatype)
    if datatype in FLOAT_TYPES:
        fi = ml_dtypes.finfo(dtype)  # also knows bfloat16
        return np.array([0.0, -0.0, 1.0, -2.5, fi.max, fi.min, fi.tiny, np.inf, -np.inf, np.nan], dtype=dtype)
    ii = np.iinfo(dtype)
    return np.array([0, 1, ii.max, ii.min, ii.max // 3], dtype=dtype)


def identity_feeds(rng: np.random.Generator, datatypes, *, special: bool = False) -> dict[str, np.ndarray]:
    """IN_<DT> arrays for an identity model, each with its own length."""
    feeds = {}
    for i, dt in enumerate(datatypes):
        data = special_values(dt) if special else random_tensor(rng, dt, (3 + i,))
        feeds[f"IN_{dt}"] = data
    return feeds


def infer_inputs(feeds: dict[str, np.ndarray], datatypes: dict[str, str]) -> list[grpcclient.InferInput]:
    """tritonclient InferInputs with raw contents (set_data_from_numpy), in `feeds` order."""
    inputs = []
    for name, data in feeds.items():
        tensor = grpcclient.InferInput(name, list(data.shape), datatypes[name])
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def typed_contents(data: np.ndarray, datatype: str) -> service_pb2.InferTensorContents:
    """InferTensorContents holding `data` in the typed field for `datatype`."""
    contents = service_pb2.InferTensorContents()
    values = data.flatten().tolist()  # Python ints/floats/bools/bytes
    getattr(contents, TYPED_FIELD[datatype]).extend(values)
    return contents


def decode_output(response: service_pb2.ModelInferResponse, name: str) -> np.ndarray:
    """An output of a raw ModelInferResponse, whether the server sent it raw or typed."""
    for index, out in enumerate(response.outputs):
        if out.name != name:
            continue
        shape = tuple(out.shape)
        if index < len(response.raw_output_contents):
            raw = response.raw_output_contents[index]
            if out.datatype == "BYTES":
                return _deserialize_bytes(raw).reshape(shape)
            return np.frombuffer(raw, dtype=np_dtype(out.datatype)).reshape(shape)
        values = list(getattr(out.contents, TYPED_FIELD[out.datatype]))
        return np.array(values, dtype=np_dtype(out.datatype)).reshape(shape)
    raise AssertionError(f"output {name!r} missing from response (got {[o.name for o in response.outputs]})")


def _deserialize_bytes(raw: bytes) -> np.ndarray:
    items, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return np.array(items, dtype=np.object_)


def _status_and_message(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, InferenceServerException):
        return exc.status() or "", exc.message() or ""
    if isinstance(exc, grpc.RpcError):
        return str(exc.code()), exc.details() or ""
    raise exc


def assert_rpc_error(call: Callable[[], object], code: grpc.StatusCode, needles=()) -> str:
    """`call` must fail with gRPC status `code` and a message containing every needle (case-insensitive)."""
    try:
        result = call()
    except (InferenceServerException, grpc.RpcError) as exc:
        status, message = _status_and_message(exc)
    else:
        raise AssertionError(f"expected {code.name}, but the call succeeded: {result!r}")
    assert status == str(code), f"expected {code}, got {status}: {message!r}"
    for needle in needles:
        assert needle.lower() in message.lower(), f"error message {message!r} should mention {needle!r}"
    return message


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def repo_root() -> Path:
    root = default_repo_root()
    for repo in REPOSITORIES:
        if not (root / repo).is_dir():
            pytest.fail(f"{root / repo} does not exist: set {ROOT_ENV} to the Ferry repository root", pytrace=False)
    return root


@pytest.fixture(scope="session")
def grpc_url() -> str:
    """Ferry's gRPC address. Unset is a FAILURE, not a skip: the run stops at the first server test
    with exit status 1, instead of repeating the same setup error for every server test. (The
    offline tests at the end of this file can still be run alone, e.g. `-k offline`.)"""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        pytest.exit(
            f"FAILED: {URL_ENV} is not set. These interop tests need a running Ferry server: start it "
            f"with --model-repository examples/model_repository --model-repository tests/model_repository "
            f"and set {URL_ENV}=host:port of its gRPC endpoint (e.g. 127.0.0.1:8001).",
            returncode=1,
        )
    return url


@pytest.fixture(scope="session")
def client(grpc_url: str):
    """A tritonclient.grpc client; fails every test clearly if the server cannot be reached."""
    c = grpcclient.InferenceServerClient(url=grpc_url)
    try:
        c.is_server_live(client_timeout=RPC_TIMEOUT_S)
    except InferenceServerException as exc:
        c.close()
        pytest.fail(f"cannot reach Ferry at {URL_ENV}={grpc_url}: {exc}", pytrace=False)
    yield c
    c.close()


@pytest.fixture(scope="session")
def stub(grpc_url: str, client):
    """Raw GRPCInferenceService stub, for requests tritonclient refuses to build."""
    channel = grpc.insecure_channel(grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test id: random, but reproducible per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------- health and metadata


def test_server_live_and_ready(client):
    """ServerLive and ServerReady both answer true."""
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata(client):
    """ServerMetadata carries a non-empty server name (and a version string)."""
    meta = client.get_server_metadata()
    assert meta.name, "server metadata name is empty"


@pytest.mark.parametrize("model", sorted(READY_MODELS))
def test_model_ready(client, model: str):
    """ModelReady is true for every loadable model, for each served version and for the default."""
    assert client.is_model_ready(model)
    for version in READY_MODELS[model]:
        assert client.is_model_ready(model, version)


@pytest.mark.parametrize("model", sorted(UNAVAILABLE_MODELS))
def test_unloadable_model_not_ready(client, model: str):
    """ModelReady for a model that failed to load is false (or an error), never true."""
    try:
        ready = client.is_model_ready(model)
    except InferenceServerException:
        ready = False
    assert not ready


@pytest.mark.parametrize("model", sorted(READY_MODELS))
def test_model_metadata_matches_onnx(client, repo_root: Path, model: str):
    """ModelMetadata reports what the ONNX file declares: names, datatypes, shapes (-1 for the batch
    dimension and other dynamic dims), platform "onnxruntime_onnx" and every served version."""
    onnx_in, onnx_out = onnx_signature(onnx_file(repo_root, model))
    for version in ["", *READY_MODELS[model]]:
        meta = client.get_model_metadata(model, version)
        assert meta.name == model
        assert meta.platform == "onnxruntime_onnx"
        assert sorted(meta.versions, key=int) == READY_MODELS[model]
        got_in = [TensorSig(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs]
        got_out = [TensorSig(t.name, t.datatype, tuple(t.shape)) for t in meta.outputs]
        assert sorted(got_in, key=lambda s: s.name) == sorted(onnx_in, key=lambda s: s.name)
        assert sorted(got_out, key=lambda s: s.name) == sorted(onnx_out, key=lambda s: s.name)


@pytest.mark.parametrize("model", ["simple", "mlp_classifier", "add_one_batched", "identity_types"])
def test_model_config_reflects_config_pbtxt(client, repo_root: Path, model: str):
    """ModelConfig returns the hand-written config: name, platform, max_batch_size, tensors, version policy."""
    expected = read_config(repo_root, model)
    config = client.get_model_config(model).config
    assert config.name == model
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == expected.max_batch_size
    for got, want in ((config.input, expected.input), (config.output, expected.output)):
        assert [(t.name, t.data_type, list(t.dims)) for t in got] == [
            (t.name, t.data_type, list(t.dims)) for t in want
        ]
    if expected.HasField("version_policy"):
        assert config.version_policy == expected.version_policy


def test_linear_auto_config_is_autocompleted(client):
    """linear_auto has no config.pbtxt: ModelConfig shows inputs/outputs filled in from the ONNX file
    (batch dim dropped) and a max_batch_size > 0, as Triton's ONNX auto-complete does."""
    config = client.get_model_config("linear_auto").config
    assert config.name == "linear_auto"
    assert config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime"
    assert config.max_batch_size > 0
    fp32 = model_config_pb2.TYPE_FP32
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", fp32, [8])]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("y", fp32, [3])]


# --------------------------------------------------------------------------- inference vs onnxruntime

INFER_CASES = [
    # (model, requested version); each runs with batch sizes 1 and 3
    ("simple", "1"),
    ("simple", ""),
    ("mlp_classifier", "1"),
    ("mlp_classifier", "2"),
    ("mlp_classifier", ""),  # must be version 2, the highest
    ("linear_auto", "1"),
    ("linear_auto", ""),
    ("add_one_batched", ""),
]


def batched_feeds(rng: np.random.Generator, path: Path, batch: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Random inputs of batch size `batch` for a batched ONNX model, and their datatypes."""
    inputs, _ = onnx_signature(path)
    feeds, types = {}, {}
    for sig in inputs:
        shape = (batch, *sig.shape[1:])
        data = random_tensor(rng, sig.datatype, shape)
        if sig.datatype == "INT32":  # keep sums/differences readable; overflow is not the point here
            data = rng.integers(-1000, 1000, size=shape, dtype=np.int32)
        feeds[sig.name], types[sig.name] = data, sig.datatype
    return feeds, types


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("model,version", INFER_CASES, ids=[f"{m}-v{v or 'default'}" for m, v in INFER_CASES])
def test_infer_matches_onnxruntime(client, repo_root: Path, rng, model: str, version: str, batch: int):
    """ModelInfer returns what onnxruntime computes on the same inputs (ints exact, floats allclose),
    with the right model_name, the resolved model_version ("" -> highest) and the echoed request id."""
    path = onnx_file(repo_root, model, version)
    feeds, types = batched_feeds(rng, path, batch)
    expected = run_reference(path, feeds)
    _, outputs = onnx_signature(path)
    request_id = f"interop-{model}-{version or 'default'}-{batch}"

    result = client.infer(model, infer_inputs(feeds, types), model_version=version, request_id=request_id)
    response = result.get_response()
    assert response.model_name == model
    assert response.model_version == (version or highest_version(model))
    assert response.id == request_id
    assert sorted(o.name for o in response.outputs) == sorted(s.name for s in outputs)
    for sig in outputs:
        out = result.get_output(sig.name)
        assert out.datatype == sig.datatype
        assert list(out.shape) == [batch, *sig.shape[1:]]
        assert_tensor_equal(result.as_numpy(sig.name), expected[sig.name], sig.datatype, exact=False,
                            what=f"{model} v{version or 'default'} {sig.name}")


def test_mlp_versions_are_distinct(client, repo_root: Path, rng):
    """Version "1" and version "2" of mlp_classifier really run different weights, and "" runs version 2."""
    feeds = {"features": random_tensor(rng, "FP32", (5, 32))}
    probs = {}
    for version in ("1", "2", ""):
        result = client.infer("mlp_classifier", infer_inputs(feeds, {"features": "FP32"}), model_version=version)
        probs[version] = result.as_numpy("probabilities")
    assert not np.allclose(probs["1"], probs["2"])
    np.testing.assert_allclose(probs[""], probs["2"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "model,wanted",
    [("simple", ["OUTPUT1"]), ("simple", ["OUTPUT0"]), ("mlp_classifier", ["label"]),
     ("mlp_classifier", ["probabilities"]), ("mlp_classifier", ["label", "probabilities"])],
)
def test_infer_requested_output_subset(client, repo_root: Path, rng, model: str, wanted: list[str]):
    """Requesting some outputs returns exactly those outputs, with the right values."""
    path = onnx_file(repo_root, model)
    feeds, types = batched_feeds(rng, path, 2)
    expected = run_reference(path, feeds)
    result = client.infer(model, infer_inputs(feeds, types),
                          outputs=[grpcclient.InferRequestedOutput(n) for n in wanted])
    response = result.get_response()
    assert sorted(o.name for o in response.outputs) == sorted(wanted)
    assert len(response.raw_output_contents) in (0, len(wanted))
    _, sigs = onnx_signature(path)
    for sig in sigs:
        if sig.name in wanted:
            assert_tensor_equal(result.as_numpy(sig.name), expected[sig.name], sig.datatype, exact=False,
                                what=f"{model} {sig.name}")
        else:
            assert result.as_numpy(sig.name) is None


# --------------------------------------------------------------------------- datatypes round trip


@pytest.mark.parametrize("special", [False, True], ids=["random", "edge-values"])
def test_identity_types_raw_round_trip(client, repo_root: Path, rng, special: bool):
    """Every datatype (BOOL .. FP64, BYTES as object arrays of bytes) sent as raw_input_contents comes back
    byte-for-byte unchanged, equal to onnxruntime's Identity, with the right datatype and shape."""
    feeds = identity_feeds(rng, IDENTITY_TYPES, special=special)
    types = {f"IN_{dt}": dt for dt in IDENTITY_TYPES}
    expected = run_reference(onnx_file(repo_root, "identity_types"), feeds)
    result = client.infer("identity_types", infer_inputs(feeds, types))
    for dt in IDENTITY_TYPES:
        name = f"OUT_{dt}"
        assert result.get_output(name).datatype == dt
        actual = result.as_numpy(name)
        assert_tensor_equal(actual, feeds[f"IN_{dt}"], dt, exact=True, what=f"{name} vs input")
        assert_tensor_equal(actual, expected[name], dt, exact=True, what=f"{name} vs onnxruntime")


def test_identity_typed_contents_round_trip(stub, repo_root: Path, rng):
    """Every datatype that has a typed InferTensorContents field (all but FP16/BF16) is accepted in that
    field and comes back unchanged (the server may answer raw, as Triton does, or typed)."""
    feeds = identity_feeds(rng, TYPED_TYPES)
    feeds["IN_FP32"] = special_values("FP32")[:-1]  # edge values, minus NaN (it loses its payload in Python)
    feeds["IN_INT64"] = special_values("INT64")
    request = service_pb2.ModelInferRequest(model_name="identity_typed", id="typed-contents")
    for dt in TYPED_TYPES:
        data = feeds[f"IN_{dt}"]
        request.inputs.add(name=f"IN_{dt}", datatype=dt, shape=list(data.shape),
                           contents=typed_contents(data, dt))
    expected = run_reference(onnx_file(repo_root, "identity_typed"), feeds)
    response = stub.ModelInfer(request, timeout=RPC_TIMEOUT_S)
    assert response.id == "typed-contents"
    for dt in TYPED_TYPES:
        actual = decode_output(response, f"OUT_{dt}")
        assert_tensor_equal(actual, feeds[f"IN_{dt}"], dt, exact=True, what=f"OUT_{dt} vs input")
        assert_tensor_equal(actual, expected[f"OUT_{dt}"], dt, exact=True, what=f"OUT_{dt} vs onnxruntime")


def test_identity_bf16_round_trip(client, repo_root: Path, rng):
    """BF16 (raw only; ml_dtypes.bfloat16 arrays in tritonclient) comes back bit-exact, like onnxruntime."""
    for data in (random_tensor(rng, "BF16", (7,)), special_values("BF16")):
        expected = run_reference(onnx_file(repo_root, "identity_bf16"), {"IN_BF16": data})["OUT_BF16"]
        result = client.infer("identity_bf16", infer_inputs({"IN_BF16": data}, {"IN_BF16": "BF16"}))
        assert result.get_output("OUT_BF16").datatype == "BF16"
        actual = result.as_numpy("OUT_BF16")
        assert_tensor_equal(actual, data, "BF16", exact=True, what="OUT_BF16 vs input")
        assert_tensor_equal(actual, expected, "BF16", exact=True, what="OUT_BF16 vs onnxruntime")


def test_bytes_are_not_required_to_be_utf8(client, rng):
    """BYTES are bytes, not text: non-UTF-8 elements round-trip unchanged (Triton passes them through)."""
    feeds = identity_feeds(rng, IDENTITY_TYPES)
    feeds["IN_BYTES"] = np.array([b"\xff\xfe\x00", b"\x80", bytes(range(256))], dtype=np.object_)
    result = client.infer("identity_types", infer_inputs(feeds, {f"IN_{dt}": dt for dt in IDENTITY_TYPES}),
                          outputs=[grpcclient.InferRequestedOutput("OUT_BYTES")])
    assert_tensor_equal(result.as_numpy("OUT_BYTES"), feeds["IN_BYTES"], "BYTES", exact=True, what="OUT_BYTES")


# --------------------------------------------------------------------------- bad requests


def _simple_feeds(batch: int = 1) -> dict[str, np.ndarray]:
    base = np.arange(16, dtype=np.int32)
    return {"INPUT0": np.tile(base, (batch, 1)), "INPUT1": np.tile(base * 2, (batch, 1))}


def _simple_inputs() -> list[grpcclient.InferInput]:
    return infer_inputs(_simple_feeds(), {"INPUT0": "INT32", "INPUT1": "INT32"})


def _input(name: str, data: np.ndarray, datatype: str, shape=None) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    if shape is not None:
        tensor.set_shape(list(shape))
    return tensor


def _raw_request(**tensors) -> service_pb2.ModelInferRequest:
    """A request to `simple` whose inputs are given as name=(datatype, shape, raw bytes | InferTensorContents)."""
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name, (datatype, shape, data) in tensors.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(shape))
        if isinstance(data, bytes):
            request.raw_input_contents.append(data)
        else:
            tensor.contents.CopyFrom(data)
    return request


@dataclass(frozen=True)
class BadRequest:
    id: str
    code: grpc.StatusCode
    needles: tuple[str, ...]  # what the error message must mention
    send: Callable  # (client, stub) -> response; must raise


INVALID = grpc.StatusCode.INVALID_ARGUMENT
FEEDS = _simple_feeds()
RAW0 = FEEDS["INPUT0"].tobytes()
RAW1 = FEEDS["INPUT1"].tobytes()

BAD_REQUESTS = [
    BadRequest("unknown-model", grpc.StatusCode.NOT_FOUND, ("no_such_model",),
               lambda c, s: c.infer("no_such_model", _simple_inputs())),
    BadRequest("unknown-version", grpc.StatusCode.NOT_FOUND, ("simple", "7"),
               lambda c, s: c.infer("simple", _simple_inputs(), model_version="7")),
    BadRequest("missing-input", INVALID, ("INPUT1",),
               lambda c, s: c.infer("simple", [_input("INPUT0", FEEDS["INPUT0"], "INT32")])),
    BadRequest("unknown-input", INVALID, ("INPUT9",),
               lambda c, s: c.infer("simple", [*_simple_inputs(), _input("INPUT9", FEEDS["INPUT0"], "INT32")])),
    BadRequest("duplicated-input", INVALID, ("INPUT0",),
               lambda c, s: c.infer("simple", [*_simple_inputs(), _input("INPUT0", FEEDS["INPUT0"], "INT32")])),
    BadRequest("wrong-datatype", INVALID, ("INPUT0",),
               lambda c, s: c.infer("simple", [_input("INPUT0", FEEDS["INPUT0"].astype(np.float32), "FP32"),
                                               _input("INPUT1", FEEDS["INPUT1"], "INT32")])),
    # Triton reads INPUT0's first dimension as the batch size, so INPUT1 is the one that differs.
    BadRequest("wrong-rank", INVALID, ("INPUT1", "batch size does not match"),
               lambda c, s: c.infer("simple", [_input("INPUT0", FEEDS["INPUT0"][0], "INT32"),
                                               _input("INPUT1", FEEDS["INPUT1"], "INT32")])),
    BadRequest("wrong-dimension", INVALID, ("INPUT0",),
               lambda c, s: c.infer("simple", [_input("INPUT0", FEEDS["INPUT0"][:, :15], "INT32"),
                                               _input("INPUT1", FEEDS["INPUT1"], "INT32")])),
    BadRequest("raw-size-mismatch", INVALID, ("INPUT0",),
               lambda c, s: s.ModelInfer(_raw_request(INPUT0=("INT32", [1, 16], RAW0[:-4]),
                                                      INPUT1=("INT32", [1, 16], RAW1)), timeout=RPC_TIMEOUT_S)),
    BadRequest("raw-and-typed-mixed", INVALID, ("INPUT1",),
               lambda c, s: s.ModelInfer(_raw_request(
                   INPUT0=("INT32", [1, 16], RAW0),
                   INPUT1=("INT32", [1, 16], typed_contents(FEEDS["INPUT1"], "INT32"))), timeout=RPC_TIMEOUT_S)),
    BadRequest("batch-over-max", INVALID, ("batch",),
               lambda c, s: c.infer("add_one_batched", [_input("x", np.ones((5, 4), np.float32), "FP32")])),
    BadRequest("unknown-output", INVALID, ("OUTPUT9",),
               lambda c, s: c.infer("simple", _simple_inputs(),
                                    outputs=[grpcclient.InferRequestedOutput("OUTPUT9")])),
]


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[b.id for b in BAD_REQUESTS])
def test_bad_request_is_rejected(client, stub, bad: BadRequest):
    """A malformed request fails with the Triton status code (NOT_FOUND for an unknown model/version,
    INVALID_ARGUMENT otherwise) and a message naming the offending tensor/field."""
    assert_rpc_error(lambda: bad.send(client, stub), bad.code, bad.needles)


def test_server_still_serves_after_bad_requests(client, stub):
    """After every kind of bad request (sent again here, so the order of tests does not matter) the server
    still answers a correct request correctly."""
    for bad in BAD_REQUESTS:
        assert_rpc_error(lambda: bad.send(client, stub), bad.code)
    assert client.is_server_live() and client.is_server_ready()
    result = client.infer("simple", _simple_inputs(), request_id="after-bad-requests")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), FEEDS["INPUT0"] + FEEDS["INPUT1"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), FEEDS["INPUT0"] - FEEDS["INPUT1"])
    assert result.get_response().id == "after-bad-requests"


# --------------------------------------------------------------------------- repository index


def test_repository_index_states(client):
    """RepositoryIndex (over both repositories) lists corrupt and bad_config as UNAVAILABLE with a
    non-empty reason (bad_config's naming the unknown field `max_batch_sise`) and every other model READY."""
    index = client.get_model_repository_index().models
    by_name: dict[str, list] = {}
    for entry in index:
        by_name.setdefault(entry.name, []).append(entry)
    for model in READY_MODELS:
        assert model in by_name, f"{model} missing from the repository index"
        for entry in by_name[model]:
            assert entry.state == "READY", f"{model} v{entry.version}: {entry.state} ({entry.reason})"
            assert entry.version in ("", *READY_MODELS[model])
    for model, must_mention in UNAVAILABLE_MODELS.items():
        assert model in by_name, f"{model} missing from the repository index"
        for entry in by_name[model]:
            assert entry.state == "UNAVAILABLE", f"{model}: {entry.state}"
            assert entry.reason.strip(), f"{model}: empty reason"
            if must_mention:
                assert must_mention in entry.reason, f"{model}: reason {entry.reason!r} lacks {must_mention!r}"


def test_repository_index_ready_filter(client, stub):
    """RepositoryIndex with ready=true (a field tritonclient does not expose) lists exactly the READY
    models: all the loadable ones and none of the unloadable ones."""
    response = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=RPC_TIMEOUT_S)
    ready_names = {m.name for m in response.models}
    assert set(READY_MODELS) <= ready_names
    assert not ready_names & set(UNAVAILABLE_MODELS)
    assert all(m.state in ("", "READY") for m in response.models)


# --------------------------------------------------------------------------- offline checks


@pytest.mark.parametrize("model", sorted(set(READY_MODELS) - {"linear_auto"}) + ["bad_config", "corrupt"])
def test_offline_config_matches_onnx(repo_root: Path, model: str):
    """Offline: each hand-written config.pbtxt names the same tensors, types and dims as its ONNX file.

    (bad_config is read with its misspelled line dropped; corrupt's model is garbage, so only its
    config is parsed.)
    """
    path = model_dir(repo_root, model) / "config.pbtxt"
    text = path.read_text()
    if model == "bad_config":
        with pytest.raises(text_format.ParseError, match="max_batch_sise"):
            text_format.Parse(text, model_config_pb2.ModelConfig())
        text = "\n".join(line for line in text.splitlines() if "max_batch_sise" not in line)
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == model
    assert config.platform == "onnxruntime_onnx"
    if model == "corrupt":
        with pytest.raises(Exception):  # protobuf DecodeError: not a ModelProto at all
            onnx.load(str(onnx_file(repo_root, "corrupt", "1")))
        return
    batch = [-1] if config.max_batch_size > 0 else []
    for version in READY_MODELS.get(model, ["1"]):
        onnx_in, onnx_out = onnx_signature(onnx_file(repo_root, model, version))
        for declared, tensors in ((onnx_in, config.input), (onnx_out, config.output)):
            from_config = [
                TensorSig(t.name, CONFIG_TYPE_TO_TRITON[model_config_pb2.DataType.Name(t.data_type)],
                          tuple(batch + list(t.dims)))
                for t in tensors
            ]
            assert from_config == declared, f"{model} v{version}: config {from_config} != onnx {declared}"


def test_offline_reference_helpers(repo_root: Path, rng):
    """Offline: the onnxruntime reference computes what the generator meant (guards the oracle itself)."""
    a = random_tensor(rng, "INT32", (3, 16))
    b = random_tensor(rng, "INT32", (3, 16))
    out = run_reference(onnx_file(repo_root, "simple"), {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)

    x = random_tensor(rng, "FP32", (2, 4))
    np.testing.assert_allclose(run_reference(onnx_file(repo_root, "add_one_batched"), {"x": x})["y"], x + 1)

    features = random_tensor(rng, "FP32", (4, 32))
    v1 = run_reference(onnx_file(repo_root, "mlp_classifier", "1"), {"features": features})
    v2 = run_reference(onnx_file(repo_root, "mlp_classifier", "2"), {"features": features})
    assert not np.allclose(v1["probabilities"], v2["probabilities"]), "versions 1 and 2 must differ"
    for v in (v1, v2):
        np.testing.assert_allclose(v["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
        assert v["label"].dtype == np.int64 and v["label"].shape == (4, 1)
        np.testing.assert_array_equal(v["label"][:, 0], v["probabilities"].argmax(axis=1))

    for model, types in (("identity_types", IDENTITY_TYPES), ("identity_typed", TYPED_TYPES), ("identity_bf16", ["BF16"])):
        for special in (False, True):
            feeds = identity_feeds(rng, types, special=special)
            out = run_reference(onnx_file(repo_root, model), feeds)
            for dt in types:
                assert_tensor_equal(out[f"OUT_{dt}"], feeds[f"IN_{dt}"], dt, exact=True, what=f"{model} {dt}")

    for dt in TYPED_TYPES:  # typed contents / decode_output round trip without a server
        data = special_values(dt) if dt not in FLOAT_TYPES else special_values(dt)[:-1]
        response = service_pb2.ModelInferResponse()
        tensor = response.outputs.add(name="t", datatype=dt, shape=list(data.shape))
        tensor.contents.CopyFrom(typed_contents(data, dt))
        assert_tensor_equal(decode_output(response, "t"), data, dt, exact=True, what=f"typed {dt}")
