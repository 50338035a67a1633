//! End-to-end tests of the response cache: the real server with a cache (`--cache-config local,size=...`,
//! here `RepositoryOptions::response_cache`), real ONNX Runtime running Triton's `simple` model (OUTPUT0 =
//! INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1), requests over gRPC and REST, ModelStatistics and
//! `GET /metrics`. The pinned Triton behaviour: `DynamicBatchScheduler::Enqueue` and `CacheLookUp` (core
//! `dynamic_batch_scheduler.cc`: a model caches only when its config and the server both enable it, a hit
//! never reaches the model), and `InferenceStatsAggregator::UpdateSuccessCacheHit` / `UpdateSuccessCacheMiss`
//! (core `infer_stats.cc`: a hit is a success without inference or execution, a miss counts lookup and
//! insertion time).

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, ModelStatistics, ModelStatisticsRequest,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use ferry_server::{cache::ResponseCache, repository::RepositoryOptions};
use ferry_tests::{TestServer, example_repository, rest_request, run_pytest, test_repository};
use tempfile::TempDir;

/// Triton's `simple`, one instance, every version served.
const SIMPLE: &str = "platform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n\
    input [ { name: \"INPUT0\", data_type: TYPE_INT32, dims: [ 16 ] },\n\
            { name: \"INPUT1\", data_type: TYPE_INT32, dims: [ 16 ] } ]\n\
    output [ { name: \"OUTPUT0\", data_type: TYPE_INT32, dims: [ 16 ] },\n\
             { name: \"OUTPUT1\", data_type: TYPE_INT32, dims: [ 16 ] } ]\n\
    instance_group [ { count: 1, kind: KIND_CPU } ]\n\
    version_policy: { all { } }\n";

/// A repository of `cached` (versions 1 and 2, `response_cache { enable: true }`), `uncached` (the same
/// model without it), `traced` (as `cached`, for the span test) and `image` (the test repository's
/// densenet_onnx, cached).
fn repository() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let simple = example_repository().join("simple/1/model.onnx");
    let model = |name: &str, config: String, versions: &[u32], file: &Path| {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).expect("model folder");
        std::fs::write(folder.join("config.pbtxt"), config).expect("config");
        for version in versions {
            std::fs::create_dir_all(folder.join(version.to_string())).expect("version folder");
            std::fs::copy(file, folder.join(format!("{version}/model.onnx"))).expect("model file");
        }
    };
    model(
        "cached",
        format!("{SIMPLE}response_cache {{ enable: true }}\n"),
        &[1, 2],
        &simple,
    );
    model("uncached", SIMPLE.to_owned(), &[1], &simple);
    // Used by the span test only, so that no other test's requests show in its spans.
    model(
        "traced",
        format!("{SIMPLE}response_cache {{ enable: true }}\n"),
        &[1],
        &simple,
    );
    let densenet = test_repository().join("densenet_onnx");
    let config = std::fs::read_to_string(densenet.join("config.pbtxt"))
        .expect("densenet config")
        .replace("name: \"densenet_onnx\"", "name: \"image\"");
    model(
        "image",
        format!("{config}\nresponse_cache {{ enable: true }}\n"),
        &[1],
        &densenet.join("1/model.onnx"),
    );
    std::fs::copy(
        densenet.join("densenet_labels.txt"),
        dir.path().join("image/densenet_labels.txt"),
    )
    .expect("labels");
    dir
}

/// A server on [`repository`] with a cache of `bytes` (none when `None`).
async fn server(bytes: Option<usize>) -> (TestServer, TempDir) {
    let dir = repository();
    let options = RepositoryOptions {
        response_cache: bytes.map(|bytes| Arc::new(ResponseCache::new(bytes))),
        ..RepositoryOptions::new(vec![dir.path().to_owned()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server starts");
    (server, dir)
}

fn int32s(values: &[i32]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn input(name: &str, rows: i64) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![rows, 16],
        ..Default::default()
    }
}

/// A request to `model` version `version` of one row with INPUT0 = `a` and INPUT1 = `b`.
fn request(model: &str, version: &str, a: i32, b: i32) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        id: format!("{a}-{b}"),
        inputs: vec![input("INPUT0", 1), input("INPUT1", 1)],
        raw_input_contents: vec![
            int32s(&(0..16).map(|i| a + i).collect::<Vec<_>>()),
            int32s(&[b; 16]),
        ],
        ..Default::default()
    }
}

