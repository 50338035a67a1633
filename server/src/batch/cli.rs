//! The command line of `ferry batch`: its flags, its summary and its exit status.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::Parser;

use super::{BatchOptions, Failure, Summary};
use crate::{engine::EngineOptions, limits::ResourceLimits, onnx};

/// Every row was run and written.
const DONE: u8 = 0;
/// A request failed: the rows before it are written, and running the same command again resumes.
const STOPPED: u8 = 1;
/// Nothing ran: a flag, the input, the output or the model is wrong, or ONNX Runtime is missing.
const CANNOT_RUN: u8 = 2;

/// Run a model over a file of inputs, offline: no port is opened. The model is loaded as `ferry` loads it,
/// and the rows go through its queue and batcher as requests of up to --rows-per-request rows,
/// --concurrency at once, with the server's validation.
///
/// Input: a .npy array (rows along the first dimension) for a model of one input, a .npz of one array per
/// input named as the inputs, or .jsonl lines of one JSON object per row ({"INPUT0": [...], ...}).
/// Output: JSON lines, a header then {"row": i, "outputs": {...}} per row in row order; an existing output
/// of the same model and row count is resumed after its last complete row. Progress goes to stderr, and a
/// summary at the end. Exits 0 when every row is written, 1 when a request failed (run again to resume),
/// 2 when nothing could run.
#[derive(Debug, Parser)]
#[command(name = "ferry batch", bin_name = "ferry batch", version)]
struct BatchFlags {
    /// A model repository in Triton's layout; repeat for several.
    #[arg(long = "model-repository", value_name = "DIR", required = true)]
    model_repositories: Vec<PathBuf>,

    /// The model to run; only it is loaded.
    #[arg(long, value_name = "NAME")]
    model: String,

    /// The version to run (a number or a label); the highest ready one by default.
    #[arg(long, default_value = "", value_name = "VERSION")]
    model_version: String,

    /// The input file: .npy, .npz or .jsonl.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,

    /// The JSON-lines output; resumed when it exists.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,

    /// Requests in flight at once (1 to 1024).
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,

    /// Rows per request, 1 to the model's max_batch_size; max_batch_size by default.
    #[arg(long, value_name = "N")]
    rows_per_request: Option<usize>,

    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    summary_json: bool,

    /// Path of libonnxruntime.so, found as the server finds it when not given.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,

    // The server's model limits.
    #[command(flatten)]
    limits: ResourceLimits,
}

/// Runs `ferry batch` with `args`, the arguments after `batch`, and returns its exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let flags = BatchFlags::parse_from(std::iter::once(OsString::from("ferry batch")).chain(args));
    let Some(onnxruntime) = onnx::find_library(flags.onnxruntime_lib.as_deref()) else {
        eprintln!("ferry batch: {}", onnx::MISSING_LIBRARY_HELP);
        return ExitCode::from(CANNOT_RUN);
    };
    let mut engine = EngineOptions::new(flags.model_repositories.clone());
    engine.onnxruntime = Some(onnxruntime);
    engine.repository.limits = flags.limits;
    let options = BatchOptions {
        engine,
        model: flags.model.clone(),
        version: flags.model_version.clone(),
        input: flags.input.clone(),
        output: flags.output.clone(),
        concurrency: flags.concurrency,
        rows_per_request: flags.rows_per_request,
        progress: !flags.quiet,
    };
    match super::run(options) {
        Ok(summary) => {
            report(&summary, flags.summary_json);
            ExitCode::from(DONE)
        }
        Err(Failure::CannotStart(message)) => {
            eprintln!("ferry batch: {message}");
            ExitCode::from(CANNOT_RUN)
        }
        Err(Failure::Stopped { message, summary }) => {
            report(&summary, flags.summary_json);
            eprintln!(
                "ferry batch: stopped: {message}\nferry batch: the first {} rows are written; run the same \
                 command again to resume",
                summary.skipped + summary.written
            );
            ExitCode::from(STOPPED)
        }
    }
}

/// The throughput summary on stderr, and as JSON on stdout when asked.
fn report(summary: &Summary, json: bool) {
    eprintln!(
        "ferry batch: model '{}' version {}: {} rows written ({} already there) in {:.3} s, {:.0} rows/s; \
         {} requests of up to {} rows, {} at once; loading took {:.2} s",
        summary.model,
        summary.version,
        summary.written,
        summary.skipped,
        summary.seconds,
        summary.rows_per_second,
        summary.requests,
        summary.rows_per_request,
        summary.concurrency,
        summary.load_seconds
    );
    if json && let Ok(text) = serde_json::to_string(summary) {
        println!("{text}");
    }
}
