//! The thread trial: which intra-op threads a CPU model whose config sets none runs best on, measured at load.
//!
//! Such a model runs on ONNX Runtime's global pool of one thread per core ([`onnx::shares_threads`]). With
//! intra-op spinning off (Ferry's default), each parallel section of a small model pays for waking a pool
//! thread: measured on mlp_small (64→128→128→16), 1 thread ran a batch of 10 in 39.5 µs and of 32 in 72 µs,
//! 2 threads in 49.3 and 84.6 µs. A large model's sections are long enough for the pool to pay (mlp_big,
//! 1024→2048×3→1024, ran much faster on 2 threads). So at load Ferry times the model's own zero request,
//! batched to `max_batch_size` rows, on the shared pool and on a session with a pool of 1 thread (for which
//! ONNX Runtime starts no thread: the instance's own thread runs every operator), and the version keeps the
//! faster. Only quick models are tried, so that loading a large one costs a few runs at most.

use std::{
    path::Path,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use ort::{environment::Environment, session::builder::PrepackedWeights};

use crate::{
    config::{InstancePlan, ModelSpec},
    onnx::{self, BatchRunner, OpenedSession},
    request::InferRequest,
};

/// A shared-pool run longer than this ends the trial before it starts: the model's parallel sections are
/// long enough that the pool's threads pay for their wake-up, and the trial would cost more load time.
const QUICK_RUN: Duration = Duration::from_millis(2);

/// The most time the timed runs of a trial take, past the warm-up runs.
const TRIAL_TIME: Duration = Duration::from_millis(25);

/// The most timed runs of each side: enough for medians that a few preempted runs do not move (mlp_small's
/// 200 pairs at batch 32 take about 25 ms).
const MAX_PAIRS: usize = 200;

/// Timed runs of each side that a decision needs at least.
const MIN_PAIRS: usize = 3;

/// Untimed runs of each side before the timed ones (buffers, allocators, caches).
const WARM_RUNS: usize = 3;

/// How much faster the 1-thread session must be for the version to keep it: 10%, so that noise between two
/// nearly equal medians keeps ONNX Runtime's default.
const MARGIN: f64 = 0.9;

/// What a version's thread trial measured and chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadTrial {
    /// The rows of each timed run: `max_batch_size` (1 for a model that does not batch), fewer when that
    /// many rows would pass the request memory limit.
    pub rows: usize,
    /// The median run on ONNX Runtime's shared pool.
    pub shared: Duration,
    /// The median run on a session with a pool of 1 intra-op thread.
    pub own: Duration,
    /// Whether the version runs its instances on 1 intra-op thread each (else on the shared pool).
    pub one_thread: bool,
}

/// The decision from two sets of timings of the same runs: the medians, and 1 thread when its median is at
/// least [`MARGIN`] faster. `None` when either side has fewer than [`MIN_PAIRS`] timings.
pub fn decide(rows: usize, shared: &[Duration], own: &[Duration]) -> Option<ThreadTrial> {
    if shared.len() < MIN_PAIRS || own.len() < MIN_PAIRS {
        return None;
    }
    let (shared, own) = (median(shared), median(own));
    Some(ThreadTrial {
        rows,
        shared,
        own,
        one_thread: own.as_secs_f64() <= shared.as_secs_f64() * MARGIN,
    })
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// `plan` as a version whose trial came to `trial` runs it: 1 intra-op thread per instance when the trial
/// chose it and the plan still sets no thread parameter; otherwise unchanged.
pub fn apply(plan: InstancePlan, trial: Option<ThreadTrial>) -> InstancePlan {
    match trial {
        Some(trial) if trial.one_thread && onnx::shares_threads(&plan) => InstancePlan {
            intra_op_threads: Some(1),
            ..plan
        },
        _ => plan,
    }
}

/// What a trial needs besides the session it times: where to open the 1-thread session, and the request.
struct Trial<'a> {
    environment: &'a Environment,
    model_path: &'a Path,
    spec: &'a ModelSpec,
    prepacked: &'a PrepackedWeights,
    /// The zero request of one row and the bytes its inputs take.
    request: &'a InferRequest,
    request_bytes: usize,
}

