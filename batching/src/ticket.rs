//! The shared fate of one queued request, decided exactly once: run by an instance, or withdrawn by its
//! caller (who stopped waiting), or expired by the batcher.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;
const EXPIRED: u8 = 3;

/// Whether a request still waits, and who ended its wait. Cloned between the caller and the queue entry.
///
/// The transitions are compare-and-swap from "queued", so a request that times out or is cancelled at the
/// moment a batch is formed is either in the batch or withdrawn, never both.
#[derive(Debug, Clone, Default)]
pub struct Ticket(Arc<AtomicU8>);

/// How a ticket's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    /// Still in the queue.
    Queued,
    /// Put into a batch; it will run.
    Taken,
    /// The caller stopped waiting (cancelled or timed out on its side); it will never run.
    Withdrawn,
    /// Its queue timeout passed under a REJECT policy; it will never run.
    Expired,
}

impl Ticket {
    /// A ticket for a request about to be queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state.
    pub fn state(&self) -> TicketState {
        match self.0.load(Ordering::Acquire) {
            QUEUED => TicketState::Queued,
            TAKEN => TicketState::Taken,
            WITHDRAWN => TicketState::Withdrawn,
            _ => TicketState::Expired,
        }
    }

    fn transition(&self, to: u8) -> bool {
        self.0
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Claims the request for a batch; false if it was withdrawn or expired first.
    pub fn take(&self) -> bool {
        self.transition(TAKEN)
    }

    /// Withdraws a queued request; false if it was already taken (it will run and answer) or expired.
    pub fn withdraw(&self) -> bool {
        self.transition(WITHDRAWN)
    }

    /// Marks a queued request as timed out; false if something else ended its wait first.
    pub fn expire(&self) -> bool {
        self.transition(EXPIRED)
    }

    /// True while the request waits in the queue.
    pub fn is_queued(&self) -> bool {
        self.state() == TicketState::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_transition_wins() {
        let ticket = Ticket::new();
        let caller = ticket.clone();
        assert!(ticket.take());
        assert!(!caller.withdraw(), "a taken request cannot be withdrawn");
        assert!(!ticket.expire());
        assert_eq!(caller.state(), TicketState::Taken);

        let ticket = Ticket::new();
        assert!(ticket.withdraw());
        assert!(!ticket.take(), "a withdrawn request is never run");
        assert_eq!(ticket.state(), TicketState::Withdrawn);

        let ticket = Ticket::new();
        assert!(ticket.expire());
        assert!(!ticket.take());
        assert_eq!(ticket.state(), TicketState::Expired);
    }
}
