//! End-to-end tests of the system shared memory extension: POSIX shared memory objects made by the test (as
//! files in `/dev/shm`, which is what `shm_open` creates on Linux), registered over gRPC, then used by
//! `simple` for its inputs and outputs.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse, ServerMetadataRequest,
    SystemSharedMemoryRegisterRequest, SystemSharedMemoryStatusRequest, SystemSharedMemoryUnregisterRequest,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use ferry_tests::{ShmObject, TestServer};
use tonic::Code;

/// `simple`'s tensors: one row of 16 INT32s.
const TENSOR_BYTES: usize = 16 * 4;

fn int32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn int32_values(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn string(value: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.into())),
    }
}

fn int(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    }
}

/// The parameters that put a tensor at `offset` in `region`, as tritonclient sets them.
fn in_shm(region: &str, offset: i64, byte_size: i64) -> HashMap<String, InferParameter> {
    let mut parameters = HashMap::from([
        ("shared_memory_region".to_owned(), string(region)),
        ("shared_memory_byte_size".to_owned(), int(byte_size)),
    ]);
    if offset != 0 {
        parameters.insert("shared_memory_offset".to_owned(), int(offset));
    }
    parameters
}

fn input(name: &str, parameters: HashMap<String, InferParameter>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        parameters,
        contents: None,
    }
}

fn output(name: &str, parameters: HashMap<String, InferParameter>) -> InferRequestedOutputTensor {
    InferRequestedOutputTensor {
        name: name.into(),
        parameters,
    }
}

/// `simple` with both inputs in region `inputs` (INPUT0 at 0, INPUT1 after it) and both outputs in region
/// `outputs` (OUTPUT0 at 0, OUTPUT1 after it): Triton's simple_grpc_shm_client layout.
fn all_in_shm(inputs: &str, outputs: &str) -> ModelInferRequest {
    let size = TENSOR_BYTES as i64;
    ModelInferRequest {
        model_name: "simple".into(),
        id: "shm-1".into(),
        inputs: vec![
            input("INPUT0", in_shm(inputs, 0, size)),
            input("INPUT1", in_shm(inputs, size, size)),
        ],
        outputs: vec![
            output("OUTPUT0", in_shm(outputs, 0, size)),
            output("OUTPUT1", in_shm(outputs, size, size)),
        ],
        ..Default::default()
    }
}

async fn register(
    server: &TestServer,
    name: &str,
    key: &str,
    offset: u64,
    byte_size: u64,
) -> Result<(), tonic::Status> {
    let mut client = server.raw_client().await.expect("client");
    client
        .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: name.into(),
            key: key.into(),
            offset,
            byte_size,
        })
        .await
        .map(|_| ())
}

async fn unregister(server: &TestServer, name: &str) {
    let mut client = server.raw_client().await.expect("client");
    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest { name: name.into() })
        .await
        .expect("unregister");
}

async fn infer(server: &TestServer, request: ModelInferRequest) -> Result<ModelInferResponse, tonic::Status> {
    let mut client = server.raw_client().await.expect("client");
    client.model_infer(request).await.map(|r| r.into_inner())
}

/// Asserts that `result` failed with `code` and a message holding every one of `needles`.
fn assert_error<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needles: &[&str]) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{}", status.message());
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "'{}' lacks '{needle}'",
            status.message()
        );
    }
}

/// The values Triton's simple example uses: INPUT0 = 0..16, INPUT1 = all ones.
fn simple_values() -> (Vec<i32>, Vec<i32>) {
    ((0..16).collect(), vec![1; 16])
}

