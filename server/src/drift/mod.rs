//! Input drift monitoring: is the traffic a model version serves still like the data it was made for?
//!
//! When a model's config turns it on (`ferry.drift.sample_rate`, see [`crate::config::DriftSettings`]),
//! each version gets a [`DriftMonitor`]. The request path only decides, with one atomic counter, whether a
//! request is sampled; a sampled request's input payloads (refcounted [`Bytes`], never copied) go into a
//! channel bounded in samples and in bytes ([`SAMPLE_QUEUE`], [`MAX_QUEUED_BYTES`]) with `try_send`, and a
//! full channel drops the sample and counts it. Nothing else happens on the request path, and nothing is
//! allocated for a request that is not sampled.
//!
//! One thread per monitored version (a plain thread, not a tokio worker, ending with the version) takes the
//! samples and updates, per numeric input and per feature (position along the last dimension, up to
//! `ferry.drift.max_features`), the running statistics of `stats` over a rotating window of samples, in
//! constant memory. It compares them with the version's `baseline` (from a `.npy`/`.npz` file, or frozen
//! from the live window through the API) and logs a warning once when a feature's `score`s cross the
//! configured thresholds, and once when they return below. `report` renders the report the API returns and
//! the Prometheus series.
//!
//! [`grpc`] serves the report and the baseline changes as `ferry.drift.v1.DriftService`; REST serves them
//! in [`crate::http`].
//!
//! BYTES (string) inputs are not numbers and are skipped; BOOL counts as 0 and 1, FP16 and BF16 as floats.

mod baseline;
pub mod grpc;
pub(crate) mod npy;
mod report;
mod score;
mod sketch;
mod stats;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use self::{
    baseline::Baseline,
    stats::{FeatureStats, Window},
};
pub use self::{
    baseline::BaselineSource,
    report::{BaselineSummary, FeatureReport, Histogram, InputReport, VersionReport, render_metrics},
};
use crate::{
    DataType, Error,
    config::{DriftSettings, ModelSpec},
    handoff::QueuedBytes,
    request::{InputTensor, TensorData},
    sampling::EvenSampler,
};

/// Sampled requests waiting for the statistics thread; more are dropped (and counted) rather than queued.
pub const SAMPLE_QUEUE: usize = 256;
/// Input bytes the queued samples may hold together (they share the requests' buffers, so this is memory
/// kept alive): a sample that would pass it is dropped and counted.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Bucketed live values a feature needs before its scores can raise an alert.
const MIN_ALERT_VALUES: u64 = 100;
/// How often the statistics thread checks the thresholds.
const ALERT_CHECK: Duration = Duration::from_secs(1);

/// What the monitor knows of one input of the model.
#[derive(Debug, Clone)]
pub struct InputPlan {
    /// The input's name.
    pub name: String,
    /// Its element type.
    pub data_type: DataType,
    /// Whether it is numeric, and so watched.
    pub tracked: bool,
    /// Its feature count (last dimension) when the config fixes it.
    pub features: Option<usize>,
}

/// One sampled request: per input, its position in the spec, its feature count and its payload.
struct Sample(Vec<(usize, usize, Bytes)>);

impl Sample {
    /// The payload bytes it holds.
    fn bytes(&self) -> usize {
        self.0.iter().map(|(_, _, bytes)| bytes.len()).sum()
    }
}

/// The drift monitor of one model version.
pub struct DriftMonitor {
    shared: Arc<Shared>,
    sender: SyncSender<Sample>,
    /// Which of the requests offered are sampled.
    sampler: EvenSampler,
}

impl std::fmt::Debug for DriftMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftMonitor")
            .field("model", &self.shared.model)
            .field("version", &self.shared.version)
            .finish()
    }
}

/// What the request path, the statistics thread and the API share.
struct Shared {
    model: String,
    version: u64,
    settings: DriftSettings,
    inputs: Vec<InputPlan>,
    /// Whether the model batches: its inputs' first dimension is then rows, never features.
    batching: bool,
    /// Samples taken, and samples dropped because the queue was full.
    sampled: AtomicU64,
    dropped: AtomicU64,
    /// Samples the statistics thread has taken in.
    absorbed: AtomicU64,
    /// Payload bytes of the samples in the queue.
    queued: QueuedBytes,
    /// Warnings logged: a feature crossing a threshold, and a feature coming back below.
    alerts_raised: AtomicU64,
    alerts_cleared: AtomicU64,
    state: Mutex<State>,
}

/// The statistics and the baseline, behind one lock held briefly by the statistics thread and the API.
struct State {
    window: Window,
    baseline: Option<Arc<Baseline>>,
    /// The baseline the model's file gives, to return to.
    file_baseline: Option<Arc<Baseline>>,
    /// Per input and feature, whether its scores are over a threshold now.
    alerting: Vec<Vec<bool>>,
    last_check: Instant,
}

