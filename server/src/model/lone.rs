//! Running a lone request without a thread hop: when the model's config allows it
//! (`ferry.lone_requests_on_worker`), a request is the only one its version handles and the model is quick,
//! its handler runs it on an idle instance's engine itself (docs/batching.md, "Data path").

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use crate::config::ModelSpec;

/// By default (`ferry.lone_requests_on_worker: "true"`), the longest a lone request may take to run for its handler to run it on the async worker it arrived on,
/// instead of waking an idle instance thread and being woken back (two thread hops, each a futex wake and
/// a context switch on both sides). Tokio asks tasks to reach an `.await` within 10 to 100 µs: a model
/// whose lone runs stay under that costs a worker no more than parsing and answering a request do. mlp_small
/// (docs/benchmarks.md, "What one request costs") runs a lone request in 35 to 45 µs on a quiet machine and
/// up to 70 µs on a loaded one, where a limit of 50 µs kept turning the shortcut off.
pub const LONE_RUN_LIMIT: Duration = Duration::from_micros(100);

/// How long a version must have handled one request at a time before a handler runs its request itself.
/// Under concurrent load the count of requests in hand drops to zero between waves of answers, and a
/// handler taking the next request alone then splits the batch the instance would have formed (measured at
/// 32 in flight: mean batch 2.5 to 4 instead of 2 to 11, a third fewer requests/s); a client that has sent
/// one request at a time for this long is not such a wave.
const QUIET_BEFORE_LONE_RUNS: Duration = Duration::from_millis(10);

/// How long this version's lone requests (batches of one request) have taken to run lately, and whether a
/// request handler may run one itself (see [`LONE_RUN_LIMIT`]). Shared with the instances, which time
/// their lone batches.
#[derive(Debug)]
pub(super) struct LoneRuns {
    /// On only when the config asks for it (`ferry.lone_requests_on_worker`), and never when delivery must
    /// wait for earlier batches (`preserve_ordering`), which would block the worker.
    allowed: bool,
    /// Exponentially weighted mean of lone runs' wall time in nanoseconds; `u64::MAX` until one ran.
    mean_ns: AtomicU64,
    limit_ns: u64,
    /// Requests between queueing and their answer now.
    handling: AtomicUsize,
    /// When a request last found another in hand, in nanoseconds from `epoch`.
    last_company_ns: AtomicU64,
    epoch: Instant,
}

impl LoneRuns {
    pub(super) fn new(spec: &ModelSpec) -> Self {
        LoneRuns {
            allowed: spec.lone_requests_on_worker.is_some() && !spec.batching.preserve_ordering,
            mean_ns: AtomicU64::new(u64::MAX),
            limit_ns: spec
                .lone_requests_on_worker
                .map_or(0, |limit| u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX)),
            handling: AtomicUsize::new(0),
            last_company_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(super) fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let mean = self.mean_ns.load(Ordering::Relaxed);
        // A new sample weighs an eighth; racing writers may lose a sample, which only slows the average.
        let next = if mean == u64::MAX {
            sample
        } else {
            mean - mean / 8 + sample / 8
        };
        self.mean_ns.store(next, Ordering::Relaxed);
    }

    /// Counts a request in until the guard drops; true when its handler may run it itself: it is the only
    /// one, none has had company for [`QUIET_BEFORE_LONE_RUNS`], and lone runs are quick enough.
    pub(super) fn handle(&self) -> (Handling<'_>, bool) {
        let others = self.handling.fetch_add(1, Ordering::AcqRel);
        let guard = Handling(&self.handling);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if others > 0 {
            self.last_company_ns.store(now, Ordering::Relaxed);
            return (guard, false);
        }
        let quiet = now.saturating_sub(self.last_company_ns.load(Ordering::Relaxed));
        let alone = self.allowed
            && self.mean_ns.load(Ordering::Relaxed) <= self.limit_ns
            && u128::from(quiet) >= QUIET_BEFORE_LONE_RUNS.as_nanos();
        (guard, alone)
    }
}

/// A request counted in [`LoneRuns::handling`] while it lives.
pub(super) struct Handling<'a>(&'a AtomicUsize);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    fn lone_runs(allowed: bool) -> LoneRuns {
        LoneRuns {
            allowed,
            mean_ns: AtomicU64::new(u64::MAX),
            limit_ns: u64::try_from(LONE_RUN_LIMIT.as_nanos()).unwrap_or(u64::MAX),
            handling: AtomicUsize::new(0),
            last_company_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    #[test]
    fn a_handler_runs_its_request_only_when_quick_alone_and_quiet() {
        let runs = lone_runs(true);
        assert!(!runs.handle().1, "no lone run measured yet");
        runs.record(Duration::from_micros(10));
        thread::sleep(QUIET_BEFORE_LONE_RUNS);
        let (first, alone) = runs.handle();
        assert!(alone, "quick, alone, and quiet since the start");
        let (second, alone) = runs.handle();
        assert!(!alone, "another request is in hand");
        drop(first);
        drop(second);
        assert!(
            !runs.handle().1,
            "company a moment ago: the next waves go to the instances"
        );
        thread::sleep(QUIET_BEFORE_LONE_RUNS);
        assert!(runs.handle().1, "quiet again");
    }

    #[test]
    fn slow_lone_runs_or_ordered_delivery_keep_requests_on_the_instances() {
        let runs = lone_runs(true);
        for _ in 0..64 {
            runs.record(LONE_RUN_LIMIT * 3);
        }
        thread::sleep(QUIET_BEFORE_LONE_RUNS);
        assert!(!runs.handle().1, "a slow model runs on its instances");
        for _ in 0..64 {
            runs.record(Duration::from_micros(5));
        }
        assert!(runs.handle().1, "the average follows the model getting quicker");
        let ordered = lone_runs(false);
        ordered.record(Duration::from_micros(5));
        thread::sleep(QUIET_BEFORE_LONE_RUNS);
        assert!(!ordered.handle().1, "preserve_ordering: never on a worker");
    }
}
