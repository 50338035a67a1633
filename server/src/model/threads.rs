//! The thread check: whether a small CPU model whose config sets no thread parameter runs on its instance's
//! own thread or on ONNX Runtime's shared pool, decided at load.
//!
//! Such a model would run on ONNX Runtime's global pool of one thread per core ([`onnx::shares_threads`]).
//! With intra-op spinning off (Ferry's default), each parallel section of a small model pays for waking a pool
//! thread: measured on mlp_small (64→128→128→16), 1 thread ran a batch of 10 in 39.5 µs and of 32 in 72 µs,
//! 2 threads in 49.3 and 84.6 µs, and under perf_analyzer at 32 in flight the pool's thread cost Ferry 10% of
//! its CPU per request. A large model's sections are long enough for the pool to pay (mlp_big,
//! 1024→2048×3→1024, runs much faster on 2 threads). So a model whose file is small opens its first session
//! on 1 intra-op thread (for which ONNX Runtime starts no thread: the instance's thread runs every operator)
//! and runs its own zero request, batched to `max_batch_size` rows, twice (once when the first run takes
//! over [`CLEARLY_NOT_QUICK`]); when the quicker run takes longer than [`QUICK_RUN`] its operators are large
//! enough for the pool, and the session is opened again on the shared pool. A small model therefore pays two
//! runs at load, and no second session: a thousand of them load about as fast as before. A model whose file
//! is large uses the shared pool without a check.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use ort::{environment::Environment, session::builder::PrepackedWeights};

use crate::{
    config::{InstancePlan, ModelSpec, Placement},
    onnx::{self, BatchRunner, OpenedSession},
    request::InferRequest,
};

/// The largest model file checked for a run on 1 thread: larger files hold weights enough for operators
/// that the shared pool speeds up (mlp_small's is 103 KB, mlp_big's 50 MB).
const SMALL_MODEL_FILE: u64 = 1 << 20;

/// A run of `max_batch_size` rows on 1 thread up to this long keeps the model on 1 thread: its parallel
/// sections would be too short to pay for waking the pool's threads.
const QUICK_RUN: Duration = Duration::from_micros(500);

/// A first run this slow decides alone: a second run, free of the first one's set-up, is not ten times
/// quicker, so a model with heavy operators in a small file pays one run at load, not two.
const CLEARLY_NOT_QUICK: Duration = Duration::from_millis(5);

/// How a version's thread check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCheck {
    /// The rows of each run: `max_batch_size` (1 for a model that does not batch), fewer when that many
    /// rows would pass the request memory limit.
    pub rows: usize,
    /// The quicker of the runs on 1 intra-op thread (one run when the first is clearly not quick).
    pub one_thread_run: Duration,
    /// Whether the version runs its instances on 1 intra-op thread each (else on the shared pool).
    pub one_thread: bool,
}

/// Whether a model whose quicker run of `rows` rows on 1 thread took `run` stays on 1 thread.
pub fn decide(rows: usize, run: Duration) -> ThreadCheck {
    ThreadCheck {
        rows,
        one_thread_run: run,
        one_thread: run <= QUICK_RUN,
    }
}

/// Whether the check runs the zero request again after `runs` runs, the quickest of which took `quickest`:
/// twice in all, unless the first run was clearly not quick.
fn runs_again(runs: usize, quickest: Duration) -> bool {
    runs < 2 && quickest <= CLEARLY_NOT_QUICK
}

/// `plan` as a version whose check came to `check` runs it: 1 intra-op thread per instance when the check
/// chose it and the plan still sets no thread parameter; otherwise unchanged.
pub fn apply(plan: InstancePlan, check: Option<ThreadCheck>) -> InstancePlan {
    match check {
        Some(check) if check.one_thread && onnx::shares_threads(&plan) => one_thread(plan),
        _ => plan,
    }
}

fn one_thread(plan: InstancePlan) -> InstancePlan {
    InstancePlan {
        intra_op_threads: Some(1),
        ..plan
    }
}

/// A model to check: its zero request of one row and the bytes that request's inputs take.
pub(super) struct Candidate {
    request: InferRequest,
    request_bytes: usize,
}

