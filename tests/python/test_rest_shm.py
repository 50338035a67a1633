"""Shared memory over REST through NVIDIA's Python clients: Triton's simple_http_shm_client flow.

`tritonclient.utils.shared_memory` creates the POSIX shared memory objects, `tritonclient.http` registers
them and runs `simple` with its inputs and outputs in shared memory, and the answers are read back from the
regions. Regions registered with one protocol are used with the other (Ferry's gRPC and REST front ends
share one registry, as Triton's do), and the CUDA shared memory calls of both clients get Triton's answers
for a server without GPU support.

Needs a running Ferry serving examples/model_repository: FERRY_HTTP_URL and FERRY_GRPC_URL (host:port of
its REST and gRPC endpoints) and FERRY_REPO_ROOT (the checkout), all required: the tests fail, never skip,
without them.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

HTTP_URL = os.environ.get("FERRY_HTTP_URL")
GRPC_URL = os.environ.get("FERRY_GRPC_URL")
ROOT = os.environ.get("FERRY_REPO_ROOT")

# simple: two INT32 inputs of shape [1, 16]; OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
TENSOR_BYTES = 16 * 4


def key(tag: str) -> str:
    """A key of our own, so that concurrent runs on one machine never share an object."""
    return f"/ferry_py_rest_{tag}_{os.getpid()}"


@pytest.fixture(scope="module")
def client():
    if not HTTP_URL or not GRPC_URL:
        pytest.fail("FERRY_HTTP_URL and FERRY_GRPC_URL must be set to Ferry's REST and gRPC ports")
    if not ROOT or not (Path(ROOT) / "examples/model_repository/simple").is_dir():
        pytest.fail(f"FERRY_REPO_ROOT is not set to the Ferry checkout (got {ROOT!r})")
    c = httpclient.InferenceServerClient(HTTP_URL)
    # simple_http_shm_client starts by clearing both kinds of regions.
    c.unregister_system_shared_memory()
    c.unregister_cuda_shared_memory()
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture(scope="module")
def grpc_client():
    with grpcclient.InferenceServerClient(GRPC_URL) as c:
        yield c


@pytest.fixture
def regions():
    """Creates regions through tritonclient and destroys (unlinks) them when the test ends."""
    handles = []

    def create(name: str, tag: str, byte_size: int):
        handle = shm.create_shared_memory_region(name, key(tag), byte_size)
        handles.append(handle)
        return handle

    yield create
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def simple_inputs():
    input0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    input1 = np.ones((1, 16), dtype=np.int32)
    return input0, input1


def test_simple_http_shm_client_flow(client, regions):
    """Inputs and outputs in system shared memory, as Triton's simple_http_shm_client does it."""
    assert "system_shared_memory" in client.get_server_metadata()["extensions"]

    output0 = regions("output0_data", "output0", TENSOR_BYTES)
    output1 = regions("output1_data", "output1", TENSOR_BYTES)
    client.register_system_shared_memory("output0_data", key("output0"), TENSOR_BYTES)
    client.register_system_shared_memory("output1_data", key("output1"), TENSOR_BYTES)

    input0_data, input1_data = simple_inputs()
    input0 = regions("input0_data", "input0", TENSOR_BYTES)
    input1 = regions("input1_data", "input1", TENSOR_BYTES)
    shm.set_shared_memory_region(input0, [input0_data])
    shm.set_shared_memory_region(input1, [input1_data])
    client.register_system_shared_memory("input0_data", key("input0"), TENSOR_BYTES)
    client.register_system_shared_memory("input1_data", key("input1"), TENSOR_BYTES)

    inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_shared_memory("input0_data", TENSOR_BYTES)
    inputs[1].set_shared_memory("input1_data", TENSOR_BYTES)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=True),
    ]
    outputs[0].set_shared_memory("output0_data", TENSOR_BYTES)
    outputs[1].set_shared_memory("output1_data", TENSOR_BYTES)

    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)

    got = {}
    for name, region in (("OUTPUT0", output0), ("OUTPUT1", output1)):
        tensor = results.get_output(name)
        assert tensor is not None, f"{name} missing from the response"
        assert tensor["datatype"] == "INT32" and tensor["shape"] == [1, 16]
        assert "data" not in tensor
        got[name] = shm.get_contents_as_numpy(
            region, utils.triton_to_np_dtype(tensor["datatype"]), tensor["shape"]
        )
    np.testing.assert_array_equal(got["OUTPUT0"], input0_data + input1_data)
    np.testing.assert_array_equal(got["OUTPUT1"], input0_data - input1_data)

    # Triton's REST status is a list of {name, key, offset, byte_size}.
    status = {region["name"]: region for region in client.get_system_shared_memory_status()}
    assert set(status) == {"input0_data", "input1_data", "output0_data", "output1_data"}
    assert status["input1_data"] == {
        "name": "input1_data",
        "key": key("input1"),
        "offset": 0,
        "byte_size": TENSOR_BYTES,
    }
    only = client.get_system_shared_memory_status("output0_data")
    assert [region["name"] for region in only] == ["output0_data"]

    client.unregister_system_shared_memory("input0_data")
    assert len(client.get_system_shared_memory_status()) == 3
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []


