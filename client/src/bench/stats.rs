//! The load generator's bookkeeping: every worker owns a [`Tally`] and updates it without locks or
//! allocation, and the tallies are merged once, after the run.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use tonic::{Code, Status};

use super::Latency;
use crate::error::code_name;

/// Linear sub-buckets per power of two are `2 * HALF`, so a recorded latency is known to within 1/128 of
/// itself (under 0.8 %): finer than run-to-run noise, in a fixed 26 KiB per worker however long the run.
const HALF: u64 = 128;

/// Latencies are recorded in whole microseconds up to this bound (71 minutes); anything slower is
/// clamped, which no request of a load test should reach.
const MAX_MICROS: u64 = u32::MAX as u64;

const BUCKETS: usize = bucket_of(MAX_MICROS) + 1;

/// Where `micros` is counted: exactly below `2 * HALF`, then in `HALF` equal buckets per power of two.
const fn bucket_of(micros: u64) -> usize {
    if micros < 2 * HALF {
        return micros as usize;
    }
    // The shift that leaves the top eight bits, which always lie in [HALF, 2 * HALF).
    let shift = 63 - micros.leading_zeros() - (HALF.trailing_zeros());
    (shift as u64 * HALF + (micros >> shift)) as usize
}

/// The largest latency, in microseconds, that falls in `bucket`; percentiles use it so they never
/// understate a latency.
fn highest_in(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < 2 * HALF {
        return bucket;
    }
    let shift = bucket / HALF - 1;
    ((bucket - shift * HALF + 1) << shift) - 1
}

/// Successful responses' latencies, in log-linear buckets that merge by addition; the mean and the
/// maximum are kept exactly beside them.
#[derive(Debug)]
pub(super) struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    total: Duration,
    max: Duration,
}

impl Histogram {
    pub(super) fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            total: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    pub(super) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .min(MAX_MICROS);
        self.counts[bucket_of(micros)] += 1;
        self.count += 1;
        self.total = self.total.saturating_add(latency);
        self.max = self.max.max(latency);
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.total = self.total.saturating_add(other.total);
        self.max = self.max.max(other.max);
    }

    /// The nearest-rank percentile `per_mille / 10`: the smallest recorded latency that at least that
    /// share of responses did not exceed, rounded up to its bucket's top but never past the maximum.
    fn percentile(&self, per_mille: u64) -> Duration {
        let rank = (self.count * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(highest_in(bucket)).min(self.max);
            }
        }
        self.max
    }

    pub(super) fn summary(&self) -> Latency {
        if self.count == 0 {
            return Latency::default();
        }
        let mean_nanos = self.total.as_nanos() / u128::from(self.count);
        Latency {
            mean: Duration::from_nanos(u64::try_from(mean_nanos).unwrap_or(u64::MAX)),
            p50: self.percentile(500),
            p90: self.percentile(900),
            p99: self.percentile(990),
            max: self.max,
        }
    }
}

/// The slot of transport failures, after one slot per gRPC code (`OK` = 0 ... `UNAUTHENTICATED` = 16).
const TRANSPORT: usize = 17;

/// What one worker saw in the measured window.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) latencies: Histogram,
    errors: [u64; TRANSPORT + 1],
    pub(super) late: u64,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            latencies: Histogram::new(),
            errors: [0; TRANSPORT + 1],
            late: 0,
        }
    }

    pub(super) fn record_error(&mut self, status: &Status) {
        let slot = if is_transport(status) {
            TRANSPORT
        } else {
            status.code() as usize
        };
        self.errors[slot] += 1;
    }

    pub(super) fn merge(&mut self, other: &Self) {
        self.latencies.merge(&other.latencies);
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.late += other.late;
    }

    /// The error counts by name, codes as `NOT_FOUND` and the like, leaving out what never happened.
    pub(super) fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(slot, &count)| {
                let name = if slot == TRANSPORT {
                    "TRANSPORT"
                } else {
                    code_name(Code::from(slot as i32))
                };
                (name.to_owned(), count)
            })
            .collect()
    }
}

