//! A model instance: an ONNX Runtime session with its buffers (its engine), the thread that runs batches
//! on it while there are any, and the one function that runs a batch and answers its requests.
//!
//! An instance's thread ends after the queue has been empty for the idle time (`--instance-idle-ms`) and
//! the instance parks; the next request that finds no instance awake starts a thread for it again
//! ([`ferry_batching::Scheduler::next_batch_or_park`]). A version loads parked, so a thousand models that
//! get no requests hold no instance thread.

use std::{
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use ferry_batching::{Batch, Scheduler};
use ort::{
    environment::Environment,
    session::{Session, builder::PrepackedWeights},
};

use super::{InferJob, lone::LoneRuns, warmup::Warmup};
use crate::{
    Error,
    config::{InstancePlan, ModelSpec},
    limits::ThreadReservation,
    onnx::{self, BatchRunner, ClassColumns, OpenedSession},
    request::InferRequest,
    stats::VersionStats,
};

/// What one instance runs batches with. Its thread holds it while it runs a batch; while the instance is
/// idle, a request handler may hold it to run a lone request itself ([`super::LONE_RUN_LIMIT`]).
pub(super) struct Engine {
    pub(super) session: Session,
    pub(super) runner: BatchRunner,
}

/// Where an instance's engine is, once its session is open: at load for the first instance of a version,
/// and for the others when a request first needs them ([`Deferred`]).
pub(super) type EngineSlot = Arc<OnceLock<Arc<Mutex<Engine>>>>;

/// What the instances of a version whose sessions open on first use need to open one on their own thread:
/// the same file, plan and shared prepacked weights as the instance opened at load.
pub(super) struct Deferred {
    pub(super) environment: Environment,
    pub(super) model_path: PathBuf,
    pub(super) plan: InstancePlan,
    pub(super) prepacked: PrepackedWeights,
    /// The model file's size: the least an instance's session counts against the memory budget.
    pub(super) file_bytes: u64,
}

/// An instance as its version sees it, running or parked.
pub(super) struct InstanceHandle {
    /// Its name in the scheduler's list of parked instances.
    pub(super) id: usize,
    pub(super) retired: Arc<AtomicBool>,
    pub(super) engine: EngineSlot,
    /// What the instance counts in its version's memory, when its session opened after the load; given
    /// back when it is removed.
    pub(super) opened_later: u64,
    /// The instance's share of the server's thread budget, given back when it is removed.
    pub(super) _threads: ThreadReservation,
}

/// What running a batch needs besides an engine, shared by a version's instances and its request handlers.
pub(super) struct Runs {
    pub(super) spec: Arc<ModelSpec>,
    pub(super) version: u64,
    pub(super) scheduler: Arc<Scheduler<InferJob>>,
    pub(super) stats: Arc<VersionStats>,
    pub(super) lone: Arc<LoneRuns>,
    /// The sequence batcher, for a stateful model: its batches replace the scheduler's.
    pub(super) sequencer: Option<Arc<super::Sequencer>>,
    /// The version's instances.
    pub(super) instances: Mutex<Vec<InstanceHandle>>,
    /// How long an instance's thread waits for a request before it ends; `None`: it never does.
    pub(super) idle_after: Option<Duration>,
    /// Instance threads running now.
    pub(super) awake: AtomicUsize,
    /// Requests every new instance runs before it takes traffic.
    pub(super) warmup: Warmup,
    /// For each output of the spec served from a `ZipMap`, the column of each class.
    pub(super) class_columns: Vec<Option<Arc<ClassColumns>>>,
    /// Set when instances after the first open their sessions on first use.
    pub(super) deferred: OnceLock<Deferred>,
    /// The memory the version counts against the budget.
    pub(super) memory: super::memory::VersionMemory,
}

/// Makes an engine of a freshly opened session: warms it up with the config's `model_warmup` requests (or
/// Ferry's one zero-filled request). Like Triton, warm-up runs on the instance itself, not through the
/// queue, so it neither waits for batching delays nor shows in the statistics.
pub(super) fn make_engine(runs: &Runs, opened: OpenedSession) -> Result<Engine, Error> {
    let mut runner = BatchRunner::for_device(opened.device)?.with_class_columns(runs.class_columns.clone());
    let mut session = opened.session;
    // A stateful model's requests need their sequence's control and state inputs: no warm-up.
    let warmup = if runs.sequencer.is_some() {
        &[][..]
    } else {
        &runs.warmup.requests[..]
    };
    'warmup: for (request, count) in warmup {
        for _ in 0..*count {
            let started = Instant::now();
            match runner.run(&mut session, &runs.spec, &[request]) {
                Ok(_) => runs.lone.record(started.elapsed()),
                Err(error) if runs.warmup.required => {
                    return Err(Error::ModelLoad(format!("warm-up failed: {error}")));
                }
                Err(error) => {
                    tracing::info!(model = %runs.spec.name, %error, "Ferry's own zero warm-up request failed; serving without it");
                    break 'warmup;
                }
            }
        }
    }
    Ok(Engine { session, runner })
}

/// One model instance's thread: its engine, and the loop that runs batches on it.
struct Instance {
    id: usize,
    engine: EngineSlot,
    runs: Arc<Runs>,
    retired: Arc<AtomicBool>,
}

