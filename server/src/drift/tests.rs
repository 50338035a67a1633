//! Tests of the monitor as the request path and the API use it: sampling, the statistics thread, baselines
//! from files and from the live window, and memory that does not grow with traffic.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::config::{ConfigSource, ModelSignature, ModelTensor, complete_config, parse_model_config};

/// The spec of model `m` (FP32 input `x` of rows of 4, batching up to 64, and a BYTES input `s`) with the
/// drift parameters `parameters` (`key: value` pairs).
fn spec(parameters: &[(&str, &str)]) -> ModelSpec {
    let mut text = String::from("max_batch_size: 64\n");
    for (key, value) in parameters {
        text.push_str(&format!(
            "parameters {{ key: \"ferry.drift.{key}\" value {{ string_value: \"{value}\" }} }}\n"
        ));
    }
    let mut config = parse_model_config(&text, "m/config.pbtxt").expect("parses");
    let tensor = |name: &str, data_type| ModelTensor {
        name: name.into(),
        data_type: Some(data_type),
        shape: vec![-1, 4],
        form: Default::default(),
    };
    let signature = ModelSignature {
        inputs: vec![tensor("x", DataType::Fp32), tensor("s", DataType::Bytes)],
        outputs: vec![tensor("y", DataType::Fp32)],
    };
    complete_config(&mut config, Some(&signature), "m/config.pbtxt").expect("completes");
    let source = ConfigSource {
        path: "m/config.pbtxt",
        text: Some(&text),
    };
    ModelSpec::from_config(config, "m", source).expect("valid")
}

fn monitor(parameters: &[(&str, &str)], dir: &std::path::Path) -> DriftMonitor {
    DriftMonitor::start(&spec(parameters), 1, dir)
        .expect("starts")
        .expect("drift is on")
}

/// A request of `rows` rows of 4 FP32 values from `values`, with a string input beside.
fn request(values: &mut impl Iterator<Item = f64>, rows: usize) -> Vec<InputTensor> {
    let data: Vec<u8> = (0..rows * 4)
        .flat_map(|_| (values.next().unwrap_or(0.0) as f32).to_le_bytes())
        .collect();
    vec![
        InputTensor {
            index: 0,
            shape: vec![rows as i64, 4],
            model_shape: vec![rows as i64, 4],
            data: TensorData::Fixed(Bytes::from(data)),
        },
        InputTensor {
            index: 1,
            shape: vec![rows as i64, 4],
            model_shape: vec![rows as i64, 4],
            data: TensorData::Strings(vec![Bytes::from_static(b"a"); rows * 4]),
        },
    ]
}

/// Offers `requests` requests of `rows` rows each, waiting for the statistics thread whenever the queue
/// is nearly full, so that no sample is dropped.
fn feed(monitor: &DriftMonitor, values: &mut impl Iterator<Item = f64>, requests: usize, rows: usize) {
    let shared = &monitor.shared;
    for _ in 0..requests {
        while shared.sampled.load(Ordering::Relaxed) - shared.absorbed.load(Ordering::Relaxed)
            >= SAMPLE_QUEUE as u64 - 1
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        monitor.offer(&request(values, rows));
    }
}

/// Waits until the thread has taken every sample sent, so that the report shows them all.
fn settle(monitor: &DriftMonitor) -> VersionReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    let shared = &monitor.shared;
    while shared.absorbed.load(Ordering::Relaxed) < shared.sampled.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the statistics thread did not catch up"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    monitor.report()
}

