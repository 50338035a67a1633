//! The cache's store: values by 128-bit hash, least recently used first out, bounded by bytes.
//!
//! One mutex guards the map, held only for the map's own work: a hash lookup and an ordered-map update to
//! mark the entry used, or an insertion and the evictions it needs. Hashing, comparing keys, and copying
//! or freeing values all happen outside it: values are shared (`Arc`), and evicted ones are dropped after
//! the lock is released.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

/// What became of an insertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored, after evicting as many least recently used values as it needed.
    Stored,
    /// A value with the same hash is already there and was kept: another request with the same key got
    /// there first.
    Present,
    /// Larger than the whole store: not stored, nothing evicted.
    TooLarge,
}

/// How full the store is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The most bytes its values may weigh together.
    pub capacity: usize,
    /// What its values weigh now.
    pub bytes: usize,
    /// How many values it holds.
    pub entries: usize,
    /// How many values were evicted to make room, since it was made.
    pub evictions: u64,
}

/// A byte-bounded LRU map from hashes to shared values.
#[derive(Debug)]
pub struct Store<V> {
    capacity: usize,
    inner: Mutex<Lru<V>>,
}

#[derive(Debug)]
struct Lru<V> {
    slots: HashMap<u128, Slot<V>>,
    /// The hashes by when they were last used, oldest first.
    recency: BTreeMap<u64, u128>,
    /// The next use's number.
    clock: u64,
    bytes: usize,
    evictions: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: Arc<V>,
    weight: usize,
    used: u64,
}

impl<V> Store<V> {
    /// An empty store whose values may weigh `capacity` bytes together.
    pub fn new(capacity: usize) -> Self {
        Store {
            capacity,
            inner: Mutex::new(Lru {
                slots: HashMap::new(),
                recency: BTreeMap::new(),
                clock: 0,
                bytes: 0,
                evictions: 0,
            }),
        }
    }

    /// The most bytes the values may weigh together.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value stored under `hash`, now the most recently used.
    pub fn get(&self, hash: u128) -> Option<Arc<V>> {
        let mut lru = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = lru.tick();
        let slot = lru.slots.get_mut(&hash)?;
        let before = std::mem::replace(&mut slot.used, now);
        let value = Arc::clone(&slot.value);
        lru.recency.remove(&before);
        lru.recency.insert(now, hash);
        Some(value)
    }

    /// Stores `value`, weighing `weight` bytes, under `hash`, evicting the least recently used values until
    /// it fits. A value already under `hash` is kept (see [`Inserted::Present`]).
    pub fn insert(&self, hash: u128, value: Arc<V>, weight: usize) -> Inserted {
        if weight > self.capacity {
            return Inserted::TooLarge;
        }
        let mut evicted = Vec::new();
        let mut lru = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if lru.slots.contains_key(&hash) {
            return Inserted::Present;
        }
        while lru
            .bytes
            .checked_add(weight)
            .is_none_or(|total| total > self.capacity)
        {
            let Some((_, oldest)) = lru.recency.pop_first() else {
                break;
            };
            if let Some(slot) = lru.slots.remove(&oldest) {
                lru.bytes -= slot.weight;
                lru.evictions += 1;
                evicted.push(slot.value);
            }
        }
        let used = lru.tick();
        lru.recency.insert(used, hash);
        lru.slots.insert(hash, Slot { value, weight, used });
        lru.bytes += weight;
        drop(lru);
        // Freed here, after the lock: an evicted answer may be megabytes.
        drop(evicted);
        Inserted::Stored
    }

    /// How full the store is now.
    pub fn usage(&self) -> Usage {
        let lru = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Usage {
            capacity: self.capacity,
            bytes: lru.bytes,
            entries: lru.slots.len(),
            evictions: lru.evictions,
        }
    }
}

impl<V> Lru<V> {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(store: &Store<&'static str>) -> (usize, usize, u64) {
        let usage = store.usage();
        (usage.bytes, usage.entries, usage.evictions)
    }

