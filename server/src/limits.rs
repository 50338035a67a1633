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
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
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
    /// The max_batch_size auto-complete gives a model that can batch and whose config lists no tensors
    /// (0: such models do not batch). Default 4, as in Triton; takes precedence over --backend-config.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(i32).range(0..=i64::from(MAX_DEFAULT_MAX_BATCH_SIZE)))]
    pub default_max_batch_size: Option<i32>,
    /// Triton's backend settings, `[onnxruntime,]default-max-batch-size=N`: Ferry acts on that one (the
    /// same as --default-max-batch-size) and logs and ignores the others, so that a Triton command line
    /// starts Ferry unchanged. Repeatable.
    #[arg(long, value_name = "[BACKEND,]SETTING=VALUE", value_parser = BackendSetting::parse)]
    pub backend_config: Vec<BackendSetting>,
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

/// The largest `--default-max-batch-size`: a model's batch is bounded by `--max-request-bytes` anyway; this
/// keeps the completed config's number sane.
pub const MAX_DEFAULT_MAX_BATCH_SIZE: i32 = 1 << 20;

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            max_request_bytes: crate::MAX_MESSAGE_BYTES,
            max_instances_per_model: 64,
            max_threads_per_instance: 64,
            max_model_threads: 4096,
            default_max_batch_size: None,
            backend_config: Vec::new(),
            instance_idle_ms: 5000,
        }
    }
}

impl ResourceLimits {
    /// The max_batch_size auto-complete gives a batching model: --default-max-batch-size, else the last
    /// `default-max-batch-size` of --backend-config for onnxruntime (or for every backend), else
    /// [`crate::config::DEFAULT_MAX_BATCH_SIZE`].
    pub fn default_max_batch_size(&self) -> i32 {
        self.default_max_batch_size
            .or_else(|| {
                self.backend_config
                    .iter()
                    .rev()
                    .find_map(BackendSetting::default_max_batch_size)
            })
            .unwrap_or(crate::config::DEFAULT_MAX_BATCH_SIZE)
    }

    /// The --backend-config settings Ferry does not act on, for the start-up log.
    pub fn ignored_backend_settings(&self) -> impl Iterator<Item = &BackendSetting> {
        self.backend_config
            .iter()
            .filter(|s| s.default_max_batch_size().is_none())
    }
}

/// One `--backend-config` value: `backend,setting=value`, or `setting=value` for every backend (Triton's
/// syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSetting {
    /// The backend it is for; empty for every backend.
    pub backend: String,
    /// The setting's name.
    pub setting: String,
    /// Its value, as given.
    pub value: String,
}

impl BackendSetting {
    /// Parses a flag value; a `default-max-batch-size` for onnxruntime (or every backend) must be a number
    /// from 0 to [`MAX_DEFAULT_MAX_BATCH_SIZE`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let (backend, assignment) = match text.split_once(',') {
            Some((backend, rest)) => (backend, rest),
            None => ("", text),
        };
        let (setting, value) = assignment
            .split_once('=')
            .filter(|(setting, _)| !setting.is_empty())
            .ok_or_else(|| format!("expected [BACKEND,]SETTING=VALUE, got '{text}'"))?;
        let parsed = BackendSetting {
            backend: backend.to_owned(),
            setting: setting.to_owned(),
            value: value.to_owned(),
        };
        if parsed.applies_to_onnxruntime() && parsed.setting == "default-max-batch-size" {
            let number: i32 = value.parse().map_err(|_| {
                format!("default-max-batch-size must be a number from 0 to {MAX_DEFAULT_MAX_BATCH_SIZE}, got '{value}'")
            })?;
            if !(0..=MAX_DEFAULT_MAX_BATCH_SIZE).contains(&number) {
                return Err(format!(
                    "default-max-batch-size must be a number from 0 to {MAX_DEFAULT_MAX_BATCH_SIZE}, got '{value}'"
                ));
            }
        }
        Ok(parsed)
    }

    fn applies_to_onnxruntime(&self) -> bool {
        self.backend.is_empty() || self.backend == crate::config::ONNX_BACKEND
    }

    /// The default max_batch_size this setting gives ONNX models, if it is one.
    fn default_max_batch_size(&self) -> Option<i32> {
        (self.applies_to_onnxruntime() && self.setting == "default-max-batch-size")
            .then(|| self.value.parse().ok())
            .flatten()
    }
}

impl std::fmt::Display for BackendSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.backend.is_empty() {
            write!(f, "{},", self.backend)?;
        }
        write!(f, "{}={}", self.setting, self.value)
    }
}

/// What holding one BYTES element costs beyond its bytes while a request is decoded and run: its slice in
/// the request (32 bytes), ONNX Runtime's `std::string` (32) and the pointer handed to it (8).
pub const BYTES_ELEMENT_COST: usize = 72;

/// The longest client- or config-supplied text an error message carries; longer messages are cut, so a
/// 10 MB model name or config string cannot become a 10 MB `grpc-message` header or index entry.
pub const MAX_ECHOED_MESSAGE_BYTES: usize = 1024;

/// Refuses a string a client sent (`field`: what the client calls it, e.g. "parameter 'sequence_id'") when it
/// is longer than `limit` bytes: INVALID_ARGUMENT naming the field, the limit and the length given, never the
/// string itself. One rule for every such string, so that a client gets the same status and form for an
/// over-long sequence id, routing key, region name or model name.
pub fn check_string_length(field: &str, value: &str, limit: usize) -> Result<(), crate::Error> {
    if value.len() > limit {
        return Err(crate::Error::invalid(format!(
            "{field} is {} bytes long; the most is {limit}",
            value.len()
        )));
    }
    Ok(())
}

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

    /// Triton's `--backend-config=onnxruntime,default-max-batch-size=N` (also without the backend name) sets
    /// the default; the dedicated flag wins; other settings are kept only to be logged.
    #[test]
    fn the_default_max_batch_size_comes_from_either_flag() {
        let setting = |text: &str| BackendSetting::parse(text).expect(text);
        let mut limits = ResourceLimits::default();
        assert_eq!(limits.default_max_batch_size(), 4);
        limits.backend_config = vec![
            setting("onnxruntime,default-max-batch-size=64"),
            setting("python,shm-default-byte-size=1048576"),
        ];
        assert_eq!(limits.default_max_batch_size(), 64);
        assert_eq!(
            limits
                .ignored_backend_settings()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["python,shm-default-byte-size=1048576"]
        );
        limits.backend_config.push(setting("default-max-batch-size=0"));
        assert_eq!(limits.default_max_batch_size(), 0, "the last one counts");
        limits.default_max_batch_size = Some(16);
        assert_eq!(limits.default_max_batch_size(), 16);
        for bad in [
            "onnxruntime,default-max-batch-size=lots",
            "default-max-batch-size=-1",
            "onnxruntime,default-max-batch-size=99999999",
            "onnxruntime",
            "=3",
        ] {
            assert!(BackendSetting::parse(bad).is_err(), "{bad}");
        }
        assert!(
            BackendSetting::parse("tensorflow,default-max-batch-size=lots").is_ok(),
            "another backend's settings are not Ferry's to judge"
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
