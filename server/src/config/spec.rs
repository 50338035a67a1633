//! The validated form of a model's configuration: what the server needs to check and run requests, built
//! once when the model loads so that requests never look at raw config fields.

use std::sync::Arc;

use ferry_batching::BatchingPolicy;
use ferry_proto::inference::{ModelConfig, model_config::SchedulingChoice};

use super::{
    InstancePlan, TensorSpec, VersionPolicy,
    batching::{batching_policy, lone_requests_on_worker},
    buckets::{PAD_TO_BUCKET, bucket_padding},
    complete::{ONNX_BACKEND, ONNX_PLATFORM},
    drift::{DriftSettings, drift_settings},
    ensemble::{ENSEMBLE_PLATFORM, EnsembleStep, ensemble_steps, is_ensemble},
    instances::instance_plan,
    payload::{PayloadLogSettings, payload_log_settings},
    quality::{QualitySettings, quality_settings},
    ragged::{VariableLengths, ragged_inputs},
    sequence::{SequenceSpec, sequence_spec},
    source::ConfigSource,
    tensors::{check_unique, tensor_spec},
};
use crate::{Error, classification::OutputLabels};

/// A model's configuration after auto-complete and validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The model's name (its folder's name).
    pub name: String,
    /// 0 when the model does not batch; otherwise the largest batch a request may carry.
    pub max_batch_size: usize,
    /// Inputs in config order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in config order.
    pub outputs: Vec<TensorSpec>,
    /// Which versions are served.
    pub version_policy: VersionPolicy,
    /// Instances and threads per version.
    pub instances: InstancePlan,
    /// The model file inside each version folder.
    pub model_filename: String,
    /// How requests are queued and grouped into batches.
    pub batching: BatchingPolicy,
    /// The most memory one request may take once decoded (`--max-request-bytes`): checked while a request
    /// is parsed, before any shared memory is copied out.
    pub max_request_bytes: usize,
    /// The completed configuration, as the ModelConfig RPC reports it.
    pub config: ModelConfig,
    /// The class labels of outputs with a `label_filename`, read with the model's files when it loads
    /// (empty until then).
    pub labels: OutputLabels,
    /// Whether answers may come from, and go to, the server's response cache (`response_cache { enable:
    /// true }`): never for a model with state, whose answers depend on the requests before
    /// ([`ModelSpec::may_cache_responses`]).
    pub response_cache: bool,
    /// How the model's inputs are watched for drift (`ferry.drift.*` parameters; off by default).
    pub drift: DriftSettings,
    /// Which requests are logged with their payloads (`ferry.payload_log.*` parameters; off by default).
    pub payload_log: PayloadLogSettings,
    /// How predictions are joined with their true outcome and scored (`ferry.quality.*` parameters; off
    /// by default).
    pub quality: QualitySettings,
    /// How quick this model's lone runs must be, on average, for a handler to run a lone request on its
    /// async worker (`ferry.lone_requests_on_worker`); `None`, the default, keeps every run on instances.
    pub lone_requests_on_worker: Option<std::time::Duration>,
    /// The steps of an ensemble (`platform: "ensemble"`), checked as a dataflow graph; `None` for a model
    /// that runs on ONNX Runtime.
    pub ensemble: Option<Arc<Vec<EnsembleStep>>>,
    /// The sequence batcher's settings (`sequence_batching`), for a stateful model; `None` otherwise.
    pub sequence: Option<Arc<SequenceSpec>>,
    /// How requests whose inputs differ in length share batches: Triton's ragged inputs and batch inputs,
    /// or Ferry's padding to bucket lengths; neither by default.
    pub variable_lengths: VariableLengths,
}