impl DriftMonitor {
    /// The monitor of version `version` of the model `spec` describes, whose folder is `model_dir`, with its
    /// file baseline loaded and its statistics thread started; `None` when the config leaves drift off.
    pub fn start(spec: &ModelSpec, version: u64, model_dir: &std::path::Path) -> Result<Option<Self>, Error> {
        let settings = spec.drift.clone();
        if !settings.enabled() {
            return Ok(None);
        }
        let inputs: Vec<InputPlan> = spec
            .inputs
            .iter()
            .map(|tensor| InputPlan {
                name: tensor.name.clone(),
                data_type: tensor.data_type,
                tracked: tensor.data_type != DataType::Bytes,
                features: match tensor.dims.last() {
                    None => Some(1),
                    Some(&last) => usize::try_from(last).ok(),
                },
            })
            .collect();
        let file_baseline = match &settings.baseline {
            Some(name) => Some(Arc::new(Baseline::load(
                model_dir,
                name,
                &inputs,
                settings.max_features,
            )?)),
            None => None,
        };
        let shared = Arc::new(Shared {
            model: spec.name.clone(),
            version,
            batching: spec.max_batch_size > 0,
            sampled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            absorbed: AtomicU64::new(0),
            queued: QueuedBytes::new(MAX_QUEUED_BYTES),
            alerts_raised: AtomicU64::new(0),
            alerts_cleared: AtomicU64::new(0),
            state: Mutex::new(State {
                window: Window::new(settings.window, inputs.len()),
                baseline: file_baseline.clone(),
                file_baseline,
                alerting: vec![Vec::new(); inputs.len()],
                last_check: Instant::now(),
            }),
            settings,
            inputs,
        });
        let (sender, receiver) = mpsc::sync_channel(SAMPLE_QUEUE);
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("drift-{}-v{version}", spec.name))
            .spawn(move || worker.run(receiver))
            .map_err(|error| Error::ModelLoad(format!("starting the drift statistics thread: {error}")))?;
        Ok(Some(DriftMonitor {
            sampler: EvenSampler::new(shared.settings.sample_rate),
            shared,
            sender,
        }))
    }

    /// Called for every parsed request: samples it at the configured rate and hands its numeric inputs to
    /// the statistics thread without waiting. Nothing is allocated unless the request is sampled.
    pub fn offer(&self, inputs: &[InputTensor]) {
        if !self.sampler.take() {
            return;
        }
        let batch_dims = usize::from(self.shared.batching);
        let sample: Vec<(usize, usize, Bytes)> = inputs
            .iter()
            .filter(|input| {
                self.shared
                    .inputs
                    .get(input.index)
                    .is_some_and(|plan| plan.tracked)
            })
            .filter_map(|input| match &input.data {
                TensorData::Fixed(bytes) => {
                    let width = match input.shape.get(batch_dims..) {
                        Some([.., last]) => usize::try_from(*last).unwrap_or(1).max(1),
                        _ => 1,
                    };
                    Some((input.index, width, bytes.clone()))
                }
                TensorData::Strings(_) => None,
            })
            .collect();
        if sample.is_empty() {
            return;
        }
        let sample = Sample(sample);
        let size = sample.bytes();
        if self.shared.queued.try_send(&self.sender, sample, size) {
            self.shared.sampled.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The report of this version: settings, counters, and per input and feature the live statistics, the
    /// baseline and the scores.
    pub fn report(&self) -> VersionReport {
        let state = self.shared.lock();
        report::version_report(&self.shared, &state)
    }

    /// Makes the live window this version's baseline; fails when it holds no value yet.
    pub fn freeze(&self) -> Result<VersionReport, Error> {
        let mut state = self.shared.lock();
        let baseline = Baseline::freeze(&state.window.live()).ok_or_else(|| {
            Error::invalid(format!(
                "model '{}' version {} has no sampled input values to freeze as a drift baseline yet; send \
                 requests first",
                self.shared.model, self.shared.version
            ))
        })?;
        self.shared.replace_baseline(&mut state, Some(Arc::new(baseline)));
        Ok(report::version_report(&self.shared, &state))
    }

    /// Returns to the baseline of the model's file (or to none, without one).
    pub fn reset_baseline(&self) -> VersionReport {
        let mut state = self.shared.lock();
        let file = state.file_baseline.clone();
        self.shared.replace_baseline(&mut state, file);
        report::version_report(&self.shared, &state)
    }

    /// Values held in sketches and histograms now: the monitor's memory, which must not grow with traffic.
    pub fn retained(&self) -> usize {
        self.shared.lock().window.retained()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The statistics thread: ends when the monitor (and so the sender) is dropped with its version. A
    /// sample's values are summarised without the lock, so that a large one never keeps a metrics scrape or
    /// a report waiting; the summary is then merged in under the lock, which is quick.
    fn run(&self, samples: Receiver<Sample>) {
        while let Ok(sample) = samples.recv() {
            let size = sample.bytes();
            let baseline = self.lock().baseline.clone();
            let summaries: Vec<(usize, Vec<FeatureStats>)> = sample
                .0
                .iter()
                .map(|(index, width, bytes)| {
                    let tracked = (*width).min(self.settings.max_features);
                    let mut features = vec![FeatureStats::default(); tracked];
                    for (position, value) in values(self.inputs[*index].data_type, bytes).enumerate() {
                        if let Some(stats) = features.get_mut(position % width) {
                            let reference = baseline
                                .as_ref()
                                .and_then(|b| b.feature(*index, position % width));
                            stats.add(value, reference);
                        }
                    }
                    (*index, features)
                })
                .collect();
            drop(sample);
            self.queued.taken(size);
            let mut state = self.lock();
            let state = &mut *state;
            // A baseline replaced meanwhile has other buckets: the sample's histograms mean nothing there.
            let same_baseline = match (&baseline, &state.baseline) {
                (Some(then), Some(now)) => Arc::ptr_eq(then, now),
                (None, None) => true,
                _ => false,
            };
            for (index, mut features) in summaries {
                if !same_baseline {
                    features.iter_mut().for_each(FeatureStats::clear_buckets);
                }
                state.window.absorb(index, &features);
            }
            state.window.sample_done();
            if state.last_check.elapsed() >= ALERT_CHECK {
                self.check_alerts(state);
            }
            self.absorbed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs a warning for each feature whose scores crossed a threshold, up or down, since the last check.
    fn check_alerts(&self, state: &mut State) {
        state.last_check = Instant::now();
        let Some(baseline) = state.baseline.clone() else {
            return;
        };
        let live = state.window.live();
        for (index, features) in live.iter().enumerate() {
            let alerting = &mut state.alerting[index];
            alerting.resize(features.len(), false);
            for (feature, stats) in features.iter().enumerate() {
                if stats.histogram.iter().sum::<u64>() < MIN_ALERT_VALUES {
                    continue;
                }
                let scores = score::scores(stats, baseline.feature(index, feature));
                let over = report::over_threshold(&scores, &self.settings);
                if over != alerting[feature] {
                    alerting[feature] = over;
                    let (model, version, input) = (&self.model, self.version, &self.inputs[index].name);
                    let (psi, ks) = (scores.psi.unwrap_or(0.0), scores.ks.unwrap_or(0.0));
                    if over {
                        self.alerts_raised.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(model = %model, version, input = %input, feature, psi, ks,
                            psi_threshold = self.settings.psi_threshold, ks_threshold = self.settings.ks_threshold,
                            "input drift: feature {feature} of input '{input}' moved away from its baseline");
                    } else {
                        self.alerts_cleared.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(model = %model, version, input = %input, feature, psi, ks,
                            "input drift: feature {feature} of input '{input}' is back within its thresholds");
                    }
                }
            }
        }
    }

    /// Sets the baseline; the histograms and alerts of the old one no longer mean anything.
    fn replace_baseline(&self, state: &mut State, baseline: Option<Arc<Baseline>>) {
        state.baseline = baseline;
        state.window.clear_buckets();
        state.alerting.iter_mut().for_each(Vec::clear);
    }
}

/// The elements of a fixed-size payload of `data_type` as numbers; nothing for BYTES.
pub(crate) fn values(data_type: DataType, bytes: &Bytes) -> impl Iterator<Item = f64> + '_ {
    let size = data_type.element_size().unwrap_or(usize::MAX);
    bytes.chunks_exact(size).map(move |b| match data_type {
        DataType::Bool => f64::from(u8::from(b[0] != 0)),
        DataType::Uint8 => f64::from(b[0]),
        DataType::Int8 => f64::from(b[0] as i8),
        DataType::Uint16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
        DataType::Int16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
        DataType::Fp16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
        DataType::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        DataType::Uint32 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Int32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Fp32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DataType::Uint64 => u64::from_le_bytes(b.try_into().unwrap_or_default()) as f64,
        DataType::Int64 => i64::from_le_bytes(b.try_into().unwrap_or_default()) as f64,
        DataType::Fp64 => f64::from_le_bytes(b.try_into().unwrap_or_default()),
        DataType::Bytes => f64::NAN,
    })
}

#[cfg(test)]
mod tests;
