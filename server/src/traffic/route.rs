//! Choosing a split arm. A request with a routing key goes where weighted rendezvous hashing
//! (highest random weight) sends it: every arm scores `weight / -ln(u)`, with `u` a hash of the key and the
//! arm's name in (0, 1), and the highest score wins. A key's score at an arm depends on that arm alone, so
//! a weight change moves only the keys it must: a key stays at its arm while that arm's weight does not
//! shrink and no other arm's grows past it, and each arm gets its weight's share of keys. A request
//! without a key takes a cheap pseudo-random draw over the cumulative weights.

use std::cell::Cell;

use super::policy::Arm;

/// The longest routing key, in bytes.
pub const MAX_ROUTING_KEY_BYTES: usize = 256;

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finaliser): the same in every build and process, so
/// a key keeps its arm across restarts.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash as a number strictly between 0 and 1.
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The arm a request goes to among the arms `eligible` admits (positive weight, version ready), or
/// `None` when none is. `key` is the routing key's hash, when the request has one.
pub fn choose(arms: &[Arm], key: Option<u64>, eligible: impl Fn(&Arm) -> bool) -> Option<&Arm> {
    let admitted = |arm: &&Arm| arm.weight > 0 && eligible(arm);
    match key {
        Some(key) => arms.iter().filter(admitted).max_by(|a, b| {
            score(a, key)
                .partial_cmp(&score(b, key))
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        None => {
            let total: u64 = arms
                .iter()
                .filter(admitted)
                .map(|arm| u64::from(arm.weight))
                .sum();
            if total == 0 {
                return None;
            }
            let mut draw = next_random() % total;
            arms.iter().filter(admitted).find(|arm| {
                let weight = u64::from(arm.weight);
                if draw < weight {
                    true
                } else {
                    draw -= weight;
                    false
                }
            })
        }
    }
}

/// An arm's rendezvous score for a key.
fn score(arm: &Arm, key: u64) -> f64 {
    f64::from(arm.weight) / -unit(mix(key ^ arm.seed)).ln()
}

thread_local! {
    static RANDOM: Cell<u64> = Cell::new(seed());
}

/// A seed that differs per thread and per process.
fn seed() -> u64 {
    let local = 0u8;
    let address = &local as *const u8 as u64;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(address ^ time) | 1
}

/// The next number of the thread's xorshift64* generator: a few instructions, no lock.
fn next_random() -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::traffic::policy::Rule;

    fn arm(name: &str, weight: u32) -> Arm {
        Arm {
            rule: Rule {
                name: Arc::from(name),
                version: 1,
                count: Arc::default(),
            },
            weight,
            seed: hash(name.as_bytes()),
        }
    }

    fn route(arms: &[Arm], key: u64) -> String {
        choose(arms, Some(key), |_| true)
            .map(|a| a.rule.name.to_string())
            .expect("an arm")
    }

    #[test]
    fn keyed_requests_follow_the_weights() {
        let arms = [arm("stable", 90), arm("canary", 10)];
        let canary = (0..20_000u64)
            .filter(|k| route(&arms, hash(&k.to_le_bytes())) == "canary")
            .count();
        assert!(
            (1_700..2_300).contains(&canary),
            "{canary} of 20000 keys on a 10% arm"
        );
    }

    #[test]
    fn unkeyed_requests_follow_the_weights() {
        let arms = [arm("stable", 90), arm("canary", 10)];
        let canary = (0..20_000)
            .filter(|_| choose(&arms, None, |_| true).is_some_and(|a| &*a.rule.name == "canary"))
            .count();
        assert!(
            (1_700..2_300).contains(&canary),
            "{canary} of 20000 draws on a 10% arm"
        );
    }

    #[test]
    fn a_weight_change_moves_only_the_keys_it_must() {
        let before = [arm("stable", 90), arm("canary", 10)];
        let after = [arm("stable", 70), arm("canary", 30)];
        let keys: Vec<u64> = (0..20_000u64).map(|k| hash(&k.to_le_bytes())).collect();
        let mut moved = 0;
        for key in &keys {
            let (old, new) = (route(&before, *key), route(&after, *key));
            // The arm that grew keeps every key it had.
            if old == "canary" {
                assert_eq!(new, "canary");
            }
            moved += usize::from(old != new);
        }
        // About the 20% that the weights moved, not a reshuffle.
        assert!((3_400..4_600).contains(&moved), "{moved} of 20000 keys moved");
        // Adding an arm only takes keys to the new arm.
        let grown = [arm("stable", 90), arm("canary", 10), arm("v3", 10)];
        for key in &keys {
            let new = route(&grown, *key);
            assert!(new == "v3" || new == route(&before, *key));
        }
    }

    #[test]
    fn ineligible_and_zero_weight_arms_get_nothing() {
        let arms = [arm("stable", 0), arm("canary", 10), arm("v3", 5)];
        for key in 0..1_000u64 {
            let chosen = choose(&arms, Some(key), |a| &*a.rule.name != "v3").expect("canary");
            assert_eq!(&*chosen.rule.name, "canary");
        }
        assert!(choose(&arms, None, |_| false).is_none());
        assert!(choose(&arms[..1], Some(1), |_| true).is_none());
    }
}
