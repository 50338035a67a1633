//! `sequence_batching`: the validated form of a stateful model's sequence batcher settings, its control
//! inputs and its implicit state, and their check against the model file.
//!
//! Control and state tensors are inputs (and, for state, outputs) of the ONNX model that Ferry fills, not the
//! client: they are not listed in the config's `input`/`output` (auto-complete leaves them out), and a config
//! that lists one there is refused, naming it.

use std::time::Duration;

use ferry_proto::inference::{
    DataType as ConfigType, ModelConfig, ModelSequenceBatching,
    model_config::SchedulingChoice,
    model_sequence_batching::{Control, StrategyChoice, control::Kind, initial_state::StateData},
};

use super::{ModelSignature, TensorSpec, source::ConfigSource};
use crate::{DataType, Error};

/// Triton's default `max_sequence_idle_microseconds` (1 s), used when the config leaves it 0.
pub const DEFAULT_SEQUENCE_IDLE: Duration = Duration::from_secs(1);
/// The longest `max_sequence_idle_microseconds` Ferry accepts: one day.
pub const MAX_SEQUENCE_IDLE: Duration = Duration::from_secs(24 * 3600);
/// Live sequences of one model version at most (fewer when the implicit state of that many would pass
/// [`MAX_SEQUENCE_STATE_BYTES`]).
pub const MAX_LIVE_SEQUENCES: usize = 4096;
/// The implicit state all live sequences of one model version may hold together.
pub const MAX_SEQUENCE_STATE_BYTES: usize = 1 << 30;
/// Requests queued in one sequence at most.
pub const MAX_QUEUED_PER_SEQUENCE: usize = 1024;

/// Which signal a control input carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// 1 on a sequence's first request (and a restart).
    Start,
    /// 1 on its last request.
    End,
    /// 1 on a batch row that holds a request.
    Ready,
    /// The sequence's correlation id.
    CorrelationId,
}

/// One control input the sequence batcher fills for every batch row.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlTensor {
    /// The model input's name.
    pub name: String,
    /// What it carries.
    pub kind: ControlKind,
    /// Its element type.
    pub data_type: DataType,
    /// For START, END and READY: the little-endian bytes of the false and the true value.
    pub false_true: [Vec<u8>; 2],
}

/// Where a state's initial value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialState {
    /// Zeros (no `initial_state`, or `zero_data: true`).
    Zeros,
    /// Raw little-endian bytes in this file of the model folder's `initial_state/` folder, read at load.
    File(String),
}

/// One implicit state tensor: fed to `input_name`, taken back from `output_name` after each run.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// The model input that receives the state.
    pub input_name: String,
    /// The model output that gives the next state.
    pub output_name: String,
    /// Its element type.
    pub data_type: DataType,
    /// Its shape without the batch dimension (every dimension fixed).
    pub dims: Vec<i64>,
    /// Its value at a sequence's start.
    pub initial: InitialState,
}

impl StateTensor {
    /// The bytes of one row of this state.
    pub fn row_bytes(&self) -> usize {
        let elements: i64 = self.dims.iter().product();
        usize::try_from(elements)
            .unwrap_or(0)
            .saturating_mul(self.data_type.element_size().unwrap_or(0))
    }
}

/// How batches are formed, with the strategy's own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceStrategyConfig {
    /// `direct`: one batch slot per live sequence.
    Direct {
        /// `minimum_slot_utilization`.
        minimum_slot_utilization: f32,
    },
    /// `oldest`: dynamic batching over the oldest candidate sequences.
    Oldest {
        /// `max_candidate_sequences`.
        max_candidate_sequences: usize,
        /// `preferred_batch_size`.
        preferred_batch_sizes: Vec<usize>,
    },
}

/// A model's validated `sequence_batching`.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceSpec {
    /// The batching strategy.
    pub strategy: SequenceStrategyConfig,
    /// How long a ready request may wait for a fuller batch.
    pub max_queue_delay: Duration,
    /// How long a sequence may be idle before it is released.
    pub idle_timeout: Duration,
    /// The control inputs, in config order.
    pub controls: Vec<ControlTensor>,
    /// The implicit state tensors, in config order.
    pub states: Vec<StateTensor>,
}

impl SequenceSpec {
    /// The control and state tensors as model inputs, in the order the batcher appends them to a request.
    pub fn extra_inputs(&self) -> Vec<TensorSpec> {
        let controls = self.controls.iter().map(|control| TensorSpec {
            name: control.name.clone(),
            data_type: control.data_type,
            dims: vec![1],
            reshape: None,
            optional: false,
        });
        let states = self.states.iter().map(|state| TensorSpec {
            name: state.input_name.clone(),
            data_type: state.data_type,
            dims: state.dims.clone(),
            reshape: None,
            optional: false,
        });
        controls.chain(states).collect()
    }

