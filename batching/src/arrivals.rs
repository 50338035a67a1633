//! What the adaptive queue delay knows about arrivals: whether requests come while others are in the
//! server, and how soon another one that could join a waiting batch is expected.
//!
//! A request that finds nothing queued and an instance free arrives alone: it would run alone at once
//! whatever the delay, and in a closed loop (a client that sends its next request only once this one is
//! answered) nothing arrives while it waits. A request that finds others queued, or every instance busy
//! (where waiting costs nothing), arrives in company. The batcher waits only while most recent arrivals came
//! in company, and then only for as long as the gaps before those arrivals say another is due, so one client
//! at a time never teaches it to wait, however short its round trip.
//!
//! The gap is a plain (arithmetic) mean: on a busy machine arrivals come in clumps with pauses between
//! them, and a pause is part of the wait for the next request. A gap counts as at most the delay, so that
//! one stall does not stop the waiting for long.

use std::time::{Duration, Instant};

/// How much one arrival moves each estimate: the latest few arrivals dominate, so a change of load is
/// followed within a handful of requests.
const WEIGHT: f64 = 0.25;

/// The share of recent arrivals that must have come in company for waiting to be worth it.
const COMPANY: f64 = 0.5;

/// How many expected gaps an instance waits past the latest arrival before it concludes that the stream
/// has paused and sends what it has.
const PATIENCE: u32 = 4;

/// The batcher's view of recent arrivals.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    /// Smoothed share of arrivals that came in company, from 0 to 1.
    company: f64,
    /// Smoothed gap, in seconds, before each arrival in company; `None` until the first one.
    gap: Option<f64>,
    /// The latest arrival.
    last: Option<Instant>,
}

impl Arrivals {
    /// Records a request arriving at `now`; `alone` when it found nothing queued and an instance free. A
    /// gap counts as at most `longest`, the delay: longer ones all mean "not worth waiting for".
    pub(crate) fn record(&mut self, now: Instant, alone: bool, longest: Duration) {
        self.company += WEIGHT * (if alone { 0.0 } else { 1.0 } - self.company);
        if let (false, Some(last)) = (alone, self.last) {
            let sample = now.saturating_duration_since(last).min(longest).as_secs_f64();
            self.gap = Some(self.gap.map_or(sample, |gap| gap + WEIGHT * (sample - gap)));
        }
        self.last = Some(now);
    }

    /// The expected time to the next arrival that could join a batch; `None` while most arrivals come alone.
    pub(crate) fn expected_gap(&self) -> Option<Duration> {
        if self.company < COMPANY {
            return None;
        }
        Duration::try_from_secs_f64(self.gap?).ok()
    }

    /// Until when an instance holding a batch that must leave by `send_at` should wait for one more request,
    /// deciding at `now`; `None` to send now. It waits only while the next request is expected before
    /// `send_at`, and only for a few expected gaps past the latest arrival.
    pub(crate) fn wait_until(&self, now: Instant, send_at: Instant) -> Option<Instant> {
        let last = self.last?;
        let gap = self.expected_gap()?;
        if last.checked_add(gap).is_none_or(|expected| expected >= send_at) {
            return None;
        }
        let patience = last
            .checked_add(gap.saturating_mul(PATIENCE))
            .map_or(send_at, |until| until.min(send_at));
        (now < patience).then_some(patience)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn arrivals_in_company_measure_the_gap_and_lone_ones_stop_the_waiting() {
        let start = Instant::now();
        let mut arrivals = Arrivals::default();
        assert_eq!(arrivals.expected_gap(), None, "nothing measured yet");
        for i in 0..20 {
            arrivals.record(start + us(10 * i), false, us(500));
        }
        assert_eq!(arrivals.expected_gap(), Some(us(10)));
        arrivals.record(start + us(1000), true, us(500));
        assert_eq!(
            arrivals.expected_gap(),
            Some(us(10)),
            "one lone arrival among many changes nothing"
        );
        for i in 1..=3 {
            arrivals.record(start + us(1000 + 200 * i), true, us(500));
        }
        assert_eq!(arrivals.expected_gap(), None, "most recent arrivals came alone");
    }

    #[test]
    fn it_waits_only_for_an_arrival_expected_in_time_and_for_a_few_gaps() {
        let start = Instant::now();
        let mut arrivals = Arrivals::default();
        for i in 0..40 {
            arrivals.record(start + us(100 * i), false, us(500));
        }
        let last = start + us(3900);
        let until = arrivals
            .wait_until(last, last + us(500))
            .expect("next expected in 100 µs");
        assert_eq!(until, last + us(400));
        assert_eq!(
            arrivals.wait_until(until, last + us(500)),
            None,
            "the stream paused"
        );
        assert_eq!(
            arrivals.wait_until(last, last + us(1000)),
            Some(until),
            "patience does not grow with the budget"
        );
        assert_eq!(
            arrivals.wait_until(last, last + us(350)),
            Some(last + us(350)),
            "capped by the budget"
        );
        assert_eq!(
            arrivals.wait_until(last, last + us(50)),
            None,
            "not expected before the batch must leave"
        );
    }

    #[test]
    fn the_gap_is_a_plain_mean_so_clumps_and_pauses_both_count() {
        let start = Instant::now();
        let mut arrivals = Arrivals::default();
        // Clumps of 4 requests 5 µs apart, then a 185 µs pause: on average one every 50 µs.
        let mut t = 0;
        for i in 0..80 {
            t += if i % 4 == 0 { 185 } else { 5 };
            arrivals.record(start + us(t), false, us(500));
        }
        let gap = arrivals.expected_gap().expect("measured");
        assert!(gap >= us(30) && gap <= us(70), "{gap:?}");
        let last = start + us(t);
        assert!(
            arrivals.wait_until(last + us(100), last + us(500)).is_some(),
            "a pause like the usual ones does not end the wait"
        );
    }

    #[test]
    fn a_stall_counts_as_at_most_the_delay() {
        let start = Instant::now();
        let mut arrivals = Arrivals::default();
        for i in 0..20 {
            arrivals.record(start + us(10 * i), false, us(500));
        }
        arrivals.record(start + Duration::from_secs(u64::from(u32::MAX)), false, us(500));
        assert_eq!(arrivals.expected_gap(), Some(us(10) + (us(500) - us(10)) / 4));
        let mut simultaneous = Arrivals::default();
        for _ in 0..10 {
            simultaneous.record(start, false, us(500));
        }
        assert_eq!(simultaneous.expected_gap(), Some(Duration::ZERO));
        assert_eq!(
            simultaneous.wait_until(start, start + us(500)),
            None,
            "nothing to wait for"
        );
    }
}
