//! Resident memory over 100 load and unload cycles of one model (the 24 MiB compute MLP), in explicit
//! control mode through the registry's load and unload requests. Writes `benches/results/reload_memory.md`.
//! Run with `cargo bench -p ferry-benches --bench reload_memory` (`FERRY_RELOAD_CYCLES` changes the count).

use std::{fmt::Write as _, time::Duration};

use ferry_server::{
    onnx,
    repository::{ControlMode, LoadRequest, ModelName, Registry, RepositoryOptions},
};

/// Resident set size of this process, from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<(), String> {
    let cycles: usize = std::env::var("FERRY_RELOAD_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let models = ferry_benches::bench_models()?;
    let source = onnx::find_library(None).ok_or(onnx::MISSING_LIBRARY_HELP)?;
    let environment = onnx::start(&source)?;
    let options = RepositoryOptions {
        control_mode: ControlMode::Explicit,
        strict_readiness: false,
        ..RepositoryOptions::new(vec![models])
    };
    let registry = Registry::start(environment, options).map_err(|e| e.to_string())?;
    let model = ModelName::parse("compute_mlp_batched".to_owned()).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(cycles);
    for cycle in 0..cycles {
        let request = LoadRequest::new(model.clone());
        registry.load_request(request).map_err(|e| e.to_string())?;
        registry
            .unload_request(&model, false)
            .map_err(|e| e.to_string())?;
        // Instance threads release their sessions as they stop, just after the unload returns.
        std::thread::sleep(Duration::from_millis(50));
        samples.push(rss_bytes());
        if cycle % 10 == 0 {
            eprintln!("cycle {cycle}: {:.1} MiB resident", mib(rss_bytes()));
        }
    }
    let first = samples[0];
    let last = samples[samples.len() - 1];
    let max = samples.iter().copied().max().unwrap_or(0);
    let mut report = String::new();
    let _ = writeln!(report, "# Resident memory over load/unload cycles\n");
    let _ = writeln!(
        report,
        "{cycles} cycles of RepositoryModelLoad + RepositoryModelUnload of `{model}` (24 MiB of weights), explicit \
         mode, RSS read from /proc/self/statm after each unload. Made by \
         `cargo bench -p ferry-benches --bench reload_memory`.\n"
    );
    let _ = writeln!(report, "| after cycle | RSS MiB |\n|---:|---:|");
    for (i, sample) in samples.iter().enumerate() {
        if i == 0 || (i + 1) % 10 == 0 {
            let _ = writeln!(report, "| {} | {:.1} |", i + 1, mib(*sample));
        }
    }
    let growth = 100.0 * (max as f64 - first as f64) / first as f64;
    let _ = writeln!(
        report,
        "\nAfter the first cycle: {:.1} MiB; after the last: {:.1} MiB; largest: {:.1} MiB ({growth:+.1}% over the \
         first; target: within 10%).",
        mib(first),
        mib(last),
        mib(max)
    );
    let results = ferry_benches::repo_root().join("benches/results");
    std::fs::create_dir_all(&results).map_err(|e| e.to_string())?;
    std::fs::write(results.join("reload_memory.md"), &report).map_err(|e| e.to_string())?;
    println!("{report}");
    Ok(())
}
