//! Handing work from the request path to a background thread without ever making the request wait: the
//! channel bounds how many items wait, and [`QueuedBytes`] how many bytes they hold, so that a slow thread
//! costs dropped (and counted) items, never memory or latency. Drift sampling, payload logging and live
//! quality each hand their captures over this way.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    mpsc::SyncSender,
};

/// The bytes of the items handed to one background thread and not yet taken by it, at most `max`.
#[derive(Debug)]
pub(crate) struct QueuedBytes {
    bytes: AtomicUsize,
    max: usize,
}

impl QueuedBytes {
    /// Nothing queued yet; at most `max` bytes at a time.
    pub(crate) const fn new(max: usize) -> Self {
        QueuedBytes {
            bytes: AtomicUsize::new(0),
            max,
        }
    }

    /// Sends `item`, which holds `size` bytes, when the bytes fit and the channel has room; `false` (and the
    /// item dropped) otherwise. Never blocks.
    pub(crate) fn try_send<T>(&self, sender: &SyncSender<T>, item: T, size: usize) -> bool {
        let queued = self.bytes.fetch_add(size, Ordering::Relaxed);
        let sent = queued.saturating_add(size) <= self.max && sender.try_send(item).is_ok();
        if !sent {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
        }
        sent
    }

    /// The background thread took an item of `size` bytes off the channel.
    pub(crate) fn taken(&self, size: usize) {
        self.bytes.fetch_sub(size, Ordering::Relaxed);
    }

    /// The bytes waiting now.
    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn items_wait_within_both_bounds_and_what_does_not_fit_is_refused_and_not_counted() {
        let queued = QueuedBytes::new(100);
        let (sender, receiver) = mpsc::sync_channel(2);
        assert!(queued.try_send(&sender, 1, 60));
        assert!(!queued.try_send(&sender, 2, 41), "over the bytes");
        assert_eq!(queued.get(), 60);
        assert!(queued.try_send(&sender, 3, 40));
        assert!(!queued.try_send(&sender, 4, 0), "over the items");
        assert_eq!(queued.get(), 100);
        assert_eq!(receiver.recv(), Ok(1));
        queued.taken(60);
        assert_eq!(queued.get(), 40);
    }
}