def test_one_region_for_inputs_and_outputs_with_an_offset(client, regions):
    """Both inputs in one region at offsets, one output there too, the other output as binary data."""
    input0_data, input1_data = simple_inputs()
    region = regions("shared", "shared", 3 * TENSOR_BYTES)
    shm.set_shared_memory_region(region, [input0_data, input1_data])
    client.register_system_shared_memory("shared", key("shared"), 3 * TENSOR_BYTES)
    inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_shared_memory("shared", TENSOR_BYTES)
    inputs[1].set_shared_memory("shared", TENSOR_BYTES, offset=TENSOR_BYTES)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    outputs[1].set_shared_memory("shared", TENSOR_BYTES, offset=2 * TENSOR_BYTES)
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)
    np.testing.assert_array_equal(results.as_numpy("OUTPUT0"), input0_data + input1_data)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(region, np.int32, [3, 16])[2:], input0_data - input1_data
    )
    client.unregister_system_shared_memory("shared")


def test_errors_reach_the_client(client, regions):
    """Registration and inference errors arrive as InferenceServerException with Triton's HTTP statuses."""
    regions("small", "small", 32)
    client.register_system_shared_memory("small", key("small"), 32)
    with pytest.raises(InferenceServerException) as taken:
        client.register_system_shared_memory("small", key("small"), 32)
    assert taken.value.status() == "400"
    with pytest.raises(InferenceServerException) as missing:
        client.register_system_shared_memory("nowhere", key("never_created"), 32)
    # Triton answers INTERNAL (500) for an object it cannot open (SharedMemoryManager::RegisterSystemSharedMemory).
    assert missing.value.status() == "500"
    with pytest.raises(InferenceServerException) as too_big:
        client.register_system_shared_memory("big", key("small"), 64)
    assert too_big.value.status() == "400"
    assert "holds 32 bytes" in too_big.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.get_system_shared_memory_status("nowhere")
    assert unknown.value.status() == "404"
    # Unregistering a name that is not registered succeeds, as in Triton.
    client.unregister_system_shared_memory("nowhere")

    input0_data, input1_data = simple_inputs()
    inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(input0_data)
    inputs[1].set_data_from_numpy(input1_data)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0")]
    outputs[0].set_shared_memory("small", 32)
    with pytest.raises(InferenceServerException) as overflow:
        client.infer(model_name="simple", inputs=inputs, outputs=outputs)
    # Triton: INTERNAL "shared memory size specified with the request for output ... should be at least ..."
    assert overflow.value.status() == "500"
    assert "output 'OUTPUT0'" in overflow.value.message() and "at least 64 bytes" in overflow.value.message()
    inputs[0].set_shared_memory("gone", TENSOR_BYTES)
    with pytest.raises(InferenceServerException) as gone:
        client.infer(model_name="simple", inputs=inputs)
    assert gone.value.status() == "404" and "'gone'" in gone.value.message()
    client.unregister_system_shared_memory("small")


