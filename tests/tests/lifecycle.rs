//! Model lifecycle under traffic: versions added, replaced and removed, configs edited, and corrupt files
//! dropped in, twenty times over, in poll mode and in explicit mode, while clients send requests without
//! pause. No request may fail, and every answer must come from a version that was ready to give it.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::{
    GrpcInferenceServiceClient,
    inference::{
        ModelConfigRequest, ModelInferRequest, ModelReadyRequest, ModelRepositoryParameter,
        RepositoryIndexRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerReadyRequest,
        model_infer_request::InferInputTensor, model_repository_parameter::ParameterChoice,
    },
};
use ferry_server::repository::{ControlMode, RepositoryOptions};
use ferry_tests::{TestServer, repo_root};
use tokio::task::JoinHandle;
use tonic::{Code, transport::Channel};

const CONFIG: &str = "max_batch_size: 8\n\
    input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
    output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
    dynamic_batching { }\n";

/// A model repository of the test's own, holding one model `m` built from `tests/assets/add_<k>.onnx` files
/// (y = x + k, so an answer tells which file gave it).
struct Repository {
    dir: tempfile::TempDir,
    policy: &'static str,
}

impl Repository {
    fn new() -> Self {
        Self::with_policy("all { }")
    }

    /// A repository whose model has `version_policy: { <policy> }` and version 1.
    fn with_policy(policy: &'static str) -> Self {
        let repository = Repository {
            dir: tempfile::tempdir().expect("temp dir"),
            policy,
        };
        repository.write_config(1);
        repository.put_version(1, 1);
        repository
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn model(&self) -> PathBuf {
        self.dir.path().join("m")
    }

    fn write_config(&self, instances: u32) {
        std::fs::create_dir_all(self.model()).expect("model folder");
        self.write_config_text(&format!(
            "{CONFIG}instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]\n"
        ));
    }

    fn write_config_text(&self, config: &str) {
        std::fs::create_dir_all(self.model()).expect("model folder");
        let text = format!("{config}version_policy: {{ {} }}\n", self.policy);
        // Written aside and renamed in, as a deployment should: a poll that reads the config while it is
        // being rewritten in place would see it half-written.
        let aside = self.dir.path().join(".config.pbtxt");
        std::fs::write(&aside, text).expect("config");
        std::fs::rename(&aside, self.model().join("config.pbtxt")).expect("config in place");
    }

    fn asset(k: u32) -> Vec<u8> {
        std::fs::read(repo_root().join(format!("tests/assets/add_{k}.onnx"))).expect("asset")
    }

    fn put_version(&self, version: u64, k: u32) {
        let folder = self.model().join(version.to_string());
        std::fs::create_dir_all(&folder).expect("version folder");
        std::fs::write(folder.join("model.onnx"), Self::asset(k)).expect("model file");
    }

    /// Writes a version's file in two halves with a pause, as a slow copy would. The writes run on a thread
    /// of their own, so that a busy async runtime cannot stretch the pause past a poll.
    async fn put_version_slowly(&self, version: u64, k: u32, pause: Duration) {
        let folder = self.model().join(version.to_string());
        let bytes = Self::asset(k);
        tokio::task::spawn_blocking(move || {
            // The folder is made here, right before its file: made before the blocking task starts, it could
            // stand empty for two polls on a loaded machine and be loaded without a model file, which is not
            // the half-written file this test is about.
            std::fs::create_dir_all(&folder).expect("version folder");
            let (head, _) = bytes.split_at(bytes.len() / 2);
            std::fs::write(folder.join("model.onnx"), head).expect("first half");
            std::thread::sleep(pause);
            std::fs::write(folder.join("model.onnx"), &bytes).expect("whole file");
        })
        .await
        .expect("writer");
    }

    fn corrupt_version(&self, version: u64) {
        let folder = self.model().join(version.to_string());
        std::fs::create_dir_all(&folder).expect("version folder");
        std::fs::write(folder.join("model.onnx"), b"not an onnx model at all").expect("garbage");
    }

    fn remove_version(&self, version: u64) {
        std::fs::remove_dir_all(self.model().join(version.to_string())).expect("remove version");
    }
}

/// What one request saw.
#[derive(Debug, Clone)]
enum Outcome {
    Answered { version: String, k: i64 },
    Failed { code: Code, message: String },
}

/// Clients sending requests for `m` without pause (empty version: the highest ready one).
struct Traffic {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<JoinHandle<()>>,
}

fn request(base: f32) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(
            [base; 4]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        ..Default::default()
    }
}

