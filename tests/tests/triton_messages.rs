//! Triton's statuses and messages through NVIDIA's `tritonclient` (gRPC and HTTP): runs
//! `tests/python/test_triton_messages.py` against two real Ferry servers, one in the default control mode
//! and one in explicit mode named "triton" (`--server-name`), each with gRPC and REST on loopback ports.

use ferry_server::{
    core::ServerName,
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, example_repository, run_pytest, test_repository};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_sees_tritons_statuses_and_messages() {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    let explicit = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        startup_models: vec!["simple".to_owned()],
        strict_readiness: false,
        ..RepositoryOptions::new(vec![example_repository(), test_repository()])
    };
    let name = ServerName::parse("triton").expect("a valid name");
    let named = TestServer::start_named(explicit, name)
        .await
        .expect("explicit server");
    let named_http = named.start_http().await.expect("REST front end");
    let status = run_pytest(
        "test_triton_messages.py",
        &[
            ("FERRY_GRPC_URL", server.url()),
            ("FERRY_HTTP_URL", http.url()),
            ("FERRY_EXPLICIT_GRPC_URL", named.url()),
            ("FERRY_EXPLICIT_HTTP_URL", named_http.url()),
        ],
    )
    .await;
    http.stop().await;
    named_http.stop().await;
    server.stop().await;
    named.stop().await;
    assert!(status.success(), "the Triton messages suite failed: {status}");
}

/// A model found in two repositories is listed as Triton lists it (`ModelRepositoryManager::RepositoryIndex`:
/// no version, UNAVAILABLE, `MODEL_READY_REASON_DUPLICATE`), and loading it fails the poll
/// (`ModelRepositoryManager::Poll`, "not unique across all model repositories").
#[tokio::test]
async fn a_model_in_two_repositories_is_listed_unavailable_and_cannot_load() {
    use ferry_proto::inference::{RepositoryIndexRequest, RepositoryModelLoadRequest};

    let copy = |root: &std::path::Path| {
        let source = example_repository().join("simple");
        let target = root.join("simple");
        std::fs::create_dir_all(target.join("1")).expect("folders");
        std::fs::copy(source.join("config.pbtxt"), target.join("config.pbtxt")).expect("config");
        std::fs::copy(source.join("1/model.onnx"), target.join("1/model.onnx")).expect("model");
    };
    let (first, second) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    copy(first.path());
    copy(second.path());
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        strict_readiness: false,
        ..RepositoryOptions::new(vec![first.path().to_owned(), second.path().to_owned()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models;
    let rows: Vec<(&str, &str, &str, &str)> = index
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.version.as_str(),
                m.state.as_str(),
                m.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(
            "simple",
            "",
            "UNAVAILABLE",
            "model appears in two or more repositories"
        )]
    );
    let status = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "simple".into(),
            ..Default::default()
        })
        .await
        .expect_err("not unique");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(
        status.message(),
        "failed to load 'simple', failed to poll from model repository; not unique across all model repositories"
    );
    server.stop().await;
}
