//! What the API returns about a version's drift ([`VersionReport`], serialised as JSON by REST) and the
//! Prometheus series the metrics endpoint adds for it ([`render_metrics`]).

use std::{fmt::Write as _, sync::atomic::Ordering};

use serde::Serialize;

use super::{
    Shared, State,
    baseline::{BaselineSource, FeatureBaseline},
    score::{self, Scores},
    stats::FeatureStats,
};
use crate::{config::DriftSettings, model::ModelVersion};

/// The quantiles a report lists.
const QUANTILES: [(f64, &str); 7] = [
    (0.01, "p01"),
    (0.05, "p05"),
    (0.25, "p25"),
    (0.5, "p50"),
    (0.75, "p75"),
    (0.95, "p95"),
    (0.99, "p99"),
];

/// The drift report of one model version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// The share of requests sampled.
    pub sample_rate: f64,
    /// Sampled requests per window generation.
    pub window: u64,
    /// The thresholds of the alerts.
    pub psi_threshold: f64,
    /// See `psi_threshold`.
    pub ks_threshold: f64,
    /// Requests sampled since the version loaded.
    pub samples: u64,
    /// Samples dropped because the statistics thread was behind.
    pub samples_dropped: u64,
    /// Samples the statistics thread has taken in; the others still wait in its queue.
    pub samples_absorbed: u64,
    /// Warnings logged for a feature crossing a threshold (once per crossing, not per sample).
    pub alerts_raised: u64,
    /// Warnings logged for a feature coming back below its thresholds.
    pub alerts_cleared: u64,
    /// Where the baseline came from; `None` without one.
    pub baseline: Option<BaselineSource>,
    /// Per input of the model.
    pub inputs: Vec<InputReport>,
}

/// One input's part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    /// The input's name.
    pub name: String,
    /// Its wire type.
    pub datatype: &'static str,
    /// Whether it is watched (numeric types only).
    pub tracked: bool,
    /// Per feature seen so far.
    pub features: Vec<FeatureReport>,
}

/// One feature's live statistics, baseline and scores.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureReport {
    /// Its position along the input's last dimension.
    pub feature: usize,
    /// Non-NaN values in the live window.
    pub count: u64,
    /// NaN values in the live window.
    pub nan_count: u64,
    /// Mean, variance, min and max of the live values; `None` without any.
    pub mean: Option<f64>,
    /// See `mean`.
    pub variance: Option<f64>,
    /// See `mean`.
    pub min: Option<f64>,
    /// See `mean`.
    pub max: Option<f64>,
    /// Quantiles of the live values, by name (`p50`), from the sketch.
    pub quantiles: Vec<(&'static str, f64)>,
    /// The baseline's bucket edges and the live counts per bucket, when there is a baseline.
    pub histogram: Option<Histogram>,
    /// The baseline's summary, when there is one for this feature.
    pub baseline: Option<BaselineSummary>,
    /// The scores against the baseline.
    #[serde(flatten)]
    pub scores: Scores,
    /// Whether a score is over its threshold now.
    pub drifting: bool,
}

/// The live values on the baseline's buckets.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    /// Bucket `i` holds values at or below `edges[i]`; the last one values above the last edge.
    pub edges: Vec<f64>,
    /// The baseline's share per bucket.
    pub expected: Vec<f64>,
    /// Live values per bucket.
    pub counts: Vec<u64>,
}

/// A baseline's summary of one feature.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineSummary {
    /// Non-NaN values.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Their variance.
    pub variance: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// The share of NaNs.
    pub nan_ratio: f64,
}

/// Whether `scores` cross a threshold of `settings`.
pub(super) fn over_threshold(scores: &Scores, settings: &DriftSettings) -> bool {
    scores.psi.is_some_and(|psi| psi > settings.psi_threshold)
        || scores.ks.is_some_and(|ks| ks > settings.ks_threshold)
}

