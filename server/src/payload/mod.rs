//! Payload logging: sampled requests of a model, with their inputs and outputs, written to JSON-lines files
//! for audits and for joining with the true outcome later.
//!
//! A model turns it on in its config (`ferry.payload_log.rate`, see [`crate::config::PayloadLogSettings`]);
//! the server chooses where files go (`--payload-log-dir`, [`PayloadLogOptions`]). Each version gets a
//! [`PayloadLog`]. The request path only decides, with one atomic counter, whether a request is sampled;
//! a sampled request's payloads are captured as refcounted [`Bytes`] (never copied, and not even held for a
//! tensor that is redacted, not selected or over the record's budget) and go into a channel bounded in
//! records and in bytes with `try_send`: a full channel drops the record and counts it. Turning the payloads
//! into JSON and writing them happens on the version's writer thread ([`writer`]), a plain thread that ends
//! with the version, so logging never waits on a disk.
//!
//! A sampled request without an id gets one (32 hex digits) that its response carries, so that a client
//! can find the record of any answer it got.

mod record;
mod writer;

use std::{
    fmt::Write as _,
    hash::{BuildHasher, Hasher},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;

use crate::{
    DataType, Error,
    config::{ModelSpec, PayloadLogSettings},
    handoff::QueuedBytes,
    request::{InputTensor, TensorData},
    sampling::EvenSampler,
};

/// Records waiting for the writer thread; more are dropped (and counted) rather than queued.
pub const RECORD_QUEUE: usize = 1024;
/// Payload bytes the queued records may hold together (they share the requests' buffers, so this is memory
/// kept alive): a record that would pass it is dropped and counted.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// The default size at which a log file is closed and the next one started (`--payload-log-max-file-bytes`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The default number of files kept per version (`--payload-log-max-files`); older ones are deleted.
pub const DEFAULT_MAX_FILES: usize = 100;

/// Where and how the server writes payload logs: the server's choice, never a model config's.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadLogOptions {
    /// The folder under which each version writes `<model>/<version>/payload-<n>.jsonl`.
    pub dir: PathBuf,
    /// The size past which a file is closed (fsynced) and the next one started.
    pub max_file_bytes: u64,
    /// Files kept per version; the oldest are deleted past it.
    pub max_files: usize,
}

/// How a tensor of a sampled request is recorded.
enum Payload {
    /// Its values.
    Fixed(Bytes),
    /// Its BYTES elements, one slice each.
    Strings(Vec<Bytes>),
    /// BYTES elements in Triton's length-prefixed form (an output).
    Prefixed(Bytes),
    /// Not written: the config redacts it.
    Redacted,
    /// Not written: it did not fit the record's budget.
    Truncated,
}

/// One tensor of a record.
struct Tensor {
    name: String,
    data_type: DataType,
    shape: Vec<i64>,
    payload: Payload,
}

/// A sampled request on its way to the writer: what the request path captured, serialized by the writer.
pub struct Capture {
    id: String,
    time: SystemTime,
    budget: usize,
    held: usize,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

/// What the writer receives.
struct Record {
    capture: Capture,
    latency: Duration,
}

/// The payload log of one model version.
pub struct PayloadLog {
    shared: Arc<Shared>,
    sender: SyncSender<Record>,
    /// Which of the requests offered are sampled.
    sampler: EvenSampler,
}

impl std::fmt::Debug for PayloadLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadLog")
            .field("model", &self.shared.model)
            .field("version", &self.shared.version)
            .finish()
    }
}

/// What the request path, the writer and the metrics share.
struct Shared {
    model: String,
    version: u64,
    settings: PayloadLogSettings,
    /// Records written, and records dropped (queue full or a write failed).
    written: AtomicU64,
    dropped: AtomicU64,
    /// Payload bytes of the records in the queue.
    queued: QueuedBytes,
}

