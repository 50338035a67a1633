//! The shared memory parameters of a tensor (`shared_memory_region`, `shared_memory_offset`,
//! `shared_memory_byte_size`), read the same way for inputs and requested outputs, and echoed in responses.

use std::collections::HashMap;

use ferry_proto::inference::{InferParameter, infer_parameter::ParameterChoice};

use crate::Error;

/// The tensor parameter naming the region.
pub const REGION: &str = "shared_memory_region";
/// The tensor parameter giving the tensor's offset in the region (optional, 0 by default).
pub const OFFSET: &str = "shared_memory_offset";
/// The tensor parameter giving the tensor's size in bytes (required with a region).
pub const BYTE_SIZE: &str = "shared_memory_byte_size";

/// Where a tensor's bytes are, as its shared memory parameters say; not yet checked against the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRegion {
    /// The region's name.
    pub region: String,
    /// Offset in the region, in bytes.
    pub offset: usize,
    /// Size in bytes.
    pub byte_size: usize,
}

impl TensorRegion {
    /// Reads the shared memory parameters of the tensor named `tensor`; `None` when it sets none of them.
    /// As in Triton (`ParseSharedMemoryParams`, whose texts the errors are), the offset and size are only
    /// valid with a region, and a region needs a size.
    pub fn from_parameters(
        parameters: &HashMap<String, InferParameter>,
        tensor: &str,
    ) -> Result<Option<Self>, Error> {
        let region = match parameters.get(REGION).map(|p| &p.parameter_choice) {
            None => None,
            Some(Some(ParameterChoice::StringParam(region))) => Some(region.clone()),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "invalid value type for '{REGION}' parameter for tensor '{tensor}', expected string_param."
                )));
            }
        };
        let offset = size_parameter(parameters, OFFSET, tensor, region.is_some())?;
        let byte_size = size_parameter(parameters, BYTE_SIZE, tensor, region.is_some())?;
        let Some(region) = region else {
            return Ok(None);
        };
        let Some(byte_size) = byte_size else {
            return Err(Error::invalid(format!(
                "'{BYTE_SIZE}' must be specified along with '{REGION}' parameter for tensor '{tensor}'"
            )));
        };
        Ok(Some(TensorRegion {
            region,
            offset: offset.unwrap_or(0),
            byte_size,
        }))
    }

    /// The parameters that say where this tensor is, as a response echoes them.
    pub fn parameters(&self) -> HashMap<String, InferParameter> {
        let int = |value: usize| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(
                i64::try_from(value).unwrap_or(i64::MAX),
            )),
        };
        let mut parameters = HashMap::from([
            (
                REGION.to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::StringParam(self.region.clone())),
                },
            ),
            (BYTE_SIZE.to_owned(), int(self.byte_size)),
        ]);
        if self.offset != 0 {
            parameters.insert(OFFSET.to_owned(), int(self.offset));
        }
        parameters
    }
}

/// An offset or size parameter of the tensor named `tensor`: a non-negative int64 as Triton's clients send
/// it, or a uint64; only valid `with_region`.
fn size_parameter(
    parameters: &HashMap<String, InferParameter>,
    key: &str,
    tensor: &str,
    with_region: bool,
) -> Result<Option<usize>, Error> {
    let Some(parameter) = parameters.get(key) else {
        return Ok(None);
    };
    if !with_region {
        return Err(Error::invalid(format!(
            "'{key}' can not be specified without '{REGION}' parameter for tensor '{tensor}'"
        )));
    }
    let (value, given) = match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(value)) => (u64::try_from(value).ok(), i128::from(value)),
        Some(ParameterChoice::Uint64Param(value)) => (Some(value), i128::from(value)),
        _ => {
            return Err(Error::invalid(format!(
                "invalid value type for '{key}' parameter for tensor '{tensor}', expected int64_param."
            )));
        }
    };
    value
        .and_then(|value| usize::try_from(value).ok())
        .map(Some)
        .ok_or_else(|| {
            Error::invalid(format!(
                "invalid value for '{key}' parameter for tensor '{tensor}', expected a value >= 0 that fits \
                 in memory, got {given}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::testing::tensor;

    #[test]
    fn parameters_are_parsed_like_triton() {
        let string = |s: &str| InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam(s.into())),
        };
        let int = |v: i64| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(v)),
        };
        let parse = |pairs: Vec<(&str, InferParameter)>| {
            let map: HashMap<String, InferParameter> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            TensorRegion::from_parameters(&map, "x")
        };
        assert_eq!(parse(vec![("other", int(1))]).expect("none"), None);
        let full = parse(vec![
            (REGION, string("r")),
            (OFFSET, int(8)),
            (BYTE_SIZE, int(64)),
        ])
        .expect("valid")
        .expect("some");
        assert_eq!(full, tensor("r", 8, 64));
        assert_eq!(full.parameters().len(), 3);
        assert_eq!(tensor("r", 0, 4).parameters().len(), 2, "offset 0 is not echoed");
        // Triton's texts (`ParseSharedMemoryParams` in grpc/grpc_utils.h).
        for (pairs, text) in [
            (
                vec![(REGION, string("r"))],
                "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter \
                 for tensor 'x'",
            ),
            (
                vec![(BYTE_SIZE, int(4))],
                "'shared_memory_byte_size' can not be specified without 'shared_memory_region' parameter \
                 for tensor 'x'",
            ),
            (
                vec![(OFFSET, int(4))],
                "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for \
                 tensor 'x'",
            ),
            (
                vec![(REGION, int(1)), (BYTE_SIZE, int(4))],
                "invalid value type for 'shared_memory_region' parameter for tensor 'x', expected \
                 string_param.",
            ),
            (
                vec![(REGION, string("r")), (BYTE_SIZE, string("4"))],
                "invalid value type for 'shared_memory_byte_size' parameter for tensor 'x', expected \
                 int64_param.",
            ),
        ] {
            assert_eq!(parse(pairs).expect_err(text).to_string(), text);
        }
        let negative = parse(vec![(REGION, string("r")), (BYTE_SIZE, int(-4))])
            .expect_err("negative")
            .to_string();
        assert!(negative.contains("expected a value >= 0"), "{negative}");
    }
}
