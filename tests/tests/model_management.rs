//! Loading on first request and the model memory budget, end to end: a real server in explicit mode with
//! `--load-on-demand` and `--model-memory-budget`, real ONNX Runtime, NVIDIA's `tritonclient` over gRPC and
//! the metrics endpoint (`tests/python/test_model_management.py`, which writes the models it needs into the
//! repository while the server runs). Triton's behaviour pinned: `ModelRepositoryManager::RepositoryIndex`
//! (core `model_repository_manager.cc`) lists a model folder that is not loaded with empty state and an
//! unloaded model as `UNAVAILABLE` "unloaded"; an unload drains the requests already queued.

use std::time::Duration;

use bytes::Bytes;
use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
use ferry_server::{
    limits::ResourceLimits,
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, example_repository, run_pytest};

/// Room for at most twelve of the suite's models (4 MiB files, the floor of what each takes), so that its sixteen
/// LRU models must evict.
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

/// A request to Triton's `simple` (OUTPUT0 = INPUT0 + INPUT1) of one row.
fn simple_request(a: i32) -> ModelInferRequest {
    let row = |value: i32| -> Bytes {
        (0..16)
            .flat_map(|_| value.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    };
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        raw_input_contents: vec![row(a), row(1)],
        ..Default::default()
    }
}

/// A version loads with its instances parked: no instance thread until requests come, and none again once
/// they have idled for `--instance-idle-ms`; requests after that start one again. With 0, every instance
/// runs a thread from load on, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_threads_start_on_demand_and_end_when_idle() {
    for idle_ms in [150, 0] {
        let options = RepositoryOptions {
            limits: ResourceLimits {
                instance_idle_ms: idle_ms,
                ..ResourceLimits::default()
            },
            ..RepositoryOptions::new(vec![example_repository()])
        };
        let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
            .await
            .expect("server");
        let model = server.registry().resolve("simple", "1").expect("simple serves");
        let instances = model.instance_count();
        assert!(instances >= 1);
        let expected_at_load = if idle_ms == 0 { instances } else { 0 };
        assert_eq!(model.awake_instances(), expected_at_load, "idle {idle_ms} ms");
        for round in 0..2 {
            let client = server.raw_client().await.expect("client");
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let mut client = client.clone();
                    tokio::spawn(async move { client.model_infer(simple_request(i)).await })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                let answer = task.await.expect("task").expect("answered").into_inner();
                let first =
                    i32::from_le_bytes(answer.raw_output_contents[0][..4].try_into().expect("4 bytes"));
                assert_eq!(first, i as i32 + 1, "round {round}");
            }
            assert!(model.awake_instances() <= instances);
            if idle_ms > 0 {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while model.awake_instances() > 0 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "instance threads never ended"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                assert_eq!(model.awake_instances(), instances);
            }
        }
        assert_eq!(model.instance_count(), instances, "parking keeps the instances");
        drop(model);
        server.stop().await;
    }
}
