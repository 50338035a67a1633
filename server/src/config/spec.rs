//! The validated form of a model's configuration: what the server needs to check and run requests, built
//! once when the model loads so that requests never look at raw config fields.

use ferry_proto::inference::{
    ModelConfig, model_config::SchedulingChoice, model_instance_group::Kind,
    model_version_policy::PolicyChoice,
};

use ferry_batching::BatchingPolicy;

use super::{
    batching::batching_policy,
    complete::{ModelSignature, ONNX_BACKEND, ONNX_PLATFORM},
    pbtxt::line_of_offset,
};
use crate::{DataType, Error, classification::OutputLabels};

/// One input or output as the config declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name, shared by the protocol and the ONNX graph.
    pub name: String,
    /// Its element type.
    pub data_type: DataType,
    /// Its shape without the batch dimension; -1 for a dimension of any size.
    pub dims: Vec<i64>,
    /// The shape the model sees instead of `dims` (without the batch dimension), when the config reshapes.
    pub reshape: Option<Vec<i64>>,
    /// Whether a request may leave this input out.
    pub optional: bool,
}

/// Which version folders of a model are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` numerically highest versions.
    Latest(u32),
    /// Every version present.
    All,
    /// Exactly these versions, where present.
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The versions to serve out of those present, highest first.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        let mut sorted = available.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        match self {
            VersionPolicy::Latest(n) => sorted.into_iter().take(*n as usize).collect(),
            VersionPolicy::All => sorted,
            VersionPolicy::Specific(wanted) => sorted.into_iter().filter(|v| wanted.contains(v)).collect(),
        }
    }
}

/// Where a model's sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// On the CPU (`KIND_CPU`).
    #[default]
    Cpu,
    /// On this CUDA device (`KIND_GPU`): the load fails if ONNX Runtime cannot use it.
    Gpu(i32),
    /// On GPU 0 when ONNX Runtime can use CUDA there, otherwise on the CPU (`KIND_AUTO`, `KIND_MODEL`).
    Auto,
}

/// How many sessions of each model version run, where, and with how many ONNX Runtime threads each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstancePlan {
    /// Model instances (ONNX Runtime sessions), each on a thread of its own.
    pub count: usize,
    /// `intra_op_thread_count` from the config parameters; `None` lets Ferry share the cores out.
    pub intra_op_threads: Option<usize>,
    /// `inter_op_thread_count` from the config parameters.
    pub inter_op_threads: Option<usize>,
    /// Where the sessions run.
    pub placement: Placement,
}

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
}

/// Where a config came from, so that validation errors can name the file and the line.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSource<'a> {
    /// The path of `config.pbtxt` (or of the model folder when there is none).
    pub path: &'a str,
    /// The file's text, when there is a file.
    pub text: Option<&'a str>,
}

impl ConfigSource<'_> {
    /// A config error at the line of the last of `locate`, each searched after the previous one.
    pub(super) fn error(&self, locate: &[&str], message: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.to_owned(),
            line: self.text.map_or(0, |text| locate_line(text, locate)),
            message: message.into(),
        }
    }
}

