//! Loading on first request and the model memory budget, end to end: a real server in explicit mode with
//! `--load-on-demand` and `--model-memory-budget`, real ONNX Runtime, NVIDIA's `tritonclient` over gRPC and
//! the metrics endpoint (`tests/python/test_model_management.py`, which writes the models it needs into the
//! repository while the server runs). Triton's behaviour pinned: `ModelRepositoryManager::RepositoryIndex`
//! (core `model_repository_manager.cc`) lists a model folder that is not loaded with empty state and an
//! unloaded model as `UNAVAILABLE` "unloaded"; an unload drains the requests already queued.

use std::time::Duration;

use ferry_server::repository::{ControlMode, RepositoryOptions};
use ferry_tests::{TestServer, run_pytest};

/// Room for a handful of the suite's 4 MiB models, so that its eight LRU models must evict.
const BUDGET: u64 = 48 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_load_on_first_request_and_are_evicted_under_the_budget() {
    let repository = tempfile::tempdir().expect("temp dir");
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        load_on_demand: true,
        load_on_demand_timeout: Duration::from_secs(60),
        memory_budget: Some(BUDGET),
        strict_readiness: false,
        ..RepositoryOptions::new(vec![repository.path().to_owned()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let metrics = server.start_metrics().await.expect("metrics");
    let status = run_pytest(
        "test_model_management.py",
        &[
            ("FERRY_GRPC_URL", server.url()),
            ("FERRY_METRICS_URL", metrics.url()),
            ("FERRY_REPOSITORY", repository.path().display().to_string()),
            ("FERRY_BUDGET", BUDGET.to_string()),
        ],
    )
    .await;
    metrics.stop().await;
    server.stop().await;
    assert!(status.success(), "the model management suite failed: {status}");
}
