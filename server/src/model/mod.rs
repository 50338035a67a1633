//! A loaded model version: its instances, each an ONNX Runtime session run by a thread of its own while
//! requests come (and by none while the model idles), fed batches by one scheduler that follows the
//! model's batching policy. A lone request of a quick model runs on an
//! idle instance's session from its handler's worker instead ([`LONE_RUN_LIMIT`]).

use std::{
    path::Path,
    sync::{
        Arc, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_batching::{Admitted, EnqueueError, Payload, Request, Scheduler, Ticket, TicketState};
use ort::{environment::Environment, session::builder::PrepackedWeights};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::{
    Error,
    config::{InstancePlan, ModelSignature, ModelSpec, RaggedInputs, TensorForm},
    limits::{ThreadBudget, ThreadReservation},
    onnx::{self, OutputTensor},
    request::InferRequest,
    stats::{FailureReason, VersionStats},
};

mod buckets;
mod instance;
mod lone;
mod memory;
mod sequence;
mod threads;
mod warmup;

use instance::{Deferred, InstanceHandle, Runs, make_engine, run_batch, start_thread};
pub use lone::LONE_RUN_LIMIT;
use lone::LoneRuns;
pub(crate) use memory::{file_bytes, resident_bytes};
use sequence::Sequencer;
pub use threads::ThreadCheck;

/// A queued request with the channel its answer goes back on.
struct InferJob {
    request: InferRequest,
    reply: oneshot::Sender<Result<Vec<OutputTensor>, Error>>,
    /// Open while the request waits; closed when an instance takes it, so its length is the queue time.
    queue_span: tracing::Span,
    /// The model's ragged inputs, whose shapes need not agree for requests to share a batch.
    ragged: Option<Arc<RaggedInputs>>,
}

impl Payload for InferJob {
    fn batches_with(&self, other: &Self) -> bool {
        // Inputs are in spec order (see `InferRequest::parse`), so position by position comparison suffices.
        let (mine, theirs) = (&self.request.inputs, &other.request.inputs);
        let ragged = |index| self.ragged.as_ref().is_some_and(|r| r.is_ragged(index));
        mine.len() == theirs.len()
            && mine.iter().zip(theirs).all(|(a, b)| {
                a.index == b.index
                    && (ragged(a.index) || a.shape.get(1..) == b.shape.get(1..))
                    && std::mem::discriminant(&a.data) == std::mem::discriminant(&b.data)
            })
    }
}

/// One served version of a model.
///
/// Dropping it closes the scheduler: requests already queued still run, then the instance threads end and
/// release their sessions.
pub struct ModelVersion {
    /// The model's validated configuration.
    pub spec: Arc<ModelSpec>,
    /// The version number (its folder's name).
    pub version: u64,
    /// Counters for the ModelStatistics RPC.
    pub stats: Arc<VersionStats>,
    /// Input drift statistics, when the config turns them on ([`crate::drift`]).
    pub drift: Option<crate::drift::DriftMonitor>,
    /// The sampled request/response log, when the config turns it on ([`crate::payload`]).
    pub payload_log: Option<crate::payload::PayloadLog>,
    /// Predictions joined with their posted truth, when the config turns live quality on
    /// ([`crate::quality`]); shared with the version's earlier load when that measured the same way.
    pub quality: Option<Arc<crate::quality::QualityMonitor>>,
    /// For an ensemble, the member specs (one per step) its last member check found fitting, so that a
    /// request finding the same members served skips the check (`repository::ensembles::unready_reason`).
    pub fitted_members: arc_swap::ArcSwap<Vec<Arc<ModelSpec>>>,
    scheduler: Arc<Scheduler<InferJob>>,
    /// The id the next instance gets.
    next_instance: AtomicUsize,
    lone: Arc<LoneRuns>,
    runs: Arc<Runs>,
    /// The weights ONNX Runtime repacks for its kernels, one copy for all the version's instances.
    prepacked: PrepackedWeights,
    /// When a request last routed to this version, in milliseconds since [`epoch`].
    last_used: AtomicU64,
    /// How the thread check at load came out, when the version had one ([`threads`]); every instance's
    /// plan follows it ([`Self::plan`]).
    thread_check: Option<ThreadCheck>,
}

impl std::fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelVersion")
            .field("model", &self.spec.name)
            .field("version", &self.version)
            .field("queued", &self.scheduler.queued())
            .field("instances", &self.instance_count())
            .finish()
    }
}

impl Drop for ModelVersion {
    fn drop(&mut self) {
        self.scheduler.close();
        if let Some(sequencer) = &self.runs.sequencer {
            sequencer.close();
        }
    }
}

