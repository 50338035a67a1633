//! Version labels and traffic policies end to end: a real server over loopback serving one model `m` with
//! two versions that answer differently (version k adds k to its input, so every answer says which version
//! gave it), called by clients sending without pause over gRPC and REST, administered through Ferry's own
//! gRPC service (the Rust SDK) and REST routes. Triton has no labels or splits (its issues #4660 and
//! #3008 ask for them); a model without labels keeps Triton's answers, pinned in `grpc.rs`.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_client::Client;
use ferry_proto::{
    GrpcInferenceServiceClient,
    inference::{
        InferParameter, ModelInferRequest, ModelInferResponse, infer_parameter::ParameterChoice,
        model_infer_request::InferInputTensor,
    },
};
use ferry_server::repository::{ControlMode, RepositoryOptions};
use ferry_tests::{HttpFrontEnd, TestServer, repo_root};
use serde_json::{Value, json};
use tonic::transport::Channel;

#[path = "traffic/auth.rs"]
mod auth;
#[path = "traffic/labels.rs"]
mod labels;
#[path = "traffic/shadow.rs"]
mod shadow;

const CONFIG: &str = "max_batch_size: 8\n\
    input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
    output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
    dynamic_batching { }\n\
    version_policy: { all { } }\n";

const SPLIT_90_10: &str = r#"{"labels": {"stable": 1, "canary": 2}, "split": {"stable": 90, "canary": 10}}"#;

/// A repository of the test's own: model `m`, version 1 adds 1, version 2 adds 2; optionally a
/// `traffic.json`.
fn repository(traffic: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("m");
    for k in [1u32, 2] {
        let folder = model.join(k.to_string());
        std::fs::create_dir_all(&folder).expect("version folder");
        let asset = std::fs::read(repo_root().join(format!("tests/assets/add_{k}.onnx"))).expect("asset");
        std::fs::write(folder.join("model.onnx"), asset).expect("model file");
    }
    std::fs::write(model.join("config.pbtxt"), CONFIG).expect("config");
    if let Some(traffic) = traffic {
        std::fs::write(model.join("traffic.json"), traffic).expect("traffic file");
    }
    dir
}

fn options(root: PathBuf, mode: ControlMode) -> RepositoryOptions {
    RepositoryOptions {
        control_mode: mode,
        poll_interval: Duration::from_millis(50),
        strict_readiness: false,
        ..RepositoryOptions::new(vec![root])
    }
}

async fn start(dir: &tempfile::TempDir, mode: ControlMode) -> TestServer {
    TestServer::start_with(
        options(dir.path().to_path_buf(), mode),
        ferry_server::MAX_MESSAGE_BYTES,
    )
    .await
    .expect("server")
}

async fn sdk(server: &TestServer) -> Client {
    Client::connect(server.url()).await.expect("SDK client")
}

/// A request for `m` at `version` (empty: routed), with x = 0 so that y = k, the version's addend.
fn request(version: &str, key: Option<&str>) -> ModelInferRequest {
    let mut parameters = HashMap::new();
    if let Some(key) = key {
        parameters.insert(
            "routing_key".to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(key.to_owned())),
            },
        );
    }
    ModelInferRequest {
        model_name: "m".into(),
        model_version: version.into(),
        parameters,
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; 16])],
        ..Default::default()
    }
}

/// What one answer says: the version, its addend read from the output, and the routing rule.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    version: String,
    addend: f32,
    route: Option<String>,
}

fn answer(response: &ModelInferResponse) -> Answer {
    let raw = &response.raw_output_contents[0];
    let route = match response
        .parameters
        .get("ferry_route")
        .map(|p| &p.parameter_choice)
    {
        Some(Some(ParameterChoice::StringParam(route))) => Some(route.clone()),
        _ => None,
    };
    Answer {
        version: response.model_version.clone(),
        addend: f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
        route,
    }
}

