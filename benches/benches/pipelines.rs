//! What three request-path features cost and gain, over loopback gRPC against an in-process server:
//!
//! - pad-to-bucket: throughput and latency of `bucket_tokens` (buckets 16, 32, 64, 128, dynamic batching)
//!   against `bucket_tokens_unbatched` (the same model file, no padding, no batching) under closed-loop load of
//!   sequences of 1 to 128 tokens;
//! - ensembles: the `pipeline` ensemble of `tests/ensemble_repository` (three steps) against the client
//!   calling its three members one by one, passing each answer on;
//! - the response cache: a hit against a miss on a small model (`simple`) and a large input (the densenet twin,
//!   602 KB in).
//!
//! Writes `benches/results/pipelines.md`. Run with `make bench-pipelines` (or `cargo bench -p ferry-benches
//! --bench pipelines` once `make setup` has made `.venv`). `FERRY_BENCH_SECONDS` sets the measured seconds of
//! each load point (default 4).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use ferry_client::{Client, Stub, proto::ModelStatisticsRequest};
use ferry_proto::inference::{ModelInferRequest, ModelInferResponse, model_infer_request::InferInputTensor};
use ferry_server::{
    MAX_MESSAGE_BYTES, Server, ServerOptions, cache::ResponseCache, onnx, repository::RepositoryOptions,
};

/// Token features of `bucket_tokens`.
const WIDTH: usize = 8;
/// The longest sequence sent: the largest bucket.
const LONGEST: usize = 128;
const IN_FLIGHT: [usize; 2] = [16, 64];
/// The batching line of `tests/ragged_repository/bucket_tokens/config.pbtxt`.
const TEST_DELAY: &str = "dynamic_batching { max_queue_delay_microseconds: 20000 }";
/// Sequential requests per measured variant of the ensemble and cache comparisons.
const ROUNDS: usize = 400;

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

/// Copies every file under `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// One repository with the three comparisons' models, under `target/bench-pipelines`.
fn repository() -> anyhow::Result<PathBuf> {
    let root = ferry_benches::repo_root();
    let out = root.join("target/bench-pipelines");
    let _ = std::fs::remove_dir_all(&out);
    for model in ["bucket_tokens", "bucket_tokens_unbatched"] {
        copy_tree(
            &root.join("tests/ragged_repository").join(model),
            &out.join(model),
        )?;
    }
    // The test config waits 20 ms so that tests see batches form; under load Triton's greedy default fills
    // batches without a wait.
    let padded = out.join("bucket_tokens/config.pbtxt");
    let config = std::fs::read_to_string(&padded)?;
    anyhow::ensure!(
        config.contains(TEST_DELAY),
        "unexpected bucket_tokens config {config}"
    );
    std::fs::write(&padded, config.replace(TEST_DELAY, "dynamic_batching { }"))?;
    copy_tree(&root.join("tests/ensemble_repository"), &out)?;
    // `nested` uses `pipeline` as a step; it is not measured here.
    std::fs::remove_dir_all(out.join("nested"))?;
    let cached = |from: &Path, name: &str, old_name: &str| -> anyhow::Result<()> {
        copy_tree(from, &out.join(name))?;
        let config = std::fs::read_to_string(from.join("config.pbtxt"))?
            .replace(&format!("name: \"{old_name}\""), &format!("name: \"{name}\""));
        std::fs::write(
            out.join(name).join("config.pbtxt"),
            format!("{config}\nresponse_cache {{ enable: true }}\n"),
        )?;
        Ok(())
    };
    cached(
        &root.join("examples/model_repository/simple"),
        "simple_cached",
        "simple",
    )?;
    cached(
        &root.join("tests/model_repository/densenet_onnx"),
        "image_cached",
        "densenet_onnx",
    )?;
    Ok(out)
}

fn floats(values: impl IntoIterator<Item = f32>) -> Bytes {
    values
        .into_iter()
        .flat_map(f32::to_le_bytes)
        .collect::<Vec<u8>>()
        .into()
}

fn tensor(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    }
}

/// A `bucket_tokens` request of `length` tokens.
fn tokens(model: &str, length: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![tensor("x", "FP32", vec![1, length as i64, WIDTH as i64])],
        raw_input_contents: vec![floats((0..length * WIDTH).map(|i| (i % 17) as f32 / 17.0))],
        ..Default::default()
    }
}

