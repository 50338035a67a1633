//! The last changes of a model's policy, in memory: who changed it, when, how, and from what to what.

use std::collections::VecDeque;

use serde::Serialize;

use super::policy::PolicySpec;

/// How many changes each model remembers.
pub const HISTORY_LENGTH: usize = 32;

/// One change of a policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The authenticated identity, `anonymous`, or `file` for an edit of `traffic.json`.
    pub who: String,
    /// `set`, `label`, `promote`, `rollback` or `file`.
    pub action: &'static str,
    /// The policy before.
    pub from: PolicySpec,
    /// The policy after.
    pub to: PolicySpec,
}

/// A bounded log of changes, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History(VecDeque<Change>);

impl History {
    /// Adds a change, forgetting the oldest beyond [`HISTORY_LENGTH`].
    pub fn push(&mut self, change: Change) {
        if self.0.len() == HISTORY_LENGTH {
            self.0.pop_front();
        }
        self.0.push_back(change);
    }

    /// The latest change.
    pub fn last(&self) -> Option<&Change> {
        self.0.back()
    }

    /// Every remembered change, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        self.0.iter().cloned().collect()
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_the_latest_changes() {
        let mut history = History::default();
        for i in 0..HISTORY_LENGTH + 3 {
            history.push(Change {
                unix_ms: i as u64,
                who: "file".into(),
                action: "file",
                from: PolicySpec::default(),
                to: PolicySpec::default(),
            });
        }
        let changes = history.changes();
        assert_eq!(changes.len(), HISTORY_LENGTH);
        assert_eq!(changes[0].unix_ms, 3);
        assert_eq!(history.last().map(|c| c.unix_ms), Some(HISTORY_LENGTH as u64 + 2));
    }
}
