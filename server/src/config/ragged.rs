//! Triton's ragged batching, checked when the model loads: inputs marked `allow_ragged_batch`, which requests
//! may send with any length and which the model receives flattened into one 1-D tensor, and the
//! `batch_input` entries that tell the model where each request's elements lie in it.

use std::sync::Arc;

use ferry_proto::inference::{ModelConfig, batch_input::Kind};

use super::{ConfigSource, ModelSignature, TensorSpec, buckets::BucketPadding};
use crate::{DataType, Error};

/// How a model takes requests whose inputs differ in length. The default takes none: requests share a batch
/// only when every input agrees in every dimension but the batch dimension.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariableLengths {
    /// Ragged inputs and batch inputs (Triton's ragged batching), when the config has either.
    pub ragged: Option<Arc<RaggedInputs>>,
    /// Padding to bucket lengths (`ferry.pad_to_bucket`, beyond Triton), when the config asks for it.
    pub buckets: Option<Arc<BucketPadding>>,
}

/// The ragged inputs of a model and the batch inputs Ferry builds for each batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RaggedInputs {
    /// One flag per config input, in config order: true for an input with `allow_ragged_batch`.
    pub ragged: Vec<bool>,
    /// The `batch_input` entries, in config order.
    pub batch_inputs: Vec<BatchInputSpec>,
}

impl RaggedInputs {
    /// Whether the config input at `index` is ragged: requests of any length there share a batch.
    pub fn is_ragged(&self, index: usize) -> bool {
        self.ragged.get(index).copied().unwrap_or(false)
    }
}

/// One `batch_input`: a model input Ferry fills from the batch rather than from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInputSpec {
    /// What it holds (Triton's `BatchInput.Kind`).
    pub kind: Kind,
    /// The model input it fills (`target_name`).
    pub target: String,
    /// INT32 or FP32.
    pub data_type: DataType,
    /// The config input it describes (`source_input`), by position.
    pub source: usize,
}

impl BatchInputSpec {
    /// The rank the model must declare for this input: the item shapes are a matrix, the rest vectors.
    pub fn rank(&self) -> usize {
        if self.kind == Kind::BatchItemShape { 2 } else { 1 }
    }
}

/// The ragged inputs and batch inputs of `config`, checked against its validated `inputs`; `None` when it
/// has neither. Every mistake names the field: a ragged input or batch input on a model that does not batch,
/// a reshaped ragged input, a batch input without exactly one target and source, a target that is also a
/// config input or another batch input's, an unknown source, a data type other than INT32 or FP32, and any
/// `batch_output` (Ferry splits outputs by rows only).
pub(super) fn ragged_inputs(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    max_batch_size: usize,
    source: ConfigSource<'_>,
) -> Result<Option<RaggedInputs>, Error> {
    if let Some(output) = config.batch_output.first() {
        let target = output.target_name.first().map_or("", String::as_str);
        return Err(source.error(
            &["batch_output"],
            format!(
                "batch_output (target '{target}') is not supported by Ferry: a batch's outputs are split between \
                 its requests by rows of the first dimension"
            ),
        ));
    }
    let ragged: Vec<bool> = config.input.iter().map(|i| i.allow_ragged_batch).collect();
    if !ragged.contains(&true) && config.batch_input.is_empty() {
        return Ok(None);
    }
    for (input, tensor) in config
        .input
        .iter()
        .zip(inputs)
        .filter(|(i, _)| i.allow_ragged_batch)
    {
        let quoted = format!("\"{}\"", input.name);
        if max_batch_size == 0 {
            return Err(source.error(
                &[&quoted, "allow_ragged_batch"],
                format!(
                    "input '{}' has allow_ragged_batch but the model does not batch (max_batch_size is 0)",
                    input.name
                ),
            ));
        }
        if tensor.reshape.is_some() {
            return Err(source.error(
                &[&quoted, "reshape"],
                format!(
                    "input '{}' has allow_ragged_batch and a reshape; a ragged input reaches the model as one \
                     flat tensor and cannot be reshaped",
                    input.name
                ),
            ));
        }
    }
    let mut batch_inputs: Vec<BatchInputSpec> = Vec::with_capacity(config.batch_input.len());
    for entry in &config.batch_input {
        let at = |message: String| source.error(&["batch_input"], message);
        let target = match entry.target_name.as_slice() {
            [target] if !target.is_empty() => target.clone(),
            given => {
                return Err(at(format!(
                    "batch_input needs exactly one target_name, got {given:?}"
                )));
            }
        };
        let kind = Kind::try_from(entry.kind)
            .map_err(|_| at(format!("batch_input '{target}' has unknown kind {}", entry.kind)))?;
        if max_batch_size == 0 {
            return Err(at(format!(
                "batch_input '{target}' needs a model that batches, but max_batch_size is 0"
            )));
        }
        if inputs.iter().any(|t| t.name == target) || batch_inputs.iter().any(|b| b.target == target) {
            return Err(at(format!(
                "batch_input target_name '{target}' is already an input of the model; a batch input's target \
                 is a model input Ferry fills, which requests do not send"
            )));
        }
        let data_type = ferry_proto::inference::DataType::try_from(entry.data_type)
            .ok()
            .and_then(DataType::from_config)
            .filter(|t| matches!(t, DataType::Int32 | DataType::Fp32))
            .ok_or_else(|| {
                at(format!(
                    "batch_input '{target}' has data_type {}; it must be TYPE_INT32 or TYPE_FP32",
                    ferry_proto::inference::DataType::try_from(entry.data_type)
                        .map_or("an unknown type", |t| t.as_str_name())
                ))
            })?;
        let source_index = match entry.source_input.as_slice() {
            [name] => inputs.iter().position(|t| &t.name == name).ok_or_else(|| {
                at(format!(
                    "batch_input '{target}' has source_input '{name}', which is not an input of the model"
                ))
            })?,
            given => {
                return Err(at(format!(
                    "batch_input '{target}' needs exactly one source_input, got {given:?}"
                )));
            }
        };
        batch_inputs.push(BatchInputSpec {
            kind,
            target,
            data_type,
            source: source_index,
        });
    }
    Ok(Some(RaggedInputs { ragged, batch_inputs }))
}