async fn infer(
    client: &mut GrpcInferenceServiceClient<Channel>,
    version: &str,
    key: Option<&str>,
) -> Result<Answer, tonic::Status> {
    Ok(answer(
        &client.model_infer(request(version, key)).await?.into_inner(),
    ))
}

/// Infers with the routing key in the `x-ferry-routing-key` metadata instead of a parameter.
async fn infer_with_header(client: &mut GrpcInferenceServiceClient<Channel>, key: &str) -> Answer {
    let mut call = tonic::Request::new(request("", None));
    call.metadata_mut()
        .insert("x-ferry-routing-key", key.parse().expect("ASCII key"));
    answer(&client.model_infer(call).await.expect("answer").into_inner())
}

/// Every answer must come from the version it names: version k adds k.
fn check_consistent(answer: &Answer) {
    let version: f32 = answer.version.parse().expect("a version number");
    assert_eq!(answer.addend, version, "{answer:?}");
}

/// Clients sending requests for `m` without pause, each cycling through `versions` (empty: routed).
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Result<Answer, String>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(
        client: &GrpcInferenceServiceClient<Channel>,
        clients: usize,
        versions: &'static [&'static str],
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (mut client, stop, answers) = (client.clone(), Arc::clone(&stop), Arc::clone(&answers));
                tokio::spawn(async move {
                    let mut turn = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let version = versions[turn % versions.len()];
                        turn += 1;
                        let outcome = infer(&mut client, version, None)
                            .await
                            .map_err(|s| format!("{version}: {:?} {}", s.code(), s.message()));
                        answers.lock().expect("answers").push(outcome);
                    }
                })
            })
            .collect();
        Load { stop, answers, tasks }
    }

    fn count(&self) -> usize {
        self.answers.lock().expect("answers").len()
    }

    async fn until(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count() < count {
            assert!(Instant::now() < deadline, "only {} answers in time", self.count());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) -> Vec<Result<Answer, String>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("client task");
        }
        Arc::try_unwrap(self.answers)
            .expect("one owner")
            .into_inner()
            .expect("answers")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_90_10_split_is_kept_under_load_and_counted() {
    let dir = repository(Some(SPLIT_90_10));
    let server = start(&dir, ControlMode::None).await;
    let client = server.raw_client().await.expect("client");
    let load = Load::start(&client, 8, &[""]);
    load.until(4_000).await;
    let answers = load.finish().await;
    let mut canary = 0;
    for answer in &answers {
        let answer = answer.as_ref().expect("no request fails");
        check_consistent(answer);
        let expected = if answer.version == "2" {
            "split:canary"
        } else {
            "split:stable"
        };
        assert_eq!(answer.route.as_deref(), Some(expected), "{answer:?}");
        canary += usize::from(answer.version == "2");
    }
    let share = canary as f64 / answers.len() as f64;
    assert!(
        (0.07..0.13).contains(&share),
        "canary share {share} of {}",
        answers.len()
    );
    // Every routed request is counted under its rule and version.
    let metrics = ferry_server::metrics::render_registry(server.registry());
    let counted = |line: &str| -> usize {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{line} missing from\n{metrics}"))
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count")
    };
    assert_eq!(
        counted(r#"ferry_routed_requests_total{model="m",version="2",rule="split:canary"}"#),
        canary
    );
    assert_eq!(
        counted(r#"ferry_routed_requests_total{model="m",version="1",rule="split:stable"}"#),
        answers.len() - canary
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_routing_key_keeps_its_version_across_a_weight_change_that_keeps_it_eligible() {
    let dir = repository(Some(SPLIT_90_10));
    let server = start(&dir, ControlMode::None).await;
    let http = server.start_http().await.expect("REST");
    let mut client = server.raw_client().await.expect("client");
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut before = HashMap::new();
    for key in &keys {
        let first = infer(&mut client, "", Some(key)).await.expect("answer");
        check_consistent(&first);
        // The same key again, and in the metadata instead of a parameter, and over REST's header.
        assert_eq!(infer(&mut client, "", Some(key)).await.expect("answer"), first);
        assert_eq!(infer_with_header(&mut client, key).await, first);
        if before.len() < 40 {
            let reply = rest_infer(&http, key).await;
            assert_eq!(reply["model_version"], first.version.as_str(), "{reply}");
            assert_eq!(
                reply["parameters"]["ferry_route"],
                first.route.as_deref().expect("a rule"),
                "{reply}"
            );
        }
        before.insert(key.clone(), first.version);
    }
    let canary = before.values().filter(|v| *v == "2").count();
    assert!(
        (10..60).contains(&canary),
        "{canary} of 300 keys on the 10% canary"
    );
    // On ModelStreamInfer the call's metadata key routes every request that has no key of its own; one
    // with its own `routing_key` parameter follows that one.
    let other = keys
        .iter()
        .find(|key| before[*key] == "2")
        .expect("a key on the canary");
    for key in keys.iter().filter(|key| before[*key] == "1").take(5) {
        let requests = vec![request("", None), request("", Some(other)), request("", None)];
        let mut call = tonic::Request::new(tokio_stream::iter(requests));
        call.metadata_mut()
            .insert("x-ferry-routing-key", key.parse().expect("ASCII key"));
        let mut responses = client
            .model_stream_infer(call)
            .await
            .expect("stream")
            .into_inner();
        let mut versions = Vec::new();
        while let Some(response) = responses.message().await.expect("a stream message") {
            assert_eq!(response.error_message, "");
            versions.push(answer(&response.infer_response.expect("a response")).version);
        }
        versions.sort();
        assert_eq!(
            versions,
            ["1", "1", "2"],
            "stream keyed {key}, one request keyed {other}"
        );
    }
    // Canary grows to 30%: every key it had stays; stable's keys move only as far as the weights say.
    let sdk = sdk(&server).await;
    let policy = ferry_client::traffic::proto::TrafficPolicy {
        labels: [("stable".to_owned(), 1), ("canary".to_owned(), 2)].into(),
        split: [("stable".to_owned(), 70), ("canary".to_owned(), 30)].into(),
        shadow: None,
    };
    sdk.set_traffic("m", policy).await.expect("weights changed");
    let mut moved = 0;
    for key in &keys {
        let now = infer(&mut client, "", Some(key)).await.expect("answer");
        if before[key] == "2" {
            assert_eq!(now.version, "2", "key {key} left the canary whose weight grew");
        }
        moved += usize::from(now.version != before[key]);
    }
    assert!(
        moved < 110,
        "{moved} of 300 keys moved for a 20-point weight change"
    );
    http.stop().await;
    server.stop().await;
}

/// A REST inference of `m` with `key` in the `x-ferry-routing-key` header.
async fn rest_infer(http: &HttpFrontEnd, key: &str) -> Value {
    let body = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]});
    let reply = rest(
        http,
        "POST",
        "/v2/models/m/infer",
        &[("x-ferry-routing-key", key.to_owned())],
        &body.to_string(),
    )
    .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    reply.1
}

async fn rest(
    http: &HttpFrontEnd,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let reply = ferry_tests::rest_request_with_headers(http.address, method, path, headers, body.as_bytes())
        .await
        .expect("an HTTP answer");
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_and_rollback_under_load_fail_no_request() {
    let dir = repository(Some(SPLIT_90_10));
    let server = start(&dir, ControlMode::None).await;
    let mut client = server.raw_client().await.expect("client");
    let sdk = sdk(&server).await;
    let load = Load::start(&client, 6, &["", "stable", "canary", "1"]);
    for round in 0..5 {
        load.until(300 * (2 * round + 1)).await;
        let promoted = sdk.promote("m", "", "").await.expect("promote");
        let policy = promoted.policy.expect("policy");
        assert_eq!(policy.labels["stable"], 2);
        assert_eq!((policy.split["stable"], policy.split["canary"]), (100, 0));
        // Once promoted, every request without a version goes to the canary's version, by `stable`.
        let routed = infer(&mut client, "", None).await.expect("answer");
        assert_eq!(
            (routed.version.as_str(), routed.route.as_deref()),
            ("2", Some("split:stable"))
        );
        load.until(300 * (2 * round + 2)).await;
        let rolled = sdk.rollback("m").await.expect("rollback");
        assert_eq!(rolled.policy.expect("policy").labels["stable"], 1);
        let stable = infer(&mut client, "stable", None).await.expect("answer");
        assert_eq!(
            (stable.version.as_str(), stable.route.as_deref()),
            ("1", Some("label:stable"))
        );
    }
    let answers = load.finish().await;
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    answers.iter().flatten().for_each(check_consistent);
    // The history names each change, who made it and what it changed.
    let history = sdk.traffic_history("m").await.expect("history");
    assert_eq!(
        history.len(),
        11,
        "the file's policy, then five promotions and five rollbacks"
    );
    assert_eq!(
        (history[0].who.as_str(), history[0].action.as_str()),
        ("file", "file")
    );
    for (i, change) in history[1..].iter().enumerate() {
        let action = if i % 2 == 0 { "promote" } else { "rollback" };
        assert_eq!(
            (change.who.as_str(), change.action.as_str()),
            ("anonymous", action)
        );
    }
    assert_eq!(history[1].to.as_ref().expect("to").labels["stable"], 2);
    assert_eq!(history[1].from.as_ref().expect("from").labels["stable"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_set_through_the_api_survive_a_restart() {
    let dir = repository(None);
    let server = start(&dir, ControlMode::None).await;
    let http = server.start_http().await.expect("REST");
    let (status, body) = rest(
        &http,
        "PUT",
        "/v2/models/m/traffic/labels/canary",
        &[],
        r#"{"version": 2}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"]["labels"]["canary"], 2);
    http.stop().await;
    server.stop().await;

    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m/traffic.json")).expect("file"))
            .expect("JSON");
    assert_eq!(written, json!({"labels": {"canary": 2}}));
    let server = start(&dir, ControlMode::None).await;
    let mut client = server.raw_client().await.expect("client");
    let answer = infer(&mut client, "canary", None).await.expect("answer");
    assert_eq!(
        answer,
        Answer {
            version: "2".into(),
            addend: 2.0,
            route: Some("label:canary".into())
        }
    );
    // Without a split, requests without a version still go to the highest ready version, unlabelled.
    let plain = infer(&mut client, "", None).await.expect("answer");
    assert_eq!((plain.version.as_str(), plain.route), ("2", None));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_traffic_file_keeps_the_previous_policy_and_says_why() {
    let dir = repository(Some(r#"{"labels": {"canary": 2}}"#));
    let server = start(&dir, ControlMode::Poll).await;
    let http = server.start_http().await.expect("REST");
    let mut client = server.raw_client().await.expect("client");
    let file = dir.path().join("m/traffic.json");
    std::fs::write(&file, r#"{"labels": {"canary": 2}, "split": {"canary": "ten"}}"#).expect("bad file");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (code, status) = rest(&http, "GET", "/v2/models/m/traffic", &[], "").await;
        assert_eq!(code, 200, "{status}");
        if status.get("last_error").is_some() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bad file was never reported: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = status["last_error"].as_str().expect("text");
    assert!(
        error.contains("traffic.json") && error.contains("invalid type"),
        "{error}"
    );
    assert_eq!(status["policy"], json!({"labels": {"canary": 2}}));
    assert_eq!(
        infer(&mut client, "canary", None).await.expect("answer").version,
        "2"
    );
    // Mended, the file is read again and the error clears.
    std::fs::write(&file, r#"{"labels": {"canary": 1, "next": 2}}"#).expect("good file");
    let deadline = Instant::now() + Duration::from_secs(20);
    while infer(&mut client, "canary", None).await.expect("answer").version != "1" {
        assert!(Instant::now() < deadline, "the mended file was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, status) = rest(&http, "GET", "/v2/models/m/traffic", &[], "").await;
    assert!(status.get("last_error").is_none(), "{status}");
    http.stop().await;
    server.stop().await;
}
