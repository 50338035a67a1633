//! The sequence batcher's decisions (Triton's `sequence_batching`), free of threads, clocks and tensors.
//!
//! A [`SequenceBook`] tracks every live sequence of one model version: the requests it has queued (in
//! arrival order), whether one of them is running (at most one per sequence, so requests run in order and
//! each sees the state the previous one left), the state it carries between requests, and the batch slot
//! it holds. Slots bound how many sequences are scheduled at once (the `direct` strategy: one slot per batch
//! row of each instance; `oldest`: `max_candidate_sequences`); a starting sequence that finds every slot
//! taken waits in a backlog, in order of arrival, until one is freed. A batch holds at most one request of
//! each sequence. A sequence is released by its END request (once it ran), or when it has been idle, with
//! nothing queued or running, for longer than the idle timeout. Callers pass the time in, so tests drive
//! the book with made-up instants.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    time::{Duration, Instant},
};

use crate::Payload;

/// A sequence's correlation id, as a request's `sequence_id` parameter gives it: a non-zero number or a
/// non-empty string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CorrelationId {
    /// A numeric id.
    Number(u64),
    /// A string id.
    Text(String),
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorrelationId::Number(n) => write!(f, "{n}"),
            CorrelationId::Text(s) => f.write_str(s),
        }
    }
}

/// How batches are formed from the sequences that hold slots.
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceStrategy {
    /// Triton's `direct`: slots in slot order; a batch waits (up to the queue delay) until this share of
    /// a full batch is ready.
    Direct {
        /// `minimum_slot_utilization`, 0 to 1.
        minimum_slot_utilization: f32,
    },
    /// Triton's `oldest`: the sequences whose next request arrived first; a batch waits (up to the queue
    /// delay) until it reaches the largest preferred size (or a full batch).
    Oldest {
        /// `preferred_batch_size`, each at most the batch size.
        preferred_batch_sizes: Vec<usize>,
    },
}

/// The rules one model version's sequences follow.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencePolicy {
    /// How batches are formed.
    pub strategy: SequenceStrategy,
    /// Sequences scheduled at once; more wait in the backlog.
    pub slots: usize,
    /// Requests in one batch (1 for a model that does not batch).
    pub max_batch: usize,
    /// How long the oldest ready request may wait for a fuller batch.
    pub max_queue_delay: Duration,
    /// A sequence with nothing queued or running for longer than this is released.
    pub idle_timeout: Duration,
    /// Live sequences (in slots and in the backlog) at most; a new sequence beyond is refused.
    pub max_sequences: usize,
    /// Requests queued in one sequence at most.
    pub max_queued_per_sequence: usize,
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceError {
    /// A request without START for a sequence the book does not know.
    NotStarted(CorrelationId),
    /// A request without START for a sequence that was released for being idle.
    IdleReleased(CorrelationId),
    /// A new sequence while `max_sequences` are live.
    TooManySequences {
        /// The limit.
        limit: usize,
    },
    /// A request for a sequence that already has `max_queued_per_sequence` waiting.
    SequenceQueueFull {
        /// The sequence.
        id: CorrelationId,
        /// The limit.
        limit: usize,
    },
}

/// A request of a sequence, as it is submitted.
#[derive(Debug)]
pub struct SequenceRequest<P> {
    /// The sequence it belongs to.
    pub id: CorrelationId,
    /// The `sequence_start` flag.
    pub start: bool,
    /// The `sequence_end` flag.
    pub end: bool,
    /// What the caller runs.
    pub payload: P,
}

/// One request of a batch, with what the model's control and state inputs need.
#[derive(Debug)]
pub struct SequenceRow<P, S> {
    /// The key [`SequenceBook::submit`] returned for the request.
    pub key: u64,
    /// Its sequence.
    pub id: CorrelationId,
    /// The slot its sequence holds.
    pub slot: usize,
    /// Whether it begins from the initial state (its START flag, or the sequence's first run).
    pub start: bool,
    /// Its END flag.
    pub end: bool,
    /// The state the sequence's previous run left; `None` when `start`.
    pub state: Option<S>,
    /// What the caller runs.
    pub payload: P,
}

/// What an idle instance should do next.
#[derive(Debug)]
pub enum SequenceNext<P, S> {
    /// Run these requests as one batch, then [`SequenceBook::complete`] each row.
    Run(Vec<SequenceRow<P, S>>),
    /// Nothing to run before this instant (a batch delay or an idle timeout ends), or before the next
    /// submission when `None`.
    Wait(Option<Instant>),
}

#[derive(Debug)]
struct Queued<P> {
    key: u64,
    start: bool,
    end: bool,
    arrived: Instant,
    payload: P,
}

