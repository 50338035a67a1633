//! Writes the seed corpora: a few valid inputs per fuzz target, under `<dir>/<target>/` (`fuzz/corpus` by
//! default). Run by `fuzz/run.sh seeds`; the files are named after their contents, so running it again
//! adds nothing new.

use std::{collections::HashMap, path::PathBuf};

use ferry_fuzz::{CONFIGS, Call, GRPC_METHODS, OFFSET_REGION, REGION};
use ferry_proto::inference::{
    InferParameter, InferTensorContents, ModelConfigRequest, ModelInferRequest, ModelMetadataRequest,
    ModelReadyRequest, ModelRepositoryParameter, ModelStatisticsRequest, RepositoryIndexRequest,
    RepositoryModelLoadRequest, SystemSharedMemoryRegisterRequest, SystemSharedMemoryStatusRequest,
    SystemSharedMemoryUnregisterRequest, TraceSettingRequest, infer_parameter::ParameterChoice,
    log_settings_request, model_infer_request::InferInputTensor,
    model_infer_request::InferRequestedOutputTensor, model_repository_parameter, trace_setting_request,
};
use prost::Message;

fn int(value: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    }
}

fn text(value: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.to_owned())),
    }
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: shape.to_vec(),
        ..InferInputTensor::default()
    }
}

fn output(name: &str) -> InferRequestedOutputTensor {
    InferRequestedOutputTensor {
        name: name.to_owned(),
        parameters: HashMap::new(),
    }
}

/// Length-prefixed BYTES elements.
fn strings(items: &[&[u8]]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|item| {
            (item.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(item.iter().copied())
        })
        .collect()
}

fn in_region(mut tensor: InferInputTensor, region: &str, offset: i64, byte_size: i64) -> InferInputTensor {
    tensor
        .parameters
        .insert("shared_memory_region".into(), text(region));
    tensor
        .parameters
        .insert("shared_memory_offset".into(), int(offset));
    tensor
        .parameters
        .insert("shared_memory_byte_size".into(), int(byte_size));
    tensor
}

/// Requests for the fuzz models of `ferry_fuzz::CONFIGS`.
fn infer_requests() -> Vec<ModelInferRequest> {
    let batched_raw = ModelInferRequest {
        model_name: "batched".into(),
        id: "r1".into(),
        parameters: HashMap::from([("priority".into(), int(1)), ("timeout".into(), int(100))]),
        inputs: vec![
            input("INPUT0", "INT32", &[2, 16]),
            input("SCALAR", "FP32", &[2, 1]),
            input("TEXT", "BYTES", &[2, 2]),
            input("FLAGS", "BOOL", &[2, 2, 1]),
        ],
        outputs: vec![output("OUTPUT0"), output("OUT_TEXT")],
        raw_input_contents: vec![
            vec![1; 128].into(),
            vec![0; 8].into(),
            strings(&[b"a", b"", b"\xff\x00", b"text"]).into(),
            vec![0, 1, 1, 0].into(),
        ],
        ..ModelInferRequest::default()
    };
    let batched_typed = ModelInferRequest {
        model_name: "batched".into(),
        inputs: vec![
            InferInputTensor {
                contents: Some(InferTensorContents {
                    int_contents: (0..16).collect(),
                    ..InferTensorContents::default()
                }),
                ..input("INPUT0", "INT32", &[1, 16])
            },
            InferInputTensor {
                contents: Some(InferTensorContents {
                    fp32_contents: vec![1.5],
                    ..InferTensorContents::default()
                }),
                ..input("SCALAR", "FP32", &[1, 1])
            },
            InferInputTensor {
                contents: Some(InferTensorContents {
                    bytes_contents: vec![b"hello".to_vec().into()],
                    ..InferTensorContents::default()
                }),
                ..input("TEXT", "BYTES", &[1, 1])
            },
        ],
        ..ModelInferRequest::default()
    };
    let plain = ModelInferRequest {
        model_name: "plain".into(),
        inputs: vec![
            InferInputTensor {
                contents: Some(InferTensorContents {
                    int_contents: vec![-128, 0, 127],
                    ..InferTensorContents::default()
                }),
                ..input("I8", "INT8", &[3])
            },
            InferInputTensor {
                contents: Some(InferTensorContents {
                    uint_contents: vec![0, 1, 2, 65535],
                    ..InferTensorContents::default()
                }),
                ..input("U16", "UINT16", &[2, 2])
            },
            InferInputTensor {
                contents: Some(InferTensorContents {
                    uint64_contents: vec![u64::MAX],
                    ..InferTensorContents::default()
                }),
                ..input("U64", "UINT64", &[1])
            },
            InferInputTensor {
                contents: Some(InferTensorContents {
                    fp64_contents: vec![0.5, -0.5, 1e300, 0.0],
                    ..InferTensorContents::default()
                }),
                ..input("F64", "FP64", &[4])
            },
            InferInputTensor {
                contents: Some(InferTensorContents {
                    bytes_contents: vec![b"x".to_vec().into(), b"".to_vec().into()],
                    ..InferTensorContents::default()
                }),
                ..input("S", "BYTES", &[2])
            },
        ],
        outputs: vec![output("OUT")],
        ..ModelInferRequest::default()
    };
    let plain_raw = ModelInferRequest {
        model_name: "plain".into(),
        inputs: vec![
            input("I8", "INT8", &[0]),
            input("F16", "FP16", &[1, 3]),
            input("BF16", "BF16", &[2]),
            input("I64", "INT64", &[2, 1]),
            input("I16", "INT16", &[3]),
            input("U32", "UINT32", &[1]),
            input("U8", "UINT8", &[5]),
        ],
        raw_input_contents: vec![
            Vec::new().into(),
            vec![0, 60, 0, 188, 0, 0].into(),
            vec![128, 63, 0, 0].into(),
            vec![7; 16].into(),
            vec![1, 0, 2, 0, 3, 0].into(),
            vec![9, 0, 0, 0].into(),
            b"bytes".to_vec().into(),
        ],
        ..ModelInferRequest::default()
    };
    let shared = ModelInferRequest {
        model_name: "batched".into(),
        inputs: vec![
            in_region(input("INPUT0", "INT32", &[1, 16]), REGION, 0, 64),
            in_region(input("SCALAR", "FP32", &[1, 1]), OFFSET_REGION, 3, 4),
            input("TEXT", "BYTES", &[1, 1]),
        ],
        raw_input_contents: vec![strings(&[b"in the request"]).into()],
        ..ModelInferRequest::default()
    };
    let strings_model = ModelInferRequest {
        model_name: "strings".into(),
        inputs: vec![input("TEXT", "BYTES", &[2, 1])],
        raw_input_contents: vec![strings(&[b"one", b"two"]).into()],
        ..ModelInferRequest::default()
    };
    vec![
        batched_raw,
        batched_typed,
        plain,
        plain_raw,
        shared,
        strings_model,
    ]
}

