//! Triton's classification extension end to end: `tests/python/test_classification.py` (NVIDIA's
//! `tritonclient`, gRPC and REST, compared with onnxruntime) against a real server, and the requests and
//! label files that client cannot produce, sent raw.

use std::{collections::HashMap, net::SocketAddr, path::Path};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, ModelInferRequest, RepositoryModelLoadRequest,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use ferry_server::repository::{ControlMode, RepositoryOptions};
use ferry_tests::{TestServer, run_pytest, test_repository};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_triton_classification_answers() {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    let status = run_pytest(
        "test_classification.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the classification suite failed: {status}");
}

fn parameter(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

/// One row of zeros for mlp_labels, asking for `probabilities` with `parameters`.
fn mlp_request(parameters: Vec<(&str, ParameterChoice)>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp_labels".into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![1, 32],
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "probabilities".into(),
            parameters: parameters
                .into_iter()
                .map(|(key, choice)| (key.to_owned(), parameter(choice)))
                .collect(),
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; 32 * 4])],
        ..Default::default()
    }
}

/// Parameter types tritonclient never sends, checked as `ParseClassificationParams` (Triton server
/// `src/grpc/grpc_utils.cc`) and `InferAllocatorPayload` (`src/grpc/infer_handler.h`) check them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_parameters_are_checked_as_triton_checks_them() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    for (choice, start) in [
        (
            ParameterChoice::Uint64Param(3),
            "invalid value type for 'classification' parameter, expected int64_param",
        ),
        (
            ParameterChoice::StringParam("3".into()),
            "invalid value type for 'classification' parameter, expected int64_param",
        ),
        (
            ParameterChoice::Int64Param(0),
            "invalid value for 'classification' parameter, expected >= 0",
        ),
    ] {
        let status = client
            .model_infer(mlp_request(vec![("classification", choice.clone())]))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{choice:?}");
        assert!(
            status.message().starts_with(start),
            "{choice:?}: {}",
            status.message()
        );
    }
    let both = client
        .model_infer(mlp_request(vec![
            ("classification", ParameterChoice::Int64Param(2)),
            ("shared_memory_region", ParameterChoice::StringParam("r".into())),
            ("shared_memory_byte_size", ParameterChoice::Int64Param(64)),
        ]))
        .await
        .expect_err("refused");
    assert_eq!(both.code(), Code::InvalidArgument);
    assert!(
        both.message()
            .starts_with("output can't set both 'shared_memory_region' and 'classification'"),
        "{}",
        both.message()
    );
    // The largest count asks for every class: nothing is allocated for the count itself.
    let all = client
        .model_infer(mlp_request(vec![(
            "classification",
            ParameterChoice::Int64Param(i64::MAX),
        )]))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(
        (all.outputs[0].datatype.as_str(), all.outputs[0].shape.as_slice()),
        ("BYTES", &[1, 10][..])
    );
    server.stop().await;
}

/// Sends one REST request with `Connection: close`; the status and the body.
async fn post(address: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body.as_bytes()).await.expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let status = String::from_utf8_lossy(&raw[..end])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let json = serde_json::from_slice(&raw[end + 4..]).expect("a JSON body");
    (status, json)
}

fn rest_request(parameters: Value) -> Value {
    json!({
        "inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": vec![0.0; 32]}],
        "outputs": [{"name": "probabilities", "parameters": parameters}]
    })
}

