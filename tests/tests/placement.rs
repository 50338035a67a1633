//! Where sessions run: `KIND_GPU` needs a GPU and ONNX Runtime's CUDA execution provider and says how to get
//! them when they are missing; `KIND_AUTO` (and a config without instance groups) runs on a GPU when there is
//! one and falls back to the CPU otherwise. Both outcomes are checked against what this machine has.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use ferry_proto::inference::{
    ModelConfigRequest, ModelInferRequest, RepositoryIndexRequest,
    grpc_inference_service_client::GrpcInferenceServiceClient, model_infer_request::InferInputTensor,
};
use ferry_server::onnx;
use ferry_tests::{TestServer, matmul_request, repo_root, write_matmul_model};
use tonic::transport::Channel;

const TENSORS: &str = "max_batch_size: 4\n\
    input [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
    output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n";

fn model(root: &std::path::Path, name: &str, groups: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("1")).expect("model folder");
    std::fs::write(dir.join("config.pbtxt"), format!("{TENSORS}{groups}")).expect("config");
    std::fs::copy(
        repo_root().join("tests/assets/add_1.onnx"),
        dir.join("1/model.onnx"),
    )
    .expect("model file");
}

fn request(model: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(
            [2.0f32; 4]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        ..Default::default()
    }
}

/// Each model's state and reason, from RepositoryIndex.
async fn states(client: &mut GrpcInferenceServiceClient<Channel>) -> HashMap<String, (String, String)> {
    client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models
        .into_iter()
        .map(|m| (m.name, (m.state, m.reason)))
        .collect()
}

/// The first element of `model`'s output for the input 2.0 (add_1: 3.0).
async fn first_output(client: &mut GrpcInferenceServiceClient<Channel>, model: &str) -> f32 {
    let response = client
        .model_infer(request(model))
        .await
        .expect("infer")
        .into_inner();
    f32::from_le_bytes(response.raw_output_contents[0][..4].try_into().expect("4 bytes"))
}

