//! Per model version statistics with Triton's meaning (the ModelStatistics RPC): how many requests
//! succeeded and failed and how long they spent queued and computing, and how many batches of each size ran.
//!
//! Beside Triton's totals, each version keeps histograms of request, queue and model run times and of batch
//! sizes, because totals give only averages and the Prometheus endpoint ([`crate::metrics`]) should show tails.

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

/// Upper bounds of the latency histograms' buckets, in nanoseconds: 25 µs to 10 s in 1-2.5-5 steps, wide
/// enough for a tiny CPU model and for a request that waited seconds in a batching queue.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the batch size histogram's buckets, in rows: the powers of two that batchers and
/// `preferred_batch_size` settings use.
pub const BATCH_SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram with fixed buckets, updated with one atomic add per observation so that recording never
/// takes a lock. Buckets hold plain (not cumulative) counts; [`Histogram::snapshot`] accumulates them.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the count of observations above the last bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram whose buckets end at `bounds`, which must increase.
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "bounds must increase"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts `value` in the first bucket whose bound is at least `value` (Prometheus' `le`).
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The histogram now, with cumulative bucket counts. The count is the last cumulative bucket, so the two
    /// agree even while observations land during the snapshot.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0u64;
        let cumulative = self
            .counts
            .iter()
            .map(|count| {
                total = total.saturating_add(count.load(Ordering::Relaxed));
                total
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram read at one moment, in the shape Prometheus exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds, in the histogram's unit.
    pub bounds: &'static [u64],
    /// Observations at or below each bound, then the total (the `+Inf` bucket): `bounds.len() + 1` values.
    pub cumulative: Vec<u64>,
    /// The sum of every observed value, in the histogram's unit.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

/// The histograms of one version, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHistograms {
    /// Time in the server of each successful request, in nanoseconds.
    pub request_ns: HistogramSnapshot,
    /// Time each executed request waited in the queue, in nanoseconds.
    pub queue_ns: HistogramSnapshot,
    /// Time each model execution (one batch) spent running the model, in nanoseconds.
    pub compute_infer_ns: HistogramSnapshot,
    /// Rows of each model execution.
    pub batch_size: HistogramSnapshot,
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

/// Why a request failed, as Triton's `reason` label on `nv_inference_request_failure` says it
/// (`MetricModelReporter::failure_reasons_map` in Triton's core): dashboards tell a server that sheds load
/// from a model that breaks or clients that send bad requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused by the queue: full, or the request's queue timeout passed before it ran.
    Rejected,
    /// The caller went away or its deadline passed before the answer.
    Canceled,
    /// The model failed while running the request.
    Backend,
    /// Anything else, mostly a request the model refuses (a wrong input, shape or byte count).
    Other,
}

impl FailureReason {
    /// Every reason, in the order the metrics endpoint writes them.
    pub const ALL: [FailureReason; 4] = [
        FailureReason::Rejected,
        FailureReason::Canceled,
        FailureReason::Backend,
        FailureReason::Other,
    ];

    /// The label value Triton writes for this reason.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Canceled => "CANCELED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }
}

/// Statistics of one model version, updated lock-free on the request path except for the per-size batch
/// table, which an instance touches once per batch.
#[derive(Debug)]
pub struct VersionStats {
    success: Tally,
    fail: Tally,
    /// Failures by [`FailureReason`], in [`FailureReason::ALL`]'s order.
    fail_reasons: [AtomicU64; 4],
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    /// Requests answered from the response cache, and the time their lookups took.
    cache_hit: Tally,
    /// Requests the response cache did not answer, and the time their lookups and insertions took.
    cache_miss: Tally,
    batches: Mutex<BTreeMap<u64, BatchTally>>,
    request_histogram: Histogram,
    queue_histogram: Histogram,
    compute_infer_histogram: Histogram,
    batch_size_histogram: Histogram,
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats {
            success: Tally::default(),
            fail: Tally::default(),
            fail_reasons: Default::default(),
            queue: Tally::default(),
            compute_input: Tally::default(),
            compute_infer: Tally::default(),
            compute_output: Tally::default(),
            inference_count: AtomicU64::default(),
            execution_count: AtomicU64::default(),
            last_inference_ms: AtomicU64::default(),
            cache_hit: Tally::default(),
            cache_miss: Tally::default(),
            batches: Mutex::default(),
            request_histogram: Histogram::new(LATENCY_BOUNDS_NS),
            queue_histogram: Histogram::new(LATENCY_BOUNDS_NS),
            compute_infer_histogram: Histogram::new(LATENCY_BOUNDS_NS),
            batch_size_histogram: Histogram::new(BATCH_SIZE_BOUNDS),
        }
    }
}

impl VersionStats {
    /// Records a request's end as seen by its caller, a success or a failure for a reason, after `duration`
    /// in the server.
    pub fn record_request(&self, outcome: Result<(), FailureReason>, duration: Duration) {
        match outcome {
            Ok(()) => {
                self.success.add(1, duration);
                self.request_histogram.observe(saturating_nanos(duration));
            }
            Err(reason) => {
                self.fail.add(1, duration);
                self.fail_reasons[reason as usize].fetch_add(1, Ordering::Relaxed);
            }
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
            self.queue_histogram.observe(saturating_nanos(waited));
            requests += 1;
        }
        // Triton counts compute time per request: each request of the batch spent the batch's time.
        self.compute_input.add(requests, times.input);
        self.compute_infer.add(requests, times.infer);
        self.compute_output.add(requests, times.output);
        self.inference_count.fetch_add(rows as u64, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.compute_infer_histogram
            .observe(saturating_nanos(times.infer));
        self.batch_size_histogram.observe(rows as u64);
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = batches.entry(rows as u64).or_default();
        tally.count += 1;
        tally.input_ns = tally.input_ns.saturating_add(saturating_nanos(times.input));
        tally.infer_ns = tally.infer_ns.saturating_add(saturating_nanos(times.infer));
        tally.output_ns = tally.output_ns.saturating_add(saturating_nanos(times.output));
    }

    /// Records a request answered from the response cache after `in_server` in the server, `lookup` of it
    /// spent finding the answer. As Triton's `UpdateSuccessCacheHit` (core `infer_stats.cc`): a success with
    /// its duration and a queue entry of no wait, but no inference or execution, which never happened.
    pub fn record_cache_hit(&self, lookup: Duration, in_server: Duration) {
        self.record_request(Ok(()), in_server);
        self.queue.add(1, Duration::ZERO);
        self.cache_hit.add(1, lookup);
    }

    /// Records a request the response cache did not answer and whose answer was then offered to it, after
    /// `lookup_and_insert` spent looking up and storing. As Triton's `UpdateSuccessCacheMiss`, that time is
    /// also added to the successful requests' duration, which the model's run did not include.
    pub fn record_cache_miss(&self, lookup_and_insert: Duration) {
        self.cache_miss.add(1, lookup_and_insert);
        self.success
            .nanos
            .fetch_add(saturating_nanos(lookup_and_insert), Ordering::Relaxed);
    }

    /// Failures so far by reason, in [`FailureReason::ALL`]'s order, for the metrics endpoint.
    pub fn failures_by_reason(&self) -> [(FailureReason, u64); 4] {
        FailureReason::ALL.map(|reason| (reason, self.fail_reasons[reason as usize].load(Ordering::Relaxed)))
    }

    /// The histograms now, for the metrics endpoint.
    pub fn histograms(&self) -> VersionHistograms {
        VersionHistograms {
            request_ns: self.request_histogram.snapshot(),
            queue_ns: self.queue_histogram.snapshot(),
            compute_infer_ns: self.compute_infer_histogram.snapshot(),
            batch_size: self.batch_size_histogram.snapshot(),
        }
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
                cache_hit: Some(self.cache_hit.snapshot()),
                cache_miss: Some(self.cache_miss.snapshot()),
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
        stats.record_request(Ok(()), Duration::from_micros(20));
        stats.record_request(Err(FailureReason::Rejected), Duration::from_micros(3));
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
        assert_eq!(
            stats.failures_by_reason(),
            [
                (FailureReason::Rejected, 1),
                (FailureReason::Canceled, 0),
                (FailureReason::Backend, 0),
                (FailureReason::Other, 0)
            ]
        );
        let sizes: Vec<(u64, u64)> = snapshot
            .batch_stats
            .iter()
            .map(|b| (b.batch_size, b.compute_infer.as_ref().map_or(0, |c| c.count)))
            .collect();
        assert_eq!(sizes, [(1, 1), (4, 2)]);
        assert!(snapshot.last_inference > 0);
        let histograms = stats.histograms();
        assert_eq!(histograms.batch_size.count(), 3, "one observation per execution");
        assert_eq!(histograms.batch_size.sum, 9);
        assert_eq!(
            histograms.queue_ns.count(),
            4,
            "one observation per executed request"
        );
        assert_eq!(histograms.queue_ns.sum, 14_000);
        assert_eq!(histograms.compute_infer_ns.count(), 3);
        assert_eq!(histograms.request_ns.count(), 1, "successful requests only");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let histogram = Histogram::new(BATCH_SIZE_BOUNDS);
        for rows in [1, 1, 2, 3, 4, 5, 2000] {
            histogram.observe(rows);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative.len(), BATCH_SIZE_BOUNDS.len() + 1);
        // le=1: 2, le=2: 3, le=4: 5 (3 and 4), le=8: 6, then 6 up to le=1024, and 7 with +Inf.
        assert_eq!(&snapshot.cumulative[..4], &[2, 3, 5, 6]);
        assert_eq!(snapshot.cumulative[10], 6);
        assert_eq!(snapshot.count(), 7);
        assert_eq!(snapshot.sum, 2016);
    }

    #[test]
    fn an_empty_histogram_has_zero_buckets() {
        let snapshot = Histogram::new(LATENCY_BOUNDS_NS).snapshot();
        assert!(snapshot.cumulative.iter().all(|&count| count == 0));
        assert_eq!((snapshot.count(), snapshot.sum), (0, 0));
    }
}