#[derive(Debug)]
struct Sequence<P, S> {
    queue: VecDeque<Queued<P>>,
    running: bool,
    slot: Option<usize>,
    state: Option<S>,
    /// The last request submitted carried END: the sequence is released once its requests ran.
    closing: bool,
    last_active: Instant,
}

/// The live sequences of one model version and what runs next.
#[derive(Debug)]
pub struct SequenceBook<P, S> {
    policy: SequencePolicy,
    sequences: HashMap<CorrelationId, Sequence<P, S>>,
    /// Which sequence holds each slot.
    slots: Vec<Option<CorrelationId>>,
    backlog: VecDeque<CorrelationId>,
    /// Sequences released for being idle, remembered (at most `max_sequences`, oldest forgotten first) so
    /// that a late request learns why its sequence is gone.
    idle_released: VecDeque<CorrelationId>,
    idle_released_set: HashSet<CorrelationId>,
    next_key: u64,
}

impl<P: Payload, S> SequenceBook<P, S> {
    /// An empty book following `policy` (at least one slot and one request per batch).
    pub fn new(mut policy: SequencePolicy) -> Self {
        policy.slots = policy.slots.max(1);
        policy.max_batch = policy.max_batch.max(1);
        SequenceBook {
            slots: vec![None; policy.slots],
            policy,
            sequences: HashMap::new(),
            backlog: VecDeque::new(),
            idle_released: VecDeque::new(),
            idle_released_set: HashSet::new(),
            next_key: 0,
        }
    }

    /// Live sequences, in slots and in the backlog.
    pub fn live(&self) -> usize {
        self.sequences.len()
    }

    /// Requests queued, in every sequence.
    pub fn queued(&self) -> usize {
        self.sequences.values().map(|s| s.queue.len()).sum()
    }

    /// Queues `request` at `now`, returning the key that names it in [`SequenceRow::key`] and
    /// [`SequenceBook::cancel`]. A request without START must belong to a live sequence whose last request
    /// did not END it; a START of a live sequence queues behind its earlier requests and restarts its state
    /// when it runs (Triton lets the earlier requests finish first, too).
    pub fn submit(&mut self, request: SequenceRequest<P>, now: Instant) -> Result<u64, SequenceError> {
        let SequenceRequest {
            id,
            start,
            end,
            payload,
        } = request;
        let key = self.next_key;
        let queued = Queued {
            key,
            start,
            end,
            arrived: now,
            payload,
        };
        if let Some(sequence) = self.sequences.get_mut(&id) {
            if sequence.closing && !start {
                return Err(SequenceError::NotStarted(id));
            }
            if sequence.queue.len() >= self.policy.max_queued_per_sequence {
                return Err(SequenceError::SequenceQueueFull {
                    limit: self.policy.max_queued_per_sequence,
                    id,
                });
            }
            sequence.queue.push_back(queued);
            sequence.closing = end;
            sequence.last_active = now;
        } else {
            if !start {
                return Err(if self.idle_released_set.contains(&id) {
                    SequenceError::IdleReleased(id)
                } else {
                    SequenceError::NotStarted(id)
                });
            }
            if self.sequences.len() >= self.policy.max_sequences {
                return Err(SequenceError::TooManySequences {
                    limit: self.policy.max_sequences,
                });
            }
            if self.idle_released_set.remove(&id) {
                self.idle_released.retain(|released| *released != id);
            }
            let slot = self.slots.iter().position(Option::is_none);
            match slot {
                Some(slot) => self.slots[slot] = Some(id.clone()),
                None => self.backlog.push_back(id.clone()),
            }
            self.sequences.insert(
                id,
                Sequence {
                    queue: VecDeque::from([queued]),
                    running: false,
                    slot,
                    state: None,
                    closing: end,
                    last_active: now,
                },
            );
        }
        self.next_key += 1;
        Ok(key)
    }

    /// Takes the request `key` of sequence `id` back if it is still queued (its caller stopped waiting),
    /// returning it. The sequence's other requests keep their order; if the request was the sequence's
    /// END, the sequence still ends once its earlier requests ran.
    pub fn cancel(&mut self, id: &CorrelationId, key: u64, now: Instant) -> Option<P> {
        let sequence = self.sequences.get_mut(id)?;
        let at = sequence.queue.iter().position(|q| q.key == key)?;
        let removed = sequence.queue.remove(at)?;
        sequence.last_active = now;
        self.release_if_done(id);
        Some(removed.payload)
    }

    /// Records that a row of sequence `id` finished at `now`: `state` is what its next request starts from
    /// (the row's new state when it ran, the state it was given when it failed; `None` starts afresh). A
    /// row that ended its sequence releases it, unless a new START is queued.
    pub fn complete(&mut self, id: &CorrelationId, end: bool, state: Option<S>, now: Instant) {
        let Some(sequence) = self.sequences.get_mut(id) else {
            return;
        };
        sequence.running = false;
        sequence.last_active = now;
        sequence.state = if end { None } else { state };
        self.release_if_done(id);
    }

