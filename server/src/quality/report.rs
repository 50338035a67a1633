//! What the API returns about a version's live quality ([`QualityReport`], serialised as JSON by REST) and
//! the Prometheus series the metrics endpoint adds for it ([`render_metrics`]).

use std::{
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
};

use serde::Serialize;

use super::{Shared, State};
use crate::model::ModelVersion;

/// The live quality of one model version.
#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// `accuracy`, `log_loss` or `mae`.
    pub metric: &'static str,
    /// The output whose values are the prediction.
    pub output: String,
    /// Rows scored (a request of a batch of n rows scores n).
    pub rows: u64,
    /// The metric over every row scored since the version loaded; `None` before any.
    pub value: Option<f64>,
    /// The metric's sum over the rows (rows right, negative log-likelihood or absolute error): with
    /// `rows`, what a time window's value is computed from.
    pub sum: f64,
    /// Predictions kept to wait for their truth.
    pub predictions: u64,
    /// Predictions not kept (queue full, id too long, too many values).
    pub predictions_dropped: u64,
    /// Predictions dropped unjoined: too old, or to make room.
    pub predictions_expired: u64,
    /// Predictions for an id already held or joined.
    pub predictions_duplicate: u64,
    /// Predictions waiting now.
    pub predictions_waiting: u64,
    /// Truths joined and scored.
    pub feedback_joined: u64,
    /// Truths waiting now for their prediction.
    pub feedback_waiting: u64,
    /// Truths for an id already joined or waiting.
    pub feedback_duplicate: u64,
    /// Truths refused.
    pub feedback_rejected: u64,
    /// Truths dropped without their prediction.
    pub feedback_unmatched: u64,
    /// Calibration buckets (classification metrics on probabilities; empty for MAE and for an integer
    /// class output).
    pub calibration: Vec<CalibrationBucket>,
}

/// One calibration bucket: the rows whose probability (of the predicted class, or of the positive class
/// for a single probability column) fell in `[lower, upper)` (the last bucket includes 1).
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationBucket {
    /// Its lower edge.
    pub lower: f64,
    /// Its upper edge.
    pub upper: f64,
    /// Rows in it.
    pub count: u64,
    /// Their mean probability; `None` when empty.
    pub mean_predicted: Option<f64>,
    /// The share of them that came true; `None` when empty.
    pub observed_frequency: Option<f64>,
}

