//! The sequence extension's request parameters: `sequence_id`, `sequence_start` and `sequence_end`, read as
//! Triton's front ends read them (`SetInferenceRequestMetadata` in its `infer_handler.cc`) for every model;
//! only a model with `sequence_batching` acts on them.

use std::collections::HashMap;

use ferry_batching::CorrelationId;
use ferry_proto::inference::{InferParameter, infer_parameter::ParameterChoice};

use crate::{Error, limits::check_string_length};

/// The longest string `sequence_id` Ferry takes, in bytes.
pub const MAX_CORRELATION_ID_BYTES: usize = 256;

/// Which sequence a request belongs to, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceFlags {
    /// The `sequence_id`: a non-zero number or a non-empty string.
    pub id: CorrelationId,
    /// The `sequence_start` flag.
    pub start: bool,
    /// The `sequence_end` flag.
    pub end: bool,
}

/// The request's sequence parameters: `None` without a `sequence_id` (or with 0 or "", which Triton takes as
/// no id). The flags without an id mean nothing, as in Triton, but must still have the right type.
pub(super) fn sequence_flags(
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<SequenceFlags>, Error> {
    if parameters.is_empty() {
        return Ok(None);
    }
    let start = flag(parameters, "sequence_start")?;
    let end = flag(parameters, "sequence_end")?;
    let id = match parameters.get("sequence_id").map(|p| &p.parameter_choice) {
        None | Some(Some(ParameterChoice::Int64Param(0) | ParameterChoice::Uint64Param(0))) => {
            return Ok(None);
        }
        // Triton stores the id as an unsigned integer: a negative int64 is its two's complement.
        Some(Some(ParameterChoice::Int64Param(id))) => CorrelationId::Number(*id as u64),
        Some(Some(ParameterChoice::Uint64Param(id))) => CorrelationId::Number(*id),
        Some(Some(ParameterChoice::StringParam(id))) if id.is_empty() => return Ok(None),
        Some(Some(ParameterChoice::StringParam(id))) => {
            check_string_length("parameter 'sequence_id'", id, MAX_CORRELATION_ID_BYTES)?;
            CorrelationId::Text(id.clone())
        }
        Some(_) => {
            return Err(Error::invalid(
                "invalid value type for 'sequence_id' parameter, expected int64_param or string_param.",
            ));
        }
    };
    Ok(Some(SequenceFlags { id, start, end }))
}

fn flag(parameters: &HashMap<String, InferParameter>, key: &str) -> Result<bool, Error> {
    match parameters.get(key).map(|p| &p.parameter_choice) {
        None => Ok(false),
        Some(Some(ParameterChoice::BoolParam(value))) => Ok(*value),
        Some(_) => Err(Error::invalid(format!(
            "invalid value type for '{key}' parameter, expected bool_param."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(entries: &[(&str, ParameterChoice)]) -> HashMap<String, InferParameter> {
        entries
            .iter()
            .map(|(key, choice)| {
                (
                    (*key).to_owned(),
                    InferParameter {
                        parameter_choice: Some(choice.clone()),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn ids_flags_and_their_types_are_read_as_triton_reads_them() {
        // Triton's infer_handler.cc SetInferenceRequestMetadata: int64 or string ids, bool flags.
        let read = |entries: &[(&str, ParameterChoice)]| sequence_flags(&parameters(entries));
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[("sequence_id", ParameterChoice::Int64Param(0))]), Ok(None));
        assert_eq!(
            read(&[("sequence_id", ParameterChoice::StringParam(String::new()))]),
            Ok(None)
        );
        assert_eq!(
            read(&[
                ("sequence_id", ParameterChoice::Int64Param(7)),
                ("sequence_start", ParameterChoice::BoolParam(true)),
            ]),
            Ok(Some(SequenceFlags {
                id: CorrelationId::Number(7),
                start: true,
                end: false
            }))
        );
        assert_eq!(
            read(&[
                ("sequence_id", ParameterChoice::StringParam("a".into())),
                ("sequence_end", ParameterChoice::BoolParam(true)),
            ]),
            Ok(Some(SequenceFlags {
                id: CorrelationId::Text("a".into()),
                start: false,
                end: true
            }))
        );
        let wrong = read(&[("sequence_id", ParameterChoice::DoubleParam(1.0))]).expect_err("refused");
        assert!(
            wrong.to_string().contains("expected int64_param or string_param"),
            "{wrong}"
        );
        let wrong = read(&[("sequence_start", ParameterChoice::Int64Param(1))]).expect_err("refused");
        assert!(wrong.to_string().contains("'sequence_start'"), "{wrong}");
        let long = "x".repeat(MAX_CORRELATION_ID_BYTES + 1);
        let refused = read(&[("sequence_id", ParameterChoice::StringParam(long))]).expect_err("refused");
        // Like every over-long string a client sends (docs/limits.md): INVALID_ARGUMENT, not
        // RESOURCE_EXHAUSTED, naming the field, the limit and the length.
        assert!(matches!(refused, Error::InvalidRequest(_)), "{refused}");
        assert_eq!(
            refused.to_string(),
            "parameter 'sequence_id' is 257 bytes long; the most is 256"
        );
    }
}