    #[test]
    fn values_come_back_shared_and_unknown_hashes_miss() {
        let store = Store::new(100);
        let value = Arc::new("a");
        assert_eq!(store.insert(1, Arc::clone(&value), 10), Inserted::Stored);
        let found = store.get(1).expect("stored");
        assert!(Arc::ptr_eq(&found, &value), "the same allocation, not a copy");
        assert!(store.get(2).is_none());
        assert_eq!(usage(&store), (10, 1, 0));
    }

    #[test]
    fn the_least_recently_used_go_first_until_the_new_value_fits() {
        let store = Store::new(100);
        for hash in 1..=4 {
            assert_eq!(store.insert(hash, Arc::new("v"), 25), Inserted::Stored);
        }
        // 1 is used again, so 2 and then 3 are the oldest.
        assert!(store.get(1).is_some());
        assert_eq!(store.insert(5, Arc::new("big"), 40), Inserted::Stored);
        assert!(store.get(2).is_none() && store.get(3).is_none(), "evicted");
        for hash in [1, 4, 5] {
            assert!(store.get(hash).is_some(), "{hash} kept");
        }
        assert_eq!(usage(&store), (90, 3, 2));
    }

    #[test]
    fn a_value_larger_than_the_store_is_refused_and_evicts_nothing() {
        let store = Store::new(100);
        assert_eq!(store.insert(1, Arc::new("small"), 60), Inserted::Stored);
        assert_eq!(store.insert(2, Arc::new("huge"), 101), Inserted::TooLarge);
        assert!(store.get(1).is_some());
        assert_eq!(store.insert(3, Arc::new("whole"), 100), Inserted::Stored);
        assert!(
            store.get(1).is_none(),
            "a value of exactly the capacity fits, alone"
        );
        assert_eq!(usage(&store), (100, 1, 1));
    }

    #[test]
    fn a_second_insertion_under_a_hash_keeps_the_first() {
        let store = Store::new(100);
        let first = Arc::new("first");
        assert_eq!(store.insert(7, Arc::clone(&first), 10), Inserted::Stored);
        assert_eq!(store.insert(7, Arc::new("second"), 10), Inserted::Present);
        assert!(Arc::ptr_eq(&store.get(7).expect("kept"), &first));
        assert_eq!(usage(&store), (10, 1, 0));
    }

    #[test]
    fn an_empty_store_stores_nothing() {
        let store = Store::new(0);
        assert_eq!(store.insert(1, Arc::new("x"), 1), Inserted::TooLarge);
        assert_eq!(usage(&store), (0, 0, 0));
    }

    /// `--cache-config local,size=18446744073709551615` is a cache without a practical bound, not an
    /// overflow.
    #[test]
    fn a_cache_as_large_as_the_address_space_still_adds_up() {
        let store = Store::new(usize::MAX);
        assert_eq!(store.insert(1, Arc::new("a"), usize::MAX - 1), Inserted::Stored);
        assert_eq!(store.insert(2, Arc::new("b"), 2), Inserted::Stored);
        assert!(store.get(1).is_none(), "evicted to make room");
        assert_eq!(usage(&store), (2, 1, 1));
    }

    #[test]
    fn concurrent_use_keeps_the_weights_consistent() {
        let store = Arc::new(Store::new(1000));
        let threads: Vec<_> = (0..4u128)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..500u128 {
                        store.insert(t * 10_000 + i, Arc::new("v"), 7 + (i % 13) as usize);
                        store.get(t * 10_000 + i / 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        let usage = store.usage();
        assert!(usage.bytes <= 1000, "{usage:?}");
        let lru = store.inner.lock().expect("lock");
        assert_eq!(lru.slots.values().map(|s| s.weight).sum::<usize>(), usage.bytes);
        assert_eq!(lru.recency.len(), lru.slots.len());
    }
}
