//! Traffic administration is model administration: it needs the `repository` scope, while a caller with
//! only `infer` may still use the labels.

use ferry_client::Credentials;
use ferry_server::{
    auth::{Access, AccessOptions, keys::hash_key},
    repository::ControlMode,
};
use ferry_tests::TestServer;
use tonic::Code;

use super::{answer, options, repository, request, rest, sdk};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_administration_needs_the_repository_scope() {
    let dir = repository(None);
    let files = tempfile::tempdir().expect("dir");
    let (keys, policy) = (files.path().join("keys"), files.path().join("policy.toml"));
    let entries = format!(
        "admin {}\ninferrer {}\n",
        hash_key(b"admin-key-0123456789"),
        hash_key(b"infer-key-0123456789")
    );
    std::fs::write(&keys, entries).expect("keys");
    let grants = "[[grant]]\nidentity = \"admin\"\nscopes = [\"infer\", \"repository\"]\n\n\
                  [[grant]]\nidentity = \"inferrer\"\nscopes = [\"infer\"]\n";
    std::fs::write(&policy, grants).expect("policy");
    let access = Access::load(&AccessOptions {
        api_keys_file: Some(keys),
        policy_file: Some(policy),
        ..AccessOptions::default()
    })
    .expect("access");
    let options = TestServer::options(
        options(dir.path().to_path_buf(), ControlMode::None),
        ferry_server::MAX_MESSAGE_BYTES,
    )
    .expect("options");
    let server = TestServer::start_with_access(options, access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let as_key = |key: &str| Credentials::bearer(key).expect("key");
    let inferrer = sdk(&server)
        .await
        .with_credentials(as_key("infer-key-0123456789"));
    let refused = inferrer
        .set_label("m", "canary", "2")
        .await
        .expect_err("no repository scope");
    assert_eq!(
        refused.status().map(|s| s.code()),
        Some(Code::PermissionDenied),
        "{refused}"
    );
    let refused = inferrer.get_traffic("m").await.expect_err("no repository scope");
    assert_eq!(
        refused.status().map(|s| s.code()),
        Some(Code::PermissionDenied),
        "{refused}"
    );
    let bearer = |key: &str| vec![("authorization", format!("Bearer {key}"))];
    let (code, _) = rest(
        &http,
        "POST",
        "/v2/models/m/traffic/rollback",
        &bearer("infer-key-0123456789"),
        "",
    )
    .await;
    assert_eq!(code, 403);
    let (code, _) = rest(
        &http,
        "GET",
        "/v2/models/m/traffic/history",
        &bearer("infer-key-0123456789"),
        "",
    )
    .await;
    assert_eq!(code, 403);
    // The admin may, and the history names who did it.
    let admin = sdk(&server)
        .await
        .with_credentials(as_key("admin-key-0123456789"));
    admin.set_label("m", "canary", "2").await.expect("admin labels");
    let (code, body) = rest(
        &http,
        "GET",
        "/v2/models/m/traffic/history",
        &bearer("admin-key-0123456789"),
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["changes"][0]["who"], "admin", "{body}");
    assert_eq!(body["changes"][0]["action"], "label", "{body}");
    // And the inferrer uses the label it may not change.
    let mut call = tonic::Request::new(request("canary", None));
    call.metadata_mut().insert(
        "authorization",
        "Bearer infer-key-0123456789".parse().expect("ASCII"),
    );
    let mut client = server.raw_client().await.expect("client");
    assert_eq!(
        answer(&client.model_infer(call).await.expect("answer").into_inner()).version,
        "2"
    );
    http.stop().await;
    server.stop().await;
}
