//! Prometheus metrics: `GET /metrics` in the text exposition format 0.0.4, on a port of its own as in Triton.
//!
//! Per model version, Ferry exports Triton's families with Triton's names and `model` and `version` labels,
//! so existing Grafana dashboards and alerts work unchanged: request, inference and execution counters, the
//! cumulative `_us` durations and the pending-request gauge. Triton's durations are sums, which give only
//! averages, so Ferry adds real histograms of its own (`ferry_*`): request, queue and model run times, and
//! batch sizes. Versions that monitor input drift add its gauges and counters ([`crate::drift`]). Everything
//! is read from [`VersionStats`] and the drift monitors at scrape time; nothing here runs on the request
//! path.

use std::{fmt::Write as _, future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use ferry_proto::inference::{InferStatistics, ModelStatistics, StatisticDuration};

use crate::{
    repository::Registry,
    stats::{FailureReason, HistogramSnapshot, VersionHistograms, VersionStats},
};

/// The content type of Prometheus' text exposition format, the only format Ferry serves.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One served model version, as the renderer needs it.
#[derive(Debug, Clone, Copy)]
pub struct VersionMetrics<'a> {
    /// The model's name (the `model` label).
    pub model: &'a str,
    /// The version number (the `version` label).
    pub version: u64,
    /// Its statistics.
    pub stats: &'a VersionStats,
    /// Requests waiting in its queue now.
    pub pending: usize,
    /// Whether its answers go through the response cache: only then does it have cache series, as in
    /// Triton, which creates them for models with the cache on.
    pub cache: bool,
}

/// A version's statistics read once, so that every family of a scrape shows the same moment as far as the
/// atomics allow.
struct Sample {
    labels: String,
    stats: ModelStatistics,
    histograms: VersionHistograms,
    failures: [(FailureReason, u64); 4],
    pending: usize,
    cache: bool,
}

/// Reads one figure of a version's statistics.
type Counter = fn(&ModelStatistics) -> u64;

/// Triton's counters: name, help text and how to read the figure. The `_us` families are cumulative
/// microseconds, as in Triton; the duration counters cover successful requests only, as in Triton.
const COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        |s| duration(s, |i| &i.success).count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (a request of batch size N counts N)",
        |s| s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (one per batch)",
        |s| s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds",
        |s| duration(s, |i| &i.success).ns / 1_000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
        |s| duration(s, |i| &i.queue).ns / 1_000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds",
        |s| duration(s, |i| &i.compute_input).ns / 1_000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds",
        |s| duration(s, |i| &i.compute_infer).ns / 1_000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative compute output duration in microseconds",
        |s| duration(s, |i| &i.compute_output).ns / 1_000,
    ),
];

/// Triton's response cache counters, per version that uses the cache (`metric_model_reporter.cc`); the
/// durations are cumulative microseconds: lookups for hits, lookups and insertions for misses.
const CACHE_COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "nv_cache_num_hits_per_model",
        "Number of cache hits per model",
        |s| duration(s, |i| &i.cache_hit).count,
    ),
    (
        "nv_cache_num_misses_per_model",
        "Number of cache misses per model",
        |s| duration(s, |i| &i.cache_miss).count,
    ),
    (
        "nv_cache_hit_duration_per_model",
        "Total cache hit duration per model, in microseconds",
        |s| duration(s, |i| &i.cache_hit).ns / 1_000,
    ),
    (
        "nv_cache_miss_duration_per_model",
        "Total cache miss (insert + lookup) duration per model, in microseconds",
        |s| duration(s, |i| &i.cache_miss).ns / 1_000,
    ),
];

/// The unit a histogram records in, and so how its bounds and sum are written.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// Recorded in nanoseconds, exported in seconds (Prometheus' base unit).
    Nanoseconds,
    /// A plain count, exported as is.
    Count,
}

/// One of Ferry's histogram families.
struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    unit: Unit,
    /// Which of a version's histograms it exports.
    pick: fn(&VersionHistograms) -> &HistogramSnapshot,
}

