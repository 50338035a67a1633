//! Sharing a [`BatcherState`] between request handlers, which submit without blocking, and instance threads,
//! which block until the batcher gives them a batch.

use std::{
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use crate::{
    policy::BatchingPolicy,
    state::{Admitted, Batch, BatcherState, EnqueueError, Next, Payload, Rejected, Request},
};

#[derive(Debug)]
struct Shared<P> {
    state: BatcherState<P>,
    closed: bool,
}

/// The queue of one model version. Handlers call [`Scheduler::submit`]; each instance thread loops on
/// [`Scheduler::next_batch`], runs the batch, and answers through [`Scheduler::deliver`].
///
/// The lock is held only to queue a request or to decide a batch, never while a model runs.
#[derive(Debug)]
pub struct Scheduler<P> {
    shared: Mutex<Shared<P>>,
    /// Signalled when a request arrives or the scheduler closes.
    arrivals: Condvar,
    /// The sequence number of the next batch whose responses may leave, when ordering is preserved.
    delivered: Mutex<u64>,
    /// Signalled when a batch's responses have left.
    turns: Condvar,
    preserve_ordering: bool,
}

impl<P: Payload> Scheduler<P> {
    /// A scheduler following `policy`.
    pub fn new(policy: BatchingPolicy) -> Self {
        Scheduler {
            preserve_ordering: policy.preserve_ordering,
            shared: Mutex::new(Shared {
                state: BatcherState::new(policy),
                closed: false,
            }),
            arrivals: Condvar::new(),
            delivered: Mutex::new(0),
            turns: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<P>> {
        // The state holds no invariant a panicking holder could break half-way: keep serving.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a request without blocking on anything but the brief state lock.
    pub fn submit(&self, request: Request<P>) -> Result<Admitted, Rejected<P>> {
        let mut shared = self.lock();
        if shared.closed {
            return Err(Rejected {
                payload: request.payload,
                error: EnqueueError::Closed,
            });
        }
        let admitted = shared.state.enqueue(request, Instant::now())?;
        drop(shared);
        self.arrivals.notify_one();
        Ok(admitted)
    }

    /// Blocks until there is a batch to run; `None` once the scheduler is closed and its queue drained.
    pub fn next_batch(&self) -> Option<Batch<P>> {
        let mut shared = self.lock();
        loop {
            let now = Instant::now();
            match shared.state.next_batch(now) {
                Next::Batch(batch) => {
                    let more = !shared.state.is_empty();
                    drop(shared);
                    if more {
                        // Another idle instance may be able to start on what is left.
                        self.arrivals.notify_one();
                    }
                    if batch.items.is_empty() {
                        // Every request picked was withdrawn at the last moment: decide again.
                        shared = self.lock();
                        continue;
                    }
                    return Some(batch);
                }
                Next::WaitUntil(at) => {
                    let wait = at.saturating_duration_since(now);
                    shared = self
                        .arrivals
                        .wait_timeout(shared, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Next::Idle if shared.closed => return None,
                Next::Idle => {
                    shared = self.arrivals.wait(shared).unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Sends a batch's responses with `send`: at once, or, when the policy preserves ordering, after every
    /// batch formed before it. Every batch from [`Scheduler::next_batch`] must be delivered exactly once.
    pub fn deliver(&self, sequence: u64, send: impl FnOnce()) {
        if !self.preserve_ordering {
            send();
            return;
        }
        let mut next = self.delivered.lock().unwrap_or_else(PoisonError::into_inner);
        while *next != sequence {
            next = self.turns.wait(next).unwrap_or_else(PoisonError::into_inner);
        }
        send();
        *next += 1;
        drop(next);
        self.turns.notify_all();
    }

    /// Stops taking requests. Queued ones still run; instance threads stop once the queue is drained.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrivals.notify_all();
    }

    /// Requests waiting now (withdrawn ones not yet cleared included).
    pub fn queued(&self) -> usize {
        self.lock().state.len()
    }
}