    /// Live sequences this model's versions may hold: [`MAX_LIVE_SEQUENCES`], or fewer when their state
    /// would pass [`MAX_SEQUENCE_STATE_BYTES`].
    pub fn max_live_sequences(&self) -> usize {
        let per_sequence: usize = self.states.iter().map(StateTensor::row_bytes).sum();
        match MAX_SEQUENCE_STATE_BYTES.checked_div(per_sequence) {
            Some(fit) => fit.clamp(1, MAX_LIVE_SEQUENCES),
            None => MAX_LIVE_SEQUENCES,
        }
    }

    /// Checks the control and state tensors against the model file: each an input (state: also an output)
    /// of the model with the config's type and a shape that takes one row (`batch`: with a batch dimension).
    pub(super) fn check_signature(
        &self,
        signature: &ModelSignature,
        batch: bool,
        fail: impl Fn(String) -> Error,
    ) -> Result<(), Error> {
        let controls = self
            .controls
            .iter()
            .map(|c| ("control input", c.name.as_str(), c.data_type, vec![1], true));
        let state_inputs = self.states.iter().map(|s| {
            (
                "state input_name",
                s.input_name.as_str(),
                s.data_type,
                s.dims.clone(),
                true,
            )
        });
        let state_outputs = self.states.iter().map(|s| {
            (
                "state output_name",
                s.output_name.as_str(),
                s.data_type,
                s.dims.clone(),
                false,
            )
        });
        for (what, name, data_type, dims, input) in controls.chain(state_inputs).chain(state_outputs) {
            let tensors = if input {
                &signature.inputs
            } else {
                &signature.outputs
            };
            let side = if input { "input" } else { "output" };
            let Some(tensor) = tensors.iter().find(|t| t.name == name) else {
                let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
                return Err(fail(format!(
                    "sequence_batching {what} '{name}' is not an {side} of the model (model {side}s: {})",
                    names.join(", ")
                )));
            };
            if tensor.data_type != Some(data_type) {
                return Err(fail(format!(
                    "sequence_batching {what} '{name}' has data type {} in the config but {} in the model",
                    data_type.to_config().as_str_name(),
                    tensor
                        .data_type
                        .map_or("an unsupported type", |t| t.to_config().as_str_name())
                )));
            }
            let batch_dims = usize::from(batch);
            let fits = tensor.shape.len() == dims.len() + batch_dims
                && tensor.shape[batch_dims..]
                    .iter()
                    .zip(&dims)
                    .all(|(model, config)| *model == -1 || model == config);
            if !fits {
                return Err(fail(format!(
                    "sequence_batching {what} '{name}' needs shape {}{dims:?} but the model has {:?}",
                    if batch { "[-1] + " } else { "" },
                    tensor.shape
                )));
            }
        }
        Ok(())
    }
}

/// The `sequence_batching` of `config`, if it has one.
fn sequence_batching(config: &ModelConfig) -> Option<&ModelSequenceBatching> {
    match &config.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(batching)) => Some(batching),
        _ => None,
    }
}

/// The names of the model inputs and outputs that `config`'s sequence batcher feeds and reads, which
/// auto-complete must not offer to clients.
pub(crate) fn sequence_tensor_names(config: &ModelConfig) -> (Vec<String>, Vec<String>) {
    let Some(batching) = sequence_batching(config) else {
        return (Vec::new(), Vec::new());
    };
    let inputs = batching
        .control_input
        .iter()
        .map(|c| c.name.clone())
        .chain(batching.state.iter().map(|s| s.input_name.clone()))
        .collect();
    let outputs = batching.state.iter().map(|s| s.output_name.clone()).collect();
    (inputs, outputs)
}