/// Requests for the models of `examples/model_repository`.
fn example_infer_requests() -> Vec<ModelInferRequest> {
    let simple = ModelInferRequest {
        model_name: "simple".into(),
        id: "s".into(),
        inputs: vec![
            input("INPUT0", "INT32", &[1, 16]),
            input("INPUT1", "INT32", &[1, 16]),
        ],
        outputs: vec![output("OUTPUT0"), output("OUTPUT1")],
        raw_input_contents: vec![vec![1; 64].into(), vec![2; 64].into()],
        ..ModelInferRequest::default()
    };
    let mlp = ModelInferRequest {
        model_name: "mlp_classifier".into(),
        model_version: "1".into(),
        inputs: vec![InferInputTensor {
            contents: Some(InferTensorContents {
                fp32_contents: vec![0.25; 64],
                ..InferTensorContents::default()
            }),
            ..input("features", "FP32", &[2, 32])
        }],
        outputs: vec![output("label")],
        ..ModelInferRequest::default()
    };
    let mut shared = simple.clone();
    shared.inputs[0] = in_region(input("INPUT0", "INT32", &[1, 16]), REGION, 0, 64);
    shared.raw_input_contents.remove(0);
    shared.outputs[1] = InferRequestedOutputTensor {
        name: "OUTPUT1".into(),
        parameters: HashMap::from([
            ("shared_memory_region".into(), text(OFFSET_REGION)),
            ("shared_memory_byte_size".into(), int(64)),
        ]),
    };
    let types = [
        ("BOOL", 1),
        ("UINT8", 1),
        ("UINT16", 2),
        ("UINT32", 4),
        ("UINT64", 8),
        ("INT8", 1),
        ("INT16", 2),
        ("INT32", 4),
        ("INT64", 8),
        ("FP16", 2),
        ("FP32", 4),
        ("FP64", 8),
    ];
    let mut every_type = ModelInferRequest {
        model_name: "identity_types".into(),
        ..ModelInferRequest::default()
    };
    for (datatype, size) in types {
        every_type
            .inputs
            .push(input(&format!("IN_{datatype}"), datatype, &[2]));
        every_type.raw_input_contents.push(vec![1; 2 * size].into());
    }
    every_type.inputs.push(input("IN_BYTES", "BYTES", &[2]));
    every_type
        .raw_input_contents
        .push(strings(&[b"text", b"\xff\xfe not UTF-8"]).into());
    let bf16 = ModelInferRequest {
        model_name: "identity_bf16".into(),
        inputs: vec![input("IN_BF16", "BF16", &[3])],
        raw_input_contents: vec![vec![0x80, 0x3f, 0, 0, 0xc0, 0x7f].into()],
        ..ModelInferRequest::default()
    };
    let gather = ModelInferRequest {
        model_name: "gather_table".into(),
        inputs: vec![InferInputTensor {
            contents: Some(InferTensorContents {
                int64_contents: vec![3, 10],
                ..InferTensorContents::default()
            }),
            ..input("index", "INT64", &[2, 1])
        }],
        ..ModelInferRequest::default()
    };
    vec![simple, mlp, shared, every_type, bf16, gather]
}

