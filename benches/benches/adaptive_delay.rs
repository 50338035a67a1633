//! The adaptive queue delay against Triton's two ways of batching, on the serving benchmark's models: mean
//! latency with 1 request in flight and throughput with 32 and 128 in flight, for `dynamic_batching { }`, a
//! fixed `max_queue_delay_microseconds: 500`, and the same delay with `ferry.adaptive_queue_delay`. Writes
//! `benches/results/adaptive_delay.md`.
//!
//! Run with `make bench-adaptive` (or `cargo bench -p ferry-benches --bench adaptive_delay` once `make setup`
//! has made `.venv`). `FERRY_BENCH_SECONDS` sets the measured seconds per point (default 4),
//! `FERRY_BENCH_ROUNDS` how many times every point is measured (default 1; the median is reported), and
//! `FERRY_BENCH_ONLY` limits the run to one model. The three variants of a point run one after the other, so
//! that a change in the machine's load hits them alike.

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::Context;
use ferry_client::{
    Client,
    bench::{LoadConfig, LoadReport, run_load},
    proto::ModelStatisticsRequest,
};
use ferry_server::{
    MAX_MESSAGE_BYTES, Server, ServerOptions, config::ADAPTIVE_QUEUE_DELAY, onnx,
    repository::RepositoryOptions,
};

/// The serving benchmark's models: name and input width (see `generate_bench_models.py`).
const MODELS: [(&str, usize); 2] = [("compute_mlp", 512), ("small_mlp", 32)];
/// The ways of batching compared: a name and what replaces `dynamic_batching { }` in the config.
const VARIANTS: [(&str, &str); 3] = [
    ("greedy", "dynamic_batching { }"),
    ("fixed", "dynamic_batching { max_queue_delay_microseconds: 500 }"),
    (
        "adaptive",
        "dynamic_batching { max_queue_delay_microseconds: 500 }",
    ),
];
const CONCURRENCY: [usize; 3] = [1, 32, 128];

/// One measured point, the median of its rounds by throughput.
struct Point {
    model: &'static str,
    variant: &'static str,
    concurrency: usize,
    report: LoadReport,
    /// Rows per execution while the point ran (warm-up included).
    average_batch: f64,
    /// The lowest and highest throughput of its rounds, req/s: how noisy the machine was.
    spread: (f64, f64),
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A repository holding each model under each variant, next to the serving benchmark's (whose model files
/// and configs it starts from).
fn variant_repository(models: &Path) -> anyhow::Result<std::path::PathBuf> {
    let out = models.with_file_name("bench-models-adaptive");
    for (model, _) in MODELS {
        let source = models.join(format!("{model}_batched"));
        let config = std::fs::read_to_string(source.join("config.pbtxt"))?;
        anyhow::ensure!(
            config.contains(VARIANTS[0].1),
            "{model}: unexpected config {config}"
        );
        for (variant, batching) in VARIANTS {
            let folder = out.join(format!("{model}_{variant}"));
            std::fs::create_dir_all(folder.join("1"))?;
            let file = folder.join("1/model.onnx");
            let _ = std::fs::remove_file(&file);
            std::fs::hard_link(source.join("1/model.onnx"), &file)
                .or_else(|_| std::fs::copy(source.join("1/model.onnx"), &file).map(|_| ()))?;
            let mut text = config.replace(VARIANTS[0].1, batching);
            if variant == "adaptive" {
                let _ = writeln!(
                    text,
                    "parameters {{ key: \"{ADAPTIVE_QUEUE_DELAY}\" value {{ string_value: \"true\" }} }}"
                );
            }
            std::fs::write(folder.join("config.pbtxt"), text)?;
        }
    }
    Ok(out)
}

async fn executions(client: &Client, model: &str) -> anyhow::Result<(u64, u64)> {
    let request = ModelStatisticsRequest {
        name: model.into(),
        version: String::new(),
    };
    let stats = client
        .raw()
        .model_statistics(request)
        .await?
        .into_inner()
        .model_stats;
    let stats = stats.first().context("no statistics")?;
    Ok((stats.inference_count, stats.execution_count))
}

fn main() -> anyhow::Result<()> {
    let seconds = env_number("FERRY_BENCH_SECONDS", 4);
    let rounds = env_number("FERRY_BENCH_ROUNDS", 1).max(1);
    let only = std::env::var("FERRY_BENCH_ONLY").ok();
    let models = variant_repository(&ferry_benches::bench_models().map_err(anyhow::Error::msg)?)?;
    let onnxruntime = onnx::find_library(None).context(onnx::MISSING_LIBRARY_HELP)?;
    let options = ServerOptions {
        repository: RepositoryOptions::new(vec![models]),
        onnxruntime,
        max_message_bytes: MAX_MESSAGE_BYTES,
        connections: Default::default(),
        grpc_response_compression: Default::default(),
    };
    // The server gets a runtime of its own, as it would in its own process; the load generator another.
    let server = Server::start(&options)?;
    let loopback = ferry_benches::LoopbackServer::serve(server)?;
    let address = loopback.address;

    let load_before = load_average();
    let client_runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let points = client_runtime.block_on(async {
        let client = Client::connect(address.to_string()).await?;
        let mut points = Vec::new();
        for (model, width) in MODELS {
            if only.as_deref().is_some_and(|only| only != model) {
                continue;
            }
            for concurrency in CONCURRENCY {
                let mut measured: Vec<Vec<(LoadReport, f64)>> = vec![Vec::new(); VARIANTS.len()];
                for _ in 0..rounds {
                    for (index, (variant, _)) in VARIANTS.iter().enumerate() {
                        let name = format!("{model}_{variant}");
                        let before = executions(&client, &name).await?;
                        let config = LoadConfig {
                            url: address.to_string(),
                            connections: concurrency.div_ceil(32),
                            concurrency,
                            rate: None,
                            warmup: Duration::from_secs(1),
                            duration: Duration::from_secs(seconds),
                            request: ferry_benches::serving_request(&name, width),
                            tls: None,
                            credentials: Default::default(),
                        };
                        let report = run_load(config).await?;
                        let after = executions(&client, &name).await?;
                        let rows = after.0.saturating_sub(before.0) as f64;
                        let runs = after.1.saturating_sub(before.1).max(1) as f64;
                        eprintln!(
                            "{name} c={concurrency}: {:.0} req/s, mean {:?}, p99 {:?}, average batch {:.1}, errors {:?}",
                            report.throughput,
                            report.latency.mean,
                            report.latency.p99,
                            rows / runs,
                            report.errors
                        );
                        measured[index].push((report, rows / runs));
                    }
                }
                for (index, mut rounds) in measured.into_iter().enumerate() {
                    rounds.sort_by(|a, b| a.0.throughput.total_cmp(&b.0.throughput));
                    let spread = (
                        rounds.first().map_or(0.0, |r| r.0.throughput),
                        rounds.last().map_or(0.0, |r| r.0.throughput),
                    );
                    let (report, average_batch) = rounds.swap_remove(rounds.len() / 2);
                    points.push(Point {
                        model,
                        variant: VARIANTS[index].0,
                        concurrency,
                        report,
                        average_batch,
                        spread,
                    });
                }
            }
        }
        anyhow::Ok(points)
    })?;
    loopback.stop();
    let load_after = load_average();

    let command = format!(
        "FERRY_BENCH_SECONDS={seconds} FERRY_BENCH_ROUNDS={rounds}{} cargo bench -p ferry-benches --bench adaptive_delay",
        only.as_deref()
            .map(|m| format!(" FERRY_BENCH_ONLY={m}"))
            .unwrap_or_default()
    );
    let markdown = report(&points, seconds, rounds, &command, (&load_before, &load_after));
    let results = ferry_benches::repo_root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("adaptive_delay.md"), &markdown)?;
    println!("{markdown}");
    Ok(())
}

