//! Completing a partial or missing `config.pbtxt` from the ONNX model itself, the way Triton's ONNX Runtime
//! backend auto-completes: tensors, data types, dims, and batching when every tensor has a dynamic first
//! dimension.

use ferry_proto::inference::{
    ModelConfig, ModelDynamicBatching, ModelInput, ModelOutput, ModelTensorReshape,
};

use super::classes::{self, TensorForm};
use crate::{DataType, Error};

/// The platform string Triton reports for ONNX Runtime models.
pub const ONNX_PLATFORM: &str = "onnxruntime_onnx";
/// The backend name Triton uses for ONNX Runtime.
pub const ONNX_BACKEND: &str = "onnxruntime";
/// The `max_batch_size` given to a model that supports batching but whose config does not say, unless
/// `--default-max-batch-size` says otherwise (Triton's `default-max-batch-size`, 4 there too).
pub const DEFAULT_MAX_BATCH_SIZE: i32 = 4;

/// A tensor as the ONNX model declares it: what auto-complete and config checks work from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTensor {
    /// The tensor's name in the graph.
    pub name: String,
    /// Its element type; `None` when Triton's protocol cannot carry it.
    pub data_type: Option<DataType>,
    /// Its full shape, batch dimension included, -1 for dynamic dimensions.
    pub shape: Vec<i64>,
    /// A tensor, or a value Ferry converts to one (or cannot serve).
    pub form: TensorForm,
}

impl ModelTensor {
    /// Why the tensor cannot be served, naming it and what would avoid it.
    pub fn unsupported(&self) -> String {
        match &self.form {
            TensorForm::Unsupported(what) => format!("model tensor '{}' is {what}", self.name),
            _ => format!(
                "model tensor '{}' has an element type Triton's protocol cannot carry",
                self.name
            ),
        }
    }
}

/// The tensors an ONNX model declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    /// Graph inputs, in order.
    pub inputs: Vec<ModelTensor>,
    /// Graph outputs, in order.
    pub outputs: Vec<ModelTensor>,
}

impl ModelSignature {
    /// Whether the model can take a batch: every input and output has a dynamic first dimension.
    pub fn supports_batching(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
    }
}

/// Whether auto-complete needs the model's signature: only when the config leaves inputs or outputs out.
pub fn needs_signature(config: &ModelConfig) -> bool {
    // An ensemble has no model file: it must list its tensors.
    !super::is_ensemble(config) && (config.input.is_empty() || config.output.is_empty())
}

/// Fills what `config` leaves out: platform and backend, and, given the model's `signature`, its tensors.
///
/// Tensors the config lists keep their settings; missing tensors, data types and dims come from the model.
/// When the config lists no tensors at all and the model supports batching, `max_batch_size` becomes
/// [`DEFAULT_MAX_BATCH_SIZE`]; a completed model that batches gets `dynamic_batching {}` unless another
/// scheduler is set.
pub fn complete_config(
    config: &mut ModelConfig,
    signature: Option<&ModelSignature>,
    path: &str,
) -> Result<(), Error> {
    complete_config_with(config, signature, path, DEFAULT_MAX_BATCH_SIZE)
}

/// [`complete_config`], giving a batching model whose config lists no tensors `default_max_batch_size`
/// (0: no batching) instead of [`DEFAULT_MAX_BATCH_SIZE`]. The outputs served as class probabilities get
/// their class labels as config parameters ([`classes::CLASS_LABELS_PREFIX`]).
pub fn complete_config_with(
    config: &mut ModelConfig,
    signature: Option<&ModelSignature>,
    path: &str,
    default_max_batch_size: i32,
) -> Result<(), Error> {
    if config.platform.is_empty() {
        config.platform = ONNX_PLATFORM.to_owned();
    }
    if config.backend.is_empty() && !super::is_ensemble(config) {
        config.backend = ONNX_BACKEND.to_owned();
    }
    let Some(signature) = signature else {
        // Like Triton's ONNX Runtime backend, a config that lists its inputs and outputs is taken as it is:
        // no scheduler is added to it.
        return Ok(());
    };
    complete_tensors(config, signature, path, default_max_batch_size)?;
    classes::record_labels(
        config,
        signature.outputs.iter().filter_map(|t| match &t.form {
            TensorForm::ClassProbabilities(labels) => Some((t.name.as_str(), labels.as_ref())),
            _ => None,
        }),
    );
    if config.max_batch_size > 1 && config.scheduling_choice.is_none() {
        config.scheduling_choice = Some(
            ferry_proto::inference::model_config::SchedulingChoice::DynamicBatching(
                ModelDynamicBatching::default(),
            ),
        );
    }
    Ok(())
}

