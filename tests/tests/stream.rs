//! ModelStreamInfer over a real bidirectional stream: every request is answered with its own id, errors
//! come back in `error_message` without ending the stream (or as a status with `triton_grpc_error: true`),
//! and stream requests are batched with the others.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
use ferry_tests::{TestServer, run_pytest};
use tokio_stream::StreamExt;
use tonic::{Code, metadata::MetadataValue};

fn add_one(id: &str, base: f32, rows: usize) -> ModelInferRequest {
    let values: Vec<u8> = (0..rows * 4).flat_map(|_| base.to_le_bytes()).collect();
    ModelInferRequest {
        model_name: "add_one_greedy".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(values)],
        ..Default::default()
    }
}

#[tokio::test]
async fn every_stream_request_gets_its_own_answer_and_errors_do_not_end_the_stream() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let mut requests: Vec<ModelInferRequest> = (0..200)
        .map(|i| add_one(&format!("r{i}"), i as f32, 1 + i % 3))
        .collect();
    let mut bad = add_one("bad", 0.0, 1);
    bad.inputs[0].shape = vec![1, 5];
    requests.insert(50, bad);
    let mut unknown = add_one("unknown", 0.0, 1);
    unknown.model_name = "no_such_model".into();
    requests.insert(120, unknown);
    let count = requests.len();
    let mut responses = client
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .expect("stream")
        .into_inner();
    let mut seen = HashMap::new();
    while let Some(message) = responses.next().await {
        let message = message.expect("no stream error");
        let response = message.infer_response.expect("a response");
        seen.insert(response.id.clone(), (message.error_message, response));
    }
    assert_eq!(seen.len(), count, "one answer per request");
    for i in 0..200usize {
        let (error, response) = &seen[&format!("r{i}")];
        assert!(error.is_empty(), "r{i}: {error}");
        let rows = 1 + i % 3;
        assert_eq!(response.outputs[0].shape, [rows as i64, 4]);
        let y = f32::from_le_bytes(response.raw_output_contents[0][..4].try_into().expect("4 bytes"));
        assert_eq!(y, i as f32 + 1.0, "r{i} got another request's rows");
    }
    assert!(seen["bad"].0.contains("'x'"), "{}", seen["bad"].0);
    assert!(
        seen["unknown"].0.contains("no_such_model"),
        "{}",
        seen["unknown"].0
    );
    server.stop().await;
}

#[tokio::test]
async fn with_triton_grpc_error_a_failure_ends_the_stream_with_its_status() {
    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let mut unknown = add_one("unknown", 0.0, 1);
    unknown.model_name = "no_such_model".into();
    let mut request = tonic::Request::new(tokio_stream::iter(vec![unknown]));
    request
        .metadata_mut()
        .insert("triton_grpc_error", MetadataValue::from_static("true"));
    let mut responses = client
        .model_stream_infer(request)
        .await
        .expect("stream")
        .into_inner();
    let status = responses.next().await.expect("an item").expect_err("a status");
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_streams_against_ferry() {
    let server = TestServer::with_all_models().await.expect("server");
    let status = run_pytest("test_stream.py", &[("FERRY_GRPC_URL", server.url())]).await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient streaming tests failed: {status}"
    );
}