/// Ferry's histograms.
const HISTOGRAMS: &[HistogramFamily] = &[
    HistogramFamily {
        name: "ferry_request_duration_seconds",
        help: "Time successful inference requests spent in the server, from arrival at the model to the answer",
        unit: Unit::Nanoseconds,
        pick: |h| &h.request_ns,
    },
    HistogramFamily {
        name: "ferry_queue_duration_seconds",
        help: "Time executed requests waited in the model's queue before their batch started",
        unit: Unit::Nanoseconds,
        pick: |h| &h.queue_ns,
    },
    HistogramFamily {
        name: "ferry_compute_infer_duration_seconds",
        help: "Time each model execution (one batch) spent running the model",
        unit: Unit::Nanoseconds,
        pick: |h| &h.compute_infer_ns,
    },
    HistogramFamily {
        name: "ferry_batch_size",
        help: "Rows in each model execution",
        unit: Unit::Count,
        pick: |h| &h.batch_size,
    },
];

/// A duration statistic, zero when absent (it never is in Ferry's snapshots).
fn duration(
    stats: &ModelStatistics,
    pick: impl Fn(&InferStatistics) -> &Option<StatisticDuration>,
) -> StatisticDuration {
    stats
        .inference_stats
        .as_ref()
        .and_then(|inference| *pick(inference))
        .unwrap_or_default()
}

