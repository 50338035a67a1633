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
fn an_arrival_below_the_batch_size_does_not_change_when_a_batch_leaves() {
    let mut h = Harness::new(delayed(4, 10));
    h.push(0, 2, 0, 0);
    assert!(!h.state.may_send_before_delay(), "2 of 4 rows");
    h.push(3, 1, 1, 0);
    assert!(!h.state.may_send_before_delay(), "3 rows, one of another shape");
    h.push(4, 1, 0, 0);
    assert!(h.state.may_send_before_delay(), "4 rows may fill a batch");
}

#[test]
fn an_arrival_at_a_higher_level_may_send_an_older_request_sooner() {
    let policy = BatchingPolicy {
        levels: vec![
            QueuePolicy {
                allow_timeout_override: true,
                timeout_action: TimeoutAction::Delay,
                ..QueuePolicy::default()
            },
            QueuePolicy::default(),
        ],
        ..delayed(8, 10)
    };
    let mut h = Harness::new(policy);
    h.push(0, 1, 7, 2); // level 2, shape 7: could leave at 10, but waits behind level 1
    h.push_with(2, 1, 9, 1, Some(ms(1))).expect("queued"); // level 1, shape 9: delayed at 3
    let Next::WaitUntil(told) = h.next(4) else {
        panic!("one row of 8 waits")
    };
    assert_eq!(told, h.at(12), "the delayed level-1 request's own delay");
    h.push(5, 1, 7, 1); // level 1 again, on time, shape 7: it batches with the level-2 request of 0
    assert!(h.state.may_send_before_delay());
    assert_eq!(
        h.batch(10),
        [2, 0],
        "leaves at 10, before the 12 the instance was told"
    );
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

/// The adaptive queue delay (`BatchingPolicy::adaptive_delay`), which Triton does not have: Triton's
/// dynamic batcher (core `src/dynamic_batch_scheduler.cc`, `GetDynamicBatch`) always waits out
/// `max_queue_delay_microseconds` for a batch that is neither full nor of a preferred size.
mod adaptive {
    use super::*;

    /// Time steps of the simulations, in µs: a free instance asks for a batch at each.
    const TICK: u64 = 10;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn policy(max_batch_size: usize, delay_us: u64, adaptive: bool) -> BatchingPolicy {
        BatchingPolicy {
            max_queue_delay: us(delay_us),
            adaptive_delay: adaptive,
            ..BatchingPolicy::greedy(max_batch_size)
        }
    }

    /// A batch as it left: how many requests, and the longest any of them waited.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Formed {
        size: usize,
        longest_wait: Duration,
    }

    /// One model instance fed 1-row requests, driven the way its scheduler drives it: the instance reports
    /// when it waits and when a batch has run, and while free asks for a batch at every tick (as arrivals
    /// and its timer would wake it). Each batch runs for `run` µs.
    struct Sim {
        state: BatcherState<Job>,
        start: Instant,
        now: u64,
        run: u64,
        busy_until: Option<u64>,
        formed: Vec<Formed>,
    }

    impl Sim {
        fn new(policy: BatchingPolicy, run: u64) -> Self {
            let mut state = BatcherState::new(policy);
            state.instance_waiting();
            Sim {
                state,
                start: Instant::now(),
                now: 0,
                run,
                busy_until: None,
                formed: Vec::new(),
            }
        }

        fn arrive(&mut self) {
            let request = Request {
                payload: Job { id: 0, shape: 0 },
                rows: 1,
                priority: 0,
                timeout: None,
                ticket: Ticket::new(),
            };
            assert!(self.state.enqueue(request, self.start + us(self.now)).is_ok());
            self.serve();
        }

        fn serve(&mut self) {
            if self.busy_until.is_some_and(|until| until <= self.now) {
                self.busy_until = None;
                self.state.batch_finished();
                self.state.instance_waiting();
            }
            if self.busy_until.is_some() {
                return;
            }
            match self.state.next_batch(self.start + us(self.now)) {
                Next::Batch(batch) => {
                    self.state.instance_not_waiting();
                    self.busy_until = Some(self.now + self.run);
                    self.formed.push(Formed {
                        size: batch.items.len(),
                        longest_wait: batch
                            .items
                            .iter()
                            .map(|item| item.queued_for)
                            .max()
                            .unwrap_or_default(),
                    });
                }
                Next::WaitUntil(at) => {
                    let oldest_allowed = self.start + us(self.now) + self.state.policy().max_queue_delay;
                    assert!(at <= oldest_allowed, "waits at most the delay");
                }
                Next::Idle => {}
            }
        }

        fn advance_to(&mut self, until: u64) {
            while self.now < until {
                self.now = (self.now + TICK).min(until);
                self.serve();
            }
        }

        /// `count` requests `gap` µs apart, whatever the server does (an open loop).
        fn open_loop(&mut self, count: usize, gap: u64) -> &[Formed] {
            let first = self.formed.len();
            for _ in 0..count {
                self.arrive();
                self.advance_to(self.now + gap);
            }
            self.advance_to(self.now + 10 * self.state.policy().max_queue_delay.as_micros() as u64);
            &self.formed[first..]
        }

        /// One client sending `count` requests, each `think` µs after the previous one was answered.
        fn closed_loop(&mut self, count: usize, think: u64) -> &[Formed] {
            let first = self.formed.len();
            for _ in 0..count {
                self.arrive();
                while self.busy_until.is_some() || !self.state.is_empty() {
                    self.advance_to(self.now + TICK);
                }
                self.advance_to(self.now + think);
            }
            &self.formed[first..]
        }
    }

    fn waits(formed: &[Formed]) -> Vec<u64> {
        formed.iter().map(|f| f.longest_wait.as_micros() as u64).collect()
    }

    #[test]
    fn one_request_in_flight_runs_at_once_even_when_it_comes_back_within_the_delay() {
        // A 180 µs round trip against a 500 µs delay: the next request always arrives within the delay, but
        // only after this one was answered, so waiting would never fill anything.
        let adaptive = Sim::new(policy(8, 500, true), 100).closed_loop(50, 80).to_vec();
        assert_eq!(adaptive.len(), 50);
        assert_eq!(waits(&adaptive), [0; 50], "no request waits");
        let fixed = Sim::new(policy(8, 500, false), 100).closed_loop(50, 80).to_vec();
        assert_eq!(
            waits(&fixed),
            [500; 50],
            "the fixed delay is waited out every time"
        );
    }

    #[test]
    fn a_high_arrival_rate_forms_full_batches_as_the_fixed_delay_does() {
        // A request every 20 µs against 100 µs runs: 8 requests come in 140 µs, well within the delay.
        let adaptive = Sim::new(policy(8, 500, true), 100).open_loop(400, 20).to_vec();
        let fixed = Sim::new(policy(8, 500, false), 100).open_loop(400, 20).to_vec();
        assert!(fixed.iter().all(|f| f.size == 8), "{fixed:?}");
        assert_eq!(
            adaptive[0].size, 1,
            "the first request knows no rate yet and runs at once"
        );
        let sizes: Vec<usize> = adaptive[1..].iter().map(|f| f.size).collect();
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 8), "{sizes:?}");
        assert!(
            adaptive.len() <= fixed.len() + 2,
            "{} vs {}",
            adaptive.len(),
            fixed.len()
        );
    }

    #[test]
    fn while_every_instance_is_busy_it_keeps_gathering() {
        let mut h = Harness::new(BatchingPolicy {
            adaptive_delay: true,
            ..delayed(8, 10)
        });
        h.state.instance_waiting();
        h.push(0, 1, 0, 0);
        assert_eq!(h.batch(0), [0], "alone: it runs at once");
        h.state.instance_not_waiting();
        for t in 1..=5 {
            // The only instance is busy: these could not run anyway, and they tell the batcher the rate.
            h.push(t, 1, 0, 0);
        }
        h.state.batch_finished();
        h.state.instance_waiting();
        match h.next(6) {
            // One request a millisecond: wait for up to 4 more gaps past the latest, within the delay.
            Next::WaitUntil(at) => assert_eq!(at, h.at(9)),
            other => panic!("expected to keep gathering, got {other:?}"),
        }
        h.push(6, 1, 0, 0);
        h.push(7, 1, 0, 0);
        assert!(matches!(h.next(7), Next::WaitUntil(_)));
        h.push(8, 1, 0, 0);
        assert_eq!(h.batch(8), [1, 2, 3, 4, 5, 6, 7, 8], "a full batch");
    }

    #[test]
    fn it_never_waits_longer_than_max_queue_delay() {
        // Requests keep coming every 40 µs, so the batcher keeps expecting one more, but 64 rows never fill:
        // every batch leaves by the time its oldest request has waited the delay (a little earlier: as soon
        // as the next request is not expected before then).
        let adaptive = Sim::new(policy(64, 500, true), 50).open_loop(300, 40).to_vec();
        assert!(adaptive.iter().all(|f| f.longest_wait <= us(500)), "{adaptive:?}");
        assert!(
            adaptive[3..adaptive.len() - 1]
                .iter()
                .all(|f| f.longest_wait >= us(460) && f.size >= 12),
            "{adaptive:?}"
        );
    }

    #[test]
    fn it_follows_the_load_down_and_up_again() {
        let mut sim = Sim::new(policy(8, 500, true), 100);
        sim.open_loop(400, 20);
        let quiet = waits(sim.closed_loop(30, 80));
        assert!(
            quiet.iter().all(|&w| w <= 80),
            "a few short waits while it notices: {quiet:?}"
        );
        assert!(quiet[3..].iter().all(|&w| w == 0), "then none: {quiet:?}");
        let busy: Vec<usize> = sim.open_loop(400, 20).iter().map(|f| f.size).collect();
        assert!(
            busy[4..busy.len() - 1].iter().all(|&s| s == 8),
            "full batches again: {busy:?}"
        );
    }

    #[test]
    fn without_the_flag_nothing_changes() {
        let mut h = Harness::new(delayed(8, 10));
        h.state.instance_waiting();
        h.push(0, 1, 0, 0);
        match h.next(0) {
            Next::WaitUntil(at) => assert_eq!(at, h.at(10)),
            other => panic!("expected to wait out the delay, got {other:?}"),
        }
    }
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
        /// A batch finished running; under the adaptive delay, instances wait or stop waiting.
        Finish,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1usize..=4, 0u32..2, 0u64..=2, proptest::option::of(1u64..30)).prop_map(
                |(rows, shape, priority, timeout_ms)| Step::Arrive { rows, shape, priority, timeout_ms }
            ),
            1 => (0usize..8).prop_map(Step::Cancel),
            2 => (0u64..15).prop_map(Step::Wait),
            3 => Just(Step::Batch),
            1 => Just(Step::Finish),
        ]
    }

    fn policy(action: TimeoutAction, delay_ms: u64, preferred: Vec<usize>, adaptive: bool) -> BatchingPolicy {
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
            adaptive_delay: adaptive,
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
            adaptive in any::<bool>(),
        ) {
            let action = if reject { TimeoutAction::Reject } else { TimeoutAction::Delay };
            let delay = ms(if delay_on { 5 } else { 0 });
            let mut h = Harness::new(policy(action, delay.as_millis() as u64, preferred, adaptive));
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
                    Step::Batch => match h.next(clock) {
                        Next::Batch(batch) => check(batch, &tickets, &mut ran)?,
                        Next::WaitUntil(at) => prop_assert!(at > h.at(clock) && at <= h.at(clock) + delay),
                        Next::Idle => {}
                    },
                    Step::Finish => {
                        h.state.batch_finished();
                        if clock.is_multiple_of(2) {
                            h.state.instance_waiting();
                        } else {
                            h.state.instance_not_waiting();
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

        /// An arrival that `may_send_before_delay` says cannot speed anything up never lets a batch leave
        /// before the moment an instance was told to wait until: leaving that instance asleep loses nothing.
        #[test]
        fn an_arrival_that_cannot_fill_a_batch_never_brings_its_departure_forward(
            steps in proptest::collection::vec(step(), 1..120),
            reject in any::<bool>(),
            preferred in proptest::collection::vec(1usize..=6, 0..3),
        ) {
            let action = if reject { TimeoutAction::Reject } else { TimeoutAction::Delay };
            let mut h = Harness::new(policy(action, 5, preferred, false));
            let mut clock = 0u64;
            let mut queued: Vec<Ticket> = Vec::new();
            for step in steps {
                match step {
                    Step::Arrive { rows, shape, priority, timeout_ms } => {
                        let before = h.next(clock);
                        let Ok((_, ticket)) = h.push_with(clock, rows, shape, priority, timeout_ms.map(ms)) else {
                            continue;
                        };
                        queued.push(ticket);
                        if let (Next::WaitUntil(told), false) = (before, h.state.may_send_before_delay()) {
                            match h.next(clock) {
                                Next::WaitUntil(at) => prop_assert!(at >= told, "departure brought forward"),
                                Next::Batch(_) => prop_assert!(false, "a batch left at an arrival said not to matter"),
                                Next::Idle => prop_assert!(false, "a queued request vanished"),
                            }
                        }
                    }
                    Step::Cancel(n) => {
                        queued.retain(Ticket::is_queued);
                        if let Some(ticket) = queued.get(n) {
                            ticket.withdraw();
                        }
                    }
                    Step::Wait(n) => clock += n,
                    Step::Batch | Step::Finish => {
                        let _ = h.next(clock);
                    }
                }
            }
        }
    }
}
