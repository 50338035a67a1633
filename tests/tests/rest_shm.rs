//! End-to-end tests of Triton's REST shared memory API (`/v2/systemsharedmemory/...` and
//! `/v2/cudasharedmemory/...`, Triton's `http_server.cc`) and of shared memory tensors in REST inference, on
//! a real server whose gRPC and REST front ends share one registry of regions; and of the CUDA shared
//! memory calls of both protocols on a server without GPU support. `tests/python/test_rest_shm.py` runs the
//! same flows through NVIDIA's `tritonclient`.

use std::collections::HashMap;

use ferry_proto::inference::{
    CudaSharedMemoryRegisterRequest, CudaSharedMemoryStatusRequest, CudaSharedMemoryUnregisterRequest,
    InferParameter, ModelInferRequest, SystemSharedMemoryRegisterRequest, SystemSharedMemoryStatusRequest,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use ferry_tests::{HttpFrontEnd, RestReply, ShmObject, TestServer, rest_request, run_pytest};
use serde_json::{Value, json};
use tonic::Code;

/// `simple`'s tensors: one row of 16 INT32s.
const TENSOR_BYTES: usize = 16 * 4;

async fn start() -> (TestServer, HttpFrontEnd) {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST front end");
    (server, http)
}

async fn stop(server: TestServer, http: HttpFrontEnd) {
    http.stop().await;
    server.stop().await;
}

async fn get(http: &HttpFrontEnd, path: &str) -> RestReply {
    rest_request(http.address, "GET", path, b"").await.expect("GET")
}

async fn post(http: &HttpFrontEnd, path: &str, body: &[u8]) -> RestReply {
    rest_request(http.address, "POST", path, body)
        .await
        .expect("POST")
}

async fn post_json(http: &HttpFrontEnd, path: &str, body: &Value) -> RestReply {
    post(http, path, body.to_string().as_bytes()).await
}

async fn register(http: &HttpFrontEnd, name: &str, key: &str, offset: usize, byte_size: usize) -> RestReply {
    let body = json!({"key": key, "offset": offset, "byte_size": byte_size});
    post_json(
        http,
        &format!("/v2/systemsharedmemory/region/{name}/register"),
        &body,
    )
    .await
}

/// The JSON body of a 200 answer.
fn ok_json(reply: &RestReply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

/// Asserts a 200 with an empty body, as Triton answers register and unregister.
fn assert_ok_empty(reply: &RestReply) {
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b""[..]),
        "{}",
        reply.text()
    );
}

/// Asserts a Triton error answer: `status`, and a `{"error": ...}` body holding every one of `needles`.
fn assert_error(reply: &RestReply, status: u16, needles: &[&str]) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body: Value = serde_json::from_slice(&reply.body).expect("an error body is JSON");
    let message = body["error"].as_str().expect("{\"error\": <message>}");
    for needle in needles {
        assert!(message.contains(needle), "'{message}' lacks '{needle}'");
    }
}

