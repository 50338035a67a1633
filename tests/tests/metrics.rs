//! End-to-end tests of the Prometheus metrics endpoint: the real server, real ONNX Runtime, a known mix of
//! requests over gRPC (and REST, where both protocols must count alike), then `GET /metrics` over a plain
//! HTTP/1.1 connection. The answer is parsed with a small text-format parser written here, so that a
//! malformed exposition fails the test rather than being read leniently, and its counters are checked
//! against the requests sent and against the ModelStatistics RPC, which reads the same statistics.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, ModelInferRequest, ModelStatistics, infer_parameter::ParameterChoice,
    model_infer_request::InferInputTensor,
};
use ferry_tests::{HttpFrontEnd, TestServer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

// ---------------------------------------------------------------------------------------------------------
// A strict parser of the text exposition format (0.0.4), enough for what Ferry writes.

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: each family's type and help, and every sample in order.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    helps: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses `text`, panicking at the first line that is not valid, or a sample whose family has no
    /// `# HELP` and `# TYPE` before it.
    fn parse(text: &str) -> Self {
        let mut exposition = Exposition::default();
        for (number, line) in text.lines().enumerate() {
            let context = || format!("line {}: {line:?}", number + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("{}", context()));
                assert!(!help.is_empty(), "empty help, {}", context());
                exposition.helps.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{}", context()));
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "unknown type, {}",
                    context()
                );
                assert!(
                    exposition.helps.contains_key(name),
                    "TYPE before HELP, {}",
                    context()
                );
                let previous = exposition.types.insert(name.to_owned(), kind.to_owned());
                assert!(previous.is_none(), "family declared twice, {}", context());
            } else if line.starts_with('#') {
                continue;
            } else {
                let sample = parse_sample(line).unwrap_or_else(|error| panic!("{error}, {}", context()));
                let family = exposition.family_of(&sample.name);
                assert!(
                    family.is_some(),
                    "sample without a declared family, {}",
                    context()
                );
                exposition.samples.push(sample);
            }
        }
        exposition
    }

    /// The declared family a series name belongs to (`x_bucket`, `x_sum` and `x_count` belong to histogram `x`).
    fn family_of(&self, series: &str) -> Option<String> {
        if self.types.contains_key(series) {
            return Some(series.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = series.strip_suffix(suffix)?;
            (self.types.get(base).map(String::as_str) == Some("histogram")).then(|| base.to_owned())
        })
    }

    /// The value of series `name` for `model` and `version`, if there is one; for a family split by
    /// `reason` (Triton's failure counter), the sum over its reasons.
    fn value(&self, name: &str, model: &str, version: &str) -> Option<f64> {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.get("model").map(String::as_str) == Some(model)
                    && s.labels.get("version").map(String::as_str) == Some(version)
            })
            .collect();
        if matching.len() > 1 {
            let mut reasons: Vec<&str> = matching
                .iter()
                .map(|s| s.labels.get("reason").map_or("", String::as_str))
                .collect();
            reasons.sort_unstable();
            reasons.dedup();
            assert_eq!(
                reasons.len(),
                matching.len(),
                "{name} twice for {model} {version} with the same labels"
            );
        }
        (!matching.is_empty()).then(|| matching.iter().map(|s| s.value).sum())
    }

    /// Triton's failure counter of `model` version 1 for one `reason`.
    fn failures(&self, model: &str, reason: &str) -> u64 {
        let value = self
            .samples
            .iter()
            .find(|s| {
                s.name == "nv_inference_request_failure"
                    && s.labels.get("model").map(String::as_str) == Some(model)
                    && s.labels.get("version").map(String::as_str) == Some("1")
                    && s.labels.get("reason").map(String::as_str) == Some(reason)
            })
            .unwrap_or_else(|| panic!("no {reason} failure series for {model}"))
            .value;
        value as u64
    }

    /// Like [`Exposition::value`], for a series that must be there and be a whole number.
    fn count(&self, name: &str, model: &str, version: &str) -> u64 {
        let value = self
            .value(name, model, version)
            .unwrap_or_else(|| panic!("no {name} for {model} version {version}"));
        assert!(value >= 0.0 && value.fract() == 0.0, "{name} = {value}");
        value as u64
    }

    /// The buckets of histogram `name` for `model` and `version`, as (le, cumulative count), in order.
    fn buckets(&self, name: &str, model: &str, version: &str) -> Vec<(f64, f64)> {
        let series = format!("{name}_bucket");
        self.samples
            .iter()
            .filter(|s| {
                s.name == series
                    && s.labels.get("model").map(String::as_str) == Some(model)
                    && s.labels.get("version").map(String::as_str) == Some(version)
            })
            .map(|s| {
                let le = s.labels.get("le").expect("a bucket has le");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a number")
                };
                (bound, s.value)
            })
            .collect()
    }

    /// Checks every histogram of every version: at least one finite bucket, bounds increasing, counts
    /// non-decreasing, the `+Inf` bucket last and equal to `_count`, and `_sum` not negative.
    fn check_histograms(&self) {
        let histograms: Vec<&String> = self
            .types
            .iter()
            .filter(|(_, kind)| kind.as_str() == "histogram")
            .map(|(name, _)| name)
            .collect();
        assert!(!histograms.is_empty());
        for name in histograms {
            let count_series = format!("{name}_count");
            // Per-version histograms; the server-wide ones (load on demand) have no model label.
            let per_version = |s: &&Sample| s.name == count_series && s.labels.contains_key("model");
            for sample in self.samples.iter().filter(per_version) {
                let model = &sample.labels["model"];
                let version = &sample.labels["version"];
                let buckets = self.buckets(name, model, version);
                assert!(buckets.len() >= 2, "{name} {model}: {buckets:?}");
                for pair in buckets.windows(2) {
                    assert!(
                        pair[0].0 < pair[1].0,
                        "{name} {model}: bounds increase: {buckets:?}"
                    );
                    assert!(pair[0].1 <= pair[1].1, "{name} {model}: cumulative: {buckets:?}");
                }
                let last = buckets.last().expect("buckets");
                assert_eq!(last.0, f64::INFINITY, "{name} {model}: +Inf comes last");
                assert_eq!(last.1, sample.value, "{name} {model}: +Inf bucket == _count");
                let sum = self
                    .value(&format!("{name}_sum"), model, version)
                    .unwrap_or_else(|| panic!("{name} {model}: no _sum"));
                assert!(sum >= 0.0, "{name} {model}: _sum {sum}");
            }
        }
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    let valid_name = name
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid_name {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = after_brace;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"").ok_or("a label needs =\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ').ok_or("a space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

// ---------------------------------------------------------------------------------------------------------
// HTTP and gRPC helpers.

/// A plain HTTP/1.1 GET with `Connection: close`: status, content type and body.
async fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

async fn scrape(metrics: &HttpFrontEnd) -> Exposition {
    let (status, content_type, body) = get(metrics.address, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Exposition::parse(&body)
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: None,
    }
}

/// A one-row request for `simple`; `columns` other than 16 make it invalid.
fn simple_request(columns: usize) -> ModelInferRequest {
    let row: Bytes = (0..columns as i32)
        .flat_map(i32::to_le_bytes)
        .collect::<Vec<u8>>()
        .into();
    ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![
            input("INPUT0", "INT32", &[1, columns as i64]),
            input("INPUT1", "INT32", &[1, columns as i64]),
        ],
        raw_input_contents: vec![row.clone(), row],
        ..Default::default()
    }
}

/// A request of `rows` rows of 4 FP32 values for an `add_one_*` model.
fn add_one_request(model: &str, rows: usize) -> ModelInferRequest {
    let values: Vec<u8> = (0..rows * 4).flat_map(|v| (v as f32).to_le_bytes()).collect();
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("x", "FP32", &[rows as i64, 4])],
        raw_input_contents: vec![Bytes::from(values)],
        ..Default::default()
    }
}