/// `n` values of N(mean, 1) by Box-Muller over a fixed linear congruential stream.
pub(super) fn normal(mean: f64, seed: u64) -> impl Iterator<Item = f64> {
    let mut state = seed;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    std::iter::repeat_with(move || {
        let (u, v) = (uniform(), uniform());
        mean + (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    })
}

#[test]
fn drift_off_starts_no_monitor() {
    let dir = tempfile::tempdir().expect("dir");
    assert!(
        DriftMonitor::start(&spec(&[]), 1, dir.path())
            .expect("starts")
            .is_none()
    );
}

#[test]
fn requests_are_sampled_at_the_rate_and_strings_are_skipped() {
    let dir = tempfile::tempdir().expect("dir");
    let monitor = monitor(&[("sample_rate", "0.25")], dir.path());
    let mut values = (0..).map(f64::from);
    feed(&monitor, &mut values, 400, 1);
    let report = settle(&monitor);
    assert_eq!(report.samples, 100);
    assert_eq!(report.samples_dropped, 0);
    let x = &report.inputs[0];
    assert!(x.tracked && x.features.len() == 4);
    assert_eq!(x.features[0].count, 100);
    assert!(!report.inputs[1].tracked && report.inputs[1].features.is_empty());
    assert_eq!(report.baseline, None);
    assert_eq!(x.features[0].scores.psi, None);
}

#[test]
fn a_frozen_live_window_is_the_baseline_shifted_traffic_is_measured_against() {
    let dir = tempfile::tempdir().expect("dir");
    let monitor = monitor(&[("sample_rate", "1"), ("window", "100000")], dir.path());
    let error = monitor.freeze().expect_err("nothing to freeze yet");
    assert!(error.to_string().contains("no sampled input values"), "{error}");
    feed(&monitor, &mut normal(0.0, 1), 500, 8);
    settle(&monitor);
    let frozen = monitor.freeze().expect("freezes");
    assert!(matches!(frozen.baseline, Some(BaselineSource::Live { .. })));
    feed(&monitor, &mut normal(1.5, 2), 2000, 8);
    let report = settle(&monitor);
    let feature = &report.inputs[0].features[2];
    // The live window now holds one part baseline traffic to four parts shifted: well past both thresholds.
    assert!(feature.scores.psi.expect("psi") > 0.5, "{feature:?}");
    assert!(feature.scores.ks.expect("ks") > 0.3, "{feature:?}");
    assert!(feature.drifting);
    let histogram = feature.histogram.as_ref().expect("buckets");
    assert_eq!(histogram.counts.iter().sum::<u64>(), 2000 * 8);
    assert_eq!(monitor.reset_baseline().baseline, None);
}

#[test]
fn a_npy_baseline_from_the_model_folder_scores_traffic_like_it_low() {
    let dir = tempfile::tempdir().expect("dir");
    let values: Vec<u8> = normal(0.0, 7)
        .take(4 * 5000)
        .flat_map(|v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(
        dir.path().join("base.npy"),
        npy::tests::npy("<f4", "(5000, 4)", &values),
    )
    .expect("write");
    // A model with a BYTES input beside: the .npy is the data of its one numeric input.
    let monitor = monitor(&[("sample_rate", "1"), ("baseline", "base.npy")], dir.path());
    feed(&monitor, &mut normal(0.0, 8), 1000, 8);
    let report = settle(&monitor);
    assert!(matches!(report.baseline, Some(BaselineSource::File { .. })));
    for feature in &report.inputs[0].features {
        assert!(feature.scores.psi.expect("psi") < 0.05, "{feature:?}");
        assert!(feature.scores.ks.expect("ks") < 0.05, "{feature:?}");
        assert!(!feature.drifting);
        assert!((feature.baseline.as_ref().expect("baseline").mean).abs() < 0.1);
    }
}

#[test]
fn a_baseline_that_does_not_fit_the_model_fails_the_load_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("wide.npy"),
        npy::tests::npy("<f4", "(1, 3)", &[0; 12]),
    )
    .expect("write");
    std::fs::write(dir.path().join("bad.npy"), b"not numpy").expect("write");
    let cases = [
        ("wide.npy", "has 3 features in its last dimension, expected 4"),
        ("bad.npy", "magic"),
        ("missing.npz", "cannot read it"),
    ];
    for (file, expected) in cases {
        let error = DriftMonitor::start(&spec(&[("sample_rate", "1"), ("baseline", file)]), 1, dir.path())
            .expect_err(file)
            .to_string();
        assert!(error.contains(file) && error.contains(expected), "{error}");
    }
}

