//! Whole requests through Ferry's front ends, in process: one server with ONNX Runtime on the models of
//! `examples/model_repository` and three of `tests/model_repository` (see [`MODELS`]), whose gRPC service
//! (tonic, framing and decoding included) and REST router (axum) are called directly as tower services. An input is one call in `ferry_fuzz::Call`'s format. Every call must
//! finish within five seconds, and every JSON answer must be JSON.
//!
//! SystemSharedMemoryRegister keys are confined to `/ferry_fuzz_*`, so that the fuzzer never maps another
//! program's shared memory (and writes outputs into it); the service's registry holds the fuzzer's own
//! regions from the start.

#![no_main]

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use bytes::Bytes;
use ferry_fuzz::{Call, GRPC_METHODS, grpc_frames, http_request, shared_memory};
use ferry_proto::{
    GrpcInferenceServiceServer,
    inference::{ModelInferResponse, ModelStreamInferResponse, SystemSharedMemoryRegisterRequest},
};
use ferry_server::{
    DataType, Server, ServerOptions,
    grpc::InferenceService,
    onnx,
    repository::RepositoryOptions,
    request::split_length_prefixed,
    telemetry::{TraceContextLayer, TraceContextService},
};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tower::{Layer, ServiceExt};

/// The message and body size limit of both front ends: above any input libFuzzer makes here.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long one call may take before it counts as a hang.
const CALL_LIMIT: Duration = Duration::from_secs(5);
/// The namespace that fuzzed shared memory keys are confined to.
const KEY_PREFIX: &str = "/ferry_fuzz_";

/// The models served, by repository: the examples, and from the tests every data type with dynamic dims
/// (`identity_types`, `identity_bf16`) and a model that fails inside ONNX Runtime on bad input
/// (`gather_table`). The tests' batching models with long queue delays are left out: they would make a
/// call take seconds.
const MODELS: [(&str, &str); 6] = [
    ("examples/model_repository", "simple"),
    ("examples/model_repository", "mlp_classifier"),
    ("examples/model_repository", "linear_auto"),
    ("tests/model_repository", "identity_types"),
    ("tests/model_repository", "identity_bf16"),
    ("tests/model_repository", "gather_table"),
];

/// A repository of links to [`MODELS`] in a fresh temporary folder.
fn link_repository() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repository = std::env::temp_dir().join(format!("ferry-fuzz-repository-{}", std::process::id()));
    std::fs::create_dir_all(&repository).expect("a temporary model repository");
    for (models, model) in MODELS {
        let target = root
            .join(models)
            .join(model)
            .canonicalize()
            .expect("the model folder");
        std::os::unix::fs::symlink(target, repository.join(model)).expect("a link to the model");
    }
    repository
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    grpc: TraceContextService<GrpcInferenceServiceServer<InferenceService>>,
    http: TraceContextService<axum::Router>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let repository = link_repository();
        let onnxruntime = onnx::find_library(std::env::var_os("ORT_DYLIB_PATH").as_deref().map(Path::new))
            .expect(onnx::MISSING_LIBRARY_HELP);
        let options = ServerOptions {
            repository: RepositoryOptions::new(vec![repository.clone()]),
            onnxruntime,
            max_message_bytes: MAX_BYTES,
            connections: Default::default(),
            grpc_response_compression: Default::default(),
        };
        let server = {
            let _context = runtime.enter();
            Server::start(&options).expect("the server starts")
        };
        // Control mode `none` reads the repository only at start.
        let _ = std::fs::remove_dir_all(&repository);
        let service = InferenceService::with_shared_memory(server.registry().clone(), shared_memory());
        let grpc = GrpcInferenceServiceServer::new(service.clone())
            .max_decoding_message_size(MAX_BYTES)
            .max_encoding_message_size(MAX_BYTES);
        Harness {
            runtime,
            grpc: TraceContextLayer.layer(grpc),
            http: TraceContextLayer.layer(ferry_server::http::router(service, MAX_BYTES)),
        }
    })
}

/// A register request whose key is moved into [`KEY_PREFIX`]'s namespace; one that does not decode
/// becomes the empty request.
fn confine_key(message: &[u8]) -> Vec<u8> {
    let mut request = SystemSharedMemoryRegisterRequest::decode(message).unwrap_or_default();
    if !request.key.starts_with(KEY_PREFIX) {
        request.key = format!("{KEY_PREFIX}{}", request.key.trim_start_matches('/'));
    }
    request.encode_to_vec()
}