fn int32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn int32_values(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A `simple` input or output reference to `region`, as tritonclient.http writes it.
fn in_shm(region: &str, offset: usize, byte_size: usize) -> Value {
    let mut parameters = json!({"shared_memory_region": region, "shared_memory_byte_size": byte_size});
    if offset != 0 {
        parameters["shared_memory_offset"] = json!(offset);
    }
    parameters
}

fn shm_input(name: &str, region: &str, offset: usize) -> Value {
    json!({"name": name, "shape": [1, 16], "datatype": "INT32", "parameters": in_shm(region, offset, TENSOR_BYTES)})
}

fn shm_output(name: &str, region: &str, offset: usize) -> Value {
    json!({"name": name, "parameters": in_shm(region, offset, TENSOR_BYTES)})
}

/// `simple` with both inputs in `inputs` (INPUT0 at 0, INPUT1 after it) and both outputs in `outputs`.
fn all_in_shm(inputs: &str, outputs: &str) -> Value {
    json!({
        "inputs": [shm_input("INPUT0", inputs, 0), shm_input("INPUT1", inputs, TENSOR_BYTES)],
        "outputs": [shm_output("OUTPUT0", outputs, 0), shm_output("OUTPUT1", outputs, TENSOR_BYTES)],
    })
}

fn sum_and_difference(a: &[i32], b: &[i32]) -> (Vec<i32>, Vec<i32>) {
    (
        a.iter().zip(b).map(|(x, y)| x + y).collect(),
        a.iter().zip(b).map(|(x, y)| x - y).collect(),
    )
}

#[tokio::test]
async fn rest_registers_infers_through_and_unregisters_regions() {
    let (server, http) = start().await;
    let inputs = ShmObject::new("rest_in", 2 * TENSOR_BYTES);
    let outputs = ShmObject::new("rest_out", 2 * TENSOR_BYTES);
    let (a, b): (Vec<i32>, Vec<i32>) = ((0..16).collect(), vec![1; 16]);
    inputs.write(0, &int32_bytes(&a));
    inputs.write(TENSOR_BYTES, &int32_bytes(&b));
    assert_ok_empty(&register(&http, "input_data", &inputs.key, 0, 2 * TENSOR_BYTES).await);
    assert_ok_empty(&register(&http, "output_data", &outputs.key, 0, 2 * TENSOR_BYTES).await);

    // Triton's $system_shared_memory_status_response: an array of regions.
    let status = ok_json(&get(&http, "/v2/systemsharedmemory/status").await);
    assert_eq!(
        status,
        json!([
            {"name": "input_data", "key": inputs.key, "offset": 0, "byte_size": 2 * TENSOR_BYTES},
            {"name": "output_data", "key": outputs.key, "offset": 0, "byte_size": 2 * TENSOR_BYTES},
        ])
    );
    let one = ok_json(&get(&http, "/v2/systemsharedmemory/region/output_data/status").await);
    assert_eq!(one.as_array().map(|a| a.len()), Some(1));
    assert_eq!(one[0]["name"], "output_data");

    // Outputs written into their region carry name, datatype and shape only (Triton's FinalizeResponse).
    let mut request = all_in_shm("input_data", "output_data");
    request["id"] = json!("rest-shm");
    let response = ok_json(&post_json(&http, "/v2/models/simple/infer", &request).await);
    assert_eq!(response["id"], "rest-shm");
    assert_eq!(
        response["outputs"],
        json!([
            {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16]},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16]},
        ])
    );
    let (sum, difference) = sum_and_difference(&a, &b);
    assert_eq!(int32_values(&outputs.read(0, TENSOR_BYTES)), sum);
    assert_eq!(
        int32_values(&outputs.read(TENSOR_BYTES, TENSOR_BYTES)),
        difference
    );

    // Mixed: INPUT0 as JSON, INPUT1 from shared memory, OUTPUT0 as binary data, OUTPUT1 into shared memory,
    // with the request asking for binary outputs by default.
    let mixed = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![10; 16]},
            shm_input("INPUT1", "input_data", TENSOR_BYTES),
        ],
        "outputs": [{"name": "OUTPUT0"}, shm_output("OUTPUT1", "output_data", 0)],
    });
    let reply = post_json(&http, "/v2/models/simple/infer", &mixed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let length: usize = reply
        .header("inference-header-content-length")
        .expect("OUTPUT0 is binary")
        .parse()
        .expect("a number");
    let header: Value = serde_json::from_slice(&reply.body[..length]).expect("JSON header");
    assert_eq!(
        header["outputs"][0]["parameters"],
        json!({"binary_data_size": TENSOR_BYTES})
    );
    assert_eq!(
        header["outputs"][1],
        json!({"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16]})
    );
    assert_eq!(int32_values(&reply.body[length..]), vec![11; 16]);
    assert_eq!(int32_values(&outputs.read(0, TENSOR_BYTES)), vec![9; 16]);

    assert_ok_empty(&post(&http, "/v2/systemsharedmemory/region/input_data/unregister", b"").await);
    let status = ok_json(&get(&http, "/v2/systemsharedmemory/status").await);
    assert_eq!(status.as_array().map(|a| a.len()), Some(1), "{status}");
    assert_ok_empty(&post(&http, "/v2/systemsharedmemory/unregister", b"").await);
    assert_eq!(
        ok_json(&get(&http, "/v2/systemsharedmemory/status").await),
        json!([])
    );
    stop(server, http).await;
}

#[tokio::test]
async fn rest_shared_memory_errors_have_tritons_statuses() {
    let (server, http) = start().await;
    let object = ShmObject::new("rest_errors", 2 * TENSOR_BYTES);
    assert_ok_empty(&register(&http, "r", &object.key, 0, 2 * TENSOR_BYTES).await);
    assert_ok_empty(&register(&http, "small", &object.key, 0, 32).await);
    let path = "/v2/systemsharedmemory/region/x/register";
    let long_name = "n".repeat(256);
    let cases: Vec<(RestReply, u16, Vec<&str>)> = vec![
        // Triton: ALREADY_EXISTS, which REST answers 400.
        (
            register(&http, "r", &object.key, 0, 8).await,
            400,
            vec!["'r'", "already"],
        ),
        (
            // Triton: INTERNAL, which REST answers 500.
            register(&http, "m", "/ferry_e2e_no_such_object", 0, 8).await,
            500,
            vec!["Unable to open shared memory region: '/ferry_e2e_no_such_object'"],
        ),
        (
            register(&http, "past", &object.key, 120, 16).await,
            400,
            vec!["'past'", "offset 120 + byte_size 16"],
        ),
        (
            register(&http, &long_name, &object.key, 0, 8).await,
            400,
            vec!["256 bytes long", "the most is 255"],
        ),
        // Triton's texts for a register request without a name, key or size.
        (
            post_json(
                &http,
                "/v2/systemsharedmemory/register",
                &json!({"key": object.key, "byte_size": 8}),
            )
            .await,
            400,
            vec!["'region name' is necessary to register system shared memory region"],
        ),
        (
            post_json(&http, path, &json!({"byte_size": 8})).await,
            400,
            vec!["Shared memory register request has no 'key' field"],
        ),
        (
            post_json(&http, path, &json!({"key": object.key})).await,
            400,
            vec!["Shared memory register request has no 'byte_size' field"],
        ),
        (
            post_json(&http, path, &json!({"key": 5, "byte_size": 8})).await,
            400,
            vec!["'key'", "must be a string, got 5"],
        ),
        (
            post_json(
                &http,
                path,
                &json!({"key": object.key, "offset": -1, "byte_size": 8}),
            )
            .await,
            400,
            vec!["'offset'", "non-negative integer, got -1"],
        ),
        // Triton's `TritonJson::Value::Parse` (INTERNAL there, so 500): rapidjson's text and offset.
        (
            post(&http, path, b"{\"key\": ").await,
            500,
            vec!["failed to parse the request JSON buffer: Invalid value. at 8; "],
        ),
        (
            post_json(&http, path, &json!([1])).await,
            400,
            vec!["must be a JSON object, got an array"],
        ),
        (
            get(&http, "/v2/systemsharedmemory/region/nowhere/status").await,
            404,
            vec!["'nowhere'"],
        ),
        // Status is a GET, register and unregister are POSTs, as in Triton.
        (
            post(&http, "/v2/systemsharedmemory/status", b"").await,
            405,
            vec!["Method Not Allowed"],
        ),
        (
            get(&http, "/v2/systemsharedmemory/region/r/unregister").await,
            405,
            vec!["Method Not Allowed"],
        ),
        // Tensors that point at regions badly.
        (
            post_json(&http, "/v2/models/simple/infer", &all_in_shm("nope", "r")).await,
            404,
            vec!["Unable to find shared memory region: 'nope'"],
        ),
        (
            post_json(&http, "/v2/models/simple/infer", &all_in_shm("r", "small")).await,
            400,
            vec!["Invalid offset + byte size for shared memory region: 'small'"],
        ),
        (
            post_json(
                &http,
                "/v2/models/simple/infer",
                &json!({"inputs": [
                    {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![0; 16],
                     "parameters": in_shm("r", 0, TENSOR_BYTES)},
                    shm_input("INPUT1", "r", TENSOR_BYTES),
                ]}),
            )
            .await,
            400,
            vec![
                "Input must set only one of the following fields",
                "But set 'data' 'shared_memory_region'",
                "INPUT0",
            ],
        ),
        (
            post_json(
                &http,
                "/v2/models/simple/infer",
                &json!({"inputs": [shm_input("INPUT0", "r", 0), shm_input("INPUT1", "r", TENSOR_BYTES)],
                        "outputs": [{"name": "OUTPUT0", "parameters": {
                            "shared_memory_region": "r", "shared_memory_byte_size": 64, "binary_data": true}}]}),
            )
            .await,
            400,
            vec!["Output can't set both 'shared_memory_region' and 'binary_data'"],
        ),
        (
            post_json(
                &http,
                "/v2/models/simple/infer",
                &json!({"inputs": [
                    {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32",
                     "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": -64}},
                    shm_input("INPUT1", "r", TENSOR_BYTES),
                ]}),
            )
            .await,
            400,
            vec!["'shared_memory_byte_size' parameter for tensor 'INPUT0'", "got -64"],
        ),
    ];
    for (reply, status, needles) in cases {
        assert_error(&reply, status, &needles);
    }
    // Unregistering a name that is not registered succeeds, as in Triton.
    assert_ok_empty(&post(&http, "/v2/systemsharedmemory/region/nowhere/unregister", b"").await);
    // A name with characters a URL escapes reaches the registry decoded.
    assert_ok_empty(&register(&http, "with%20space", &object.key, 0, 8).await);
    let status = ok_json(&get(&http, "/v2/systemsharedmemory/region/with%20space/status").await);
    assert_eq!(status[0]["name"], "with space");
    stop(server, http).await;
}

fn int_parameter(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    }
}