impl Traffic {
    fn start(client: &GrpcInferenceServiceClient<Channel>, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (mut client, stop, outcomes) = (client.clone(), Arc::clone(&stop), Arc::clone(&outcomes));
                tokio::spawn(async move {
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let base = (c as u32 * 100_000 + n) as f32;
                        n += 1;
                        let outcome = match client.model_infer(request(base)).await {
                            Ok(response) => {
                                let response = response.into_inner();
                                let y = f32::from_le_bytes(
                                    response.raw_output_contents[0][..4].try_into().expect("4 bytes"),
                                );
                                Outcome::Answered {
                                    version: response.model_version,
                                    k: (y - base).round() as i64,
                                }
                            }
                            Err(status) => Outcome::Failed {
                                code: status.code(),
                                message: status.message().to_owned(),
                            },
                        };
                        outcomes.lock().expect("outcomes").push(outcome);
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            outcomes,
            tasks,
        }
    }

    /// Lets the clients run until they have sent at least `count` requests.
    async fn run_until(&self, count: usize) {
        while self.outcomes.lock().expect("outcomes").len() < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("client task");
        }
        let outcomes = self.outcomes.lock().expect("outcomes");
        outcomes.clone()
    }
}

/// The state of every version of `m` in RepositoryIndex.
async fn states(client: &mut GrpcInferenceServiceClient<Channel>) -> HashMap<String, (String, String)> {
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models;
    index
        .into_iter()
        .filter(|m| m.name == "m")
        .map(|m| (m.version, (m.state, m.reason)))
        .collect()
}

