//! Input drift monitoring end to end: a repository of the test's own with two copies of `add_one_batched`
//! (FP32 rows of 4) whose configs turn drift monitoring on against a baseline drawn from N(0, 1) by numpy
//! (a `.npy` for one, a `.npz` for the other). Real gRPC clients send one model data from the baseline's
//! distribution and the other data from N(1.5, 1); the report (REST) and the gauges (`/metrics`) must tell
//! the two apart clearly, freezing the live window through the API must make it the new baseline, the
//! statistics must not grow with the traffic, and an identity with only the `infer` scope must not be able
//! to change a baseline. Drift is Ferry's own (Triton has none), so no Triton behaviour is pinned here.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_client::{Client, Credentials};
use ferry_proto::{
    ferry::drift::v1::{
        DriftBaselineRequest, DriftReportRequest, drift_baseline_request::Source,
        drift_service_client::DriftServiceClient,
    },
    inference::{ModelInferRequest, model_infer_request::InferInputTensor},
};
use ferry_server::{ServerOptions, repository::RepositoryOptions};
use ferry_tests::{
    HttpFrontEnd, TestServer, access_for_keys, repo_root, rest_request, rest_request_with_headers,
};
use serde_json::Value;

/// Rows per request (the model's `max_batch_size`).
const ROWS: usize = 4;

/// The memory test measures this process, where every test's server runs: it runs alone (write), the
/// others together (read).
static ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Copies `add_one_batched` into `root` as model `name` with the drift parameters `parameters` appended to
/// its config.
fn add_model(root: &Path, name: &str, parameters: &[(&str, &str)]) -> PathBuf {
    let source = repo_root().join("tests/model_repository/add_one_batched");
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("1")).expect("model dir");
    std::fs::copy(source.join("1/model.onnx"), dir.join("1/model.onnx")).expect("model file");
    let mut config = std::fs::read_to_string(source.join("config.pbtxt"))
        .expect("config")
        .replace("add_one_batched", name);
    for (key, value) in parameters {
        config.push_str(&format!(
            "parameters {{ key: \"ferry.drift.{key}\" value {{ string_value: \"{value}\" }} }}\n"
        ));
    }
    std::fs::write(dir.join("config.pbtxt"), config).expect("config");
    dir
}

/// Writes `file` in `dir` with numpy: 20 000 rows of 4 features from N(0, 1), as a `.npy`, or as the array
/// `x` (the model's input) of a `.npz`.
fn write_baseline(dir: &Path, file: &str) {
    let python = repo_root().join(".venv/bin/python");
    let save = if file.ends_with(".npz") {
        "np.savez_compressed(path, x=data)"
    } else {
        "np.save(path, data)"
    };
    let script = format!(
        "import sys, numpy as np\npath = sys.argv[1]\n\
         data = np.random.default_rng(7).normal(0.0, 1.0, (20000, 4)).astype('<f4')\n{save}\n"
    );
    let status = std::process::Command::new(python)
        .args(["-c", &script])
        .arg(dir.join(file))
        .status()
        .expect("python runs");
    assert!(status.success(), "numpy could not write {file}");
}

/// A repository with `steady` (`.npy` baseline), `drifting` (`.npz` baseline), both sampling every request,
/// and `plain` (drift off).
fn repository(window: u64) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let window = window.to_string();
    let steady = add_model(
        root.path(),
        "steady",
        &[
            ("sample_rate", "1"),
            ("window", &window),
            ("baseline", "reference.npy"),
        ],
    );
    write_baseline(&steady, "reference.npy");
    let drifting = add_model(
        root.path(),
        "drifting",
        &[
            ("sample_rate", "1"),
            ("window", &window),
            ("baseline", "reference.npz"),
            ("max_features", "4"),
        ],
    );
    write_baseline(&drifting, "reference.npz");
    add_model(root.path(), "plain", &[]);
    root
}

