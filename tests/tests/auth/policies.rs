//! Per-model listings, closed APIs, model file uploads, the mTLS identity extension, and Triton's restricted
//! groups over tritonclient.

use std::sync::Arc;

use ferry_proto::inference::{self as pb, model_repository_parameter::ParameterChoice};
use ferry_server::auth::{Access, AccessOptions, Scope};
use ferry_tests::{TestServer, example_repository, rest_request_with_headers, run_pytest};
use tonic::{Code, metadata::MetadataValue};

use super::{ADMIN_KEY, VIEWER_KEY, grpc::simple_infer, server_options, start};

/// A caller limited to `simple` sees only `simple` in listings, and is refused other models by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_only_the_models_a_caller_may_see() {
    let secured = start(|_| {}).await;
    let mut client = secured.server.raw_client().await.expect("client");
    let stats = client
        .model_statistics(as_viewer(pb::ModelStatisticsRequest::default()))
        .await
        .expect("stats")
        .into_inner();
    let names: Vec<_> = stats.model_stats.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["simple"]);
    let mut request = tonic::Request::new(pb::ModelStatisticsRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(ADMIN_KEY));
    let all = client
        .model_statistics(request)
        .await
        .expect("stats")
        .into_inner();
    assert!(
        all.model_stats.iter().any(|s| s.name == "mlp_classifier"),
        "the admin sees every model"
    );
    let index = client
        .repository_index(as_viewer(pb::RepositoryIndexRequest::default()))
        .await
        .expect("index")
        .into_inner();
    let names: Vec<_> = index.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["simple"]);
    let refused = client
        .model_metadata(as_viewer(pb::ModelMetadataRequest {
            name: "mlp_classifier".into(),
            version: String::new(),
        }))
        .await
        .expect_err("another model");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "identity 'viewer' lacks the 'metadata' scope for model 'mlp_classifier' that ModelMetadata needs; \
         grant it in the --auth-policy file"
    );
    // An unknown model is refused the same way, so a caller cannot tell which models exist.
    let unknown = client
        .model_metadata(as_viewer(pb::ModelMetadataRequest {
            name: "secret_model".into(),
            version: String::new(),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::PermissionDenied);
    secured.server.stop().await;
}

fn as_viewer<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(VIEWER_KEY));
    request
}

/// `--disable-api` closes a group to everyone, admin included, and says which flag did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_api_is_closed_to_everyone() {
    let secured = start(|options| options.disabled = vec![Scope::Repository, Scope::Shm]).await;
    let admin = [("authorization", format!("Bearer {ADMIN_KEY}"))];
    let reply = rest_request_with_headers(secured.http.address, "POST", "/v2/repository/index", &admin, b"")
        .await
        .expect("reply");
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("--disable-api repository"),
        "{}",
        reply.text()
    );
    let mut client = secured.server.raw_client().await.expect("client");
    let mut request = tonic::Request::new(pb::SystemSharedMemoryStatusRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(ADMIN_KEY));
    let status = client
        .system_shared_memory_status(request)
        .await
        .expect_err("closed");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("--disable-api shm"), "{status:?}");
    let mut request = tonic::Request::new(simple_infer());
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(ADMIN_KEY));
    client.model_infer(request).await.expect("inference stays open");
    secured.server.stop().await;
}

