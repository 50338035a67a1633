//! The command line of `ferry check`: its flags, its output and its exit status.

use std::{
    ffi::OsString,
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::Parser;

use super::{CheckOptions, Status};
use crate::{limits::ResourceLimits, onnx};

/// Every model checked passed.
const PASSED: u8 = 0;
/// At least one failure.
const FAILED: u8 = 1;
/// The check could not run: no ONNX Runtime, a repository that cannot be read, a flag that is wrong.
const CANNOT_RUN: u8 = 2;

/// Check a model repository before shipping it: parse and complete every config, open every version the
/// version policy selects with ONNX Runtime and warm it up, and run the sample requests of
/// `<model>/tests/*.json` against it, comparing the answers with the expected outputs. Nothing is served.
///
/// Prints one line per failure (`file:line: message`) and a summary, or with --json one JSON report. Exits 0
/// when everything passed, 1 on failures, 2 when the check cannot run.
#[derive(Debug, Parser)]
#[command(name = "ferry check", bin_name = "ferry check", version)]
struct CheckFlags {
    /// Model repositories in Triton's layout, as --model-repository gives them to the server.
    #[arg(value_name = "REPOSITORY", required = true)]
    repositories: Vec<PathBuf>,

    /// Check only this model; repeat for several. A name no repository has is a failure.
    #[arg(long = "model", value_name = "NAME")]
    models: Vec<String>,

    /// Print one JSON report on stdout instead of lines.
    #[arg(long)]
    json: bool,

    /// Path of libonnxruntime.so, found as the server finds it when not given.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,

    // The server's model limits, so that a model passes here only if the server would load it.
    #[command(flatten)]
    limits: ResourceLimits,
}

/// Runs `ferry check` with `args`, the arguments after `check`, and returns its exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let flags = CheckFlags::parse_from(std::iter::once(OsString::from("ferry check")).chain(args));
    let cannot_run = |message: String| {
        if flags.json {
            let report = serde_json::json!({ "status": "error", "error": message });
            let _ = writeln!(io::stdout(), "{report}");
        } else {
            let _ = writeln!(io::stderr(), "ferry check: {message}");
        }
        ExitCode::from(CANNOT_RUN)
    };
    let Some(onnxruntime) = onnx::find_library(flags.onnxruntime_lib.as_deref()) else {
        return cannot_run(onnx::MISSING_LIBRARY_HELP.to_owned());
    };
    let options = CheckOptions {
        roots: flags.repositories.clone(),
        models: flags.models.clone(),
        limits: flags.limits,
        onnxruntime,
    };
    let report = match super::run(&options) {
        Ok(report) => report,
        Err(message) => return cannot_run(message),
    };
    let text = if flags.json {
        serde_json::to_string_pretty(&report).map(|json| json + "\n")
    } else {
        Ok(report.to_text())
    };
    // A report that cannot be written whole (a full disk, a closed pipe) must not pass for a clean check.
    let written = text
        .map_err(io::Error::other)
        .and_then(|text| io::stdout().lock().write_all(text.as_bytes()));
    if let Err(error) = written {
        let _ = writeln!(io::stderr(), "ferry check: cannot write the report: {error}");
        return ExitCode::from(CANNOT_RUN);
    }
    ExitCode::from(match report.status {
        Status::Passed => PASSED,
        Status::Failed => FAILED,
    })
}