def test_regions_cross_protocols(client, grpc_client, regions):
    """A region registered over gRPC is seen and used over REST, and the other way round."""
    input0_data, input1_data = simple_inputs()
    inputs_region = regions("cross_in", "cross_in", 2 * TENSOR_BYTES)
    outputs_region = regions("cross_out", "cross_out", 2 * TENSOR_BYTES)
    shm.set_shared_memory_region(inputs_region, [input0_data, input1_data])
    grpc_client.register_system_shared_memory("cross_in", key("cross_in"), 2 * TENSOR_BYTES)
    client.register_system_shared_memory("cross_out", key("cross_out"), 2 * TENSOR_BYTES)

    assert [r["name"] for r in client.get_system_shared_memory_status("cross_in")] == ["cross_in"]
    grpc_status = grpc_client.get_system_shared_memory_status("cross_out", as_json=True)
    assert [r["name"] for r in grpc_status["regions"].values()] == ["cross_out"]

    http_inputs = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    http_inputs[0].set_shared_memory("cross_in", TENSOR_BYTES)
    http_inputs[1].set_shared_memory("cross_in", TENSOR_BYTES, offset=TENSOR_BYTES)
    http_outputs = [httpclient.InferRequestedOutput("OUTPUT0")]
    http_outputs[0].set_shared_memory("cross_out", TENSOR_BYTES)
    client.infer(model_name="simple", inputs=http_inputs, outputs=http_outputs)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs_region, np.int32, [1, 16]), input0_data + input1_data
    )

    grpc_inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    grpc_inputs[0].set_shared_memory("cross_in", TENSOR_BYTES)
    grpc_inputs[1].set_shared_memory("cross_in", TENSOR_BYTES, offset=TENSOR_BYTES)
    grpc_outputs = [grpcclient.InferRequestedOutput("OUTPUT1")]
    grpc_outputs[0].set_shared_memory("cross_out", TENSOR_BYTES, offset=TENSOR_BYTES)
    grpc_client.infer(model_name="simple", inputs=grpc_inputs, outputs=grpc_outputs)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs_region, np.int32, [2, 16])[1:], input0_data - input1_data
    )

    client.unregister_system_shared_memory()
    assert not grpc_client.get_system_shared_memory_status(as_json=True).get("regions")


# A cudaIpcMemHandle_t is 64 bytes, sent base64-encoded as tritonclient's get_raw_handle() gives it; without
# the NVIDIA driver the server never gets to open it.
FAKE_HANDLE = "A" * 86 + "=="

# Triton's text when a handle cannot be opened (RegisterCUDASharedMemory in src/shared_memory_manager.cc);
# Ferry's reason after it names the missing driver.
NO_DRIVER = "failed to register CUDA shared memory region 'gpu_region': failed to open CUDA IPC handle: "


def test_cuda_calls_over_http(client):
    """Without the NVIDIA driver: unregister and status succeed (empty), register fails with 400."""
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("gpu_region")
    assert client.get_cuda_shared_memory_status() == []
    with pytest.raises(InferenceServerException) as unknown:
        client.get_cuda_shared_memory_status("gpu_region")
    assert unknown.value.status() == "404"
    assert unknown.value.message() == "Unable to find cuda shared memory region: 'gpu_region'"
    with pytest.raises(InferenceServerException) as refused:
        client.register_cuda_shared_memory("gpu_region", FAKE_HANDLE, 0, 64)
    assert refused.value.status() == "400"
    assert refused.value.message().startswith(NO_DRIVER), refused.value.message()
    assert "NVIDIA driver" in refused.value.message()


def test_cuda_calls_over_grpc(grpc_client):
    """The same answers over gRPC, where register is INVALID_ARGUMENT."""
    grpc_client.unregister_cuda_shared_memory()
    grpc_client.unregister_cuda_shared_memory("gpu_region")
    assert not grpc_client.get_cuda_shared_memory_status(as_json=True).get("regions")
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.get_cuda_shared_memory_status("gpu_region")
    assert "StatusCode.NOT_FOUND" in str(unknown.value.status())
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.register_cuda_shared_memory("gpu_region", FAKE_HANDLE, 0, 64)
    assert "StatusCode.INVALID_ARGUMENT" in str(refused.value.status())
    assert refused.value.message().startswith(NO_DRIVER), refused.value.message()
    assert "NVIDIA driver" in refused.value.message()