impl ModelVersion {
    /// The version of an ensemble: no session and no instance of its own; its requests run as requests of
    /// its members (`crate::ensemble::run`), and `stats` count them as the ensemble's.
    pub fn ensemble(spec: Arc<ModelSpec>, version: u64) -> Self {
        Self::without_instances(
            spec,
            version,
            warmup::Warmup::default(),
            Vec::new(),
            None,
            None,
            None,
        )
    }

    /// A version with its scheduler and statistics and no instance yet.
    fn without_instances(
        spec: Arc<ModelSpec>,
        version: u64,
        warmup: warmup::Warmup,
        class_columns: Vec<Option<Arc<onnx::ClassColumns>>>,
        drift: Option<crate::drift::DriftMonitor>,
        sequencer: Option<Sequencer>,
        idle_after: Option<Duration>,
    ) -> Self {
        let scheduler = Arc::new(Scheduler::new(spec.batching.clone()));
        let stats = Arc::new(VersionStats::default());
        let lone = Arc::new(LoneRuns::new(&spec));
        let runs = Arc::new(Runs {
            spec: Arc::clone(&spec),
            version,
            scheduler: Arc::clone(&scheduler),
            stats: Arc::clone(&stats),
            lone: Arc::clone(&lone),
            sequencer: sequencer.map(Arc::new),
            instances: Default::default(),
            idle_after,
            awake: AtomicUsize::new(0),
            warmup,
            class_columns,
            deferred: OnceLock::new(),
            memory: memory::VersionMemory::default(),
        });
        if idle_after.is_some() {
            // Weak: the scheduler lives in `runs`.
            let weak = Arc::downgrade(&runs);
            scheduler.set_unpark(move |id| {
                if let Some(runs) = weak.upgrade()
                    && let Err(error) = start_thread(&runs, id)
                {
                    // The queued requests wait for another instance, or until their timeout.
                    tracing::error!(model = %runs.spec.name, %error, "cannot start a parked instance");
                }
            });
        }
        ModelVersion {
            scheduler,
            stats,
            lone,
            runs,
            next_instance: AtomicUsize::new(0),
            prepacked: PrepackedWeights::new(),
            last_used: AtomicU64::new(since_epoch()),
            thread_check: None,
            drift,
            payload_log: None,
            quality: None,
            fitted_members: arc_swap::ArcSwap::default(),
            spec,
            version,
        }
    }

    /// Opens the first of `spec.instances.count` sessions on `model_path` and checks the file against the
    /// spec. With an `idle_after` time, the instances start parked: each gets a thread when requests need
    /// it, which ends after the instance has idled that long, and on the CPU the instances after the first
    /// open their sessions then too, on their own thread, when concurrent requests first need more than one
    /// instance: a thousand models of two instances each open a thousand sessions at load, not two
    /// thousand. Without `idle_after`, and on GPUs, every session opens now and each instance runs a
    /// thread of its own from now on.
    /// The version logs payloads under `payload_log` when its config asks for it.
    pub fn load(
        environment: &Environment,
        spec: Arc<ModelSpec>,
        version: u64,
        model_path: &Path,
        threads: &Arc<ThreadBudget>,
        idle_after: Option<Duration>,
        payload_log: Option<&crate::payload::PayloadLogOptions>,
    ) -> Result<Self, Error> {
        let reservation = threads
            .reserve(threads::instance_threads(&spec.instances))
            .map_err(Error::TooLarge)?;
        let prepacked = PrepackedWeights::new();
        // A small model opens on 1 intra-op thread, and on the shared pool only when it is not quick there.
        let candidate = threads::Candidate::of(&spec, model_path);
        let first_plan = match candidate {
            Some(_) => threads::Candidate::first_plan(&spec),
            None => spec.instances,
        };
        let mut first = onnx::open_session(environment, model_path, &first_plan, 0, Some(&prepacked))?;
        let signature = onnx::signature(&first.session, model_path)?;
        spec.check_signature(&signature, &model_path.display().to_string())?;
        let thread_check = candidate
            .map(|candidate| candidate.check(environment, &spec, model_path, &prepacked, &mut first))
            .transpose()?;
        let class_columns = spec
            .outputs
            .iter()
            .map(|output| {
                signature
                    .outputs
                    .iter()
                    .find(|t| t.name == output.name)
                    .and_then(|t| match &t.form {
                        TensorForm::ClassProbabilities(labels) => {
                            Some(Arc::new(onnx::ClassColumns::new(labels)))
                        }
                        _ => None,
                    })
            })
            .collect();
        let model_dir = model_path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        let warmup = warmup::requests(&spec, model_dir)?;
        let drift = crate::drift::DriftMonitor::start(&spec, version, model_dir)?;
        let sequencer = Sequencer::new(&spec, spec.instances.count, model_dir)?;
        // A stateful model's requests go to its sequence batcher, which starts no parked instance: its
        // instances keep their threads.
        let idle_after = idle_after.filter(|_| sequencer.is_none());
        let payload_log = crate::payload::PayloadLog::start(&spec, version, payload_log)?;
        // On the CPU (`KIND_CPU`, or `KIND_AUTO` without a GPU ONNX Runtime can use), where a session opens
        // in milliseconds; a GPU session opens at load, as before.
        let defer = idle_after.is_some() && first.device.is_none();
        let mut model =
            Self::without_instances(spec, version, warmup, class_columns, drift, sequencer, idle_after);
        model.payload_log = payload_log;
        model.thread_check = thread_check;
        if defer {
            let _ = model.runs.deferred.set(Deferred {
                environment: environment.clone(),
                model_path: model_path.to_owned(),
                plan: model.plan(model.spec.instances),
                prepacked: prepacked.clone(),
                file_bytes: file_bytes(model_path),
            });
        }
        model.prepacked = prepacked;
        model.start_instance(first, reservation)?;
        model.set_instances(environment, model_path, model.spec.instances, threads)?;
        Ok(model)
    }

