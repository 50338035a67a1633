//! Work that serves no request yet runs below the requests that are served: a load on demand takes the
//! cores that requests to loaded models leave idle, so that on a busy machine one client's cold model does
//! not slow every other client's hot one.

use std::thread;

/// How much lower than the serving threads background work runs: Linux's nice value, from 0 (the default)
/// to 19. At +10 a busy thread gets about a tenth of the CPU time a default one gets when both want a core.
const NICENESS: libc::c_int = 10;

/// Runs `work` on a thread of its own at lower priority, then `done` with its result on the same thread.
/// A thread of its own because Linux lets an unprivileged process lower a thread's priority but not raise it
/// again: a pooled thread would stay low for whatever it ran next. Fails only when no thread can be started.
pub(super) fn spawn<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
    done: impl FnOnce(T) + Send + 'static,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_this_threads_priority();
            done(work());
        })
        .map(drop)
}

/// Lowers the calling thread's priority by [`NICENESS`]; where that is refused, the work runs at the
/// ordinary priority, as it did before, with a debug line.
fn lower_this_threads_priority() {
    // SAFETY: `setpriority` takes plain integers and no pointer. With `PRIO_PROCESS` and 0 it changes the
    // calling thread only (Linux keeps the nice value per thread), which is this short-lived thread.
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
    use std::sync::mpsc;

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
    fn background_work_runs_below_the_caller_and_leaves_the_caller_as_it_was() {
        let before = niceness();
        let (sent, received) = mpsc::channel();
        spawn("ferry-test-bg", niceness, move |inside| {
            sent.send(inside).expect("test waits")
        })
        .expect("a thread starts");
        let inside = received.recv().expect("the work ran");
        assert_eq!(
            inside,
            (before + NICENESS).min(19),
            "the work ran at lower priority"
        );
        assert_eq!(niceness(), before, "the calling thread keeps its priority");
    }
}
