//! The serving benchmark: Ferry over loopback gRPC, batching on and off, at 1, 8, 32 and 128 requests in
//! flight, on a compute-bound and a request-bound model; and in-process ONNX Runtime at the batch sizes Ferry
//! formed. Writes `benches/results/serving.md` and `benches/results/serving.svg`.
//!
//! Run with `make bench-serving` (or `cargo bench -p ferry-benches --bench serving` once `make setup` has
//! made `.venv`). `FERRY_BENCH_SECONDS` sets the measured seconds per point (default 4), `FERRY_BENCH_ONLY`
//! limits the run to one model, and `FERRY_BENCH_THREADS` sets `intra_op_thread_count` of both models.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::Context;
use ferry_benches::{
    plot::{self, Panel, Series},
    reference::{self, Reference},
};
use ferry_client::{
    Client,
    bench::{LoadConfig, LoadReport, run_load},
    proto::ModelStatisticsRequest,
};
use ferry_server::{MAX_MESSAGE_BYTES, Server, ServerOptions, onnx, repository::RepositoryOptions};

/// The two models: name and input width (see `generate_bench_models.py`).
const MODELS: [(&str, usize); 2] = [("compute_mlp", 512), ("small_mlp", 32)];
const MODES: [&str; 2] = ["batched", "unbatched"];
const CONCURRENCY: [usize; 4] = [1, 8, 32, 128];

/// One measured point.
struct Point {
    model: &'static str,
    mode: &'static str,
    concurrency: usize,
    report: LoadReport,
    /// Rows per execution while the point ran (warm-up included).
    average_batch: f64,
}

/// Whether `FERRY_BENCH_ONLY` (a model name, unset for both) selects this model.
fn selected(model: &str) -> bool {
    std::env::var("FERRY_BENCH_ONLY").map_or(true, |only| only == model)
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
    let seconds: u64 = std::env::var("FERRY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let models = ferry_benches::bench_models().map_err(anyhow::Error::msg)?;
    let onnxruntime = onnx::find_library(None).context(onnx::MISSING_LIBRARY_HELP)?;
    let options = ServerOptions {
        repository: RepositoryOptions::new(vec![models.clone()]),
        onnxruntime: onnxruntime.clone(),
        max_message_bytes: MAX_MESSAGE_BYTES,
        connections: Default::default(),
        grpc_response_compression: Default::default(),
    };
    // The server gets a runtime of its own, as it would in its own process; the load generator another.
    let server = Server::start(&options)?;
    let mut plans = BTreeMap::new();
    for (model, _) in MODELS {
        let entry = server.registry().model(&format!("{model}_batched"))?;
        plans.insert(
            model,
            entry.spec.context("benchmark model failed to load")?.instances,
        );
    }
    let loopback = ferry_benches::LoopbackServer::serve(server)?;
    let address = loopback.address;

    let client_runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let points = client_runtime.block_on(async {
        let client = Client::connect(address.to_string()).await?;
        let mut points = Vec::new();
        for (model, width) in MODELS.into_iter().filter(|(m, _)| selected(m)) {
            for mode in MODES {
                let name = format!("{model}_{mode}");
                for concurrency in CONCURRENCY {
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
                        "{name} c={concurrency}: {:.0} req/s, p50 {:?}, average batch {:.1}, errors {:?}",
                        report.throughput,
                        report.latency.p50,
                        rows / runs,
                        report.errors
                    );
                    points.push(Point {
                        model,
                        mode,
                        concurrency,
                        report,
                        average_batch: rows / runs,
                    });
                }
            }
        }
        anyhow::Ok(points)
    })?;
    loopback.stop();

    // In-process ONNX Runtime at every batch size Ferry formed, and at batch 1 for latency.
    let environment = onnx::start(&onnxruntime).map_err(anyhow::Error::msg)?;
    let mut references: BTreeMap<(&str, usize), Reference> = BTreeMap::new();
    for point in &points {
        let formed = if point.mode == "batched" {
            point.average_batch.round().max(1.0) as usize
        } else {
            1
        };
        for batch in [formed, 1] {
            if references.contains_key(&(point.model, batch)) {
                continue;
            }
            let width = MODELS
                .iter()
                .find(|(m, _)| *m == point.model)
                .map_or(1, |(_, w)| *w);
            let path = models.join(format!("{}_batched/1/model.onnx", point.model));
            let measured = reference::measure(
                &environment,
                &path,
                &plans[point.model],
                width,
                batch,
                Duration::from_secs(2),
            )
            .map_err(anyhow::Error::msg)?;
            eprintln!(
                "onnxruntime {} batch {batch}: {:.0} rows/s",
                point.model, measured.rows_per_second
            );
            references.insert((point.model, batch), measured);
        }
    }

    let results = ferry_benches::repo_root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    let threads = plans
        .values()
        .next()
        .and_then(|plan| plan.intra_op_threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let markdown = report(&points, &references, seconds, threads);
    let stem = match std::env::var("FERRY_BENCH_THREADS") {
        Ok(threads) => format!("serving-threads{threads}"),
        Err(_) => "serving".to_owned(),
    };
    std::fs::write(results.join(format!("{stem}.md")), &markdown)?;
    std::fs::write(results.join(format!("{stem}.svg")), chart(&points, &references))?;
    println!("{markdown}");
    Ok(())
}

fn micros(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1e6)
}