impl PayloadLog {
    /// The payload log of version `version` of the model `spec` describes, with its folder created and its
    /// writer thread started; `None` when the config leaves logging off. A config that turns it on fails the
    /// load when the server has no `--payload-log-dir` (`options` is `None`).
    pub fn start(
        spec: &ModelSpec,
        version: u64,
        options: Option<&PayloadLogOptions>,
    ) -> Result<Option<Self>, Error> {
        let settings = spec.payload_log.clone();
        if !settings.enabled() {
            return Ok(None);
        }
        let Some(options) = options else {
            return Err(Error::ModelLoad(format!(
                "model '{}' sets {}rate to {} but the server writes no payload logs: start it with \
                 --payload-log-dir",
                spec.name,
                crate::config::PAYLOAD_LOG_PREFIX,
                settings.rate
            )));
        };
        let shared = Arc::new(Shared {
            model: spec.name.clone(),
            version,
            settings,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            queued: QueuedBytes::new(MAX_QUEUED_BYTES),
        });
        let files = writer::Files::open(options, &spec.name, version)?;
        let (sender, receiver) = mpsc::sync_channel(RECORD_QUEUE);
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("payload-{}-v{version}", spec.name))
            .spawn(move || writer::run(&worker, files, receiver))
            .map_err(|error| Error::ModelLoad(format!("starting the payload log writer: {error}")))?;
        Ok(Some(PayloadLog {
            sampler: EvenSampler::new(shared.settings.rate),
            shared,
            sender,
        }))
    }

    /// Called for every parsed request: decides whether it is sampled and, if so, captures its inputs
    /// (refcounts only) and gives it an id when it has none. Nothing is allocated unless it is sampled.
    pub fn sample(&self, id: &mut String, inputs: &[InputTensor], spec: &ModelSpec) -> Option<Capture> {
        if !self.sampler.take() {
            return None;
        }
        if id.is_empty() {
            *id = new_id();
        }
        let mut capture = Capture {
            id: id.clone(),
            time: SystemTime::now(),
            budget: self.shared.settings.max_bytes,
            held: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let settings = &self.shared.settings;
        for input in inputs {
            let Some(tensor) = spec.inputs.get(input.index) else {
                continue;
            };
            if !selected(settings.inputs.as_deref(), &tensor.name) {
                continue;
            }
            let payload = if settings.redact.iter().any(|r| r == &tensor.name) {
                Payload::Redacted
            } else {
                match &input.data {
                    TensorData::Fixed(bytes) => capture.fit(bytes.len(), || Payload::Fixed(bytes.clone())),
                    TensorData::Strings(items) => {
                        let size = items.iter().map(Bytes::len).sum();
                        capture.fit(size, || Payload::Strings(items.clone()))
                    }
                }
            };
            capture.inputs.push(Tensor {
                name: tensor.name.clone(),
                data_type: tensor.data_type,
                shape: input.shape.clone(),
                payload,
            });
        }
        Some(capture)
    }

    /// Adds output `name` of type `data_type` and shape `shape` to `capture`; `data` is raw (BYTES
    /// length-prefixed).
    pub fn add_output(
        &self,
        capture: &mut Capture,
        name: &str,
        data_type: DataType,
        shape: &[i64],
        data: &Bytes,
    ) {
        let settings = &self.shared.settings;
        if !selected(settings.outputs.as_deref(), name) {
            return;
        }
        let payload = if settings.redact.iter().any(|r| r == name) {
            Payload::Redacted
        } else if data_type == DataType::Bytes {
            capture.fit(data.len(), || Payload::Prefixed(data.clone()))
        } else {
            capture.fit(data.len(), || Payload::Fixed(data.clone()))
        };
        capture.outputs.push(Tensor {
            name: name.to_owned(),
            data_type,
            shape: shape.to_vec(),
            payload,
        });
    }

    /// Hands the finished `capture` of a request answered after `latency` to the writer without waiting:
    /// when the queue is full, or holds too many bytes, the record is dropped and counted.
    pub fn submit(&self, capture: Capture, latency: Duration) {
        let size = capture.held;
        if !self
            .shared
            .queued
            .try_send(&self.sender, Record { capture, latency }, size)
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Capture {
    /// `make`'s payload when `size` more bytes fit the record's budget, [`Payload::Truncated`] otherwise.
    fn fit(&mut self, size: usize, make: impl FnOnce() -> Payload) -> Payload {
        if size > self.budget {
            return Payload::Truncated;
        }
        self.budget -= size;
        self.held += size;
        make()
    }
}

/// Whether `name` is recorded under the list `names` (`None`: all).
fn selected(names: Option<&[String]>, name: &str) -> bool {
    names.is_none_or(|names| names.iter().any(|n| n == name))
}

/// A fresh request id: 128 bits from the process's random hash keys, the time and a counter, in hex.
pub(crate) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut id = String::with_capacity(32);
    for half in 0..2u8 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_u8(half);
        let _ = write!(id, "{:016x}", hasher.finish());
    }
    id
}

/// A counter series: its name, its help text and how it is read.
type Counter = (&'static str, &'static str, fn(&Shared) -> u64);

/// The Prometheus series of the versions that log payloads: records written and dropped.
pub fn render_metrics(versions: &[Arc<crate::model::ModelVersion>], out: &mut String) {
    let logs: Vec<&PayloadLog> = versions.iter().filter_map(|v| v.payload_log.as_ref()).collect();
    let counters: [Counter; 2] = [
        (
            "ferry_payload_log_records_total",
            "Sampled requests written to the payload log",
            |s| s.written.load(Ordering::Relaxed),
        ),
        (
            "ferry_payload_log_dropped_total",
            "Sampled requests not logged because the payload log writer was behind or could not write",
            |s| s.dropped.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for log in &logs {
            let _ = writeln!(
                out,
                "{name}{{model=\"{}\",version=\"{}\"}} {}",
                crate::metrics::escape_label(&log.shared.model),
                log.shared.version,
                read(&log.shared)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(held: usize) -> Capture {
        Capture {
            id: "r".into(),
            time: SystemTime::now(),
            budget: 0,
            held,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn a_record_that_finds_the_queue_full_or_over_its_bytes_is_dropped_and_counted() {
        // A queue of one record and no writer: the second record finds it full.
        let (sender, receiver) = mpsc::sync_channel(1);
        let log = PayloadLog {
            shared: Arc::new(Shared {
                model: "m".into(),
                version: 1,
                settings: PayloadLogSettings::default(),
                written: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                queued: QueuedBytes::new(MAX_QUEUED_BYTES),
            }),
            sender,
            sampler: EvenSampler::new(1.0),
        };
        log.submit(capture(10), Duration::ZERO);
        log.submit(capture(10), Duration::ZERO);
        assert_eq!(log.shared.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(log.shared.queued.get(), 10);
        drop(receiver.recv().expect("the first record is queued"));
        log.shared.queued.taken(10);
        // Room in the queue, but not in the bytes it may hold.
        log.submit(capture(MAX_QUEUED_BYTES + 1), Duration::ZERO);
        assert_eq!(log.shared.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(log.shared.queued.get(), 0);
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn assigned_ids_are_128_bit_hex_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(
                id.len() == 32
                    && id
                        .bytes()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
        }
    }
}