fn complete_tensors(
    config: &mut ModelConfig,
    signature: &ModelSignature,
    path: &str,
    default_max_batch_size: i32,
) -> Result<(), Error> {
    let lists_tensors = !config.input.is_empty() || !config.output.is_empty();
    let batching = signature.supports_batching();
    if !lists_tensors && config.max_batch_size == 0 && batching {
        config.max_batch_size = default_max_batch_size;
    }
    if config.max_batch_size > 0 && !batching {
        return Err(Error::Config {
            path: path.to_owned(),
            line: 0,
            message: format!(
                "max_batch_size is {} but the model cannot batch: every input and output needs a dynamic first \
                 dimension ({})",
                config.max_batch_size,
                describe_first_dims(signature)
            ),
        });
    }
    let batched = config.max_batch_size > 0;
    // Tensors are taken from the model only for a side the config leaves empty.
    let (add_inputs, add_outputs) = (config.input.is_empty(), config.output.is_empty());
    // The sequence batcher's control and state tensors are Ferry's to fill and read, not the client's.
    let (fed, read) = super::sequence_tensor_names(config);
    for tensor in signature.inputs.iter().filter(|t| !fed.contains(&t.name)) {
        let (data_type, dims, reshape) = derive_tensor(tensor, batched, path)?;
        match config.input.iter_mut().find(|i| i.name == tensor.name) {
            Some(input) => fill_missing(&mut input.data_type, &mut input.dims, data_type, dims),
            None if add_inputs => config.input.push(ModelInput {
                name: tensor.name.clone(),
                data_type,
                dims,
                reshape,
                ..ModelInput::default()
            }),
            None => {}
        }
    }
    for tensor in &signature.outputs {
        let (data_type, dims, reshape) = derive_tensor(tensor, batched, path)?;
        match config.output.iter_mut().find(|o| o.name == tensor.name) {
            // A state output the config lists is the client's too: completed like any output.
            Some(output) => fill_missing(&mut output.data_type, &mut output.dims, data_type, dims),
            None if add_outputs && !read.contains(&tensor.name) => config.output.push(ModelOutput {
                name: tensor.name.clone(),
                data_type,
                dims,
                reshape,
                ..ModelOutput::default()
            }),
            None => {}
        }
    }
    Ok(())
}

fn fill_missing(data_type: &mut i32, dims: &mut Vec<i64>, derived_type: i32, derived_dims: Vec<i64>) {
    if *data_type == 0 {
        *data_type = derived_type;
    }
    if dims.is_empty() {
        *dims = derived_dims;
    }
}

/// The config form of a model tensor: data type, dims without the batch dimension, and the reshape that
/// stands in for a scalar per batch item.
fn derive_tensor(
    tensor: &ModelTensor,
    batched: bool,
    path: &str,
) -> Result<(i32, Vec<i64>, Option<ModelTensorReshape>), Error> {
    let data_type = tensor.data_type.ok_or_else(|| Error::Config {
        path: path.to_owned(),
        line: 0,
        message: tensor.unsupported(),
    })?;
    let dims: Vec<i64> = if batched {
        tensor.shape[1..].to_vec()
    } else {
        tensor.shape.clone()
    };
    // Triton does not allow empty dims: a scalar per item is `dims: [1]` reshaped to `[]`.
    let (dims, reshape) = if dims.is_empty() {
        (vec![1], Some(ModelTensorReshape { shape: Vec::new() }))
    } else {
        (dims, None)
    };
    Ok((data_type.to_config() as i32, dims, reshape))
}

