//! Ensembles (Triton's `platform: "ensemble"`): a dataflow graph of served models answering as one model.
//!
//! The config's steps are checked on their own when the config is read (`config::ensemble`: each tensor
//! produced once, every consumed tensor and every ensemble output produced, no cycle). What depends on the
//! members is checked here, against the members serving at the time ([`check_members`]): when the ensemble
//! loads, and again whenever the ensemble is resolved, so that a member unloaded or reloaded with other
//! tensors makes the ensemble unavailable with the reason, as Triton makes it UNAVAILABLE.
//!
//! [`infer`] executes a request: each step is a request to its member through the same path a client request
//! takes (resolved by name and version, parsed against the member's config, answered by the response cache
//! or the member's own batcher), started as soon as its inputs exist, with independent steps in flight
//! together. Tensors pass between steps as `Bytes`, without copies.

mod run;

use std::{collections::BTreeMap, sync::Arc};

pub use run::{MAX_ENSEMBLE_DEPTH, infer};

use crate::{
    DataType,
    config::{EnsembleStep, ModelSpec, TensorSpec},
};

/// A member's spec as the ensemble would use it now, or why it cannot.
pub type MemberLookup<'a> = &'a dyn Fn(&str, Option<u64>) -> Result<Arc<ModelSpec>, String>;

/// The type and full shape (batch dimension included, -1 for any size) of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Typed {
    data_type: DataType,
    shape: Vec<i64>,
}

impl Typed {
    fn of(tensor: &TensorSpec, max_batch_size: usize) -> Self {
        let mut shape = Vec::with_capacity(tensor.dims.len() + 1);
        if max_batch_size > 0 {
            shape.push(-1);
        }
        shape.extend_from_slice(&tensor.dims);
        Typed {
            data_type: tensor.data_type,
            shape,
        }
    }

    fn fits(&self, other: &Typed) -> bool {
        self.data_type == other.data_type
            && self.shape.len() == other.shape.len()
            && self
                .shape
                .iter()
                .zip(&other.shape)
                .all(|(a, b)| a == b || *a == -1 || *b == -1)
    }
}

impl std::fmt::Display for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.data_type.wire_name(), self.shape)
    }
}

/// Checks the ensemble `spec` against its members as `lookup` finds them: each member serves, allows the
/// ensemble's batch size, has every tensor its maps name, has every input fed, and each edge (ensemble
/// input → step input, step output → step input, step output → ensemble output) joins tensors of one type
/// and compatible shapes. The error names the step and the tensor.
pub fn check_members(
    spec: &ModelSpec,
    steps: &[EnsembleStep],
    lookup: MemberLookup<'_>,
) -> Result<(), String> {
    let mut tensors: BTreeMap<&str, (Typed, String)> = spec
        .inputs
        .iter()
        .map(|input| {
            (
                input.name.as_str(),
                (
                    Typed::of(input, spec.max_batch_size),
                    format!("ensemble input '{}'", input.name),
                ),
            )
        })
        .collect();
    let mut members = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let at = step.describe(index);
        let member = lookup(&step.model_name, step.model_version).map_err(|why| format!("{at}: {why}"))?;
        if spec.max_batch_size > member.max_batch_size {
            return Err(format!(
                "{at}: ensemble '{}' allows maximum batch size {}, but model '{}' only allows {}",
                spec.name, spec.max_batch_size, step.model_name, member.max_batch_size
            ));
        }
        for (output, tensor) in &step.output_map {
            let Some((_, produced)) = member.output(output) else {
                return Err(format!(
                    "{at}: output_map names output '{output}', which model '{}' does not have",
                    step.model_name
                ));
            };
            tensors.insert(
                tensor.as_str(),
                (
                    Typed::of(produced, member.max_batch_size),
                    format!("output '{output}' of {at}"),
                ),
            );
        }
        members.push(member);
    }
    for ((index, step), member) in steps.iter().enumerate().zip(&members) {
        let at = step.describe(index);
        for input in member.inputs.iter().filter(|i| !i.optional) {
            if !step.input_map.contains_key(&input.name) {
                return Err(format!(
                    "{at}: input '{}' of model '{}' is fed by no input_map entry",
                    input.name, step.model_name
                ));
            }
        }
        for (input, tensor) in &step.input_map {
            let Some((_, wanted)) = member.input(input) else {
                return Err(format!(
                    "{at}: input_map names input '{input}', which model '{}' does not have",
                    step.model_name
                ));
            };
            let wanted = Typed::of(wanted, member.max_batch_size);
            // Every consumed tensor has a producer: the config check saw to it.
            if let Some((given, from)) = tensors.get(tensor.as_str())
                && !given.fits(&wanted)
            {
                return Err(format!(
                    "{at}: tensor '{tensor}' ({from}) is {given}, but input '{input}' of model '{}' takes \
                     {wanted}",
                    step.model_name
                ));
            }
        }
    }
    for output in &spec.outputs {
        let wanted = Typed::of(output, spec.max_batch_size);
        if let Some((given, from)) = tensors.get(output.name.as_str())
            && !given.fits(&wanted)
        {
            return Err(format!(
                "ensemble output '{}' is {wanted} in the config, but {from} gives {given}",
                output.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
