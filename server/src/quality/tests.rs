//! The accumulator against hand computations, and the monitor's joining in any order, its duplicates,
//! unknown ids and retention limits.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{
    accumulator::{Accumulator, LOG_LOSS_EPSILON, Prediction, Truth, Values, bucket_of},
    *,
};
use crate::config::{QualityMetric, testing::spec_from};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Three rows of three classes: the first and last are right (0.7 for class 0, 0.5 for class 2), the
/// middle one predicts class 1 with 0.6 but class 2 is true (0.3).
const ROWS: [f32; 9] = [0.7, 0.2, 0.1, 0.1, 0.6, 0.3, 0.25, 0.25, 0.5];
const TRUE: [i64; 3] = [0, 2, 2];

#[test]
fn accuracy_and_calibration_match_a_hand_computation() {
    let prediction = Prediction::read(QualityMetric::Accuracy, Values::Floats(ROWS.to_vec()), 3);
    let mut accumulator = Accumulator::new(10);
    accumulator
        .add(&prediction, &Truth::Classes(TRUE.to_vec()))
        .expect("fits");
    assert_eq!(accumulator.rows, 3);
    assert!(close(accumulator.value().expect("scored"), 2.0 / 3.0));
    // Buckets of the predicted class's probability: 0.5 -> 5, 0.6 -> 6, 0.7 -> 7; only the 0.6 was wrong.
    let counts: Vec<u64> = accumulator.buckets.iter().map(|b| b.count).collect();
    assert_eq!(counts, [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]);
    let observed: Vec<u64> = accumulator.buckets.iter().map(|b| b.observed).collect();
    assert_eq!(observed, [0, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
    assert!(close(accumulator.buckets[6].predicted_sum, 0.6f32 as f64));
    // Integer class outputs: one class per row, no calibration.
    let mut classes = Accumulator::new(10);
    classes
        .add(&Prediction::Classes(vec![3, 1]), &Truth::Classes(vec![3, 2]))
        .expect("fits");
    assert!(close(classes.value().expect("scored"), 0.5));
    assert!(classes.buckets.iter().all(|b| b.count == 0));
}

#[test]
fn log_loss_matches_a_hand_computation_with_clipping() {
    let prediction = Prediction::read(QualityMetric::LogLoss, Values::Floats(ROWS.to_vec()), 3);
    let mut accumulator = Accumulator::new(10);
    accumulator
        .add(&prediction, &Truth::Classes(TRUE.to_vec()))
        .expect("fits");
    let expected = -((0.7f32 as f64).ln() + (0.3f32 as f64).ln() + 0.5f64.ln()) / 3.0;
    assert!(close(accumulator.value().expect("scored"), expected));
    // One column: the positive class's probability. 1.0 for a negative row is clipped to 1 - 1e-15, so the
    // row costs -ln(1e-15) (about 34.54), not infinity.
    let binary = Prediction::read(QualityMetric::LogLoss, Values::Floats(vec![0.9, 0.2, 1.0]), 1);
    let mut accumulator = Accumulator::new(10);
    accumulator
        .add(&binary, &Truth::Classes(vec![1, 1, 0]))
        .expect("fits");
    let clipped = -(LOG_LOSS_EPSILON.ln());
    assert!((clipped - 34.538_776_394_910_684).abs() < 1e-6);
    let expected = (-(0.9f32 as f64).ln() - (0.2f32 as f64).ln() + clipped) / 3.0;
    assert!(close(accumulator.value().expect("scored"), expected));
    // Calibration on the positive class: 0.2 (came true) in bucket 2; 0.9 (true) and 1.0 (false) in 9.
    let nine = accumulator.buckets[9];
    assert_eq!((nine.count, nine.observed), (2, 1));
    assert!(close(nine.predicted_sum, 0.9f32 as f64 + 1.0));
    assert_eq!(
        (accumulator.buckets[2].count, accumulator.buckets[2].observed),
        (1, 1)
    );
    // Accuracy on the same rows: 0.9 -> 1 (right), 0.2 -> 0 (wrong), 1.0 -> 1 (wrong).
    let top = Prediction::read(QualityMetric::Accuracy, Values::Floats(vec![0.9, 0.2, 1.0]), 1);
    let mut accuracy = Accumulator::new(10);
    accuracy.add(&top, &Truth::Classes(vec![1, 1, 0])).expect("fits");
    assert!(close(accuracy.value().expect("scored"), 1.0 / 3.0));
}

#[test]
fn mae_matches_a_hand_computation() {
    let prediction = Prediction::read(QualityMetric::Mae, Values::Floats(vec![1.5, -2.0, 3.0]), 1);
    let mut accumulator = Accumulator::new(10);
    accumulator
        .add(&prediction, &Truth::Values(vec![1.0, 1.0, 3.0]))
        .expect("fits");
    assert!(close(accumulator.value().expect("scored"), 3.5 / 3.0));
    assert!(accumulator.buckets.iter().all(|b| b.count == 0));
}

#[test]
fn a_truth_that_does_not_fit_scores_nothing() {
    let prediction = Prediction::read(QualityMetric::LogLoss, Values::Floats(ROWS.to_vec()), 3);
    let mut accumulator = Accumulator::new(10);
    for (truth, expected) in [
        (Truth::Classes(vec![0, 1]), "2 rows but the prediction has 3"),
        (Truth::Classes(vec![0, 1, 3]), "true class 3 is not a class"),
        (Truth::Values(vec![0.0, 1.0, 2.0]), "gives values"),
    ] {
        let error = accumulator.add(&prediction, &truth).expect_err("refused");
        assert!(error.contains(expected), "{error}");
    }
    let binary = Prediction::read(QualityMetric::Accuracy, Values::Floats(vec![0.9]), 1);
    let error = accumulator
        .add(&binary, &Truth::Classes(vec![2]))
        .expect_err("refused");
    assert!(error.contains("(0 to 1)"), "{error}");
    assert_eq!(accumulator.rows, 0);
    assert_eq!(accumulator.value(), None);
}

#[test]
fn buckets_are_equal_width_and_hold_their_ends() {
    assert_eq!(bucket_of(0.0, 10), 0);
    assert_eq!(bucket_of(0.099, 10), 0);
    assert_eq!(bucket_of(0.1, 10), 1);
    assert_eq!(bucket_of(1.0, 10), 9);
    assert_eq!(bucket_of(f64::NAN, 10), 0);
    assert_eq!(bucket_of(7.0, 4), 3);
}

fn parameter(key: &str, value: &str) -> String {
    format!("parameters {{ key: \"ferry.quality.{key}\" value {{ string_value: \"{value}\" }} }}\n")
}

/// A monitor of accuracy on `m`'s output `y` (four columns), with `extra` parameters.
fn monitor(extra: &[(&str, &str)]) -> Arc<QualityMonitor> {
    let mut text = parameter("metric", "accuracy");
    for (key, value) in extra {
        text += &parameter(key, value);
    }
    let spec = spec_from(&text).expect("valid");
    QualityMonitor::start(&spec, 1, None)
        .expect("started")
        .expect("on")
}

fn item(id: &str, classes: Vec<i64>) -> FeedbackItem {
    FeedbackItem {
        request_id: id.into(),
        truth: PostedTruth::Classes(classes),
    }
}

fn row(class: usize) -> Prediction {
    let mut values = vec![0.1f32; 4];
    values[class] = 0.7;
    Prediction::read(QualityMetric::Accuracy, Values::Floats(values), 4)
}

fn arrive(monitor: &QualityMonitor, id: &str, prediction: Prediction, at: Instant) {
    let shared = &monitor.shared;
    let mut state = shared.lock();
    shared.arrive(&mut state, id.into(), prediction, at);
}

#[test]
fn truths_join_in_any_order_and_duplicates_and_unknown_ids_are_told_apart() {
    let monitor = monitor(&[]);
    let now = Instant::now();
    // "late" gets its truth after its prediction, "early" before.
    arrive(&monitor, "late", row(1), now);
    let statuses = monitor.post(vec![item("late", vec![1]), item("early", vec![2])]);
    assert_eq!(statuses, [ItemStatus::Joined, ItemStatus::Waiting]);
    arrive(&monitor, "early", row(3), now);
    let report = monitor.report();
    assert_eq!(
        (report.rows, report.feedback_joined, report.feedback_waiting),
        (2, 2, 0)
    );
    assert_eq!(report.value, Some(0.5));
    // Again for a joined id, and twice for an unknown one: duplicates; the unknown one waits.
    let statuses = monitor.post(vec![
        item("late", vec![1]),
        item("early", vec![3]),
        item("nobody", vec![0]),
        item("nobody", vec![0]),
    ]);
    assert_eq!(
        statuses,
        [
            ItemStatus::Duplicate,
            ItemStatus::Duplicate,
            ItemStatus::Waiting,
            ItemStatus::Duplicate
        ]
    );
    // A second prediction for a joined id is not kept.
    arrive(&monitor, "late", row(1), now);
    let report = monitor.report();
    assert_eq!(
        (
            report.feedback_duplicate,
            report.predictions_duplicate,
            report.feedback_waiting
        ),
        (3, 1, 1)
    );
    assert_eq!(report.rows, 2);
}

#[test]
fn a_truth_that_does_not_fit_is_refused_and_its_prediction_still_waits() {
    let monitor = monitor(&[]);
    arrive(&monitor, "r", row(0), Instant::now());
    let statuses = monitor.post(vec![
        item("r", vec![0, 1]),
        item("r", vec![7]),
        FeedbackItem {
            request_id: "r".into(),
            truth: PostedTruth::Labels(vec!["cat".into()]),
        },
        FeedbackItem {
            request_id: "r".into(),
            truth: PostedTruth::Values(vec![1.0]),
        },
    ]);
    let reasons: Vec<&str> = statuses.iter().map(ItemStatus::reason).collect();
    assert!(
        reasons[0].contains("1 rows") || reasons[0].contains("2 rows"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("true class 7"), "{reasons:?}");
    assert!(reasons[2].contains("no class labels"), "{reasons:?}");
    assert!(reasons[3].contains("got values"), "{reasons:?}");
    assert_eq!(monitor.post(vec![item("r", vec![0])]), [ItemStatus::Joined]);
    let report = monitor.report();
    assert_eq!(
        (
            report.feedback_rejected,
            report.feedback_joined,
            report.predictions
        ),
        (4, 1, 1)
    );
    assert_eq!(report.value, Some(1.0));
}

#[test]
fn waiting_predictions_and_truths_are_bounded_in_count_and_age() {
    let monitor = monitor(&[
        ("max_pending", "2"),
        ("max_age_seconds", "60"),
        ("feedback_wait_seconds", "10"),
    ]);
    let now = Instant::now();
    let old = now.checked_sub(Duration::from_secs(61)).expect("a minute ago");
    arrive(&monitor, "old", row(0), old);
    arrive(&monitor, "a", row(0), now);
    arrive(&monitor, "b", row(0), now);
    // The count bound dropped "old" to make room; it was also too old.
    let report = monitor.report();
    assert_eq!((report.predictions_waiting, report.predictions_expired), (2, 1));
    // A truth waits at most feedback_wait_seconds for its prediction.
    {
        let shared = &monitor.shared;
        let mut state = shared.lock();
        let long_ago = now.checked_sub(Duration::from_secs(11)).expect("earlier");
        state
            .truths
            .insert("stale".into(), Truth::Classes(vec![0]), 1, long_ago);
    }
    assert_eq!(monitor.post(vec![item("old", vec![0])]), [ItemStatus::Waiting]);
    let report = monitor.report();
    assert_eq!((report.feedback_unmatched, report.feedback_waiting), (1, 1));
    // Expiry by age: a minute on, "a" and "b" are too old too.
    {
        let shared = &monitor.shared;
        let mut state = shared.lock();
        shared.expire(&mut state, now + Duration::from_secs(60));
    }
    let report = monitor.report();
    assert_eq!((report.predictions_expired, report.predictions_waiting), (3, 0));
}

#[test]
fn predictions_recorded_on_the_request_path_are_joined_off_it() {
    let monitor = monitor(&[]);
    let values: Vec<u8> = [0.1f32, 0.2, 0.6, 0.1, 0.5, 0.2, 0.2, 0.1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    monitor.record("two-rows", DataType::Fp32, &[2, 4], Bytes::from(values));
    monitor.record(
        &"x".repeat(MAX_REQUEST_ID_BYTES + 1),
        DataType::Fp32,
        &[1, 4],
        Bytes::new(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(monitor.settled() && monitor.holds("two-rows")) {
        assert!(Instant::now() < deadline, "the monitor's thread took too long");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        monitor.post(vec![item("two-rows", vec![2, 1])]),
        [ItemStatus::Joined]
    );
    let report = monitor.report();
    assert_eq!(
        (report.rows, report.value, report.predictions_dropped),
        (2, Some(0.5), 1)
    );
    let mut id = String::new();
    monitor.ensure_id(&mut id);
    assert_eq!(id.len(), 32);
}

#[test]
fn a_version_loaded_again_keeps_its_monitor_when_it_measures_the_same_way() {
    let first = monitor(&[]);
    first.post(vec![item("waiting", vec![1])]);
    let spec = spec_from(&parameter("metric", "accuracy")).expect("valid");
    let again = QualityMonitor::start(&spec, 1, Some(&first))
        .expect("started")
        .expect("on");
    assert!(Arc::ptr_eq(&first, &again));
    let changed = spec_from(&(parameter("metric", "accuracy") + &parameter("buckets", "5"))).expect("valid");
    let fresh = QualityMonitor::start(&changed, 1, Some(&first))
        .expect("started")
        .expect("on");
    assert!(!Arc::ptr_eq(&first, &fresh));
    assert_eq!(fresh.report().feedback_waiting, 0);
    assert_eq!(first.shared.counters.feedback_joined.load(Ordering::Relaxed), 0);
}
