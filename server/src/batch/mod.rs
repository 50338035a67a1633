//! `ferry batch`: runs one model over a file of inputs, offline, with no port opened. The model is loaded
//! by the in-process [`Engine`] (the server's repository, batcher and ONNX Runtime backend); the file's
//! rows ([`input`]: `.npy`, `.npz`, JSON lines) go to it as requests of up to `--rows-per-request` rows,
//! at most `--concurrency` in flight, through the model's queue and batcher as a client's requests would,
//! and the answers are written in row order to a JSON-lines output ([`output`]) that a later run resumes.
//! Progress goes to stderr, and a throughput summary at the end.

mod cli;
mod input;
mod output;

use std::{
    collections::VecDeque,
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant},
};

pub use cli::main;
use input::Inputs;
use output::OutputFile;
use serde::Serialize;

use crate::{
    engine::{Engine, EngineOptions, Request},
    repository::ControlMode,
};

/// The largest input file, and the most bytes a `.npz` may inflate to in all.
pub const MAX_INPUT_BYTES: usize = 1 << 30;
/// The most rows an input file may hold.
pub const MAX_ROWS: usize = 100_000_000;
/// The longest line of a JSON-lines input.
pub const MAX_JSON_LINE_BYTES: usize = 4 << 20;
/// The longest line of an output read back to resume it.
pub const MAX_OUTPUT_LINE_BYTES: usize = 256 << 20;
/// The most requests in flight at once (`--concurrency`).
pub const MAX_CONCURRENCY: usize = 1024;

/// What to run over what.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// The repositories, ONNX Runtime, limits; only `model` is loaded.
    pub engine: EngineOptions,
    /// The model to run.
    pub model: String,
    /// Its version (a number or a label); the highest ready one when empty. Every row runs on the
    /// version this resolves to at start.
    pub version: String,
    /// The input file.
    pub input: PathBuf,
    /// The JSON-lines output, resumed when it exists.
    pub output: PathBuf,
    /// Requests in flight at once, 1 to [`MAX_CONCURRENCY`].
    pub concurrency: usize,
    /// Rows per request, 1 to the model's `max_batch_size`; `max_batch_size` when `None`.
    pub rows_per_request: Option<usize>,
    /// Whether to show progress on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The model run.
    pub model: String,
    /// The version that answered every row.
    pub version: u64,
    /// Rows in the input.
    pub rows: usize,
    /// Rows found already written by an earlier run, and skipped.
    pub skipped: usize,
    /// Rows run and written by this run.
    pub written: usize,
    /// Requests made.
    pub requests: usize,
    /// Rows per request.
    pub rows_per_request: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seconds from the first request to the last row written (loading excluded).
    pub seconds: f64,
    /// `written / seconds`.
    pub rows_per_second: f64,
    /// Seconds the model took to load.
    pub load_seconds: f64,
}

/// Why a run stopped short.
#[derive(Debug)]
pub enum Failure {
    /// Nothing ran: a flag, the input, the output or the model is wrong.
    CannotStart(String),
    /// A request failed; the rows before it are written and a new run resumes after them.
    Stopped {
        /// What failed, naming the rows.
        message: String,
        /// What was done before.
        summary: Box<Summary>,
    },
}

