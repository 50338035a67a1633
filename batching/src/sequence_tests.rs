//! The sequence batcher's rules, one test each, and a property test of random interleavings, all driving
//! [`SequenceBook`] with made-up instants (time passes only when a test says so).

use std::collections::HashMap;

use super::*;

/// A request for tests: its sequence and its position in it, and a shape that decides what batches.
#[derive(Debug, Clone, PartialEq)]
struct Job {
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

fn policy(strategy: SequenceStrategy, slots: usize, max_batch: usize) -> SequencePolicy {
    SequencePolicy {
        strategy,
        slots,
        max_batch,
        max_queue_delay: Duration::ZERO,
        idle_timeout: ms(100),
        max_sequences: 8,
        max_queued_per_sequence: 4,
    }
}

fn direct(slots: usize, max_batch: usize) -> SequencePolicy {
    policy(
        SequenceStrategy::Direct {
            minimum_slot_utilization: 0.0,
        },
        slots,
        max_batch,
    )
}

fn request(id: u64, start: bool, end: bool) -> SequenceRequest<Job> {
    SequenceRequest {
        id: CorrelationId::Number(id),
        start,
        end,
        payload: Job { shape: 0 },
    }
}

fn rows(next: SequenceNext<Job, u32>) -> Vec<SequenceRow<Job, u32>> {
    match next {
        SequenceNext::Run(rows) => rows,
        SequenceNext::Wait(until) => panic!("expected a batch, the book waits until {until:?}"),
    }
}

#[test]
fn a_request_without_start_needs_a_live_sequence() {
    // Triton's SequenceBatchScheduler::Enqueue: "must specify the START flag on the first request".
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(direct(2, 2));
    let now = Instant::now();
    assert_eq!(
        book.submit(request(7, false, false), now),
        Err(SequenceError::NotStarted(CorrelationId::Number(7)))
    );
    book.submit(request(7, true, true), now).expect("a start");
    // The END is queued: the sequence takes no more requests without a new START.
    assert_eq!(
        book.submit(request(7, false, false), now),
        Err(SequenceError::NotStarted(CorrelationId::Number(7)))
    );
    book.submit(request(7, true, false), now)
        .expect("a new start queues behind");
}

#[test]
fn a_batch_takes_one_request_per_sequence_and_runs_them_in_order() {
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(direct(2, 2));
    let now = Instant::now();
    let first = book.submit(request(1, true, false), now).expect("queued");
    let second = book.submit(request(1, false, false), now).expect("queued");
    book.submit(request(2, true, false), now).expect("queued");
    let batch = rows(book.next_batch(now));
    assert_eq!(batch.len(), 2, "one row per sequence");
    assert_eq!(batch[0].key, first);
    assert!(batch.iter().all(|row| row.start && row.state.is_none()));
    // Sequence 1's second request waits for its first to finish.
    assert!(matches!(book.next_batch(now), SequenceNext::Wait(_)));
    book.complete(&CorrelationId::Number(1), false, Some(5), now);
    let batch = rows(book.next_batch(now));
    assert_eq!(batch[0].key, second);
    assert!(!batch[0].start);
    assert_eq!(batch[0].state, Some(5), "the state the previous request left");
}

#[test]
fn direct_waits_for_slot_utilization_until_the_queue_delay() {
    let mut policy = policy(
        SequenceStrategy::Direct {
            minimum_slot_utilization: 1.0,
        },
        2,
        2,
    );
    policy.max_queue_delay = ms(10);
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(policy);
    let now = Instant::now();
    book.submit(request(1, true, false), now).expect("queued");
    match book.next_batch(now) {
        SequenceNext::Wait(Some(until)) => assert_eq!(until, now + ms(10)),
        other => panic!("expected a wait, got {other:?}"),
    }
    assert_eq!(rows(book.next_batch(now + ms(10))).len(), 1);
}

#[test]
fn oldest_takes_the_sequences_whose_requests_came_first() {
    let strategy = SequenceStrategy::Oldest {
        preferred_batch_sizes: vec![],
    };
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(policy(strategy, 3, 2));
    let now = Instant::now();
    book.submit(request(1, true, false), now + ms(3)).expect("queued");
    book.submit(request(2, true, false), now + ms(1)).expect("queued");
    book.submit(request(3, true, false), now + ms(2)).expect("queued");
    let batch = rows(book.next_batch(now + ms(3)));
    let ids: Vec<_> = batch.iter().map(|row| row.id.clone()).collect();
    assert_eq!(ids, [CorrelationId::Number(2), CorrelationId::Number(3)]);
}

#[test]
fn a_sequence_beyond_the_slots_waits_in_the_backlog_until_one_ends() {
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(direct(1, 1));
    let now = Instant::now();
    book.submit(request(1, true, true), now).expect("queued");
    book.submit(request(2, true, false), now).expect("backlogged");
    let batch = rows(book.next_batch(now));
    assert_eq!(batch[0].id, CorrelationId::Number(1));
    assert!(matches!(book.next_batch(now), SequenceNext::Wait(_)));
    book.complete(&CorrelationId::Number(1), true, Some(1), now);
    assert_eq!(book.live(), 1, "the END released sequence 1");
    let batch = rows(book.next_batch(now));
    assert_eq!(batch[0].id, CorrelationId::Number(2));
    assert_eq!(batch[0].slot, 0, "the freed slot");
}

#[test]
fn an_idle_sequence_is_released_and_its_late_request_says_so() {
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(direct(1, 1));
    let now = Instant::now();
    book.submit(request(1, true, false), now).expect("queued");
    rows(book.next_batch(now));
    book.complete(&CorrelationId::Number(1), false, Some(1), now);
    match book.next_batch(now + ms(50)) {
        SequenceNext::Wait(Some(until)) => assert_eq!(until, now + ms(100)),
        other => panic!("expected a wait for the idle timeout, got {other:?}"),
    }
    assert_eq!(book.expire(now + ms(100)), [CorrelationId::Number(1)]);
    assert_eq!(book.live(), 0);
    assert_eq!(
        book.submit(request(1, false, false), now + ms(101)),
        Err(SequenceError::IdleReleased(CorrelationId::Number(1)))
    );
    book.submit(request(1, true, false), now + ms(102))
        .expect("a new START is welcome");
}

#[test]
fn cancelling_a_queued_request_keeps_the_order_and_an_end_still_ends() {
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(direct(1, 1));
    let now = Instant::now();
    let id = CorrelationId::Number(1);
    let first = book.submit(request(1, true, false), now).expect("queued");
    let second = book.submit(request(1, false, false), now).expect("queued");
    let third = book.submit(request(1, false, true), now).expect("queued");
    assert!(book.cancel(&id, second, now).is_some());
    assert_eq!(rows(book.next_batch(now))[0].key, first);
    book.complete(&id, false, Some(1), now);
    assert!(book.cancel(&id, third, now).is_some());
    assert_eq!(book.live(), 0, "the cancelled END still ended the sequence");
}

#[test]
fn limits_refuse_new_sequences_and_long_queues() {
    let mut policy = direct(1, 1);
    policy.max_sequences = 1;
    policy.max_queued_per_sequence = 1;
    let mut book: SequenceBook<Job, u32> = SequenceBook::new(policy);
    let now = Instant::now();
    book.submit(request(1, true, false), now).expect("queued");
    assert_eq!(
        book.submit(request(2, true, false), now),
        Err(SequenceError::TooManySequences { limit: 1 })
    );
    assert!(matches!(
        book.submit(request(1, false, false), now),
        Err(SequenceError::SequenceQueueFull { limit: 1, .. })
    ));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// A request of sequence `seq` (START when `start`, END when `end`), of shape `shape`.
        Submit {
            seq: u64,
            start: bool,
            end: bool,
            shape: u32,
        },
        /// The caller of the `n`-th queued request stops waiting.
        Cancel(usize),
        /// An idle instance asks for a batch.
        Take,
        /// The `n`-th running batch finishes; it failed when `failed`.
        Finish { n: usize, failed: bool },
        /// Time passes.
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => (0u64..6, proptest::bool::weighted(0.3), proptest::bool::weighted(0.2), 0u32..2)
                .prop_map(|(seq, start, end, shape)| Step::Submit { seq, start, end, shape }),
            1 => (0usize..8).prop_map(Step::Cancel),
            3 => Just(Step::Take),
            3 => (0usize..4, proptest::bool::weighted(0.1)).prop_map(|(n, failed)| Step::Finish { n, failed }),
            2 => (1u64..80).prop_map(Step::Advance),
        ]
    }

    /// What the test knows of a submitted request.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fate {
        Queued,
        Cancelled,
        Ran,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the interleaving of starts, ends, cancellations, failures and idle time: a batch holds
        /// at most one request per sequence and never two requests of a sequence run at once; a sequence's
        /// requests run in the order they came; each request runs at most once, a cancelled one never, and
        /// every other one runs once the book is drained; each run that does not start its sequence gets
        /// exactly the state its sequence's previous run left (counted here as runs since the START); and once everything ran and time passed, every slot
        /// is free again.
        #[test]
        fn sequences_run_in_order_one_at_a_time_and_nothing_is_lost(
            steps in proptest::collection::vec(step(), 1..150),
            oldest in any::<bool>(),
            slots in 1usize..4,
            max_batch in 1usize..4,
            delay in 0u64..20,
        ) {
            let strategy = if oldest {
                SequenceStrategy::Oldest { preferred_batch_sizes: vec![max_batch] }
            } else {
                SequenceStrategy::Direct { minimum_slot_utilization: 0.5 }
            };
            let mut policy = policy(strategy, slots, max_batch);
            policy.max_queue_delay = ms(delay);
            policy.max_sequences = 5;
            let mut book: SequenceBook<Job, u32> = SequenceBook::new(policy);
            let start = Instant::now();
            let mut now = start;
            let mut fates: HashMap<u64, (CorrelationId, Fate)> = HashMap::new();
            let mut last_ran: HashMap<CorrelationId, u64> = HashMap::new();
            let mut running: Vec<Vec<SequenceRow<Job, u32>>> = Vec::new();
            let take = |book: &mut SequenceBook<Job, u32>, now: Instant,
                        running: &mut Vec<Vec<SequenceRow<Job, u32>>>,
                        fates: &mut HashMap<u64, (CorrelationId, Fate)>,
                        last_ran: &mut HashMap<CorrelationId, u64>,
                        left: &HashMap<CorrelationId, u32>| -> Result<bool, TestCaseError> {
                let SequenceNext::Run(rows) = book.next_batch(now) else { return Ok(false) };
                prop_assert!(!rows.is_empty() && rows.len() <= max_batch);
                for (i, row) in rows.iter().enumerate() {
                    prop_assert!(rows[..i].iter().all(|other| other.id != row.id), "one row per sequence");
                    prop_assert!(rows[0].payload.batches_with(&row.payload));
                    prop_assert!(
                        running.iter().flatten().all(|other| other.id != row.id),
                        "sequence {} runs twice at once", row.id
                    );
                    let fate = fates.get_mut(&row.key).expect("a submitted request");
                    prop_assert_eq!(fate.1, Fate::Queued, "request {} ran twice or after its cancellation", row.key);
                    fate.1 = Fate::Ran;
                    prop_assert_eq!(&fate.0, &row.id);
                    if let Some(previous) = last_ran.insert(row.id.clone(), row.key) {
                        prop_assert!(previous < row.key, "sequence {} ran {} after {}", row.id, row.key, previous);
                    }
                    prop_assert_eq!(row.start, row.state.is_none());
                    if !row.start {
                        prop_assert_eq!(row.state, left.get(&row.id).copied(), "sequence {} got another state", row.id);
                    }
                }
                running.push(rows);
                Ok(true)
            };
            // The state each sequence was last left with, to check that its next run gets exactly that.
            let mut left: HashMap<CorrelationId, u32> = HashMap::new();
            let finish = |book: &mut SequenceBook<Job, u32>, now: Instant, rows: Vec<SequenceRow<Job, u32>>, failed: bool,
                          left: &mut HashMap<CorrelationId, u32>| {
                for row in rows {
                    let state = if failed { row.state } else { Some(row.state.map_or(1, |runs| runs + 1)) };
                    match state {
                        Some(state) if !row.end => left.insert(row.id.clone(), state),
                        _ => left.remove(&row.id),
                    };
                    book.complete(&row.id, row.end, state, now);
                }
            };
            for step in steps {
                match step {
                    Step::Submit { seq, start, end, shape } => {
                        let id = CorrelationId::Number(seq);
                        let request = SequenceRequest { id: id.clone(), start, end, payload: Job { shape } };
                        if let Ok(key) = book.submit(request, now) {
                            prop_assert!(fates.insert(key, (id, Fate::Queued)).is_none(), "keys are unique");
                        }
                    }
                    Step::Cancel(n) => {
                        let mut queued: Vec<_> = fates.iter().filter(|(_, (_, f))| *f == Fate::Queued).map(|(k, (id, _))| (*k, id.clone())).collect();
                        queued.sort_by_key(|(key, _)| *key);
                        if let Some((key, id)) = queued.get(n).cloned() {
                            prop_assert!(book.cancel(&id, key, now).is_some(), "a queued request can be cancelled");
                            fates.insert(key, (id, Fate::Cancelled));
                        }
                    }
                    Step::Take => {
                        take(&mut book, now, &mut running, &mut fates, &mut last_ran, &left)?;
                    }
                    Step::Finish { n, failed } => {
                        if n < running.len() {
                            let rows = running.remove(n);
                            finish(&mut book, now, rows, failed, &mut left);
                        }
                    }
                    Step::Advance(millis) => now += ms(millis),
                }
            }
            // Drain: finish what runs, then run everything queued, letting time pass for batch delays.
            for _ in 0..1000 {
                for rows in std::mem::take(&mut running) {
                    finish(&mut book, now, rows, false, &mut left);
                }
                if !take(&mut book, now, &mut running, &mut fates, &mut last_ran, &left)? {
                    if book.queued() == 0 {
                        break;
                    }
                    now += ms(delay.max(1));
                }
            }
            prop_assert!(running.is_empty());
            prop_assert!(fates.values().all(|(_, fate)| *fate != Fate::Queued), "a request was lost");
            now += ms(1000);
            book.expire(now);
            prop_assert_eq!(book.live(), 0, "every sequence ended or idled out");
            prop_assert!(book.slots.iter().all(Option::is_none), "every slot is free");
            prop_assert!(book.backlog.is_empty());
        }
    }
}
