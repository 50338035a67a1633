//! Sampling a fixed share of requests, evenly spread, for the request-path features that look at some
//! requests only (drift statistics, payload logging).

use std::sync::atomic::{AtomicU64, Ordering};

/// Picks exactly `rate` of the requests offered to it, evenly spread rather than at random (at 0.25: the
/// 4th, 8th, 12th, ...), so that a test or an operator can predict which are taken; one relaxed atomic add
/// per request and no lock.
#[derive(Debug)]
pub(crate) struct EvenSampler {
    rate: f64,
    offered: AtomicU64,
}

impl EvenSampler {
    /// A sampler taking `rate` (0 to 1) of the requests.
    pub(crate) fn new(rate: f64) -> Self {
        EvenSampler {
            rate,
            offered: AtomicU64::new(0),
        }
    }

    /// Counts one request: `true` when its count crosses a whole multiple of 1/rate.
    pub(crate) fn take(&self) -> bool {
        let n = self.offered.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::EvenSampler;

    #[test]
    fn takes_exactly_the_rate_evenly_spread() {
        let taken = |rate: f64, count: usize| -> Vec<usize> {
            let sampler = EvenSampler::new(rate);
            (1..=count).filter(|_| sampler.take()).collect()
        };
        assert_eq!(taken(0.25, 12), [4, 8, 12]);
        assert_eq!(taken(0.5, 6), [2, 4, 6]);
        assert_eq!(taken(1.0, 3), [1, 2, 3]);
        assert!(taken(0.0, 100).is_empty());
    }
}
