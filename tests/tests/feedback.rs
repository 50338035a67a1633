//! Feedback and live quality end to end: `tests/python/test_feedback.py` copies the `mlp_labels`
//! classifier of the test repository into the empty repository of this server with `ferry.quality.*`
//! parameters (and payload logging on, in 2 KiB files, so that its writer rotates and is restarted by a
//! reload meanwhile), sends predictions through tritonclient over gRPC, posts their true classes through
//! Ferry's `ferry.feedback.v1.Feedback` gRPC service and its REST route out of order, and checks the
//! quality RPC, the REST report and `/metrics` against log-loss, accuracy and calibration computed by the
//! suite itself from the probabilities the server returned. It also serves two versions of the classifier
//! scoring accuracy, where truths posted without a version must join the version that answered, and
//! checks the bounds of a post and the answers for a model that keeps no quality.

use std::time::{Duration, Instant};

use ferry_client::{Client, Credentials, feedback_proto::FeedbackItem};
use ferry_server::{
    ServerOptions,
    payload::PayloadLogOptions,
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, access_for_keys, rest_request_with_headers, run_pytest, test_repository};

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

/// Posting truths is part of inferring (the `infer` scope), reading quality is statistics (`stats`):
/// checked through ferry-client's feedback calls and the REST routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_needs_the_infer_scope_and_reading_quality_the_stats_scope() {
    let root = tempfile::tempdir().expect("dir");
    let source = test_repository().join("mlp_labels");
    let dir = root.path().join("scored");
    std::fs::create_dir_all(dir.join("1")).expect("model dir");
    std::fs::copy(source.join("1/model.onnx"), dir.join("1/model.onnx")).expect("model");
    std::fs::copy(source.join("labels.txt"), dir.join("labels.txt")).expect("labels");
    let config = std::fs::read_to_string(source.join("config.pbtxt"))
        .expect("config")
        .replace("name: \"mlp_labels\"", "name: \"scored\"")
        + "parameters { key: \"ferry.quality.metric\" value { string_value: \"accuracy\" } }\n\
           parameters { key: \"ferry.quality.output\" value { string_value: \"label\" } }\n";
    std::fs::write(dir.join("config.pbtxt"), config).expect("config");
    let access = access_for_keys(&[
        ("client", "client-key-0123456789", &["infer"]),
        ("watcher", "watcher-key-0123456789", &["stats"]),
    ]);
    let options: ServerOptions = TestServer::options(
        RepositoryOptions::new(vec![root.path().to_path_buf()]),
        ferry_server::MAX_MESSAGE_BYTES,
    )
    .expect("options");
    let server = TestServer::start_with_access(options, access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let rest = |method: &'static str, path: &'static str, key: &'static str, body: String| {
        let address = http.address;
        async move {
            let headers = [("x-api-key", key.to_owned())];
            rest_request_with_headers(address, method, path, &headers, body.as_bytes())
                .await
                .expect("reply")
        }
    };
    // One prediction of the integer `label` output, read back for its class.
    let features: Vec<f32> = (0..32).map(|i| i as f32 / 32.0).collect();
    let infer = serde_json::json!({"id": "req-1", "inputs": [
        {"name": "features", "shape": [1, 32], "datatype": "FP32", "data": features}
    ], "outputs": [{"name": "label"}]});
    let answer = rest(
        "POST",
        "/v2/models/scored/infer",
        "client-key-0123456789",
        infer.to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer: serde_json::Value = serde_json::from_str(&answer.text()).expect("JSON");
    assert_eq!(answer["id"], "req-1");
    let class = answer["outputs"][0]["data"][0].as_i64().expect("a class");
    let client = |key: &'static str| {
        let url = server.url();
        async move {
            Client::connect(url)
                .await
                .expect("client")
                .with_credentials(Credentials::bearer(key).expect("credentials"))
        }
    };
    let (inferring, watching) = (
        client("client-key-0123456789").await,
        client("watcher-key-0123456789").await,
    );
    let item = |class: i64| FeedbackItem {
        request_id: "req-1".into(),
        classes: vec![class],
        ..FeedbackItem::default()
    };
    let refused = watching
        .post_feedback("scored", None, vec![item(class)])
        .await
        .expect_err("stats only");
    assert!(refused.to_string().contains("'infer' scope"), "{refused}");
    let refused = rest(
        "POST",
        "/v2/models/scored/feedback",
        "watcher-key-0123456789",
        r#"{"items": [{"request_id": "req-1", "classes": [0]}]}"#.into(),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let refused = inferring
        .model_quality("scored", None)
        .await
        .expect_err("infer only");
    assert!(refused.to_string().contains("'stats' scope"), "{refused}");
    let refused = rest(
        "GET",
        "/v2/models/scored/quality",
        "client-key-0123456789",
        String::new(),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    // The client may post (its truth joins, or waits for its prediction and joins when it arrives), the
    // watcher may read.
    let results = inferring
        .post_feedback("scored", Some("1"), vec![item(class)])
        .await
        .expect("infer may post");
    assert!(
        ["joined", "waiting"].contains(&results[0].status.as_str()),
        "{results:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let version = loop {
        let report = watching
            .model_quality("scored", None)
            .await
            .expect("stats may read");
        let version = report.versions[0].clone();
        if version.feedback_joined == 1 || Instant::now() > deadline {
            break version;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (version.metric.as_str(), version.output.as_str()),
        ("accuracy", "label")
    );
    assert_eq!((version.rows, version.value), (1, Some(1.0)), "{version:?}");
    // An integer class output has no probabilities to calibrate.
    assert!(version.calibration.is_empty(), "{version:?}");
    http.stop().await;
    server.stop().await;
}