/// Waits until `condition` holds of the index, failing the test after 20 s.
async fn wait_for(
    client: &mut GrpcInferenceServiceClient<Channel>,
    what: &str,
    condition: impl Fn(&HashMap<String, (String, String)>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = states(client).await;
        if condition(&now) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; index: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a request for `version` is answered with `k`.
async fn wait_for_answer(client: &mut GrpcInferenceServiceClient<Channel>, version: &str, k: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut request = request(0.0);
        request.model_version = version.into();
        if let Ok(response) = client.model_infer(request).await {
            let y = f32::from_le_bytes(
                response.into_inner().raw_output_contents[0][..4]
                    .try_into()
                    .expect("4"),
            );
            if y.round() as i64 == k {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "version {version} never answered with k = {k}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of<'a>(states: &'a HashMap<String, (String, String)>, version: &str) -> Option<&'a str> {
    states.get(version).map(|(state, _)| state.as_str())
}

/// Checks the traffic's outcomes: none failed, every answer is one its version could give.
fn check(outcomes: &[Outcome], valid: &BTreeSet<(String, i64)>) {
    assert!(
        outcomes.len() > 100,
        "the clients sent only {} requests",
        outcomes.len()
    );
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed { code, message } => Some(format!("{code:?}: {message}")),
            Outcome::Answered { .. } => None,
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failures.len(),
        outcomes.len(),
        failures.first()
    );
    for outcome in outcomes {
        if let Outcome::Answered { version, k } = outcome {
            assert!(
                valid.contains(&(version.clone(), *k)),
                "answer {k} from version {version} is not one it could give"
            );
        }
    }
}

fn valid_answers() -> BTreeSet<(String, i64)> {
    [("1", 1), ("2", 2), ("2", 20)]
        .into_iter()
        .map(|(v, k)| (v.to_owned(), k))
        .collect()
}

async fn start(repository: &Repository, mode: ControlMode) -> TestServer {
    TestServer::start_with(options(repository, mode), ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server")
}

fn options(repository: &Repository, mode: ControlMode) -> RepositoryOptions {
    RepositoryOptions {
        control_mode: mode,
        poll_interval: Duration::from_millis(50),
        startup_models: vec!["m".into()],
        strict_readiness: true,
        // Some tests load models from files their requests carry.
        allow_model_file_upload: true,
        ..RepositoryOptions::new(vec![repository.root()])
    }
}

async fn explicit_load(client: &mut GrpcInferenceServiceClient<Channel>) -> Result<(), tonic::Status> {
    let request = RepositoryModelLoadRequest {
        model_name: "m".into(),
        ..Default::default()
    };
    client.repository_model_load(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_follows_the_repository_without_failing_a_request() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Poll).await;
    let mut client = server.raw_client().await.expect("client");
    let traffic = Traffic::start(&client, 3);
    for cycle in 0..20 {
        // A new version, copied in two writes well under a poll apart: it must never be loaded half-written.
        repository
            .put_version_slowly(2, 2, Duration::from_millis(2))
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = states(&mut client).await;
            assert_ne!(
                state_of(&now, "2"),
                Some("UNAVAILABLE"),
                "cycle {cycle}: a half-written file was loaded: {now:?}"
            );
            if state_of(&now, "2") == Some("READY") {
                break;
            }
            assert!(Instant::now() < deadline, "version 2 never loaded: {now:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_for_answer(&mut client, "2", 2).await;
        // The same version replaced by other weights.
        repository.put_version(2, 20);
        wait_for_answer(&mut client, "2", 20).await;
        // A corrupt version: reported unavailable, while version 2 goes on answering.
        repository.corrupt_version(3);
        wait_for(&mut client, "version 3 to fail", |s| {
            state_of(s, "3") == Some("UNAVAILABLE")
        })
        .await;
        wait_for_answer(&mut client, "", 20).await;
        // While version 3 is broken no load of the model can commit (all or nothing), so it goes first.
        repository.remove_version(3);
        wait_for(&mut client, "version 3 to go", |s| state_of(s, "3").is_none()).await;
        // An instance-count edit applies in place: version 1 keeps its sessions.
        let before = server.registry().resolve("m", "1").expect("version 1");
        repository.write_config(1 + (cycle % 2 + 1) % 2);
        let wanted = 1 + (cycle % 2 + 1) % 2;
        let deadline = Instant::now() + Duration::from_secs(20);
        while server
            .registry()
            .resolve("m", "1")
            .expect("version 1")
            .instance_count()
            != wanted as usize
        {
            assert!(Instant::now() < deadline, "the instance count never changed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = server.registry().resolve("m", "1").expect("version 1");
        assert!(
            Arc::ptr_eq(&before, &after),
            "an instance_group edit must not reload the version"
        );
        // ModelConfig reports the edit once it is published (it used to keep the instance_group the version
        // was loaded with).
        for version in ["", "1"] {
            loop {
                let config = client
                    .model_config(ModelConfigRequest {
                        name: "m".into(),
                        version: version.into(),
                    })
                    .await
                    .expect("config")
                    .into_inner()
                    .config
                    .expect("config");
                if config.instance_group[0].count == wanted as i32 {
                    break;
                }
                assert!(Instant::now() < deadline, "ModelConfig kept {config:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Removing a version unloads it after it drains.
        repository.remove_version(2);
        wait_for(&mut client, "version 2 to go", |s| {
            !matches!(state_of(s, "2"), Some("READY") | Some("LOADING"))
        })
        .await;
    }
    let outcomes = traffic.finish().await;
    check(&outcomes, &valid_answers());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_reloads_on_request_without_failing_a_request() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Explicit).await;
    let mut client = server.raw_client().await.expect("client");
    let traffic = Traffic::start(&client, 3);
    for _ in 0..20 {
        repository.put_version(2, 2);
        explicit_load(&mut client).await.expect("load version 2");
        assert_eq!(state_of(&states(&mut client).await, "2"), Some("READY"));
        wait_for_answer(&mut client, "2", 2).await;
        repository.put_version(2, 20);
        explicit_load(&mut client).await.expect("reload version 2");
        wait_for_answer(&mut client, "2", 20).await;
        repository.corrupt_version(3);
        let status = explicit_load(&mut client)
            .await
            .expect_err("version 3 is corrupt");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        // Triton's text (`ModelRepositoryManager::LoadUnloadModels`, `ModelLifeCycle::OnLoadComplete`).
        assert!(
            status
                .message()
                .starts_with("load failed for model 'm': version 3 is at UNAVAILABLE state: ")
                && status.message().ends_with(";\n"),
            "{}",
            status.message()
        );
        let now = states(&mut client).await;
        assert_eq!(state_of(&now, "3"), Some("UNAVAILABLE"));
        assert_eq!(
            state_of(&now, "2"),
            Some("READY"),
            "the serving versions are untouched"
        );
        repository.remove_version(3);
        repository.remove_version(2);
        explicit_load(&mut client)
            .await
            .expect("load without versions 2 and 3");
        let now = states(&mut client).await;
        assert!(!matches!(state_of(&now, "2"), Some("READY")), "{now:?}");
    }
    let outcomes = traffic.finish().await;
    check(&outcomes, &valid_answers());
    server.stop().await;
}

#[tokio::test]
async fn a_half_written_model_is_not_loaded_and_a_failed_load_is_retried_when_files_change() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Poll).await;
    let mut client = server.raw_client().await.expect("client");
    repository.corrupt_version(2);
    wait_for(&mut client, "version 2 to fail", |s| {
        state_of(s, "2") == Some("UNAVAILABLE")
    })
    .await;
    let mut ready = client
        .server_ready(ServerReadyRequest {})
        .await
        .expect("ready")
        .into_inner()
        .ready;
    assert!(
        !ready,
        "with strict readiness a failed version makes the server not ready"
    );
    repository.put_version(2, 2);
    wait_for(&mut client, "version 2 to load after the fix", |s| {
        state_of(s, "2") == Some("READY")
    })
    .await;
    ready = client
        .server_ready(ServerReadyRequest {})
        .await
        .expect("ready")
        .into_inner()
        .ready;
    assert!(ready);
    server.stop().await;
}

#[tokio::test]
async fn explicit_mode_loads_unloads_and_takes_configs_and_files_from_the_request() {
    let repository = Repository::new();
    let mut opts = options(&repository, ControlMode::Explicit);
    opts.startup_models.clear();
    let server = TestServer::start_with(opts, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let ready = |name: &str| ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    assert!(
        !client
            .model_ready(ready("m"))
            .await
            .expect("rpc")
            .into_inner()
            .ready,
        "nothing loaded at start"
    );
    explicit_load(&mut client).await.expect("load");
    assert!(
        client
            .model_ready(ready("m"))
            .await
            .expect("rpc")
            .into_inner()
            .ready
    );

    let unload = RepositoryModelUnloadRequest {
        model_name: "m".into(),
        ..Default::default()
    };
    client.repository_model_unload(unload).await.expect("unload");
    assert!(
        !client
            .model_ready(ready("m"))
            .await
            .expect("rpc")
            .into_inner()
            .ready
    );
    let status = client.model_infer(request(0.0)).await.expect_err("unloaded");
    // Triton: an unloaded model has no available version (`ModelLifeCycle::GetModel`).
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "Request for unknown model: 'm' has no available versions; unloaded"
    );
    let now = states(&mut client).await;
    assert_eq!(
        now.get("")
            .map(|(state, reason)| (state.as_str(), reason.as_str())),
        Some(("UNAVAILABLE", "unloaded"))
    );

    // A config and a model file sent with the request, written to Ferry's own folder.
    let parameter = |choice| ModelRepositoryParameter {
        parameter_choice: Some(choice),
    };
    let config = r#"{"max_batch_size": 2, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
                     "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]}"#;
    let load = RepositoryModelLoadRequest {
        model_name: "uploaded".into(),
        parameters: [
            (
                "config".to_owned(),
                parameter(ParameterChoice::StringParam(config.into())),
            ),
            (
                "file:5/model.onnx".to_owned(),
                parameter(ParameterChoice::BytesParam(Repository::asset(3).into())),
            ),
        ]
        .into(),
        ..Default::default()
    };
    client
        .repository_model_load(load)
        .await
        .expect("load from the request");
    let mut uploaded = request(1.0);
    uploaded.model_name = "uploaded".into();
    let response = client.model_infer(uploaded).await.expect("infer").into_inner();
    assert_eq!(response.model_version, "5");
    let y = f32::from_le_bytes(response.raw_output_contents[0][..4].try_into().expect("4 bytes"));
    assert_eq!(y, 4.0);
    let config = client
        .model_config(ModelConfigRequest {
            name: "uploaded".into(),
            version: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(config.max_batch_size, 2);
    assert!(
        !Path::new(&repository.root()).join("uploaded").exists(),
        "nothing is written into the repository"
    );

    let status = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such model");
    // Triton cannot poll a model that is in no repository (`ModelRepositoryManager::LoadUnloadModel`).
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        "failed to load 'nope', failed to poll from model repository; model not found in any model repository"
    );
    server.stop().await;
}

#[tokio::test]
async fn load_and_unload_are_refused_outside_explicit_mode() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::None).await;
    let mut client = server.raw_client().await.expect("client");
    let status = explicit_load(&mut client).await.expect_err("not explicit");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("explicit model load / unload is not allowed"),
        "{}",
        status.message()
    );
    server.stop().await;
}

/// The policies of the transactional load tests, each with the versions it serves from versions 1 and 2.
const POLICIES: [(&str, &[&str]); 4] = [
    ("latest { num_versions: 1 }", &["2"]),
    ("latest { num_versions: 2 }", &["1", "2"]),
    ("all { }", &["1", "2"]),
    ("specific { versions: [ 2, 3 ] }", &["2"]),
];

/// The versions of `m` that are ready, by number, with the copy that serves each.
fn serving(server: &TestServer, versions: &[&str]) -> Vec<Arc<ferry_server::model::ModelVersion>> {
    versions
        .iter()
        .map(|v| server.registry().resolve("m", v).expect("serving"))
        .collect()
}

/// Triton's all-or-nothing load (issue: a truncated version 7 under `latest: 1` unloaded version 6 and
/// failed every request for seconds): while clients send without pause, a corrupt new version and a config
/// the model file does not match each leave the serving versions exactly as they were, the failure is
/// reported, and a good new version then replaces the old ones without a failed request.
async fn a_failed_load_changes_nothing(mode: ControlMode) {
    for (policy, served) in POLICIES {
        let repository = Repository::with_policy(policy);
        repository.put_version(2, 2);
        let server = start(&repository, mode).await;
        let mut client = server.raw_client().await.expect("client");
        let reload = |client: &mut GrpcInferenceServiceClient<Channel>| {
            let mut client = client.clone();
            async move {
                match mode {
                    ControlMode::Explicit => explicit_load(&mut client).await.err(),
                    _ => None,
                }
            }
        };
        let before = serving(&server, served);
        let traffic = Traffic::start(&client, 4);
        wait_for_answer(&mut client, "", 2).await;

        repository.corrupt_version(3);
        let refused = reload(&mut client).await;
        wait_for(&mut client, "version 3 to fail", |s| {
            state_of(s, "3") == Some("UNAVAILABLE")
        })
        .await;
        if mode == ControlMode::Explicit {
            let status = refused.expect("the load fails");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{policy}: {}",
                status.message()
            );
            assert!(
                status
                    .message()
                    .starts_with("load failed for model 'm': version 3 is at UNAVAILABLE state: "),
                "{}",
                status.message()
            );
        }
        let reason = states(&mut client).await["3"].1.clone();
        assert!(!reason.is_empty(), "{policy}: the index gives the reason");
        for (version, old) in served.iter().zip(&before) {
            let now = server.registry().resolve("m", version).expect("still serving");
            assert!(
                Arc::ptr_eq(old, &now),
                "{policy}: version {version} was replaced or reloaded"
            );
        }

        // A config the model files do not match (5 values, not 4): every version fails, none is touched.
        repository.remove_version(3);
        repository.write_config_text(&CONFIG.replace("dims: [ 4 ]", "dims: [ 5 ]"));
        let refused = reload(&mut client).await;
        wait_for(&mut client, "the reload to fail", |s| {
            served.iter().all(|v| {
                s.get(*v)
                    .is_some_and(|(state, reason)| state == "READY" && !reason.is_empty())
            })
        })
        .await;
        assert!(mode != ControlMode::Explicit || refused.is_some(), "{policy}");
        for (version, old) in served.iter().zip(&before) {
            let now = server.registry().resolve("m", version).expect("still serving");
            assert!(
                Arc::ptr_eq(old, &now),
                "{policy}: version {version} changed after a bad config"
            );
        }

        // The good version 3 and config: for the latest and specific policies it replaces what served.
        repository.write_config(1);
        repository.put_version(3, 3);
        assert!(
            reload(&mut client).await.is_none(),
            "{policy}: the good load succeeds"
        );
        wait_for_answer(&mut client, "", 3).await;
        traffic.run_until(200).await;
        let outcomes = traffic.finish().await;
        let valid = [("2", 2), ("3", 3)]
            .into_iter()
            .map(|(v, k)| (v.to_owned(), k))
            .collect();
        check(&outcomes, &valid);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_loads_are_all_or_nothing() {
    a_failed_load_changes_nothing(ControlMode::Poll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_loads_are_all_or_nothing() {
    a_failed_load_changes_nothing(ControlMode::Explicit).await;
}