/// Every counter of `model` version 1 in the scrape equals the ModelStatistics RPC's figure.
fn assert_agrees_with_statistics(scraped: &Exposition, model: &str, stats: &ModelStatistics) {
    let inference = stats.inference_stats.expect("inference stats");
    let ns = |d: Option<ferry_proto::inference::StatisticDuration>| d.map_or(0, |d| d.ns) / 1_000;
    let expected = [
        (
            "nv_inference_request_success",
            inference.success.map_or(0, |d| d.count),
        ),
        (
            "nv_inference_request_failure",
            inference.fail.map_or(0, |d| d.count),
        ),
        ("nv_inference_count", stats.inference_count),
        ("nv_inference_exec_count", stats.execution_count),
        ("nv_inference_request_duration_us", ns(inference.success)),
        ("nv_inference_queue_duration_us", ns(inference.queue)),
        (
            "nv_inference_compute_input_duration_us",
            ns(inference.compute_input),
        ),
        (
            "nv_inference_compute_infer_duration_us",
            ns(inference.compute_infer),
        ),
        (
            "nv_inference_compute_output_duration_us",
            ns(inference.compute_output),
        ),
    ];
    for (name, value) in expected {
        assert_eq!(scraped.count(name, model, "1"), value, "{name} of {model}");
    }
}