async fn grpc(harness: &Harness, method: u8, unframed: bool, grpc_errors: bool, messages: Vec<Vec<u8>>) {
    let name = GRPC_METHODS[usize::from(method) % GRPC_METHODS.len()];
    let (unframed, messages) = if name == "SystemSharedMemoryRegister" {
        (false, messages.iter().map(|m| confine_key(m)).collect())
    } else {
        (unframed, messages)
    };
    let body = if unframed {
        Bytes::from(messages.concat())
    } else {
        grpc_frames(&messages)
    };
    let mut request = http::Request::post(format!("/inference.GRPCInferenceService/{name}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers");
    if grpc_errors {
        request = request.header("triton_grpc_error", "true");
    }
    let request = request.body(Full::new(body)).expect("a valid request");
    let response = harness
        .grpc
        .clone()
        .oneshot(request)
        .await
        .expect("tonic answers every call");
    // Errors come back as statuses in the trailers; reading the body to its end is the point.
    let Ok(body) = response.into_body().collect().await else {
        return;
    };
    let body = body.to_bytes();
    for message in response_messages(&body) {
        match name {
            "ModelInfer" => {
                check_infer_response(&ModelInferResponse::decode(message).expect("Ferry's answer decodes"))
            }
            "ModelStreamInfer" => {
                let answer = ModelStreamInferResponse::decode(message).expect("Ferry's answer decodes");
                if let (true, Some(response)) = (answer.error_message.is_empty(), &answer.infer_response) {
                    check_infer_response(response);
                }
            }
            _ => {}
        }
    }
}

/// The messages of a gRPC response body: each behind a 5-byte prefix, uncompressed.
fn response_messages(mut body: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    while let Some((prefix, rest)) = body.split_first_chunk::<5>() {
        assert_eq!(prefix[0], 0, "Ferry does not compress answers");
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        let (message, rest) = rest.split_at_checked(length).expect("a whole message");
        messages.push(message);
        body = rest;
    }
    assert!(body.is_empty(), "a truncated message prefix");
    messages
}

/// Panics unless every output of an inference answer holds exactly the elements its shape and datatype
/// promise; an output written to shared memory travels empty.
fn check_infer_response(response: &ModelInferResponse) {
    assert_eq!(response.outputs.len(), response.raw_output_contents.len());
    for (output, raw) in response.outputs.iter().zip(&response.raw_output_contents) {
        if output.parameters.contains_key(ferry_server::shm::REGION) {
            assert!(raw.is_empty(), "output '{}' is in shared memory", output.name);
            continue;
        }
        let datatype = DataType::from_wire_name(&output.datatype).expect("a known datatype");
        let elements = output
            .shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
            .unwrap_or_else(|| panic!("output '{}' has shape {:?}", output.name, output.shape));
        match datatype.element_size() {
            Some(size) => assert_eq!(raw.len(), elements * size, "output '{}'", output.name),
            None => {
                let items = split_length_prefixed(raw.clone(), &output.name, elements);
                assert!(items.is_ok(), "output '{}': {items:?}", output.name);
            }
        }
    }
}

/// A REST register body whose `key` is moved into [`KEY_PREFIX`]'s namespace, as [`confine_key`] does for
/// gRPC; any other body is left as it is (it registers nothing).
fn confine_rest_key(head: &str, body: Vec<u8>) -> Vec<u8> {
    if !head.contains("sharedmemory") {
        return body;
    }
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    if let Some(serde_json::Value::String(key)) = object.get_mut("key")
        && !key.starts_with(KEY_PREFIX)
    {
        *key = format!("{KEY_PREFIX}{}", key.trim_start_matches('/'));
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

async fn http(harness: &Harness, head: &str, body: Vec<u8>) {
    let body = confine_rest_key(head, body);
    let Some(request) = http_request(head, body) else {
        return;
    };
    let response = harness
        .http
        .clone()
        .oneshot(request)
        .await
        .expect("axum answers every request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body is in memory").to_bytes();
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let json = if content_type == Some(&HeaderValue::from_static("application/json")) {
        &body[..]
    } else if parts.status == StatusCode::OK
        && content_type == Some(&HeaderValue::from_static("application/octet-stream"))
    {
        let length = parts
            .headers
            .get(ferry_server::http::binary::HEADER_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .expect("a binary answer has Inference-Header-Content-Length");
        body.get(..length).expect("the JSON header is within the body")
    } else {
        return;
    };
    if let Err(error) = serde_json::from_slice::<serde_json::Value>(json) {
        panic!(
            "{} answered with broken JSON ({error}): {}",
            parts.status,
            String::from_utf8_lossy(json)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(call) = Call::decode(data) else {
        return;
    };
    let harness = harness();
    harness.runtime.block_on(async {
        let call = async {
            match call {
                Call::Grpc {
                    method,
                    unframed,
                    grpc_errors,
                    messages,
                } => grpc(harness, method, unframed, grpc_errors, messages).await,
                Call::Http { head, body } => http(harness, &head, body).await,
            }
        };
        tokio::time::timeout(CALL_LIMIT, call)
            .await
            .expect("a call finishes within five seconds");
    });
});