async fn infer(server: &TestServer, request: ModelInferRequest) -> ModelInferResponse {
    let mut client = server.raw_client().await.expect("client");
    client.model_infer(request).await.expect("inference").into_inner()
}

/// The answer `simple` must give for [`request`]`(a, b)`.
fn expected(a: i32, b: i32) -> Vec<Bytes> {
    let first: Vec<i32> = (0..16).map(|i| a + i).collect();
    vec![
        int32s(&first.iter().map(|x| x + b).collect::<Vec<_>>()),
        int32s(&first.iter().map(|x| x - b).collect::<Vec<_>>()),
    ]
}

async fn statistics(server: &TestServer, model: &str, version: &str) -> ModelStatistics {
    let mut client = server.raw_client().await.expect("client");
    let request = ModelStatisticsRequest {
        name: model.into(),
        version: version.into(),
    };
    let mut stats = client
        .model_statistics(request)
        .await
        .expect("statistics")
        .into_inner()
        .model_stats;
    assert_eq!(stats.len(), 1);
    stats.remove(0)
}

/// (hits, misses, executions, inference count, successes) of a version.
async fn counts(server: &TestServer, model: &str, version: &str) -> (u64, u64, u64, u64, u64) {
    let stats = statistics(server, model, version).await;
    let inference = stats.inference_stats.expect("inference stats");
    let count = |d: Option<ferry_proto::inference::StatisticDuration>| d.map_or(0, |d| d.count);
    (
        count(inference.cache_hit),
        count(inference.cache_miss),
        stats.execution_count,
        stats.inference_count,
        count(inference.success),
    )
}

#[tokio::test]
async fn a_hit_answers_byte_for_byte_without_running_the_model() {
    let (server, _dir) = server(Some(1 << 20)).await;
    let first = infer(&server, request("cached", "1", 1, 100)).await;
    assert_eq!(first.raw_output_contents, expected(1, 100));
    assert_eq!(counts(&server, "cached", "1").await, (0, 1, 1, 1, 1));

    let mut again = request("cached", "1", 1, 100);
    again.id = "second".into();
    let second = infer(&server, again).await;
    assert_eq!(
        second.raw_output_contents, first.raw_output_contents,
        "byte for byte"
    );
    assert_eq!(second.outputs, first.outputs, "names, types and shapes");
    assert_eq!(second.id, "second", "the id is the request's own");
    // UpdateSuccessCacheHit: a success and a hit; no inference, no execution.
    assert_eq!(counts(&server, "cached", "1").await, (1, 1, 1, 1, 2));

    // The same inputs sent in the other order are the same request (Triton sorts inputs before hashing).
    let mut swapped = request("cached", "1", 1, 100);
    swapped.inputs.reverse();
    swapped.raw_input_contents.reverse();
    assert_eq!(
        infer(&server, swapped).await.raw_output_contents,
        expected(1, 100)
    );
    assert_eq!(counts(&server, "cached", "1").await, (2, 1, 1, 1, 3));

    let stats = statistics(&server, "cached", "1").await;
    let inference = stats.inference_stats.expect("inference stats");
    let (hit, miss) = (
        inference.cache_hit.expect("hit"),
        inference.cache_miss.expect("miss"),
    );
    assert!(
        hit.ns > 0 && miss.ns > 0,
        "lookup times are recorded: {hit:?} {miss:?}"
    );
    assert_eq!(
        inference.queue.map(|q| q.count),
        Some(3),
        "the queue counts hits, as in Triton"
    );
    assert_eq!(
        inference.compute_infer.map(|c| c.count),
        Some(1),
        "compute does not"
    );
    server.stop().await;
}

