//! Ferry's documented bounds on what a client or a config can make it allocate, start or echo, and
//! message-size limits as gRPC clients expect them.
//!
//! Every limit here is checked before the thing it bounds is allocated or started; `docs/limits.md` lists
//! them with their flags.
//!
//! tonic refuses a message above the configured size with `OUT_OF_RANGE`; gRPC's reference implementations,
//! and so Triton and its clients, use `RESOURCE_EXHAUSTED` for that. Ferry's own handlers never answer
//! `OUT_OF_RANGE`, so a layer rewrites that status on the way out, and nothing else.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use http::{HeaderValue, Response};
use tonic::Code;

/// The gRPC status header of a trailers-only response, where tonic puts errors raised before a handler runs.
const GRPC_STATUS: &str = "grpc-status";

/// Rewrites an `OUT_OF_RANGE` status to `RESOURCE_EXHAUSTED`, leaving every other response untouched.
pub fn resource_exhausted_for_oversized<B>(mut response: Response<B>) -> Response<B> {
    let out_of_range = HeaderValue::from(Code::OutOfRange as i32);
    if response.headers().get(GRPC_STATUS) == Some(&out_of_range) {
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(Code::ResourceExhausted as i32));
    }
    response
}

/// Bounds on model instances, ONNX Runtime threads and decoded request memory; also the flags that set them,
/// shared by the server and `ferry check` so that both load models under the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ResourceLimits {
    /// The most memory one inference request may take once decoded, in bytes: its tensors, plus 72 bytes
    /// per BYTES element. Larger requests (shared memory inputs and warm-ups too)
    /// get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = ResourceLimits::default().max_request_bytes, value_name = "BYTES")]
    pub max_request_bytes: usize,
    /// The most instances (instance_group counts) one model version may run; configs asking for more fail
    /// to load.
    #[arg(long, default_value_t = ResourceLimits::default().max_instances_per_model, value_name = "COUNT")]
    pub max_instances_per_model: usize,
    /// The most ONNX Runtime threads (intra_op_thread_count, inter_op_thread_count) one instance may ask for.
    #[arg(long, default_value_t = ResourceLimits::default().max_threads_per_instance, value_name = "COUNT")]
    pub max_threads_per_instance: usize,
    /// The most threads all model instances together may run (each instance: its own thread plus its ONNX
    /// Runtime threads); a load that would pass it fails.
    #[arg(long, default_value_t = ResourceLimits::default().max_model_threads, value_name = "COUNT")]
    pub max_model_threads: usize,
    /// How long a model instance's thread waits for a request before it ends, in milliseconds; the next
    /// request starts one again. 0 keeps one thread per instance running from load to unload.
    #[arg(long, default_value_t = ResourceLimits::default().instance_idle_ms, value_name = "MS")]
    pub instance_idle_ms: u64,
}

impl ResourceLimits {
    /// [`ResourceLimits::instance_idle_ms`] as the instances take it: `None` when threads never end.
    pub fn instance_idle(&self) -> Option<std::time::Duration> {
        (self.instance_idle_ms > 0).then(|| std::time::Duration::from_millis(self.instance_idle_ms))
    }
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            max_request_bytes: crate::MAX_MESSAGE_BYTES,
            max_instances_per_model: 64,
            max_threads_per_instance: 64,
            max_model_threads: 4096,
            instance_idle_ms: 5000,
        }
    }
}

/// What holding one BYTES element costs beyond its bytes while a request is decoded and run: its slice in
/// the request (32 bytes), ONNX Runtime's `std::string` (32) and the pointer handed to it (8).
pub const BYTES_ELEMENT_COST: usize = 72;

/// The longest client- or config-supplied text an error message carries; longer messages are cut, so a
/// 10 MB model name or config string cannot become a 10 MB `grpc-message` header or index entry.
pub const MAX_ECHOED_MESSAGE_BYTES: usize = 1024;

/// `message`, cut to [`MAX_ECHOED_MESSAGE_BYTES`] at a character boundary with a note of its real length.
pub fn bounded_message(message: String) -> String {
    if message.len() <= MAX_ECHOED_MESSAGE_BYTES {
        return message;
    }
    let mut cut = MAX_ECHOED_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}... (message cut, {} bytes in all)",
        &message[..cut],
        message.len()
    )
}

/// The threads all model instances may still start, shared by every model of a server.
#[derive(Debug)]
pub struct ThreadBudget {
    left: AtomicUsize,
    limit: usize,
}

impl ThreadBudget {
    /// A budget of `limit` threads.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ThreadBudget {
            left: AtomicUsize::new(limit),
            limit,
        })
    }

    /// Takes `threads` from the budget until the returned reservation drops, or says why it cannot.
    pub fn reserve(self: &Arc<Self>, threads: usize) -> Result<ThreadReservation, String> {
        let taken = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(threads)
            });
        match taken {
            Ok(_) => Ok(ThreadReservation {
                budget: Arc::clone(self),
                threads,
            }),
            Err(left) => Err(format!(
                "an instance needs {threads} threads but only {left} of the {} that model instances may run \
                 are left (--max-model-threads)",
                self.limit
            )),
        }
    }
}

/// Threads taken from a [`ThreadBudget`], given back on drop (when the instance that holds them stops).
#[derive(Debug)]
pub struct ThreadReservation {
    budget: Arc<ThreadBudget>,
    threads: usize,
}

impl Drop for ThreadReservation {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.threads, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_budget_is_taken_and_given_back() {
        let budget = ThreadBudget::new(10);
        let first = budget.reserve(6).expect("fits");
        let refused = budget.reserve(5).expect_err("only 4 left");
        assert!(
            refused.contains("only 4 of the 10") && refused.contains("--max-model-threads"),
            "{refused}"
        );
        drop(first);
        budget.reserve(10).expect("given back");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        assert_eq!(bounded_message("short".into()), "short");
        let long = "é".repeat(MAX_ECHOED_MESSAGE_BYTES);
        let cut = bounded_message(long.clone());
        assert!(cut.len() < MAX_ECHOED_MESSAGE_BYTES + 64, "{}", cut.len());
        assert!(
            cut.ends_with(&format!("cut, {} bytes in all)", long.len())),
            "{cut}"
        );
    }

    fn with_status(code: Code) -> Response<()> {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(code as i32));
        response
    }

    #[test]
    fn only_out_of_range_is_rewritten() {
        let rewritten = resource_exhausted_for_oversized(with_status(Code::OutOfRange));
        assert_eq!(rewritten.headers()[GRPC_STATUS], "8");
        let kept = resource_exhausted_for_oversized(with_status(Code::InvalidArgument));
        assert_eq!(kept.headers()[GRPC_STATUS], "3");
        let ok = resource_exhausted_for_oversized(Response::new(()));
        assert!(ok.headers().get(GRPC_STATUS).is_none());
    }
}
