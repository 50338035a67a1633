//! Labels wherever a version is named, and the errors of unknown labels, labels whose version does not
//! serve, and bad administrative calls.

use ferry_server::repository::ControlMode;
use serde_json::json;
use tonic::Code;

use super::{infer, repository, rest, sdk, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_labels_are_not_found_naming_the_known_ones() {
    let dir = repository(None);
    let server = start(&dir, ControlMode::None).await;
    let http = server.start_http().await.expect("REST");
    let mut client = server.raw_client().await.expect("client");
    // Without labels, a version that is not a number is Triton's INVALID_ARGUMENT (common.cc
    // GetModelVersionFromString), as `grpc.rs` pins.
    let status = infer(&mut client, "canary", None)
        .await
        .expect_err("no labels yet");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let sdk = sdk(&server).await;
    sdk.set_label("m", "stable", "1").await.expect("label");
    sdk.set_label("m", "canary", "2").await.expect("label");
    let status = infer(&mut client, "beta", None).await.expect_err("unknown label");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "model 'm' has no version label 'beta'; its labels are canary, stable"
    );
    let (code, body) = rest(&http, "POST", "/v2/models/m/versions/beta/infer", &[], "{}").await;
    assert_eq!(code, 404, "{body}");
    // Labels work wherever a version is named: readiness, metadata, REST paths.
    let (code, _) = rest(&http, "GET", "/v2/models/m/versions/canary/ready", &[], "").await;
    assert_eq!(code, 200);
    let (code, stats) = rest(&http, "GET", "/v2/models/m/versions/canary/stats", &[], "").await;
    assert_eq!(
        (code, &stats["model_stats"][0]["version"]),
        (200, &json!("2")),
        "{stats}"
    );
    let (code, _) = rest(&http, "GET", "/v2/models/m/versions/beta/stats", &[], "").await;
    assert_eq!(code, 404);
    // A label pointing at a version that does not serve is UNAVAILABLE, naming the label and the version.
    sdk.set_label("m", "next", "9").await.expect("label");
    let status = infer(&mut client, "next", None)
        .await
        .expect_err("version 9 does not serve");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("version 9") && status.message().contains("label 'next'"),
        "{}",
        status.message()
    );
    // Bad admin calls name the field.
    let error = sdk.set_label("m", "Bad Label", "1").await.expect_err("bad label");
    let error = error.status().expect("a status");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("'Bad Label' is not a label"),
        "{}",
        error.message()
    );
    let (code, body) = rest(
        &http,
        "PUT",
        "/v2/models/m/traffic",
        &[],
        r#"{"split": {"beta": 1}}"#,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().expect("text").contains("split.beta"),
        "{body}"
    );
    let huge = format!(r#"{{"labels": {{"a": 1}}, "pad": "{}"}}"#, "x".repeat(70_000));
    let (code, body) = rest(&http, "PUT", "/v2/models/m/traffic", &[], &huge).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("text")
            .contains("over the 65536 bytes"),
        "{body}"
    );
    http.stop().await;
    server.stop().await;
}
