//! One test per batching rule, driving [`BatcherState`] directly with made-up instants.

use std::time::{Duration, Instant};

use super::*;
use crate::{
    policy::{BatchingPolicy, QueuePolicy, TimeoutAction},
    ticket::TicketState,
};

/// A request for tests: an id to follow it, and the shape of its non-batch dimensions.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    id: u32,
    shape: u32,
}

impl Payload for Job {
    fn batches_with(&self, other: &Self) -> bool {
        self.shape == other.shape
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Harness {
    state: BatcherState<Job>,
    start: Instant,
    next_id: u32,
}

impl Harness {
    fn new(policy: BatchingPolicy) -> Self {
        Harness {
            state: BatcherState::new(policy),
            start: Instant::now(),
            next_id: 0,
        }
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + ms(millis)
    }

    /// Queues a request at `millis` and returns its id and ticket.
    fn push(&mut self, millis: u64, rows: usize, shape: u32, priority: u64) -> (u32, Ticket) {
        self.push_with(millis, rows, shape, priority, None)
            .expect("queued")
    }

    fn push_with(
        &mut self,
        millis: u64,
        rows: usize,
        shape: u32,
        priority: u64,
        timeout: Option<Duration>,
    ) -> Result<(u32, Ticket), EnqueueError> {
        let id = self.next_id;
        self.next_id += 1;
        let ticket = Ticket::new();
        let request = Request {
            payload: Job { id, shape },
            rows,
            priority,
            timeout,
            ticket: ticket.clone(),
        };
        let now = self.at(millis);
        self.state
            .enqueue(request, now)
            .map(|_| (id, ticket))
            .map_err(|r| r.error)
    }

    /// The ids of the batch formed at `millis`, or a panic naming what happened instead.
    fn batch(&mut self, millis: u64) -> Vec<u32> {
        match self.state.next_batch(self.at(millis)) {
            Next::Batch(batch) => batch.items.iter().map(|item| item.payload.id).collect(),
            other => panic!("expected a batch at {millis} ms, got {other:?}"),
        }
    }

    fn next(&mut self, millis: u64) -> Next<Job> {
        self.state.next_batch(self.at(millis))
    }
}

fn delayed(max_batch_size: usize, delay_ms: u64) -> BatchingPolicy {
    BatchingPolicy {
        max_queue_delay: ms(delay_ms),
        ..BatchingPolicy::greedy(max_batch_size)
    }
}

#[test]
fn greedy_batching_takes_everything_queued_at_once() {
    let mut h = Harness::new(BatchingPolicy::greedy(8));
    for _ in 0..3 {
        h.push(0, 1, 0, 0);
    }
    assert_eq!(h.batch(0), [0, 1, 2]);
    assert!(matches!(h.next(0), Next::Idle));
}

#[test]
fn a_batch_never_exceeds_max_batch_size_and_a_request_is_never_split() {
    let mut h = Harness::new(BatchingPolicy::greedy(8));
    h.push(0, 5, 0, 0);
    h.push(0, 2, 0, 0);
    h.push(0, 4, 0, 0);
    h.push(0, 1, 0, 0);
    // 5 + 2 = 7; the 4-row request does not fit and is not split, so the batch closes at 7 rows.
    assert_eq!(h.batch(0), [0, 1]);
    assert_eq!(h.batch(0), [2, 3]);
}

#[test]
fn rows_are_counted_by_the_first_dimension() {
    let mut h = Harness::new(delayed(4, 10));
    h.push(0, 3, 0, 0);
    assert!(
        matches!(h.next(0), Next::WaitUntil(_)),
        "3 of 4 rows: wait for more"
    );
    h.push(1, 1, 0, 0);
    let Next::Batch(batch) = h.next(1) else {
        panic!("4 rows fill the batch")
    };
    assert_eq!(batch.rows, 4);
    assert_eq!(batch.items.iter().map(|i| i.rows).collect::<Vec<_>>(), [3, 1]);
}

#[test]
fn only_requests_of_the_same_shape_share_a_batch() {
    let mut h = Harness::new(BatchingPolicy::greedy(8));
    h.push(0, 1, 7, 0);
    h.push(0, 1, 9, 0);
    h.push(0, 1, 7, 0);
    h.push(0, 1, 9, 0);
    assert_eq!(h.batch(0), [0, 2]);
    assert_eq!(h.batch(0), [1, 3]);
}

#[test]
fn the_largest_preferred_size_available_is_sent_at_once() {
    let policy = BatchingPolicy {
        preferred_batch_sizes: vec![2, 4],
        ..delayed(8, 100)
    };
    let mut h = Harness::new(policy);
    for _ in 0..5 {
        h.push(0, 1, 0, 0);
    }
    assert_eq!(
        h.batch(0),
        [0, 1, 2, 3],
        "4 is preferred and available; 5 is not preferred"
    );
    assert!(
        matches!(h.next(0), Next::WaitUntil(_)),
        "1 row left waits out the delay"
    );
}

#[test]
fn without_a_preferred_or_full_batch_the_oldest_request_waits_out_the_delay() {
    let mut h = Harness::new(delayed(8, 10));
    h.push(0, 1, 0, 0);
    h.push(4, 1, 0, 0);
    match h.next(5) {
        Next::WaitUntil(at) => assert_eq!(at, h.at(10), "the delay counts from the oldest request"),
        other => panic!("expected to wait, got {other:?}"),
    }
    assert_eq!(h.batch(10), [0, 1], "after the delay, what is there is sent");
}

#[test]
fn a_full_batch_is_sent_before_the_delay() {
    let mut h = Harness::new(delayed(2, 1000));
    h.push(0, 1, 0, 0);
    h.push(0, 1, 0, 0);
    h.push(0, 1, 0, 0);
    assert_eq!(h.batch(0), [0, 1]);
}

#[test]
fn higher_priority_levels_go_first_and_priority_zero_is_the_default_level() {
    let policy = BatchingPolicy {
        levels: vec![QueuePolicy::default(); 3],
        default_level: 2,
        ..BatchingPolicy::greedy(2)
    };
    let mut h = Harness::new(policy);
    h.push(0, 1, 0, 0); // default: level 3
    h.push(1, 1, 0, 2);
    h.push(2, 1, 0, 1);
    assert_eq!(h.batch(3), [2, 1]);
    assert_eq!(h.batch(3), [0]);
    assert_eq!(
        h.push_with(4, 1, 0, 4, None).map(|_| ()),
        Err(EnqueueError::InvalidPriority { given: 4, levels: 3 })
    );
}

#[test]
fn a_full_level_refuses_at_once_but_withdrawn_requests_free_their_places() {
    let policy = BatchingPolicy {
        levels: vec![QueuePolicy {
            max_queue_size: Some(2),
            ..QueuePolicy::default()
        }],
        ..delayed(8, 100)
    };
    let mut h = Harness::new(policy);
    let (_, first) = h.push(0, 1, 0, 0);
    h.push(0, 1, 0, 0);
    assert_eq!(
        h.push_with(0, 1, 0, 0, None).map(|_| ()),
        Err(EnqueueError::QueueFull {
            level: 1,
            capacity: 2
        })
    );
    assert!(first.withdraw());
    assert!(
        h.push_with(0, 1, 0, 0, None).is_ok(),
        "the withdrawn request's place is free"
    );
}

#[test]
fn reject_timeouts_come_from_the_policy_and_may_only_be_shortened() {
    let strict = |allow| BatchingPolicy {
        levels: vec![QueuePolicy {
            default_timeout: Some(ms(50)),
            allow_timeout_override: allow,
            ..QueuePolicy::default()
        }],
        ..delayed(8, 1000)
    };
    let mut state = BatcherState::<Job>::new(strict(true));
    let now = Instant::now();
    let admit = |state: &mut BatcherState<Job>, timeout| {
        let request = Request {
            payload: Job { id: 0, shape: 0 },
            rows: 1,
            priority: 0,
            timeout,
            ticket: Ticket::new(),
        };
        state
            .enqueue(request, now)
            .map(|a| a.reject_at)
            .map_err(|r| r.error)
    };
    assert_eq!(admit(&mut state, None), Ok(Some(now + ms(50))));
    assert_eq!(admit(&mut state, Some(ms(20))), Ok(Some(now + ms(20))));
    assert_eq!(
        admit(&mut state, Some(ms(80))),
        Ok(Some(now + ms(50))),
        "never raised"
    );
    let mut fixed = BatcherState::<Job>::new(strict(false));
    assert_eq!(
        admit(&mut fixed, Some(ms(20))),
        Ok(Some(now + ms(50))),
        "override not allowed"
    );
}

#[test]
fn a_request_past_its_reject_timeout_is_expired_and_never_batched() {
    let policy = BatchingPolicy {
        levels: vec![QueuePolicy {
            default_timeout: Some(ms(5)),
            ..QueuePolicy::default()
        }],
        ..delayed(8, 1)
    };
    let mut h = Harness::new(policy);
    let (_, old) = h.push(0, 1, 0, 0);
    h.push(8, 1, 0, 0);
    assert_eq!(h.batch(9), [1]);
    assert_eq!(old.state(), TicketState::Expired);
}

#[test]
fn delayed_requests_go_after_live_ones_of_their_level_but_before_lower_levels() {
    let policy = BatchingPolicy {
        levels: vec![
            QueuePolicy {
                default_timeout: Some(ms(5)),
                timeout_action: TimeoutAction::Delay,
                ..QueuePolicy::default()
            },
            QueuePolicy::default(),
        ],
        ..BatchingPolicy::greedy(1)
    };
    let mut h = Harness::new(policy);
    h.push(0, 1, 0, 1); // times out at 5 and is delayed
    h.push(10, 1, 0, 2); // lower level
    h.push(10, 1, 0, 1); // same level, on time
    assert_eq!(h.batch(10), [2]);
    assert_eq!(h.batch(10), [0], "the delayed request still runs, before level 2");
    assert_eq!(h.batch(10), [1]);
}

#[test]
fn withdrawn_requests_are_never_batched() {
    let mut h = Harness::new(BatchingPolicy::greedy(8));
    let (_, gone) = h.push(0, 1, 0, 0);
    h.push(0, 1, 0, 0);
    let (_, also_gone) = h.push(0, 1, 0, 0);
    assert!(gone.withdraw() && also_gone.withdraw());
    assert_eq!(h.batch(0), [1]);
    assert!(matches!(h.next(0), Next::Idle));
    assert!(h.state.is_empty(), "withdrawn requests are cleared");
}

#[test]
fn without_dynamic_batching_each_request_runs_alone() {
    let mut h = Harness::new(BatchingPolicy::unbatched(None));
    h.push(0, 3, 0, 0);
    h.push(0, 1, 0, 0);
    assert_eq!(h.batch(0), [0]);
    assert_eq!(h.batch(0), [1]);
}

#[test]
fn a_request_larger_than_a_batch_is_refused() {
    let mut h = Harness::new(BatchingPolicy::greedy(4));
    assert_eq!(
        h.push_with(0, 5, 0, 0, None).map(|_| ()),
        Err(EnqueueError::TooManyRows { rows: 5, max: 4 })
    );
}

#[test]
fn batches_are_numbered_in_formation_order_without_gaps() {
    let mut h = Harness::new(BatchingPolicy::greedy(1));
    let (_, gone) = h.push(0, 1, 0, 0);
    h.push(0, 1, 0, 0);
    h.push(0, 1, 0, 0);
    let sequence = |next: Next<Job>| match next {
        Next::Batch(batch) => batch.sequence,
        other => panic!("expected a batch, got {other:?}"),
    };
    assert!(gone.withdraw());
    assert_eq!(sequence(h.next(0)), 0);
    assert_eq!(sequence(h.next(0)), 1);
}

#[test]
fn queue_time_is_reported_per_request() {
    let mut h = Harness::new(delayed(8, 10));
    h.push(0, 1, 0, 0);
    h.push(6, 1, 0, 0);
    let Next::Batch(batch) = h.next(10) else {
        panic!("the delay has passed")
    };
    let waits: Vec<Duration> = batch.items.iter().map(|i| i.queued_for).collect();
    assert_eq!(waits, [ms(10), ms(4)]);
}

mod properties {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    /// One step of a random interleaving.
    #[derive(Debug, Clone)]
    enum Step {
        /// A request arrives: rows, shape, priority (0 = default), timeout override in ms.
        Arrive {
            rows: usize,
            shape: u32,
            priority: u64,
            timeout_ms: Option<u64>,
        },
        /// The caller of the n-th request still queued gives up.
        Cancel(usize),
        /// Time passes.
        Wait(u64),
        /// An instance asks for a batch.
        Batch,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1usize..=4, 0u32..2, 0u64..=2, proptest::option::of(1u64..30)).prop_map(
                |(rows, shape, priority, timeout_ms)| Step::Arrive { rows, shape, priority, timeout_ms }
            ),
            1 => (0usize..8).prop_map(Step::Cancel),
            2 => (0u64..15).prop_map(Step::Wait),
            3 => Just(Step::Batch),
        ]
    }

