"""What the interop tests compare Ferry against: the `onnxruntime` Python package run on the same .onnx files
and inputs, plus the data helpers the gRPC and HTTP suites share.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from tritonclient.utils import triton_to_np_dtype

REPOSITORIES = ("examples/model_repository", "tests/model_repository")
FLOAT_TYPES = {"FP16", "FP32", "FP64", "BF16"}
# BYTES elements: empty, plain, an embedded NUL, multi-byte UTF-8, long.
BYTES_SAMPLES = [b"", b"ferry", b"a\x00b", "h\u00e9llo \u2603".encode(), b"x" * 300]


def model_dir(root: Path, model: str) -> Path:
    """The directory of `model` in whichever of the two repositories holds it."""
    for repo in REPOSITORIES:
        candidate = root / repo / model
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"model {model!r} is in neither of {REPOSITORIES} under {root}")


@functools.lru_cache(maxsize=None)
def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _bytes_to_str(arr: np.ndarray) -> np.ndarray:
    # onnxruntime's Python binding takes str, not bytes, for string tensors.
    return np.array([b.decode("utf-8") for b in arr.flat], dtype=np.object_).reshape(arr.shape)


def _str_to_bytes(arr: np.ndarray) -> np.ndarray:
    out = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in arr.flat]
    return np.array(out, dtype=np.object_).reshape(arr.shape)


def _ortvalue_bytes(value: ort.OrtValue) -> bytes:
    return ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())


def _run_with_binding(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run through IO binding so that BF16 works.

    onnxruntime's CPU kernels run bfloat16, but `InferenceSession.run` cannot
    convert bfloat16 arrays in or out ("Numpy_type 256 can't be converted to
    MLDataType"), so BF16 data is passed as raw uint16 OrtValues typed BFLOAT16.
    """
    binding = sess.io_binding()
    for name, arr in feeds.items():
        if arr.dtype == ml_dtypes.bfloat16:
            value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(arr).view(np.uint16), onnx.TensorProto.BFLOAT16
            )
        else:
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
        binding.bind_ortvalue_input(name, value)
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cpu")
    sess.run_with_iobinding(binding)
    result = {}
    for meta, value in zip(sess.get_outputs(), binding.get_outputs()):
        if meta.type == "tensor(bfloat16)":
            raw = np.frombuffer(_ortvalue_bytes(value), dtype=ml_dtypes.bfloat16)
            result[meta.name] = raw.reshape(value.shape()).copy()
        else:
            result[meta.name] = value.numpy()
    return result


def run_reference(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of the ONNX model at `path` for `feeds`, computed by onnxruntime on CPU.

    BYTES tensors are numpy object arrays of `bytes` on both sides (as tritonclient
    uses them); they must be valid UTF-8 to be fed to onnxruntime's Python API.
    """
    sess = _session(str(path))
    ort_feeds = {k: (_bytes_to_str(v) if v.dtype == np.object_ else v) for k, v in feeds.items()}
    types = [m.type for m in (*sess.get_inputs(), *sess.get_outputs())]
    if "tensor(bfloat16)" in types:
        outputs = _run_with_binding(sess, ort_feeds)
    else:
        names = [o.name for o in sess.get_outputs()]
        outputs = dict(zip(names, sess.run(names, ort_feeds)))
    return {k: (_str_to_bytes(v) if v.dtype == np.object_ else v) for k, v in outputs.items()}


def random_tensor(rng: np.random.Generator, datatype: str, shape) -> np.ndarray:
    """Random data of a protocol datatype; integer types cover their full range."""
    shape = tuple(shape)
    if datatype == "BYTES":
        picks = rng.integers(0, len(BYTES_SAMPLES), size=shape)
        return np.array([BYTES_SAMPLES[i] for i in picks.flat], dtype=np.object_).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    dtype = triton_to_np_dtype(datatype)
    if datatype in FLOAT_TYPES:
        return rng.normal(0.0, 3.0, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def assert_tensor_equal(actual: np.ndarray, expected: np.ndarray, datatype: str, *, exact: bool, what: str) -> None:
    """Compare one tensor: byte-exact when `exact` (or for non-floats), else allclose."""
    assert actual is not None, f"{what}: missing"
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {actual.shape} != {expected.shape}"
    if datatype == "BYTES":
        actual_bytes = [x.encode() if isinstance(x, str) else bytes(x) for x in actual.flat]  # JSON answers give str
        assert actual_bytes == [bytes(x) for x in expected.flat], f"{what}: bytes differ"
        return
    expected = expected.astype(triton_to_np_dtype(datatype), copy=False)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if exact or datatype not in FLOAT_TYPES:
        assert actual.tobytes() == expected.tobytes(), f"{what}: values differ\n{actual}\n!=\n{expected}"
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=what)