impl Trial<'_> {
    /// Times `shared` (a session on the shared pool) against a fresh 1-thread session, and returns the
    /// outcome with the 1-thread session when the version should keep it. `None`, logged, when the model
    /// is not quick or a run fails: the version keeps the shared pool.
    fn run(&self, shared: &mut OpenedSession) -> Option<(ThreadTrial, Option<OpenedSession>)> {
        // One trial at a time in the process: versions load in parallel, and two trials timing their runs
        // on the same pool would each measure the other.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let name = &self.spec.name;
        let rows = self.rows();
        let batch = vec![self.request; rows];
        let mut shared_runner = BatchRunner::new().ok()?;
        let timed = |runner: &mut BatchRunner, session: &mut OpenedSession| {
            let started = Instant::now();
            runner
                .run(&mut session.session, self.spec, &batch)
                .map(|_| started.elapsed())
                .inspect_err(|error| {
                    tracing::info!(model = %name, %error, "thread trial: a zero request failed; keeping ONNX Runtime's shared pool");
                })
                .ok()
        };
        // The quickest warm-up run: one the machine preempted does not make a quick model look slow.
        let mut warm = Duration::MAX;
        for _ in 0..WARM_RUNS {
            warm = warm.min(timed(&mut shared_runner, shared)?);
        }
        if warm > QUICK_RUN {
            tracing::info!(model = %name, rows, run_us = warm.as_micros() as u64, "thread trial skipped: the model is not quick; keeping ONNX Runtime's shared pool");
            return None;
        }
        let plan = InstancePlan {
            intra_op_threads: Some(1),
            ..self.spec.instances
        };
        let mut own = onnx::open_session(self.environment, self.model_path, &plan, 0, Some(self.prepacked))
            .inspect_err(|error| tracing::info!(model = %name, %error, "thread trial: cannot open a 1-thread session; keeping ONNX Runtime's shared pool"))
            .ok()?;
        let mut own_runner = BatchRunner::new().ok()?;
        for _ in 0..WARM_RUNS {
            timed(&mut own_runner, &mut own)?;
        }
        let (mut shared_times, mut own_times) = (Vec::new(), Vec::new());
        let started = Instant::now();
        while shared_times.len() < MAX_PAIRS && started.elapsed() < TRIAL_TIME {
            shared_times.push(timed(&mut shared_runner, shared)?);
            own_times.push(timed(&mut own_runner, &mut own)?);
        }
        let trial = decide(rows, &shared_times, &own_times)?;
        tracing::info!(
            model = %name,
            rows,
            shared_us = trial.shared.as_micros() as u64,
            one_thread_us = trial.own.as_micros() as u64,
            runs = shared_times.len(),
            "thread trial: {}",
            if trial.one_thread {
                "each instance runs its operators on 1 intra-op thread of its own"
            } else {
                "instances run on ONNX Runtime's shared pool"
            }
        );
        Some((trial, trial.one_thread.then_some(own)))
    }

    /// The rows of each run: the model's largest batch, bounded by the request memory limit.
    fn rows(&self) -> usize {
        let most = self.spec.max_request_bytes / self.request_bytes.max(1);
        self.spec.max_batch_size.min(most).max(1)
    }
}

/// The threads one instance of `plan` may run: its own and, unless it shares ONNX Runtime's global pool
/// ([`onnx::shares_threads`]), the threads of its intra-op pool (the configured count, or the share of the
/// cores `open_session` gives it, less one: the pool counts the thread that runs the session, and ONNX
/// Runtime starts the others; none for 1) and inter-op threads when configured.
pub(super) fn instance_threads(plan: &InstancePlan) -> usize {
    if onnx::shares_threads(plan) {
        return 1;
    }
    1 + onnx::intra_threads(plan).saturating_sub(1) + plan.inter_op_threads.unwrap_or(0)
}

