//! Abuse limits per caller: a token bucket of requests (`--rate-limit RPS[:BURST]`) and a cap on requests in
//! flight (`--max-in-flight-per-identity N`), each kept separately for every identity.
//!
//! Both are off by default, as in Triton; then [`Access`](super::Access) holds no [`Quotas`] and the auth
//! layer skips this module entirely. When on, one short mutex per admitted request guards the table of
//! buckets; a request's in-flight count is released without the lock, when its answer's body ends or is
//! dropped ([`InFlight`]).
//!
//! The table is bounded: every caller without credentials shares the one `anonymous` entry, and named
//! identities (API keys, JWT subjects, client certificates) get at most [`MAX_TRACKED_IDENTITIES`] entries.
//! An entry whose bucket is full again and that has nothing in flight is the same as a new one, so such
//! entries are dropped when the table is full; if none is, a new identity is refused until one is.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

use super::Identity;
use crate::Error;

/// The most named identities whose buckets are kept at once.
pub const MAX_TRACKED_IDENTITIES: usize = 10_000;
/// The highest `--rate-limit`, in requests per second, and the highest burst.
pub const MAX_RATE: f64 = 1_000_000.0;

/// A token bucket's shape: `per_second` tokens are added each second, up to `burst`; each request takes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second (may be fractional: `0.5` is one request every two seconds).
    pub per_second: f64,
    /// The most tokens a bucket holds, so the most requests let through at once after a pause.
    pub burst: u32,
}

impl Rate {
    /// Parses `--rate-limit`'s `RPS[:BURST]`; without a burst, the burst is one second's worth (at least 1).
    pub fn parse(flag: &str) -> Result<Self, String> {
        let (rate, burst) = match flag.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (flag, None),
        };
        let per_second: f64 = rate
            .trim()
            .parse()
            .ok()
            .filter(|rate: &f64| rate.is_finite() && *rate > 0.0 && *rate <= MAX_RATE)
            .ok_or_else(|| {
                format!(
                    "--rate-limit takes RPS[:BURST] with RPS a number of requests per second above 0 and \
                     at most {MAX_RATE}, got '{}'",
                    crate::limits::bounded_message(flag.to_owned())
                )
            })?;
        let burst = match burst {
            None => per_second.ceil().max(1.0) as u32,
            Some(burst) => burst
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|burst| (1..=MAX_RATE as u32).contains(burst))
                .ok_or_else(|| {
                    format!(
                        "--rate-limit's BURST is a whole number of requests from 1 to {MAX_RATE}, got '{}'",
                        crate::limits::bounded_message(burst.to_owned())
                    )
                })?,
        };
        Ok(Rate { per_second, burst })
    }
}

/// The limits every identity is held to, each with a bucket of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuotaOptions {
    /// `--rate-limit`: requests per second and burst, per identity.
    pub rate: Option<Rate>,
    /// `--max-in-flight-per-identity`: requests admitted and not yet answered, per identity.
    pub max_in_flight: Option<u32>,
}

impl QuotaOptions {
    /// Whether any limit is on.
    pub fn any(&self) -> bool {
        self.rate.is_some() || self.max_in_flight.is_some()
    }
}

/// A refused request: the error to answer and the seconds after which a retry may pass (`Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// [`Error::RateLimited`], naming the identity, the limit and its flag.
    pub error: Error,
    /// Whole seconds, rounded up, at least 1.
    pub retry_after_secs: u64,
}

/// The buckets and in-flight counts of every identity seen, bounded as the [module](self) docs say.
#[derive(Debug)]
pub struct Quotas {
    options: QuotaOptions,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    anonymous: Entry,
    named: HashMap<Arc<str>, Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Tokens left as of `updated`.
    tokens: f64,
    updated: Instant,
    in_flight: Arc<AtomicU32>,
}

