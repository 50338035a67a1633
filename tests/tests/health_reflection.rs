//! gRPC health checking and server reflection, seen through a tonic health client and through `grpcurl`
//! (from `.venv`), which needs no proto files once reflection works.

use std::process::Command;

use ferry_server::repository::RepositoryOptions;
use ferry_tests::{TestServer, example_repository, repo_root, test_repository};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn client(server: &TestServer) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.url()))
        .expect("uri")
        .connect()
        .await;
    HealthClient::new(channel.expect("connect"))
}

async fn health(server: &TestServer, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = client(server).await;
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let status = client.check(request).await?.into_inner().status;
    Ok(ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown))
}

#[tokio::test]
async fn health_follows_server_and_model_readiness() {
    let server = TestServer::with_all_models().await.expect("server");
    assert_eq!(health(&server, "").await.expect("server"), ServingStatus::Serving);
    assert_eq!(
        health(&server, "inference.GRPCInferenceService")
            .await
            .expect("service"),
        ServingStatus::Serving
    );
    assert_eq!(
        health(&server, "simple").await.expect("model"),
        ServingStatus::Serving
    );
    assert_eq!(
        health(&server, "corrupt").await.expect("model"),
        ServingStatus::NotServing
    );
    let unknown = health(&server, "no_such_model").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut client = client(&server).await;
    let request = HealthCheckRequest {
        service: "simple".into(),
    };
    let mut watch = client.watch(request).await.expect("watch").into_inner();
    let first = watch.next().await.expect("a first status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    server.stop().await;

    // With strict readiness, a model that failed to load makes the whole server not serving.
    let strict = RepositoryOptions::new(vec![example_repository(), test_repository()]);
    let server = TestServer::start_with(strict, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    assert_eq!(
        health(&server, "").await.expect("server"),
        ServingStatus::NotServing
    );
    server.stop().await;
}

/// Runs `grpcurl -plaintext <flags> <server> <command...>` and returns what it printed.
/// The `liveness` service answers SERVING while the server answers at all: when a model failed to load under
/// strict readiness, and once shutdown has begun, both of which make readiness NOT_SERVING. A Kubernetes gRPC
/// liveness probe asks for it (deploy/k8s/deployment.yaml), so a pod that is loading or draining is not
/// restarted.
#[tokio::test]
async fn liveness_stays_serving_while_readiness_does_not() {
    let strict = RepositoryOptions::new(vec![example_repository(), test_repository()]);
    let server = TestServer::start_with(strict, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let liveness = ferry_server::health::LIVENESS_SERVICE;
    assert_eq!(
        health(&server, "").await.expect("readiness"),
        ServingStatus::NotServing
    );
    assert_eq!(
        health(&server, liveness).await.expect("liveness"),
        ServingStatus::Serving
    );
    server.stop().await;

    let server = TestServer::start(vec![example_repository()])
        .await
        .expect("server");
    assert_eq!(
        health(&server, "").await.expect("readiness"),
        ServingStatus::Serving
    );
    server.registry().begin_shutdown();
    assert_eq!(
        health(&server, "").await.expect("readiness"),
        ServingStatus::NotServing
    );
    assert_eq!(
        health(&server, liveness).await.expect("liveness"),
        ServingStatus::Serving
    );
    server.stop().await;
}

fn grpcurl(server: &TestServer, flags: &[&str], command: &[&str]) -> String {
    let binary = repo_root().join(".venv/bin/grpcurl");
    assert!(
        binary.exists(),
        "{} is missing: run `make setup`",
        binary.display()
    );
    let url = server.url();
    let mut all = vec!["-plaintext"];
    all.extend_from_slice(flags);
    all.push(&url);
    all.extend_from_slice(command);
    let output = Command::new(binary).args(&all).output().expect("grpcurl runs");
    assert!(
        output.status.success(),
        "grpcurl {all:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_calls_ferry_through_reflection_without_proto_files() {
    let server = TestServer::with_all_models().await.expect("server");
    let services = grpcurl(&server, &[], &["list"]);
    for service in [
        "inference.GRPCInferenceService",
        "ferry.drift.v1.DriftService",
        "ferry.traffic.v1.Traffic",
        "ferry.feedback.v1.Feedback",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(service), "{services}");
    }
    let described = grpcurl(&server, &[], &["describe", "inference.ModelInferRequest"]);
    assert!(described.contains("raw_input_contents"), "{described}");
    let described = grpcurl(&server, &[], &["describe", "ferry.feedback.v1.FeedbackItem"]);
    assert!(described.contains("request_id"), "{described}");
    let metadata = grpcurl(
        &server,
        &["-d", r#"{"name": "mlp_classifier"}"#],
        &["inference.GRPCInferenceService/ModelMetadata"],
    );
    assert!(metadata.contains("\"probabilities\""), "{metadata}");
    let infer = grpcurl(
        &server,
        &[
            "-d",
            r#"{"model_name": "simple", "inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "contents": {"int_contents": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}},
                {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "contents": {"int_contents": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}}]}"#,
        ],
        &["inference.GRPCInferenceService/ModelInfer"],
    );
    // OUTPUT0 = INPUT0 + 1 = 2..17 as little-endian INT32, base64: starts with 2, 3, 4.
    assert!(infer.contains("\"AgAAAAMAAAAEAAAA"), "{infer}");
    let health = grpcurl(
        &server,
        &["-d", r#"{"service": "simple"}"#],
        &["grpc.health.v1.Health/Check"],
    );
    assert!(health.contains("SERVING"), "{health}");
    server.stop().await;
}