fn describe_first_dims(signature: &ModelSignature) -> String {
    signature
        .inputs
        .iter()
        .chain(&signature.outputs)
        .map(|t| format!("'{}' has shape {:?}", t.name, t.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::model_config::SchedulingChoice;

    use super::*;
    use crate::config::ClassLabels;

    fn tensor(name: &str, data_type: DataType, shape: &[i64]) -> ModelTensor {
        ModelTensor {
            name: name.into(),
            data_type: Some(data_type),
            shape: shape.to_vec(),
            form: TensorForm::Tensor,
        }
    }

    fn batchable() -> ModelSignature {
        ModelSignature {
            inputs: vec![tensor("x", DataType::Fp32, &[-1, 8])],
            outputs: vec![
                tensor("y", DataType::Fp32, &[-1, 3]),
                tensor("s", DataType::Int64, &[-1]),
            ],
        }
    }

    #[test]
    fn an_empty_config_is_completed_with_batching() {
        let mut config = ModelConfig::default();
        complete_config(&mut config, Some(&batchable()), "c").expect("completes");
        assert_eq!(config.platform, ONNX_PLATFORM);
        assert_eq!(config.max_batch_size, DEFAULT_MAX_BATCH_SIZE);
        assert_eq!(config.input[0].name, "x");
        assert_eq!(config.input[0].dims, [8]);
        assert_eq!(config.output[0].dims, [3]);
        assert_eq!(config.output[1].dims, [1]);
        assert_eq!(
            config.output[1].reshape,
            Some(ModelTensorReshape { shape: vec![] })
        );
        assert!(matches!(
            config.scheduling_choice,
            Some(SchedulingChoice::DynamicBatching(_))
        ));
    }

    #[test]
    fn zipmap_outputs_become_probabilities_with_their_labels_and_the_default_is_a_setting() {
        let labels = ClassLabels::Strings(vec!["b".into(), "a".into()]);
        let signature = ModelSignature {
            inputs: vec![tensor("x", DataType::Fp32, &[-1, 4])],
            outputs: vec![
                tensor("label", DataType::Bytes, &[-1]),
                ModelTensor {
                    form: TensorForm::ClassProbabilities(std::sync::Arc::new(labels)),
                    ..tensor("probabilities", DataType::Fp32, &[-1, 2])
                },
            ],
        };
        let mut config = ModelConfig::default();
        complete_config_with(&mut config, Some(&signature), "c", 64).expect("completes");
        assert_eq!(config.max_batch_size, 64);
        assert_eq!(config.output[1].dims, [2]);
        assert_eq!(
            config.parameters["ferry.class_labels.probabilities"].string_value,
            r#"["b","a"]"#
        );
        let mut config = ModelConfig::default();
        complete_config_with(&mut config, Some(&signature), "c", 0).expect("completes");
        assert_eq!(config.max_batch_size, 0, "0 turns batching off");
        assert_eq!(config.output[1].dims, [-1, 2]);
    }

    #[test]
    fn unsupported_outputs_fail_with_their_reason() {
        let signature = ModelSignature {
            inputs: vec![tensor("x", DataType::Fp32, &[-1, 4])],
            outputs: vec![ModelTensor {
                name: "rows".into(),
                data_type: None,
                shape: Vec::new(),
                form: TensorForm::Unsupported("a Sequence<Tensor<f32>>, which ... zipmap".into()),
            }],
        };
        let error = complete_config(&mut ModelConfig::default(), Some(&signature), "c").expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("model tensor 'rows' is a Sequence<Tensor<f32>>"),
            "{error}"
        );
    }

    #[test]
    fn a_model_with_static_first_dims_is_completed_without_batching() {
        let signature = ModelSignature {
            inputs: vec![tensor("x", DataType::Int32, &[16])],
            outputs: vec![tensor("y", DataType::Int32, &[16])],
        };
        let mut config = ModelConfig::default();
        complete_config(&mut config, Some(&signature), "c").expect("completes");
        assert_eq!(config.max_batch_size, 0);
        assert_eq!(config.input[0].dims, [16]);
        assert!(config.scheduling_choice.is_none());
    }

    #[test]
    fn batching_asked_of_a_model_that_cannot_batch_fails() {
        let signature = ModelSignature {
            inputs: vec![tensor("x", DataType::Int32, &[16])],
            outputs: vec![tensor("y", DataType::Int32, &[16])],
        };
        let mut config = ModelConfig {
            max_batch_size: 8,
            ..ModelConfig::default()
        };
        let error = complete_config(&mut config, Some(&signature), "c").expect_err("cannot batch");
        assert!(error.to_string().contains("'x' has shape [16]"), "{error}");
    }

    #[test]
    fn a_config_listing_every_tensor_needs_no_signature() {
        let mut config = ModelConfig {
            max_batch_size: 8,
            input: vec![ModelInput::default()],
            output: vec![ModelOutput::default()],
            ..ModelConfig::default()
        };
        assert!(!needs_signature(&config));
        complete_config(&mut config, None, "c").expect("completes");
        assert_eq!(config.backend, ONNX_BACKEND);
        assert!(
            config.scheduling_choice.is_none(),
            "a complete config gets no scheduler it did not ask for"
        );
    }

    #[test]
    fn listed_tensors_keep_their_settings_and_gain_missing_fields() {
        let mut config = ModelConfig {
            max_batch_size: 2,
            input: vec![ModelInput {
                name: "x".into(),
                dims: vec![-1],
                ..ModelInput::default()
            }],
            ..ModelConfig::default()
        };
        complete_config(&mut config, Some(&batchable()), "c").expect("completes");
        assert_eq!(config.max_batch_size, 2);
        assert_eq!(config.input[0].dims, [-1]);
        assert_eq!(
            config.input[0].data_type(),
            ferry_proto::inference::DataType::TypeFp32
        );
        assert_eq!(
            config.output.len(),
            2,
            "outputs absent from the config come from the model"
        );
    }
}