    /// Adds or retires instances until `plan.count` run. Retired instances finish the batch they run and stop;
    /// the others keep their sessions, so a config change that only touches `instance_group` reloads nothing.
    pub fn set_instances(
        &self,
        environment: &Environment,
        model_path: &Path,
        plan: InstancePlan,
        threads: &Arc<ThreadBudget>,
    ) -> Result<(), Error> {
        let plan = self.plan(plan);
        let running = self
            .runs
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if plan.count < running {
            let mut instances = self.runs.instances.lock().unwrap_or_else(PoisonError::into_inner);
            for retired in instances.drain(plan.count..) {
                retired.retired.store(true, Ordering::Release);
                self.runs.memory.remove(retired.opened_later);
                self.scheduler.forget_parked(retired.id);
            }
            drop(instances);
            self.scheduler.wake_all();
        }
        for instance in running..plan.count {
            let reservation = threads
                .reserve(threads::instance_threads(&plan))
                .map_err(Error::TooLarge)?;
            if self.runs.deferred.get().is_some() {
                self.add_deferred_instance(reservation);
                continue;
            }
            let session =
                onnx::open_session(environment, model_path, &plan, instance, Some(&self.prepacked))?;
            self.start_instance(session, reservation)?;
        }
        Ok(())
    }

    /// `plan` as this version runs it: with 1 intra-op thread per instance when its thread check chose
    /// that ([`ThreadCheck`]), otherwise as configured. The config (and `ModelConfig`) keeps what was asked.
    fn plan(&self, plan: InstancePlan) -> InstancePlan {
        threads::apply(plan, self.thread_check)
    }

    /// How the thread check at load came out; `None` when the version had none: its config sets thread
    /// parameters, it is not a `KIND_CPU` model or the machine has one core, it is stateful, its model
    /// file is large, or no zero request can be made up for it (BYTES or variable-size inputs).
    pub fn thread_check(&self) -> Option<ThreadCheck> {
        self.thread_check
    }

    /// The intra-op threads of each instance's own pool, or `None` when the instances run on ONNX
    /// Runtime's shared pool: the configured count, the cores shared out between the instances, or 1 when
    /// the thread check chose it.
    pub fn intra_op_threads(&self) -> Option<usize> {
        let plan = self.plan(self.spec.instances);
        (!onnx::shares_threads(&plan)).then(|| onnx::intra_threads(&plan))
    }