fn rest_bodies() -> Vec<Vec<u8>> {
    let json = br#"{"id":"r","parameters":{"priority":1,"binary_data_output":false},"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]},{"name":"SCALAR","shape":[1,1],"datatype":"FP32","data":[1.5]},{"name":"TEXT","shape":[1,2],"datatype":"BYTES","data":["a","bc"]}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}},{"name":"OUT_TEXT"}]}"#;
    let header = br#"{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","parameters":{"binary_data_size":64}},{"name":"SCALAR","shape":[1,1],"datatype":"FP32","parameters":{"binary_data_size":4}},{"name":"FLAGS","shape":[1,2,2],"datatype":"BOOL","data":[[true,false],[false,true]]}],"parameters":{"binary_data_output":true}}"#;
    let plain = br#"{"inputs":[{"name":"I8","shape":[3],"datatype":"INT8","data":[-1,0,1]},{"name":"U64","shape":[2],"datatype":"UINT64","data":[18446744073709551615,0]},{"name":"F64","shape":[4],"datatype":"FP64","data":[1e300,-0.5,0,2]},{"name":"S","shape":[2],"datatype":"BYTES","data":["x","\u00e9"]}]}"#;
    let mut binary = vec![1u8];
    binary.extend((header.len() as u16).to_le_bytes());
    binary.extend(header);
    binary.extend([7u8; 64]);
    binary.extend(1.0f32.to_le_bytes());
    let mut by_text = vec![3u8];
    by_text.extend(header.len().to_string().as_bytes());
    by_text.push(b'\n');
    by_text.extend(header);
    by_text.extend([0u8; 68]);
    vec![
        [&[0u8][..], json].concat(),
        [&[0u8][..], plain].concat(),
        binary,
        by_text,
    ]
}

fn grpc(method: &str, messages: Vec<Vec<u8>>) -> Call {
    let index = GRPC_METHODS
        .iter()
        .position(|m| *m == method)
        .expect("a known method");
    Call::Grpc {
        method: index as u8,
        unframed: false,
        grpc_errors: false,
        messages,
    }
}

fn http(head: &str, body: &[u8]) -> Call {
    Call::Http {
        head: head.to_owned(),
        body: body.to_vec(),
    }
}