impl ModelSpec {
    /// Validates a completed `config` of the model in folder `folder_name`.
    pub fn from_config(
        config: ModelConfig,
        folder_name: &str,
        source: ConfigSource<'_>,
    ) -> Result<Self, Error> {
        if !config.name.is_empty() && config.name != folder_name {
            return Err(source.error(
                &["name"],
                format!(
                    "name is '{}' but the model folder is '{folder_name}'",
                    config.name
                ),
            ));
        }
        let ensemble = is_ensemble(&config);
        if ensemble && !config.backend.is_empty() {
            return Err(source.error(
                &["backend"],
                format!("an ensemble has no backend, got '{}'", config.backend),
            ));
        }
        if !ensemble && (config.platform != ONNX_PLATFORM || config.backend != ONNX_BACKEND) {
            return Err(source.error(
                &["platform", "backend"],
                format!(
                    "platform '{}' with backend '{}' is not served: Ferry runs '{ONNX_PLATFORM}' models on the \
                     '{ONNX_BACKEND}' backend, and '{ENSEMBLE_PLATFORM}' pipelines of them",
                    config.platform, config.backend
                ),
            ));
        }
        let max_batch_size = usize::try_from(config.max_batch_size).map_err(|_| {
            source.error(
                &["max_batch_size"],
                format!("max_batch_size must be 0 or more, got {}", config.max_batch_size),
            )
        })?;
        let inputs = config
            .input
            .iter()
            .map(|i| {
                tensor_spec(
                    "input",
                    &i.name,
                    i.data_type,
                    &i.dims,
                    i.reshape.as_ref(),
                    i.optional,
                    source,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = config
            .output
            .iter()
            .map(|o| {
                tensor_spec(
                    "output",
                    &o.name,
                    o.data_type,
                    &o.dims,
                    o.reshape.as_ref(),
                    false,
                    source,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_unique("input", &inputs, source)?;
        check_unique("output", &outputs, source)?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(source.error(&[], "a model needs at least one input and one output"));
        }
        match &config.scheduling_choice {
            Some(SchedulingChoice::SequenceBatching(_)) if ensemble => {
                return Err(source.error(
                    &["sequence_batching"],
                    "sequence_batching is for a model that runs, not an ensemble",
                ));
            }
            Some(SchedulingChoice::EnsembleScheduling(_)) if !ensemble => {
                return Err(source.error(
                    &["ensemble_scheduling"],
                    format!("ensemble_scheduling needs platform '{ENSEMBLE_PLATFORM}'"),
                ));
            }
            Some(SchedulingChoice::DynamicBatching(_)) if max_batch_size == 0 => {
                return Err(source.error(
                    &["dynamic_batching"],
                    "dynamic_batching needs max_batch_size greater than 0, got 0",
                ));
            }
            _ => {}
        }
        let ensemble = if ensemble {
            Some(Arc::new(ensemble_steps(&config, &inputs, &outputs, source)?))
        } else {
            None
        };
        let variable_lengths = variable_lengths(&config, &inputs, &outputs, max_batch_size, source)?;
        let batching = batching_policy(&config, max_batch_size, source)?;
        let sequence = sequence_spec(&config, &inputs, max_batch_size, source)?.map(Arc::new);
        let version_policy = VersionPolicy::from_config(&config);
        let instances = instance_plan(&config, source)?;
        let response_cache = Self::may_cache_responses(&config);
        let drift = drift_settings(&config, source)?;
        let payload_log = payload_log_settings(&config, source)?;
        let quality = quality_settings(&config, &outputs, source)?;
        let lone_requests_on_worker = lone_requests_on_worker(&config, source)?;
        // Read by the repository before the model loads; checked here so that a bad value fails the load.
        super::load_on_demand(&config, source)?;
        let model_filename = if config.default_model_filename.is_empty() {
            "model.onnx".to_owned()
        } else {
            config.default_model_filename.clone()
        };
        Ok(ModelSpec {
            name: folder_name.to_owned(),
            max_batch_size,
            inputs,
            outputs,
            version_policy,
            instances,
            model_filename,
            batching,
            max_request_bytes: crate::limits::ResourceLimits::default().max_request_bytes,
            config: ModelConfig {
                name: folder_name.to_owned(),
                ..config
            },
            labels: OutputLabels::default(),
            response_cache,
            drift,
            payload_log,
            quality,
            lone_requests_on_worker,
            ensemble,
            sequence,
            variable_lengths,
        })
    }

    /// Whether `config` lets the response cache answer its requests: it asks for it (`response_cache {
    /// enable: true }`) and its answers depend on nothing but the request. A model with state (sequence
    /// batching: its answer depends on the sequence's earlier requests) never uses the cache, as in Triton,
    /// whose sequence batcher does not consult it; neither does a decoupled model, whose answers are a
    /// stream.
    pub fn may_cache_responses(config: &ModelConfig) -> bool {
        let stateful = matches!(
            config.scheduling_choice,
            Some(SchedulingChoice::SequenceBatching(_))
        );
        let decoupled = config
            .model_transaction_policy
            .as_ref()
            .is_some_and(|policy| policy.decoupled);
        config.response_cache.as_ref().is_some_and(|cache| cache.enable) && !stateful && !decoupled
    }

    /// The input named `name`, with its position.
    pub fn input(&self, name: &str) -> Option<(usize, &TensorSpec)> {
        self.inputs.iter().enumerate().find(|(_, t)| t.name == name)
    }

    /// The output named `name`, with its position.
    pub fn output(&self, name: &str) -> Option<(usize, &TensorSpec)> {
        self.outputs.iter().enumerate().find(|(_, t)| t.name == name)
    }
}

/// The ragged inputs and bucket padding of `config`; a model may use one or the other, not both.
fn variable_lengths(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    max_batch_size: usize,
    source: ConfigSource<'_>,
) -> Result<VariableLengths, Error> {
    let ragged = ragged_inputs(config, inputs, max_batch_size, source)?;
    let buckets = bucket_padding(config, inputs, outputs, max_batch_size, source)?;
    if ragged.is_some() && buckets.is_some() {
        return Err(source.error(
            &[PAD_TO_BUCKET],
            format!(
                "parameter {PAD_TO_BUCKET} cannot be combined with allow_ragged_batch or batch_input: a model takes \
                 requests of different lengths either flattened or padded"
            ),
        ));
    }
    Ok(VariableLengths {
        ragged: ragged.map(Arc::new),
        buckets: buckets.map(Arc::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{config_error, spec_from};

    #[test]
    fn a_valid_config_becomes_a_spec() {
        let spec = spec_from("max_batch_size: 8\ninstance_group [ { count: 3 } ]\n").expect("valid");
        assert_eq!(spec.max_batch_size, 8);
        assert_eq!(spec.inputs[0].dims, [4]);
        assert_eq!(spec.instances.count, 3);
        assert_eq!(spec.version_policy, VersionPolicy::Latest(1));
        assert_eq!(spec.model_filename, "model.onnx");
        assert_eq!(spec.config.name, "m");
    }

    #[test]
    fn negative_max_batch_size_names_its_line() {
        let (line, message) = config_error("name: \"m\"\nmax_batch_size: -2\n");
        assert_eq!(line, 2);
        assert!(message.contains("-2"), "{message}");
    }

    #[test]
    fn a_folder_name_mismatch_is_rejected() {
        let (line, message) = config_error("\nname: \"other\"\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("'other'") && message.contains("'m'"),
            "{message}"
        );
    }

    #[test]
    fn the_response_cache_is_on_only_where_the_config_enables_it_on_a_stateless_model() {
        assert!(!spec_from("").expect("valid").response_cache, "off by default");
        assert!(
            !spec_from("response_cache { enable: false }\n")
                .expect("valid")
                .response_cache
        );
        assert!(
            spec_from("response_cache { enable: true }\n")
                .expect("valid")
                .response_cache
        );
        // A field of response_cache Triton does not have is refused, as any unknown field.
        let (line, message) = config_error("\nresponse_cache { enable: true size: 3 }\n");
        assert_eq!(line, 2);
        assert!(message.contains("size"), "{message}");
        // State or a stream of answers: never cached, whatever the switch says.
        let stateful = crate::config::parse_model_config(
            "response_cache { enable: true }\nsequence_batching { }\n",
            "m/config.pbtxt",
        )
        .expect("parses");
        assert!(!ModelSpec::may_cache_responses(&stateful));
        let decoupled = crate::config::parse_model_config(
            "response_cache { enable: true }\nmodel_transaction_policy { decoupled: true }\n",
            "m/config.pbtxt",
        )
        .expect("parses");
        assert!(!ModelSpec::may_cache_responses(&decoupled));
    }

    #[test]
    fn other_platforms_are_rejected() {
        let (_, message) = config_error("platform: \"tensorrt_plan\"\n");
        assert!(message.contains("tensorrt_plan"), "{message}");
    }
}
