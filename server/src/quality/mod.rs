//! Live quality: predictions joined with the true outcome that clients post later, scored per model
//! version (accuracy, log-loss or mean absolute error, and calibration buckets).
//!
//! A model turns it on in its config (`ferry.quality.metric`, see [`crate::config::QualitySettings`]);
//! each version then gets a [`QualityMonitor`]. Every request of the version gets an id when it has none
//! (the id its response carries, the one payload logging uses), and once it is answered, the request path
//! hands the configured output (a refcount of its bytes, never a copy) and the id to a channel bounded in
//! records and bytes with `try_send`: a full channel drops the prediction and counts it. The monitor's
//! thread reads the prediction and keeps it by id ([`pending`]), bounded in count, values and age.
//!
//! Truths come through the feedback API ([`crate::core::InferenceService::post_feedback`]), in any order:
//! a truth whose prediction is held is joined and scored at once ([`accumulator`]); one whose prediction
//! has not arrived waits for it, bounded the same way, and is joined when it does. Nothing here reads or
//! writes the payload log's files: joining works the same whether payload logging is on, rotating or
//! restarting. A version loaded again with the same quality settings (a config change elsewhere) keeps its
//! monitor, and so its waiting predictions and its running metric.

mod accumulator;
mod feedback;
pub mod grpc;
mod pending;
mod report;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

pub use self::{
    accumulator::LOG_LOSS_EPSILON,
    feedback::{
        FeedbackItem, ItemStatus, MAX_FEEDBACK_ITEMS, MAX_FEEDBACK_ROWS, MAX_LABEL_BYTES,
        MAX_REQUEST_ID_BYTES, PostedTruth,
    },
    report::{CalibrationBucket, QualityReport, render_metrics},
};
use self::{
    accumulator::{Accumulator, Prediction, Truth, Values},
    pending::{Recent, Retained},
};
use crate::{
    DataType, Error,
    config::{ModelSpec, QualityMetric, QualitySettings},
    handoff::QueuedBytes,
};

/// Answered requests waiting for the monitor's thread; more are dropped (and counted) rather than queued.
pub const PREDICTION_QUEUE: usize = 1024;
/// Output bytes the queued predictions may hold together (they share the responses' buffers).
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Values (probabilities, classes, numbers) one version keeps for its waiting predictions, and again for
/// its waiting truths: 16 Mi, at most 128 MiB each. A prediction with more values alone is not kept.
pub const MAX_RETAINED_VALUES: usize = 16 * 1024 * 1024;

/// One answered request on its way to the monitor's thread.
struct Capture {
    id: String,
    data_type: DataType,
    last: usize,
    data: Bytes,
}

/// The live quality of one model version.
pub struct QualityMonitor {
    shared: Arc<Shared>,
    sender: SyncSender<Capture>,
}

impl std::fmt::Debug for QualityMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QualityMonitor")
            .field("model", &self.shared.model)
            .field("version", &self.shared.version)
            .finish()
    }
}

/// The counters the request path, the thread, the API and the metrics share.
#[derive(Default)]
struct Counters {
    /// Predictions kept to wait for their truth.
    predictions: AtomicU64,
    /// Predictions not kept: the queue was full, the id too long, or the values too many.
    predictions_dropped: AtomicU64,
    /// Predictions dropped unjoined: too old, or to make room.
    predictions_expired: AtomicU64,
    /// Predictions for an id already held or joined, not kept.
    predictions_duplicate: AtomicU64,
    /// Truths joined with their prediction and scored.
    feedback_joined: AtomicU64,
    /// Truths for an id already joined or already waiting.
    feedback_duplicate: AtomicU64,
    /// Truths refused: a label or class the output does not have, rows that do not match the prediction.
    feedback_rejected: AtomicU64,
    /// Truths dropped without a prediction: it never came within the wait, or room was needed.
    feedback_unmatched: AtomicU64,
}

/// What the monitor's parts share.
struct Shared {
    model: String,
    version: u64,
    metric: QualityMetric,
    /// Whether rows are probabilities, and so calibrated: a classification metric on a floating-point output.
    calibrates: bool,
    settings: QualitySettings,
    /// The name of the output read.
    output: String,
    /// Its class labels (line of its label file, or its class labels parameter) to their columns.
    labels: HashMap<Vec<u8>, i64>,
    counters: Counters,
    queued: QueuedBytes,
    state: Mutex<State>,
}

/// The waiting predictions and truths and the running sums, behind one lock held briefly.
struct State {
    predictions: Retained<Prediction>,
    truths: Retained<Truth>,
    joined: Recent,
    accumulator: Accumulator,
}