/// The `n`th length of a fixed sequence spread evenly over 1 to [`LONGEST`].
fn length(n: usize) -> usize {
    (n * 37 + 11) % LONGEST + 1
}

async fn counts(stub: &mut Stub, model: &str) -> anyhow::Result<(u64, u64)> {
    let request = ModelStatisticsRequest {
        name: model.into(),
        version: String::new(),
    };
    let stats = stub.model_statistics(request).await?.into_inner().model_stats;
    let stats = stats.first().context("no statistics")?;
    Ok((stats.inference_count, stats.execution_count))
}

/// A load point: requests per second, mean and p99 latency, and rows per execution.
struct LoadPoint {
    model: &'static str,
    in_flight: usize,
    throughput: f64,
    mean: Duration,
    p99: Duration,
    average_batch: f64,
}

/// `in_flight` senders, each sending its next sequence as soon as its last is answered, for `seconds` after
/// one second of warm-up.
async fn closed_loop(
    stub: &Stub,
    model: &'static str,
    in_flight: usize,
    seconds: u64,
) -> anyhow::Result<LoadPoint> {
    let requests: Arc<Vec<ModelInferRequest>> =
        Arc::new((0..997).map(|n| tokens(model, length(n))).collect());
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(seconds);
    let before = counts(&mut stub.clone(), model).await?;
    let mut senders = Vec::with_capacity(in_flight);
    for sender in 0..in_flight {
        let (mut stub, requests) = (stub.clone(), Arc::clone(&requests));
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = sender * 131;
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                stub.model_infer(requests[n % requests.len()].clone()).await?;
                if start >= warm_until {
                    latencies.push(start.elapsed());
                }
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for sender in senders {
        latencies.extend(sender.await??);
    }
    let after = counts(&mut stub.clone(), model).await?;
    latencies.sort();
    let total: Duration = latencies.iter().sum();
    Ok(LoadPoint {
        model,
        in_flight,
        throughput: latencies.len() as f64 / seconds as f64,
        mean: total / latencies.len().max(1) as u32,
        p99: latencies
            .get(latencies.len() * 99 / 100)
            .copied()
            .unwrap_or_default(),
        average_batch: (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64,
    })
}

/// Median and p99 of `samples`.
fn summary(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn output(response: &ModelInferResponse, name: &str) -> anyhow::Result<Bytes> {
    let index = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .with_context(|| format!("no output {name}"))?;
    Ok(Bytes::copy_from_slice(&response.raw_output_contents[index]))
}

fn rows_request(model: &str, input: &str, data: Bytes, columns: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![tensor(input, "FP32", vec![1, columns])],
        raw_input_contents: vec![data],
        ..Default::default()
    }
}

/// Sequential latencies of the `pipeline` ensemble and of its three members called one by one, each answer
/// passed on to the next: (ensemble, by hand, each member alone).
async fn ensemble_against_steps(stub: &Stub) -> anyhow::Result<Vec<(String, (Duration, Duration))>> {
    let mut stub = stub.clone();
    let raw = floats([-1.0, 0.5, 2.0, 3.0]);
    let (mut ensemble, mut by_hand) = (Vec::new(), Vec::new());
    let mut members: [Vec<Duration>; 3] = Default::default();
    for round in 0..ROUNDS + 20 {
        let start = Instant::now();
        stub.model_infer(rows_request("pipeline", "RAW", raw.clone(), 4))
            .await?;
        let whole = start.elapsed();
        let start = Instant::now();
        let mut data = raw.clone();
        let mut steps = [Duration::ZERO; 3];
        for (step, model) in ["scale_pre", "relu_shift", "row_sum"].into_iter().enumerate() {
            let step_start = Instant::now();
            let answer = stub
                .model_infer(rows_request(model, "x", data, 4))
                .await?
                .into_inner();
            steps[step] = step_start.elapsed();
            data = output(&answer, "y")?;
        }
        let chain = start.elapsed();
        if round >= 20 {
            ensemble.push(whole);
            by_hand.push(chain);
            for (step, time) in steps.into_iter().enumerate() {
                members[step].push(time);
            }
        }
    }
    let mut rows = vec![
        (
            "pipeline ensemble (3 steps, one call)".to_owned(),
            summary(&mut ensemble),
        ),
        (
            "its members called one by one (3 calls)".to_owned(),
            summary(&mut by_hand),
        ),
    ];
    for (model, mut times) in ["scale_pre", "relu_shift", "row_sum"].into_iter().zip(members) {
        rows.push((
            format!("{model} alone (one call of the chain)"),
            summary(&mut times),
        ));
    }
    Ok(rows)
}

/// Sequential latencies of misses (an input never sent before) and hits (the same input again at once) on
/// `model`.
async fn cache_hits_against_misses(
    stub: &Stub,
    model: &str,
    make: impl Fn(usize) -> ModelInferRequest,
) -> anyhow::Result<((Duration, Duration), (Duration, Duration))> {
    let mut stub = stub.clone();
    let (mut misses, mut hits) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let request = make(round);
        let start = Instant::now();
        stub.model_infer(request.clone()).await?;
        misses.push(start.elapsed());
        let start = Instant::now();
        stub.model_infer(request).await?;
        hits.push(start.elapsed());
    }
    let stats = stub
        .model_statistics(ModelStatisticsRequest {
            name: model.into(),
            version: String::new(),
        })
        .await?
        .into_inner();
    let inference = stats
        .model_stats
        .first()
        .and_then(|s| s.inference_stats)
        .context("stats")?;
    anyhow::ensure!(
        inference.cache_hit.as_ref().map_or(0, |d| d.count) >= ROUNDS as u64,
        "{model}: the repeated requests did not hit the cache"
    );
    Ok((summary(&mut misses), summary(&mut hits)))
}

fn simple_request(seed: usize) -> ModelInferRequest {
    let ints = |values: Vec<i32>| -> Bytes {
        values
            .into_iter()
            .flat_map(i32::to_le_bytes)
            .collect::<Vec<_>>()
            .into()
    };
    ModelInferRequest {
        model_name: "simple_cached".into(),
        inputs: vec![
            tensor("INPUT0", "INT32", vec![1, 16]),
            tensor("INPUT1", "INT32", vec![1, 16]),
        ],
        raw_input_contents: vec![
            ints((0..16).map(|i| seed as i32 * 16 + i).collect()),
            ints(vec![1; 16]),
        ],
        ..Default::default()
    }
}

fn image_request(seed: usize) -> ModelInferRequest {
    let mut pixels = vec![0u8; 3 * 224 * 224 * 4];
    pixels[..8].copy_from_slice(&(seed as u64).to_le_bytes());
    ModelInferRequest {
        model_name: "image_cached".into(),
        inputs: vec![tensor("data_0", "FP32", vec![1, 3, 224, 224])],
        raw_input_contents: vec![pixels.into()],
        ..Default::default()
    }
}

fn micros(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1e6)
}