/// The report of the version `shared` monitors, whose waiting entries and sums are `state`.
pub(super) fn version_report(shared: &Shared, state: &State) -> QualityReport {
    let counters = &shared.counters;
    let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let accumulator = &state.accumulator;
    let count = accumulator.buckets.len();
    let calibration = if shared.calibrates {
        accumulator
            .buckets
            .iter()
            .enumerate()
            .map(|(i, bucket)| {
                let mean = |sum: f64| (bucket.count > 0).then(|| sum / bucket.count as f64);
                CalibrationBucket {
                    lower: i as f64 / count as f64,
                    upper: (i + 1) as f64 / count as f64,
                    count: bucket.count,
                    mean_predicted: mean(bucket.predicted_sum),
                    observed_frequency: mean(bucket.observed as f64),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    QualityReport {
        model: shared.model.clone(),
        version: shared.version.to_string(),
        metric: shared.metric.name(),
        output: shared.output.clone(),
        rows: accumulator.rows,
        value: accumulator.value(),
        sum: accumulator.sum,
        predictions: read(&counters.predictions),
        predictions_dropped: read(&counters.predictions_dropped),
        predictions_expired: read(&counters.predictions_expired),
        predictions_duplicate: read(&counters.predictions_duplicate),
        predictions_waiting: state.predictions.len() as u64,
        feedback_joined: read(&counters.feedback_joined),
        feedback_waiting: state.truths.len() as u64,
        feedback_duplicate: read(&counters.feedback_duplicate),
        feedback_rejected: read(&counters.feedback_rejected),
        feedback_unmatched: read(&counters.feedback_unmatched),
        calibration,
    }
}

/// A series of the report: its name, type, help text and how it is read.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&QualityReport) -> f64,
);

const SERIES: [Series; 12] = [
    (
        "ferry_quality_predictions_total",
        "counter",
        "Predictions kept to wait for their true outcome",
        |r| r.predictions as f64,
    ),
    (
        "ferry_quality_predictions_dropped_total",
        "counter",
        "Predictions not kept: queue full, id too long or too many values",
        |r| r.predictions_dropped as f64,
    ),
    (
        "ferry_quality_predictions_expired_total",
        "counter",
        "Predictions dropped without their true outcome: too old, or to make room",
        |r| r.predictions_expired as f64,
    ),
    (
        "ferry_quality_predictions_waiting",
        "gauge",
        "Predictions waiting for their true outcome",
        |r| r.predictions_waiting as f64,
    ),
    (
        "ferry_quality_feedback_joined_total",
        "counter",
        "True outcomes joined with their prediction and scored",
        |r| r.feedback_joined as f64,
    ),
    (
        "ferry_quality_feedback_duplicate_total",
        "counter",
        "True outcomes posted again for a request already joined or waiting",
        |r| r.feedback_duplicate as f64,
    ),
    (
        "ferry_quality_feedback_rejected_total",
        "counter",
        "True outcomes refused: unknown label or class, wrong kind, rows not matching",
        |r| r.feedback_rejected as f64,
    ),
    (
        "ferry_quality_feedback_unmatched_total",
        "counter",
        "True outcomes dropped because their prediction never came",
        |r| r.feedback_unmatched as f64,
    ),
    (
        "ferry_quality_feedback_waiting",
        "gauge",
        "True outcomes waiting for their prediction",
        |r| r.feedback_waiting as f64,
    ),
    ("ferry_quality_rows_total", "counter", "Rows scored", |r| {
        r.rows as f64
    }),
    (
        "ferry_quality_score_total",
        "counter",
        "The metric summed over the rows scored: rows right, negative log-likelihood or absolute error",
        |r| r.sum,
    ),
    (
        "ferry_quality_metric",
        "gauge",
        "The quality metric over every row scored since the version loaded",
        |r| r.value.unwrap_or(f64::NAN),
    ),
];

/// The quality series of `versions` in the text exposition format. Every family is declared, even empty;
/// the metric gauge is written only once a row is scored, the calibration gauges only for non-empty
/// buckets.
pub fn render_metrics(versions: &[Arc<ModelVersion>], out: &mut String) {
    let escape = crate::metrics::escape_label;
    let reports: Vec<QualityReport> = versions
        .iter()
        .filter_map(|version| version.quality.as_ref().map(|quality| quality.report()))
        .collect();
    let labels = |report: &QualityReport| {
        format!(
            "model=\"{}\",version=\"{}\",metric=\"{}\"",
            escape(&report.model),
            report.version,
            report.metric
        )
    };
    for (name, kind, help, read) in SERIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for report in &reports {
            let value = read(report);
            if !value.is_nan() {
                let _ = writeln!(out, "{name}{{{}}} {value}", labels(report));
            }
        }
    }
    type Bucket = (&'static str, &'static str, fn(&CalibrationBucket) -> Option<f64>);
    let buckets: [Bucket; 3] = [
        (
            "ferry_quality_calibration_count",
            "Rows scored whose probability fell in the calibration bucket",
            |b| Some(b.count as f64),
        ),
        (
            "ferry_quality_calibration_predicted_mean",
            "Mean probability of the rows in the calibration bucket",
            |b| b.mean_predicted,
        ),
        (
            "ferry_quality_calibration_observed_frequency",
            "Share of the rows in the calibration bucket that came true",
            |b| b.observed_frequency,
        ),
    ];
    for (name, help, read) in buckets {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for report in &reports {
            for bucket in &report.calibration {
                if bucket.count == 0 {
                    continue;
                }
                if let Some(value) = read(bucket) {
                    let _ = writeln!(
                        out,
                        "{name}{{{},lower=\"{}\",upper=\"{}\"}} {value}",
                        labels(report),
                        bucket.lower,
                        bucket.upper
                    );
                }
            }
        }
    }
}