/// Normal values N(mean, 1) by Box-Muller over a fixed linear congruential stream.
fn normal(mean: f64, seed: u64) -> impl Iterator<Item = f32> {
    let mut state = seed;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    std::iter::repeat_with(move || {
        let (u, v) = (uniform(), uniform());
        (mean + (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    })
}

/// Sends `requests` requests of [`ROWS`] rows from N(`mean`, 1) to `model` over `clients` concurrent gRPC
/// clients; every one must succeed.
async fn send(server: &TestServer, model: &str, mean: f64, requests: usize, clients: usize) {
    let mut tasks = Vec::new();
    for client in 0..clients {
        let mut grpc = server.raw_client().await.expect("client");
        let model = model.to_owned();
        let count = requests / clients + usize::from(client < requests % clients);
        tasks.push(tokio::spawn(async move {
            let mut values = normal(mean, 1000 + client as u64 * 7919 + mean.to_bits() % 97);
            for _ in 0..count {
                let data: Vec<u8> = values
                    .by_ref()
                    .take(ROWS * 4)
                    .flat_map(f32::to_le_bytes)
                    .collect();
                let request = ModelInferRequest {
                    model_name: model.clone(),
                    inputs: vec![InferInputTensor {
                        name: "x".into(),
                        datatype: "FP32".into(),
                        shape: vec![ROWS as i64, 4],
                        ..Default::default()
                    }],
                    raw_input_contents: vec![Bytes::from(data)],
                    ..Default::default()
                };
                grpc.model_infer(request).await.expect("inference");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
}

/// `GET path` on the REST front end as JSON, with its status.
async fn get_json(http: &HttpFrontEnd, path: &str) -> (u16, Value) {
    let reply = rest_request(http.address, "GET", path, b"").await.expect("reply");
    (reply.status, serde_json::from_slice(&reply.body).expect("JSON"))
}

/// The report of version 1 of `model` once the statistics thread has taken every sample: its sampled and
/// dropped requests add up to `sent`, and every sampled one is absorbed.
async fn settled_report(http: &HttpFrontEnd, model: &str, sent: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get_json(http, &format!("/v2/models/{model}/versions/1/drift")).await;
        assert_eq!(status, 200, "{body}");
        let report = body["versions"][0].clone();
        let count = |key: &str| report[key].as_u64().expect(key);
        if count("samples") + count("samples_dropped") == sent
            && count("samples_absorbed") == count("samples")
        {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "the drift statistics did not settle: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the series `name{labels}` in `text`, where `labels` is the exact label set.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

fn feature_scores(report: &Value, feature: usize) -> (f64, f64) {
    let feature = &report["inputs"][0]["features"][feature];
    (
        feature["psi"].as_f64().expect("psi"),
        feature["ks"].as_f64().expect("ks"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psi_and_ks_separate_shifted_traffic_from_baseline_traffic() {
    let _shared = ALONE.read().await;
    let root = repository(100_000);
    let server = TestServer::start(vec![root.path().to_path_buf()])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let metrics = server.start_metrics().await.expect("metrics");
    const SENT: usize = 600;
    send(&server, "steady", 0.0, SENT, 3).await;
    send(&server, "drifting", 1.5, SENT, 3).await;
    let steady = settled_report(&http, "steady", SENT as u64).await;
    let drifting = settled_report(&http, "drifting", SENT as u64).await;
    let rows = steady["inputs"][0]["features"][0]["count"]
        .as_u64()
        .expect("count");
    assert_eq!(rows, steady["samples"].as_u64().expect("samples") * ROWS as u64);
    assert_eq!(steady["baseline"]["kind"], "file", "{steady}");
    assert_eq!(drifting["baseline"]["name"], "reference.npz", "{drifting}");
    for feature in 0..4 {
        let (calm_psi, calm_ks) = feature_scores(&steady, feature);
        let (moved_psi, moved_ks) = feature_scores(&drifting, feature);
        // N(1.5, 1) against N(0, 1): KS about 0.55, PSI well over 1; the same distribution scores near 0.
        assert!(
            calm_psi < 0.05 && calm_ks < 0.06,
            "steady feature {feature}: {calm_psi} {calm_ks}"
        );
        assert!(
            moved_psi > 1.0 && moved_ks > 0.4,
            "drifting feature {feature}: {moved_psi} {moved_ks}"
        );
        assert!(moved_psi > 20.0 * calm_psi && moved_ks > 5.0 * calm_ks);
        assert_eq!(drifting["inputs"][0]["features"][feature]["drifting"], true);
        assert_eq!(steady["inputs"][0]["features"][feature]["drifting"], false);
    }
    let mean = drifting["inputs"][0]["features"][1]["mean"]
        .as_f64()
        .expect("mean");
    assert!((mean - 1.5).abs() < 0.1, "{mean}");

    let scrape = rest_request(metrics.address, "GET", "/metrics", b"")
        .await
        .expect("scrape");
    let text = scrape.text();
    let gauge = |name: &str, model: &str| {
        series(
            &text,
            name,
            &format!("model=\"{model}\",version=\"1\",input=\"x\",feature=\"2\""),
        )
        .unwrap_or_else(|| panic!("{name} of {model} missing in\n{text}"))
    };
    assert!(gauge("ferry_input_drift_psi", "drifting") > 1.0);
    assert!(gauge("ferry_input_drift_psi", "steady") < 0.05);
    assert!(gauge("ferry_input_drift_ks", "drifting") > 10.0 * gauge("ferry_input_drift_ks", "steady"));
    assert!(
        gauge("ferry_input_out_of_range_ratio", "drifting")
            > gauge("ferry_input_out_of_range_ratio", "steady")
    );
    assert_eq!(gauge("ferry_input_nan_ratio", "drifting"), 0.0);
    let sampled = series(
        &text,
        "ferry_drift_samples_total",
        "model=\"steady\",version=\"1\"",
    )
    .expect("counter");
    let dropped = series(
        &text,
        "ferry_drift_samples_dropped_total",
        "model=\"steady\",version=\"1\"",
    )
    .expect("counter");
    assert_eq!(sampled + dropped, SENT as f64);
    assert!(text.contains("# TYPE ferry_input_drift_psi gauge\n"), "{text}");
    assert!(!text.contains("model=\"plain\",version=\"1\",input"), "{text}");

    // The same report over gRPC (ferry.drift.v1.DriftService).
    let mut drift = DriftServiceClient::connect(format!("http://{}", server.url()))
        .await
        .expect("drift client");
    let report = drift
        .drift_report(DriftReportRequest {
            model: "drifting".into(),
            version: String::new(),
        })
        .await
        .expect("report")
        .into_inner();
    let version = &report.versions[0];
    assert_eq!(
        (version.version.as_str(), version.samples_absorbed),
        ("1", version.samples)
    );
    let feature = &version.inputs[0].features[0];
    assert!(feature.psi.expect("psi") > 1.0 && feature.drifting, "{feature:?}");
    assert_eq!(feature.histogram_counts.iter().sum::<u64>(), feature.count);
    assert_eq!(feature.quantiles.len(), 7);
    let off = drift
        .drift_report(DriftReportRequest {
            model: "plain".into(),
            version: "1".into(),
        })
        .await
        .expect_err("drift is off");
    assert_eq!(off.code(), tonic::Code::NotFound, "{off:?}");

    // Freezing the shifted traffic makes it the baseline: more of the same no longer drifts.
    let frozen = rest_request(
        http.address,
        "POST",
        "/v2/models/drifting/versions/1/drift/baseline",
        b"",
    )
    .await
    .expect("freeze");
    assert_eq!(frozen.status, 200, "{}", frozen.text());
    let frozen: Value = serde_json::from_slice(&frozen.body).expect("JSON");
    assert_eq!(frozen["baseline"]["kind"], "live", "{frozen}");
    send(&server, "drifting", 1.5, SENT, 3).await;
    let after = settled_report(&http, "drifting", 2 * SENT as u64).await;
    for feature in 0..4 {
        let (psi, ks) = feature_scores(&after, feature);
        assert!(
            psi < 0.05 && ks < 0.06,
            "feature {feature} after the freeze: {psi} {ks}"
        );
    }
    // And the file baseline comes back on request, over REST and over gRPC.
    let reset = rest_request(
        http.address,
        "POST",
        "/v2/models/drifting/drift/baseline",
        br#"{"source": "file"}"#,
    )
    .await
    .expect("reset");
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert!(reset.text().contains("\"kind\":\"file\""), "{}", reset.text());
    let frozen = drift
        .drift_baseline(DriftBaselineRequest {
            model: "drifting".into(),
            version: "1".into(),
            source: Source::Live.into(),
        })
        .await
        .expect("freeze over gRPC")
        .into_inner();
    let baseline = frozen.version.and_then(|v| v.baseline).and_then(|b| b.source);
    assert!(
        matches!(
            baseline,
            Some(ferry_proto::ferry::drift::v1::baseline_source::Source::FrozenAtUnixSeconds(_))
        ),
        "{baseline:?}"
    );

    let (status, body) = get_json(&http, "/v2/models/plain/drift").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ferry.drift.sample_rate"),
        "{body}"
    );
    let bad = rest_request(
        http.address,
        "POST",
        "/v2/models/drifting/drift/baseline",
        br#"{"source": "yesterday"}"#,
    )
    .await
    .expect("reply");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("'yesterday'"), "{}", bad.text());
    metrics.stop().await;
    http.stop().await;
    server.stop().await;
}

/// The resident memory of this process (the server runs in it), from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_many_sampled_requests() {
    let _alone = ALONE.write().await;
    let root = repository(500);
    let server = TestServer::start(vec![root.path().to_path_buf()])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let monitor = || server.registry().resolve("steady", "1").expect("steady");
    send(&server, "steady", 0.0, 2_000, 4).await;
    settled_report(&http, "steady", 2_000).await;
    let (warm_rss, warm_state) = (
        resident_bytes(),
        monitor().drift.as_ref().expect("drift").retained(),
    );
    send(&server, "steady", 0.0, 12_000, 4).await;
    let report = settled_report(&http, "steady", 14_000).await;
    let (rss, state) = (
        resident_bytes(),
        monitor().drift.as_ref().expect("drift").retained(),
    );
    // The window rotates every 500 samples: the live statistics hold between 500 and 1000 of them.
    let count = report["inputs"][0]["features"][0]["count"]
        .as_u64()
        .expect("count");
    assert!(
        (500 * ROWS as u64..=1000 * ROWS as u64).contains(&count),
        "{count}"
    );
    assert!(
        state <= warm_state + 64,
        "sketch values held: {warm_state} after warm-up, {state} after"
    );
    let growth = rss.saturating_sub(warm_rss);
    assert!(
        growth < 24 * 1024 * 1024,
        "resident memory grew by {growth} bytes: {warm_rss} -> {rss}"
    );
    http.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_with_only_the_infer_scope_cannot_change_a_baseline() {
    let _shared = ALONE.read().await;
    let root = repository(1_000);
    let access = access_for_keys(&[
        ("ops", "ops-key-0123456789", &["infer", "stats", "repository"]),
        ("client", "client-key-0123456789", &["infer"]),
    ]);
    let options: ServerOptions = TestServer::options(
        RepositoryOptions::new(vec![root.path().to_path_buf()]),
        ferry_server::MAX_MESSAGE_BYTES,
    )
    .expect("options");
    let server = TestServer::start_with_access(options, access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let call = |method: &'static str, path: &'static str, key: &'static str| {
        let address = http.address;
        async move {
            let headers = [("x-api-key", key.to_owned())];
            rest_request_with_headers(address, method, path, &headers, b"")
                .await
                .expect("reply")
        }
    };
    let infer = serde_json::json!({"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}
    ]})
    .to_string();
    let address = http.address;
    let headers = [("x-api-key", "client-key-0123456789".to_owned())];
    let inferred = rest_request_with_headers(
        address,
        "POST",
        "/v2/models/steady/infer",
        &headers,
        infer.as_bytes(),
    )
    .await
    .expect("reply");
    assert_eq!(inferred.status, 200, "{}", inferred.text());
    let freeze = "/v2/models/steady/versions/1/drift/baseline";
    let refused = call("POST", freeze, "client-key-0123456789").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().contains("'repository' scope"),
        "{}",
        refused.text()
    );
    let report = call("GET", "/v2/models/steady/drift", "client-key-0123456789").await;
    assert_eq!(report.status, 403, "{}", report.text());
    assert!(report.text().contains("'stats' scope"), "{}", report.text());
    // The same over gRPC, through ferry-client's drift calls.
    let client = |key: &str| {
        let url = server.url();
        let credentials = Credentials::bearer(key).expect("credentials");
        async move {
            Client::connect(url)
                .await
                .expect("client")
                .with_credentials(credentials)
        }
    };
    let infer_only = client("client-key-0123456789").await;
    let refused = infer_only
        .drift_baseline("steady", Some("1"), Source::Live)
        .await
        .expect_err("infer only");
    assert!(refused.to_string().contains("'repository' scope"), "{refused}");
    let refused = infer_only
        .drift_report("steady", None)
        .await
        .expect_err("infer only");
    assert!(refused.to_string().contains("'stats' scope"), "{refused}");
    let ops = client("ops-key-0123456789").await;
    let report = ops.drift_report("steady", None).await.expect("ops may read");
    assert_eq!(report.versions.len(), 1);
    assert!(report.versions[0].samples <= 1);
    // The operator may; the one sampled request is enough to freeze.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let frozen = call("POST", freeze, "ops-key-0123456789").await;
        if frozen.status == 200 {
            assert!(frozen.text().contains("\"kind\":\"live\""), "{}", frozen.text());
            break;
        }
        // Until the statistics thread has taken the sample, there is nothing to freeze (400).
        assert_eq!(frozen.status, 400, "{}", frozen.text());
        assert!(Instant::now() < deadline, "{}", frozen.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    http.stop().await;
    server.stop().await;
}
