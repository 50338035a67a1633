//! End-to-end tests of the gRPC front end: the real server on a loopback port, real ONNX Runtime, the
//! generated tonic client.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::inference::{
    InferTensorContents, ModelConfigRequest, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelReadyRequest, RepositoryIndexRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use ferry_tests::TestServer;
use tonic::Code;

fn int32_bytes(values: &[i32]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn int32_values(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: None,
    }
}

/// A request for `simple` with one row of `a` and `b`.
fn simple_request(a: &[i32], b: &[i32]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "simple".into(),
        id: "req-1".into(),
        inputs: vec![
            input("INPUT0", "INT32", &[1, 16]),
            input("INPUT1", "INT32", &[1, 16]),
        ],
        raw_input_contents: vec![int32_bytes(a), int32_bytes(b)],
        ..Default::default()
    }
}

fn output<'a>(response: &'a ModelInferResponse, name: &str) -> &'a [u8] {
    let position = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("output {name} missing"));
    &response.raw_output_contents[position]
}

async fn infer_error(server: &TestServer, request: ModelInferRequest) -> tonic::Status {
    let mut client = server.raw_client().await.expect("client");
    client.model_infer(request).await.expect_err("request must fail")
}

#[tokio::test]
async fn health_and_server_metadata() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .expect("ready")
            .into_inner()
            .ready
    );
    let metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(metadata.name, "ferry");
    assert!(metadata.extensions.iter().any(|e| e == "model_repository"));
    for (name, version, expected) in [
        ("simple", "", true),
        ("mlp_classifier", "1", true),
        ("mlp_classifier", "3", false),
        ("corrupt", "", false),
        ("nope", "", false),
    ] {
        let request = ModelReadyRequest {
            name: name.into(),
            version: version.into(),
        };
        let ready = client.model_ready(request).await.expect("rpc").into_inner().ready;
        assert_eq!(ready, expected, "ModelReady({name}, '{version}')");
    }
    server.stop().await;
}

#[tokio::test]
async fn simple_adds_and_subtracts_and_echoes_the_request() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let a: Vec<i32> = (0..16).collect();
    let b: Vec<i32> = (0..16).map(|x| 100 - 3 * x).collect();
    let response = client
        .model_infer(simple_request(&a, &b))
        .await
        .expect("infer")
        .into_inner();
    assert_eq!(response.model_name, "simple");
    assert_eq!(response.model_version, "1");
    assert_eq!(response.id, "req-1");
    assert_eq!(response.outputs.len(), 2);
    assert_eq!(response.outputs[0].datatype, "INT32");
    assert_eq!(response.outputs[0].shape, [1, 16]);
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let difference: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert_eq!(int32_values(output(&response, "OUTPUT0")), sum);
    assert_eq!(int32_values(output(&response, "OUTPUT1")), difference);
    server.stop().await;
}

#[tokio::test]
async fn typed_contents_give_the_same_answer_as_raw() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let a: Vec<i32> = (0..16).map(|x| x * 7).collect();
    let b: Vec<i32> = (0..16).map(|x| -x).collect();
    let mut typed = simple_request(&a, &b);
    typed.raw_input_contents.clear();
    for (tensor, values) in typed.inputs.iter_mut().zip([&a, &b]) {
        tensor.contents = Some(InferTensorContents {
            int_contents: values.clone(),
            ..Default::default()
        });
    }
    let from_typed = client.model_infer(typed).await.expect("typed").into_inner();
    let from_raw = client
        .model_infer(simple_request(&a, &b))
        .await
        .expect("raw")
        .into_inner();
    assert_eq!(from_typed.raw_output_contents, from_raw.raw_output_contents);
    server.stop().await;
}

#[tokio::test]
async fn a_subset_of_outputs_is_returned_in_the_order_asked() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let mut request = simple_request(&[1; 16], &[2; 16]);
    request.outputs = vec![InferRequestedOutputTensor {
        name: "OUTPUT1".into(),
        parameters: HashMap::new(),
    }];
    let response = client.model_infer(request).await.expect("infer").into_inner();
    assert_eq!(response.outputs.len(), 1);
    assert_eq!(response.outputs[0].name, "OUTPUT1");
    assert_eq!(int32_values(&response.raw_output_contents[0]), vec![-1; 16]);
    server.stop().await;
}