fn service_calls() -> Vec<Call> {
    let mut calls = vec![
        grpc("ServerLive", vec![Vec::new()]),
        grpc("ServerReady", vec![Vec::new()]),
        grpc("ServerMetadata", vec![Vec::new()]),
        grpc(
            "ModelReady",
            vec![
                ModelReadyRequest {
                    name: "simple".into(),
                    version: "1".into(),
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "ModelMetadata",
            vec![
                ModelMetadataRequest {
                    name: "mlp_classifier".into(),
                    version: String::new(),
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "ModelConfig",
            vec![
                ModelConfigRequest {
                    name: "linear_auto".into(),
                    version: String::new(),
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "ModelStatistics",
            vec![
                ModelStatisticsRequest {
                    name: String::new(),
                    version: String::new(),
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "RepositoryIndex",
            vec![
                RepositoryIndexRequest {
                    repository_name: String::new(),
                    ready: true,
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "RepositoryModelLoad",
            vec![
                RepositoryModelLoadRequest {
                    repository_name: String::new(),
                    model_name: "simple".into(),
                    parameters: HashMap::from([(
                        "config".into(),
                        ModelRepositoryParameter {
                            parameter_choice: Some(model_repository_parameter::ParameterChoice::StringParam(
                                r#"{"max_batch_size": 4}"#.into(),
                            )),
                        },
                    )]),
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "SystemSharedMemoryRegister",
            vec![
                SystemSharedMemoryRegisterRequest {
                    name: "mine".into(),
                    key: "/ferry_fuzz_absent".into(),
                    offset: 0,
                    byte_size: 16,
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "SystemSharedMemoryStatus",
            vec![SystemSharedMemoryStatusRequest { name: REGION.into() }.encode_to_vec()],
        ),
        grpc(
            "SystemSharedMemoryUnregister",
            vec![SystemSharedMemoryUnregisterRequest { name: "other".into() }.encode_to_vec()],
        ),
        grpc(
            "TraceSetting",
            vec![
                TraceSettingRequest {
                    settings: HashMap::from([(
                        "trace_rate".into(),
                        trace_setting_request::SettingValue {
                            value: vec!["10".into()],
                        },
                    )]),
                    model_name: String::new(),
                }
                .encode_to_vec(),
            ],
        ),
        grpc(
            "LogSettings",
            vec![
                ferry_proto::inference::LogSettingsRequest {
                    settings: HashMap::from([(
                        "log_verbose_level".into(),
                        log_settings_request::SettingValue {
                            parameter_choice: Some(
                                log_settings_request::setting_value::ParameterChoice::Uint32Param(1),
                            ),
                        },
                    )]),
                }
                .encode_to_vec(),
            ],
        ),
    ];
    let requests: Vec<Vec<u8>> = example_infer_requests()
        .iter()
        .map(Message::encode_to_vec)
        .collect();
    for request in &requests {
        calls.push(grpc("ModelInfer", vec![request.clone()]));
    }
    calls.push(Call::Grpc {
        method: GRPC_METHODS
            .iter()
            .position(|m| *m == "ModelStreamInfer")
            .expect("known") as u8,
        unframed: false,
        grpc_errors: true,
        messages: requests,
    });
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/stats",
        "/v2/models/simple",
        "/v2/models/simple/ready",
        "/v2/models/mlp_classifier/versions/2/config",
        "/v2/models/mlp_classifier/versions/1/stats",
    ] {
        calls.push(http(&format!("GET {path}"), b""));
    }
    calls.push(http("POST /v2/repository/index", br#"{"ready": true}"#));
    calls.push(http(
        "POST /v2/repository/models/simple/load",
        br#"{"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}}"#,
    ));
    calls.push(http("POST /v2/repository/models/simple/unload", b""));
    let simple_json = br#"{"id":"1","inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]},{"name":"INPUT1","shape":[1,16],"datatype":"INT32","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}],"outputs":[{"name":"OUTPUT0"},{"name":"OUTPUT1","parameters":{"binary_data":true}}]}"#;
    calls.push(http(
        "POST /v2/models/simple/infer\ncontent-type: application/json\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        simple_json,
    ));
    let header = br#"{"inputs":[{"name":"features","shape":[1,32],"datatype":"FP32","parameters":{"binary_data_size":128}}],"parameters":{"binary_data_output":true}}"#;
    let mut body = header.to_vec();
    body.extend([0u8; 128]);
    calls.push(http(
        &format!(
            "POST /v2/models/mlp_classifier/versions/2/infer\ninference-header-content-length: {}",
            header.len()
        ),
        &body,
    ));
    let every_type = br#"{"inputs":[{"name":"IN_BOOL","shape":[1],"datatype":"BOOL","data":[true]},{"name":"IN_UINT8","shape":[1],"datatype":"UINT8","data":[255]},{"name":"IN_UINT16","shape":[1],"datatype":"UINT16","data":[1]},{"name":"IN_UINT32","shape":[1],"datatype":"UINT32","data":[1]},{"name":"IN_UINT64","shape":[1],"datatype":"UINT64","data":[1]},{"name":"IN_INT8","shape":[1],"datatype":"INT8","data":[-1]},{"name":"IN_INT16","shape":[1],"datatype":"INT16","data":[1]},{"name":"IN_INT32","shape":[1],"datatype":"INT32","data":[1]},{"name":"IN_INT64","shape":[1],"datatype":"INT64","data":[1]},{"name":"IN_FP16","shape":[1],"datatype":"FP16","parameters":{"binary_data_size":2}},{"name":"IN_FP32","shape":[1],"datatype":"FP32","data":[0.5]},{"name":"IN_FP64","shape":[1],"datatype":"FP64","data":[0.5]},{"name":"IN_BYTES","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}],"outputs":[{"name":"OUT_FP16","parameters":{"binary_data":true}},{"name":"OUT_BYTES"},{"name":"OUT_FP32"}]}"#;
    let mut body = every_type.to_vec();
    body.extend([0, 60, 2, 0, 0, 0, 0xff, 0x41]);
    calls.push(http(
        &format!(
            "POST /v2/models/identity_types/infer\ninference-header-content-length: {}",
            every_type.len()
        ),
        &body,
    ));
    calls.push(http(
        "POST /v2/models/gather_table/infer",
        br#"{"inputs":[{"name":"index","shape":[1,1],"datatype":"INT64","data":[11]}]}"#,
    ));
    // The shared memory endpoints; the harness confines register keys to the fuzzer's namespace.
    calls.push(http("GET /v2/systemsharedmemory/status", b""));
    calls.push(http(
        &format!("GET /v2/systemsharedmemory/region/{REGION}/status"),
        b"",
    ));
    calls.push(http(
        "POST /v2/systemsharedmemory/region/rest/register",
        br#"{"key": "/ferry_fuzz_rest", "offset": 0, "byte_size": 64}"#,
    ));
    calls.push(http("POST /v2/systemsharedmemory/region/rest/unregister", b""));
    calls.push(http("GET /v2/cudasharedmemory/status", b""));
    calls.push(http(
        "POST /v2/cudasharedmemory/region/gpu/register",
        br#"{"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 64}"#,
    ));
    calls.push(http("POST /v2/cudasharedmemory/unregister", b""));
    let in_region = format!(
        r#"{{"inputs":[{{"name":"INPUT0","shape":[1,16],"datatype":"INT32","parameters":{{"shared_memory_region":"{REGION}","shared_memory_byte_size":64}}}},{{"name":"INPUT1","shape":[1,16],"datatype":"INT32","data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}}],"outputs":[{{"name":"OUTPUT0","parameters":{{"shared_memory_region":"{REGION}","shared_memory_byte_size":64}}}},{{"name":"OUTPUT1"}}]}}"#
    );
    calls.push(http("POST /v2/models/simple/infer", in_region.as_bytes()));
    calls
}

fn configs() -> Vec<Vec<u8>> {
    let mut texts: Vec<Vec<u8>> = CONFIGS.iter().map(|(_, text)| text.as_bytes().to_vec()).collect();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/model_repository");
    for model in ["simple", "mlp_classifier"] {
        let path = examples.join(model).join("config.pbtxt");
        texts.push(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    texts.push(
        br#"
name: "m"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
max_batch_size: 8
version_policy: { latest: { num_versions: 2 } }
input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] }, { name: "x", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] } } ]
output [ { name: "OUTPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
instance_group [ { count: 2, kind: KIND_CPU }, { count: 1, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value { string_value: "2" } }
parameters { key: "inter_op_thread_count" value { string_value: "1" } }
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 500
  preserve_ordering: true
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1000 allow_timeout_override: true max_queue_size: 8 }
  priority_queue_policy { key: 1 value { timeout_action: REJECT max_queue_size: 2 } }
}
"#
        .to_vec(),
    );
    texts.push(b"max_batch_size: 2\ninstance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]\nversion_policy: { specific: { versions: [ 1, 3 ] } }\n".to_vec());
    texts.push(b"input [ { name: \"INPUT0\" data_type: TYPE_FP16 } ]\noutput [ { name: \"y\" } ]\n".to_vec());
    texts.push(
        br#"{"name": "m", "max_batch_size": 4, "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]}], "output": [{"name": "OUTPUT0", "data_type": "TYPE_STRING", "dims": [-1]}], "dynamic_batching": {"preferred_batch_size": [2]}}"#.to_vec(),
    );
    texts
}

fn write(dir: &std::path::Path, target: &str, inputs: impl IntoIterator<Item = Vec<u8>>) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for input in inputs {
        // FNV-1a of the contents: stable names, so that rewriting the seeds changes nothing.
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let path = dir.join(format!("seed-{hash:016x}"));
        std::fs::write(&path, input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn main() {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    write(
        &dir,
        "model_infer",
        infer_requests().iter().map(Message::encode_to_vec),
    );
    write(
        &dir,
        "bytes_elements",
        [
            [&2u16.to_le_bytes()[..], &strings(&[b"hi", b""])].concat(),
            [&1u16.to_le_bytes()[..], &strings(&[b"\x00\xff"])].concat(),
            0u16.to_le_bytes().to_vec(),
        ],
    );
    write(&dir, "config_pbtxt", configs());
    write(&dir, "rest_infer", rest_bodies());
    write(
        &dir,
        "shm_parameters",
        [
            b"\x00\x06\x01\x02\x02\x10\x00\x00\x00\x00\x00\x00\x00\x00\x01".to_vec(),
            b"\x00\x06\x00\x01\x03\x02\x02\x04\x00\x00\x00\x00\x00\x00\x00\x00abcd".to_vec(),
        ],
    );
    write(&dir, "services", service_calls().iter().map(Call::encode));
}
