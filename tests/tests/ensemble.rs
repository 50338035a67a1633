//! End-to-end tests of ensembles (`platform: "ensemble"`): the real server on `tests/ensemble_repository`
//! (members `scale_pre` y = 2x + 1, `relu_shift` y = Relu(x - 4), `row_sum`, `add_pair` on real ONNX
//! Runtime), requests over gRPC, answers checked against the steps' arithmetic done here by hand.
//!
//! Triton behaviour pinned: an ensemble is served, listed and reported like any model (core
//! `ensemble_scheduler.cc`, `EnsembleContext`: each step is a request of its composing model, scheduled by
//! that model's own scheduler, and composing models count those requests in their statistics), and an
//! ensemble whose composing model is not ready is not ready (core `model_repository_manager.cc`,
//! dependency graph: a dependent is UNAVAILABLE while a model it depends on is missing).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_proto::inference::{
    ModelConfigRequest, ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelReadyRequest,
    ModelRepositoryParameter, RepositoryIndexRequest, RepositoryModelLoadRequest,
    RepositoryModelUnloadRequest, model_infer_request::InferInputTensor,
    model_repository_parameter::ParameterChoice,
};
use ferry_server::repository::{ControlMode, RepositoryOptions};
use ferry_tests::{TestServer, repo_root, run_pytest};
use tonic::Code;

fn ensemble_repository() -> PathBuf {
    repo_root().join("tests/ensemble_repository")
}

