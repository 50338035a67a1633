//! Work that serves no request yet runs below the requests that are served: a load on demand takes the
//! cores that requests to loaded models leave idle, so that on a busy machine one client's cold model does
//! not slow every other client's hot one.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
};

/// How much lower than the serving threads background work runs where Linux refuses `SCHED_IDLE`: a nice
/// value this much above the thread's own (at most 19). At +10 a busy thread gets about a tenth of the CPU
/// time a default one gets when both want a core.
const NICENESS: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads, each at the lowest priority for its whole life, that run the jobs handed to them
/// in turn. Fixed, so that however many models clients ask for at once, loads never take more threads; and
/// for life, because Linux lets an unprivileged process lower a thread's priority but not always raise it
/// again, so a pooled thread shared with other work could stay low for that work too.
#[derive(Debug)]
pub(super) struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    /// Starts `threads` (at least one) threads named `name`. They end once the pool is dropped and their
    /// queue is empty.
    pub(super) fn start(name: &str, threads: usize) -> std::io::Result<Pool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            thread::Builder::new().name(name.to_owned()).spawn(move || {
                lower_this_threads_priority();
                loop {
                    // The lock is held only while this thread waits for the next job, never while it runs.
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else { break };
                    // A job that panics ends itself, not the thread: the pool keeps its size for the
                    // jobs behind it. Jobs report their own failures; this only keeps the thread.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        tracing::error!("a background job panicked; its thread goes on with the next");
                    }
                }
            })?;
        }
        Ok(Pool { jobs })
    }

    /// Queues `job` for the first thread that is free. The queue holds as many jobs as callers hand it; the
    /// caller bounds them (one load per model folder at a time).
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        // The threads live as long as the pool, which is borrowed here: the send cannot fail.
        let _ = self.jobs.send(Box::new(job));
    }
}

/// Puts the calling thread under Linux's `SCHED_IDLE` policy, the lowest there is: it runs only on a core
/// that no thread of the ordinary policy (every serving thread) wants, however long it has waited. Where
/// that is refused, the thread's nice value is raised by [`NICENESS`] instead; where that is refused too,
/// the work runs at the ordinary priority, as it did before. Either refusal is logged once, at debug.
fn lower_this_threads_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives the call, which only reads it.
    // With pid 0 the call changes the calling thread only (Linux keeps the policy per thread), which is one
    // of the pool's own; `SCHED_IDLE` takes priority 0, and an unprivileged thread may move to it.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    let refused = std::io::Error::last_os_error();
    let fallback = match this_threads_niceness() {
        Some(niceness) if niceness < 19 => {
            let lower = (niceness + NICENESS).min(19);
            // SAFETY: `setpriority` takes plain integers and no pointer. With `PRIO_PROCESS` and 0 it
            // changes the calling thread only (Linux keeps the nice value per thread), one of the pool's.
            let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, lower) };
            if set == 0 {
                format!("nice {lower}")
            } else {
                format!("the ordinary priority ({})", std::io::Error::last_os_error())
            }
        }
        Some(_) => "nice 19, as the process already runs".to_owned(),
        None => "the ordinary priority (its nice value cannot be read)".to_owned(),
    };
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(
            error = %refused,
            "background threads cannot use SCHED_IDLE; they run at {fallback}"
        );
    }
}

/// The calling thread's nice value, as Linux reports it; `None` when it cannot be read.
fn this_threads_niceness() -> Option<libc::c_int> {
    // SAFETY: `__errno_location` points at the calling thread's errno, which is cleared first because -1
    // is a valid nice value; `getpriority` takes plain integers and only reads.
    unsafe {
        *libc::__errno_location() = 0;
        let niceness = libc::getpriority(libc::PRIO_PROCESS, 0);
        (niceness != -1 || *libc::__errno_location() == 0).then_some(niceness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy and nice value.
    fn priority() -> (libc::c_int, libc::c_int) {
        // SAFETY: `sched_getscheduler` takes a plain integer and only reads; pid 0 is the calling thread.
        let policy = unsafe { libc::sched_getscheduler(0) };
        (policy, this_threads_niceness().expect("readable"))
    }

    #[test]
    fn jobs_run_at_the_lowest_priority_on_the_pools_threads_and_leave_the_caller_as_it_was() {
        let before = priority();
        assert_eq!(before.0, libc::SCHED_OTHER, "tests run under the ordinary policy");
        // Whether this system lets a thread move to SCHED_IDLE (unprivileged processes may, unless a
        // seccomp or container policy refuses the call), tried on a thread of its own that then ends.
        let idle_allowed = thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `lower_this_threads_priority`, on this probe thread only.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
        })
        .join()
        .expect("probe thread");
        let pool = Pool::start("ferry-test-bg", 2).expect("threads start");
        let (sent, received) = mpsc::channel();
        for _ in 0..5 {
            let sent = sent.clone();
            pool.run(move || {
                sent.send((priority(), thread::current().id()))
                    .expect("test waits")
            });
        }
        let ran: Vec<_> = (0..5).map(|_| received.recv().expect("every job ran")).collect();
        for ((policy, niceness), thread) in &ran {
            if idle_allowed {
                assert_eq!(*policy, libc::SCHED_IDLE, "the job ran at the lowest priority");
            } else {
                assert_eq!(
                    (*policy, *niceness),
                    (libc::SCHED_OTHER, (before.1 + NICENESS).min(19)),
                    "without SCHED_IDLE, the job ran at a higher nice value"
                );
            }
            assert_ne!(*thread, thread::current().id(), "on a thread of the pool");
        }
        let threads: std::collections::HashSet<_> = ran.iter().map(|(_, thread)| thread).collect();
        assert!(threads.len() <= 2, "no more threads than the pool has");
        assert_eq!(priority(), before, "the calling thread keeps its priority");
    }

    #[test]
    fn a_job_that_panics_leaves_its_thread_to_the_jobs_behind_it() {
        let pool = Pool::start("ferry-test-bg", 1).expect("thread starts");
        let (sent, received) = mpsc::channel();
        pool.run(|| panic!("a job that fails unexpectedly"));
        for i in 0..3 {
            let sent = sent.clone();
            pool.run(move || sent.send(i).expect("test waits"));
        }
        let ran: Vec<i32> = (0..3)
            .map(|_| {
                received
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .expect("the one thread ran the jobs after the panic")
            })
            .collect();
        assert_eq!(ran, [0, 1, 2]);
    }
}
