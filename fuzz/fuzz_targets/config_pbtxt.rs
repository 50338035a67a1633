//! A model config as text: `config.pbtxt` (protobuf text format), or, when it starts with `{`, the JSON
//! form a load request's `config` parameter carries. A config that parses is completed without a model and
//! against two model signatures (one that batches, one that does not), then validated into a `ModelSpec`
//! and checked against the signature. Errors must point at a line of the text.

#![no_main]

use std::sync::OnceLock;

use ferry_server::{
    DataType, Error,
    config::{ConfigSource, ModelSignature, ModelSpec, ModelTensor, complete_config, parse_model_config},
    repository::config_from_json,
};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "model/config.pbtxt";

fn tensor(name: &str, data_type: Option<DataType>, shape: &[i64]) -> ModelTensor {
    ModelTensor {
        name: name.to_owned(),
        data_type,
        shape: shape.to_vec(),
    }
}

/// A model whose tensors all have a dynamic first dimension, one with a scalar per item.
fn batching() -> &'static ModelSignature {
    static SIGNATURE: OnceLock<ModelSignature> = OnceLock::new();
    SIGNATURE.get_or_init(|| ModelSignature {
        inputs: vec![
            tensor("INPUT0", Some(DataType::Int32), &[-1, 16]),
            tensor("x", Some(DataType::Fp32), &[-1]),
        ],
        outputs: vec![tensor("OUTPUT0", Some(DataType::Bytes), &[-1, -1])],
    })
}

/// A model that cannot batch, with an output of a type Triton's protocol cannot carry.
fn fixed() -> &'static ModelSignature {
    static SIGNATURE: OnceLock<ModelSignature> = OnceLock::new();
    SIGNATURE.get_or_init(|| ModelSignature {
        inputs: vec![tensor("INPUT0", Some(DataType::Fp16), &[2, 3])],
        outputs: vec![tensor("y", Some(DataType::Bool), &[]), tensor("z", None, &[4])],
    })
}

/// Panics when a config error names a line the text does not have.
fn check_line(error: &Error, text: &str) {
    if let Error::Config { line, .. } = error {
        assert!(
            *line <= text.lines().count() + 1,
            "line {line} of a {}-line text",
            text.lines().count()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = if text.trim_start().starts_with('{') {
        config_from_json(&text)
    } else {
        parse_model_config(&text, PATH)
    };
    let config = match parsed {
        Ok(config) => config,
        Err(error) => return check_line(&error, &text),
    };
    for signature in [None, Some(batching()), Some(fixed())] {
        let mut config = config.clone();
        if let Err(error) = complete_config(&mut config, signature, PATH) {
            check_line(&error, &text);
            continue;
        }
        let folder = if config.name.is_empty() {
            "model".to_owned()
        } else {
            config.name.clone()
        };
        let source = ConfigSource {
            path: PATH,
            text: Some(&text),
        };
        let spec = match ModelSpec::from_config(config, &folder, source) {
            Ok(spec) => spec,
            Err(error) => {
                check_line(&error, &text);
                continue;
            }
        };
        assert!(!spec.inputs.is_empty() && !spec.outputs.is_empty());
        for tensor in spec.inputs.iter().chain(&spec.outputs) {
            assert!(!tensor.dims.is_empty() && tensor.dims.iter().all(|d| *d == -1 || *d > 0));
        }
        assert!(spec.instances.count > 0);
        let _ = spec.version_policy.select(&[3, 1, 2, 2, u64::MAX]);
        if let Some(signature) = signature {
            let _ = spec.check_signature(signature, "model/1/model.onnx");
        }
    }
});
