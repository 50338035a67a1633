//! Feedback and live quality end to end: `tests/python/test_feedback.py` copies the `mlp_labels`
//! classifier of the test repository into the empty repository of this server with `ferry.quality.*`
//! parameters (and payload logging on, in 2 KiB files, so that its writer rotates and is restarted by a
//! reload meanwhile), sends predictions through tritonclient over gRPC, posts their true classes through
//! Ferry's `ferry.feedback.v1.Feedback` gRPC service and its REST route out of order, and checks the
//! quality RPC, the REST report and `/metrics` against log-loss, accuracy and calibration computed by the
//! suite itself from the probabilities the server returned. It also serves two versions of the classifier
//! scoring accuracy, where truths posted without a version must join the version that answered, and
//! checks the bounds of a post and the answers for a model that keeps no quality.

use ferry_server::{
    payload::PayloadLogOptions,
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, run_pytest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truths_posted_out_of_order_match_a_hand_computation() {
    let repository = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        strict_readiness: false,
        payload_log: Some(PayloadLogOptions {
            dir: logs.path().to_path_buf(),
            max_file_bytes: 2048,
            max_files: 1000,
        }),
        ..RepositoryOptions::new(vec![repository.path().to_path_buf()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST front end");
    let metrics = server.start_metrics().await.expect("metrics front end");
    let status = run_pytest(
        "test_feedback.py",
        &[
            ("FERRY_GRPC_URL", server.url()),
            ("FERRY_HTTP_URL", http.url()),
            ("FERRY_METRICS_URL", metrics.url()),
            (
                "FERRY_FEEDBACK_REPOSITORY",
                repository.path().display().to_string(),
            ),
            ("FERRY_PAYLOAD_LOG_DIR", logs.path().display().to_string()),
        ],
    )
    .await;
    metrics.stop().await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the feedback suite failed: {status}");
}