/// Whether a failure happened on this side of the wire (refused or reset connection, broken HTTP/2,
/// timeout) rather than being the server's answer: tonic attaches the underlying error as the source of
/// the statuses it makes up, while a status read from the server's trailers has none.
pub(super) fn is_transport(status: &Status) -> bool {
    status.source().is_some()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io;

    use super::*;

    fn histogram(micros: impl IntoIterator<Item = u64>) -> Histogram {
        let mut histogram = Histogram::new();
        for value in micros {
            histogram.record(Duration::from_micros(value));
        }
        histogram
    }

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        let mut previous = 0;
        for micros in 0..100_000 {
            let bucket = bucket_of(micros);
            assert!(bucket == previous || bucket == previous + 1, "{micros}");
            previous = bucket;
        }
        for micros in (0..100_000).chain([MAX_MICROS - 1, MAX_MICROS]) {
            let top = highest_in(bucket_of(micros));
            assert!(
                top >= micros && top - micros <= micros / HALF,
                "{micros} -> {top}"
            );
        }
        assert_eq!(highest_in(BUCKETS - 1), MAX_MICROS);
    }

    #[test]
    fn small_latencies_give_exact_nearest_rank_percentiles() {
        let latency = histogram(1..=100).summary();
        assert_eq!(latency.p50, Duration::from_micros(50));
        assert_eq!(latency.p90, Duration::from_micros(90));
        assert_eq!(latency.p99, Duration::from_micros(99));
        assert_eq!(latency.max, Duration::from_micros(100));
        assert_eq!(latency.mean, Duration::from_nanos(50_500));

        let single = histogram([7]).summary();
        assert_eq!(
            (single.p50, single.p99, single.max),
            (
                Duration::from_micros(7),
                Duration::from_micros(7),
                Duration::from_micros(7)
            )
        );
    }

    #[test]
    fn large_latencies_are_within_a_bucket_and_never_understated() {
        // 1 ms, 2 ms, ..., 1000 ms: the exact nearest-rank p90 is 900 ms.
        let latency = histogram((1..=1000).map(|ms| ms * 1000)).summary();
        for (estimate, exact) in [
            (latency.p50, 500_000),
            (latency.p90, 900_000),
            (latency.p99, 990_000),
        ] {
            let estimate = u64::try_from(estimate.as_micros()).unwrap();
            assert!(
                estimate >= exact && estimate - exact <= exact / HALF,
                "{estimate} vs {exact}"
            );
        }
        assert_eq!(latency.max, Duration::from_secs(1));
    }

    #[test]
    fn percentiles_never_exceed_the_maximum() {
        let latency = histogram([1000, 1001, 1003]).summary();
        assert_eq!(latency.p99, Duration::from_micros(1003));
    }

    #[test]
    fn merged_histograms_equal_one_that_saw_everything() {
        let mut left = histogram([5, 300, 70_000]);
        left.merge(&histogram([9, 1_000_000]));
        let whole = histogram([5, 300, 70_000, 9, 1_000_000]);
        assert_eq!(left.summary(), whole.summary());
        assert_eq!(left.count(), 5);
    }

    #[test]
    fn no_responses_give_zero_latencies() {
        assert_eq!(Histogram::new().summary(), Latency::default());
    }

    #[test]
    fn errors_are_counted_by_code_name_and_transport_apart() {
        let mut tally = Tally::new();
        tally.record_error(&Status::not_found("no model"));
        tally.record_error(&Status::not_found("no model"));
        tally.record_error(&Status::resource_exhausted("queue full"));
        let mut other = Tally::new();
        other.record_error(&Status::unavailable("draining"));
        // What tonic makes of a refused connection: UNAVAILABLE too, but with the io error as its source.
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        other.record_error(&Status::from_error(Box::new(refused)));
        other.latencies.record(Duration::from_micros(10));
        other.late = 3;
        tally.merge(&other);

        let expected: BTreeMap<String, u64> = [
            ("NOT_FOUND", 2),
            ("RESOURCE_EXHAUSTED", 1),
            ("TRANSPORT", 1),
            ("UNAVAILABLE", 1),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_owned(), count))
        .collect();
        assert_eq!(tally.errors(), expected);
        assert_eq!(tally.latencies.count(), 1);
        assert_eq!(tally.late, 3);
    }

    #[test]
    fn every_code_has_a_slot() {
        let mut tally = Tally::new();
        for code in 0..=16 {
            tally.record_error(&Status::new(Code::from(code), ""));
        }
        let errors = tally.errors();
        assert_eq!(errors.len(), 17);
        assert_eq!(errors["UNAUTHENTICATED"], 1);
        assert!(!errors.contains_key("TRANSPORT"));
    }
}