#[tokio::test]
async fn an_empty_version_means_the_highest_ready_version() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let features: Vec<u8> = (0..32).flat_map(|i| (i as f32 / 10.0).to_le_bytes()).collect();
    let request = |version: &str| ModelInferRequest {
        model_name: "mlp_classifier".into(),
        model_version: version.into(),
        inputs: vec![input("features", "FP32", &[1, 32])],
        raw_input_contents: vec![Bytes::from(features.clone())],
        ..Default::default()
    };
    let latest = client
        .model_infer(request(""))
        .await
        .expect("latest")
        .into_inner();
    let two = client.model_infer(request("2")).await.expect("v2").into_inner();
    let one = client.model_infer(request("1")).await.expect("v1").into_inner();
    assert_eq!(latest.model_version, "2");
    assert_eq!(one.model_version, "1");
    assert_eq!(latest.raw_output_contents, two.raw_output_contents);
    assert_ne!(
        one.raw_output_contents, two.raw_output_contents,
        "versions have different weights"
    );
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "mlp_classifier".into(),
            version: String::new(),
        })
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(metadata.versions, ["2", "1"]);
    assert_eq!(metadata.inputs[0].shape, [-1, 32]);
    assert_eq!(metadata.platform, "onnxruntime_onnx");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let server = TestServer::with_all_models().await.expect("server");
    let client = server.raw_client().await.expect("client");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let a = vec![i; 16];
                let b: Vec<i32> = (0..16).collect();
                let mut request = simple_request(&a, &b);
                request.id = format!("request-{i}");
                let response = client.model_infer(request).await.expect("infer").into_inner();
                assert_eq!(response.id, format!("request-{i}"));
                let expected: Vec<i32> = b.iter().map(|x| i + x).collect();
                assert_eq!(int32_values(output(&response, "OUTPUT0")), expected);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    server.stop().await;
}

#[tokio::test]
async fn model_config_shows_the_auto_completed_config() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let config = client
        .model_config(ModelConfigRequest {
            name: "linear_auto".into(),
            version: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    assert_eq!(config.name, "linear_auto");
    assert_eq!(config.platform, "onnxruntime_onnx");
    assert_eq!(config.max_batch_size, 4);
    assert_eq!(config.input[0].name, "x");
    assert_eq!(config.input[0].dims, [8]);
    assert_eq!(config.output[0].dims, [3]);
    server.stop().await;
}

#[tokio::test]
async fn repository_index_reports_failures_with_reasons() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models;
    let state = |name: &str| {
        index
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing from the index"))
    };
    assert_eq!(state("simple").state, "READY");
    assert_eq!(state("corrupt").state, "UNAVAILABLE");
    assert!(
        state("corrupt").reason.contains("model.onnx"),
        "{}",
        state("corrupt").reason
    );
    let bad = state("bad_config");
    assert_eq!(bad.state, "UNAVAILABLE");
    assert!(
        bad.reason.contains("config.pbtxt:3") && bad.reason.contains("max_batch_sise"),
        "{}",
        bad.reason
    );
    let ready_only = client
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .expect("index")
        .into_inner()
        .models;
    assert!(ready_only.iter().all(|m| m.state == "READY"));
    assert!(ready_only.iter().any(|m| m.name == "simple"));
    server.stop().await;
}

/// Triton's statuses and texts for a model or version it cannot serve (`ModelLifeCycle::GetModel`, prefixed
/// by `ModelRepositoryManager::GetModel`; the version string by `GetModelVersionFromString`).
#[tokio::test]
async fn unknown_models_and_versions_are_not_found() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut request = simple_request(&[0; 16], &[0; 16]);
    request.model_name = "no_such_model".into();
    let status = infer_error(&server, request).await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "Request for unknown model: 'no_such_model' is not found"
    );

    let mut request = simple_request(&[0; 16], &[0; 16]);
    request.model_version = "7".into();
    let status = infer_error(&server, request).await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "Request for unknown model: 'simple' version 7 is not found"
    );

    let mut request = simple_request(&[0; 16], &[0; 16]);
    request.model_version = "one".into();
    let status = infer_error(&server, request).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "failed to get model version from specified version string 'one' (details: stol), version should \
         be an integral value > 0"
    );

    // A model whose only version failed to load has no available version; Ferry says why after Triton's text.
    let mut request = simple_request(&[0; 16], &[0; 16]);
    request.model_name = "corrupt".into();
    let status = infer_error(&server, request).await;
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status
            .message()
            .starts_with("Request for unknown model: 'corrupt' has no available versions; version 1: "),
        "{}",
        status.message()
    );
    let mut request = simple_request(&[0; 16], &[0; 16]);
    request.model_name = "corrupt".into();
    request.model_version = "1".into();
    let status = infer_error(&server, request).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .starts_with("Request for unknown model: 'corrupt' version 1 is not at ready state; "),
        "{}",
        status.message()
    );
    server.stop().await;
}

