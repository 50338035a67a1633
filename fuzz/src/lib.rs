//! What Ferry's fuzz targets share: model specs built from config text, a shared memory registry with
//! regions of the fuzzer's own, invariants a validated request must hold, and the framing of gRPC and HTTP
//! requests for the in-process services target.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use bytes::{BufMut, Bytes, BytesMut};
use ferry_server::{
    DataType,
    config::{ConfigSource, ModelSpec, complete_config, parse_model_config},
    request::{InferRequest, TensorData},
    shm::SharedMemoryRegistry,
};

/// A batching model: fixed-size inputs, a scalar reshaped per item, an optional BYTES input and an optional
/// two-dimensional BOOL input, with dynamic batching.
pub const BATCHED_CONFIG: &str = r#"
name: "batched"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "SCALAR" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } },
  { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] optional: true },
  { name: "FLAGS" data_type: TYPE_BOOL dims: [ 2, -1 ] optional: true }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUT_TEXT" data_type: TYPE_STRING dims: [ -1 ] }
]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
"#;

/// A model that does not batch, with an input of every other data type (narrow integers, FP16 and BF16
/// that only travel raw, a reshaped UINT16 matrix).
pub const PLAIN_CONFIG: &str = r#"
name: "plain"
input [
  { name: "I8" data_type: TYPE_INT8 dims: [ -1 ] },
  { name: "U16" data_type: TYPE_UINT16 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } optional: true },
  { name: "F16" data_type: TYPE_FP16 dims: [ -1, 3 ] optional: true },
  { name: "BF16" data_type: TYPE_BF16 dims: [ 2 ] optional: true },
  { name: "U8" data_type: TYPE_UINT8 dims: [ -1 ] optional: true },
  { name: "I16" data_type: TYPE_INT16 dims: [ 3 ] optional: true },
  { name: "U32" data_type: TYPE_UINT32 dims: [ 1 ] optional: true },
  { name: "U64" data_type: TYPE_UINT64 dims: [ -1 ] optional: true },
  { name: "I64" data_type: TYPE_INT64 dims: [ 2, -1 ] optional: true },
  { name: "F64" data_type: TYPE_FP64 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } optional: true },
  { name: "S" data_type: TYPE_STRING dims: [ 2 ] optional: true }
]
output [ { name: "OUT" data_type: TYPE_FP64 dims: [ -1 ] } ]
"#;

/// A batching model with a single BYTES input, as text models have.
pub const STRINGS_CONFIG: &str = r#"
name: "strings"
max_batch_size: 4
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "LENGTHS" data_type: TYPE_INT64 dims: [ -1 ] } ]
"#;

/// Every fuzzed config, with the folder name it is validated under.
pub const CONFIGS: [(&str, &str); 3] = [
    ("batched", BATCHED_CONFIG),
    ("plain", PLAIN_CONFIG),
    ("strings", STRINGS_CONFIG),
];

/// The specs of [`CONFIGS`], parsed, completed and validated once.
pub fn specs() -> &'static [ModelSpec] {
    static SPECS: OnceLock<Vec<ModelSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|(name, text)| {
                let path = format!("{name}/config.pbtxt");
                let mut config = parse_model_config(text, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
                complete_config(&mut config, None, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
                let source = ConfigSource {
                    path: &path,
                    text: Some(text),
                };
                ModelSpec::from_config(config, name, source).unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect()
    })
}

/// The region every shared memory input may name: [`REGION_BYTES`] bytes at the start of the object.
pub const REGION: &str = "fuzz";
/// A second region of the same object that starts at an offset that is not page-aligned.
pub const OFFSET_REGION: &str = "fuzz_offset";
/// The size of [`REGION`].
pub const REGION_BYTES: usize = 64;
/// Where [`OFFSET_REGION`] starts in the object, and its size.
pub const OFFSET_REGION_AT: (usize, usize) = (17, 100);
/// The size of the shared memory object behind both regions.
const OBJECT_BYTES: usize = 128;

/// A registry holding [`REGION`] and [`OFFSET_REGION`], mapped from a POSIX shared memory object that is
/// unlinked at once: the mappings stay valid, and nothing is left in `/dev/shm` when the fuzzer exits.
pub fn shared_memory() -> Arc<SharedMemoryRegistry> {
    static REGISTRY: OnceLock<Arc<SharedMemoryRegistry>> = OnceLock::new();
    Arc::clone(REGISTRY.get_or_init(|| {
        let key = format!("/ferry_fuzz_{}", std::process::id());
        let path = format!("/dev/shm{key}");
        let contents: Vec<u8> = (0..OBJECT_BYTES).map(|i| i as u8).collect();
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("create {path}: {e}"));
        let registry = SharedMemoryRegistry::default();
        let (at, size) = OFFSET_REGION_AT;
        let registered = registry
            .register(REGION, &key, 0, REGION_BYTES as u64)
            .and_then(|()| registry.register(OFFSET_REGION, &key, at as u64, size as u64));
        let _ = std::fs::remove_file(&path);
        registered.unwrap_or_else(|e| panic!("register {key}: {e}"));
        Arc::new(registry)
    }))
}

