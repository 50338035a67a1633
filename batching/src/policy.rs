//! How a model version's requests are queued and grouped: Triton's `dynamic_batching` settings in a form the
//! batcher can use directly.

use std::time::Duration;

/// What happens to a request whose queue timeout passes before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeoutAction {
    /// Fail the request (Triton's default).
    #[default]
    Reject,
    /// Keep it, behind every request of its level and above that has not timed out.
    Delay,
}

/// The queue rules of one priority level (Triton's `ModelQueuePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueuePolicy {
    /// What a timeout does.
    pub timeout_action: TimeoutAction,
    /// How long a request may wait in the queue; `None` for no limit.
    pub default_timeout: Option<Duration>,
    /// Whether a request's own `timeout` parameter may shorten `default_timeout`.
    pub allow_timeout_override: bool,
    /// How many requests the level holds at most; `None` for no limit.
    pub max_queue_size: Option<usize>,
}

/// How requests of one model version become batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingPolicy {
    /// Whether requests are combined at all. Without it every request runs alone, as Triton does for a model
    /// without `dynamic_batching`.
    pub dynamic: bool,
    /// The most rows a batch may hold (`max_batch_size`, at least 1).
    pub max_batch_size: usize,
    /// Batch sizes to send as soon as they can be formed, largest first.
    pub preferred_batch_sizes: Vec<usize>,
    /// How long the oldest request may wait for a fuller batch.
    pub max_queue_delay: Duration,
    /// Wait for a fuller batch only while another request is expected within `max_queue_delay` (from the
    /// arrival rate observed, counting requests that found every instance busy): a lone request at low load
    /// runs at once instead of waiting out the delay. Off, the delay is always waited out, as in Triton.
    pub adaptive_delay: bool,
    /// Whether responses leave in the order their batches were formed, whatever instance finishes first.
    pub preserve_ordering: bool,
    /// Queue policy of each priority level; index 0 is level 1, the highest. Never empty.
    pub levels: Vec<QueuePolicy>,
    /// The level of a request that names none (0-based index into `levels`).
    pub default_level: usize,
}

impl BatchingPolicy {
    /// Each request runs alone; one queue without limits beyond `max_queue_size`.
    pub fn unbatched(max_queue_size: Option<usize>) -> Self {
        BatchingPolicy {
            dynamic: false,
            max_batch_size: 1,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
            adaptive_delay: false,
            preserve_ordering: false,
            levels: vec![QueuePolicy {
                max_queue_size,
                ..QueuePolicy::default()
            }],
            default_level: 0,
        }
    }

    /// Greedy batching up to `max_batch_size` with no delay and one unlimited queue: `dynamic_batching { }`.
    pub fn greedy(max_batch_size: usize) -> Self {
        BatchingPolicy {
            dynamic: true,
            max_batch_size: max_batch_size.max(1),
            ..Self::unbatched(None)
        }
    }
}