#[tokio::test]
async fn simple_reads_inputs_from_and_writes_outputs_to_shared_memory() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert!(
        metadata.extensions.iter().any(|e| e == "system_shared_memory"),
        "{:?}",
        metadata.extensions
    );

    let inputs = ShmObject::new("in", 2 * TENSOR_BYTES);
    let outputs = ShmObject::new("out", 2 * TENSOR_BYTES);
    let (a, b) = simple_values();
    inputs.write(0, &int32_bytes(&a));
    inputs.write(TENSOR_BYTES, &int32_bytes(&b));
    register(&server, "input_data", &inputs.key, 0, 2 * TENSOR_BYTES as u64)
        .await
        .expect("register inputs");
    register(&server, "output_data", &outputs.key, 0, 2 * TENSOR_BYTES as u64)
        .await
        .expect("register outputs");

    let response = infer(&server, all_in_shm("input_data", "output_data"))
        .await
        .expect("infer");
    assert_eq!(response.id, "shm-1");
    assert_eq!(response.outputs.len(), 2);
    // Like Triton: metadata for every output, an empty raw entry for each output in shared memory.
    assert_eq!(response.raw_output_contents, [Bytes::new(), Bytes::new()]);
    for (tensor, offset) in response.outputs.iter().zip([0, TENSOR_BYTES as i64]) {
        assert_eq!(
            (tensor.datatype.as_str(), tensor.shape.as_slice()),
            ("INT32", &[1, 16][..])
        );
        assert!(tensor.contents.is_none());
        assert_eq!(
            tensor.parameters,
            in_shm("output_data", offset, TENSOR_BYTES as i64)
        );
    }
    let sum = int32_values(&outputs.read(0, TENSOR_BYTES));
    let difference = int32_values(&outputs.read(TENSOR_BYTES, TENSOR_BYTES));
    assert_eq!(sum, a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>());
    assert_eq!(
        difference,
        a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>()
    );

    // The input bytes were copied when the request arrived: the client may rewrite the region right away
    // and the next request sees the new values.
    inputs.write(0, &int32_bytes(&[5; 16]));
    infer(&server, all_in_shm("input_data", "output_data"))
        .await
        .expect("infer again");
    assert_eq!(int32_values(&outputs.read(0, TENSOR_BYTES)), vec![6; 16]);
    server.stop().await;
}

#[tokio::test]
async fn shared_memory_and_raw_tensors_mix_in_one_request() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let object = ShmObject::new("mix", 3 * TENSOR_BYTES);
    let (a, b) = simple_values();
    // A region that starts part-way into the object, at an offset that is not page-aligned.
    object.write(TENSOR_BYTES, &int32_bytes(&b));
    register(
        &server,
        "mix",
        &object.key,
        TENSOR_BYTES as u64,
        2 * TENSOR_BYTES as u64,
    )
    .await
    .expect("register");
    let size = TENSOR_BYTES as i64;
    let request = ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![
            input("INPUT0", HashMap::new()),
            input("INPUT1", in_shm("mix", 0, size)),
        ],
        outputs: vec![
            output("OUTPUT0", HashMap::new()),
            output("OUTPUT1", in_shm("mix", size, size)),
        ],
        // One raw entry: only INPUT0 is not in shared memory.
        raw_input_contents: vec![int32_bytes(&a).into()],
        ..Default::default()
    };
    let response = infer(&server, request).await.expect("infer");
    assert_eq!(response.raw_output_contents.len(), 2);
    assert_eq!(
        int32_values(&response.raw_output_contents[0]),
        a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>()
    );
    assert!(response.raw_output_contents[1].is_empty());
    assert!(response.outputs[0].parameters.is_empty());
    assert_eq!(
        int32_values(&object.read(2 * TENSOR_BYTES, TENSOR_BYTES)),
        a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>()
    );
    server.stop().await;
}

