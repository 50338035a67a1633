//! The batcher's decisions, as a plain state struct: what is queued, and given the time, what to run next.
//! No threads, no clocks: callers pass `now`, so tests drive every rule with made-up instants.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::{
    arrivals::Arrivals,
    policy::{BatchingPolicy, TimeoutAction},
    ticket::Ticket,
};

/// What the batcher needs to know about a request's contents.
pub trait Payload: Send {
    /// Whether two requests may share a batch: their tensors agree in every dimension but the first.
    fn batches_with(&self, other: &Self) -> bool;
}

/// A request offered to the batcher.
#[derive(Debug)]
pub struct Request<P> {
    /// The request itself, handed back in a batch.
    pub payload: P,
    /// Its rows: the first dimension of its tensors (1 for a model that does not batch).
    pub rows: usize,
    /// Its `priority` parameter: 0 for the default level, 1 for the highest.
    pub priority: u64,
    /// Its `timeout` parameter, which may shorten the level's queue timeout where the policy allows.
    pub timeout: Option<Duration>,
    /// Shared with the caller, who may withdraw the request while it waits.
    pub ticket: Ticket,
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// The priority level holds `max_queue_size` requests already.
    #[error("the queue of priority level {level} is full ({capacity} requests waiting)")]
    QueueFull {
        /// 1-based priority level.
        level: usize,
        /// Its `max_queue_size`.
        capacity: usize,
    },
    /// The request names a priority level the model does not have.
    #[error("priority {given} is not a level of this model, which has levels 1 to {levels}")]
    InvalidPriority {
        /// The `priority` parameter as sent.
        given: u64,
        /// How many levels the model has.
        levels: usize,
    },
    /// The request has more rows than a batch may hold, and requests are never split.
    #[error("the request has {rows} rows but a batch holds at most {max}")]
    TooManyRows {
        /// The request's rows.
        rows: usize,
        /// `max_batch_size`.
        max: usize,
    },
    /// The model version is shutting down and takes no new requests.
    #[error("the model is unloading and takes no new requests")]
    Closed,
}

/// A request that was not queued, handed back with the reason.
#[derive(Debug)]
pub struct Rejected<P> {
    /// The request as offered.
    pub payload: P,
    /// Why.
    pub error: EnqueueError,
}

/// What a queued request's caller must enforce itself: the moment its wait must end in a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// When the request times out under a REJECT policy; `None` when it never times out (or is delayed).
    pub reject_at: Option<Instant>,
}

/// One request of a batch.
#[derive(Debug)]
pub struct BatchItem<P> {
    /// The request.
    pub payload: P,
    /// Its rows.
    pub rows: usize,
    /// How long it waited in the queue.
    pub queued_for: Duration,
}

/// Requests to run together, in the order their rows are concatenated.
#[derive(Debug)]
pub struct Batch<P> {
    /// The requests.
    pub items: Vec<BatchItem<P>>,
    /// Their rows together.
    pub rows: usize,
    /// Formation order, for delivering responses in order when the policy preserves it.
    pub sequence: u64,
}

/// The batcher's answer to "what should an idle instance do now?".
#[derive(Debug)]
pub enum Next<P> {
    /// Run this batch.
    Batch(Batch<P>),
    /// Requests wait for a fuller batch; ask again at this instant (or when a request arrives).
    WaitUntil(Instant),
    /// Nothing is queued.
    Idle,
}

#[derive(Debug)]
struct Entry<P> {
    payload: P,
    rows: usize,
    ticket: Ticket,
    enqueued: Instant,
    deadline: Option<Instant>,
    action: TimeoutAction,
    /// Its DELAY timeout has passed: it now comes after every live request of its level.
    delayed: bool,
}

/// A pick made while scanning: which level, which position in that level's queue.
#[derive(Debug, Clone, Copy)]
struct Pick {
    level: usize,
    index: usize,
}

/// The queued requests of one model version, by priority level, and the rules that group them.
#[derive(Debug)]
pub struct BatcherState<P> {
    policy: BatchingPolicy,
    levels: Vec<VecDeque<Entry<P>>>,
    next_sequence: u64,
    /// Arrivals seen, for the adaptive delay.
    arrivals: Arrivals,
    /// Instances waiting for a batch now, as their scheduler reports them.
    waiting_instances: usize,
    /// Batches formed that have not finished running.
    running: usize,
}

impl<P: Payload> BatcherState<P> {
    /// An empty batcher following `policy`.
    pub fn new(policy: BatchingPolicy) -> Self {
        let levels = (0..policy.levels.len().max(1)).map(|_| VecDeque::new()).collect();
        BatcherState {
            policy,
            levels,
            next_sequence: 0,
            arrivals: Arrivals::default(),
            waiting_instances: 0,
            running: 0,
        }
    }

    /// The rules this batcher follows.
    pub fn policy(&self) -> &BatchingPolicy {
        &self.policy
    }