fn report(
    points: &[Point],
    references: &BTreeMap<(&str, usize), Reference>,
    seconds: u64,
    threads: usize,
) -> String {
    let mut out = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let _ = writeln!(out, "# Serving benchmark\n");
    let _ = writeln!(
        out,
        "Ferry over loopback gRPC (one process, server and load generator on separate runtimes) against \
         in-process ONNX Runtime with the same session options, on {cores} cores ({cpu}). Each point: 1 s \
         warm-up, {seconds} s measured, 1-row FP32 requests, one model instance with {threads} ONNX Runtime \
         thread(s). The load generator runs on the same cores as the server. Made by `make bench-serving`.\n"
    );
    let _ = writeln!(
        out,
        "| model | batching | in flight | req/s | p50 µs | p90 µs | p99 µs | avg batch | errors | ORT rows/s at that batch | Ferry / ORT |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for p in points {
        let batch = if p.mode == "batched" {
            p.average_batch.round().max(1.0) as usize
        } else {
            1
        };
        let reference = references.get(&(p.model, batch));
        let errors: u64 = p.report.errors.values().sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {} | {} | {} |",
            p.model,
            p.mode,
            p.concurrency,
            p.report.throughput,
            micros(p.report.latency.p50),
            micros(p.report.latency.p90),
            micros(p.report.latency.p99),
            p.average_batch,
            if errors == 0 {
                "0".to_owned()
            } else {
                format!("{:?}", p.report.errors)
            },
            reference.map_or("-".to_owned(), |r| format!("{:.0}", r.rows_per_second)),
            reference.map_or("-".to_owned(), |r| format!(
                "{:.0}%",
                100.0 * p.report.throughput / r.rows_per_second
            )),
        );
    }
    let find = |model: &str, mode: &str, concurrency: usize| {
        points
            .iter()
            .find(|p| p.model == model && p.mode == mode && p.concurrency == concurrency)
    };
    let _ = writeln!(out, "\n## Against the targets\n");
    for (model, _) in MODELS {
        if let Some(p) = find(model, "batched", 128) {
            let batch = p.average_batch.round().max(1.0) as usize;
            if let Some(r) = references.get(&(model, batch)) {
                let _ = writeln!(
                    out,
                    "- {model}, batching on, 128 in flight: {:.0} req/s = {:.0}% of in-process ONNX Runtime at batch {batch} ({:.0} rows/s); target for the compute-bound model: at least 90%.",
                    p.report.throughput,
                    100.0 * p.report.throughput / r.rows_per_second,
                    r.rows_per_second
                );
            }
        }
        if let (Some(on), Some(off)) = (find(model, "batched", 32), find(model, "unbatched", 32)) {
            let _ = writeln!(
                out,
                "- {model}, 32 in flight: batching on {:.0} req/s, off {:.0} req/s: {:.2}x; target: at least 3x.",
                on.report.throughput,
                off.report.throughput,
                on.report.throughput / off.report.throughput.max(f64::MIN_POSITIVE)
            );
        }
        if let (Some(p), Some(r)) = (find(model, "batched", 1), references.get(&(model, 1))) {
            let delta = p.report.latency.p50.as_secs_f64() - r.p50.as_secs_f64();
            let _ = writeln!(
                out,
                "- {model}, 1 in flight: Ferry p50 {} µs, in-process ONNX Runtime p50 {} µs: {:+.0} µs; target: within 100 µs.",
                micros(p.report.latency.p50),
                micros(r.p50),
                delta * 1e6
            );
        }
    }
    out
}

fn chart(points: &[Point], references: &BTreeMap<(&str, usize), Reference>) -> String {
    let colors = [("batched", "#1f77b4"), ("unbatched", "#d62728")];
    let panels: Vec<Panel> = MODELS
        .iter()
        .map(|(model, _)| {
            let mut series: Vec<Series> = colors
                .iter()
                .map(|(mode, color)| Series {
                    label: format!(
                        "Ferry, batching {}",
                        if *mode == "batched" { "on" } else { "off" }
                    ),
                    color,
                    dashed: false,
                    values: CONCURRENCY
                        .iter()
                        .map(|c| {
                            points
                                .iter()
                                .find(|p| p.model == *model && p.mode == *mode && p.concurrency == *c)
                                .map(|p| p.report.throughput)
                        })
                        .collect(),
                })
                .collect();
            series.push(Series {
                label: "in-process ONNX Runtime at the batch Ferry formed".into(),
                color: "#2ca02c",
                dashed: true,
                values: CONCURRENCY
                    .iter()
                    .map(|c| {
                        let point = points
                            .iter()
                            .find(|p| p.model == *model && p.mode == "batched" && p.concurrency == *c)?;
                        let batch = point.average_batch.round().max(1.0) as usize;
                        references.get(&(*model, batch)).map(|r| r.rows_per_second)
                    })
                    .collect(),
            });
            Panel {
                title: (*model).to_owned(),
                y_label: "requests (rows) per second".into(),
                x_labels: CONCURRENCY.iter().map(ToString::to_string).collect(),
                series,
            }
        })
        .collect();
    plot::render(&panels)
}
