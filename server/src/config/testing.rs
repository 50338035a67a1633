//! Specs from config text for the unit tests of the config modules.

use super::{ConfigSource, ModelSignature, ModelSpec, ModelTensor, complete_config, parse_model_config};
use crate::{DataType, Error};

/// The spec of model `m` from config text `text`, completed from and checked against a model with one
/// FP32 input `x` and one FP32 output `y` of shape [-1, 4].
pub(crate) fn spec_from(text: &str) -> Result<ModelSpec, Error> {
    let signature = ModelSignature {
        inputs: vec![ModelTensor {
            name: "x".into(),
            data_type: Some(DataType::Fp32),
            shape: vec![-1, 4],
            form: Default::default(),
        }],
        outputs: vec![ModelTensor {
            name: "y".into(),
            data_type: Some(DataType::Fp32),
            shape: vec![-1, 4],
            form: Default::default(),
        }],
    };
    spec_with_signature(text, &signature)
}

/// The spec of model `m` from config text `text`, completed from and checked against `signature`.
pub(super) fn spec_with_signature(text: &str, signature: &ModelSignature) -> Result<ModelSpec, Error> {
    let mut config = parse_model_config(text, "m/config.pbtxt")?;
    complete_config(&mut config, Some(signature), "m/config.pbtxt")?;
    let spec = ModelSpec::from_config(
        config,
        "m",
        ConfigSource {
            path: "m/config.pbtxt",
            text: Some(text),
        },
    )?;
    spec.check_signature(signature, "m/1/model.onnx")?;
    Ok(spec)
}

/// The line and message of the config error `text` fails with.
pub(super) fn config_error(text: &str) -> (usize, String) {
    match spec_from(text) {
        Err(Error::Config { line, message, .. }) => (line, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// A `parameters` entry of config text: `key` set to the string `value`.
pub(super) fn parameter(key: &str, value: &str) -> String {
    format!("parameters {{ key: \"{key}\" value {{ string_value: \"{value}\" }} }}\n")
}

/// Checks that each `(key, value, expected)` alone fails the load on its own line, with a message naming
/// the key, the value as given and `expected` (what the key takes).
pub(super) fn assert_each_refused(cases: &[(&str, &str, &str)]) {
    for (key, value, expected) in cases {
        let (line, message) = config_error(&format!("\n{}", parameter(key, value)));
        assert_eq!(line, 2, "{message}");
        assert!(
            message.contains(key) && message.contains(expected) && message.contains(&format!("'{value}'")),
            "{message}"
        );
    }
}