#[tokio::test]
async fn gpu_instances_need_cuda_and_auto_instances_fall_back_to_the_cpu() {
    let repository = tempfile::tempdir().expect("temp dir");
    model(
        repository.path(),
        "on_gpu",
        "instance_group [ { kind: KIND_GPU, gpus: [ 0 ] } ]\n",
    );
    model(
        repository.path(),
        "on_two_gpus",
        "instance_group [ { kind: KIND_GPU, gpus: [ 0, 1 ], count: 2 } ]\n",
    );
    model(
        repository.path(),
        "on_auto",
        "instance_group [ { kind: KIND_AUTO } ]\n",
    );
    let tensorrt = "optimization { execution_accelerators { gpu_execution_accelerator : [ { name : \"tensorrt\"\n\
        parameters { key: \"precision_mode\" value: \"FP16\" } } ] } }\n";
    model(
        repository.path(),
        "auto_tensorrt",
        &format!("instance_group [ {{ kind: KIND_AUTO }} ]\n{tensorrt}"),
    );
    model(
        repository.path(),
        "cpu_tensorrt",
        &format!("instance_group [ {{ kind: KIND_CPU }} ]\n{tensorrt}"),
    );
    model(repository.path(), "unspecified", "");
    let server = TestServer::start(vec![repository.path().to_path_buf()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let index = states(&mut client).await;
    let gpus = ferry_server::gpu::inventory();
    if onnx::cuda_available() && gpus.device(0).is_some() {
        assert_eq!(index["on_gpu"].0, "READY", "{:?}", index["on_gpu"]);
    } else {
        let (state, reason) = &index["on_gpu"];
        assert_eq!(state, "UNAVAILABLE");
        assert!(
            reason.contains("KIND_GPU") && reason.contains("onnxruntime-gpu") && reason.contains("KIND_CPU"),
            "{reason}"
        );
        if gpus.devices.is_empty() {
            // The reason is the one start-up logged: no driver on this machine (and on CI).
            let why = gpus.unavailable.as_deref().expect("a reason");
            assert!(reason.contains(why), "{reason}");
        }
    }
    if gpus.device(1).is_none() {
        let (state, reason) = &index["on_two_gpus"];
        assert_eq!(state, "UNAVAILABLE");
        assert!(reason.contains("KIND_GPU"), "{reason}");
    }
    // TensorRT asks for GPU instances: refused on KIND_CPU with the reason, ignored when KIND_AUTO runs on
    // the CPU.
    let (state, reason) = &index["cpu_tensorrt"];
    assert_eq!(state, "UNAVAILABLE");
    assert!(
        reason.contains("tensorrt") && reason.contains("KIND_CPU"),
        "{reason}"
    );
    for name in ["on_auto", "auto_tensorrt", "unspecified"] {
        assert_eq!(index[name].0, "READY", "{name}: {:?}", index[name]);
        assert_eq!(first_output(&mut client, name).await, 3.0, "{name}");
    }
    // Triton lists `cuda_shared_memory` only when it can serve it.
    let metadata = client
        .server_metadata(ferry_proto::inference::ServerMetadataRequest::default())
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(
        metadata.extensions.iter().any(|e| e == "cuda_shared_memory"),
        !gpus.devices.is_empty(),
        "{:?}",
        metadata.extensions
    );
    server.stop().await;
}

/// Triton's ONNX Runtime session options (`execution_mode`, `enable_mem_arena`, `enable_mem_pattern`,
/// `optimization.graph.level`, as its onnxruntime_backend README lists them) and Ferry's
/// `ferry.intra_op_spinning` reach the session: every accepted value loads and answers correctly, and a value
/// of the wrong form leaves the model unavailable with a reason naming the key and the value.
#[tokio::test]
async fn session_options_from_the_config_open_working_sessions() {
    let parameter = |key: &str, value: &str| {
        format!("parameters {{ key: \"{key}\" value {{ string_value: \"{value}\" }} }}\n")
    };
    let repository = tempfile::tempdir().expect("temp dir");
    let tuned = [
        parameter("execution_mode", "1"),
        parameter("inter_op_thread_count", "1"),
        parameter("enable_mem_arena", "0"),
        parameter("enable_mem_pattern", "0"),
        parameter("ferry.intra_op_spinning", "true"),
    ]
    .concat();
    model(
        repository.path(),
        "tuned",
        &format!("optimization {{ graph {{ level: 2 }} }}\n{tuned}"),
    );
    model(
        repository.path(),
        "basic",
        "optimization { graph { level: -1 } }\n",
    );
    model(
        repository.path(),
        "bad_mode",
        &parameter("execution_mode", "fast"),
    );
    model(
        repository.path(),
        "bad_level",
        "optimization { graph { level: 9 } }\n",
    );
    let server = TestServer::start(vec![repository.path().to_path_buf()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let index = states(&mut client).await;
    for name in ["tuned", "basic"] {
        assert_eq!(index[name].0, "READY", "{name}: {:?}", index[name]);
        assert_eq!(first_output(&mut client, name).await, 3.0, "{name}");
    }
    for (name, words) in [
        ("bad_mode", ["execution_mode", "fast"]),
        ("bad_level", ["level", "9"]),
    ] {
        let (state, reason) = &index[name];
        assert_eq!(state, "UNAVAILABLE", "{name}");
        assert!(words.iter().all(|w| reason.contains(w)), "{name}: {reason}");
    }
    server.stop().await;
}

/// The thread check at load (issue 10): a small CPU model whose config sets no thread parameter opens on 1
/// intra-op thread and stays there when a batch of `max_batch_size` rows runs quickly on it, while
/// `ModelConfig` still shows the config as written; a model whose config sets thread parameters is never
/// checked.
#[tokio::test]
async fn a_thread_check_puts_quick_models_that_set_no_threads_on_one_thread() {
    let parameter = |key: &str, value: &str| {
        format!("parameters {{ key: \"{key}\" value {{ string_value: \"{value}\" }} }}\n")
    };
    let repository = tempfile::tempdir().expect("temp dir");
    let two = "instance_group [ { count: 2, kind: KIND_CPU } ]\n";
    model(repository.path(), "plain", two);
    model(
        repository.path(),
        "configured",
        &format!("{two}{}", parameter("intra_op_thread_count", "2")),
    );
    model(
        repository.path(),
        "spinning",
        &format!("{two}{}", parameter("ferry.intra_op_spinning", "true")),
    );
    let server = TestServer::start(vec![repository.path().to_path_buf()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let plain = server.registry().resolve("plain", "").expect("plain serves");
    match plain.thread_check() {
        Some(check) => {
            assert_eq!(check.rows, 4, "the check runs batches of max_batch_size rows");
            assert!(check.one_thread_run > Duration::ZERO, "{check:?}");
            assert_eq!(
                plain.intra_op_threads(),
                check.one_thread.then_some(1),
                "{check:?}"
            );
            // add_1 runs a batch of 4 in microseconds; only a machine too busy to run it within the
            // limit keeps it on the pool.
            if check.one_thread_run < Duration::from_micros(100) {
                assert!(check.one_thread, "{check:?}");
            }
        }
        None => assert_eq!(cores, 1, "add_1 is small: a machine of {cores} cores checks it"),
    }
    assert_eq!(plain.instance_count(), 2);
    for name in ["configured", "spinning"] {
        let version = server.registry().resolve(name, "").expect("serves");
        assert_eq!(version.thread_check(), None, "{name} sets thread parameters");
    }
    let configured = server.registry().resolve("configured", "").expect("serves");
    assert_eq!(configured.intra_op_threads(), Some(2));
    for name in ["plain", "configured", "spinning"] {
        assert_eq!(first_output(&mut client, name).await, 3.0, "{name}");
    }
    // The check's choice is the version's, not the config's.
    let config = client
        .model_config(ModelConfigRequest {
            name: "plain".into(),
            ..Default::default()
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    assert!(config.parameters.is_empty(), "{:?}", config.parameters);
    server.stop().await;
}

/// The other side of the thread check: a model whose file is small but whose operators are heavy (a 256 KB
/// weight matrix applied to 512 rows, over 100 million floating-point operations a request) takes far over
/// 500 µs on 1 thread, so its session is opened again on ONNX Runtime's shared pool, and that session serves.
#[tokio::test]
async fn a_small_model_with_heavy_operators_moves_to_the_shared_pool_and_serves_there() {
    const N: usize = 256;
    const ROWS: usize = 512;
    let repository = tempfile::tempdir().expect("temp dir");
    write_matmul_model(repository.path(), "heavy", N, ROWS);
    let server = TestServer::start(vec![repository.path().to_path_buf()])
        .await
        .expect("server");
    let heavy = server.registry().resolve("heavy", "").expect("heavy serves");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    match heavy.thread_check() {
        Some(check) => {
            assert!(!check.one_thread, "{check:?}");
            assert!(check.one_thread_run > Duration::from_micros(500), "{check:?}");
            assert_eq!(heavy.intra_op_threads(), None, "the shared pool");
        }
        None => assert_eq!(
            cores, 1,
            "a 256 KB model is checked on a machine of {cores} cores"
        ),
    }
    let answer = server
        .raw_client()
        .await
        .expect("client")
        .model_infer(matmul_request("heavy", N, ROWS))
        .await
        .expect("answered")
        .into_inner();
    let values = &answer.raw_output_contents[0];
    assert_eq!(values.len(), ROWS * N * 4);
    for value in values.chunks_exact(4) {
        let value = f32::from_le_bytes(value.try_into().expect("4 bytes"));
        assert!((value - 1.0).abs() < 1e-4, "Y = ones, got {value}");
    }
    server.stop().await;
}