fn micros(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1e6)
}

fn report(points: &[Point], seconds: u64, rounds: u64, command: &str, load: (&str, &str)) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let _ = writeln!(out, "# Adaptive queue delay\n");
    let _ = writeln!(
        out,
        "Ferry over loopback gRPC (server and load generator in one process, on separate runtimes, on the same \
         {cores} cores), on the serving benchmark's models (one instance each), 1-row FP32 requests, closed \
         loop. Batching: `greedy` is `dynamic_batching {{ }}`; `fixed` adds `max_queue_delay_microseconds: 500`; \
         `adaptive` adds `{ADAPTIVE_QUEUE_DELAY}: \"true\"` to `fixed`. Each point: 1 s warm-up, {seconds} s \
         measured, median of {rounds} round(s) by throughput, the three variants of a point run back to back.\n"
    );
    let _ = writeln!(
        out,
        "Command: `{command}`. Load average (1, 5, 15 min) before: {}, after: {}.\n",
        load.0, load.1
    );
    let _ = writeln!(
        out,
        "| model | batching | in flight | req/s | rounds' req/s | mean µs | p50 µs | p99 µs | avg batch | errors |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for p in points {
        let errors: u64 = p.report.errors.values().sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {:.1} | {} |",
            p.model,
            p.variant,
            p.concurrency,
            p.report.throughput,
            p.spread.0,
            p.spread.1,
            micros(p.report.latency.mean),
            micros(p.report.latency.p50),
            micros(p.report.latency.p99),
            p.average_batch,
            if errors == 0 {
                "0".to_owned()
            } else {
                format!("{:?}", p.report.errors)
            },
        );
    }
    let find = |model: &str, variant: &str, concurrency: usize| {
        points
            .iter()
            .find(|p| p.model == model && p.variant == variant && p.concurrency == concurrency)
    };
    let _ = writeln!(out, "\n## Against the targets\n");
    for (model, _) in MODELS {
        if let (Some(adaptive), Some(greedy), Some(fixed)) = (
            find(model, "adaptive", 1),
            find(model, "greedy", 1),
            find(model, "fixed", 1),
        ) {
            let ratio = adaptive.report.latency.mean.as_secs_f64() / greedy.report.latency.mean.as_secs_f64();
            let _ = writeln!(
                out,
                "- {model}, 1 in flight: adaptive mean {} µs, greedy {} µs ({:+.0}%; target within +10%), fixed {} µs.",
                micros(adaptive.report.latency.mean),
                micros(greedy.report.latency.mean),
                (ratio - 1.0) * 100.0,
                micros(fixed.report.latency.mean),
            );
        }
        for concurrency in [32, 128] {
            if let (Some(adaptive), Some(fixed), Some(greedy)) = (
                find(model, "adaptive", concurrency),
                find(model, "fixed", concurrency),
                find(model, "greedy", concurrency),
            ) {
                let _ = writeln!(
                    out,
                    "- {model}, {concurrency} in flight: adaptive {:.0} req/s, fixed {:.0} req/s ({:.2}x; target at least 1x), greedy {:.0} req/s.",
                    adaptive.report.throughput,
                    fixed.report.throughput,
                    adaptive.report.throughput / fixed.report.throughput.max(f64::MIN_POSITIVE),
                    greedy.report.throughput,
                );
            }
        }
    }
    out
}
