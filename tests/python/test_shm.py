"""System shared memory through NVIDIA's Python client: Triton's classic simple_grpc_shm_client flow.

`tritonclient.utils.shared_memory` creates the POSIX shared memory objects, `tritonclient.grpc` registers
them and runs `simple` with its inputs and outputs in shared memory, and the answers are read back from the
regions.

Needs a running Ferry serving examples/model_repository: FERRY_GRPC_URL (host:port, required: the tests
fail, never skip, without it) and FERRY_REPO_ROOT (the checkout; required too, so that a wrong working
directory cannot go unnoticed).
"""

import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

URL = os.environ.get("FERRY_GRPC_URL")
ROOT = os.environ.get("FERRY_REPO_ROOT")

# simple: two INT32 inputs of shape [1, 16]; OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
TENSOR_BYTES = 16 * 4


def key(tag: str) -> str:
    """A key of our own, so that concurrent runs on one machine never share an object."""
    return f"/ferry_py_{tag}_{os.getpid()}"


@pytest.fixture(scope="module")
def client():
    if not URL:
        pytest.fail("FERRY_GRPC_URL is not set: start Ferry and point the tests at its gRPC port")
    if not ROOT or not (Path(ROOT) / "examples/model_repository/simple").is_dir():
        pytest.fail(f"FERRY_REPO_ROOT is not set to the Ferry checkout (got {ROOT!r})")
    with grpcclient.InferenceServerClient(URL) as c:
        c.unregister_system_shared_memory()
        yield c
        c.unregister_system_shared_memory()


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


def test_simple_grpc_shm_client_flow(client, regions):
    """Inputs and outputs in system shared memory, exactly as Triton's simple_grpc_shm_client does it."""
    assert "system_shared_memory" in client.get_server_metadata().extensions

    output0 = regions("output0_data", "output0", TENSOR_BYTES)
    output1 = regions("output1_data", "output1", TENSOR_BYTES)
    client.register_system_shared_memory("output0_data", key("output0"), TENSOR_BYTES)
    client.register_system_shared_memory("output1_data", key("output1"), TENSOR_BYTES)

    input0_data, input1_data = simple_inputs()
    inputs_region = regions("input_data", "input", 2 * TENSOR_BYTES)
    shm.set_shared_memory_region(inputs_region, [input0_data])
    shm.set_shared_memory_region(inputs_region, [input1_data], offset=TENSOR_BYTES)
    client.register_system_shared_memory("input_data", key("input"), 2 * TENSOR_BYTES)

    inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_shared_memory("input_data", TENSOR_BYTES)
    inputs[1].set_shared_memory("input_data", TENSOR_BYTES, offset=TENSOR_BYTES)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output0_data", TENSOR_BYTES)
    outputs[1].set_shared_memory("output1_data", TENSOR_BYTES)

    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)

    got = {}
    for name, region in (("OUTPUT0", output0), ("OUTPUT1", output1)):
        tensor = results.get_output(name)
        assert tensor is not None, f"{name} missing from the response"
        assert tensor.datatype == "INT32" and list(tensor.shape) == [1, 16]
        got[name] = shm.get_contents_as_numpy(region, utils.triton_to_np_dtype(tensor.datatype), tensor.shape)
    np.testing.assert_array_equal(got["OUTPUT0"], input0_data + input1_data)
    np.testing.assert_array_equal(got["OUTPUT1"], input0_data - input1_data)

    status = client.get_system_shared_memory_status(as_json=True)
    regions_by_name = {region["name"]: region for region in status["regions"].values()}
    assert set(regions_by_name) == {"input_data", "output0_data", "output1_data"}
    assert regions_by_name["input_data"]["key"] == key("input")
    assert int(regions_by_name["input_data"]["byte_size"]) == 2 * TENSOR_BYTES

    client.unregister_system_shared_memory()
    assert not client.get_system_shared_memory_status(as_json=True).get("regions")


def test_shared_memory_output_next_to_a_raw_output(client, regions):
    """One output in shared memory, the other in the response: as_numpy still finds the raw one."""
    input0_data, input1_data = simple_inputs()
    output1 = regions("mixed_out", "mixed_out", TENSOR_BYTES)
    client.register_system_shared_memory("mixed_out", key("mixed_out"), TENSOR_BYTES)
    inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(input0_data)
    inputs[1].set_data_from_numpy(input1_data)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[1].set_shared_memory("mixed_out", TENSOR_BYTES)
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)
    np.testing.assert_array_equal(results.as_numpy("OUTPUT0"), input0_data + input1_data)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(output1, np.int32, [1, 16]), input0_data - input1_data
    )
    client.unregister_system_shared_memory("mixed_out")


def test_errors_reach_the_client(client, regions):
    """Registration and inference errors arrive as InferenceServerException with Triton's status codes."""
    regions("small", "small", 32)
    client.register_system_shared_memory("small", key("small"), 32)
    with pytest.raises(InferenceServerException) as taken:
        client.register_system_shared_memory("small", key("small"), 32)
    assert "StatusCode.ALREADY_EXISTS" in str(taken.value.status())
    with pytest.raises(InferenceServerException) as missing:
        client.register_system_shared_memory("nowhere", key("never_created"), 32)
    # Triton answers an object it cannot open with INTERNAL (shared_memory_manager.cc, OpenSharedMemoryRegion).
    assert "StatusCode.INTERNAL" in str(missing.value.status())
    assert missing.value.message().startswith(f"Unable to open shared memory region: '{key('never_created')}'")
    with pytest.raises(InferenceServerException) as too_big:
        client.register_system_shared_memory("big", key("small"), 64)
    assert "StatusCode.INVALID_ARGUMENT" in str(too_big.value.status())
    assert "holds 32 bytes" in too_big.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.get_system_shared_memory_status("nowhere")
    assert "StatusCode.NOT_FOUND" in str(unknown.value.status())

    input0_data, input1_data = simple_inputs()
    inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
        grpcclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(input0_data)
    inputs[1].set_data_from_numpy(input1_data)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
    outputs[0].set_shared_memory("small", 32)
    with pytest.raises(InferenceServerException) as overflow:
        client.infer(model_name="simple", inputs=inputs, outputs=outputs)
    # Triton's INTERNAL error and text (grpc/infer_handler.cc, ResponseAllocatorHelper).
    assert "StatusCode.INTERNAL" in str(overflow.value.status())
    assert overflow.value.message() == (
        "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least "
        "64 bytes to hold the results"
    )
    client.unregister_system_shared_memory("small")
