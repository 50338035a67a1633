//! The request's own parameters that Ferry reads: `priority` and `timeout`.

use std::collections::HashMap;

use ferry_proto::inference::{InferParameter, infer_parameter::ParameterChoice};

use crate::Error;

/// A request parameter that must be a non-negative integer (`priority`, `timeout`), sent as int64 or
/// uint64; the errors are Triton's (`SetInferenceRequestMetadata`).
pub(super) fn unsigned_parameter(
    parameters: &HashMap<String, InferParameter>,
    key: &str,
) -> Result<Option<u64>, Error> {
    let Some(parameter) = parameters.get(key) else {
        return Ok(None);
    };
    match parameter.parameter_choice {
        Some(ParameterChoice::Uint64Param(value)) => Ok(Some(value)),
        Some(ParameterChoice::Int64Param(value)) if value >= 0 => Ok(Some(value as u64)),
        Some(ParameterChoice::Int64Param(_)) => Err(Error::invalid(format!(
            "invalid value for '{key}', expected value >= 0."
        ))),
        _ if key == "timeout" => Err(Error::invalid(format!(
            "invalid value type for '{key}' parameter, expected int64_param."
        ))),
        _ => Err(Error::invalid(format!(
            "invalid value type for '{key}' parameter, expected int64_param or uint64_param."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_and_timeout_are_unsigned_integers() {
        let parameters = |choice| {
            HashMap::from([(
                "priority".to_owned(),
                InferParameter {
                    parameter_choice: Some(choice),
                },
            )])
        };
        assert_eq!(unsigned_parameter(&HashMap::new(), "priority"), Ok(None));
        assert_eq!(
            unsigned_parameter(&parameters(ParameterChoice::Uint64Param(3)), "priority"),
            Ok(Some(3))
        );
        assert_eq!(
            unsigned_parameter(&parameters(ParameterChoice::Int64Param(4)), "priority"),
            Ok(Some(4))
        );
        assert!(unsigned_parameter(&parameters(ParameterChoice::Int64Param(-1)), "priority").is_err());
        assert!(unsigned_parameter(&parameters(ParameterChoice::DoubleParam(1.0)), "priority").is_err());
    }
}
