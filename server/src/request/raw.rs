//! An input's bytes as the client sent them (a `raw_input_contents` entry, or a shared memory slice): checked
//! against the shape's size, BYTES elements split without copying.

use bytes::Bytes;

use super::{Context, TensorData, strings::split_elements};
use crate::{DataType, Error};

/// Checks the size of raw contents and, for BYTES, splits the length-prefixed elements without copying.
pub(super) fn raw_data(
    bytes: Bytes,
    name: &str,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<TensorData, Error> {
    let Some(size) = data_type.element_size() else {
        return split_elements(bytes, elements)
            .map(TensorData::Strings)
            .map_err(|error| error.triton_error(name, at));
    };
    check_byte_size(bytes.len(), name, elements * size, at)?;
    if data_type == DataType::Bool
        && let Some(position) = bytes.iter().position(|b| *b > 1)
    {
        return Err(Error::invalid(format!(
            "input '{name}' element {position} is byte {} but BOOL elements are 0 or 1",
            bytes[position]
        )));
    }
    Ok(TensorData::Fixed(bytes))
}

/// Triton's check that a fixed-size input has exactly the bytes its shape holds (`ValidateRequestInputs`).
pub(super) fn check_byte_size(given: usize, name: &str, expected: usize, at: &Context) -> Result<(), Error> {
    if given != expected {
        return Err(Error::invalid(format!(
            "{}input byte size mismatch for input '{name}' for model '{}'. Expected {expected}, got {given}",
            at.tag, at.model
        )));
    }
    Ok(())
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
    fn bool_bytes_must_be_zero_or_one() {
        let spec = spec(0, vec![tensor("x", DataType::Bool, &[2])]);
        let message = message(InferRequest::parse(
            raw_request(vec![wire("x", DataType::Bool, &[2], None)], vec![vec![1, 7]]),
            &spec,
        ));
        assert!(
            message.contains("element 1") && message.contains('7'),
            "{message}"
        );
    }
}