/// Polls until `model`'s pending gauge reads `expected`, or gives up after `patience`.
async fn wait_for_pending(metrics: &HttpFrontEnd, model: &str, expected: u64, patience: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < patience {
        let scraped = scrape(metrics).await;
        if scraped.count("nv_inference_pending_request_count", model, "1") == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------------------
// Tests.

/// Triton's per-model families, which dashboards built for Triton query.
const TRITON_FAMILIES: &[(&str, &str)] = &[
    ("nv_inference_request_success", "counter"),
    ("nv_inference_request_failure", "counter"),
    ("nv_inference_count", "counter"),
    ("nv_inference_exec_count", "counter"),
    ("nv_inference_request_duration_us", "counter"),
    ("nv_inference_queue_duration_us", "counter"),
    ("nv_inference_compute_input_duration_us", "counter"),
    ("nv_inference_compute_infer_duration_us", "counter"),
    ("nv_inference_compute_output_duration_us", "counter"),
    ("nv_inference_pending_request_count", "gauge"),
];

#[tokio::test]
async fn counters_and_histograms_account_for_every_request() {
    let server = TestServer::with_all_models().await.expect("server");
    let metrics = server.start_metrics().await.expect("metrics endpoint");
    let mut client = server.raw_client().await.expect("client");

    // Before any traffic: every family is declared and every ready version has its series, at zero.
    let idle = scrape(&metrics).await;
    // Without GPUs (this machine, CI) Triton's GPU families are left out altogether, as a Triton without
    // GPUs leaves them out (`src/metrics.cc` of triton-inference-server/core adds them per DCGM device).
    if ferry_server::gpu::inventory().devices.is_empty() {
        for family in [
            "nv_gpu_utilization",
            "nv_gpu_memory_total_bytes",
            "nv_gpu_memory_used_bytes",
            "nv_gpu_power_usage",
            "nv_gpu_power_limit",
            "nv_energy_consumption",
        ] {
            assert!(!idle.types.contains_key(family), "{family} without a GPU");
        }
    }
    for (family, kind) in TRITON_FAMILIES {
        assert_eq!(
            idle.types.get(*family).map(String::as_str),
            Some(*kind),
            "{family}"
        );
    }
    for version in ["1", "2"] {
        assert_eq!(idle.count("nv_inference_count", "mlp_classifier", version), 0);
    }
    assert_eq!(idle.count("nv_inference_request_success", "simple", "1"), 0);
    assert!(
        idle.value("nv_inference_count", "corrupt", "1").is_none(),
        "a model that failed to load has no series"
    );

    // simple: 7 successful one-row requests, each its own execution (no dynamic batching), and 2 with a
    // wrong shape, refused before they run.
    for _ in 0..7 {
        client
            .model_infer(simple_request(16))
            .await
            .expect("infer simple");
    }
    for _ in 0..2 {
        let status = client
            .model_infer(simple_request(15))
            .await
            .expect_err("wrong shape");
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    // add_one_greedy: 40 concurrent requests of 1 to 3 rows that the greedy batcher groups as it likes.
    let tasks: Vec<_> = (0..40usize)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .model_infer(add_one_request("add_one_greedy", 1 + i % 3))
                    .await
                    .expect("infer add_one_greedy");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let greedy_rows: u64 = (0..40u64).map(|i| 1 + i % 3).sum();

    // add_one_queue waits up to 3 s for 8 rows: a 1-row request shows as pending until 7 more rows come.
    let mut waiting_client = client.clone();
    let waiting = tokio::spawn(async move {
        waiting_client
            .model_infer(add_one_request("add_one_queue", 1))
            .await
    });
    let seen_pending = wait_for_pending(&metrics, "add_one_queue", 1, Duration::from_secs(2)).await;
    client
        .model_infer(add_one_request("add_one_queue", 7))
        .await
        .expect("the rows that fill the batch");
    waiting.await.expect("task").expect("the waiting request");
    assert!(
        seen_pending,
        "the queued request showed in nv_inference_pending_request_count"
    );

    // Then 2 requests whose 1 ms queue timeout passes: failures that did reach the model.
    for _ in 0..2 {
        let mut request = add_one_request("add_one_queue", 1);
        request.parameters.insert(
            "timeout".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(1_000)),
            },
        );
        let status = client.model_infer(request).await.expect_err("times out");
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    }

    let scraped = scrape(&metrics).await;
    scraped.check_histograms();

    // simple: exact counts.
    assert_eq!(scraped.count("nv_inference_request_success", "simple", "1"), 7);
    assert_eq!(scraped.count("nv_inference_count", "simple", "1"), 7);
    assert_eq!(scraped.count("nv_inference_exec_count", "simple", "1"), 7);
    let simple_batches = scraped.buckets("ferry_batch_size", "simple", "1");
    assert_eq!(
        simple_batches.first(),
        Some(&(1.0, 7.0)),
        "seven batches of one row"
    );
    assert_eq!(
        scraped.count("ferry_request_duration_seconds_count", "simple", "1"),
        7
    );
    assert_eq!(
        scraped.count("ferry_queue_duration_seconds_count", "simple", "1"),
        7
    );

    // add_one_greedy: every request and row counted; however the batcher grouped them, the batch size
    // histogram has one observation per execution and its sum is the rows inferred.
    assert_eq!(
        scraped.count("nv_inference_request_success", "add_one_greedy", "1"),
        40
    );
    assert_eq!(
        scraped.count("nv_inference_request_failure", "add_one_greedy", "1"),
        0
    );
    assert_eq!(
        scraped.count("nv_inference_count", "add_one_greedy", "1"),
        greedy_rows
    );
    let executions = scraped.count("nv_inference_exec_count", "add_one_greedy", "1");
    assert!((1..=40).contains(&executions), "{executions} executions");
    assert_eq!(
        scraped.count("ferry_batch_size_count", "add_one_greedy", "1"),
        executions
    );
    assert_eq!(
        scraped.count("ferry_batch_size_sum", "add_one_greedy", "1"),
        greedy_rows
    );
    assert_eq!(
        scraped.count(
            "ferry_compute_infer_duration_seconds_count",
            "add_one_greedy",
            "1"
        ),
        executions
    );
    assert_eq!(
        scraped.count("ferry_queue_duration_seconds_count", "add_one_greedy", "1"),
        40
    );
    assert_eq!(
        scraped.count("ferry_request_duration_seconds_count", "add_one_greedy", "1"),
        40
    );
    let compute_seconds = scraped
        .value("ferry_compute_infer_duration_seconds_sum", "add_one_greedy", "1")
        .expect("compute sum");
    assert!(compute_seconds > 0.0, "the model ran for some time");

    // add_one_queue: 2 successes in one batch of 8 rows, 2 failures that never ran.
    assert_eq!(
        scraped.count("nv_inference_request_success", "add_one_queue", "1"),
        2
    );
    assert_eq!(
        scraped.count("nv_inference_request_failure", "add_one_queue", "1"),
        2
    );
    assert_eq!(scraped.count("nv_inference_count", "add_one_queue", "1"), 8);
    assert_eq!(scraped.count("nv_inference_exec_count", "add_one_queue", "1"), 1);
    let queue_batches = scraped.buckets("ferry_batch_size", "add_one_queue", "1");
    let at_most = |rows: f64| queue_batches.iter().find(|(le, _)| *le == rows).map(|(_, n)| *n);
    assert_eq!(
        (at_most(4.0), at_most(8.0)),
        (Some(0.0), Some(1.0)),
        "{queue_batches:?}"
    );
    assert_eq!(
        scraped.count("ferry_queue_duration_seconds_count", "add_one_queue", "1"),
        2
    );

    // Failures by Triton's reasons: the wrong shapes are OTHER, the queue timeouts REJECTED.
    let reasons =
        |model| ["REJECTED", "CANCELED", "BACKEND", "OTHER"].map(|reason| scraped.failures(model, reason));
    assert_eq!(reasons("simple"), [0, 0, 0, 2]);
    assert_eq!(reasons("add_one_greedy"), [0, 0, 0, 0]);
    assert_eq!(reasons("add_one_queue"), [2, 0, 0, 0]);

    // Nothing waits now on the models that only ran to completion.
    for model in ["simple", "add_one_greedy"] {
        assert_eq!(scraped.count("nv_inference_pending_request_count", model, "1"), 0);
    }

    // The metrics and the ModelStatistics RPC read the same statistics; for simple this also covers the
    // wrong-shape requests, which the model refuses before they run and which count as failures.
    for model in ["simple", "add_one_greedy", "add_one_queue"] {
        assert_agrees_with_statistics(&scraped, model, &server.statistics(model).await);
    }

    metrics.stop().await;
    server.stop().await;
}

/// The same mistake counts the same whichever protocol carried it: a `simple` request whose INPUT0 holds 3
/// values where its shape [1, 16] holds 16, sent as REST JSON (`data`) and as gRPC raw bytes, raises the
/// model's failure count by one each time, in ModelStatistics and in `nv_inference_request_failure`. REST used
/// to refuse the JSON before it resolved the model, so only the gRPC request counted. Triton's REST front end
/// resolves the model before it reads the body (`HandleInfer` in `http_server.cc` asks
/// `TRITONSERVER_ServerModelTransactionProperties` first), and its JSON reader's refusal of the count is
/// `INTERNAL` there (`ReadDataFromJson`), so 500.
#[tokio::test]
async fn a_bad_request_counts_as_a_failure_over_rest_and_grpc_alike() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST front end");
    let metrics = server.start_metrics().await.expect("metrics endpoint");
    let mut client = server.raw_client().await.expect("client");
    let failures = |stats: ModelStatistics| {
        let inference = stats.inference_stats.expect("inference stats");
        (
            inference.fail.map_or(0, |d| d.count),
            inference.success.map_or(0, |d| d.count),
        )
    };
    assert_eq!(failures(server.statistics("simple").await), (0, 0));

    let row: Vec<i32> = (0..16).collect();
    let body = serde_json::json!({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1, 2, 3]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": row},
    ]});
    let reply = ferry_tests::rest_request(
        http.address,
        "POST",
        "/v2/models/simple/infer",
        body.to_string().as_bytes(),
    )
    .await
    .expect("a REST answer");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("Unable to parse 'data': Shape does not match true shape of 'data' field"),
        "{}",
        reply.text()
    );
    assert_eq!(
        failures(server.statistics("simple").await),
        (1, 0),
        "the REST request counts as a failure"
    );
    assert_eq!(
        scrape(&metrics)
            .await
            .count("nv_inference_request_failure", "simple", "1"),
        1
    );

    let mut request = simple_request(16);
    request.raw_input_contents[0] = [1i32, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let status = client.model_infer(request).await.expect_err("3 values for 16");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert_eq!(
        failures(server.statistics("simple").await),
        (2, 0),
        "the gRPC request counts as a failure"
    );
    let scraped = scrape(&metrics).await;
    assert_eq!(scraped.count("nv_inference_request_failure", "simple", "1"), 2);
    assert_eq!(scraped.count("nv_inference_request_success", "simple", "1"), 0);

    http.stop().await;
    metrics.stop().await;
    server.stop().await;
}