    /// Notes that a request routed to this version now: the memory budget evicts the least recently used.
    ///
    /// Every request calls it, from every worker: the time is stored only when its millisecond changed, so
    /// that under load the cache line is read far more often than written instead of bouncing between cores
    /// on each request.
    pub fn touch(&self) {
        let now = since_epoch();
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// When a request last routed to this version (or it loaded), in milliseconds since the process's epoch.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// The memory the version takes, in bytes, as the memory budget counts it: what it took when it loaded,
    /// plus what each of its instances that opened its session since took (measured as the `memory` module
    /// says).
    pub fn memory_bytes(&self) -> u64 {
        self.runs.memory.total()
    }

    /// Records the memory the version took when it loaded; instances that open their sessions later add
    /// theirs on top.
    pub fn set_memory_bytes(&self, bytes: u64) {
        self.runs.memory.set_at_load(bytes);
    }

    /// How many instances run now.
    pub fn instance_count(&self) -> usize {
        self.runs
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Instances whose sessions are open: all of them, or, when sessions open on first use, the first and
    /// those that requests have needed since.
    pub fn opened_instances(&self) -> usize {
        self.runs
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|instance| instance.engine.get().is_some())
            .count()
    }

    /// Instance threads running now: at most the instance count, and none once every instance has idled
    /// for `--instance-idle-ms`.
    pub fn awake_instances(&self) -> usize {
        self.runs.awake.load(Ordering::Relaxed)
    }

    /// Requests waiting in the queue now: the metrics endpoint's pending-request gauge.
    pub fn queued(&self) -> usize {
        self.scheduler.queued()
            + self
                .runs
                .sequencer
                .as_ref()
                .map_or(0, |sequencer| sequencer.queued())
    }

    /// Warms a new session up with the config's `model_warmup` requests (or one zero-filled request) and
    /// starts its thread, or parks it when instances idle without one.
    fn start_instance(&self, opened: onnx::OpenedSession, threads: ThreadReservation) -> Result<(), Error> {
        let engine = make_engine(&self.runs, opened)?;
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let handle = InstanceHandle {
            id,
            retired: Arc::new(AtomicBool::new(false)),
            engine: Arc::new(OnceLock::from(Arc::new(std::sync::Mutex::new(engine)))),
            opened_later: 0,
            _threads: threads,
        };
        self.runs
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle);
        if self.runs.idle_after.is_some() {
            self.scheduler.add_parked(id);
            return Ok(());
        }
        start_thread(&self.runs, id).inspect_err(|_| {
            self.runs
                .instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|handle| handle.id != id);
        })
    }

    /// Adds a parked instance whose session opens on its own thread when a request first starts it
    /// ([`Deferred`]). It is started only after the parked instances whose sessions are open, so that a
    /// lone request never waits for a session to open.
    fn add_deferred_instance(&self, threads: ThreadReservation) {
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        self.runs
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(InstanceHandle {
                id,
                retired: Arc::new(AtomicBool::new(false)),
                engine: Arc::default(),
                opened_later: 0,
                _threads: threads,
            });
        self.scheduler.add_parked_last(id);
    }

    /// Queues a validated request and waits for its outputs.
    ///
    /// The wait ends with a timeout error when the request's queue timeout passes before an instance takes it.
    /// Dropping the returned future (the client went away, or its gRPC deadline passed) withdraws the request:
    /// if no instance has taken it yet, it never runs.
    pub async fn infer(&self, request: InferRequest) -> Result<Vec<OutputTensor>, Error> {
        let started = Instant::now();
        let span = tracing::info_span!(
            target: crate::telemetry::REQUEST_SPANS,
            "infer",
            model = %self.spec.name,
            version = self.version,
            request_id = %request.id,
            rows = request.batch_size
        );
        let outcome = Outcome {
            stats: &self.stats,
            started,
            recorded: false,
        };
        let result = match &self.runs.sequencer {
            Some(sequencer) => sequencer.infer(request).instrument(span).await,
            None => self.pad_queue_and_wait(request).instrument(span).await,
        };
        outcome.record(result.as_ref().map(|_| ()).map_err(Error::failure_reason));
        result
    }

    /// Queues `request` and waits for its outputs, padded to its bucket first and its outputs trimmed back
    /// after, when the model pads to buckets.
    async fn pad_queue_and_wait(&self, request: InferRequest) -> Result<Vec<OutputTensor>, Error> {
        let Some(padding) = self.spec.variable_lengths.buckets.as_deref() else {
            return self.queue_and_wait(request).await;
        };
        let (request, padded) = buckets::pad(request, padding, &self.spec)?;
        let outputs = self.queue_and_wait(request).await?;
        Ok(buckets::trim(outputs, padded, padding, &self.spec))
    }

    async fn queue_and_wait(&self, request: InferRequest) -> Result<Vec<OutputTensor>, Error> {
        let (reply, mut answer) = oneshot::channel();
        let ticket = Ticket::new();
        let batch_request = Request {
            rows: request.batch_size,
            priority: request.priority,
            timeout: request.timeout,
            payload: InferJob {
                request,
                reply,
                queue_span: tracing::info_span!(target: crate::telemetry::REQUEST_SPANS, "queue"),
                ragged: self.spec.variable_lengths.ragged.clone(),
            },
            ticket: ticket.clone(),
        };
        let (_handling, may_run_here) = self.lone.handle();
        let (admitted, alone) = self.submit(batch_request, may_run_here)?;
        let _withdraw_on_drop = WithdrawOnDrop(ticket.clone());
        if alone {
            self.run_here();
        }
        if let Some(reject_at) = admitted.reject_at {
            let timer = tokio::time::sleep_until(reject_at.into());
            tokio::select! {
                result = &mut answer => return self.answer(result, &ticket),
                () = timer => {
                    if ticket.withdraw() || ticket.state() == TicketState::Expired {
                        return Err(self.timed_out());
                    }
                    // Taken just in time: it runs, and its answer is on the way.
                }
            }
        }
        let result = answer.await;
        self.answer(result, &ticket)
    }

    /// Queues a request; true when the caller `may_run_here` ([`LoneRuns::handle`]) and the request found
    /// the queue empty and an instance idle: the caller then must try to run it ([`Self::run_here`]).
    fn submit(&self, request: Request<InferJob>, may_run_here: bool) -> Result<(Admitted, bool), Error> {
        let submitted = if may_run_here {
            self.scheduler.submit_alone(request)
        } else {
            self.scheduler.submit(request).map(|admitted| (admitted, false))
        };
        submitted.map_err(|rejected| self.rejection(rejected.error))
    }

    /// Runs the batch the policy forms now on an idle instance's engine, here on the caller's thread, and
    /// answers it; when no engine is idle or the policy waits, wakes an instance instead.
    fn run_here(&self) {
        let idle = self
            .runs
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|instance| instance.engine.get())
            .find(|engine| engine.try_lock().is_ok())
            .map(Arc::clone);
        if let Some(engine) = idle
            && let Ok(mut engine) = engine.try_lock()
            && let Some(batch) = self.scheduler.take_ready()
        {
            run_batch(&mut engine, batch, &self.runs);
        }
        self.scheduler.wake_for_queued();
    }

    fn answer(
        &self,
        result: Result<Result<Vec<OutputTensor>, Error>, oneshot::error::RecvError>,
        ticket: &Ticket,
    ) -> Result<Vec<OutputTensor>, Error> {
        match result {
            Ok(outputs) => outputs,
            Err(_) if ticket.state() == TicketState::Expired => Err(self.timed_out()),
            Err(_) => Err(Error::Execution(format!(
                "model '{}' version {} stopped before answering",
                self.spec.name, self.version
            ))),
        }
    }

    /// Triton's answer to a request whose queue timeout passed (`DynamicBatchScheduler`), word for word:
    /// clients compare it.
    fn timed_out(&self) -> Error {
        Error::QueueTimeout("Request timeout expired".to_owned())
    }

    fn rejection(&self, error: EnqueueError) -> Error {
        let context = format!("model '{}' version {}", self.spec.name, self.version);
        match error {
            // Triton's text for a full queue, without Ferry's detail: clients compare it.
            EnqueueError::QueueFull { .. } => Error::Overloaded("Exceeds maximum queue size".to_owned()),
            EnqueueError::Closed => Error::VersionNotReady {
                model: self.spec.name.clone(),
                version: self.version,
                reason: error.to_string(),
            },
            EnqueueError::InvalidPriority { .. } | EnqueueError::TooManyRows { .. } => {
                Error::InvalidRequest(format!("{context}: {error}"))
            }
        }
    }
}

