//! Fixtures shared by Ferry's benchmarks: model specs and wire requests of chosen sizes, built the way a
//! client would send them, so that benchmarks measure Ferry's work and not their own set-up.

pub mod plot;
pub mod reference;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use bytes::Bytes;
use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
use ferry_server::{
    DataType,
    config::{InstancePlan, ModelSpec, TensorSpec, VersionPolicy},
};

/// A batching FP32 model with one input of `width` features and one output.
pub fn fp32_spec(width: i64, max_batch_size: usize) -> ModelSpec {
    let tensor = |name: &str| TensorSpec {
        name: name.into(),
        data_type: DataType::Fp32,
        dims: vec![width],
        reshape: None,
        optional: false,
    };
    ModelSpec {
        name: "bench".into(),
        max_batch_size,
        inputs: vec![tensor("x")],
        outputs: vec![tensor("y")],
        version_policy: VersionPolicy::Latest(1),
        instances: InstancePlan {
            session: Default::default(),
            count: 1,
            intra_op_threads: None,
            inter_op_threads: None,
            placement: Default::default(),
            tensorrt: None,
        },
        model_filename: "model.onnx".into(),
        batching: ferry_batching::BatchingPolicy::greedy(max_batch_size),
        max_request_bytes: ferry_server::MAX_MESSAGE_BYTES,
        config: Default::default(),
        labels: Default::default(),
        response_cache: false,
        lone_requests_on_worker: None,
        drift: Default::default(),
        payload_log: Default::default(),
        quality: Default::default(),
        ensemble: None,
        sequence: None,
        variable_lengths: Default::default(),
    }
}

/// A request of `rows` × `width` FP32 values in raw contents.
pub fn fp32_request(rows: i64, width: i64) -> ModelInferRequest {
    let values = (rows * width) as usize;
    ModelInferRequest {
        model_name: "bench".into(),
        id: "bench".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![rows, width],
            parameters: Default::default(),
            contents: None,
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; values * 4])],
        ..Default::default()
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes the benchmark models (`benches/generate_bench_models.py`) and returns their repository:
/// `FERRY_BENCH_MODELS`, or `target/bench-models`. Written afresh each time, so that the configs follow
/// `FERRY_BENCH_THREADS` of this run.
pub fn bench_models() -> Result<PathBuf, String> {
    let dir = std::env::var_os("FERRY_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/bench-models"));
    let python = repo_root().join(".venv/bin/python");
    let status = Command::new(&python)
        .arg(repo_root().join("benches/generate_bench_models.py"))
        .arg(&dir)
        .status()
        .map_err(|error| format!("running {} (run `make setup` first): {error}", python.display()))?;
    if !status.success() {
        return Err(format!("generating the benchmark models failed: {status}"));
    }
    Ok(dir)
}

/// One row of `width` FP32 features for the `x` input of the serving benchmarks' MLPs, named for `model`:
/// the request every serving benchmark sends, so their figures compare like with like.
pub fn serving_request(model: &str, width: usize) -> ModelInferRequest {
    let values: Vec<u8> = (0..width)
        .flat_map(|i| (i as f32 / width as f32).to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, width as i64],
            parameters: Default::default(),
            contents: None,
        }],
        raw_input_contents: vec![Bytes::from(values)],
        ..Default::default()
    }
}

/// A Ferry server serving loopback gRPC on a tokio runtime of its own, as it would in its own process, so
/// that a benchmark's load generator, on another runtime, measures it from outside.
pub struct LoopbackServer {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl LoopbackServer {
    /// Serves `server` on a free loopback port.
    pub fn serve(server: ferry_server::Server) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = runtime.spawn(async move {
            let _ = server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(LoopbackServer {
            address,
            runtime,
            stop,
            serving,
        })
    }

    /// Stops taking calls, waits for the server to finish, and drops its runtime.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.runtime.block_on(self.serving);
    }
}
