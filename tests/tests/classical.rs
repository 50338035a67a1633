//! Classical ML models end to end: `tests/python/test_classical.py` trains scikit-learn, XGBoost and LightGBM
//! classifiers, converts them as their users do (ZipMap outputs included), writes them without a config into
//! the empty repository of this server and loads them through tritonclient, then compares every answer with
//! the libraries' `predict_proba` and `predict`.

use ferry_server::{
    limits::{BackendSetting, ResourceLimits},
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, run_pytest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_classifiers_answer_as_their_libraries_do() {
    let repository = tempfile::tempdir().expect("temp dir");
    // Triton's spelling of the flag, as a Triton command line would give it.
    let limits = ResourceLimits {
        backend_config: vec![BackendSetting::parse("onnxruntime,default-max-batch-size=64").expect("valid")],
        ..ResourceLimits::default()
    };
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        strict_readiness: false,
        limits,
        ..RepositoryOptions::new(vec![repository.path().to_path_buf()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST front end");
    let status = run_pytest(
        "test_classical.py",
        &[
            ("FERRY_GRPC_URL", server.url()),
            ("FERRY_HTTP_URL", http.url()),
            (
                "FERRY_CLASSICAL_REPOSITORY",
                repository.path().display().to_string(),
            ),
        ],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the classical ML suite failed: {status}");
}