/// The line of the last of `terms`, each searched after the previous one; 0 when the first is absent.
fn locate_line(text: &str, terms: &[&str]) -> usize {
    let mut at = None;
    let mut from = 0;
    for term in terms {
        match text[from..].find(term) {
            Some(found) => {
                at = Some(from + found);
                from += found + term.len();
            }
            None => break,
        }
    }
    at.map_or(0, |offset| line_of_offset(text, offset))
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
        if config.platform != ONNX_PLATFORM || config.backend != ONNX_BACKEND {
            return Err(source.error(
                &["platform", "backend"],
                format!(
                    "platform '{}' with backend '{}' is not served: Ferry runs '{ONNX_PLATFORM}' models on the \
                     '{ONNX_BACKEND}' backend",
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
            Some(SchedulingChoice::SequenceBatching(_)) => {
                return Err(source.error(
                    &["sequence_batching"],
                    "sequence_batching is not supported by Ferry",
                ));
            }
            Some(SchedulingChoice::EnsembleScheduling(_)) => {
                return Err(source.error(
                    &["ensemble_scheduling"],
                    "ensemble_scheduling is not supported by Ferry",
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
        let batching = batching_policy(&config, max_batch_size, source)?;
        let version_policy = VersionPolicy::from_config(&config);
        let instances = instance_plan(&config, source)?;
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
        })
    }

    /// Checks that the model file declares what the config says: every config tensor exists with the same
    /// type and a compatible shape, and every required model input is in the config.
    pub fn check_signature(&self, signature: &ModelSignature, model_path: &str) -> Result<(), Error> {
        let fail = |message: String| Error::ModelLoad(format!("{model_path}: {message}"));
        let batch = usize::from(self.max_batch_size > 0);
        let sides = [
            ("input", &self.inputs, &signature.inputs),
            ("output", &self.outputs, &signature.outputs),
        ];
        for (side, specs, tensors) in sides {
            for spec in specs {
                let Some(tensor) = tensors.iter().find(|t| t.name == spec.name) else {
                    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
                    return Err(fail(format!(
                        "config {side} '{}' is not an {side} of the model (model {side}s: {})",
                        spec.name,
                        names.join(", ")
                    )));
                };
                if tensor.data_type != Some(spec.data_type) {
                    return Err(fail(format!(
                        "{side} '{}' has data type {} in the config but {} in the model",
                        spec.name,
                        spec.data_type.to_config().as_str_name(),
                        tensor
                            .data_type
                            .map_or("an unsupported type", |t| t.to_config().as_str_name())
                    )));
                }
                let seen = spec.reshape.as_ref().unwrap_or(&spec.dims);
                let shapes_agree = tensor.shape.len() == seen.len() + batch
                    && tensor.shape[batch..]
                        .iter()
                        .zip(seen)
                        .all(|(model, config)| *model == -1 || model == config);
                if !shapes_agree {
                    let shown = if batch == 1 {
                        format!("[-1] + {seen:?}")
                    } else {
                        format!("{seen:?}")
                    };
                    return Err(fail(format!(
                        "{side} '{}' has shape {shown} in the config but {:?} in the model",
                        spec.name, tensor.shape
                    )));
                }
            }
        }
        if let Some(missing) = signature
            .inputs
            .iter()
            .find(|t| !self.inputs.iter().any(|s| s.name == t.name))
        {
            return Err(fail(format!(
                "model input '{}' is missing from the config",
                missing.name
            )));
        }
        Ok(())
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

fn tensor_spec(
    side: &str,
    name: &str,
    data_type: i32,
    dims: &[i64],
    reshape: Option<&ferry_proto::inference::ModelTensorReshape>,
    optional: bool,
    source: ConfigSource<'_>,
) -> Result<TensorSpec, Error> {
    let quoted = format!("\"{name}\"");
    let at = |field: &'static str| [quoted.as_str(), field];
    if name.is_empty() {
        return Err(source.error(&[side], format!("an {side} has no name")));
    }
    let data_type = ferry_proto::inference::DataType::try_from(data_type)
        .ok()
        .and_then(DataType::from_config)
        .ok_or_else(|| {
            source.error(
                &at("data_type"),
                format!("{side} '{name}' has no valid data_type"),
            )
        })?;
    if dims.is_empty() {
        return Err(source.error(
            &at("dims"),
            format!(
                "{side} '{name}' has empty dims; use dims: [ 1 ] with reshape: {{ shape: [ ] }} for a scalar"
            ),
        ));
    }
    if let Some(bad) = dims.iter().find(|d| **d == 0 || **d < -1) {
        return Err(source.error(
            &at("dims"),
            format!("{side} '{name}' has dimension {bad} in dims {dims:?}; dimensions are -1 or positive"),
        ));
    }
    let reshape = reshape.map(|r| r.shape.clone());
    if let Some(shape) = &reshape {
        let fixed = |d: &[i64]| d.iter().all(|x| *x > 0).then(|| d.iter().product::<i64>());
        if let (Some(from), Some(to)) = (fixed(dims), fixed(shape))
            && from != to
        {
            return Err(source.error(
                &at("reshape"),
                format!(
                    "{side} '{name}' reshapes dims {dims:?} ({from} elements) to {shape:?} ({to} elements)"
                ),
            ));
        }
    }
    Ok(TensorSpec {
        name: name.to_owned(),
        data_type,
        dims: dims.to_vec(),
        reshape,
        optional,
    })
}

fn check_unique(side: &str, tensors: &[TensorSpec], source: ConfigSource<'_>) -> Result<(), Error> {
    for (i, tensor) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|t| t.name == tensor.name) {
            let quoted = format!("\"{}\"", tensor.name);
            return Err(source.error(
                &[&quoted, &quoted],
                format!("{side} '{}' is declared twice", tensor.name),
            ));
        }
    }
    Ok(())
}

impl VersionPolicy {
    /// The policy a config asks for; Triton's default is the single highest version.
    pub fn from_config(config: &ModelConfig) -> Self {
        match config
            .version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.as_ref())
        {
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => {
                VersionPolicy::Specific(s.versions.iter().filter_map(|v| u64::try_from(*v).ok()).collect())
            }
            Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions.max(1)),
            None => VersionPolicy::Latest(1),
        }
    }
}

/// Triton's ONNX Runtime backend gives a CPU model two instances when the config names none.
const DEFAULT_CPU_INSTANCES: usize = 2;

fn instance_plan(config: &ModelConfig, source: ConfigSource<'_>) -> Result<InstancePlan, Error> {
    let mut count = 0usize;
    let mut placement = None;
    for group in &config.instance_group {
        let group_placement = match group.kind() {
            Kind::Cpu => Placement::Cpu,
            Kind::Gpu => Placement::Gpu(group.gpus.first().copied().unwrap_or(0)),
            Kind::Auto | Kind::Model => Placement::Auto,
        };
        if placement.is_some_and(|p| p != group_placement) {
            return Err(source.error(
                &["instance_group"],
                "instance groups of different kinds or GPUs in one model are not supported by Ferry; use one kind",
            ));
        }
        placement = Some(group_placement);
        let group_count = usize::try_from(group.count).map_err(|_| {
            source.error(
                &["count"],
                format!("instance_group count must be 0 or more, got {}", group.count),
            )
        })?;
        count += if group_count == 0 { 1 } else { group_count };
    }
    let thread_parameter = |key: &str| -> Result<Option<usize>, Error> {
        config
            .parameters
            .get(key)
            .map(|p| {
                p.string_value.trim().parse::<usize>().map_err(|_| {
                    source.error(
                        &[key],
                        format!("parameter {key} must be a whole number, got '{}'", p.string_value),
                    )
                })
            })
            .transpose()
    };
    Ok(InstancePlan {
        count: if count == 0 { DEFAULT_CPU_INSTANCES } else { count },
        intra_op_threads: thread_parameter("intra_op_thread_count")?.filter(|n| *n > 0),
        inter_op_threads: thread_parameter("inter_op_thread_count")?.filter(|n| *n > 0),
        // Like Triton, a model that names no instance group runs on a GPU when there is one.
        placement: placement.unwrap_or(Placement::Auto),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        complete::{ModelTensor, complete_config},
        pbtxt::parse_model_config,
    };

    fn spec_from(text: &str) -> Result<ModelSpec, Error> {
        let mut config = parse_model_config(text, "m/config.pbtxt")?;
        let signature = ModelSignature {
            inputs: vec![ModelTensor {
                name: "x".into(),
                data_type: Some(DataType::Fp32),
                shape: vec![-1, 4],
            }],
            outputs: vec![ModelTensor {
                name: "y".into(),
                data_type: Some(DataType::Fp32),
                shape: vec![-1, 4],
            }],
        };
        complete_config(&mut config, Some(&signature), "m/config.pbtxt")?;
        let spec = ModelSpec::from_config(
            config,
            "m",
            ConfigSource {
                path: "m/config.pbtxt",
                text: Some(text),
            },
        )?;
        spec.check_signature(&signature, "m/1/model.onnx")?;
        Ok(spec)
    }

    fn config_error(text: &str) -> (usize, String) {
        match spec_from(text) {
            Err(Error::Config { line, message, .. }) => (line, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

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
    fn impossible_dims_name_the_tensor_and_line() {
        let text = "max_batch_size: 2\ninput [\n  {\n    name: \"x\"\n    data_type: TYPE_FP32\n    dims: [ 0 ]\n  }\n]\n";
        let (line, message) = config_error(text);
        assert_eq!(line, 6);
        assert!(
            message.contains("'x'") && message.contains("dimension 0"),
            "{message}"
        );
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
    fn other_platforms_are_rejected() {
        let (_, message) = config_error("platform: \"tensorrt_plan\"\n");
        assert!(message.contains("tensorrt_plan"), "{message}");
    }

    #[test]
    fn instance_kinds_choose_where_sessions_run() {
        let placement = |groups: &str| {
            spec_from(&format!("max_batch_size: 2\ninstance_group [ {groups} ]\n"))
                .map(|s| s.instances.placement)
        };
        assert_eq!(placement("{ kind: KIND_CPU }").ok(), Some(Placement::Cpu));
        assert_eq!(
            placement("{ kind: KIND_GPU, gpus: [ 1 ] }").ok(),
            Some(Placement::Gpu(1))
        );
        assert_eq!(placement("{ kind: KIND_GPU }").ok(), Some(Placement::Gpu(0)));
        assert_eq!(placement("{ count: 2 }").ok(), Some(Placement::Auto));
        assert_eq!(
            spec_from("max_batch_size: 2\n")
                .map(|s| s.instances.placement)
                .ok(),
            Some(Placement::Auto)
        );
        let (line, message) =
            config_error("max_batch_size: 2\ninstance_group [ { kind: KIND_CPU }, { kind: KIND_GPU } ]\n");
        assert_eq!(line, 2);
        assert!(message.contains("one kind"), "{message}");
    }

    #[test]
    fn thread_parameters_must_be_numbers() {
        let text = "parameters { key: \"intra_op_thread_count\" value { string_value: \"many\" } }\n";
        let (_, message) = config_error(text);
        assert!(
            message.contains("intra_op_thread_count") && message.contains("many"),
            "{message}"
        );
        let spec = spec_from("parameters { key: \"intra_op_thread_count\" value { string_value: \"3\" } }\n")
            .expect("valid");
        assert_eq!(spec.instances.intra_op_threads, Some(3));
    }

    #[test]
    fn a_config_tensor_missing_from_the_model_fails_the_load() {
        let text = "max_batch_size: 2\ninput [ { name: \"z\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n";
        let error = spec_from(text).expect_err("z is not in the model");
        assert!(
            matches!(&error, Error::ModelLoad(m) if m.contains("'z'")),
            "{error}"
        );
    }

    #[test]
    fn a_type_mismatch_with_the_model_fails_the_load() {
        let text = "max_batch_size: 2\ninput [ { name: \"x\", data_type: TYPE_INT32, dims: [ 4 ] } ]\n";
        let error = spec_from(text).expect_err("x is FP32 in the model");
        assert!(error.to_string().contains("TYPE_INT32") && error.to_string().contains("TYPE_FP32"));
    }

    #[test]
    fn a_shape_mismatch_with_the_model_fails_the_load() {
        let text = "max_batch_size: 2\ninput [ { name: \"x\", data_type: TYPE_FP32, dims: [ 5 ] } ]\n";
        let error = spec_from(text).expect_err("x has 4 columns in the model");
        assert!(
            error.to_string().contains("[5]") && error.to_string().contains("[-1, 4]"),
            "{error}"
        );
    }

    #[test]
    fn version_policies_select_versions() {
        let present = [1, 3, 2, 10];
        assert_eq!(VersionPolicy::Latest(1).select(&present), [10]);
        assert_eq!(VersionPolicy::Latest(2).select(&present), [10, 3]);
        assert_eq!(VersionPolicy::All.select(&present), [10, 3, 2, 1]);
        assert_eq!(VersionPolicy::Specific(vec![2, 7]).select(&present), [2]);
    }
}
