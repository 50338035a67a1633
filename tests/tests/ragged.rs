//! End-to-end tests of requests whose inputs differ in length: Triton's ragged batching on `ragged_sum` and
//! Ferry's pad-to-bucket on `bucket_tokens` (`tests/ragged_repository`), served on real ONNX Runtime and
//! driven by NVIDIA's `tritonclient` (`tests/python/test_ragged.py`), which checks every answer against numpy
//! and, from the statistics, that requests of different lengths really ran together.
//!
//! Triton behaviour pinned: a ragged input reaches the model as one 1-D tensor of every request's elements
//! and the batch inputs hold what core's `BackendInputCollector::BatchInputShape` and `ProcessBatchInput`
//! give (docs/user_guide/ragged_batching.md); the ModelConfig RPC reports `allow_ragged_batch` and
//! `batch_input` as the config has them.

use std::path::PathBuf;

use ferry_proto::inference::{ModelConfigRequest, batch_input::Kind};
use ferry_tests::{TestServer, repo_root, run_pytest};

fn ragged_repository() -> PathBuf {
    repo_root().join("tests/ragged_repository")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tritonclient_batches_requests_of_different_lengths_and_gets_numpys_answers() {
    let server = TestServer::start(vec![ragged_repository()])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_ragged.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the tritonclient ragged suite failed: {status}");
}

#[tokio::test]
async fn the_config_reports_ragged_inputs_and_batch_inputs() {
    let server = TestServer::start(vec![ragged_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let config = client
        .model_config(ModelConfigRequest {
            name: "ragged_sum".into(),
            version: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    assert!(config.input[0].allow_ragged_batch);
    let kinds: Vec<(Kind, &str)> = config
        .batch_input
        .iter()
        .map(|b| (b.kind(), b.target_name[0].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::BatchAccumulatedElementCount, "INDEX"),
            (Kind::BatchElementCount, "COUNT"),
            (Kind::BatchMaxElementCountAsShape, "MAXLEN"),
        ]
    );
    server.stop().await;
}