/// A load request that carries model files, over gRPC and REST: refused by default, naming the flag, and
/// loaded with `--allow-model-file-upload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_file_uploads_need_their_flag() {
    let model = std::fs::read(example_repository().join("simple/1/model.onnx")).expect("model");
    let config = r#"{"max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                  {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                   {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}]}"#;
    let load = || pb::RepositoryModelLoadRequest {
        model_name: "uploaded".into(),
        parameters: [
            ("config".to_owned(), ParameterChoice::StringParam(config.into())),
            (
                "file:1/model.onnx".to_owned(),
                ParameterChoice::BytesParam(model.clone().into()),
            ),
        ]
        .into_iter()
        .map(|(key, choice)| {
            (
                key,
                pb::ModelRepositoryParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect(),
        ..Default::default()
    };
    for upload in [false, true] {
        let server = TestServer::start_with_options(server_options(upload))
            .await
            .expect("server");
        let http = server.start_http().await.expect("REST");
        let mut client = server.raw_client().await.expect("client");
        let outcome = client.repository_model_load(load()).await;
        let body = serde_json::json!({"parameters": {
            "config": config,
            "file:1/model.onnx": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &model),
        }})
        .to_string();
        let reply = rest_request_with_headers(
            http.address,
            "POST",
            "/v2/repository/models/uploaded/load",
            &[],
            body.as_bytes(),
        )
        .await
        .expect("reply");
        if upload {
            outcome.expect("loaded from the request");
            assert_eq!(reply.status, 200, "{}", reply.text());
        } else {
            let status = outcome.expect_err("refused");
            assert_eq!(status.code(), Code::PermissionDenied);
            assert!(
                status.message().contains("--allow-model-file-upload"),
                "{status:?}"
            );
            assert_eq!(reply.status, 403, "{}", reply.text());
            assert!(
                reply.text().contains("--allow-model-file-upload"),
                "{}",
                reply.text()
            );
        }
        http.stop().await;
        server.stop().await;
    }
}

/// The identity a TLS layer proved with a client certificate ([`TransportIdentity`]) is the caller when no
/// key is sent: the policy's grants for that name apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_identity_is_a_caller() {
    use ferry_server::auth::{AuthLayer, TransportIdentity};
    use tower::ServiceExt as _;
    let secured = start(|_| {}).await;
    let service = ferry_server::core::InferenceService::with_shared_memory(
        Arc::clone(secured.server.registry_arc()),
        Arc::default(),
    );
    let access = Arc::clone(secured.server.access());
    let app = ferry_server::http::router(service.with_access(Arc::clone(&access)), 1 << 20)
        .layer(AuthLayer::http(access));
    let request = |identity: Option<&str>| {
        let mut request = http::Request::get("/v2/models/simple")
            .body(String::new())
            .expect("request");
        if let Some(name) = identity {
            request
                .extensions_mut()
                .insert(TransportIdentity(name.to_owned()));
        }
        request
    };
    let viewer = app
        .clone()
        .oneshot(request(Some("viewer")))
        .await
        .expect("answer");
    assert_eq!(viewer.status(), 200);
    let stranger = app
        .clone()
        .oneshot(request(Some("stranger")))
        .await
        .expect("answer");
    assert_eq!(stranger.status(), 403);
    let nobody = app.oneshot(request(None)).await.expect("answer");
    assert_eq!(nobody.status(), 401);
    secured.server.stop().await;
}

/// Triton's `--grpc-restricted-protocol` and `--http-restricted-api`, driven by tritonclient with its
/// `headers=` argument, as Triton's own `L0_grpc` restricted protocol tests do
/// (`qa/L0_grpc/grpc_client_test.py`, `RestrictedProtocolTest`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_meets_tritons_restricted_groups() {
    let access = Access::load(&AccessOptions {
        grpc_restricted: vec![
            "model-repository:admin-key=admin-value".to_owned(),
            "inference,health:infer-key=infer-value".to_owned(),
        ],
        http_restricted: vec![
            "model-repository:admin-key=admin-value".to_owned(),
            "inference,health:infer-key=infer-value".to_owned(),
        ],
        ..AccessOptions::default()
    })
    .expect("access");
    let server = TestServer::start_with_access(server_options(false), access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_restricted.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the restricted-group tests failed: {status}");
}

/// The Rust client SDK sends an API key or a JWT as `authorization: Bearer` with every request
/// (`Client::with_credentials`), through its typed calls and its raw stub alike; without one the secured
/// server answers UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sends_a_key_or_a_token() {
    use ferry_client::{Client, Credentials, InferInput, InferRequest};
    let secured = start(|_| {}).await;
    let request = || {
        InferRequest::new("simple")
            .with_input(InferInput::new("INPUT0", [1, 16]).with_data(&[1i32; 16]))
            .with_input(InferInput::new("INPUT1", [1, 16]).with_data(&[2i32; 16]))
    };
    let plain = Client::connect(secured.server.url()).await.expect("connect");
    let refused = plain.infer(request()).await.expect_err("no credential");
    assert!(refused.to_string().contains("UNAUTHENTICATED"), "{refused}");
    for secret in [ADMIN_KEY.to_owned(), super::token("admin", true, |_| {})] {
        let client = plain
            .clone()
            .with_credentials(Credentials::bearer(&secret).expect("a header value"));
        let result = client.infer(request()).await.expect("the admin may infer");
        assert_eq!(result.output_as::<i32>("OUTPUT0").expect("sum"), vec![3; 16]);
        let stats = client
            .raw()
            .model_statistics(pb::ModelStatisticsRequest::default())
            .await
            .expect("the raw stub carries the credential too");
        assert!(!stats.into_inner().model_stats.is_empty());
    }
    secured.server.stop().await;
}