#[tokio::test]
async fn status_lists_regions_and_unregister_forgets_them() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let object = ShmObject::new("status", 2 * TENSOR_BYTES);
    register(&server, "first", &object.key, 0, TENSOR_BYTES as u64)
        .await
        .expect("first");
    register(
        &server,
        "second",
        &object.key,
        TENSOR_BYTES as u64,
        TENSOR_BYTES as u64,
    )
    .await
    .expect("second");
    let status = |name: &str| {
        let mut client = client.clone();
        let name = name.to_owned();
        async move {
            client
                .system_shared_memory_status(SystemSharedMemoryStatusRequest { name })
                .await
                .map(|r| r.into_inner().regions)
        }
    };
    let all = status("").await.expect("all");
    assert_eq!(all.len(), 2);
    let second = &all["second"];
    assert_eq!(
        (
            second.name.as_str(),
            second.key.as_str(),
            second.offset,
            second.byte_size
        ),
        (
            "second",
            object.key.as_str(),
            TENSOR_BYTES as u64,
            TENSOR_BYTES as u64
        )
    );
    let one = status("first").await.expect("first");
    assert_eq!(one.keys().collect::<Vec<_>>(), ["first"]);
    // Triton's text (`SharedMemoryManager::GetStatus`).
    assert_error(
        status("third").await,
        Code::NotFound,
        &["Unable to find system shared memory region: 'third'"],
    );

    unregister(&server, "first").await;
    assert_eq!(status("").await.expect("all").len(), 1);
    // Unregistering a name that is not registered succeeds, as in Triton.
    unregister(&server, "first").await;
    unregister(&server, "").await;
    assert!(status("").await.expect("all").is_empty());

    // An unregistered region cannot be used any more; its name can be registered again.
    assert_error(
        infer(&server, all_in_shm("second", "second")).await,
        Code::NotFound,
        &["Unable to find shared memory region: 'second'"],
    );
    register(&server, "second", &object.key, 0, 2 * TENSOR_BYTES as u64)
        .await
        .expect("the name is free again");
    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest { name: String::new() })
        .await
        .expect("unregister all");
    server.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_like_triton() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let object = ShmObject::new("badreg", 100);
    register(&server, "r", &object.key, 0, 100).await.expect("r");
    // Triton's statuses and texts (`SharedMemoryManager::RegisterSystemSharedMemory`), Ferry's detail after.
    assert_error(
        register(&server, "r", &object.key, 0, 10).await,
        Code::AlreadyExists,
        &["shared memory region 'r' already in manager"],
    );
    assert_error(
        register(&server, "missing", "/ferry_e2e_no_such_key", 0, 10).await,
        Code::Internal,
        &["Unable to open shared memory region: '/ferry_e2e_no_such_key'; "],
    );
    assert_error(
        register(&server, "past", &object.key, 96, 8).await,
        Code::InvalidArgument,
        &[
            "failed to register shared memory region 'past': invalid args; ",
            "offset 96 + byte_size 8",
            &object.key,
            "holds 100 bytes",
        ],
    );
    assert_error(
        register(&server, "empty", &object.key, 0, 0).await,
        Code::InvalidArgument,
        &["failed to register shared memory region 'empty': invalid args; byte_size is 0"],
    );
    assert_error(
        register(&server, "", &object.key, 0, 10).await,
        Code::InvalidArgument,
        &["name"],
    );
    server.stop().await;
}