/// Triton's REST front end (`CheckClassificationOutput`, `ValidateOutputParameter` and `OutputInfo` in its
/// `src/http_server.cc`): an unsigned count, where 0 means the raw tensor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_parameters_are_read_as_triton_reads_them() {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    let path = "/v2/models/mlp_labels/infer";

    let (status, body) = post(http.address, path, &rest_request(json!({"classification": 2}))).await;
    assert_eq!(status, 200, "{body}");
    let output = &body["outputs"][0];
    assert_eq!(
        (output["datatype"].clone(), output["shape"].clone()),
        (json!("BYTES"), json!([1, 2]))
    );
    let first = output["data"][0].as_str().expect("a string");
    assert_eq!(first.split(':').count(), 3, "value:index:label, got {first}");

    let (status, body) = post(http.address, path, &rest_request(json!({"classification": 0}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["outputs"][0]["datatype"], "FP32",
        "0 asks for the raw tensor"
    );
    assert_eq!(body["outputs"][0]["shape"], json!([1, 10]));

    for (parameters, start) in [
        (
            json!({"classification": "2"}),
            "Unable to set 'classification': attempt to access JSON non-unsigned-integer as unsigned-integer",
        ),
        (
            json!({"classification": 1.5}),
            "Unable to set 'classification': attempt to access JSON non-unsigned-integer as unsigned-integer",
        ),
        (
            json!({"classification": 2, "shared_memory_region": "r", "shared_memory_byte_size": 64}),
            "Output can't set both 'shared_memory_region' and 'classification'",
        ),
    ] {
        let (status, body) = post(http.address, path, &rest_request(parameters.clone())).await;
        // Triton's JSON reader errs INTERNAL (`TRITONJSON_STATUSRETURN` in `http_server.cc`), so 500 through
        // `HttpCodeFromError`; `ValidateOutputParameter`'s own check is INVALID_ARG, so 400.
        let expected = if start.starts_with("Unable") { 500 } else { 400 };
        assert_eq!(status, expected, "{parameters}: {body}");
        let message = body["error"].as_str().expect("an error message");
        assert!(message.starts_with(start), "{parameters}: {message}");
    }
    http.stop().await;
    server.stop().await;
}

/// A model folder holding mlp_labels' model under `name`, with a config whose `probabilities` output names
/// `label_filename`.
fn write_model(root: &Path, name: &str, label_filename: &str) {
    let folder = root.join(name);
    std::fs::create_dir_all(folder.join("1")).expect("mkdir");
    let source = test_repository().join("mlp_labels");
    std::fs::copy(source.join("1/model.onnx"), folder.join("1/model.onnx")).expect("copy model");
    let config = std::fs::read_to_string(source.join("config.pbtxt"))
        .expect("read config")
        .replace("mlp_labels", name)
        .replace("labels.txt", label_filename);
    std::fs::write(folder.join("config.pbtxt"), config).expect("write config");
}

/// The label of the top class of an all-zero row of model `name`.
async fn top_label(server: &TestServer, name: &str) -> String {
    let mut client = server.raw_client().await.expect("client");
    let mut request = mlp_request(vec![("classification", ParameterChoice::Int64Param(1))]);
    request.model_name = name.into();
    let response = client.model_infer(request).await.expect("answered").into_inner();
    let raw = &response.raw_output_contents[0];
    let text = String::from_utf8(raw[4..].to_vec()).expect("UTF-8");
    text.splitn(3, ':').nth(2).unwrap_or_default().to_owned()
}

/// Label files are read when the model loads (Triton core `Model::Init`): a missing one fails the load with
/// `ReadTextFile`'s message, one outside the model folder with Triton's, and a reload reads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_files_are_read_when_the_model_loads() {
    let repository = tempfile::tempdir().expect("temp dir");
    let root = repository.path();
    write_model(root, "labelled", "names.txt");
    std::fs::write(root.join("labelled/names.txt"), "old\n".repeat(10)).expect("labels");
    write_model(root, "no_labels", "missing.txt");
    write_model(root, "escaping", "../secret.txt");
    std::fs::write(root.join("secret.txt"), "x\n").expect("outside");
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        startup_models: vec!["*".into()],
        strict_readiness: false,
        ..RepositoryOptions::new(vec![root.to_path_buf()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let reasons: HashMap<String, String> = server
        .registry()
        .index()
        .into_iter()
        .filter(|row| row.state == "UNAVAILABLE")
        .map(|row| (row.name, row.reason))
        .collect();
    let missing = root.join("no_labels/missing.txt");
    assert!(
        reasons["no_labels"].contains(&format!(
            "failed to open text file for read {}: No such file or directory",
            missing.display()
        )),
        "{reasons:?}"
    );
    assert!(
        reasons["escaping"].contains(&format!(
            "label file path '{}' for output 'probabilities' in model 'escaping' is outside model directory",
            root.join("escaping/../secret.txt").display()
        )),
        "{reasons:?}"
    );
    assert!(!reasons.contains_key("labelled"), "{reasons:?}");
    assert_eq!(top_label(&server, "labelled").await, "old");

    // Only the label file changes: a reload must still answer with the new labels.
    std::fs::write(root.join("labelled/names.txt"), "new\n".repeat(10)).expect("labels");
    let mut client = server.raw_client().await.expect("client");
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "labelled".into(),
            ..Default::default()
        })
        .await
        .expect("reloaded");
    assert_eq!(top_label(&server, "labelled").await, "new");
    server.stop().await;
}