fn main() -> anyhow::Result<()> {
    let seconds = env_number("FERRY_BENCH_SECONDS", 4);
    let models = repository()?;
    let onnxruntime = onnx::find_library(None).context(onnx::MISSING_LIBRARY_HELP)?;
    let options = ServerOptions {
        repository: RepositoryOptions {
            response_cache: Some(Arc::new(ResponseCache::new(256 << 20))),
            ..RepositoryOptions::new(vec![models])
        },
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
    let (points, ensemble, cache) = client_runtime.block_on(async {
        let client = Client::connect(address.to_string()).await?;
        let stub = client.raw();
        let mut points = Vec::new();
        for in_flight in IN_FLIGHT {
            for model in ["bucket_tokens_unbatched", "bucket_tokens"] {
                let point = closed_loop(&stub, model, in_flight, seconds).await?;
                eprintln!(
                    "{model} {in_flight} in flight: {:.0} req/s, mean {:?}, p99 {:?}, average batch {:.1}",
                    point.throughput, point.mean, point.p99, point.average_batch
                );
                points.push(point);
            }
        }
        let ensemble = ensemble_against_steps(&stub).await?;
        let cache = vec![
            (
                "simple (2 × 64 B in)",
                cache_hits_against_misses(&stub, "simple_cached", simple_request).await?,
            ),
            (
                "densenet twin (602 KB in)",
                cache_hits_against_misses(&stub, "image_cached", image_request).await?,
            ),
        ];
        anyhow::Ok((points, ensemble, cache))
    })?;
    loopback.stop();
    let load_after = load_average();

    let markdown = report(&points, &ensemble, &cache, seconds, (&load_before, &load_after));
    let results = ferry_benches::repo_root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("pipelines.md"), &markdown)?;
    println!("{markdown}");
    Ok(())
}