/// Each malformed request fails with Triton's status and text (`infer_handler.cc`; core's
/// `InferenceRequest::Normalize` and `ValidateRequestInputs`, which tag the request id).
#[tokio::test]
async fn every_bad_request_is_invalid_argument_naming_the_tensor() {
    let server = TestServer::with_all_models().await.expect("server");
    type Breaker = fn(&mut ModelInferRequest);
    const NOTE: &str = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension \
                        to be prepended to each input shape. If you want to specify the full shape including the \
                        batch dim in your input dims config, try setting max_batch_size to zero. See the model \
                        configuration docs for more info on max_batch_size.";
    let cases: Vec<(&str, Breaker, String)> = vec![
        (
            "missing input",
            |r| {
                r.inputs.pop();
                r.raw_input_contents.pop();
            },
            "[request id: req-1] expected 2 inputs but got 1 inputs for model 'simple'. Got inputs ['INPUT0'], \
             but missing required inputs ['INPUT1']. Please provide all required inputs."
                .into(),
        ),
        (
            "unknown input",
            |r| r.inputs[1].name = "INPUT9".into(),
            "unexpected inference input 'INPUT9' for model 'simple'".into(),
        ),
        (
            "duplicated input",
            |r| r.inputs[1].name = "INPUT0".into(),
            "[request id: req-1] input 'INPUT0' already exists in request".into(),
        ),
        (
            "wrong datatype",
            |r| r.inputs[0].datatype = "FP32".into(),
            "[request id: req-1] inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'"
                .into(),
        ),
        (
            "wrong rank",
            // Triton reads INPUT0's first dimension (16) as its batch size.
            |r| r.inputs[0].shape = vec![16],
            "[request id: req-1] input 'INPUT1' batch size does not match other inputs for 'simple'".into(),
        ),
        (
            "wrong dimension",
            |r| r.inputs[0].shape = vec![1, 15],
            format!(
                "[request id: req-1] unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], \
                 got [1,15]. {NOTE}"
            ),
        ),
        (
            "byte size",
            |r| r.raw_input_contents[0] = Bytes::from(vec![0u8; 60]),
            "[request id: req-1] input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 60"
                .into(),
        ),
        (
            "batch above max",
            |r| {
                r.inputs[0].shape = vec![9, 16];
                r.inputs[1].shape = vec![9, 16];
                r.raw_input_contents = vec![Bytes::from(vec![0u8; 9 * 64]), Bytes::from(vec![0u8; 9 * 64])];
            },
            "[request id: req-1] inference request batch-size must be <= 8 for 'simple'".into(),
        ),
        (
            "mixed raw and typed",
            |r| {
                r.inputs[0].contents = Some(InferTensorContents {
                    int_contents: vec![0; 16],
                    ..Default::default()
                })
            },
            "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"
                .into(),
        ),
        (
            "unknown output",
            |r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "OUTPUT9".into(),
                    parameters: HashMap::new(),
                }]
            },
            "unexpected inference output 'OUTPUT9' for model 'simple'".into(),
        ),
        (
            "typed count",
            |r| {
                r.raw_input_contents.clear();
                for input in &mut r.inputs {
                    input.contents = Some(InferTensorContents {
                        int_contents: vec![1; 3],
                        ..Default::default()
                    });
                }
            },
            "[request id: req-1] input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 12"
                .into(),
        ),
        (
            "negative dimension",
            |r| {
                r.inputs[0].shape = vec![-1, 16];
                r.inputs[1].shape = vec![-1, 16];
            },
            "[request id: req-1] inference request batch-size must be <= 8 for 'simple'".into(),
        ),
        (
            "wildcard dimension",
            |r| r.inputs[0].shape = vec![1, -1],
            "[request id: req-1] All input dimensions should be specified for input 'INPUT0' for model 'simple', \
             got [1,-1]"
                .into(),
        ),
        (
            "batch sizes differ",
            |r| {
                r.inputs[1].shape = vec![2, 16];
                r.raw_input_contents[1] = Bytes::from(vec![0u8; 128]);
            },
            "[request id: req-1] input 'INPUT1' batch size does not match other inputs for 'simple'".into(),
        ),
        (
            "no data",
            |r| {
                r.raw_input_contents.pop();
            },
            "unable to find data for input tensor 'INPUT1' for model 'simple' in request.".into(),
        ),
    ];
    for (case, breaker, expected) in cases {
        let mut request = simple_request(&[1; 16], &[2; 16]);
        breaker(&mut request);
        let status = infer_error(&server, request).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{case}: {}",
            status.message()
        );
        assert_eq!(status.message(), expected, "{case}");
    }
    // The server still answers correctly after all of them.
    let mut client = server.raw_client().await.expect("client");
    let response = client
        .model_infer(simple_request(&[1; 16], &[2; 16]))
        .await
        .expect("infer");
    assert_eq!(int32_values(output(response.get_ref(), "OUTPUT0")), vec![3; 16]);
    server.stop().await;
}