impl RaggedInputs {
    /// Checks the model file's side of ragged batching: each ragged input is a 1-D tensor in the model (the
    /// requests' elements, back to back), and each batch input's target is a model input of its data type
    /// and rank.
    pub(super) fn check_signature(
        &self,
        inputs: &[TensorSpec],
        signature: &ModelSignature,
        fail: impl Fn(String) -> Error,
    ) -> Result<(), Error> {
        for (tensor, _) in inputs.iter().zip(&self.ragged).filter(|(_, ragged)| **ragged) {
            if let Some(model) = signature.inputs.iter().find(|t| t.name == tensor.name)
                && model.shape.len() != 1
            {
                return Err(fail(format!(
                    "ragged input '{}' has shape {:?} in the model; a ragged input must be 1-D ([-1]): the \
                     elements of every request of a batch, back to back",
                    tensor.name, model.shape
                )));
            }
        }
        for batch_input in &self.batch_inputs {
            let Some(model) = signature.inputs.iter().find(|t| t.name == batch_input.target) else {
                return Err(fail(format!(
                    "batch_input target '{}' is not an input of the model",
                    batch_input.target
                )));
            };
            if model.data_type != Some(batch_input.data_type) {
                return Err(fail(format!(
                    "batch_input '{}' has data type {} in the config but {} in the model",
                    batch_input.target,
                    batch_input.data_type.to_config().as_str_name(),
                    model
                        .data_type
                        .map_or("an unsupported type", |t| t.to_config().as_str_name())
                )));
            }
            if model.shape.len() != batch_input.rank() {
                return Err(fail(format!(
                    "batch_input '{}' ({}) has shape {:?} in the model but Ferry gives it {} dimension(s)",
                    batch_input.target,
                    batch_input.kind.as_str_name(),
                    model.shape,
                    batch_input.rank()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelSpec, ModelTensor, complete_config, parse_model_config};

    const INPUTS: &str = "max_batch_size: 8\n\
        input [ { name: \"x\", data_type: TYPE_FP32, dims: [ -1 ], allow_ragged_batch: true } ]\n\
        output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 1 ] } ]\n";

    fn tensor(name: &str, data_type: DataType, shape: &[i64]) -> ModelTensor {
        ModelTensor {
            name: name.into(),
            data_type: Some(data_type),
            shape: shape.to_vec(),
            form: Default::default(),
        }
    }

    /// The spec of `text`, checked against a model with a flat `x`, a batch input `index` of `index_type`
    /// and shape `index_shape`, and an output `y` [-1, 1].
    fn spec(text: &str, index_type: DataType, index_shape: &[i64]) -> Result<ModelSpec, Error> {
        let mut config = parse_model_config(text, "m/config.pbtxt")?;
        complete_config(&mut config, None, "m/config.pbtxt")?;
        let source = ConfigSource {
            path: "m/config.pbtxt",
            text: Some(text),
        };
        let spec = ModelSpec::from_config(config, "m", source)?;
        let signature = ModelSignature {
            inputs: vec![
                tensor("x", DataType::Fp32, &[-1]),
                tensor("index", index_type, index_shape),
            ],
            outputs: vec![tensor("y", DataType::Fp32, &[-1, 1])],
        };
        spec.check_signature(&signature, "m/1/model.onnx")?;
        Ok(spec)
    }

    fn with_batch_input(entry: &str) -> String {
        format!("{INPUTS}batch_input [ {{ {entry} }} ]\n")
    }

    const GOOD: &str = "kind: BATCH_ACCUMULATED_ELEMENT_COUNT, target_name: \"index\", data_type: TYPE_INT32, source_input: \"x\"";

    #[test]
    fn a_ragged_input_with_a_batch_input_becomes_part_of_the_spec() {
        let spec = spec(&with_batch_input(GOOD), DataType::Int32, &[-1]).expect("valid");
        let ragged = spec.variable_lengths.ragged.expect("ragged");
        assert!(ragged.is_ragged(0));
        assert_eq!(
            ragged.batch_inputs,
            [BatchInputSpec {
                kind: Kind::BatchAccumulatedElementCount,
                target: "index".into(),
                data_type: DataType::Int32,
                source: 0,
            }]
        );
    }

    /// Each mistake fails the load with a message naming the field and what was given.
    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            (
                with_batch_input(&GOOD.replace("TYPE_INT32", "TYPE_INT64")),
                "data_type TYPE_INT64; it must be TYPE_INT32 or TYPE_FP32",
            ),
            (
                with_batch_input(&GOOD.replace("source_input: \"x\"", "source_input: \"z\"")),
                "source_input 'z', which is not an input",
            ),
            (
                with_batch_input(&GOOD.replace("target_name: \"index\"", "target_name: \"x\"")),
                "target_name 'x' is already an input",
            ),
            (
                with_batch_input(&GOOD.replace("target_name: \"index\",", "")),
                "exactly one target_name",
            ),
            (
                with_batch_input(&GOOD.replace("source_input: \"x\"", "source_input: [ \"x\", \"x\" ]")),
                "exactly one source_input",
            ),
            (
                with_batch_input(GOOD).replace("max_batch_size: 8", "max_batch_size: 0"),
                "allow_ragged_batch but the model does not batch",
            ),
            (
                format!(
                    "{}batch_output [ {{ target_name: \"y\", source_input: \"x\" }} ]\n",
                    with_batch_input(GOOD)
                ),
                "batch_output (target 'y') is not supported",
            ),
            (
                with_batch_input(GOOD).replace("dims: [ -1 ],", "dims: [ 4 ], reshape: { shape: [ 2, 2 ] },"),
                "allow_ragged_batch and a reshape",
            ),
        ];
        for (text, expected) in cases {
            let error = spec(&text, DataType::Int32, &[-1]).expect_err(expected);
            assert!(
                matches!(&error, Error::Config { line, .. } if *line > 0),
                "{expected}: {error:?}"
            );
            assert!(error.to_string().contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn the_model_file_must_agree() {
        let text = with_batch_input(GOOD);
        let error = spec(&text, DataType::Fp32, &[-1]).expect_err("type");
        assert!(
            error
                .to_string()
                .contains("batch_input 'index' has data type TYPE_INT32 in the config but TYPE_FP32"),
            "{error}"
        );
        let error = spec(&text, DataType::Int32, &[-1, 1]).expect_err("rank");
        assert!(
            error.to_string().contains("has shape [-1, 1] in the model"),
            "{error}"
        );
        let missing = with_batch_input(&GOOD.replace("\"index\"", "\"offsets\""));
        let error = spec(&missing, DataType::Int32, &[-1]).expect_err("no such model input");
        assert!(
            error
                .to_string()
                .contains("target 'offsets' is not an input of the model"),
            "{error}"
        );
        let item_shape =
            with_batch_input(&GOOD.replace("BATCH_ACCUMULATED_ELEMENT_COUNT", "BATCH_ITEM_SHAPE"));
        spec(&item_shape, DataType::Int32, &[-1, 1]).expect("item shapes are a matrix");
    }
}