/// `simple` over gRPC with every tensor in `region`: INPUT0, INPUT1, OUTPUT0, OUTPUT1 one after the other.
fn grpc_all_in(region: &str) -> ModelInferRequest {
    let at = |index: usize| {
        HashMap::from([
            (
                "shared_memory_region".to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::StringParam(region.into())),
                },
            ),
            (
                "shared_memory_offset".to_owned(),
                int_parameter((index * TENSOR_BYTES) as i64),
            ),
            (
                "shared_memory_byte_size".to_owned(),
                int_parameter(TENSOR_BYTES as i64),
            ),
        ])
    };
    let input = |name: &str, index| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        parameters: at(index),
        contents: None,
    };
    let output = |name: &str, index| InferRequestedOutputTensor {
        name: name.into(),
        parameters: at(index),
    };
    ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![input("INPUT0", 0), input("INPUT1", 1)],
        outputs: vec![output("OUTPUT0", 2), output("OUTPUT1", 3)],
        ..Default::default()
    }
}

/// One registry serves both front ends, as in Triton: what one protocol registers, the other sees, uses
/// and unregisters.
#[tokio::test]
async fn both_protocols_share_one_registry() {
    let (server, http) = start().await;
    let mut grpc = server.raw_client().await.expect("client");
    let object = ShmObject::new("rest_shared", 4 * TENSOR_BYTES);
    object.write(0, &int32_bytes(&[7; 16]));
    object.write(TENSOR_BYTES, &int32_bytes(&[2; 16]));

    grpc.system_shared_memory_register(SystemSharedMemoryRegisterRequest {
        name: "from_grpc".into(),
        key: object.key.clone(),
        offset: 0,
        byte_size: 4 * TENSOR_BYTES as u64,
    })
    .await
    .expect("register over gRPC");
    let status = ok_json(&get(&http, "/v2/systemsharedmemory/region/from_grpc/status").await);
    assert_eq!(status[0]["key"], object.key);
    let mut request = all_in_shm("from_grpc", "from_grpc");
    request["outputs"] = json!([
        shm_output("OUTPUT0", "from_grpc", 2 * TENSOR_BYTES),
        shm_output("OUTPUT1", "from_grpc", 3 * TENSOR_BYTES),
    ]);
    ok_json(&post_json(&http, "/v2/models/simple/infer", &request).await);
    assert_eq!(
        int32_values(&object.read(2 * TENSOR_BYTES, TENSOR_BYTES)),
        vec![9; 16]
    );
    assert_error(
        &register(&http, "from_grpc", &object.key, 0, 8).await,
        400,
        &["'from_grpc'"],
    );

    assert_ok_empty(&register(&http, "from_rest", &object.key, 0, 4 * TENSOR_BYTES).await);
    let regions = grpc
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: String::new() })
        .await
        .expect("status over gRPC")
        .into_inner()
        .regions;
    let mut names: Vec<&str> = regions.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["from_grpc", "from_rest"]);
    object.write(TENSOR_BYTES, &int32_bytes(&[3; 16]));
    grpc.model_infer(grpc_all_in("from_rest"))
        .await
        .expect("infer over gRPC through a region registered over REST");
    assert_eq!(
        int32_values(&object.read(3 * TENSOR_BYTES, TENSOR_BYTES)),
        vec![4; 16]
    );

    assert_ok_empty(&post(&http, "/v2/systemsharedmemory/unregister", b"").await);
    let regions = grpc
        .system_shared_memory_status(SystemSharedMemoryStatusRequest { name: String::new() })
        .await
        .expect("status over gRPC")
        .into_inner()
        .regions;
    assert!(regions.is_empty(), "{regions:?}");
    stop(server, http).await;
}

