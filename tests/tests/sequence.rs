//! End-to-end tests of stateful models (`sequence_batching`): the real server on
//! `tests/sequence_repository` (GRU cells and running sums with explicit state, on real ONNX Runtime),
//! driven by NVIDIA's `tritonclient` over gRPC (unary and ModelStreamInfer) and REST in
//! `tests/python/test_sequence.py`, whose reference runs each model alone in onnxruntime.
//!
//! Triton behaviour pinned: core `sequence_batch_scheduler.cc` (SequenceBatchScheduler::Enqueue: a
//! correlation id is required, a sequence's first request must carry START, requests of a sequence run in
//! order; the reaper releases idle sequences) and `infer_handler.cc` (SetInferenceRequestMetadata: the
//! `sequence_id`, `sequence_start`, `sequence_end` parameters).

use ferry_tests::{TestServer, repo_root, run_pytest};

#[tokio::test(flavor = "multi_thread")]
async fn tritonclient_sequences_get_the_answers_of_a_lone_onnxruntime_run() {
    let server = TestServer::start(vec![repo_root().join("tests/sequence_repository")])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_sequence.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient sequence suite failed: {status}"
    );
}

/// An over-long string a client sends is a malformed request, answered like every other such string
/// (docs/limits.md): INVALID_ARGUMENT naming the field, the limit and the length. A string `sequence_id`
/// over 256 bytes used to be RESOURCE_EXHAUSTED while an over-long routing key was INVALID_ARGUMENT without
/// naming where it came from. (Triton takes string correlation ids of any length: `infer_handler.cc`
/// SetInferenceRequestMetadata; the bound is Ferry's.)
#[tokio::test(flavor = "multi_thread")]
async fn over_long_client_strings_are_invalid_arguments_naming_the_field() {
    use ferry_proto::inference::{
        InferParameter, ModelInferRequest, infer_parameter::ParameterChoice,
        model_infer_request::InferInputTensor,
    };
    let server = TestServer::start(vec![repo_root().join("tests/sequence_repository")])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let request = |id: &str| ModelInferRequest {
        model_name: "seq_accumulate_oldest".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; 16].into()],
        parameters: [
            ("sequence_id", ParameterChoice::StringParam(id.to_owned())),
            ("sequence_start", ParameterChoice::BoolParam(true)),
            ("sequence_end", ParameterChoice::BoolParam(true)),
        ]
        .into_iter()
        .map(|(key, choice)| {
            (
                key.to_owned(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect(),
        ..Default::default()
    };
    client
        .model_infer(request(&"s".repeat(256)))
        .await
        .expect("256 bytes are within the limit");
    let refused = client
        .model_infer(request(&"s".repeat(300)))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "parameter 'sequence_id' is 300 bytes long; the most is 256"
    );
    let mut keyed = tonic::Request::new(request("short"));
    keyed.metadata_mut().insert(
        "x-ferry-routing-key",
        "k".repeat(300).parse().expect("ASCII metadata"),
    );
    let refused = client.model_infer(keyed).await.expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "header 'x-ferry-routing-key' is 300 bytes long; the most is 256"
    );
    drop(client);
    server.stop().await;
}