/// Validates `config`'s `sequence_batching`, if any, against its client `inputs`.
pub(super) fn sequence_spec(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    max_batch_size: usize,
    source: ConfigSource<'_>,
) -> Result<Option<SequenceSpec>, Error> {
    let Some(batching) = sequence_batching(config) else {
        return Ok(None);
    };
    let at = |field: &str| ["sequence_batching".to_owned(), field.to_owned()];
    let error = |field: &str, message: String| {
        let path = at(field);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        source.error(&path, format!("sequence_batching: {message}"))
    };
    if batching.iterative_sequence {
        return Err(error(
            "iterative_sequence",
            "iterative_sequence is not supported by Ferry".to_owned(),
        ));
    }
    let idle = match batching.max_sequence_idle_microseconds {
        0 => DEFAULT_SEQUENCE_IDLE,
        micros => Duration::from_micros(micros),
    };
    if idle > MAX_SEQUENCE_IDLE {
        return Err(error(
            "max_sequence_idle_microseconds",
            format!(
                "max_sequence_idle_microseconds is at most {} (one day), got {}",
                MAX_SEQUENCE_IDLE.as_micros(),
                batching.max_sequence_idle_microseconds
            ),
        ));
    }
    let (strategy, delay) = match &batching.strategy_choice {
        None => (
            SequenceStrategyConfig::Direct {
                minimum_slot_utilization: 0.0,
            },
            0,
        ),
        Some(StrategyChoice::Direct(direct)) => {
            let utilization = direct.minimum_slot_utilization;
            if !(0.0..=1.0).contains(&utilization) {
                return Err(error(
                    "minimum_slot_utilization",
                    format!("direct minimum_slot_utilization must be between 0 and 1, got {utilization}"),
                ));
            }
            (
                SequenceStrategyConfig::Direct {
                    minimum_slot_utilization: utilization,
                },
                direct.max_queue_delay_microseconds,
            )
        }
        Some(StrategyChoice::Oldest(oldest)) => {
            let candidates = usize::try_from(oldest.max_candidate_sequences)
                .ok()
                .filter(|n| (1..=MAX_LIVE_SEQUENCES).contains(n))
                .ok_or_else(|| {
                    error(
                        "max_candidate_sequences",
                        format!(
                            "oldest max_candidate_sequences must be 1 to {MAX_LIVE_SEQUENCES}, got {}",
                            oldest.max_candidate_sequences
                        ),
                    )
                })?;
            let limit = max_batch_size.max(1);
            let preferred = oldest
                .preferred_batch_size
                .iter()
                .map(|&size| {
                    usize::try_from(size)
                        .ok()
                        .filter(|s| (1..=limit).contains(s))
                        .ok_or_else(|| {
                            error(
                                "preferred_batch_size",
                                format!("oldest preferred_batch_size must be 1 to {limit}, got {size}"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if oldest.preserve_ordering {
                return Err(error(
                    "preserve_ordering",
                    "oldest preserve_ordering is not supported by Ferry (each sequence's responses are \
                     always in order)"
                        .to_owned(),
                ));
            }
            (
                SequenceStrategyConfig::Oldest {
                    max_candidate_sequences: candidates,
                    preferred_batch_sizes: preferred,
                },
                oldest.max_queue_delay_microseconds,
            )
        }
    };
    let max_queue_delay = Duration::from_micros(delay);
    if max_queue_delay > MAX_SEQUENCE_IDLE {
        return Err(error(
            "max_queue_delay_microseconds",
            format!("max_queue_delay_microseconds is at most one day, got {delay}"),
        ));
    }
    let mut controls: Vec<ControlTensor> = Vec::new();
    for control_input in &batching.control_input {
        let name = &control_input.name;
        if name.is_empty() {
            return Err(error("control_input", "a control_input has no name".to_owned()));
        }
        let [control] = control_input.control.as_slice() else {
            return Err(error(
                name,
                format!(
                    "control_input '{name}' must have exactly one control, got {}",
                    control_input.control.len()
                ),
            ));
        };
        let control = control_tensor(name, control).map_err(|message| error(name, message))?;
        if let Some(twice) = controls
            .iter()
            .find(|c| c.name == control.name || c.kind == control.kind)
        {
            return Err(error(
                name,
                format!(
                    "control_input '{name}' repeats the name or the kind of control_input '{}'",
                    twice.name
                ),
            ));
        }
        controls.push(control);
    }
    let mut states: Vec<StateTensor> = Vec::new();
    for state in &batching.state {
        let state = state_tensor(state).map_err(|message| error(&state.input_name, message))?;
        states.push(state);
    }
    // Ferry fills these inputs: a client must not, so the config must not list them as inputs.
    let fed = controls
        .iter()
        .map(|c| c.name.as_str())
        .chain(states.iter().map(|s| s.input_name.as_str()));
    let mut seen: Vec<&str> = Vec::new();
    for name in fed {
        if inputs.iter().any(|input| input.name == name) {
            return Err(error(
                name,
                format!(
                    "'{name}' is a control or state input that Ferry fills, so it must not be listed in the \
                     config's input"
                ),
            ));
        }
        if seen.contains(&name) {
            return Err(error(
                name,
                format!("'{name}' is fed twice (a control and a state, or two states)"),
            ));
        }
        seen.push(name);
    }
    Ok(Some(SequenceSpec {
        strategy,
        max_queue_delay,
        idle_timeout: idle,
        controls,
        states,
    }))
}

fn control_tensor(name: &str, control: &Control) -> Result<ControlTensor, String> {
    let kind = match control.kind() {
        Kind::ControlSequenceStart => ControlKind::Start,
        Kind::ControlSequenceEnd => ControlKind::End,
        Kind::ControlSequenceReady => ControlKind::Ready,
        Kind::ControlSequenceCorrid => ControlKind::CorrelationId,
    };
    if kind == ControlKind::CorrelationId {
        let data_type = match control.data_type() {
            ConfigType::TypeUint64 => DataType::Uint64,
            ConfigType::TypeInt64 => DataType::Int64,
            ConfigType::TypeUint32 => DataType::Uint32,
            ConfigType::TypeInt32 => DataType::Int32,
            ConfigType::TypeString => DataType::Bytes,
            other => {
                return Err(format!(
                    "CONTROL_SEQUENCE_CORRID of '{name}' needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, \
                     TYPE_INT32 or TYPE_STRING, got {}",
                    other.as_str_name()
                ));
            }
        };
        return Ok(ControlTensor {
            name: name.to_owned(),
            kind,
            data_type,
            false_true: [Vec::new(), Vec::new()],
        });
    }
    let given = [
        !control.int32_false_true.is_empty(),
        !control.fp32_false_true.is_empty(),
        !control.bool_false_true.is_empty(),
    ];
    let pair = |len: usize| {
        if len == 2 {
            Ok(())
        } else {
            Err(format!(
                "the false_true values of '{name}' must be 2 (false, then true), got {len}"
            ))
        }
    };
    let (data_type, false_true) = match given {
        [true, false, false] => {
            pair(control.int32_false_true.len())?;
            let v = &control.int32_false_true;
            (
                DataType::Int32,
                [v[0].to_le_bytes().to_vec(), v[1].to_le_bytes().to_vec()],
            )
        }
        [false, true, false] => {
            pair(control.fp32_false_true.len())?;
            let v = &control.fp32_false_true;
            (
                DataType::Fp32,
                [v[0].to_le_bytes().to_vec(), v[1].to_le_bytes().to_vec()],
            )
        }
        [false, false, true] => {
            pair(control.bool_false_true.len())?;
            let v = &control.bool_false_true;
            (DataType::Bool, [vec![u8::from(v[0])], vec![u8::from(v[1])]])
        }
        _ => {
            return Err(format!(
                "control '{name}' must set exactly one of int32_false_true, fp32_false_true, bool_false_true"
            ));
        }
    };
    Ok(ControlTensor {
        name: name.to_owned(),
        kind,
        data_type,
        false_true,
    })
}

fn state_tensor(
    state: &ferry_proto::inference::model_sequence_batching::State,
) -> Result<StateTensor, String> {
    let name = &state.input_name;
    if state.input_name.is_empty() || state.output_name.is_empty() {
        return Err("a state needs an input_name and an output_name".to_owned());
    }
    let data_type = ConfigType::try_from(state.data_type)
        .ok()
        .and_then(DataType::from_config)
        .filter(|t| t.element_size().is_some())
        .ok_or_else(|| format!("state '{name}' needs a fixed-size data_type (not TYPE_STRING)"))?;
    if state.dims.is_empty() || state.dims.iter().any(|d| *d < 1) {
        return Err(format!(
            "state '{name}' has dims {:?}; Ferry needs fixed, positive dimensions",
            state.dims
        ));
    }
    let initial = match state.initial_state.as_slice() {
        [] => InitialState::Zeros,
        [initial] => {
            if initial.data_type != state.data_type || initial.dims != state.dims {
                return Err(format!(
                    "initial_state of state '{name}' must have the state's data_type and dims ({:?})",
                    state.dims
                ));
            }
            match &initial.state_data {
                Some(StateData::ZeroData(true)) => InitialState::Zeros,
                Some(StateData::DataFile(file))
                    if !file.is_empty() && !file.contains(['/', '\\']) && !file.starts_with('.') =>
                {
                    InitialState::File(file.clone())
                }
                _ => {
                    return Err(format!(
                        "initial_state of state '{name}' needs zero_data: true or data_file naming a file of \
                         the model's initial_state folder"
                    ));
                }
            }
        }
        more => {
            return Err(format!(
                "state '{name}' has {} initial_state entries; Ferry takes at most one",
                more.len()
            ));
        }
    };
    let tensor = StateTensor {
        input_name: state.input_name.clone(),
        output_name: state.output_name.clone(),
        data_type,
        dims: state.dims.clone(),
        initial,
    };
    if tensor.row_bytes() == 0 || tensor.row_bytes() > MAX_SEQUENCE_STATE_BYTES {
        return Err(format!(
            "state '{name}' of dims {:?} takes {} bytes a sequence; at most {MAX_SEQUENCE_STATE_BYTES}",
            state.dims,
            tensor.row_bytes()
        ));
    }
    Ok(tensor)
}

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