impl QualityMonitor {
    /// The monitor of version `version` of the model `spec` describes: `previous` (the monitor of the same
    /// version as it served until now) when it measures the same way, a fresh one with its thread started
    /// otherwise; `None` when the config leaves quality off.
    pub fn start(
        spec: &ModelSpec,
        version: u64,
        previous: Option<&Arc<QualityMonitor>>,
    ) -> Result<Option<Arc<Self>>, Error> {
        let settings = spec.quality.clone();
        let Some(metric) = settings.metric else {
            return Ok(None);
        };
        let output = &spec.outputs[settings.output];
        let calibrates = metric.classifies()
            && matches!(
                output.data_type,
                DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
            );
        let output = output.name.clone();
        let mut labels = HashMap::new();
        if let Some(file) = spec.labels.of(settings.output) {
            for class in 0..file.len() {
                if let Some(label) = file.get(class) {
                    labels
                        .entry(label.to_vec())
                        .or_insert(i64::try_from(class).unwrap_or(i64::MAX));
                }
            }
        }
        if let Some(previous) = previous {
            let same = &previous.shared;
            if same.settings == settings && same.output == output && same.labels == labels {
                return Ok(Some(Arc::clone(previous)));
            }
        }
        let max_values = MAX_RETAINED_VALUES;
        let shared = Arc::new(Shared {
            model: spec.name.clone(),
            version,
            metric,
            calibrates,
            output,
            labels,
            counters: Counters::default(),
            queued: QueuedBytes::new(MAX_QUEUED_BYTES),
            state: Mutex::new(State {
                predictions: Retained::new(
                    settings.max_pending,
                    max_values,
                    Duration::from_secs(settings.max_age_seconds),
                ),
                truths: Retained::new(
                    settings.max_pending,
                    max_values,
                    Duration::from_secs(settings.feedback_wait_seconds),
                ),
                joined: Recent::new(settings.max_pending),
                accumulator: Accumulator::new(settings.buckets),
            }),
            settings,
        });
        let (sender, receiver) = mpsc::sync_channel(PREDICTION_QUEUE);
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("quality-{}-v{version}", spec.name))
            .spawn(move || worker.run(&receiver))
            .map_err(|error| Error::ModelLoad(format!("starting the quality thread: {error}")))?;
        Ok(Some(Arc::new(QualityMonitor { shared, sender })))
    }

    /// The index, in the spec's outputs, of the output whose values are the prediction.
    pub fn output(&self) -> usize {
        self.shared.settings.output
    }

    /// Gives a request without an id one (32 hex digits, as payload logging does), so that its truth can
    /// be posted for the id its response carries.
    pub fn ensure_id(&self, id: &mut String) {
        if id.is_empty() {
            *id = crate::payload::new_id();
        }
    }

    /// Hands the answered request `id`'s prediction, output `data` of `data_type` and `shape`, to the
    /// monitor's thread without waiting: dropped and counted when the queue is full or holds too many
    /// bytes, or when the id is over [`MAX_REQUEST_ID_BYTES`] (no truth could name it).
    pub fn record(&self, id: &str, data_type: DataType, shape: &[i64], data: Bytes) {
        let counters = &self.shared.counters;
        if id.len() > MAX_REQUEST_ID_BYTES || data_type == DataType::Bytes {
            counters.predictions_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let size = data.len();
        let last = shape.last().map_or(1, |&last| usize::try_from(last).unwrap_or(1));
        let capture = Capture {
            id: id.to_owned(),
            data_type,
            last,
            data,
        };
        if !self.shared.queued.try_send(&self.sender, capture, size) {
            counters.predictions_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a prediction for `id` waits here.
    pub fn holds(&self, id: &str) -> bool {
        self.shared.lock().predictions.contains(id)
    }

    /// Joins each of `items` with its prediction, or keeps it waiting for one; one status per item.
    pub fn post(&self, items: Vec<FeedbackItem>) -> Vec<ItemStatus> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        shared.expire(&mut state, Instant::now());
        items
            .into_iter()
            .map(|item| shared.post_one(&mut state, item))
            .collect()
    }

    /// The report of this version.
    pub fn report(&self) -> QualityReport {
        let mut state = self.shared.lock();
        self.shared.expire(&mut state, Instant::now());
        report::version_report(&self.shared, &state)
    }

    /// Whether every prediction handed over has been taken in by the monitor's thread (for tests).
    pub fn settled(&self) -> bool {
        self.shared.queued.get() == 0
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the predictions and truths that waited too long, counting them.
    fn expire(&self, state: &mut State, now: Instant) {
        let expired = state.predictions.expire(now);
        let unmatched = state.truths.expire(now);
        self.counters
            .predictions_expired
            .fetch_add(expired, Ordering::Relaxed);
        self.counters
            .feedback_unmatched
            .fetch_add(unmatched, Ordering::Relaxed);
    }

    /// The monitor's thread: reads each prediction without the lock, then joins or keeps it under it.
    /// Ends when the monitor (and so the sender) is dropped.
    fn run(&self, captures: &Receiver<Capture>) {
        while let Ok(capture) = captures.recv() {
            let values = match capture.data_type {
                DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => Values::Floats(
                    crate::drift::values(capture.data_type, &capture.data)
                        .map(|v| v as f32)
                        .collect(),
                ),
                _ => Values::Integers(
                    crate::drift::values(capture.data_type, &capture.data)
                        .map(|v| v as i64)
                        .collect(),
                ),
            };
            let prediction = Prediction::read(self.metric, values, capture.last);
            self.queued.taken(capture.data.len());
            drop(capture.data);
            let now = Instant::now();
            let mut state = self.lock();
            self.expire(&mut state, now);
            self.arrive(&mut state, capture.id.into(), prediction, now);
        }
    }

    /// A prediction for `id` arrives: joined with its waiting truth, or kept to wait for one.
    fn arrive(&self, state: &mut State, id: Arc<str>, prediction: Prediction, now: Instant) {
        let counters = &self.counters;
        if state.predictions.contains(&id) || state.joined.contains(&id) {
            counters.predictions_duplicate.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(truth) = state.truths.take(&id) {
            counters.predictions.fetch_add(1, Ordering::Relaxed);
            if let Err(reason) = self.join(state, &id, prediction, &truth, now) {
                tracing::debug!(model = %self.model, version = self.version, id = %id, %reason,
                    "a posted truth does not fit its prediction");
            }
            return;
        }
        self.keep(state, id, prediction, now);
    }

    /// Keeps `prediction` waiting under `id`.
    fn keep(&self, state: &mut State, id: Arc<str>, prediction: Prediction, now: Instant) {
        let size = prediction.size();
        match state.predictions.insert(id, prediction, size, now) {
            Some(dropped) => {
                self.counters.predictions.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .predictions_expired
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            None => {
                self.counters.predictions_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Scores `prediction` against `truth`. A truth that does not fit is counted as rejected and the
    /// prediction kept, so that a corrected truth can still be posted.
    fn join(
        &self,
        state: &mut State,
        id: &Arc<str>,
        prediction: Prediction,
        truth: &Truth,
        now: Instant,
    ) -> Result<(), String> {
        match state.accumulator.add(&prediction, truth) {
            Ok(()) => {
                state.joined.add(Arc::clone(id));
                self.counters.feedback_joined.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(reason) => {
                self.counters.feedback_rejected.fetch_add(1, Ordering::Relaxed);
                // Counted once already when it first arrived.
                self.counters.predictions.fetch_sub(1, Ordering::Relaxed);
                self.keep(state, Arc::clone(id), prediction, now);
                Err(reason)
            }
        }
    }

    /// One posted truth.
    fn post_one(&self, state: &mut State, item: FeedbackItem) -> ItemStatus {
        let counters = &self.counters;
        let truth = match self.truth(item.truth) {
            Ok(truth) => truth,
            Err(reason) => {
                counters.feedback_rejected.fetch_add(1, Ordering::Relaxed);
                return ItemStatus::Invalid(reason);
            }
        };
        let id: Arc<str> = item.request_id.into();
        if state.joined.contains(&id) || state.truths.contains(&id) {
            counters.feedback_duplicate.fetch_add(1, Ordering::Relaxed);
            return ItemStatus::Duplicate;
        }
        let now = Instant::now();
        if let Some(prediction) = state.predictions.take(&id) {
            return match self.join(state, &id, prediction, &truth, now) {
                Ok(()) => ItemStatus::Joined,
                Err(reason) => ItemStatus::Invalid(reason),
            };
        }
        let size = truth.rows();
        match state.truths.insert(id, truth, size, now) {
            Some(dropped) => {
                counters.feedback_unmatched.fetch_add(dropped, Ordering::Relaxed);
                ItemStatus::Waiting
            }
            None => ItemStatus::Invalid("the truth has more values than a version keeps waiting".into()),
        }
    }

    /// A posted truth as the metric scores it: labels become columns of the output.
    fn truth(&self, posted: PostedTruth) -> Result<Truth, String> {
        let classifies = self.metric.classifies();
        match posted {
            PostedTruth::Values(values) if !classifies => Ok(Truth::Values(values)),
            PostedTruth::Classes(classes) if classifies => Ok(Truth::Classes(classes)),
            PostedTruth::Labels(labels) if classifies => {
                if self.labels.is_empty() {
                    return Err(format!(
                        "output '{}' has no class labels (label_filename); give the true classes as column \
                         indices instead",
                        self.output
                    ));
                }
                labels
                    .iter()
                    .map(|label| {
                        self.labels.get(label.as_bytes()).copied().ok_or_else(|| {
                            format!(
                                "'{}' is not a label of output '{}'",
                                label.chars().take(64).collect::<String>(),
                                self.output
                            )
                        })
                    })
                    .collect::<Result<Vec<i64>, String>>()
                    .map(Truth::Classes)
            }
            PostedTruth::Values(_) => Err(format!(
                "the metric {} needs true classes or labels, got values",
                self.metric.name()
            )),
            PostedTruth::Classes(_) | PostedTruth::Labels(_) => {
                Err("the metric mae needs true values, got classes or labels".into())
            }
        }
    }
}

#[cfg(test)]
mod tests;