/// Runs the batch.
pub fn run(options: BatchOptions) -> Result<Summary, Failure> {
    let cannot = Failure::CannotStart;
    if !(1..=MAX_CONCURRENCY).contains(&options.concurrency) {
        return Err(cannot(format!(
            "--concurrency is {}, expected 1 to {MAX_CONCURRENCY}",
            options.concurrency
        )));
    }
    let loading = Instant::now();
    let mut engine_options = options.engine.clone();
    engine_options.repository.control_mode = ControlMode::Explicit;
    engine_options.repository.startup_models = vec![options.model.clone()];
    let engine = Engine::open_with(engine_options).map_err(|error| cannot(error.to_string()))?;
    let (spec, version) = engine
        .model(&options.model, &options.version)
        .map_err(|error| cannot(error.to_string()))?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let batched = spec.max_batch_size > 0;
    let per_request = match (batched, options.rows_per_request) {
        (false, None | Some(1)) => 1,
        (false, Some(n)) => {
            return Err(cannot(format!(
                "--rows-per-request is {n}, and model '{}' does not batch (max_batch_size 0): 1 row per request",
                spec.name
            )));
        }
        (true, None) => spec.max_batch_size,
        (true, Some(n)) if (1..=spec.max_batch_size).contains(&n) => n,
        (true, Some(n)) => {
            return Err(cannot(format!(
                "--rows-per-request is {n}, expected 1 to model '{}''s max_batch_size {}",
                spec.name, spec.max_batch_size
            )));
        }
    };
    let inputs = Inputs::read(&options.input, &spec).map_err(cannot)?;
    let rows = inputs.rows();
    let input_name = options
        .input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut output = OutputFile::open(&options.output, &spec.name, rows, &input_name).map_err(cannot)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| cannot(format!("cannot start the async runtime: {error}")))?;
    let skipped = output.next_row();
    let mut summary = Summary {
        model: spec.name.clone(),
        version,
        rows,
        skipped,
        written: 0,
        requests: 0,
        rows_per_request: per_request,
        concurrency: options.concurrency,
        seconds: 0.0,
        rows_per_second: 0.0,
        load_seconds,
    };
    let mut progress = Progress::new(options.progress, rows, skipped);
    let started = Instant::now();
    // The driver runs on this thread (block_on), so its file writes never hold up the runtime's workers;
    // the requests run as tasks on them.
    let result = runtime.block_on(async {
        let mut pending = VecDeque::with_capacity(options.concurrency);
        let mut next = skipped;
        let mut stopped: Option<String> = None;
        let mut last_flush = Instant::now();
        loop {
            while stopped.is_none() && pending.len() < options.concurrency && next < rows {
                let end = rows.min(next + per_request);
                let request = Request::new(spec.name.clone()).version(version.to_string());
                match inputs.add_rows(&spec, batched, next, end, request) {
                    Ok(request) => {
                        let engine = engine.clone();
                        let task = tokio::spawn(async move { engine.infer(request).await });
                        pending.push_back((next, end, task));
                        summary.requests += 1;
                        next = end;
                    }
                    // The rows before are still run and written; the run stops at this one.
                    Err(error) => stopped = Some(error),
                }
            }
            let Some((start, end, task)) = pending.pop_front() else {
                break;
            };
            let answered = task
                .await
                .map_err(|error| format!("the request task failed: {error}"))
                .and_then(|answer| answer.map_err(|error| error.to_string()))
                .and_then(|response| output.write_rows(&response, end - start, batched));
            if let Err(error) = answered {
                for (_, _, task) in pending.drain(..) {
                    task.abort();
                }
                stopped = Some(format!("rows {start} to {}: {error}", end - 1));
                break;
            }
            summary.written += end - start;
            progress.show(output.next_row());
            if last_flush.elapsed() >= FLUSH_EVERY {
                output.flush()?;
                last_flush = Instant::now();
            }
        }
        engine.shutdown().await;
        Ok::<_, String>(stopped)
    });
    progress.done();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.rows_per_second = summary.written as f64 / summary.seconds.max(1e-9);
    let finished = output.finish();
    match (result, finished) {
        (Ok(None), Ok(())) => Ok(summary),
        (Ok(Some(message)) | Err(message), _) | (_, Err(message)) => Err(Failure::Stopped {
            message,
            summary: Box::new(summary),
        }),
    }
}

/// How often written rows are handed to the file while a run goes on, so that a run that is killed loses
/// little.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The progress line on stderr: rewritten in place on a terminal (every 200 ms), a line every 10 s
/// otherwise.
struct Progress {
    enabled: bool,
    terminal: bool,
    rows: usize,
    skipped: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(enabled: bool, rows: usize, skipped: usize) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            rows,
            skipped,
            started: now,
            last: now,
        }
    }

    fn show(&mut self, done: usize) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        if !self.enabled || self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = (done - self.skipped) as f64 / elapsed;
        let left = (self.rows - done) as f64 / rate.max(1e-9);
        let percent = 100.0 * done as f64 / self.rows.max(1) as f64;
        let line = format!(
            "ferry batch: {done}/{} rows ({percent:.1}%), {rate:.0} rows/s, {left:.0} s left",
            self.rows
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}
