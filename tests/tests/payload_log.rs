//! Payload logging end to end: `tests/python/test_payload_log.py` copies Triton's `simple` model into the
//! empty repository of this server under several configs (`ferry.payload_log.*` parameters), loads them
//! through tritonclient, sends requests over gRPC and REST, and reads the JSON-lines files the server writes
//! under its payload log folder: every sampled request logged with its id and values, none at rate 0,
//! redaction, the per-record cap, rotation by size without a split record, bad parameters refusing the load,
//! and an id assigned to a sampled request that has none. Files are capped at 4 KiB here so that rotation
//! happens within a few dozen requests.

use ferry_server::{
    payload::PayloadLogOptions,
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, run_pytest};

/// The file size past which the server under test starts a new payload log file.
const MAX_FILE_BYTES: u64 = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_are_logged_with_their_payloads() {
    let repository = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        strict_readiness: false,
        payload_log: Some(PayloadLogOptions {
            dir: logs.path().to_path_buf(),
            max_file_bytes: MAX_FILE_BYTES,
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
        "test_payload_log.py",
        &[
            ("FERRY_GRPC_URL", server.url()),
            ("FERRY_HTTP_URL", http.url()),
            ("FERRY_METRICS_URL", metrics.url()),
            (
                "FERRY_PAYLOAD_REPOSITORY",
                repository.path().display().to_string(),
            ),
            ("FERRY_PAYLOAD_LOG_DIR", logs.path().display().to_string()),
            ("FERRY_PAYLOAD_MAX_FILE_BYTES", MAX_FILE_BYTES.to_string()),
        ],
    )
    .await;
    metrics.stop().await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the payload logging suite failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_logs_fails_to_load_on_a_server_without_a_log_folder() {
    let repository = tempfile::tempdir().expect("temp dir");
    let source = ferry_tests::example_repository().join("simple");
    let dir = repository.path().join("logged");
    std::fs::create_dir_all(dir.join("1")).expect("model dir");
    std::fs::copy(source.join("1/model.onnx"), dir.join("1/model.onnx")).expect("model file");
    let config = std::fs::read_to_string(source.join("config.pbtxt"))
        .expect("config")
        .replace("name: \"simple\"", "name: \"logged\"")
        + "parameters { key: \"ferry.payload_log.rate\" value { string_value: \"1\" } }\n";
    std::fs::write(dir.join("config.pbtxt"), config).expect("config");
    let options = RepositoryOptions {
        strict_readiness: false,
        ..RepositoryOptions::new(vec![repository.path().to_path_buf()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let index = server.registry().index();
    let entry = index.iter().find(|entry| entry.name == "logged").expect("listed");
    assert!(
        entry.reason.contains("--payload-log-dir") && entry.reason.contains("ferry.payload_log.rate"),
        "{entry:?}"
    );
    server.stop().await;
}