/// The report of a monitor's shared state.
pub(super) fn version_report(shared: &Shared, state: &State) -> VersionReport {
    let live = state.window.live();
    let baseline = state.baseline.as_deref();
    let inputs = shared
        .inputs
        .iter()
        .enumerate()
        .map(|(index, plan)| InputReport {
            name: plan.name.clone(),
            datatype: plan.data_type.wire_name(),
            tracked: plan.tracked,
            features: live[index]
                .iter()
                .enumerate()
                .map(|(feature, stats)| {
                    let reference = baseline.and_then(|b| b.feature(index, feature));
                    feature_report(feature, stats, reference, &shared.settings)
                })
                .collect(),
        })
        .collect();
    VersionReport {
        model: shared.model.clone(),
        version: shared.version.to_string(),
        sample_rate: shared.settings.sample_rate,
        window: shared.settings.window,
        psi_threshold: shared.settings.psi_threshold,
        ks_threshold: shared.settings.ks_threshold,
        samples: shared.sampled.load(Ordering::Relaxed),
        samples_dropped: shared.dropped.load(Ordering::Relaxed),
        samples_absorbed: shared.absorbed.load(Ordering::Relaxed),
        alerts_raised: shared.alerts_raised.load(Ordering::Relaxed),
        alerts_cleared: shared.alerts_cleared.load(Ordering::Relaxed),
        baseline: baseline.map(|b| b.source.clone()),
        inputs,
    }
}

fn feature_report(
    feature: usize,
    stats: &FeatureStats,
    baseline: Option<&FeatureBaseline>,
    settings: &DriftSettings,
) -> FeatureReport {
    let moments = &stats.moments;
    let some = |value: f64| (moments.count > 0).then_some(value);
    let scores = score::scores(stats, baseline);
    FeatureReport {
        feature,
        count: moments.count,
        nan_count: stats.nan,
        mean: some(moments.mean),
        variance: some(moments.variance()),
        min: some(moments.min),
        max: some(moments.max),
        quantiles: QUANTILES
            .iter()
            .filter_map(|(q, name)| Some((*name, stats.sketch.quantile(*q)?)))
            .collect(),
        histogram: baseline.map(|b| Histogram {
            edges: b.edges.clone(),
            expected: b.expected.clone(),
            counts: if stats.histogram.is_empty() {
                vec![0; b.expected.len()]
            } else {
                stats.histogram.clone()
            },
        }),
        baseline: baseline.map(|b| BaselineSummary {
            count: b.count,
            mean: b.mean,
            variance: b.variance,
            min: b.min,
            max: b.max,
            nan_ratio: b.nan_ratio,
        }),
        drifting: over_threshold(&scores, settings),
        scores,
    }
}

/// A gauge family: its name, its help text, and how to read it from a feature's scores.
type Gauge = (&'static str, &'static str, fn(&Scores) -> Option<f64>);
/// A counter family: its name, its help text, and how to read it from a version's report.
type Counter = (&'static str, &'static str, fn(&VersionReport) -> u64);

/// Ferry's drift gauges.
const GAUGES: [Gauge; 4] = [
    (
        "ferry_input_drift_psi",
        "Population stability index of an input feature's live values against its baseline",
        |s| s.psi,
    ),
    (
        "ferry_input_drift_ks",
        "Kolmogorov-Smirnov statistic between an input feature's live values and its baseline",
        |s| s.ks,
    ),
    (
        "ferry_input_out_of_range_ratio",
        "Share of an input feature's live values outside its baseline's range",
        |s| s.out_of_range_ratio,
    ),
    (
        "ferry_input_nan_ratio",
        "Share of an input feature's live values that are NaN",
        |s| s.nan_ratio,
    ),
];

/// The drift series of `versions` in the text exposition format: the sample counters per monitored
/// version and a gauge per feature and score that has a value. Every family is declared, even empty.
pub fn render_metrics(versions: &[std::sync::Arc<ModelVersion>]) -> String {
    let escape = crate::metrics::escape_label;
    let reports: Vec<VersionReport> = versions
        .iter()
        .filter_map(|version| version.drift.as_ref().map(|drift| drift.report()))
        .collect();
    let mut out = String::new();
    let labels = |report: &VersionReport| {
        format!(
            "model=\"{}\",version=\"{}\"",
            escape(&report.model),
            report.version
        )
    };
    let counters: [Counter; 2] = [
        (
            "ferry_drift_samples_total",
            "Requests whose inputs were sampled for drift statistics",
            |r| r.samples,
        ),
        (
            "ferry_drift_samples_dropped_total",
            "Sampled requests dropped because the drift statistics thread was behind",
            |r| r.samples_dropped,
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for report in &reports {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(report), read(report));
        }
    }
    for (name, help, read) in GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for report in &reports {
            for input in &report.inputs {
                for feature in &input.features {
                    if let Some(value) = read(&feature.scores) {
                        let _ = writeln!(
                            out,
                            "{name}{{{},input=\"{}\",feature=\"{}\"}} {value}",
                            labels(report),
                            escape(&input.name),
                            feature.feature
                        );
                    }
                }
            }
        }
    }
    out
}