    fn policy(action: TimeoutAction, delay_ms: u64, preferred: Vec<usize>) -> BatchingPolicy {
        let level = QueuePolicy {
            timeout_action: action,
            default_timeout: Some(ms(20)),
            allow_timeout_override: true,
            max_queue_size: Some(16),
        };
        BatchingPolicy {
            preferred_batch_sizes: preferred,
            levels: vec![level, QueuePolicy::default()],
            default_level: 1,
            ..delayed(6, delay_ms)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the interleaving, every batch respects the size and shape rules, no request runs twice,
        /// a request withdrawn or expired never runs, and every other request runs exactly once.
        #[test]
        fn every_live_request_runs_exactly_once(
            steps in proptest::collection::vec(step(), 1..120),
            delay_on in any::<bool>(),
            reject in any::<bool>(),
            preferred in proptest::collection::vec(1usize..=6, 0..3),
        ) {
            let action = if reject { TimeoutAction::Reject } else { TimeoutAction::Delay };
            let mut h = Harness::new(policy(action, if delay_on { 5 } else { 0 }, preferred));
            let mut clock = 0u64;
            let mut tickets: HashMap<u32, (Ticket, usize, u32)> = HashMap::new();
            let mut ran: HashSet<u32> = HashSet::new();
            let check = |batch: Batch<Job>, tickets: &HashMap<u32, (Ticket, usize, u32)>, ran: &mut HashSet<u32>| {
                prop_assert!(batch.rows <= 6);
                prop_assert_eq!(batch.rows, batch.items.iter().map(|i| i.rows).sum::<usize>());
                let shape = batch.items[0].payload.shape;
                for item in &batch.items {
                    let (ticket, rows, _) = &tickets[&item.payload.id];
                    prop_assert_eq!(item.payload.shape, shape);
                    prop_assert_eq!(item.rows, *rows);
                    prop_assert_eq!(ticket.state(), TicketState::Taken);
                    prop_assert!(ran.insert(item.payload.id), "request {} ran twice", item.payload.id);
                }
                Ok(())
            };
            for step in steps {
                match step {
                    Step::Arrive { rows, shape, priority, timeout_ms } => {
                        if let Ok((id, ticket)) = h.push_with(clock, rows, shape, priority, timeout_ms.map(ms)) {
                            tickets.insert(id, (ticket, rows, shape));
                        }
                    }
                    Step::Cancel(n) => {
                        let mut queued: Vec<_> = tickets.iter().filter(|(_, t)| t.0.is_queued()).collect();
                        queued.sort_by_key(|(id, _)| **id);
                        if let Some((_, (ticket, _, _))) = queued.get(n) {
                            ticket.withdraw();
                        }
                    }
                    Step::Wait(n) => clock += n,
                    Step::Batch => {
                        if let Next::Batch(batch) = h.next(clock) {
                            check(batch, &tickets, &mut ran)?;
                        }
                    }
                }
            }
            // Drain: long after every delay, everything still queued runs.
            clock += 1_000;
            loop {
                match h.next(clock) {
                    Next::Batch(batch) => check(batch, &tickets, &mut ran)?,
                    Next::Idle => break,
                    Next::WaitUntil(_) => prop_assert!(false, "nothing should wait after every delay"),
                }
            }
            for (id, (ticket, _, _)) in &tickets {
                match ticket.state() {
                    TicketState::Taken => prop_assert!(ran.contains(id)),
                    TicketState::Withdrawn | TicketState::Expired => prop_assert!(!ran.contains(id)),
                    TicketState::Queued => prop_assert!(false, "request {} was never decided", id),
                }
            }
        }
    }
}
