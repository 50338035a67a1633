//! The `ensemble_scheduling` block of an ensemble (`platform: "ensemble"`), checked on its own: every step
//! names a model and maps tensors, every tensor a step consumes is produced once (by the request or by one
//! step), every ensemble output is produced, and the steps form no cycle. What needs the member models
//! (their tensors, types, shapes and batch sizes) is checked when the ensemble loads, against the members
//! then serving (`crate::ensemble::check_members`).

use std::collections::{BTreeMap, BTreeSet};

use ferry_proto::inference::{ModelConfig, model_config::SchedulingChoice};

use super::{TensorSpec, source::ConfigSource};
use crate::Error;

/// Triton's platform name for an ensemble.
pub const ENSEMBLE_PLATFORM: &str = "ensemble";
/// The most steps an ensemble may have.
pub const MAX_ENSEMBLE_STEPS: usize = 64;
/// The most distinct tensor names an ensemble may use (its inputs, outputs and intermediate tensors).
pub const MAX_ENSEMBLE_TENSORS: usize = 256;

/// One step of an ensemble: a member model and how its tensors map to the ensemble's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsembleStep {
    /// The member model.
    pub model_name: String,
    /// The member's version; `None` for its highest ready version (`model_version: -1`).
    pub model_version: Option<u64>,
    /// Member input name → ensemble tensor name.
    pub input_map: BTreeMap<String, String>,
    /// Member output name → ensemble tensor name.
    pub output_map: BTreeMap<String, String>,
}

impl EnsembleStep {
    /// How errors name the step: its position and its model.
    pub fn describe(&self, index: usize) -> String {
        format!("step {index} (model '{}')", self.model_name)
    }

    /// The version string a request to the member carries: empty for the highest ready version.
    pub fn version_string(&self) -> String {
        self.model_version.map(|v| v.to_string()).unwrap_or_default()
    }
}

/// Whether `config` describes an ensemble.
pub fn is_ensemble(config: &ModelConfig) -> bool {
    config.platform == ENSEMBLE_PLATFORM
}