/// Panics unless `parsed` holds what validation promises about a request for `spec`: known inputs at most
/// once, each with exactly as many elements as its shape, batch sizes within the model's limit, and known
/// outputs.
pub fn check_parsed(parsed: &InferRequest, spec: &ModelSpec) {
    let mut seen = Vec::new();
    for input in &parsed.inputs {
        let tensor = &spec.inputs[input.index];
        assert!(!seen.contains(&input.index), "input '{}' twice", tensor.name);
        seen.push(input.index);
        let elements = input
            .shape
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
            .unwrap_or_else(|| panic!("input '{}' has shape {:?}", tensor.name, input.shape));
        match (&input.data, tensor.data_type.element_size()) {
            (TensorData::Fixed(bytes), Some(size)) => {
                assert_eq!(bytes.len(), elements * size, "{}", tensor.name)
            }
            (TensorData::Strings(items), None) => assert_eq!(items.len(), elements, "{}", tensor.name),
            (data, _) => panic!("input '{}' ({}) holds {data:?}", tensor.name, tensor.data_type),
        }
        if tensor.data_type == DataType::Bool
            && let TensorData::Fixed(bytes) = &input.data
        {
            assert!(
                bytes.iter().all(|b| *b <= 1),
                "BOOL input '{}' holds {bytes:?}",
                tensor.name
            );
        }
        if spec.max_batch_size > 0 {
            assert_eq!(input.shape.first().map(|d| *d as usize), Some(parsed.batch_size));
            assert_eq!(input.model_shape.first(), input.shape.first());
        }
    }
    assert!((1..=spec.max_batch_size.max(1)).contains(&parsed.batch_size));
    assert!(parsed.outputs.iter().all(|o| *o < spec.outputs.len()));
    for (index, tensor) in spec.inputs.iter().enumerate() {
        assert!(
            tensor.optional || seen.contains(&index),
            "required input '{}' missing",
            tensor.name
        );
    }
}

/// The RPCs of `inference.GRPCInferenceService`, by the name in their path.
pub const GRPC_METHODS: [&str; 20] = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
];

/// Separates the messages of one fuzzed gRPC call in a services input.
pub const MESSAGE_SEPARATOR: &[u8] = b"\xff\xfeMSG";

/// One call in the `services` target's input format.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A gRPC call: method index into [`GRPC_METHODS`], flags, and the encoded messages.
    Grpc {
        /// Index into [`GRPC_METHODS`] (taken modulo its length when decoding).
        method: u8,
        /// Send the body as given, without gRPC framing.
        unframed: bool,
        /// Send `triton_grpc_error: true`, which changes how ModelStreamInfer reports errors.
        grpc_errors: bool,
        /// The messages; the body is each one framed, in order.
        messages: Vec<Vec<u8>>,
    },
    /// An HTTP request: a head of `METHOD PATH` and `name: value` lines, and a body.
    Http {
        /// `METHOD PATH\nname: value\n...`.
        head: String,
        /// The body.
        body: Vec<u8>,
    },
}

/// The first byte of an input: which front end, and the gRPC flags.
const HTTP_FLAG: u8 = 0x80;
const UNFRAMED_FLAG: u8 = 0x40;
const GRPC_ERRORS_FLAG: u8 = 0x20;

impl Call {
    /// Reads one call from a fuzz input; `None` for an empty input.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let (&first, rest) = data.split_first()?;
        if first & HTTP_FLAG != 0 {
            let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
                Some(at) => (&rest[..at], &rest[at + 2..]),
                None => (rest, &[][..]),
            };
            return Some(Call::Http {
                head: String::from_utf8_lossy(head).into_owned(),
                body: body.to_vec(),
            });
        }
        let unframed = first & UNFRAMED_FLAG != 0;
        let messages = if unframed {
            vec![rest.to_vec()]
        } else {
            split(rest, MESSAGE_SEPARATOR)
        };
        Some(Call::Grpc {
            method: first & 0x1f,
            unframed,
            grpc_errors: first & GRPC_ERRORS_FLAG != 0,
            messages,
        })
    }

    /// The fuzz input that decodes to this call, for writing seeds.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Call::Grpc {
                method,
                unframed,
                grpc_errors,
                messages,
            } => {
                let mut first = method & 0x1f;
                if *unframed {
                    first |= UNFRAMED_FLAG;
                }
                if *grpc_errors {
                    first |= GRPC_ERRORS_FLAG;
                }
                let mut out = vec![first];
                out.extend(messages.join(MESSAGE_SEPARATOR));
                out
            }
            Call::Http { head, body } => {
                let mut out = vec![HTTP_FLAG];
                out.extend(head.as_bytes());
                out.extend(b"\n\n");
                out.extend(body);
                out
            }
        }
    }
}

fn split(data: &[u8], separator: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(separator.len()).position(|w| w == separator) {
        parts.push(rest[..at].to_vec());
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest.to_vec());
    parts
}

/// `messages` as a gRPC body: each one uncompressed, behind its 5-byte length prefix.
pub fn grpc_frames(messages: &[Vec<u8>]) -> Bytes {
    let mut body = BytesMut::new();
    for message in messages {
        body.put_u8(0);
        body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        body.put_slice(message);
    }
    body.freeze()
}

/// Builds an HTTP request from a [`Call::Http`] head and body; `None` when the head does not make one.
pub fn http_request(head: &str, body: Vec<u8>) -> Option<http::Request<axum::body::Body>> {
    let mut lines = head.lines();
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).ok()?)
        .uri(http::Uri::try_from(path).ok()?);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(axum::body::Body::from(body)).ok()
}

/// Parameters by name, as the fuzzed parameter maps are built.
pub type Parameters = HashMap<String, ferry_proto::inference::InferParameter>;