/// The metrics of `versions` in the text exposition format: every family with its `# HELP` and `# TYPE`
/// lines, then one series (or one set of histogram series) per version.
pub fn render(versions: &[VersionMetrics<'_>]) -> String {
    let samples: Vec<Sample> = versions
        .iter()
        .map(|version| Sample {
            labels: format!(
                "model=\"{}\",version=\"{}\"",
                escape_label(version.model),
                version.version
            ),
            stats: version.stats.snapshot(version.model, version.version),
            histograms: version.stats.histograms(),
            failures: version.stats.failures_by_reason(),
            pending: version.pending,
            cache: version.cache,
        })
        .collect();
    let mut out = String::new();
    for (name, help, read) in COUNTERS {
        declare(&mut out, name, help, "counter");
        for sample in &samples {
            let _ = writeln!(out, "{name}{{{}}} {}", sample.labels, read(&sample.stats));
        }
    }
    // Triton's failure counter has one series per reason, all four present from the version's start.
    let name = "nv_inference_request_failure";
    declare(
        &mut out,
        name,
        "Number of failed inference requests, all batch sizes",
        "counter",
    );
    for sample in &samples {
        for (reason, count) in sample.failures {
            let reason = reason.label();
            let _ = writeln!(out, "{name}{{{},reason=\"{reason}\"}} {count}", sample.labels);
        }
    }
    let name = "nv_inference_pending_request_count";
    declare(
        &mut out,
        name,
        "Instantaneous number of pending requests awaiting execution per-model",
        "gauge",
    );
    for sample in &samples {
        let _ = writeln!(out, "{name}{{{}}} {}", sample.labels, sample.pending);
    }
    for (name, help, read) in CACHE_COUNTERS {
        declare(&mut out, name, help, "counter");
        for sample in samples.iter().filter(|sample| sample.cache) {
            let _ = writeln!(out, "{name}{{{}}} {}", sample.labels, read(&sample.stats));
        }
    }
    for family in HISTOGRAMS {
        declare(&mut out, family.name, family.help, "histogram");
        for sample in &samples {
            let snapshot = (family.pick)(&sample.histograms);
            histogram(&mut out, family.name, &sample.labels, family.unit, snapshot);
        }
    }
    out
}

/// The metrics of every ready version in `registry`, with the input drift series of the versions that
/// monitor it ([`crate::drift`]), and of the response cache when the server has one.
pub fn render_registry(registry: &Registry) -> String {
    let versions = registry.ready_versions("", "").unwrap_or_default();
    let cache = registry.options().response_cache.as_ref();
    let metrics: Vec<VersionMetrics<'_>> = versions
        .iter()
        .map(|model| VersionMetrics {
            model: &model.spec.name,
            version: model.version,
            stats: &model.stats,
            pending: model.queued(),
            cache: cache.is_some() && model.spec.response_cache,
        })
        .collect();
    let mut out = render(&metrics);
    out.push_str(&crate::drift::render_metrics(&versions));
    crate::payload::render_metrics(&versions, &mut out);
    crate::quality::render_metrics(&versions, &mut out);
    crate::traffic::render_metrics(registry.traffic(), &mut out);
    registry.render_management_metrics(&mut out);
    if let Some(cache) = cache {
        render_cache_usage(&mut out, cache.usage());
    }
    // NVML answers in microseconds; without a GPU or NVML nothing is asked and no family is written.
    crate::gpu::nvml::render(&mut out, &crate::gpu::nvml::samples());
    out
}

/// Ferry's gauges of the response cache as a whole; Triton has dropped its own (`nv_cache_util` and
/// friends) since its caches became plug-ins, so these carry Ferry's prefix.
fn render_cache_usage(out: &mut String, usage: crate::cache::Usage) {
    let families: [(&str, &str, &str, u64); 4] = [
        (
            "ferry_response_cache_capacity_bytes",
            "The most bytes the response cache may hold (--cache-config local,size=...)",
            "gauge",
            usage.capacity as u64,
        ),
        (
            "ferry_response_cache_bytes",
            "Bytes the response cache holds now: keys, outputs and bookkeeping",
            "gauge",
            usage.bytes as u64,
        ),
        (
            "ferry_response_cache_entries",
            "Answers the response cache holds now",
            "gauge",
            usage.entries as u64,
        ),
        (
            "ferry_response_cache_evictions_total",
            "Answers evicted from the response cache to make room for newer ones",
            "counter",
            usage.evictions,
        ),
    ];
    for (name, help, kind, value) in families {
        declare(out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }
}

pub(crate) fn declare(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a histogram of nanoseconds in seconds, with `labels` (`a="b",c="d"`, or empty) on every series.
pub(crate) fn write_histogram_seconds(
    out: &mut String,
    name: &str,
    labels: &str,
    snapshot: &HistogramSnapshot,
) {
    if labels.is_empty() {
        for (bound, count) in snapshot.bounds.iter().zip(&snapshot.cumulative) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {count}",
                value(Unit::Nanoseconds, *bound)
            );
        }
        let count = snapshot.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", value(Unit::Nanoseconds, snapshot.sum));
        let _ = writeln!(out, "{name}_count {count}");
    } else {
        histogram(out, name, labels, Unit::Nanoseconds, snapshot);
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, unit: Unit, snapshot: &HistogramSnapshot) {
    for (bound, count) in snapshot.bounds.iter().zip(&snapshot.cumulative) {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {count}",
            value(unit, *bound)
        );
    }
    let count = snapshot.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", value(unit, snapshot.sum));
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// A recorded value in the exported unit: seconds are written in Rust's shortest exact decimal form
/// (`0.000025`, `2.5`, `10`), which Prometheus parses as written.
fn value(unit: Unit, recorded: u64) -> String {
    match unit {
        Unit::Nanoseconds => (recorded as f64 / 1e9).to_string(),
        Unit::Count => recorded.to_string(),
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
pub(crate) fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The metrics endpoint: `GET /metrics`, and a plain-text 404 for any other path.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    // Rendering reads atomics and takes two short locks per version; it does not block the runtime.
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render_registry(&registry))
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found: metrics are served at /metrics\n",
    )
}

/// Serves the metrics endpoint on `listener` until `shutdown` completes, its connections admitted and
/// bounded by `gate` like those of the inference ports.
pub async fn serve(
    registry: Arc<Registry>,
    gate: Arc<crate::connection::Gate>,
    listener: impl Into<crate::connection::Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::connection::serve_http(gate, listener, router(registry), shutdown).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{BATCH_SIZE_BOUNDS, BatchTimes, LATENCY_BOUNDS_NS};

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|line| line.starts_with(prefix)).collect()
    }

    fn recorded() -> VersionStats {
        let stats = VersionStats::default();
        let times = BatchTimes {
            input: Duration::from_micros(3),
            infer: Duration::from_micros(40),
            output: Duration::from_micros(5),
        };
        stats.record_batch(3, [Duration::from_micros(100), Duration::from_millis(2)], times);
        stats.record_batch(1, [Duration::from_micros(10)], times);
        stats.record_request(Ok(()), Duration::from_micros(1500));
        stats.record_request(Ok(()), Duration::from_micros(2500));
        stats.record_request(Err(FailureReason::Backend), Duration::from_micros(7));
        stats
    }

    #[test]
    fn counters_carry_tritons_names_labels_and_values() {
        let stats = recorded();
        let text = render(&[VersionMetrics {
            model: "simple",
            version: 1,
            stats: &stats,
            pending: 4,
            cache: false,
        }]);
        let expected = [
            "nv_inference_request_success{model=\"simple\",version=\"1\"} 2",
            "nv_inference_request_failure{model=\"simple\",version=\"1\",reason=\"REJECTED\"} 0",
            "nv_inference_request_failure{model=\"simple\",version=\"1\",reason=\"CANCELED\"} 0",
            "nv_inference_request_failure{model=\"simple\",version=\"1\",reason=\"BACKEND\"} 1",
            "nv_inference_request_failure{model=\"simple\",version=\"1\",reason=\"OTHER\"} 0",
            "nv_inference_count{model=\"simple\",version=\"1\"} 4",
            "nv_inference_exec_count{model=\"simple\",version=\"1\"} 2",
            "nv_inference_request_duration_us{model=\"simple\",version=\"1\"} 4000",
            "nv_inference_queue_duration_us{model=\"simple\",version=\"1\"} 2110",
            // Compute time counts once per request of the batch, as in Triton: 3 requests.
            "nv_inference_compute_input_duration_us{model=\"simple\",version=\"1\"} 9",
            "nv_inference_compute_infer_duration_us{model=\"simple\",version=\"1\"} 120",
            "nv_inference_compute_output_duration_us{model=\"simple\",version=\"1\"} 15",
            "nv_inference_pending_request_count{model=\"simple\",version=\"1\"} 4",
        ];
        for line in expected {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let stats = recorded();
        let text = render(&[VersionMetrics {
            model: "m",
            version: 2,
            stats: &stats,
            pending: 0,
            cache: false,
        }]);
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut helped = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert_eq!(
                    helped.last().map(String::as_str),
                    Some(name),
                    "HELP right before TYPE"
                );
                declared.push((name.to_owned(), kind.to_owned()));
            } else {
                let series = line.split(['{', ' ']).next().unwrap_or_default();
                let (family, kind) = declared.last().expect("a sample after a TYPE line");
                let base = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| series.strip_suffix(suffix))
                        .unwrap_or(series),
                    _ => series,
                };
                assert_eq!(base, family, "{line}");
            }
        }
        assert_eq!(
            declared.len(),
            COUNTERS.len() + 2 + CACHE_COUNTERS.len() + HISTOGRAMS.len()
        );
        assert!(declared.contains(&("ferry_batch_size".to_owned(), "histogram".to_owned())));
        assert!(declared.contains(&("nv_inference_count".to_owned(), "counter".to_owned())));
    }

    #[test]
    fn histograms_are_cumulative_in_seconds_and_end_with_inf() {
        let stats = recorded();
        let text = render(&[VersionMetrics {
            model: "m",
            version: 1,
            stats: &stats,
            pending: 0,
            cache: false,
        }]);
        let queue = lines_of(&text, "ferry_queue_duration_seconds_bucket");
        assert_eq!(queue.len(), LATENCY_BOUNDS_NS.len() + 1);
        assert_eq!(
            queue[0],
            "ferry_queue_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.000025\"} 1"
        );
        assert!(
            queue.contains(&"ferry_queue_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.0001\"} 2")
        );
        assert!(
            queue.contains(&"ferry_queue_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"0.0025\"} 3")
        );
        assert!(
            queue.contains(&"ferry_queue_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"10\"} 3")
        );
        assert_eq!(
            queue.last(),
            Some(&"ferry_queue_duration_seconds_bucket{model=\"m\",version=\"1\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("\nferry_queue_duration_seconds_sum{model=\"m\",version=\"1\"} 0.00211\n"));
        assert!(text.contains("\nferry_queue_duration_seconds_count{model=\"m\",version=\"1\"} 3\n"));
        let batch = lines_of(&text, "ferry_batch_size_bucket");
        assert_eq!(batch.len(), BATCH_SIZE_BOUNDS.len() + 1);
        assert_eq!(
            batch[0],
            "ferry_batch_size_bucket{model=\"m\",version=\"1\",le=\"1\"} 1"
        );
        assert_eq!(
            batch[2],
            "ferry_batch_size_bucket{model=\"m\",version=\"1\",le=\"4\"} 2"
        );
        assert!(text.contains("\nferry_batch_size_sum{model=\"m\",version=\"1\"} 4\n"));
        assert!(text.contains("\nferry_request_duration_seconds_count{model=\"m\",version=\"1\"} 2\n"));
        assert!(
            text.contains("\nferry_compute_infer_duration_seconds_sum{model=\"m\",version=\"1\"} 0.00008\n")
        );
    }

    #[test]
    fn several_versions_share_one_family_header_and_labels_are_escaped() {
        let stats = VersionStats::default();
        let text = render(&[
            VersionMetrics {
                model: "a\"b\\c\nd",
                version: 1,
                stats: &stats,
                pending: 0,
                cache: false,
            },
            VersionMetrics {
                model: "a",
                version: 2,
                stats: &stats,
                pending: 0,
                cache: false,
            },
        ]);
        assert_eq!(lines_of(&text, "# TYPE nv_inference_count ").len(), 1);
        assert!(text.contains("\nnv_inference_count{model=\"a\\\"b\\\\c\\nd\",version=\"1\"} 0\n"));
        assert!(text.contains("\nnv_inference_count{model=\"a\",version=\"2\"} 0\n"));
        assert_eq!(text.lines().filter(|l| l.is_empty()).count(), 0);
    }

    #[test]
    fn cache_series_are_written_for_versions_that_use_the_cache_only() {
        let stats = recorded();
        stats.record_cache_hit(Duration::from_micros(30), Duration::from_micros(50));
        stats.record_cache_miss(Duration::from_micros(70));
        let version = |model, cache| VersionMetrics {
            model,
            version: 1,
            stats: &stats,
            pending: 0,
            cache,
        };
        let text = render(&[version("cached", true), version("plain", false)]);
        for line in [
            "nv_cache_num_hits_per_model{model=\"cached\",version=\"1\"} 1",
            "nv_cache_num_misses_per_model{model=\"cached\",version=\"1\"} 1",
            "nv_cache_hit_duration_per_model{model=\"cached\",version=\"1\"} 30",
            "nv_cache_miss_duration_per_model{model=\"cached\",version=\"1\"} 70",
            // UpdateSuccessCacheHit and UpdateSuccessCacheMiss: the hit is a success, the miss's time is
            // added to the request duration, and neither is an inference or an execution.
            "nv_inference_request_success{model=\"cached\",version=\"1\"} 3",
            "nv_inference_request_duration_us{model=\"cached\",version=\"1\"} 4120",
            "nv_inference_count{model=\"cached\",version=\"1\"} 4",
            "nv_inference_exec_count{model=\"cached\",version=\"1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("nv_cache_num_hits_per_model{model=\"plain\""),
            "{text}"
        );
    }

    #[test]
    fn no_versions_still_declares_every_family() {
        let text = render(&[]);
        assert_eq!(
            lines_of(&text, "# TYPE ").len(),
            COUNTERS.len() + 2 + CACHE_COUNTERS.len() + HISTOGRAMS.len()
        );
        assert!(text.lines().all(|line| line.starts_with('#')));
        assert!(text.ends_with('\n'));
    }
}