impl Candidate {
    /// The model at `model_path` when it is to be checked: a CPU model (`KIND_CPU`) that is not stateful,
    /// whose config sets no thread parameter, whose file is small, and for which a zero request of fixed
    /// size can be made up, on a machine of more than one core.
    pub(super) fn of(spec: &ModelSpec, model_path: &Path) -> Option<Candidate> {
        if !onnx::shares_threads(&spec.instances)
            || !matches!(spec.instances.placement, Placement::Cpu)
            || spec.sequence.is_some()
            || std::thread::available_parallelism().map_or(1, usize::from) < 2
            || super::file_bytes(model_path) > SMALL_MODEL_FILE
        {
            return None;
        }
        // A variable dimension taken as 1 would time a smaller model than the one served.
        let fixed = spec
            .inputs
            .iter()
            .filter(|t| !t.optional)
            .all(|t| t.dims.iter().all(|d| *d >= 0));
        let (request, request_bytes) = super::warmup::zero_request(spec).ok().filter(|_| fixed)?;
        Some(Candidate {
            request,
            request_bytes,
        })
    }

    /// The plan the version's first session opens with: 1 intra-op thread.
    pub(super) fn first_plan(spec: &ModelSpec) -> InstancePlan {
        one_thread(spec.instances)
    }

    /// Runs the zero request twice on `first`, opened with [`Candidate::first_plan`] (once when the first run
    /// is clearly not quick), and opens it again on the shared pool when the model is not quick on 1 thread
    /// (or a run fails). The outcome, logged.
    pub(super) fn check(
        &self,
        environment: &Environment,
        spec: &ModelSpec,
        model_path: &Path,
        prepacked: &PrepackedWeights,
        first: &mut OpenedSession,
    ) -> Result<ThreadCheck, crate::Error> {
        let rows = self.rows(spec);
        let batch = vec![&self.request; rows];
        let quickest = BatchRunner::new().ok().and_then(|mut runner| {
            let mut quickest = Duration::MAX;
            for run in 1.. {
                let started = Instant::now();
                runner.run(&mut first.session, spec, &batch).ok()?;
                quickest = quickest.min(started.elapsed());
                if !runs_again(run, quickest) {
                    break;
                }
            }
            Some(quickest)
        });
        let check = decide(rows, quickest.unwrap_or(Duration::MAX));
        if !check.one_thread {
            *first = onnx::open_session(environment, model_path, &spec.instances, 0, Some(prepacked))?;
        }
        tracing::info!(
            model = %spec.name,
            rows,
            one_thread_run_us = u64::try_from(check.one_thread_run.as_micros()).unwrap_or(u64::MAX),
            "{}",
            if check.one_thread {
                "quick on 1 thread: each instance runs its operators on its own thread"
            } else {
                "not quick on 1 thread: the instances run on ONNX Runtime's shared pool"
            }
        );
        Ok(check)
    }

    /// The rows of each run: the model's largest batch, bounded by the request memory limit.
    fn rows(&self, spec: &ModelSpec) -> usize {
        let most = spec.max_request_bytes / self.request_bytes.max(1);
        spec.max_batch_size.min(most).max(1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionOptions;

    #[test]
    fn only_a_model_quick_on_one_thread_stays_on_it() {
        // mlp_small at batch 32 on 1 thread: 61 to 72 µs measured.
        assert!(decide(32, Duration::from_micros(72)).one_thread);
        assert!(decide(8, QUICK_RUN).one_thread);
        // mlp_big at batch 64 takes tens of milliseconds: the pool pays.
        let big = decide(64, Duration::from_millis(25));
        assert_eq!(
            big,
            ThreadCheck {
                rows: 64,
                one_thread_run: Duration::from_millis(25),
                one_thread: false
            }
        );
        assert!(
            !decide(1, Duration::MAX).one_thread,
            "a failed run keeps the pool"
        );
    }

    #[test]
    fn a_second_run_only_when_the_first_could_still_be_quick() {
        assert!(
            runs_again(1, Duration::from_micros(900)),
            "set-up may have slowed the first run"
        );
        assert!(runs_again(1, CLEARLY_NOT_QUICK));
        assert!(!runs_again(1, CLEARLY_NOT_QUICK + Duration::from_micros(1)));
        assert!(!runs_again(2, Duration::from_micros(40)), "two runs at most");
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
            Some(ThreadCheck {
                rows: 1,
                one_thread_run: Duration::from_micros(40),
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