#[tokio::test]
async fn different_requests_never_share_an_answer() {
    let (server, _dir) = server(Some(1 << 20)).await;
    // Pairs chosen so that sums collide ((1, 2) and (2, 1) give the same OUTPUT0) but differences do not.
    let pairs: Vec<(i32, i32)> = (0..6).flat_map(|a| (0..6).map(move |b| (a, b))).collect();
    for round in 0..2 {
        for &(a, b) in &pairs {
            let answer = infer(&server, request("cached", "1", a, b)).await;
            assert_eq!(
                answer.raw_output_contents,
                expected(a, b),
                "({a}, {b}) round {round}"
            );
        }
    }
    let n = pairs.len() as u64;
    assert_eq!(counts(&server, "cached", "1").await, (n, n, n, n, 2 * n));

    // Asking for one output is another request: its answer has that output only.
    let mut one = request("cached", "1", 0, 0);
    one.outputs = vec![InferRequestedOutputTensor {
        name: "OUTPUT1".into(),
        ..Default::default()
    }];
    let answer = infer(&server, one.clone()).await;
    assert_eq!(answer.outputs.len(), 1);
    assert_eq!(answer.outputs[0].name, "OUTPUT1");
    assert_eq!(answer.raw_output_contents, expected(0, 0)[1..]);
    assert_eq!(infer(&server, one).await.raw_output_contents, expected(0, 0)[1..]);
    assert_eq!(
        counts(&server, "cached", "1").await,
        (n + 1, n + 1, n + 1, n + 1, 2 * n + 2)
    );

    // Two rows of the same values: another shape, another request.
    let mut rows = request("cached", "1", 0, 0);
    rows.inputs = vec![input("INPUT0", 2), input("INPUT1", 2)];
    rows.raw_input_contents = rows
        .raw_input_contents
        .iter()
        .map(|row| [row.as_ref(), row.as_ref()].concat().into())
        .collect();
    let answer = infer(&server, rows).await;
    assert_eq!(answer.outputs[0].shape, [2, 16]);
    assert_eq!(counts(&server, "cached", "1").await.1, n + 2, "a miss");
    server.stop().await;
}

#[tokio::test]
async fn versions_and_models_without_the_switch_never_share_or_cache() {
    let (server, _dir) = server(Some(1 << 20)).await;
    infer(&server, request("cached", "1", 5, 6)).await;
    let answer = infer(&server, request("cached", "2", 5, 6)).await;
    assert_eq!(answer.model_version, "2");
    assert_eq!(
        counts(&server, "cached", "2").await,
        (0, 1, 1, 1, 1),
        "version 2 ran"
    );
    infer(&server, request("cached", "2", 5, 6)).await;
    assert_eq!(counts(&server, "cached", "2").await, (1, 1, 1, 1, 2));
    assert_eq!(counts(&server, "cached", "1").await, (0, 1, 1, 1, 1), "untouched");

    for _ in 0..3 {
        assert_eq!(
            infer(&server, request("uncached", "1", 5, 6))
                .await
                .raw_output_contents,
            expected(5, 6)
        );
    }
    assert_eq!(counts(&server, "uncached", "1").await, (0, 0, 3, 3, 3));
    server.stop().await;
}

/// The cache holds the model's outputs, and classes are ranked from them afterwards: a request asking for
/// classes hits the entry of one that did not, and gets classes.
#[tokio::test]
async fn a_request_for_classes_hits_and_gets_classes() {
    let (server, _dir) = server(Some(8 << 20)).await;
    let image = |classes: Option<i64>| ModelInferRequest {
        model_name: "image".into(),
        inputs: vec![InferInputTensor {
            name: "data_0".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3, 224, 224],
            ..Default::default()
        }],
        outputs: classes
            .map(|count| InferRequestedOutputTensor {
                name: "fc6_1".into(),
                parameters: [(
                    "classification".to_owned(),
                    InferParameter {
                        parameter_choice: Some(ParameterChoice::Int64Param(count)),
                    },
                )]
                .into(),
            })
            .into_iter()
            .collect(),
        raw_input_contents: vec![int32s(&vec![0; 3 * 224 * 224])],
        ..Default::default()
    };
    let plain = infer(&server, image(None)).await;
    assert_eq!(plain.outputs[0].datatype, "FP32");
    let ranked = infer(&server, image(Some(3))).await;
    assert_eq!(ranked.outputs[0].datatype, "BYTES");
    assert_eq!(ranked.outputs[0].shape, [1, 3]);
    assert_eq!(counts(&server, "image", "1").await, (1, 1, 1, 1, 2));
    server.stop().await;
}

