//! One sender of the load generator: a task that keeps one request in flight at a time, paced either by
//! the answers (closed loop) or by a shared schedule (open loop), and tallies what the window sees.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout_at};

use super::stats::Tally;
use crate::proto;

/// The run's phases on one clock: warm-up from `start` to `open`, the measured window from `open` to
/// `close`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) open: Instant,
    pub(super) close: Instant,
}

impl Window {
    /// `None` when the phases run past what `Instant` can represent.
    pub(super) fn starting(start: Instant, warmup: Duration, duration: Duration) -> Option<Self> {
        let open = start.checked_add(warmup)?;
        Some(Self {
            open,
            close: open.checked_add(duration)?,
        })
    }
}

/// How a worker decides when to send its next request.
#[derive(Debug, Clone)]
pub(super) enum Pacing {
    /// As soon as the previous one is answered.
    Closed,
    /// At the next free slot of a schedule shared by all workers.
    Open(Arc<Schedule>),
}

impl Pacing {
    pub(super) fn open(start: Instant, rate: f64) -> Self {
        Self::Open(Arc::new(Schedule {
            start,
            rate,
            next: AtomicU64::new(0),
        }))
    }
}

/// Evenly spaced send times, `rate` per second from `start`, handed out in order to whichever worker is
/// free; one atomic increment per request, no lock.
#[derive(Debug)]
pub(super) struct Schedule {
    start: Instant,
    rate: f64,
    next: AtomicU64,
}

impl Schedule {
    /// Claims the next slot: its sequence number and when it is due (`None` past the clock's range).
    fn claim(&self) -> (usize, Option<Instant>) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        let due = Duration::try_from_secs_f64(slot as f64 / self.rate)
            .ok()
            .and_then(|offset| self.start.checked_add(offset));
        (slot as usize, due)
    }
}

/// Everything one sender needs, owned so that it runs as its own task.
pub(super) struct Worker {
    /// One stub per connection.
    pub(super) stubs: Vec<crate::Stub>,
    /// Where this worker's round-robin over the connections starts, so workers start spread out.
    pub(super) first_connection: usize,
    pub(super) request: proto::ModelInferRequest,
    pub(super) window: Window,
    pub(super) pacing: Pacing,
}

impl Worker {
    /// Sends until the window closes; a request still in flight then is cancelled and not counted.
    pub(super) async fn run(mut self) -> Tally {
        let mut tally = Tally::new();
        let mut sequence = self.first_connection;
        let connections = self.stubs.len();
        // Until its first send, a worker is not behind for being busy but for having just been spawned.
        let mut has_sent = false;
        loop {
            let mut late = false;
            if let Pacing::Open(schedule) = &self.pacing {
                let (slot, due) = schedule.claim();
                let Some(due) = due.filter(|&due| due < self.window.close) else {
                    break;
                };
                sequence = slot;
                if due > Instant::now() {
                    sleep_until(due).await;
                } else {
                    // Every worker was busy from `due` until now: the schedule fell behind.
                    late = has_sent;
                }
            }
            let sent = Instant::now();
            if sent >= self.window.close {
                break;
            }
            if late && sent >= self.window.open {
                tally.late += 1;
            }
            has_sent = true;
            let stub = &mut self.stubs[sequence % connections];
            sequence = sequence.wrapping_add(1);
            let Ok(outcome) = timeout_at(self.window.close, stub.model_infer(self.request.clone())).await
            else {
                break;
            };
            let done = Instant::now();
            if done < self.window.open || done > self.window.close {
                continue;
            }
            match outcome {
                Ok(_) => tally.latencies.record(done - sent),
                Err(status) => tally.record_error(&status),
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_hands_out_evenly_spaced_slots_in_order() {
        let start = Instant::now();
        let Pacing::Open(schedule) = Pacing::open(start, 200.0) else {
            panic!("an open loop without a schedule");
        };
        assert_eq!(schedule.claim(), (0, Some(start)));
        assert_eq!(schedule.claim(), (1, Some(start + Duration::from_millis(5))));
        assert_eq!(schedule.claim(), (2, Some(start + Duration::from_millis(10))));
    }

    #[test]
    fn slots_past_the_clock_have_no_time() {
        let Pacing::Open(schedule) = Pacing::open(Instant::now(), 1e-300) else {
            panic!("an open loop without a schedule");
        };
        assert!(schedule.claim().1.is_some());
        assert_eq!(schedule.claim().1, None);
    }
}