/// A request whose caller stops waiting before the answer is a failure with reason CANCELED, in the metrics
/// and in ModelStatistics, as Triton's scheduler finishes a cancelled request with `FailureReason::CANCELED`
/// (`FinishSkippedRequests` in `dynamic_batch_scheduler.cc`). Here the gRPC deadline passes while the request
/// waits in add_one_queue's queue for rows that never come.
#[tokio::test]
async fn a_request_whose_deadline_passes_counts_as_canceled() {
    let server = TestServer::with_all_models().await.expect("server");
    let metrics = server.start_metrics().await.expect("metrics endpoint");
    let mut client = server.raw_client().await.expect("client");

    let mut request = tonic::Request::new(add_one_request("add_one_queue", 1));
    request.set_timeout(Duration::from_millis(200));
    let status = client
        .model_infer(request)
        .await
        .expect_err("the deadline passes");
    // The server answers DEADLINE_EXCEEDED; tonic's client may give up first and say CANCELLED.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    let started = Instant::now();
    let mut canceled = 0;
    while started.elapsed() < Duration::from_secs(5) {
        canceled = scrape(&metrics).await.failures("add_one_queue", "CANCELED");
        if canceled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(canceled, 1, "the withdrawn request counts once as CANCELED");
    let scraped = scrape(&metrics).await;
    assert_eq!(scraped.failures("add_one_queue", "REJECTED"), 0);
    assert_eq!(scraped.count("nv_inference_exec_count", "add_one_queue", "1"), 0);
    assert_agrees_with_statistics(
        &scraped,
        "add_one_queue",
        &server.statistics("add_one_queue").await,
    );

    metrics.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn other_paths_are_plain_text_not_found() {
    let server = TestServer::start(vec![ferry_tests::example_repository()])
        .await
        .expect("server");
    let metrics = server.start_metrics().await.expect("metrics endpoint");
    for path in ["/", "/v2/health/ready", "/metrics/extra"] {
        let (status, content_type, body) = get(metrics.address, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(content_type.starts_with("text/plain"), "{path}: {content_type}");
        assert!(!body.trim_start().starts_with('{'), "{path}: not JSON: {body}");
        assert!(
            body.contains("/metrics"),
            "{path}: says where metrics are: {body}"
        );
    }
    metrics.stop().await;
    server.stop().await;
}

#[test]
fn the_parser_rejects_malformed_expositions() {
    assert!(parse_sample("x{model=\"a\"} 1").is_ok());
    assert_eq!(
        parse_sample("x{model=\"a\\\"b\\\\c\\nd\",version=\"1\"} 2.5")
            .map(|s| (s.labels["model"].clone(), s.value))
            .ok(),
        Some(("a\"b\\c\nd".to_owned(), 2.5))
    );
    for bad in [
        "x{model=\"a} 1",
        "x{model=a} 1",
        "x 1 2",
        "1x 1",
        "x{model=\"a\"}1",
        "x{model=\"a\",model=\"b\"} 1",
        "x",
    ] {
        assert!(parse_sample(bad).is_err(), "{bad:?} must be rejected");
    }
    let result = std::panic::catch_unwind(|| Exposition::parse("x 1\n"));
    assert!(result.is_err(), "a sample without HELP and TYPE is rejected");
}