/// As in Triton, a model that enables the cache on a server without one loads, and runs every request.
#[tokio::test]
async fn without_a_server_cache_the_models_switch_does_nothing() {
    let (server, _dir) = server(None).await;
    for _ in 0..2 {
        infer(&server, request("cached", "1", 1, 2)).await;
    }
    assert_eq!(counts(&server, "cached", "1").await, (0, 0, 2, 2, 2));
    let text = ferry_server::metrics::render_registry(server.registry());
    assert!(!text.contains("nv_cache_num_hits_per_model{"), "{text}");
    assert!(!text.contains("ferry_response_cache_bytes"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn the_least_recently_used_answers_are_evicted_to_stay_within_the_size() {
    // One answer's weight, measured on a roomy cache.
    let (roomy, _dir) = server(Some(1 << 20)).await;
    infer(&roomy, request("cached", "1", 0, 0)).await;
    let cache = |server: &TestServer| {
        let options = server.registry().options();
        options.response_cache.as_ref().expect("a cache").usage()
    };
    let weight = cache(&roomy).bytes;
    assert!(weight > 2 * 16 * 4 * 3, "keys and outputs count: {weight}");
    roomy.stop().await;

    // Room for two answers, not three.
    let (small, _dir) = server(Some(2 * weight + weight / 2)).await;
    for a in 1..=3 {
        infer(&small, request("cached", "1", a, 0)).await;
    }
    let usage = cache(&small);
    assert_eq!((usage.entries, usage.evictions), (2, 1), "{usage:?}");
    assert!(usage.bytes <= usage.capacity);
    assert_eq!(counts(&small, "cached", "1").await.2, 3);
    // 3 is still there; 1, the oldest, was evicted and runs again (evicting 2).
    infer(&small, request("cached", "1", 3, 0)).await;
    assert_eq!(counts(&small, "cached", "1").await.2, 3, "a hit");
    assert_eq!(
        infer(&small, request("cached", "1", 1, 0))
            .await
            .raw_output_contents,
        expected(1, 0)
    );
    assert_eq!(counts(&small, "cached", "1").await, (1, 4, 4, 4, 5));
    small.stop().await;

    // An answer larger than the whole cache is never stored, and every request is a miss.
    let (tiny, _dir) = server(Some(weight - 1)).await;
    for _ in 0..2 {
        infer(&tiny, request("cached", "1", 1, 0)).await;
    }
    assert_eq!(counts(&tiny, "cached", "1").await, (0, 2, 2, 2, 2));
    assert_eq!(cache(&tiny).entries, 0);
    tiny.stop().await;
}

#[tokio::test]
async fn rest_hits_what_grpc_stored_and_the_metrics_count_it() {
    let (server, _dir) = server(Some(1 << 20)).await;
    let http = server.start_http().await.expect("REST");
    let metrics = server.start_metrics().await.expect("metrics");
    infer(&server, request("cached", "1", 3, 4)).await;
    infer(&server, request("uncached", "1", 3, 4)).await;
    let body = format!(
        "{{\"inputs\":[{{\"name\":\"INPUT0\",\"shape\":[1,16],\"datatype\":\"INT32\",\"data\":{:?}}},\
         {{\"name\":\"INPUT1\",\"shape\":[1,16],\"datatype\":\"INT32\",\"data\":{:?}}}]}}",
        (3..19).collect::<Vec<i32>>(),
        [4; 16]
    );
    let reply = rest_request(
        http.address,
        "POST",
        "/v2/models/cached/versions/1/infer",
        body.as_bytes(),
    )
    .await
    .expect("REST inference");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sums: Vec<String> = (7..23).map(|v: i32| v.to_string()).collect();
    assert!(reply.text().contains(&sums.join(",")), "{}", reply.text());
    assert_eq!(
        counts(&server, "cached", "1").await,
        (1, 1, 1, 1, 2),
        "the REST request hit"
    );

    let scraped = rest_request(metrics.address, "GET", "/metrics", b"")
        .await
        .expect("scrape")
        .text();
    let series = |line: &str| scraped.lines().any(|l| l == line);
    for line in [
        "nv_cache_num_hits_per_model{model=\"cached\",version=\"1\"} 1",
        "nv_cache_num_misses_per_model{model=\"cached\",version=\"1\"} 1",
        "nv_cache_num_hits_per_model{model=\"cached\",version=\"2\"} 0",
        "nv_inference_request_success{model=\"cached\",version=\"1\"} 2",
        "nv_inference_count{model=\"cached\",version=\"1\"} 1",
        "nv_inference_exec_count{model=\"cached\",version=\"1\"} 1",
        "ferry_response_cache_entries 1",
        "ferry_response_cache_evictions_total 0",
        "ferry_response_cache_capacity_bytes 1048576",
    ] {
        assert!(series(line), "missing {line:?} in\n{scraped}");
    }
    for family in [
        "nv_cache_hit_duration_per_model",
        "nv_cache_miss_duration_per_model",
    ] {
        assert!(
            scraped.contains(&format!("{family}{{model=\"cached\",version=\"1\"}} ")),
            "{family}"
        );
    }
    // Triton gives cache series only to models that use the cache.
    assert!(
        !scraped.contains("nv_cache_num_hits_per_model{model=\"uncached\""),
        "{scraped}"
    );
    metrics.stop().await;
    http.stop().await;
    server.stop().await;
}

/// Records the model and `hit` field of every `cache` span (docs/observability.md).
#[derive(Clone, Default)]
struct CacheSpans {
    models: Arc<std::sync::Mutex<std::collections::HashMap<tracing::span::Id, String>>>,
    hits: Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

/// A field visitor that keeps the `model` and `hit` fields.
#[derive(Default)]
struct Fields {
    model: Option<String>,
    hit: Option<bool>,
}

impl tracing::field::Visit for Fields {
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "hit" {
            self.hit = Some(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "model" {
            self.model = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CacheSpans {
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attributes.metadata().name() == "cache" {
            let mut fields = Fields::default();
            attributes.record(&mut fields);
            if let Some(model) = fields.model {
                self.models.lock().expect("spans").insert(id.clone(), model);
            }
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        let model = self.models.lock().expect("spans").get(id).cloned();
        if let (Some(model), Some(hit)) = (model, fields.hit) {
            self.hits.lock().expect("spans").push((model, hit));
        }
    }
}

/// The process-wide recorder of cache spans: a subscriber scoped to one thread misses spans when other
/// tests register the same call sites at the same time, so it is installed globally, once.
fn cache_spans() -> &'static CacheSpans {
    static SPANS: std::sync::OnceLock<CacheSpans> = std::sync::OnceLock::new();
    SPANS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let spans = CacheSpans::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
            .expect("no other subscriber in this test binary");
        spans
    })
}

/// A request through the cache has a `cache` span saying whether it hit (and a hit no `infer` span).
#[tokio::test]
async fn the_cache_span_says_whether_the_lookup_hit() {
    let spans = cache_spans();
    let (server, _dir) = server(Some(1 << 20)).await;
    for _ in 0..2 {
        infer(&server, request("traced", "1", 8, 9)).await;
    }
    let traced: Vec<bool> = spans
        .hits
        .lock()
        .expect("spans")
        .iter()
        .filter(|(model, _)| model == "traced")
        .map(|(_, hit)| *hit)
        .collect();
    assert_eq!(traced, [false, true]);
    server.stop().await;
}

/// tritonclient (gRPC and HTTP) sees identical answers and the cache statistics; `tests/python/test_cache.py`.
#[tokio::test]
async fn tritonclient_sees_hits_in_the_statistics() {
    let (server, _dir) = server(Some(1 << 20)).await;
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_cache.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    assert!(status.success(), "pytest failed: {status}");
    http.stop().await;
    server.stop().await;
}