/// Runs the thread trial on `first`, the version's first session, on the shared pool, when the machine
/// has more than one core and a zero request of fixed size can be made up for the model; replaces `first`
/// with the trial's 1-thread session when the trial keeps it.
pub(super) fn try_threads(
    environment: &Environment,
    spec: &ModelSpec,
    model_path: &Path,
    prepacked: &PrepackedWeights,
    first: &mut OpenedSession,
) -> Option<ThreadTrial> {
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        return None;
    }
    // A variable dimension taken as 1 would time a smaller model than the one served.
    let fixed = spec
        .inputs
        .iter()
        .filter(|t| !t.optional)
        .all(|t| t.dims.iter().all(|d| *d >= 0));
    let (request, request_bytes) = super::warmup::zero_request(spec).ok().filter(|_| fixed)?;
    let trial = Trial {
        environment,
        model_path,
        spec,
        prepacked,
        request: &request,
        request_bytes,
    };
    let (outcome, own) = trial.run(first)?;
    if let Some(own) = own {
        *first = own;
    }
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionOptions;

    fn us(times: &[u64]) -> Vec<Duration> {
        times.iter().copied().map(Duration::from_micros).collect()
    }

    #[test]
    fn one_thread_wins_only_by_a_clear_margin() {
        // The lead's mlp_small figures at batch 32: 72 µs on 1 thread, 84.6 on 2.
        let trial =
            decide(32, &us(&[85, 84, 86, 200, 84]), &us(&[72, 71, 73, 72, 150])).expect("enough runs");
        assert_eq!(
            trial,
            ThreadTrial {
                rows: 32,
                shared: Duration::from_micros(85),
                own: Duration::from_micros(72),
                one_thread: true,
            }
        );
        // 5% faster is noise: the shared pool stays.
        let close = decide(8, &us(&[100, 100, 100]), &us(&[95, 95, 95])).expect("enough runs");
        assert!(!close.one_thread);
        // A model whose sections pay for the pool.
        let big = decide(8, &us(&[400, 410, 390]), &us(&[700, 690, 710])).expect("enough runs");
        assert!(!big.one_thread);
        assert_eq!(
            (big.shared, big.own),
            (Duration::from_micros(400), Duration::from_micros(700))
        );
    }

    #[test]
    fn too_few_runs_decide_nothing() {
        assert_eq!(decide(4, &us(&[10, 10]), &us(&[1, 1])), None);
        assert_eq!(decide(4, &us(&[10, 10, 10]), &[]), None);
    }

    /// A session with a pool of 1 intra-op thread runs its operators on the instance's thread: counting
    /// it as 2 threads made a 1-thread version take twice its share of `--max-model-threads`.
    #[test]
    fn an_instance_counts_the_threads_it_starts() {
        let plan = InstancePlan {
            session: SessionOptions::default(),
            count: 1,
            intra_op_threads: None,
            inter_op_threads: None,
            placement: Default::default(),
            tensorrt: None,
        };
        assert_eq!(instance_threads(&plan), 1, "the shared pool is the process's");
        let threads = |intra, inter| {
            instance_threads(&InstancePlan {
                intra_op_threads: intra,
                inter_op_threads: inter,
                ..plan
            })
        };
        assert_eq!(threads(Some(1), None), 1);
        assert_eq!(threads(Some(4), None), 4);
        assert_eq!(threads(Some(2), Some(2)), 4);
    }

    #[test]
    fn the_choice_applies_only_to_plans_without_thread_parameters() {
        let plan = InstancePlan {
            session: SessionOptions::default(),
            count: 3,
            intra_op_threads: None,
            inter_op_threads: None,
            placement: Default::default(),
            tensorrt: None,
        };
        let chose = |one_thread| {
            Some(ThreadTrial {
                rows: 1,
                shared: Duration::from_micros(50),
                own: Duration::from_micros(40),
                one_thread,
            })
        };
        let applied = apply(plan, chose(true));
        assert_eq!((applied.intra_op_threads, applied.count), (Some(1), 3));
        assert_eq!(apply(plan, chose(false)), plan);
        assert_eq!(apply(plan, None), plan);
        let configured = InstancePlan {
            inter_op_threads: Some(2),
            ..plan
        };
        assert_eq!(apply(configured, chose(true)), configured);
    }
}
