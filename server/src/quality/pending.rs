//! Bounded retention by request id: predictions waiting for their truth, truths waiting for their
//! prediction, and the ids joined lately (so that a second truth for one is told apart from an unknown
//! id). Each holds at most a count of entries and a count of values, and none older than an age; the
//! oldest goes first, and every entry dropped unjoined is counted by the caller.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

/// One retained entry.
struct Entry<T> {
    /// Its place in `order`: an id inserted again after it was taken gets a new one.
    seq: u64,
    at: Instant,
    size: usize,
    item: T,
}

/// Entries by id, oldest first, bounded in count, values and age.
pub struct Retained<T> {
    entries: HashMap<Arc<str>, Entry<T>>,
    /// Insertion order; entries taken meanwhile leave stale places here, skipped and compacted.
    order: VecDeque<(u64, Arc<str>)>,
    next: u64,
    values: usize,
    max_count: usize,
    max_values: usize,
    max_age: Duration,
}

impl<T> Retained<T> {
    /// Empty, holding at most `max_count` entries and `max_values` values, none older than `max_age`.
    pub fn new(max_count: usize, max_values: usize, max_age: Duration) -> Self {
        Retained {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            values: 0,
            max_count: max_count.max(1),
            max_values,
            max_age,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Takes the entry of `id` out.
    pub fn take(&mut self, id: &str) -> Option<T> {
        let entry = self.entries.remove(id)?;
        self.values -= entry.size;
        Some(entry.item)
    }

    /// Holds `item` of `size` values under `id` (which the caller checked is not held), received at `now`;
    /// the oldest entries make room. Returns how many were dropped for it, or `None` when `item` alone is
    /// over the value bound and was not kept.
    pub fn insert(&mut self, id: Arc<str>, item: T, size: usize, now: Instant) -> Option<u64> {
        if size > self.max_values {
            return None;
        }
        let mut dropped = 0;
        while self.entries.len() >= self.max_count || self.values + size > self.max_values {
            if self.pop_oldest().is_none() {
                break;
            }
            dropped += 1;
        }
        let seq = self.next;
        self.next += 1;
        self.values += size;
        self.order.push_back((seq, Arc::clone(&id)));
        self.entries.insert(
            id,
            Entry {
                seq,
                at: now,
                size,
                item,
            },
        );
        if self.order.len() > 2 * self.max_count.max(self.entries.len()) {
            let entries = &self.entries;
            self.order
                .retain(|(seq, id)| entries.get(id).is_some_and(|e| e.seq == *seq));
        }
        Some(dropped)
    }

    /// Drops the entries older than the age bound at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        while let Some((seq, id)) = self.order.front() {
            match self.entries.get(id) {
                Some(entry) if entry.seq == *seq => {
                    if now.saturating_duration_since(entry.at) < self.max_age {
                        break;
                    }
                    self.pop_oldest();
                    expired += 1;
                }
                // Taken, or inserted again later: a stale place.
                _ => {
                    self.order.pop_front();
                }
            }
        }
        expired
    }

    /// Drops the oldest live entry.
    fn pop_oldest(&mut self) -> Option<T> {
        while let Some((seq, id)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|e| e.seq == seq) {
                return self.take(&id);
            }
        }
        None
    }
}

/// The ids joined lately, at most a bound of them, the oldest forgotten first.
pub struct Recent {
    ids: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    max: usize,
}

impl Recent {
    /// Remembering at most `max` ids.
    pub fn new(max: usize) -> Self {
        Recent {
            ids: HashSet::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Whether `id` was joined lately.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`.
    pub fn add(&mut self, id: Arc<str>) {
        if !self.ids.insert(Arc::clone(&id)) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.max
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_make_room_and_expire_first() {
        let start = Instant::now();
        let mut retained = Retained::new(2, 10, Duration::from_secs(60));
        assert_eq!(retained.insert("a".into(), 1, 4, start), Some(0));
        assert_eq!(retained.insert("b".into(), 2, 4, start), Some(0));
        // The count bound: "a" makes room for "c".
        assert_eq!(retained.insert("c".into(), 3, 1, start), Some(1));
        assert!(!retained.contains("a") && retained.contains("b"));
        // The value bound: 4 + 1 + 8 > 10, so "b" goes.
        assert_eq!(retained.insert("d".into(), 4, 8, start), Some(1));
        assert_eq!(retained.len(), 2);
        // One item over the whole bound is never kept, and drops nothing.
        assert_eq!(retained.insert("e".into(), 5, 11, start), None);
        assert_eq!(retained.take("d"), Some(4));
        // A taken entry leaves a stale place that expiry skips; a fresh one outlives an old one.
        retained.insert("f".into(), 6, 1, start);
        retained.insert("g".into(), 7, 1, start + Duration::from_secs(30));
        assert_eq!(retained.expire(start + Duration::from_secs(59)), 0);
        assert_eq!(retained.expire(start + Duration::from_secs(60)), 1);
        assert!(!retained.contains("f") && retained.contains("g"));
        assert_eq!(retained.expire(start + Duration::from_secs(90)), 1);
        assert_eq!(retained.len(), 0);
    }

    #[test]
    fn stale_places_are_compacted_so_joins_do_not_grow_the_order() {
        let now = Instant::now();
        let mut retained = Retained::new(4, 100, Duration::from_secs(60));
        for i in 0..1000 {
            let id: Arc<str> = format!("r{i}").into();
            retained.insert(Arc::clone(&id), i, 1, now);
            retained.take(&id);
        }
        assert!(retained.order.len() <= 8, "{}", retained.order.len());
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut recent = Recent::new(2);
        for id in ["a", "b", "c"] {
            recent.add(id.into());
        }
        assert!(!recent.contains("a") && recent.contains("b") && recent.contains("c"));
    }
}