/// Without a GPU Ferry answers OK to unregistering CUDA regions and an empty status, and refuses only
/// registering, with INVALID_ARGUMENT (REST 400) and Triton's text for a handle that cannot be opened
/// (`SharedMemoryManager::RegisterCUDASharedMemory`), the reason naming the missing driver;
/// `SharedMemoryManager::GetStatus` for a name.
/// Triton's text when a CUDA IPC handle cannot be opened; Ferry's reason follows it.
const CUDA_REFUSED: &str =
    "failed to register CUDA shared memory region 'gpu_region': failed to open CUDA IPC handle: ";

#[tokio::test]
async fn cuda_shared_memory_without_gpus_answers_like_triton() {
    let (server, http) = start().await;
    let mut grpc = server.raw_client().await.expect("client");
    for name in ["", "gpu_region"] {
        grpc.cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest { name: name.into() })
            .await
            .expect("unregister CUDA regions");
    }
    let all = grpc
        .cuda_shared_memory_status(CudaSharedMemoryStatusRequest { name: String::new() })
        .await
        .expect("status of every CUDA region")
        .into_inner();
    assert!(all.regions.is_empty(), "{:?}", all.regions);
    let unknown = grpc
        .cuda_shared_memory_status(CudaSharedMemoryStatusRequest {
            name: "gpu_region".into(),
        })
        .await
        .expect_err("no such region");
    assert_eq!(
        (unknown.code(), unknown.message()),
        (
            Code::NotFound,
            "Unable to find cuda shared memory region: 'gpu_region'"
        )
    );
    let refused = grpc
        .cuda_shared_memory_register(CudaSharedMemoryRegisterRequest {
            name: "gpu_region".into(),
            raw_handle: vec![0u8; 64].into(),
            device_id: 0,
            byte_size: 64,
        })
        .await
        .expect_err("no GPUs");
    assert_eq!(refused.code(), Code::InvalidArgument, "{}", refused.message());
    assert!(
        refused.message().starts_with(CUDA_REFUSED),
        "{}",
        refused.message()
    );
    if ferry_server::gpu::inventory().devices.is_empty() {
        assert!(
            refused.message().contains("NVIDIA driver"),
            "{}",
            refused.message()
        );
    }
    // A system region's name is not a CUDA region's.
    let object = ShmObject::new("rest_cuda", 8);
    assert_ok_empty(&register(&http, "system", &object.key, 0, 8).await);
    assert_error(
        &get(&http, "/v2/cudasharedmemory/region/system/status").await,
        404,
        &["The region named 'system' is registered as system shared memory, not CUDA shared memory"],
    );

    assert_ok_empty(&post(&http, "/v2/cudasharedmemory/unregister", b"").await);
    assert_ok_empty(&post(&http, "/v2/cudasharedmemory/region/gpu_region/unregister", b"").await);
    assert_eq!(
        ok_json(&get(&http, "/v2/cudasharedmemory/status").await),
        json!([])
    );
    assert_error(
        &get(&http, "/v2/cudasharedmemory/region/gpu_region/status").await,
        404,
        &["Unable to find cuda shared memory region: 'gpu_region'"],
    );
    // A cudaIpcMemHandle_t is 64 bytes, base64-encoded as tritonclient's get_raw_handle() sends it.
    let handle =
        json!({"raw_handle": {"b64": format!("{}==", "A".repeat(86))}, "device_id": 0, "byte_size": 64});
    assert_error(
        &post_json(&http, "/v2/cudasharedmemory/region/gpu_region/register", &handle).await,
        400,
        &[CUDA_REFUSED],
    );
    let short = json!({"raw_handle": {"b64": "AAAAAAAAAAAAAAAAAAAAAA=="}, "device_id": 0, "byte_size": 64});
    assert_error(
        &post_json(&http, "/v2/cudasharedmemory/region/gpu_region/register", &short).await,
        400,
        &[CUDA_REFUSED, "must be a 64-byte cudaIpcMemHandle_t, got 16 bytes"],
    );
    assert_error(
        &post_json(&http, "/v2/cudasharedmemory/register", &handle).await,
        400,
        &["'region name' is necessary to register cuda shared memory region"],
    );
    assert_error(
        &post_json(
            &http,
            "/v2/cudasharedmemory/region/gpu_region/register",
            &json!({"device_id": 0, "byte_size": 64}),
        )
        .await,
        400,
        &["Shared memory register request has no 'raw_handle' field"],
    );
    assert_error(
        &post(&http, "/v2/cudasharedmemory/status", b"").await,
        405,
        &["Method Not Allowed"],
    );
    stop(server, http).await;
}

/// NVIDIA's own clients: `tests/python/test_rest_shm.py` drives the REST shared memory API with
/// `tritonclient.http` and `tritonclient.utils.shared_memory` (Triton's simple_http_shm_client flow), mixes
/// it with `tritonclient.grpc`, and makes the CUDA calls of both clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_shared_memory_flow_works() {
    let (server, http) = start().await;
    let status = run_pytest(
        "test_rest_shm.py",
        &[("FERRY_HTTP_URL", http.url()), ("FERRY_GRPC_URL", server.url())],
    )
    .await;
    stop(server, http).await;
    assert!(
        status.success(),
        "the tritonclient REST shared memory suite failed: {status}"
    );
}