impl Entry {
    fn new(options: &QuotaOptions, now: Instant) -> Self {
        Entry {
            tokens: options.rate.map_or(0.0, |rate| f64::from(rate.burst)),
            updated: now,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    fn refill(&mut self, rate: Option<Rate>, now: Instant) {
        if let Some(rate) = rate {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        }
        self.updated = now;
    }

    /// Whether forgetting the entry changes nothing: its bucket is full and nothing of it is in flight.
    fn idle(&self, rate: Option<Rate>) -> bool {
        let full = rate.is_none_or(|rate| self.tokens >= f64::from(rate.burst));
        full && Arc::strong_count(&self.in_flight) == 1 && self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// One admitted request's place in its identity's in-flight count, given back when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Quotas {
    /// The limits of `options`, or `None` when they are all off (the layer then skips this module).
    pub fn new(options: QuotaOptions) -> Option<Self> {
        options.any().then(|| Quotas {
            options,
            table: Mutex::new(Table {
                anonymous: Entry::new(&options, Instant::now()),
                named: HashMap::new(),
            }),
        })
    }

    /// The limits in force.
    pub fn options(&self) -> &QuotaOptions {
        &self.options
    }

    /// Admits one request of `identity`, taking a token and a place in flight, or refuses it without
    /// taking either.
    pub fn admit(&self, identity: &Identity) -> Result<InFlight, Refusal> {
        let now = Instant::now();
        let rate = self.options.rate;
        // A poisoned lock only means another request panicked mid-update; the numbers are still usable.
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Table { anonymous, named } = &mut *table;
        let entry = match identity {
            Identity::Anonymous => anonymous,
            Identity::Named(name) => {
                if !named.contains_key(&**name) {
                    if named.len() >= MAX_TRACKED_IDENTITIES {
                        named.retain(|_, entry| {
                            entry.refill(rate, now);
                            !entry.idle(rate)
                        });
                    }
                    if named.len() >= MAX_TRACKED_IDENTITIES {
                        return Err(Refusal {
                            error: Error::RateLimited(format!(
                                "identity '{name}' is refused: {MAX_TRACKED_IDENTITIES} other identities \
                                 are being rate limited at once (--rate-limit, --max-in-flight-per-identity)"
                            )),
                            retry_after_secs: 1,
                        });
                    }
                }
                named
                    .entry(Arc::clone(name))
                    .or_insert_with(|| Entry::new(&self.options, now))
            }
        };
        entry.refill(rate, now);
        if let Some(max) = self.options.max_in_flight {
            let in_flight = entry.in_flight.load(Ordering::Acquire);
            if in_flight >= max {
                return Err(Refusal {
                    error: Error::RateLimited(format!(
                        "identity '{identity}' has {in_flight} requests in flight, the limit of \
                         --max-in-flight-per-identity {max}; retry when one has been answered"
                    )),
                    retry_after_secs: 1,
                });
            }
        }
        if let Some(rate) = rate {
            if entry.tokens < 1.0 {
                let wait = ((1.0 - entry.tokens) / rate.per_second).ceil().max(1.0);
                return Err(Refusal {
                    error: Error::RateLimited(format!(
                        "identity '{identity}' is over its rate limit of {} requests per second with a \
                         burst of {} (--rate-limit {}:{}); retry in {wait} s",
                        rate.per_second, rate.burst, rate.per_second, rate.burst
                    )),
                    retry_after_secs: wait as u64,
                });
            }
            entry.tokens -= 1.0;
        }
        entry.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight(Arc::clone(&entry.in_flight)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Identity {
        Identity::Named(Arc::from(name))
    }

    #[test]
    fn the_rate_flag_takes_a_rate_and_an_optional_burst() {
        assert_eq!(
            Rate::parse("5:20"),
            Ok(Rate {
                per_second: 5.0,
                burst: 20
            })
        );
        assert_eq!(
            Rate::parse("2.5"),
            Ok(Rate {
                per_second: 2.5,
                burst: 3
            })
        );
        assert_eq!(Rate::parse("0.1").map(|rate| rate.burst), Ok(1));
        for bad in ["0", "-1", "nan", "inf", "x", "5:0", "5:x", "5:-1", ""] {
            let error = Rate::parse(bad).expect_err("a bad flag");
            assert!(error.contains("--rate-limit"), "{bad}: {error}");
        }
    }

    #[test]
    fn no_limits_means_no_quotas() {
        assert!(Quotas::new(QuotaOptions::default()).is_none());
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_refuses_with_a_retry_after() {
        let quotas = Quotas::new(QuotaOptions {
            rate: Some(Rate {
                per_second: 0.01,
                burst: 3,
            }),
            max_in_flight: None,
        })
        .expect("limits are on");
        let alice = named("alice");
        for _ in 0..3 {
            drop(quotas.admit(&alice).expect("within the limits"));
        }
        let refusal = quotas.admit(&alice).expect_err("over the limit");
        assert_eq!(refusal.error.grpc_code(), tonic::Code::ResourceExhausted);
        assert_eq!(refusal.error.http_status(), http::StatusCode::TOO_MANY_REQUESTS);
        // One token at 0.01 per second is 100 s away.
        assert!((99..=100).contains(&refusal.retry_after_secs), "{refusal:?}");
        let message = refusal.error.to_string();
        assert!(
            message.contains("'alice'") && message.contains("--rate-limit 0.01:3"),
            "{message}"
        );
        // Another identity, and anonymous callers, have buckets of their own.
        assert!(quotas.admit(&named("bob")).is_ok());
        assert!(quotas.admit(&Identity::Anonymous).is_ok());
    }

    #[test]
    fn in_flight_places_come_back_when_dropped() {
        let quotas = Quotas::new(QuotaOptions {
            rate: None,
            max_in_flight: Some(2),
        })
        .expect("limits are on");
        let first = quotas.admit(&Identity::Anonymous).expect("within the limits");
        let _second = quotas.admit(&Identity::Anonymous).expect("within the limits");
        let refusal = quotas.admit(&Identity::Anonymous).expect_err("over the limit");
        assert!(
            refusal
                .error
                .to_string()
                .contains("--max-in-flight-per-identity 2"),
            "{refusal:?}"
        );
        assert_eq!(refusal.retry_after_secs, 1);
        assert!(quotas.admit(&named("carol")).is_ok());
        drop(first);
        assert!(quotas.admit(&Identity::Anonymous).is_ok());
    }

    #[test]
    fn the_table_of_identities_is_bounded_and_forgets_idle_ones() {
        let quotas = Quotas::new(QuotaOptions {
            rate: None,
            max_in_flight: Some(1),
        })
        .expect("limits are on");
        let held: Vec<_> = (0..MAX_TRACKED_IDENTITIES)
            .map(|i| {
                quotas
                    .admit(&named(&format!("id{i}")))
                    .expect("within the limits")
            })
            .collect();
        let refusal = quotas.admit(&named("one-too-many")).expect_err("over the limit");
        assert!(
            refusal.error.to_string().contains("10000 other identities"),
            "{refusal:?}"
        );
        drop(held);
        assert!(quotas.admit(&named("one-too-many")).is_ok());
        let table = quotas.table.lock().expect("not poisoned");
        assert_eq!(table.named.len(), 1);
    }
}