    /// Releases every sequence idle for longer than the idle timeout at `now`, returning their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<CorrelationId> {
        let timeout = self.policy.idle_timeout;
        let idle: Vec<CorrelationId> = self
            .sequences
            .iter()
            .filter(|(_, s)| {
                !s.running && s.queue.is_empty() && now.saturating_duration_since(s.last_active) >= timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            self.release(id);
            self.idle_released.push_back(id.clone());
            self.idle_released_set.insert(id.clone());
            while self.idle_released.len() > self.policy.max_sequences {
                if let Some(forgotten) = self.idle_released.pop_front() {
                    self.idle_released_set.remove(&forgotten);
                }
            }
        }
        idle
    }

    /// The batch to run at `now`, or how long to wait for one. Idle sequences are released first.
    pub fn next_batch(&mut self, now: Instant) -> SequenceNext<P, S> {
        self.expire(now);
        let mut ready: Vec<(usize, Instant, &CorrelationId)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, id)| {
                let id = id.as_ref()?;
                let sequence = self.sequences.get(id)?;
                let head = sequence.queue.front()?;
                (!sequence.running).then_some((slot, head.arrived, id))
            })
            .collect();
        let idle_deadline = self.idle_deadline();
        if ready.is_empty() {
            return SequenceNext::Wait(idle_deadline);
        }
        let target = match &self.policy.strategy {
            SequenceStrategy::Direct {
                minimum_slot_utilization,
            } => {
                let share = f64::from(minimum_slot_utilization.clamp(0.0, 1.0));
                ((share * self.policy.max_batch as f64).ceil() as usize).max(1)
            }
            SequenceStrategy::Oldest {
                preferred_batch_sizes,
            } => {
                ready.sort_by_key(|(slot, arrived, _)| (*arrived, *slot));
                preferred_batch_sizes
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(self.policy.max_batch)
            }
        }
        .min(self.policy.max_batch);
        let first = ready[0].2;
        let first_payload = self.head(first);
        let chosen: Vec<CorrelationId> = ready
            .iter()
            .filter(|(_, _, id)| self.head(id).batches_with(first_payload))
            .take(self.policy.max_batch)
            .map(|(_, _, id)| (*id).clone())
            .collect();
        let oldest = ready.iter().map(|(_, arrived, _)| *arrived).min().unwrap_or(now);
        let release_at = oldest + self.policy.max_queue_delay;
        if chosen.len() < target && now < release_at {
            let wake = idle_deadline.map_or(release_at, |idle| idle.min(release_at));
            return SequenceNext::Wait(Some(wake));
        }
        let rows = chosen
            .into_iter()
            .filter_map(|id| {
                let sequence = self.sequences.get_mut(&id)?;
                let queued = sequence.queue.pop_front()?;
                sequence.running = true;
                let state = sequence.state.take();
                let start = queued.start || state.is_none();
                let state = if start { None } else { state };
                Some(SequenceRow {
                    key: queued.key,
                    slot: sequence.slot.unwrap_or_default(),
                    id,
                    start,
                    end: queued.end,
                    state,
                    payload: queued.payload,
                })
            })
            .collect();
        SequenceNext::Run(rows)
    }

    fn head(&self, id: &CorrelationId) -> &P {
        // Only called for ids found with a queued request just above.
        #[allow(clippy::expect_used)]
        let head = self
            .sequences
            .get(id)
            .and_then(|s| s.queue.front())
            .expect("a ready sequence has a queued request");
        &head.payload
    }

    /// When the first sequence with nothing queued or running becomes idle.
    fn idle_deadline(&self) -> Option<Instant> {
        self.sequences
            .values()
            .filter(|s| !s.running && s.queue.is_empty())
            .map(|s| s.last_active + self.policy.idle_timeout)
            .min()
    }

    fn release_if_done(&mut self, id: &CorrelationId) {
        if let Some(sequence) = self.sequences.get(id)
            && sequence.closing
            && !sequence.running
            && sequence.queue.is_empty()
        {
            self.release(id);
        }
    }

    /// Forgets sequence `id` and gives its slot to the first sequence of the backlog.
    fn release(&mut self, id: &CorrelationId) {
        let Some(sequence) = self.sequences.remove(id) else {
            return;
        };
        match sequence.slot {
            Some(slot) => {
                self.slots[slot] = None;
                if let Some(next) = self.backlog.pop_front() {
                    if let Some(waiting) = self.sequences.get_mut(&next) {
                        waiting.slot = Some(slot);
                    }
                    self.slots[slot] = Some(next);
                }
            }
            None => self.backlog.retain(|waiting| waiting != id),
        }
    }
}

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