#[tokio::test]
async fn every_bad_tensor_reference_gets_a_clear_error() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let object = ShmObject::new("badref", 4 * TENSOR_BYTES);
    register(&server, "in", &object.key, 0, 2 * TENSOR_BYTES as u64)
        .await
        .expect("in");
    register(&server, "small", &object.key, 2 * TENSOR_BYTES as u64, 32)
        .await
        .expect("small");
    let size = TENSOR_BYTES as i64;
    let with = |edit: &dyn Fn(&mut ModelInferRequest)| {
        let mut request = all_in_shm("in", "in");
        edit(&mut request);
        request
    };
    let cases: Vec<(ModelInferRequest, Code, Vec<&str>)> = vec![
        // Triton's texts: `SharedMemoryManager::GetMemoryInfo`, core's `ValidateRequestInputs`,
        // `InferGRPCToInput` and `ParseSharedMemoryParams`, `ResponseAllocatorHelper`.
        (
            with(&|r| r.inputs[0].parameters = in_shm("nope", 0, size)),
            Code::NotFound,
            vec!["Unable to find shared memory region: 'nope'"],
        ),
        (
            with(&|r| r.inputs[1].parameters = in_shm("in", size + 4, size)),
            Code::InvalidArgument,
            vec![
                "Invalid offset + byte size for shared memory region: 'in'; ",
                "holds 128 bytes",
            ],
        ),
        (
            with(&|r| r.inputs[0].parameters = in_shm("in", 0, 32)),
            Code::InvalidArgument,
            vec![
                "[request id: shm-1] input byte size mismatch for input 'INPUT0' for model 'simple'. \
                 Expected 64, got 32",
            ],
        ),
        (
            with(&|r| {
                r.inputs[0].contents = Some(InferTensorContents {
                    int_contents: vec![0; 16],
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            vec![
                "unexpected 'content' provided when using shared memory for input tensor 'INPUT0' for model \
                 'simple'",
            ],
        ),
        (
            with(&|r| r.raw_input_contents = vec![Bytes::from(vec![0; TENSOR_BYTES])]),
            Code::InvalidArgument,
            vec![
                "raw_input_contents has 1 entries",
                "0 inputs not in shared memory",
            ],
        ),
        (
            with(&|r| {
                r.inputs[0].parameters.remove("shared_memory_byte_size");
            }),
            Code::InvalidArgument,
            vec![
                "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter \
                 for tensor 'INPUT0'",
            ],
        ),
        (
            with(&|r| {
                r.inputs[0]
                    .parameters
                    .insert("shared_memory_region".into(), int(3));
            }),
            Code::InvalidArgument,
            vec![
                "invalid value type for 'shared_memory_region' parameter for tensor 'INPUT0', expected \
                 string_param.",
            ],
        ),
        (
            with(&|r| r.outputs[0].parameters = in_shm("gone", 0, size)),
            Code::NotFound,
            vec!["Unable to find shared memory region: 'gone'"],
        ),
        (
            with(&|r| r.outputs[1].parameters = in_shm("small", 0, 32)),
            Code::Internal,
            vec![
                "shared memory size specified with the request for output 'OUTPUT1' (32 bytes) should be at \
                 least 64 bytes to hold the results",
            ],
        ),
        (
            with(&|r| r.outputs[1].parameters = in_shm("small", 16, 32)),
            Code::InvalidArgument,
            vec![
                "Invalid offset + byte size for shared memory region: 'small'; ",
                "holds 32 bytes",
            ],
        ),
    ];
    for (request, code, needles) in cases {
        assert_error(infer(&server, request).await, code, &needles);
    }
    // A request whose second output does not fit writes neither output.
    object.write(2 * TENSOR_BYTES, &[0xAB; 32]);
    let request = with(&|r| {
        r.outputs[0].parameters = in_shm("in", 0, size);
        r.outputs[1].parameters = in_shm("small", 0, 32);
    });
    let before = object.read(0, 2 * TENSOR_BYTES);
    assert_error(infer(&server, request).await, Code::Internal, &["OUTPUT1"]);
    assert_eq!(object.read(0, 2 * TENSOR_BYTES), before);
    assert_eq!(object.read(2 * TENSOR_BYTES, 32), vec![0xAB; 32]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregistering_while_requests_run_never_breaks_the_server() {
    let server = Arc::new(
        TestServer::start(vec![ferry_tests::example_repository()])
            .await
            .expect("server"),
    );
    let object = ShmObject::new("race", 4 * TENSOR_BYTES);
    let (a, b) = simple_values();
    object.write(0, &int32_bytes(&a));
    object.write(TENSOR_BYTES, &int32_bytes(&b));
    let key = object.key.clone();
    let churn = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            for _ in 0..50 {
                let _ = register(&server, "race", &key, 0, 4 * TENSOR_BYTES as u64).await;
                tokio::task::yield_now().await;
                unregister(&server, "race").await;
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..4 {
        let server = Arc::clone(&server);
        clients.push(tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..25 {
                let mut request = all_in_shm("race", "race");
                request.outputs[0].parameters = in_shm("race", 2 * TENSOR_BYTES as i64, TENSOR_BYTES as i64);
                request.outputs[1].parameters = in_shm("race", 3 * TENSOR_BYTES as i64, TENSOR_BYTES as i64);
                match infer(&server, request).await {
                    Ok(_) => answered += 1,
                    Err(status) => assert_eq!(status.code(), Code::NotFound, "{}", status.message()),
                }
            }
            answered
        }));
    }
    churn.await.expect("churn");
    for client in clients {
        client.await.expect("client");
    }
    // Whatever raced, the server still serves, and a region registered now works.
    register(&server, "after", &object.key, 0, 4 * TENSOR_BYTES as u64)
        .await
        .expect("register after the race");
    infer(&server, all_in_shm("after", "after"))
        .await
        .expect("infer after the race");
    assert_eq!(
        int32_values(&object.read(0, TENSOR_BYTES)),
        a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>()
    );
}

/// Triton's own client: runs `tests/python/test_shm.py` (pytest, `tritonclient.grpc` and
/// `tritonclient.utils.shared_memory`) against a real Ferry server on a loopback port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_shared_memory_flow_works() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let status = ferry_tests::run_pytest("test_shm.py", &[("FERRY_GRPC_URL", server.url())]).await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient shared memory suite failed: {status}"
    );
}
