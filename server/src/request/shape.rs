//! Triton's checks of the inputs against the model: how many, the batch dimension, and each input's data type
//! and shape.

use ferry_proto::inference::model_infer_request::InferInputTensor;

use super::Context;
use crate::{
    Error,
    config::{ModelSpec, TensorSpec},
};

/// Triton's check that the request has as many inputs as the model takes (between its required and all
/// of its inputs), naming the inputs given and the required ones missing.
pub(super) fn check_input_count(
    wire_inputs: &[InferInputTensor],
    spec: &ModelSpec,
    at: &Context,
) -> Result<(), Error> {
    let required = spec.inputs.iter().filter(|t| !t.optional).count();
    let given = wire_inputs.len();
    if given <= spec.inputs.len() && given >= required {
        return Ok(());
    }
    // Triton's lists: `['a','b']`, and a quirk kept as it is: an empty list of missing inputs prints `]`.
    let quoted = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let got = format!(
        "[{}]",
        quoted(wire_inputs.iter().map(|w| w.name.as_str()).collect())
    );
    let missing: Vec<&str> = spec
        .inputs
        .iter()
        .filter(|t| !t.optional && !wire_inputs.iter().any(|w| w.name == t.name))
        .map(|t| t.name.as_str())
        .collect();
    let missing = if missing.is_empty() {
        "]".to_owned()
    } else {
        format!("[{}]", quoted(missing))
    };
    let expected = if required == spec.inputs.len() {
        format!("expected {} inputs", spec.inputs.len())
    } else {
        format!(
            "expected number of inputs between {required} and {}",
            spec.inputs.len()
        )
    };
    Err(Error::invalid(format!(
        "{}{expected} but got {given} inputs for model '{}'. Got inputs {got}, but missing required inputs \
         {missing}. Please provide all required inputs.",
        at.tag, at.model
    )))
}

/// For a batching model, Triton's checks of the batch dimension across inputs (in request order) and
/// against `max_batch_size`; returns the request's rows (1 for a model that does not batch).
pub(super) fn check_batch(
    wire_inputs: &[InferInputTensor],
    spec: &ModelSpec,
    at: &Context,
) -> Result<usize, Error> {
    let max = spec.max_batch_size;
    if max == 0 {
        return Ok(1);
    }
    let (tag, model) = (&at.tag, at.model);
    let mut batch: Option<i64> = None;
    for wire in wire_inputs {
        if spec.input(&wire.name).is_none() {
            return Err(unexpected_input(&wire.name, spec));
        }
        let name = &wire.name;
        let Some(&rows) = wire.shape.first() else {
            return Err(Error::invalid(format!(
                "{tag}input '{name}' has no shape but model requires batch dimension for '{model}'"
            )));
        };
        match batch {
            None => batch = Some(rows),
            Some(first) if first != rows => {
                return Err(Error::invalid(format!(
                    "{tag}input '{name}' batch size does not match other inputs for '{model}'"
                )));
            }
            Some(_) => {}
        }
    }
    let rows = batch.unwrap_or(0);
    // Triton reads the batch dimension as unsigned: a negative one is "too large" there too.
    if rows < 0 || rows as u64 > max as u64 {
        return Err(Error::invalid(format!(
            "{tag}inference request batch-size must be <= {max} for '{model}'"
        )));
    }
    if rows == 0 {
        return Err(Error::invalid(format!(
            "{tag}inference request batch-size is 0 for '{model}'; send between 1 and {max} rows"
        )));
    }
    Ok(rows as usize)
}

/// Triton's error for an input the model does not have (`Model::GetInput`).
pub(super) fn unexpected_input(name: &str, spec: &ModelSpec) -> Error {
    Error::invalid(format!(
        "unexpected inference input '{name}' for model '{}'",
        spec.name
    ))
}

/// The config's shape with the batch dimension, as clients see it.
pub fn full_dims(tensor: &TensorSpec, max_batch_size: usize) -> Vec<i64> {
    let batch = (max_batch_size > 0).then_some(-1);
    batch.into_iter().chain(tensor.dims.iter().copied()).collect()
}

/// A shape as Triton writes it in messages (`DimsListToString`): `[1,16]`.
fn dims_text(dims: &[i64]) -> String {
    let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// Triton's note after a shape mismatch of a batching model (`InferenceRequest::Normalize`).
pub(super) const BATCH_NOTE: &str = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension \
                          to be prepended to each input shape. If you want to specify the full shape including \
                          the batch dim in your input dims config, try setting max_batch_size to zero. See the \
                          model configuration docs for more info on max_batch_size.";

/// Checks data type and shape with Triton's errors, returning the number of elements. The batch dimension
/// was checked by [`check_batch`].
pub(super) fn check_shape(
    wire: &InferInputTensor,
    tensor: &TensorSpec,
    max_batch_size: usize,
    at: &Context,
) -> Result<usize, Error> {
    let (name, tag, model) = (&wire.name, &at.tag, at.model);
    if wire.datatype != tensor.data_type.wire_name() {
        return Err(Error::invalid(format!(
            "{tag}inference input '{name}' data-type is '{}', but model '{model}' expects '{}'",
            wire.datatype, tensor.data_type
        )));
    }
    let batch = usize::from(max_batch_size > 0);
    let dims = wire.shape.get(batch..).unwrap_or_default();
    let mut matches = dims.len() == tensor.dims.len();
    if matches {
        for (given, want) in dims.iter().zip(&tensor.dims) {
            if *given == -1 {
                return Err(Error::invalid(format!(
                    "{tag}All input dimensions should be specified for input '{name}' for model '{model}', got {}",
                    dims_text(&wire.shape)
                )));
            }
            // Triton lets other negative sizes through to a -1 dimension; Ferry refuses them here.
            if *given < 0 || (*want != -1 && given != want) {
                matches = false;
                break;
            }
        }
    }
    if !matches {
        let note = if max_batch_size > 0 { BATCH_NOTE } else { "" };
        return Err(Error::invalid(format!(
            "{tag}unexpected shape for input '{name}' for model '{model}'. Expected {}, got {}. {note}",
            dims_text(&full_dims(tensor, max_batch_size)),
            dims_text(&wire.shape)
        )));
    }
    wire.shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d as usize))
        .ok_or_else(|| {
            Error::invalid(format!(
                "input '{name}' has shape {:?}, which is too large",
                wire.shape
            ))
        })
}

#[cfg(test)]
mod tests {
    use crate::{
        DataType,
        request::{
            InferRequest,
            tests::{message, raw_request, spec, tensor, wire},
        },
    };

    #[test]
    fn huge_shapes_do_not_overflow() {
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[-1, -1])]);
        let request = raw_request(
            vec![wire("a", DataType::Fp32, &[i64::MAX, i64::MAX], None)],
            vec![vec![0; 4]],
        );
        assert!(message(InferRequest::parse(request, &spec)).contains("too large"));
    }
}