#[tokio::test]
async fn malformed_bytes_elements_are_rejected() {
    let server = TestServer::with_all_models().await.expect("server");
    let request = |raw: Vec<u8>| ModelInferRequest {
        model_name: "identity_bf16".into(),
        inputs: vec![input("IN_BF16", "BF16", &[3])],
        raw_input_contents: vec![Bytes::from(raw)],
        ..Default::default()
    };
    let status = infer_error(&server, request(vec![0; 5])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "[request id: <id_unknown>] input byte size mismatch for input 'IN_BF16' for model 'identity_bf16'. \
         Expected 6, got 5"
    );

    // A lying length prefix must be caught before anything runs (Triton has no text for it: Ferry's own).
    let strings = |raw: Vec<u8>| ModelInferRequest {
        model_name: "simple_identity".into(),
        inputs: vec![input("INPUT0", "BYTES", &[1, 1])],
        raw_input_contents: vec![Bytes::from(raw)],
        ..Default::default()
    };
    let status = infer_error(&server, strings(vec![200, 0, 0, 0, b'a'])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "input 'INPUT0' BYTES element 0 claims 200 bytes but only 1 remain"
    );
    // Too many and too few elements, and a cut length prefix: Triton's texts (`ValidateBytesInputs`).
    let status = infer_error(&server, strings(vec![0, 0, 0, 0, 0, 0, 0, 0])).await;
    assert_eq!(
        status.message(),
        "[request id: <id_unknown>] unexpected number of string elements 2 for inference input 'INPUT0' for \
         model 'simple_identity', expecting 1"
    );
    let status = infer_error(&server, strings(vec![])).await;
    assert_eq!(
        status.message(),
        "[request id: <id_unknown>] expected 1 string elements for inference input 'INPUT0' for model \
         'simple_identity', got 0"
    );
    let status = infer_error(&server, strings(vec![1, 0, 0])).await;
    assert_eq!(
        status.message(),
        "[request id: <id_unknown>] incomplete string length indicator for inference input 'INPUT0' for model \
         'simple_identity', expecting 4 bytes but only 3 bytes available. Please make sure the string length \
         indicator is in one buffer."
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted_and_the_server_goes_on() {
    let server = TestServer::start_with_limit(vec![ferry_tests::example_repository()], 64 * 1024)
        .await
        .expect("server");
    let mut request = simple_request(&[1; 16], &[2; 16]);
    request.raw_input_contents[0] = Bytes::from(vec![0u8; 128 * 1024]);
    let status = infer_error(&server, request).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("too large"), "{}", status.message());
    let mut client = server.raw_client().await.expect("client");
    let response = client
        .model_infer(simple_request(&[1; 16], &[2; 16]))
        .await
        .expect("infer");
    assert_eq!(int32_values(output(response.get_ref(), "OUTPUT0")), vec![3; 16]);
    server.stop().await;
}
