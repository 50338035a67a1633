//! Loading on first request and the model memory budget, end to end: a real server in explicit mode with
//! `--load-on-demand` and `--model-memory-budget`, real ONNX Runtime, NVIDIA's `tritonclient` over gRPC and
//! the metrics endpoint (`tests/python/test_model_management.py`, which writes the models it needs into the
//! repository while the server runs). Triton's behaviour pinned: `ModelRepositoryManager::RepositoryIndex`
//! (core `model_repository_manager.cc`) lists a model folder that is not loaded with empty state and an
//! unloaded model as `UNAVAILABLE` "unloaded"; an unload drains the requests already queued.

use std::time::Duration;

use ferry_server::{
    limits::ResourceLimits,
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{TestServer, example_repository, run_pytest, simple_request};

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
                    tokio::spawn(async move { client.model_infer(simple_request("simple", i, 1)).await })
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

/// A repository with copies of Triton's `simple` under `names`, each config given the
/// `ferry.load_on_demand` value paired with it (none for `None`).
fn repository_of_simples(models: &[(&str, Option<&str>)]) -> tempfile::TempDir {
    let repository = tempfile::tempdir().expect("temp dir");
    let simple = example_repository().join("simple");
    let config = std::fs::read_to_string(simple.join("config.pbtxt")).expect("simple's config");
    for (name, on_demand) in models {
        let folder = repository.path().join(name);
        std::fs::create_dir_all(folder.join("1")).expect("version folder");
        std::fs::copy(simple.join("1/model.onnx"), folder.join("1/model.onnx")).expect("model file");
        let mut text = config.replace("name: \"simple\"", &format!("name: \"{name}\""));
        if let Some(value) = on_demand {
            text.push_str(&format!(
                "parameters {{ key: \"ferry.load_on_demand\" value {{ string_value: \"{value}\" }} }}\n"
            ));
        }
        std::fs::write(folder.join("config.pbtxt"), text).expect("config");
    }
    repository
}

/// Ferry's own key (Triton loads only what it is asked to): `ferry.load_on_demand` overrides the server's
/// `--load-on-demand` for one model, both ways. Under `--load-model=*` a model marked `"true"` is left for
/// its first request, which loads it; under `--load-on-demand` a model marked `"false"` loads at start, and
/// once unloaded a request does not load it again (NOT_FOUND, Triton's "has no available versions").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_config_key_overrides_the_servers_load_on_demand_for_its_model() {
    for server_on_demand in [false, true] {
        let repository =
            repository_of_simples(&[("plain", None), ("lazy", Some("true")), ("eager", Some("false"))]);
        let options = RepositoryOptions {
            control_mode: ControlMode::Explicit,
            // Without the flag, everything loads at start but what asks not to.
            startup_models: if server_on_demand {
                Vec::new()
            } else {
                vec!["*".to_owned()]
            },
            load_on_demand: server_on_demand,
            strict_readiness: false,
            ..RepositoryOptions::new(vec![repository.path().to_owned()])
        };
        let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
            .await
            .expect("server");
        let registry = server.registry();
        let ready = |name: &str| registry.resolve(name, "").is_ok();
        let case = format!("--load-on-demand {server_on_demand}");
        assert!(
            !ready("lazy"),
            "{case}: a model marked on demand waits for its first request"
        );
        assert!(
            ready("eager"),
            "{case}: a model marked not on demand loads at start"
        );
        assert_eq!(
            ready("plain"),
            !server_on_demand,
            "{case}: an unmarked model follows the server"
        );
        let mut client = server.raw_client().await.expect("client");
        let infer = |model: &str| simple_request(model, 2, 1);
        for model in ["lazy", "plain"] {
            let answer = client
                .model_infer(infer(model))
                .await
                .expect("loaded on its request");
            let first = i32::from_le_bytes(
                answer.into_inner().raw_output_contents[0][..4]
                    .try_into()
                    .expect("4 bytes"),
            );
            assert_eq!(first, 3, "{case}: {model}");
        }
        assert!(ready("lazy"), "{case}");
        let eager = ferry_server::repository::ModelName::parse("eager".to_owned()).expect("name");
        registry.unload_request(&eager, false).expect("unloaded");
        let refused = client
            .model_infer(infer("eager"))
            .await
            .expect_err("not loaded on demand");
        assert_eq!(refused.code(), tonic::Code::NotFound, "{case}: {refused:?}");
        assert!(!ready("eager"), "{case}");
        drop(client);
        server.stop().await;
    }
}

/// Ferry's own (Triton opens every instance's session at load): with parked instances a version opens
/// only its first instance's session at load, and the second when concurrent requests first need two
/// instances, which then counts in the version's memory; every request is answered either way. With
/// `--instance-idle-ms 0` both open at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_versions_second_instance_opens_its_session_on_first_concurrent_demand() {
    let repository = tempfile::tempdir().expect("temp dir");
    ferry_tests::write_matmul_model(repository.path(), "slow", 512, 512);
    for idle_ms in [5_000, 0] {
        let options = RepositoryOptions {
            limits: ResourceLimits {
                instance_idle_ms: idle_ms,
                ..ResourceLimits::default()
            },
            ..RepositoryOptions::new(vec![repository.path().to_owned()])
        };
        let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
            .await
            .expect("server");
        let model = server.registry().resolve("slow", "1").expect("slow serves");
        assert_eq!(model.instance_count(), 2);
        let at_load = if idle_ms == 0 { 2 } else { 1 };
        assert_eq!(model.opened_instances(), at_load, "idle {idle_ms} ms, at load");
        let bytes_at_load = model.memory_bytes();
        let file_bytes = std::fs::metadata(repository.path().join("slow/1/model.onnx"))
            .expect("model file")
            .len();
        assert!(bytes_at_load >= file_bytes, "at least the file: {bytes_at_load}");
        let client = server.raw_client().await.expect("client");
        let request = || ferry_tests::matmul_request("slow", 512, 512);
        let answered = |answer: ferry_proto::inference::ModelInferResponse| {
            let first = f32::from_le_bytes(answer.raw_output_contents[0][..4].try_into().expect("4 bytes"));
            assert!((first - 1.0).abs() < 1e-4, "Y = ones, got {first}");
        };
        answered(
            client
                .clone()
                .model_infer(request())
                .await
                .expect("answered")
                .into_inner(),
        );
        assert_eq!(
            model.opened_instances(),
            at_load,
            "one request at a time needs one instance"
        );
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut client = client.clone();
                let request = request();
                tokio::spawn(async move { client.model_infer(request).await })
            })
            .collect();
        for task in tasks {
            answered(task.await.expect("task").expect("answered").into_inner());
        }
        assert_eq!(
            model.opened_instances(),
            2,
            "idle {idle_ms} ms: concurrent requests opened the second"
        );
        assert_eq!(model.instance_count(), 2);
        // The second instance's session counts against the memory budget once it opens: at least the
        // file's size, at most what the load took (`ferry_server::model`'s `memory` module).
        let bytes_now = model.memory_bytes();
        if idle_ms == 0 {
            assert_eq!(bytes_now, bytes_at_load, "both opened at load, and counted then");
        } else {
            assert!(
                bytes_now >= bytes_at_load + file_bytes && bytes_now <= 2 * bytes_at_load,
                "the second instance's session counts: {bytes_at_load} at load, {bytes_now} now"
            );
        }
        assert_eq!(server.registry().model_memory_bytes(), bytes_now);
        drop((model, client));
        server.stop().await;
    }
}
