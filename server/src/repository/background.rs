//! Work that serves no request yet runs below the requests that are served: a load on demand takes the
//! cores that requests to loaded models leave idle, so that on a busy machine one client's cold model does
//! not slow every other client's hot one.

use std::{
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
};

/// How much lower than the serving threads background work runs: Linux's nice value, from 0 (the default)
/// to 19. At +10 a busy thread gets about a tenth of the CPU time a default one gets when both want a core.
const NICENESS: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads, each at lower priority for its whole life, that run the jobs handed to them in
/// turn. Fixed, so that however many models clients ask for at once, loads never take more threads; and
/// for life, because Linux lets an unprivileged process lower a thread's priority but not raise it again,
/// so a pooled thread shared with other work would stay low for that work too.
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
                    match next {
                        Ok(job) => job(),
                        Err(mpsc::RecvError) => break,
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

/// Lowers the calling thread's priority by [`NICENESS`]; where that is refused, the work runs at the
/// ordinary priority, as it did before, with a debug line.
fn lower_this_threads_priority() {
    // SAFETY: `setpriority` takes plain integers and no pointer. With `PRIO_PROCESS` and 0 it changes the
    // calling thread only (Linux keeps the nice value per thread), which is one of the pool's own.
    let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICENESS) } != 0;
    if refused {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "a background thread keeps the ordinary priority"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, read back as Linux reports it.
    fn niceness() -> libc::c_int {
        // SAFETY: as above; `getpriority` only reads. errno is cleared first because -1 is a valid answer.
        unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        }
    }

    #[test]
    fn jobs_run_below_the_caller_on_the_pools_threads_and_leave_the_caller_as_it_was() {
        let before = niceness();
        let pool = Pool::start("ferry-test-bg", 2).expect("threads start");
        let (sent, received) = mpsc::channel();
        for _ in 0..5 {
            let sent = sent.clone();
            pool.run(move || {
                sent.send((niceness(), thread::current().id()))
                    .expect("test waits")
            });
        }
        let ran: Vec<_> = (0..5).map(|_| received.recv().expect("every job ran")).collect();
        for (inside, thread) in &ran {
            assert_eq!(
                *inside,
                (before + NICENESS).min(19),
                "the job ran at lower priority"
            );
            assert_ne!(*thread, thread::current().id(), "on a thread of the pool");
        }
        let threads: std::collections::HashSet<_> = ran.iter().map(|(_, thread)| thread).collect();
        assert!(threads.len() <= 2, "no more threads than the pool has");
        assert_eq!(niceness(), before, "the calling thread keeps its priority");
    }
}