/// Records how a request of the model ended, once: as the caller saw it, or as canceled when its future is
/// dropped first (the client went away, or its gRPC deadline passed), as Triton counts a cancelled request
/// as a failure with reason `CANCELED`.
struct Outcome<'a> {
    stats: &'a VersionStats,
    started: Instant,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(mut self, outcome: Result<(), FailureReason>) {
        self.recorded = true;
        self.stats.record_request(outcome, self.started.elapsed());
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.stats
                .record_request(Err(FailureReason::Canceled), self.started.elapsed());
        }
    }
}

/// Withdraws a request that is still queued when its caller stops waiting, whatever the reason.
struct WithdrawOnDrop(Ticket);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        self.0.withdraw();
    }
}

/// The process's clock for [`ModelVersion::last_used`].
fn since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Opens a session only to read the model's signature, for auto-completing a config before the spec exists.
pub fn read_signature(environment: &Environment, model_path: &Path) -> Result<ModelSignature, Error> {
    let plan = InstancePlan {
        session: Default::default(),
        count: 1,
        intra_op_threads: Some(1),
        inter_op_threads: None,
        placement: Default::default(),
        tensorrt: None,
    };
    onnx::open_session(environment, model_path, &plan, 0, None)
        .and_then(|opened| onnx::signature(&opened.session, model_path))
}