impl Instance {
    fn serve(self) {
        let Some(engine) = self.engine() else {
            return;
        };
        if let Some(sequencer) = &self.runs.sequencer {
            while let Some(rows) = sequencer.next(&self.retired) {
                let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
                sequencer.run(&mut engine, rows, &self.runs.stats);
            }
            self.runs.awake.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let park = self.runs.idle_after.map(|after| (self.id, after));
        while let Some(batch) = self.runs.scheduler.next_batch_or_park(&self.retired, park) {
            // Held by a request handler only while it runs a lone request, which is short.
            let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
            run_batch(&mut engine, batch, &self.runs);
        }
        self.runs.awake.fetch_sub(1, Ordering::Relaxed);
    }

    /// The instance's engine, its session opened here first when it loaded without one. When that fails the
    /// instance is removed (the version serves on its others, which include the one opened at load) and the
    /// requests it was started for are handed on.
    fn engine(&self) -> Option<Arc<Mutex<Engine>>> {
        if let Some(engine) = self.engine.get() {
            return Some(Arc::clone(engine));
        }
        let opened = match self.runs.deferred.get() {
            Some(deferred) => {
                let before = super::resident_bytes();
                onnx::open_session(
                    &deferred.environment,
                    &deferred.model_path,
                    &deferred.plan,
                    self.id,
                    Some(&deferred.prepacked),
                )
                .and_then(|opened| make_engine(&self.runs, opened))
                .map(|engine| {
                    let grown = super::resident_bytes().saturating_sub(before);
                    (
                        engine,
                        self.runs.memory.later_instance(grown, deferred.file_bytes),
                    )
                })
            }
            None => Err(Error::Internal(
                "an instance has neither a session nor the means to open one".to_owned(),
            )),
        };
        match opened {
            Ok((engine, bytes)) => {
                self.count_memory(bytes);
                Some(Arc::clone(
                    self.engine.get_or_init(|| Arc::new(Mutex::new(engine))),
                ))
            }
            Err(error) => {
                tracing::error!(model = %self.runs.spec.name, instance = self.id, %error, "cannot open the session of an instance on first use; the version serves on its other instances");
                self.runs
                    .instances
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|handle| handle.id != self.id);
                self.runs.awake.fetch_sub(1, Ordering::Relaxed);
                self.runs.scheduler.wake_for_queued();
                None
            }
        }
    }

    /// Adds what the instance's session took to its version's memory, so that the budget and
    /// `ferry_model_memory_bytes` see it; unless the instance was removed while its session opened (an
    /// `instance_group` that shrank), whose removal gave back nothing. Under the instance list's lock, as
    /// removals are: each instance's figure is added and given back once. A version unloaded or evicted
    /// meanwhile counts it too, but is no longer in the table whose versions the budget sums.
    fn count_memory(&self, bytes: u64) {
        let mut instances = self.runs.instances.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = instances.iter_mut().find(|handle| handle.id == self.id) {
            handle.opened_later = bytes;
            self.runs.memory.add(bytes);
        }
    }
}

/// Starts the thread of instance `id` of `runs`: at load when instances never park, otherwise when the
/// scheduler unparks it for a request.
pub(super) fn start_thread(runs: &Arc<Runs>, id: usize) -> Result<(), Error> {
    let instances = runs.instances.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(handle) = instances.iter().find(|handle| handle.id == id) else {
        drop(instances);
        // Removed (instance_group shrank) while a request was starting it: start another if needed.
        runs.scheduler.wake_for_queued();
        return Ok(());
    };
    let worker = Instance {
        id,
        engine: Arc::clone(&handle.engine),
        runs: Arc::clone(runs),
        retired: Arc::clone(&handle.retired),
    };
    drop(instances);
    runs.awake.fetch_add(1, Ordering::Relaxed);
    thread::Builder::new()
        .name(format!("{}-v{}-{id}", runs.spec.name, runs.version))
        .spawn(move || worker.serve())
        .map(drop)
        .map_err(|error| {
            runs.awake.fetch_sub(1, Ordering::Relaxed);
            Error::ModelLoad(format!("starting an instance thread: {error}"))
        })
}

/// Runs `batch` on `engine` and answers its requests, on an instance's thread or a request handler's.
pub(super) fn run_batch(engine: &mut Engine, mut batch: Batch<InferJob>, runs: &Runs) {
    let spec = &runs.spec;
    let span = tracing::info_span!(target: crate::telemetry::REQUEST_SPANS, "batch", model = %spec.name, rows = batch.rows, requests = batch.items.len());
    for item in &mut batch.items {
        // The wait is over: close the request's queue span and tie the batch to the requests it serves.
        let queue_span = std::mem::replace(&mut item.payload.queue_span, tracing::Span::none());
        span.follows_from(&queue_span);
    }
    let requests: Vec<&InferRequest> = batch.items.iter().map(|item| &item.payload.request).collect();
    let Engine { runner, session } = engine;
    let started = Instant::now();
    let result = tracing::info_span!(target: crate::telemetry::REQUEST_SPANS, parent: &span, "execute")
        .in_scope(|| {
            // A bug that panics while running a batch must cost that batch, not the instance: with the
            // thread gone, every request still queued for a one-instance model would wait forever.
            std::panic::catch_unwind(AssertUnwindSafe(|| runner.run(session, spec, &requests)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(Error::Execution(format!(
                        "the instance panicked while running the batch: {what}"
                    )))
                })
        });
    if requests.len() == 1 && result.is_ok() {
        runs.lone.record(started.elapsed());
    }
    drop(requests);
    let sequence = batch.sequence;
    let rows = batch.rows;
    runs.scheduler.deliver(sequence, || match result {
        Ok((outputs, times)) => {
            let queue_times = batch.items.iter().map(|item| item.queued_for);
            runs.stats.record_batch(rows, queue_times, times);
            for (item, outputs) in batch.items.into_iter().zip(outputs) {
                // The client may have gone while the model ran; nothing waits for the result then.
                let _ = item.payload.reply.send(Ok(outputs));
            }
        }
        Err(error) => {
            tracing::warn!(model = %spec.name, %error, rows, "batch failed");
            for item in batch.items {
                let _ = item.payload.reply.send(Err(error.clone()));
            }
        }
    });
}
