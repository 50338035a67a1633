//! Per model version statistics with Triton's meaning (the ModelStatistics RPC): how many requests
//! succeeded and failed and how long they spent queued and computing, and how many batches of each size ran.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ferry_proto::inference::{InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration};

/// A count and the total time of the events counted.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Tally {
    fn add(&self, count: u64, duration: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.nanos.fetch_add(
            saturating_nanos(duration).saturating_mul(count),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> StatisticDuration {
        StatisticDuration {
            count: self.count.load(Ordering::Relaxed),
            ns: self.nanos.load(Ordering::Relaxed),
        }
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The three phases of running one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTimes {
    /// Building the input tensors.
    pub input: Duration,
    /// Running the model.
    pub infer: Duration,
    /// Splitting the outputs between the requests.
    pub output: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct BatchTally {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// Statistics of one model version, updated lock-free on the request path except for the per-size batch
/// table, which an instance touches once per batch.
#[derive(Debug, Default)]
pub struct VersionStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<u64, BatchTally>>,
}

impl VersionStats {
    /// Records a request's end as seen by its caller: `ok` or not, after `duration` in the server.
    pub fn record_request(&self, ok: bool, duration: Duration) {
        if ok {
            self.success.add(1, duration);
        } else {
            self.fail.add(1, duration);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Records one executed batch of `rows` rows made of requests that waited `queue_times`.
    pub fn record_batch(
        &self,
        rows: usize,
        queue_times: impl IntoIterator<Item = Duration>,
        times: BatchTimes,
    ) {
        let mut requests = 0;
        for waited in queue_times {
            self.queue.add(1, waited);
            requests += 1;
        }
        // Triton counts compute time per request: each request of the batch spent the batch's time.
        self.compute_input.add(requests, times.input);
        self.compute_infer.add(requests, times.infer);
        self.compute_output.add(requests, times.output);
        self.inference_count.fetch_add(rows as u64, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = batches.entry(rows as u64).or_default();
        tally.count += 1;
        tally.input_ns = tally.input_ns.saturating_add(saturating_nanos(times.input));
        tally.infer_ns = tally.infer_ns.saturating_add(saturating_nanos(times.infer));
        tally.output_ns = tally.output_ns.saturating_add(saturating_nanos(times.output));
    }

    /// The statistics in the ModelStatistics RPC's form.
    pub fn snapshot(&self, name: &str, version: u64) -> ModelStatistics {
        let batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let duration = |count, ns| Some(StatisticDuration { count, ns });
        ModelStatistics {
            name: name.to_owned(),
            version: version.to_string(),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: Some(InferStatistics {
                success: Some(self.success.snapshot()),
                fail: Some(self.fail.snapshot()),
                queue: Some(self.queue.snapshot()),
                compute_input: Some(self.compute_input.snapshot()),
                compute_infer: Some(self.compute_infer.snapshot()),
                compute_output: Some(self.compute_output.snapshot()),
                cache_hit: Some(StatisticDuration::default()),
                cache_miss: Some(StatisticDuration::default()),
            }),
            batch_stats: batches
                .iter()
                .map(|(size, tally)| InferBatchStatistics {
                    batch_size: *size,
                    compute_input: duration(tally.count, tally.input_ns),
                    compute_infer: duration(tally.count, tally.infer_ns),
                    compute_output: duration(tally.count, tally.output_ns),
                })
                .collect(),
            memory_usage: Vec::new(),
            response_stats: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_tallied_per_size_and_compute_per_request() {
        let stats = VersionStats::default();
        let times = BatchTimes {
            input: Duration::from_micros(1),
            infer: Duration::from_micros(10),
            output: Duration::from_micros(2),
        };
        stats.record_batch(4, [Duration::from_micros(5), Duration::from_micros(7)], times);
        stats.record_batch(4, [Duration::from_micros(1)], times);
        stats.record_batch(1, [Duration::from_micros(1)], times);
        stats.record_request(true, Duration::from_micros(20));
        stats.record_request(false, Duration::from_micros(3));
        let snapshot = stats.snapshot("m", 3);
        assert_eq!(snapshot.version, "3");
        assert_eq!(snapshot.inference_count, 9);
        assert_eq!(snapshot.execution_count, 3);
        let inference = snapshot.inference_stats.expect("inference stats");
        assert_eq!(inference.queue.map(|q| (q.count, q.ns)), Some((4, 14_000)));
        assert_eq!(
            inference.compute_infer.map(|c| (c.count, c.ns)),
            Some((4, 40_000))
        );
        assert_eq!(inference.success.map(|s| s.count), Some(1));
        assert_eq!(inference.fail.map(|f| (f.count, f.ns)), Some((1, 3_000)));
        let sizes: Vec<(u64, u64)> = snapshot
            .batch_stats
            .iter()
            .map(|b| (b.batch_size, b.compute_infer.as_ref().map_or(0, |c| c.count)))
            .collect();
        assert_eq!(sizes, [(1, 1), (4, 2)]);
        assert!(snapshot.last_inference > 0);
    }
}