    /// Requests queued, withdrawn ones that are not yet cleared included.
    pub fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty)
    }

    /// Whether the request just queued may let a batch leave sooner than an instance that is waiting out a
    /// delay was told: `false` only when the queue holds too few rows for the smallest preferred batch size
    /// or a full batch, all at one priority level, so that the batch still leaves when the delay of the
    /// oldest request it takes ends, and the instance asleep until then need not be woken. Rows of withdrawn
    /// requests and of requests that cannot share a batch count too, which errs towards waking; it looks at
    /// no more than `max_batch_size` requests, so its cost does not grow with the queue.
    ///
    /// Under the adaptive delay the same rule holds for the instance's own plan: asleep until the time it
    /// chose to wait for more, it is not woken by an arrival that cannot fill the batch. Such an arrival
    /// mostly lengthens the wait, which the instance finds when it wakes; when it would shorten it (a long
    /// gap making the next arrival unlikely in time), the batch leaves at the planned time, a few gaps at
    /// most and never past the delay, instead of at once. Waking the instance at every arrival cost
    /// mlp_small at 32 in flight a context switch per request (docs/benchmarks.md).
    pub fn may_send_before_delay(&self) -> bool {
        // With requests at several priority levels, an arrival above them all may pick a batch whose oldest
        // request waited longer.
        if !self.policy.dynamic || self.levels.iter().filter(|level| !level.is_empty()).count() > 1 {
            return true;
        }
        let enough = self
            .policy
            .preferred_batch_sizes
            .iter()
            .copied()
            .chain([self.policy.max_batch_size])
            .min()
            .unwrap_or(1);
        let mut rows = 0;
        for entry in self.levels.iter().flatten().take(enough) {
            rows += entry.rows;
            // A request of no rows would let more requests than `enough` share a batch: do not count on it.
            if rows >= enough || entry.rows == 0 {
                return true;
            }
        }
        false
    }

    /// An instance began waiting for a batch. Under the adaptive delay, a request that finds an instance
    /// waiting and nothing queued arrives alone: it says nothing of a rate worth waiting for.
    pub fn instance_waiting(&mut self) {
        self.waiting_instances += 1;
    }

    /// An instance stopped waiting for a batch: it took one, or it stopped serving.
    pub fn instance_not_waiting(&mut self) {
        self.waiting_instances = self.waiting_instances.saturating_sub(1);
    }

    /// A batch formed here finished running (reported under the adaptive delay only). Then a request that
    /// arrives while no batch runs and nothing is queued arrives alone, whatever the instance threads do.
    pub fn batch_finished(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Queues a request arriving at `now`, or hands it back with the reason it cannot wait.
    pub fn enqueue(&mut self, request: Request<P>, now: Instant) -> Result<Admitted, Rejected<P>> {
        let reject = |payload, error| Err(Rejected { payload, error });
        let level = match request.priority {
            0 => self.policy.default_level.min(self.levels.len() - 1),
            p if p as usize <= self.levels.len() => p as usize - 1,
            given => {
                let levels = self.levels.len();
                return reject(request.payload, EnqueueError::InvalidPriority { given, levels });
            }
        };
        if self.policy.dynamic && request.rows > self.policy.max_batch_size {
            let error = EnqueueError::TooManyRows {
                rows: request.rows,
                max: self.policy.max_batch_size,
            };
            return reject(request.payload, error);
        }
        let queue_policy = self.policy.levels.get(level).copied().unwrap_or_default();
        if let Some(capacity) = queue_policy.max_queue_size {
            if self.levels[level].len() >= capacity {
                // Withdrawn requests still hold places until cleared: clear them before refusing.
                self.levels[level].retain(|entry| entry.ticket.is_queued());
            }
            if self.levels[level].len() >= capacity {
                let error = EnqueueError::QueueFull {
                    level: level + 1,
                    capacity,
                };
                return reject(request.payload, error);
            }
        }
        let timeout = match (queue_policy.default_timeout, request.timeout) {
            (Some(default), Some(asked)) if queue_policy.allow_timeout_override => Some(default.min(asked)),
            (None, Some(asked)) if queue_policy.allow_timeout_override => Some(asked),
            (default, _) => default,
        };
        let deadline = timeout.map(|t| now + t);
        if self.policy.adaptive_delay {
            let instance_free = self.running == 0 || self.waiting_instances > 0;
            let alone = instance_free && !self.levels.iter().flatten().any(|entry| entry.ticket.is_queued());
            self.arrivals.record(now, alone, self.policy.max_queue_delay);
        }
        self.levels[level].push_back(Entry {
            payload: request.payload,
            rows: request.rows,
            ticket: request.ticket,
            enqueued: now,
            deadline,
            action: queue_policy.timeout_action,
            delayed: false,
        });
        let reject_at = deadline.filter(|_| queue_policy.timeout_action == TimeoutAction::Reject);
        Ok(Admitted { reject_at })
    }

    /// Decides what an idle instance should do at `now`: run a batch, wait, or sleep until a request comes.
    pub fn next_batch(&mut self, now: Instant) -> Next<P> {
        self.clear_front();
        let picks = self.scan(now);
        let Some(first) = picks.first() else {
            return Next::Idle;
        };
        if !self.policy.dynamic {
            return Next::Batch(self.take(&picks[..1], now));
        }
        let mut rows = 0;
        let mut preferred_end = None;
        let mut oldest = self.levels[first.level][first.index].enqueued;
        for (position, pick) in picks.iter().enumerate() {
            let entry = &self.levels[pick.level][pick.index];
            rows += entry.rows;
            oldest = oldest.min(entry.enqueued);
            if self.policy.preferred_batch_sizes.contains(&rows) {
                preferred_end = Some(position + 1);
            }
        }
        if rows == self.policy.max_batch_size {
            return Next::Batch(self.take(&picks, now));
        }
        if let Some(end) = preferred_end {
            return Next::Batch(self.take(&picks[..end], now));
        }
        let send_at = oldest + self.policy.max_queue_delay;
        let wait_until = if now >= send_at {
            None
        } else if self.policy.adaptive_delay {
            self.arrivals.wait_until(now, send_at)
        } else {
            Some(send_at)
        };
        match wait_until {
            Some(at) => Next::WaitUntil(at),
            None => Next::Batch(self.take(&picks, now)),
        }
    }

    /// Drops withdrawn and expired requests from the front of every level, so that they cost nothing.
    fn clear_front(&mut self) {
        for level in &mut self.levels {
            while level.front().is_some_and(|entry| !entry.ticket.is_queued()) {
                level.pop_front();
            }
        }
    }

    /// Chooses the requests of the next batch, in priority order, then arrival order, delayed ones after the
    /// others of their level; all agree with the first in every dimension but the batch dimension, and
    /// together hold at most `max_batch_size` rows.
    fn scan(&mut self, now: Instant) -> Vec<Pick> {
        let max_rows = if self.policy.dynamic {
            self.policy.max_batch_size
        } else {
            usize::MAX
        };
        let mut picks: Vec<Pick> = Vec::new();
        let mut rows = 0;
        for level in 0..self.levels.len() {
            for delayed_pass in [false, true] {
                for index in 0..self.levels[level].len() {
                    let entry = &mut self.levels[level][index];
                    if !entry.ticket.is_queued() {
                        continue;
                    }
                    if !entry.delayed && entry.deadline.is_some_and(|d| now >= d) {
                        match entry.action {
                            TimeoutAction::Reject => {
                                // Its caller answers with the timeout; it will never run.
                                entry.ticket.expire();
                                continue;
                            }
                            TimeoutAction::Delay => entry.delayed = true,
                        }
                    }
                    if entry.delayed != delayed_pass {
                        continue;
                    }
                    if let Some(first) = picks.first() {
                        let head = &self.levels[first.level][first.index].payload;
                        let entry = &self.levels[level][index];
                        if !head.batches_with(&entry.payload) {
                            continue;
                        }
                        if rows + entry.rows > max_rows {
                            return picks;
                        }
                    }
                    rows += self.levels[level][index].rows;
                    picks.push(Pick { level, index });
                    if rows >= max_rows || !self.policy.dynamic {
                        return picks;
                    }
                }
            }
        }
        picks
    }

    /// Removes the picked requests from their queues and claims them; any withdrawn meanwhile is left out.
    fn take(&mut self, picks: &[Pick], now: Instant) -> Batch<P> {
        let mut ordered: Vec<(usize, Pick)> = picks.iter().copied().enumerate().collect();
        // Remove from the back of each queue first so that earlier indices stay valid.
        ordered.sort_by_key(|(_, pick)| std::cmp::Reverse((pick.level, pick.index)));
        let mut removed: Vec<(usize, Entry<P>)> = ordered
            .into_iter()
            .filter_map(|(position, pick)| self.levels[pick.level].remove(pick.index).map(|e| (position, e)))
            .collect();
        removed.sort_by_key(|(position, _)| *position);
        let items: Vec<BatchItem<P>> = removed
            .into_iter()
            .filter(|(_, entry)| entry.ticket.take())
            .map(|(_, entry)| BatchItem {
                queued_for: now.saturating_duration_since(entry.enqueued),
                rows: entry.rows,
                payload: entry.payload,
            })
            .collect();
        // Only batches that will be delivered take a sequence number, so ordered delivery never waits on a gap.
        let sequence = self.next_sequence;
        if !items.is_empty() {
            self.next_sequence += 1;
            // Counted only where its scheduler reports the end of each batch.
            self.running += usize::from(self.policy.adaptive_delay);
        }
        Batch {
            rows: items.iter().map(|item| item.rows).sum(),
            items,
            sequence,
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
