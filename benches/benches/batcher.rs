//! Cost of the batcher's bookkeeping per request, from enqueue to dispatch, with an empty queue and with
//! 10,000 requests already waiting. Run with `cargo bench -p ferry-benches --bench batcher`.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use std::{
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_batching::{BatcherState, BatchingPolicy, Next, Payload, Request, Scheduler, Ticket};

/// A request that batches with every other one.
struct Item;

impl Payload for Item {
    fn batches_with(&self, _: &Self) -> bool {
        true
    }
}

fn request() -> Request<Item> {
    Request {
        payload: Item,
        rows: 1,
        priority: 0,
        timeout: None,
        ticket: Ticket::new(),
    }
}

fn policy(max_batch_size: usize) -> BatchingPolicy {
    BatchingPolicy {
        levels: vec![ferry_batching::QueuePolicy::default()],
        max_queue_delay: Duration::from_micros(100),
        ..BatchingPolicy::greedy(max_batch_size)
    }
}

/// Enqueues `batch` requests and dispatches them as one batch, on a state holding `backlog` requests.
fn state_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher_state_enqueue_to_dispatch");
    for backlog in [0usize, 10_000] {
        for batch in [1usize, 32] {
            let mut state = BatcherState::new(policy(batch));
            let now = Instant::now();
            for _ in 0..backlog {
                assert!(state.enqueue(request(), now).is_ok());
            }
            group.throughput(Throughput::Elements(batch as u64));
            let id = BenchmarkId::new(format!("queued_{backlog}"), format!("batch_{batch}"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    for _ in 0..batch {
                        let _ = state.enqueue(request(), now);
                    }
                    match state.next_batch(now) {
                        Next::Batch(batch) => batch.rows,
                        _ => 0,
                    }
                });
            });
        }
    }
    group.finish();
}

/// The same through the thread-safe scheduler that handlers and instances share (lock and signal included).
fn scheduler_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler_submit_to_batch");
    for backlog in [0usize, 10_000] {
        let scheduler = Scheduler::new(policy(1));
        let running = AtomicBool::new(false);
        for _ in 0..backlog {
            assert!(scheduler.submit(request()).is_ok());
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("queued", backlog), |b| {
            b.iter(|| {
                let _ = scheduler.submit(request());
                scheduler.next_batch(&running).map(|batch| batch.rows)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, state_round, scheduler_round);
criterion_main!(benches);