#[test]
fn the_state_does_not_grow_with_traffic() {
    let dir = tempfile::tempdir().expect("dir");
    let monitor = monitor(&[("sample_rate", "1"), ("window", "200")], dir.path());
    let mut values = normal(0.0, 3);
    feed(&monitor, &mut values, 2_000, 16);
    settle(&monitor);
    let warm = monitor.retained();
    feed(&monitor, &mut values, 20_000, 16);
    settle(&monitor);
    let after = monitor.retained();
    assert!(
        after <= warm + 64,
        "{warm} values held after warm-up, {after} after ten times more"
    );
    // Two generations of four features, each at most about 3 K values.
    assert!(after <= 2 * 4 * (3 * sketch::K + 40), "{after}");
}

#[test]
fn a_threshold_crossing_is_logged_once_and_its_return_once() {
    let dir = tempfile::tempdir().expect("dir");
    let values: Vec<u8> = normal(0.0, 11)
        .take(4 * 5000)
        .flat_map(|v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(
        dir.path().join("base.npy"),
        npy::tests::npy("<f4", "(5000, 4)", &values),
    )
    .expect("write");
    // Windows of 300 samples of 4 rows: enough values that N(0, 1) stays well under the KS threshold.
    let parameters = [("sample_rate", "1"), ("baseline", "base.npy"), ("window", "300")];
    let monitor = monitor(&parameters, dir.path());
    // Rounds of samples more than a check interval apart: the thresholds are checked after each.
    let rounds = |mean: f64, seed: u64| {
        let mut values = normal(mean, seed);
        for _ in 0..3 {
            feed(&monitor, &mut values, 400, 4);
            settle(&monitor);
            std::thread::sleep(ALERT_CHECK + Duration::from_millis(50));
        }
        feed(&monitor, &mut values, 1, 4);
        settle(&monitor)
    };
    let shifted = rounds(2.0, 12);
    // Four features crossed, each logged once, however many samples came after.
    assert_eq!((shifted.alerts_raised, shifted.alerts_cleared), (4, 0));
    assert!(shifted.inputs[0].features.iter().all(|f| f.drifting));
    let back = rounds(0.0, 13);
    assert_eq!((back.alerts_raised, back.alerts_cleared), (4, 4));
    assert!(back.inputs[0].features.iter().all(|f| !f.drifting));
}

#[test]
fn samples_holding_too_many_bytes_are_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let monitor = monitor(&[("sample_rate", "1")], dir.path());
    let huge = vec![InputTensor {
        index: 0,
        shape: vec![1, 4],
        model_shape: vec![1, 4],
        data: TensorData::Fixed(Bytes::from(vec![0u8; MAX_QUEUED_BYTES + 16])),
    }];
    monitor.offer(&huge);
    let report = settle(&monitor);
    assert_eq!((report.samples, report.samples_dropped), (0, 1));
    assert_eq!(monitor.shared.queued.get(), 0);
    feed(&monitor, &mut normal(0.0, 1), 10, 2);
    let report = settle(&monitor);
    assert_eq!((report.samples, report.samples_dropped), (10, 1));
    assert_eq!(monitor.shared.queued.get(), 0);
}

#[test]
fn the_statistics_thread_ends_with_the_monitor() {
    let dir = tempfile::tempdir().expect("dir");
    let monitor = monitor(&[("sample_rate", "1")], dir.path());
    feed(&monitor, &mut normal(0.0, 1), 10, 2);
    let shared = Arc::downgrade(&monitor.shared);
    drop(monitor);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The thread holds the only other reference: once it has ended, the state is gone.
    while shared.upgrade().is_some() {
        assert!(Instant::now() < deadline, "the drift thread outlived its monitor");
        std::thread::sleep(Duration::from_millis(5));
    }
}
