//! Checking a validated config against the model file: every config tensor must be in the model with the same
//! type and a compatible shape, and every required model input in the config.

use super::{ModelSignature, ModelSpec};
use crate::Error;

impl ModelSpec {
    /// Checks that the model file declares what the config says: every config tensor exists with the same
    /// type and a compatible shape, and every required model input is in the config.
    pub fn check_signature(&self, signature: &ModelSignature, model_path: &str) -> Result<(), Error> {
        let fail = |message: String| Error::ModelLoad(format!("{model_path}: {message}"));
        let batch = usize::from(self.max_batch_size > 0);
        let sides = [
            ("input", &self.inputs, &signature.inputs),
            ("output", &self.outputs, &signature.outputs),
        ];
        let ragged = self.variable_lengths.ragged.as_deref();
        for (side, specs, tensors) in sides {
            for (index, spec) in specs.iter().enumerate() {
                let Some(tensor) = tensors.iter().find(|t| t.name == spec.name) else {
                    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
                    return Err(fail(format!(
                        "config {side} '{}' is not an {side} of the model (model {side}s: {})",
                        spec.name,
                        names.join(", ")
                    )));
                };
                if tensor.data_type.is_none() {
                    return Err(fail(tensor.unsupported()));
                }
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
                if side == "input" && ragged.is_some_and(|r| r.is_ragged(index)) {
                    // The model sees a ragged input flattened: checked below, with the batch inputs.
                    continue;
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
        if let Some(sequence) = &self.sequence {
            sequence.check_signature(signature, batch == 1, fail)?;
        }
        if let Some(ragged) = ragged {
            ragged.check_signature(&self.inputs, signature, fail)?;
        }
        let fed_by_sequences: Vec<String> = self
            .sequence
            .as_ref()
            .map(|sequence| sequence.extra_inputs().into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        // Inputs Ferry fills itself: a sequence's control and state tensors, ragged batching's batch inputs.
        let filled_by_ferry = |name: &str| {
            fed_by_sequences.iter().any(|fed| fed == name)
                || ragged.is_some_and(|r| r.batch_inputs.iter().any(|b| b.target == name))
        };
        if let Some(missing) = signature
            .inputs
            .iter()
            .find(|t| !self.inputs.iter().any(|s| s.name == t.name) && !filled_by_ferry(&t.name))
        {
            return Err(fail(format!(
                "model input '{}' is missing from the config",
                missing.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, config::testing::spec_from};

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
}