type Latencies = (Duration, Duration);

fn report(
    points: &[LoadPoint],
    ensemble: &[(String, Latencies)],
    cache: &[(&str, (Latencies, Latencies))],
    seconds: u64,
    load: (&str, &str),
) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let padded: usize = (0..LONGEST)
        .map(|n| {
            [16, 32, 64, 128]
                .into_iter()
                .find(|b| *b >= length(n))
                .unwrap_or(0)
        })
        .sum();
    let own: usize = (0..LONGEST).map(length).sum();
    let _ = writeln!(out, "# Pad-to-bucket, ensembles and the response cache\n");
    let _ = writeln!(
        out,
        "Ferry over loopback gRPC (server and load generator in one process, on separate runtimes, on the same \
         {cores} cores), release build. Command: `FERRY_BENCH_SECONDS={seconds} cargo bench -p ferry-benches \
         --bench pipelines`. Load average (1, 5, 15 min) before: {}, after: {}.\n",
        load.0, load.1
    );
    let _ = writeln!(out, "## Pad-to-bucket against batching off\n");
    let _ = writeln!(
        out,
        "Sequences of 1 to {LONGEST} tokens of {WIDTH} features, lengths spread evenly, closed loop, 1 s warm-up \
         and {seconds} s measured per point. `bucket_tokens`: buckets 16, 32, 64, 128, `dynamic_batching {{ }}` \
         (no delay), at most 16 rows a batch; padding makes it compute {:.2}× the tokens sent. \
         `bucket_tokens_unbatched`: the same model file, no padding, no dynamic batching (every request runs \
         alone at its own length). Two instances each.\n",
        padded as f64 / own as f64
    );
    let _ = writeln!(
        out,
        "| model | in flight | req/s | mean µs | p99 µs | rows per execution |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for p in points {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.1} |",
            p.model,
            p.in_flight,
            p.throughput,
            micros(p.mean),
            micros(p.p99),
            p.average_batch
        );
    }
    let _ = writeln!(out, "\n## Ensemble overhead per step\n");
    let _ = writeln!(
        out,
        "`pipeline` (scale_pre → relu_shift → row_sum on FP32 [1, 4]) as one call, against the client calling the \
         three members in turn and passing each answer on; one request at a time, {ROUNDS} rounds after 20 of \
         warm-up, the two interleaved.\n"
    );
    let _ = writeln!(out, "| what | median µs | p99 µs |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (what, (median, p99)) in ensemble {
        let _ = writeln!(out, "| {what} | {} | {} |", micros(*median), micros(*p99));
    }
    if let [(_, (whole, _)), (_, (chain, _)), members @ ..] = ensemble {
        let alone: Duration = members.iter().map(|(_, (median, _))| *median).sum();
        let _ = writeln!(
            out,
            "\nPer step, the ensemble takes {} µs (median / 3) against {} µs for a client round trip per step. \
             Against one call of each member ({} µs together), the ensemble's own cost is ({} - {}) / 3 = {:.0} µs \
             per step (negative: it saves more round trip than it adds).",
            micros(*whole / 3),
            micros(*chain / 3),
            micros(alone),
            micros(*whole),
            micros(alone),
            (whole.as_secs_f64() - alone.as_secs_f64()) * 1e6 / 3.0
        );
    }
    let _ = writeln!(out, "\n## Response cache: hit against miss\n");
    let _ = writeln!(
        out,
        "One request at a time: a new input (a miss: the model runs and the answer is stored), then the same input \
         again (a hit), {ROUNDS} times; a 256 MiB cache.\n"
    );
    let _ = writeln!(
        out,
        "| model | miss median µs | miss p99 µs | hit median µs | hit p99 µs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (what, ((miss, miss99), (hit, hit99))) in cache {
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {} |",
            micros(*miss),
            micros(*miss99),
            micros(*hit),
            micros(*hit99)
        );
    }
    out
}