fn f32_bytes(values: &[f32]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A request of `model` with one FP32 input `input` of `rows` rows of 4.
fn request(model: &str, input: &str, values: &[f32]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        id: "e2e".into(),
        inputs: vec![InferInputTensor {
            name: input.into(),
            datatype: "FP32".into(),
            shape: vec![(values.len() / 4) as i64, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_bytes(values)],
        ..Default::default()
    }
}

/// The FP32 output `name` of `response`, with its shape.
fn output(response: &ModelInferResponse, name: &str) -> (Vec<i64>, Vec<f32>) {
    let index = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("output {name} in {:?}", response.outputs));
    assert_eq!(response.outputs[index].datatype, "FP32");
    (
        response.outputs[index].shape.clone(),
        f32_values(&response.raw_output_contents[index]),
    )
}

fn pre(x: f32) -> f32 {
    2.0 * x + 1.0
}

fn relu_shift(x: f32) -> f32 {
    (x - 4.0).max(0.0)
}

const INPUT: [f32; 8] = [-1.0, 0.5, 2.0, 3.0, 1.5, 4.0, -2.0, 10.0];

#[tokio::test]
async fn a_pipeline_answers_as_its_steps_run_by_hand() {
    let server = TestServer::start(vec![ensemble_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let response = client
        .model_infer(request("pipeline", "RAW", &INPUT))
        .await
        .expect("pipeline answers")
        .into_inner();
    assert_eq!(response.model_name, "pipeline");
    assert_eq!(response.model_version, "1");
    assert_eq!(response.id, "e2e");
    let features: Vec<f32> = INPUT.iter().map(|&x| relu_shift(pre(x))).collect();
    assert_eq!(output(&response, "FEATURES"), (vec![2, 4], features.clone()));
    let scores: Vec<f32> = features.chunks(4).map(|row| row.iter().sum()).collect();
    assert_eq!(output(&response, "SCORE"), (vec![2, 1], scores));

    // The ensemble counts its request; each member counts the step it ran, as Triton's composing models do.
    let stats = server.statistics("pipeline").await;
    let ensemble = stats.inference_stats.expect("stats");
    assert_eq!(ensemble.success.expect("success").count, 1);
    for member in ["scale_pre", "relu_shift", "row_sum"] {
        let stats = server.statistics(member).await;
        assert_eq!(
            stats
                .inference_stats
                .expect("stats")
                .success
                .expect("success")
                .count,
            1,
            "{member}"
        );
        assert_eq!(stats.inference_count, 2, "{member} ran both rows");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_diamond_runs_both_branches_and_joins_them() {
    let server = TestServer::start(vec![ensemble_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let response = client
        .model_infer(request("diamond", "X", &INPUT))
        .await
        .expect("diamond answers")
        .into_inner();
    let expected: Vec<f32> = INPUT
        .iter()
        .map(|&x| {
            let top = pre(x);
            relu_shift(top) + pre(top)
        })
        .collect();
    assert_eq!(output(&response, "SUM"), (vec![2, 4], expected));
    // scale_pre ran twice for this one request: the top of the diamond and its right branch.
    let stats = server.statistics("scale_pre").await;
    assert_eq!(
        stats
            .inference_stats
            .expect("stats")
            .success
            .expect("success")
            .count,
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn an_ensemble_may_use_an_ensemble_as_a_step() {
    let server = TestServer::start(vec![ensemble_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let response = client
        .model_infer(request("nested", "IN", &INPUT))
        .await
        .expect("nested answers")
        .into_inner();
    let score = |rows: &[f32]| -> Vec<f32> {
        rows.chunks(4)
            .map(|row| row.iter().map(|&x| relu_shift(pre(x))).sum())
            .collect()
    };
    let scaled: Vec<f32> = INPUT.iter().map(|&x| pre(x)).collect();
    assert_eq!(output(&response, "DIRECT"), (vec![2, 1], score(&INPUT)));
    assert_eq!(output(&response, "SCALED"), (vec![2, 1], score(&scaled)));
    // The inner ensemble counts its two requests, its members theirs.
    let pipeline = server
        .statistics("pipeline")
        .await
        .inference_stats
        .expect("stats");
    assert_eq!(pipeline.success.expect("success").count, 2);
    let scale_pre = server
        .statistics("scale_pre")
        .await
        .inference_stats
        .expect("stats");
    assert_eq!(scale_pre.success.expect("success").count, 3);
    server.stop().await;
}

#[tokio::test]
async fn an_ensemble_is_listed_and_described_like_any_model() {
    let server = TestServer::start(vec![ensemble_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner();
    let row = index
        .models
        .iter()
        .find(|m| m.name == "diamond")
        .expect("diamond listed");
    assert_eq!((row.version.as_str(), row.state.as_str()), ("1", "READY"));
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: "pipeline".into(),
            version: String::new(),
        })
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(metadata.platform, "ensemble");
    assert_eq!(metadata.inputs[0].name, "RAW");
    assert_eq!(metadata.inputs[0].shape, [-1, 4]);
    let outputs: Vec<&str> = metadata.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["FEATURES", "SCORE"]);
    let config = client
        .model_config(ModelConfigRequest {
            name: "pipeline".into(),
            version: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(config.platform, "ensemble");
    assert!(config.backend.is_empty(), "an ensemble has no backend");
    server.stop().await;
}

#[tokio::test]
async fn a_request_over_the_ensembles_batch_size_is_refused_before_any_step_runs() {
    let server = TestServer::start(vec![ensemble_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let error = client
        .model_infer(request("pipeline", "RAW", &[0.0; 36]))
        .await
        .expect_err("9 rows over max_batch_size 8");
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert_eq!(server.statistics("scale_pre").await.inference_count, 0);
    server.stop().await;
}

/// Copies the ensemble repository into a fresh folder, so that a test may change it.
fn copy_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&ensemble_repository(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn explicit_server(repository: &Path, models: &[&str]) -> TestServer {
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        startup_models: models.iter().map(|m| (*m).to_owned()).collect(),
        strict_readiness: false,
        ..RepositoryOptions::new(vec![repository.to_owned()])
    };
    TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server")
}

async fn ready(server: &TestServer, name: &str) -> bool {
    let mut client = server.raw_client().await.expect("client");
    client
        .model_ready(ModelReadyRequest {
            name: name.into(),
            version: String::new(),
        })
        .await
        .expect("ready")
        .into_inner()
        .ready
}

#[tokio::test]
async fn unloading_a_member_makes_the_ensemble_unavailable_with_the_reason_until_it_is_back() {
    let repository = copy_repository();
    // The ensemble is listed first at start: it still loads after its members.
    let server = explicit_server(
        repository.path(),
        &["pipeline", "scale_pre", "relu_shift", "row_sum"],
    )
    .await;
    assert!(ready(&server, "pipeline").await);
    let mut client = server.raw_client().await.expect("client");
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "relu_shift".into(),
            ..Default::default()
        })
        .await
        .expect("unload");
    assert!(!ready(&server, "pipeline").await);
    let error = client
        .model_infer(request("pipeline", "RAW", &INPUT[..4]))
        .await
        .expect_err("a member is gone");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(
        error.message().contains("step 1 (model 'relu_shift')") && error.message().contains("unloaded"),
        "{}",
        error.message()
    );
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner();
    let row = index
        .models
        .iter()
        .find(|m| m.name == "pipeline")
        .expect("listed");
    assert_eq!(row.state, "UNAVAILABLE");
    assert!(row.reason.contains("relu_shift"), "{}", row.reason);

    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "relu_shift".into(),
            ..Default::default()
        })
        .await
        .expect("load");
    assert!(ready(&server, "pipeline").await);
    let response = client
        .model_infer(request("pipeline", "RAW", &INPUT[..4]))
        .await
        .expect("answers again")
        .into_inner();
    let features: Vec<f32> = INPUT[..4].iter().map(|&x| relu_shift(pre(x))).collect();
    assert_eq!(output(&response, "FEATURES").1, features);
    server.stop().await;
}

#[tokio::test]
async fn an_ensemble_whose_edges_do_not_fit_fails_to_load_naming_the_step_and_tensor() {
    let repository = copy_repository();
    // row_sum gives [batch, 1]; feeding it to add_pair's 4-wide input is a shape mismatch along an edge.
    std::fs::create_dir_all(repository.path().join("bad/1")).expect("version folder");
    std::fs::write(
        repository.path().join("bad/config.pbtxt"),
        "platform: \"ensemble\"\nmax_batch_size: 8\n\
         input [ { name: \"X\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
         output [ { name: \"OUT\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
         ensemble_scheduling { step [\n\
           { model_name: \"row_sum\" model_version: -1 input_map { key: \"x\" value: \"X\" }\n\
             output_map { key: \"y\" value: \"total\" } },\n\
           { model_name: \"add_pair\" model_version: -1 input_map { key: \"a\" value: \"X\" }\n\
             input_map { key: \"b\" value: \"total\" } output_map { key: \"sum\" value: \"OUT\" } } ] }\n",
    )
    .expect("config");
    let server = explicit_server(repository.path(), &["row_sum", "add_pair"]).await;
    let mut client = server.raw_client().await.expect("client");
    let error = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "bad".into(),
            ..Default::default()
        })
        .await
        .expect_err("shapes do not fit");
    assert!(
        error.message().contains("step 1 (model 'add_pair')")
            && error.message().contains("tensor 'total'")
            && error.message().contains("input 'b'"),
        "{}",
        error.message()
    );
    // A member that is in no repository is named too.
    std::fs::create_dir_all(repository.path().join("orphan/1")).expect("version folder");
    std::fs::write(
        repository.path().join("orphan/config.pbtxt"),
        std::fs::read_to_string(repository.path().join("pipeline/config.pbtxt"))
            .expect("config")
            .replace("name: \"pipeline\"", "name: \"orphan\"")
            .replace("model_name: \"relu_shift\"", "model_name: \"absent\""),
    )
    .expect("config");
    let error = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "orphan".into(),
            ..Default::default()
        })
        .await
        .expect_err("no model 'absent'");
    assert_eq!(error.code(), Code::Internal, "{error:?}");
    assert!(
        error
            .message()
            .contains("ensemble 'orphan': step 1 (model 'absent'): model 'absent' is not loaded"),
        "{}",
        error.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_the_answers_of_the_steps_run_in_onnxruntime() {
    let server = TestServer::start(vec![ensemble_repository()])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_ensemble.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient ensemble suite failed: {status}"
    );
}

/// Writes model `name` into `repository`: `config` and, when given, `model` as version 1's model.onnx
/// (an ensemble gets an empty version folder, as in Triton).
fn add_model(repository: &Path, name: &str, config: &str, model: Option<&Path>) {
    let folder = repository.join(name);
    std::fs::create_dir_all(folder.join("1")).expect("version folder");
    std::fs::write(folder.join("config.pbtxt"), config).expect("config");
    if let Some(model) = model {
        std::fs::copy(model, folder.join("1/model.onnx")).expect("model file");
    }
}

#[tokio::test]
async fn parallel_branches_run_at_the_same_time() {
    let repository = copy_repository();
    let relu = ensemble_repository().join("relu_shift/1/model.onnx");
    // Each branch waits out a 400 ms batching delay in its own member's batcher.
    for name in ["slow_a", "slow_b"] {
        add_model(
            repository.path(),
            name,
            "platform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n\
             input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
             output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
             dynamic_batching { max_queue_delay_microseconds: 400000 }\n",
            Some(&relu),
        );
    }
    add_model(
        repository.path(),
        "branches",
        "platform: \"ensemble\"\nmax_batch_size: 8\n\
         input [ { name: \"X\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
         output [ { name: \"SUM\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
         ensemble_scheduling { step [\n\
           { model_name: \"slow_a\" model_version: -1 input_map { key: \"x\" value: \"X\" }\n\
             output_map { key: \"y\" value: \"l\" } },\n\
           { model_name: \"slow_b\" model_version: -1 input_map { key: \"x\" value: \"X\" }\n\
             output_map { key: \"y\" value: \"r\" } },\n\
           { model_name: \"add_pair\" model_version: -1 input_map { key: \"a\" value: \"l\" }\n\
             input_map { key: \"b\" value: \"r\" } output_map { key: \"sum\" value: \"SUM\" } } ] }\n",
        None,
    );
    let server = TestServer::start(vec![repository.path().to_owned()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let started = std::time::Instant::now();
    let response = client
        .model_infer(request("branches", "X", &INPUT[..4]))
        .await
        .expect("answers")
        .into_inner();
    let took = started.elapsed();
    let expected: Vec<f32> = INPUT[..4].iter().map(|&x| 2.0 * relu_shift(x)).collect();
    assert_eq!(output(&response, "SUM").1, expected);
    // One after the other, the branches would take at least 800 ms.
    assert!(
        took >= std::time::Duration::from_millis(400) && took < std::time::Duration::from_millis(750),
        "took {took:?}"
    );

    // A client that gives up while the branches wait: the ensemble counts a failure (canceled, as a
    // member's request is), and the withdrawn steps never run.
    let mut abandoned = tonic::Request::new(request("branches", "X", &INPUT[..4]));
    abandoned.set_timeout(std::time::Duration::from_millis(100));
    let status = client.model_infer(abandoned).await.expect_err("deadline passes");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stats = server
            .statistics("branches")
            .await
            .inference_stats
            .expect("stats");
        if stats.fail.expect("fail").count == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the canceled request was never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for member in ["slow_a", "slow_b"] {
        assert_eq!(
            server.statistics(member).await.execution_count,
            1,
            "{member} ran once"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_failing_step_fails_the_request_with_the_step_named() {
    let repository = copy_repository();
    let gather = ferry_tests::test_repository().join("gather_table");
    add_model(
        repository.path(),
        "gather_table",
        &std::fs::read_to_string(gather.join("config.pbtxt")).expect("config"),
        Some(&gather.join("1/model.onnx")),
    );
    add_model(
        repository.path(),
        "lookup",
        "platform: \"ensemble\"\nmax_batch_size: 8\n\
         input [ { name: \"INDEX\", data_type: TYPE_INT64, dims: [ 1 ] } ]\n\
         output [ { name: \"VALUE\", data_type: TYPE_FP32, dims: [ 1 ] } ]\n\
         ensemble_scheduling { step [\n\
           { model_name: \"gather_table\" model_version: -1 input_map { key: \"index\" value: \"INDEX\" }\n\
             output_map { key: \"y\" value: \"VALUE\" } } ] }\n",
        None,
    );
    let server = TestServer::start(vec![repository.path().to_owned()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let lookup = |index: i64| ModelInferRequest {
        model_name: "lookup".into(),
        inputs: vec![InferInputTensor {
            name: "INDEX".into(),
            datatype: "INT64".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::copy_from_slice(&index.to_le_bytes())],
        ..Default::default()
    };
    let response = client
        .model_infer(lookup(3))
        .await
        .expect("in the table")
        .into_inner();
    assert_eq!(output(&response, "VALUE"), (vec![1, 1], vec![30.0]));
    // An index outside the table fails inside ONNX Runtime, in the step.
    let error = client
        .model_infer(lookup(42))
        .await
        .expect_err("outside the table");
    assert_eq!(error.code(), Code::Internal, "{error:?}");
    assert!(
        error
            .message()
            .starts_with("ensemble 'lookup' step 0 (model 'gather_table'): "),
        "{}",
        error.message()
    );
    let stats = server.statistics("lookup").await.inference_stats.expect("stats");
    assert_eq!(
        (
            stats.success.expect("success").count,
            stats.fail.expect("fail").count
        ),
        (1, 1)
    );
    let member = server
        .statistics("gather_table")
        .await
        .inference_stats
        .expect("stats");
    assert_eq!(
        member.fail.expect("fail").count,
        1,
        "the member counts its failed step"
    );
    server.stop().await;
}

/// The state of every model in the index, by name (the model's own row, or its version 1's).
async fn states(server: &TestServer) -> std::collections::BTreeMap<String, String> {
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner();
    index
        .models
        .into_iter()
        .map(|row| (row.name, row.state))
        .collect()
}

async fn unload(server: &TestServer, name: &str, dependents: Option<bool>) {
    let mut client = server.raw_client().await.expect("client");
    let parameters = dependents
        .map(|value| {
            (
                "unload_dependents".to_owned(),
                ModelRepositoryParameter {
                    parameter_choice: Some(ParameterChoice::BoolParam(value)),
                },
            )
        })
        .into_iter()
        .collect();
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: name.into(),
            parameters,
            ..Default::default()
        })
        .await
        .expect("unload");
}

/// Triton's explicit mode (core `model_repository_manager.cc`, `LoadUnloadModels`): loading an ensemble
/// loads the models its steps name, and theirs; `unload_dependents` (`UpdateDependencyGraph` with
/// `deleted_dependents`) unloads those that were loaded along with it and that no other ensemble uses,
/// never one loaded by a request of its own.
#[tokio::test]
async fn an_ensemble_loads_its_members_and_unload_dependents_unloads_them_again() {
    let repository = copy_repository();
    // At start: nested brings pipeline, which brings its own members, and scale_pre.
    let server = explicit_server(repository.path(), &["nested"]).await;
    // Triton advertises the parameter as an extension of its own.
    let metadata = server
        .raw_client()
        .await
        .expect("client")
        .server_metadata(ferry_proto::inference::ServerMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert!(
        metadata
            .extensions
            .iter()
            .any(|e| e == "model_repository(unload_dependents)"),
        "{:?}",
        metadata.extensions
    );
    assert!(ready(&server, "nested").await);
    for member in ["pipeline", "scale_pre", "relu_shift", "row_sum"] {
        assert!(ready(&server, member).await, "{member} loaded with nested");
    }
    assert!(
        !ready(&server, "add_pair").await,
        "add_pair is no member of nested"
    );
    // Loading a serving, unchanged ensemble again keeps it as it is, with no note in the index (it has no
    // instances of its own to resize).
    server
        .raw_client()
        .await
        .expect("client")
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "pipeline".into(),
            ..Default::default()
        })
        .await
        .expect("load again");
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner();
    let row = index
        .models
        .iter()
        .find(|m| m.name == "pipeline")
        .expect("listed");
    assert_eq!((row.state.as_str(), row.reason.as_str()), ("READY", ""));
    // Without unload_dependents, the members stay.
    unload(&server, "nested", None).await;
    assert!(ready(&server, "pipeline").await);

    // A load request: diamond brings add_pair; relu_shift and scale_pre serve already.
    let mut client = server.raw_client().await.expect("client");
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "diamond".into(),
            ..Default::default()
        })
        .await
        .expect("diamond loads with its members");
    assert!(ready(&server, "diamond").await && ready(&server, "add_pair").await);
    // row_sum asked for by name: no longer only a member.
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "row_sum".into(),
            ..Default::default()
        })
        .await
        .expect("load");

    // Unloading pipeline with its dependents: relu_shift and scale_pre are still used by diamond, row_sum
    // was loaded by name; nothing else goes.
    unload(&server, "pipeline", Some(true)).await;
    assert!(!ready(&server, "pipeline").await);
    for member in ["relu_shift", "scale_pre", "row_sum"] {
        assert!(ready(&server, member).await, "{member} stays");
    }
    // Unloading diamond with its dependents: add_pair, relu_shift and scale_pre came with ensembles and
    // nothing uses them now.
    unload(&server, "diamond", Some(true)).await;
    let states = states(&server).await;
    for member in ["diamond", "add_pair", "relu_shift", "scale_pre"] {
        assert_eq!(states[member], "UNAVAILABLE", "{member} unloaded");
    }
    assert!(ready(&server, "row_sum").await, "loaded by name, it stays");
    server.stop().await;
}

/// Poll mode: an ensemble that failed for want of a member loads once the member's folder appears, though
/// its own folder did not change (Triton's dependency graph loads the dependents of a model that appears).
#[tokio::test]
async fn in_poll_mode_an_ensemble_waiting_for_a_member_loads_when_it_appears() {
    let repository = copy_repository();
    let spare = tempfile::tempdir().expect("temp dir");
    std::fs::rename(
        repository.path().join("relu_shift"),
        spare.path().join("relu_shift"),
    )
    .expect("move the member out");
    let options = RepositoryOptions {
        control_mode: ControlMode::Poll,
        poll_interval: std::time::Duration::from_millis(100),
        strict_readiness: false,
        ..RepositoryOptions::new(vec![repository.path().to_owned()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    assert!(!ready(&server, "pipeline").await);
    assert_eq!(states(&server).await["pipeline"], "UNAVAILABLE");
    copy_dir(
        &spare.path().join("relu_shift"),
        &repository.path().join("relu_shift"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready(&server, "pipeline").await {
        assert!(
            std::time::Instant::now() < deadline,
            "pipeline never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready(&server, "nested").await, "and the ensemble that uses it");
    server.stop().await;
}
