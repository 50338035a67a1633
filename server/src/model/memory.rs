//! What a version counts against the memory budget (`--model-memory-budget`): what it took when it loaded,
//! plus what each instance that opened its session later took ([`super::instance::Deferred`]).
//!
//! Both are measured the same way: the growth of the process's resident memory while the session opened (and
//! warmed up), and at least the model file's size, since each session reads the file and holds its
//! weights. A later instance's growth is also capped at what the load took. The load opened one session
//! (the one later instances share their prepacked weights with) and built the version's scheduler,
//! statistics and warm-up requests, which later instances do not repeat, so an instance cannot take more
//! than that; the cap keeps memory that other threads took meanwhile (another instance of the same or
//! another version opening at the same moment, a load, requests' buffers) from being charged to this one.
//! Measured rather than estimated as the load's figure outright, because on a server that serves while an
//! instance opens the figure would count the shared weights and per-version state once per instance.

use std::sync::atomic::{AtomicU64, Ordering};

/// The memory a version counts, in bytes.
#[derive(Debug, Default)]
pub(super) struct VersionMemory {
    /// Measured when the version loaded.
    at_load: AtomicU64,
    /// The sum of what its instances that opened their sessions after the load took, less the ones removed
    /// since (changed only under the version's instance list lock, with each instance's own figure).
    later: AtomicU64,
}

impl VersionMemory {
    pub(super) fn total(&self) -> u64 {
        self.at_load
            .load(Ordering::Relaxed)
            .saturating_add(self.later.load(Ordering::Relaxed))
    }

    pub(super) fn set_at_load(&self, bytes: u64) {
        self.at_load.store(bytes, Ordering::Relaxed);
    }

    /// What an instance whose session opened after the load counts: the resident memory the process grew
    /// by while it opened (`grown`), at most what the load took and at least the model file's size.
    pub(super) fn later_instance(&self, grown: u64, file_bytes: u64) -> u64 {
        grown.min(self.at_load.load(Ordering::Relaxed)).max(file_bytes)
    }

    /// Counts an instance that opened its session after the load.
    pub(super) fn add(&self, bytes: u64) {
        self.later.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Stops counting an instance that was removed, with what [`Self::add`] counted for it.
    pub(super) fn remove(&self, bytes: u64) {
        // Only what was added is removed, under the same lock: no underflow, but never wrap if that changes.
        let _ = self
            .later
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |later| {
                Some(later.saturating_sub(bytes))
            });
    }
}

/// A model file's size in bytes, the least a session reading it counts; 0 where it cannot be read.
pub(crate) fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}

/// The process's resident memory now, in bytes; 0 where `/proc` cannot tell.
pub(crate) fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_proc() {
        let before = resident_bytes();
        assert!(
            before > 1024 * 1024,
            "a test process holds more than 1 MiB: {before}"
        );
        let block = vec![1u8; 64 * 1024 * 1024];
        assert!(
            resident_bytes() >= before + 32 * 1024 * 1024,
            "64 MiB touched shows"
        );
        drop(block);
    }

    #[test]
    fn a_later_instance_counts_its_growth_between_the_file_size_and_the_load() {
        let memory = VersionMemory::default();
        memory.set_at_load(10_000);
        assert_eq!(memory.later_instance(4_000, 1_000), 4_000, "as measured");
        assert_eq!(memory.later_instance(0, 1_000), 1_000, "at least the file");
        assert_eq!(
            memory.later_instance(50_000, 1_000),
            10_000,
            "others' growth meanwhile is not its own"
        );
        memory.add(4_000);
        memory.add(1_000);
        assert_eq!(memory.total(), 15_000);
        memory.remove(4_000);
        assert_eq!(memory.total(), 11_000);
        memory.remove(u64::MAX);
        assert_eq!(memory.total(), 10_000, "what the load took stays");
    }
}