/// The steps of the ensemble `config`, whose inputs and outputs are `inputs` and `outputs`, checked as a
/// dataflow graph.
pub(super) fn ensemble_steps(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    source: ConfigSource<'_>,
) -> Result<Vec<EnsembleStep>, Error> {
    let Some(SchedulingChoice::EnsembleScheduling(scheduling)) = &config.scheduling_choice else {
        return Err(source.error(
            &["platform"],
            "an ensemble needs an ensemble_scheduling block with its steps",
        ));
    };
    if !config.instance_group.is_empty() {
        return Err(source.error(
            &["instance_group"],
            "an ensemble has no instance_group: its steps run on their own models' instances",
        ));
    }
    if !config.model_warmup.is_empty() {
        return Err(source.error(&["model_warmup"], "an ensemble has no model_warmup"));
    }
    if config.response_cache.as_ref().is_some_and(|cache| cache.enable) {
        // Ferry's cache keys an answer by the model version that gave it; an ensemble's answer also depends
        // on its members, which reload on their own, so a cached answer could outlive the models behind it.
        return Err(source.error(
            &["response_cache"],
            "response_cache on an ensemble is not supported by Ferry: enable it on the members instead",
        ));
    }
    if scheduling.max_inflight_requests != 0 {
        return Err(source.error(
            &["max_inflight_requests"],
            format!(
                "max_inflight_requests is not supported by Ferry (0 = unlimited), got {}",
                scheduling.max_inflight_requests
            ),
        ));
    }
    if scheduling.step.is_empty() {
        return Err(source.error(&["ensemble_scheduling"], "an ensemble needs at least one step"));
    }
    if scheduling.step.len() > MAX_ENSEMBLE_STEPS {
        return Err(source.error(
            &["ensemble_scheduling"],
            format!(
                "an ensemble may have at most {MAX_ENSEMBLE_STEPS} steps, got {}",
                scheduling.step.len()
            ),
        ));
    }
    let mut steps = Vec::with_capacity(scheduling.step.len());
    // Ensemble tensor → what produces it: the request (None) or a step.
    let mut producers: BTreeMap<&str, Option<usize>> =
        inputs.iter().map(|input| (input.name.as_str(), None)).collect();
    for (index, step) in scheduling.step.iter().enumerate() {
        let at = |what: &str| format!("step {index} (model '{}'): {what}", step.model_name);
        if step.model_name.is_empty() {
            return Err(source.error(&["step"], format!("step {index} has no model_name")));
        }
        let locate = ["step", step.model_name.as_str()];
        if !step.model_namespace.is_empty() {
            return Err(source.error(&locate, at("model_namespace is not supported by Ferry")));
        }
        let model_version = match step.model_version {
            -1 => None,
            v if v >= 1 => Some(v.unsigned_abs()),
            v => {
                return Err(source.error(
                    &locate,
                    at(&format!(
                        "model_version must be -1 (latest) or 1 or more, got {v}"
                    )),
                ));
            }
        };
        if step.input_map.is_empty() || step.output_map.is_empty() {
            return Err(source.error(&locate, at("input_map and output_map must not be empty")));
        }
        for tensor in step.output_map.values() {
            match producers.insert(tensor.as_str(), Some(index)) {
                None => {}
                Some(None) => {
                    return Err(source.error(
                        &locate,
                        at(&format!(
                            "output_map writes '{tensor}', which is an ensemble input"
                        )),
                    ));
                }
                Some(Some(first)) => {
                    return Err(source.error(
                        &locate,
                        at(&format!(
                            "tensor '{tensor}' is already produced by step {first}: an ensemble tensor may \
                             appear in output maps only once"
                        )),
                    ));
                }
            }
        }
        steps.push(EnsembleStep {
            model_name: step.model_name.clone(),
            model_version,
            input_map: step
                .input_map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            output_map: step
                .output_map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
    }
    let mut names: BTreeSet<&str> = producers.keys().copied().collect();
    names.extend(
        steps
            .iter()
            .flat_map(|s| s.input_map.values().map(String::as_str)),
    );
    names.extend(outputs.iter().map(|o| o.name.as_str()));
    if names.len() > MAX_ENSEMBLE_TENSORS {
        return Err(source.error(
            &["ensemble_scheduling"],
            format!(
                "an ensemble may use at most {MAX_ENSEMBLE_TENSORS} distinct tensors, got {}",
                names.len()
            ),
        ));
    }
    for (index, step) in steps.iter().enumerate() {
        for (input, tensor) in &step.input_map {
            if !producers.contains_key(tensor.as_str()) {
                return Err(source.error(
                    &["step", step.model_name.as_str(), tensor.as_str()],
                    format!(
                        "{}: input '{input}' reads tensor '{tensor}', which neither an ensemble input nor \
                         any step's output_map produces",
                        step.describe(index)
                    ),
                ));
            }
        }
    }
    for output in outputs {
        if !matches!(producers.get(output.name.as_str()), Some(Some(_))) {
            return Err(source.error(
                &["output", output.name.as_str()],
                format!(
                    "ensemble output '{}' is produced by no step's output_map",
                    output.name
                ),
            ));
        }
    }
    if let Some(stuck) = cycle(&steps, &producers) {
        return Err(source.error(
            &["ensemble_scheduling"],
            format!(
                "the steps form a cycle: {} waits, through its inputs, on its own outputs",
                steps[stuck].describe(stuck)
            ),
        ));
    }
    Ok(steps)
}

/// A step that can never run because its inputs depend on its own outputs, if any: every consumed tensor
/// has a producer (checked before), so a step left over once every runnable step has run is on a cycle or
/// waits on one.
fn cycle(steps: &[EnsembleStep], producers: &BTreeMap<&str, Option<usize>>) -> Option<usize> {
    let mut done = vec![false; steps.len()];
    loop {
        let runnable: Vec<usize> = (0..steps.len())
            .filter(|&i| !done[i])
            .filter(|&i| {
                steps[i]
                    .input_map
                    .values()
                    .all(|tensor| match producers.get(tensor.as_str()) {
                        Some(Some(producer)) => done[*producer],
                        _ => true,
                    })
            })
            .collect();
        if runnable.is_empty() {
            return done.iter().position(|d| !d);
        }
        for i in runnable {
            done[i] = true;
        }
    }
}
