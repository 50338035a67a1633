//! An input's typed `contents` (`int_contents`, `fp32_contents`, ...) converted to the raw form the model
//! takes, with Triton's checks of which field carries the values.

use bytes::Bytes;
use ferry_proto::inference::InferTensorContents;

use super::{Context, TensorData, raw::check_byte_size, strings::SplitError};
use crate::{DataType, Error};

/// Converts typed `contents` to the tensor's raw form. As in Triton (`InferGRPCToInput`), one field may
/// carry values, and it must be the field of the input's type; a count that does not fit the shape is then
/// Triton's byte size (or string count) mismatch. Values out of a narrow type's range are refused.
pub(super) fn typed_data(
    contents: Option<&InferTensorContents>,
    name: &str,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<TensorData, Error> {
    let empty = InferTensorContents::default();
    let contents = contents.unwrap_or(&empty);
    check_typed_field(contents, name, data_type, at)?;
    let size = data_type.element_size().unwrap_or(0);
    let check_count = |given: usize| check_byte_size(given * size, name, elements * size, at);
    let bytes = match data_type {
        DataType::Bool => {
            check_count(contents.bool_contents.len())?;
            contents.bool_contents.iter().map(|b| u8::from(*b)).collect()
        }
        DataType::Int8 => narrow(
            &contents.int_contents,
            i8::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Int16 => narrow(
            &contents.int_contents,
            i16::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Int32 => {
            check_count(contents.int_contents.len())?;
            little_endian(&contents.int_contents, |v| v.to_le_bytes())
        }
        DataType::Int64 => {
            check_count(contents.int64_contents.len())?;
            little_endian(&contents.int64_contents, |v| v.to_le_bytes())
        }
        DataType::Uint8 => narrow(
            &contents.uint_contents,
            u8::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Uint16 => narrow(
            &contents.uint_contents,
            u16::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Uint32 => {
            check_count(contents.uint_contents.len())?;
            little_endian(&contents.uint_contents, |v| v.to_le_bytes())
        }
        DataType::Uint64 => {
            check_count(contents.uint64_contents.len())?;
            little_endian(&contents.uint64_contents, |v| v.to_le_bytes())
        }
        DataType::Fp32 => {
            check_count(contents.fp32_contents.len())?;
            little_endian(&contents.fp32_contents, |v| v.to_le_bytes())
        }
        DataType::Fp64 => {
            check_count(contents.fp64_contents.len())?;
            little_endian(&contents.fp64_contents, |v| v.to_le_bytes())
        }
        DataType::Bytes => {
            let count = contents.bytes_contents.len();
            let error = match count.cmp(&elements) {
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some(SplitError::TooMany { expected: elements }),
                std::cmp::Ordering::Less => Some(SplitError::TooFew {
                    count,
                    expected: elements,
                }),
            };
            if let Some(error) = error {
                return Err(error.triton_error(name, at));
            }
            return Ok(TensorData::Strings(contents.bytes_contents.clone()));
        }
        // No typed field carries these types, so only empty contents get here.
        DataType::Fp16 | DataType::Bf16 => {
            check_count(0)?;
            Vec::new()
        }
    };
    Ok(TensorData::Fixed(Bytes::from(bytes)))
}

/// Triton's checks of which typed field carries values: at most one, and the one of the input's type. The
/// `int_contents` and `uint_contents` fields carry the narrow types too.
fn check_typed_field(
    contents: &InferTensorContents,
    name: &str,
    data_type: DataType,
    at: &Context,
) -> Result<(), Error> {
    let int = match data_type {
        DataType::Int8 | DataType::Int16 => data_type,
        _ => DataType::Int32,
    };
    let uint = match data_type {
        DataType::Uint8 | DataType::Uint16 => data_type,
        _ => DataType::Uint32,
    };
    // In the order Triton reads them.
    let fields = [
        (DataType::Bool, contents.bool_contents.len()),
        (int, contents.int_contents.len()),
        (DataType::Int64, contents.int64_contents.len()),
        (uint, contents.uint_contents.len()),
        (DataType::Uint64, contents.uint64_contents.len()),
        (DataType::Fp32, contents.fp32_contents.len()),
        (DataType::Fp64, contents.fp64_contents.len()),
        (DataType::Bytes, contents.bytes_contents.len()),
    ];
    let model = at.model;
    let mut supplied = false;
    for (carried, count) in fields {
        if count == 0 {
            continue;
        }
        if supplied {
            return Err(Error::invalid(format!(
                "unexpected explicit tensor data for input tensor '{name}' for model '{model}', binary data was \
                 already supplied."
            )));
        }
        if carried != data_type {
            return Err(Error::invalid(format!(
                "unexpected explicit tensor data for input tensor '{name}' for model '{model}' of type \
                 '{carried}', expected datatype '{data_type}'"
            )));
        }
        supplied = true;
    }
    Ok(())
}

/// The values' little-endian bytes, one after the other.
fn little_endian<T: Copy, const N: usize>(values: &[T], to_le_bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|v| to_le_bytes(*v)).collect()
}

/// Converts integers carried in a wider typed-contents field (`int_contents` for INT8 and INT16,
/// `uint_contents` for UINT8 and UINT16) to `T`, rejecting values out of `T`'s range.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>, const N: usize>(
    values: &[W],
    to_le_bytes: fn(T) -> [u8; N],
    name: &str,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<Vec<u8>, Error> {
    check_byte_size(values.len() * N, name, elements * N, at)?;
    let mut out = Vec::with_capacity(elements * N);
    for (position, value) in values.iter().enumerate() {
        let narrowed = T::try_from(*value).map_err(|_| {
            Error::invalid(format!(
                "input '{name}' element {position} is {value}, which does not fit in {data_type}"
            ))
        })?;
        out.extend_from_slice(&to_le_bytes(narrowed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{
        InferRequest,
        tests::{message, raw_request, spec, tensor, wire},
    };

    /// Typed contents for three elements of `data_type`, and the raw bytes they must become.
    fn typed_and_raw(data_type: DataType) -> (InferTensorContents, Vec<u8>) {
        let mut contents = InferTensorContents::default();
        let raw: Vec<u8> = match data_type {
            DataType::Bool => {
                contents.bool_contents = vec![true, false, true];
                vec![1, 0, 1]
            }
            DataType::Int8 => {
                contents.int_contents = vec![-128, 0, 127];
                [-128i8, 0, 127].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Int16 => {
                contents.int_contents = vec![-32768, 1, 32767];
                [-32768i16, 1, 32767]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Int32 => {
                contents.int_contents = vec![i32::MIN, 0, i32::MAX];
                [i32::MIN, 0, i32::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Int64 => {
                contents.int64_contents = vec![i64::MIN, 0, i64::MAX];
                [i64::MIN, 0, i64::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Uint8 => {
                contents.uint_contents = vec![0, 1, 255];
                vec![0, 1, 255]
            }
            DataType::Uint16 => {
                contents.uint_contents = vec![0, 1, 65535];
                [0u16, 1, 65535].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Uint32 => {
                contents.uint_contents = vec![0, 1, u32::MAX];
                [0u32, 1, u32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Uint64 => {
                contents.uint64_contents = vec![0, 1, u64::MAX];
                [0u64, 1, u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Fp32 => {
                contents.fp32_contents = vec![-1.5, 0.0, f32::MAX];
                [-1.5f32, 0.0, f32::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Fp64 => {
                contents.fp64_contents = vec![-1.5, 0.0, f64::MIN_POSITIVE];
                [-1.5f64, 0.0, f64::MIN_POSITIVE]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Bytes => {
                contents.bytes_contents = vec![
                    Bytes::from_static(b"a"),
                    Bytes::new(),
                    Bytes::from_static(b"\0\xff"),
                ];
                vec![1, 0, 0, 0, b'a', 0, 0, 0, 0, 2, 0, 0, 0, 0, 0xff]
            }
            DataType::Fp16 | DataType::Bf16 => {
                vec![0, 60, 0, 0, 0, 188]
            }
        };
        (contents, raw)
    }

    #[test]
    fn every_type_parses_from_raw_and_typed_to_the_same_tensor() {
        for data_type in DataType::ALL {
            let spec = spec(0, vec![tensor("x", data_type, &[-1])]);
            let (contents, raw) = typed_and_raw(data_type);
            let from_raw = InferRequest::parse(
                raw_request(vec![wire("x", data_type, &[3], None)], vec![raw]),
                &spec,
            )
            .unwrap_or_else(|e| panic!("{data_type} raw: {e}"));
            assert_eq!(from_raw.inputs[0].shape, [3]);
            let typed = raw_request(vec![wire("x", data_type, &[3], Some(contents))], vec![]);
            match data_type {
                DataType::Fp16 | DataType::Bf16 => {
                    // No typed field carries them: empty contents hold 0 of the 6 bytes (Triton's check).
                    assert_eq!(
                        message(InferRequest::parse(typed, &spec)),
                        "[request id: id-7] input byte size mismatch for input 'x' for model 'm'. Expected 6, \
                         got 0"
                    );
                }
                _ => {
                    let from_typed = InferRequest::parse(typed, &spec)
                        .unwrap_or_else(|e| panic!("{data_type} typed: {e}"));
                    assert_eq!(from_typed.inputs[0].data, from_raw.inputs[0].data, "{data_type}");
                }
            }
        }
    }

    #[test]
    fn out_of_range_narrow_values_are_rejected() {
        let spec = spec(0, vec![tensor("x", DataType::Int8, &[1])]);
        let contents = InferTensorContents {
            int_contents: vec![300],
            ..Default::default()
        };
        let message = message(InferRequest::parse(
            raw_request(vec![wire("x", DataType::Int8, &[1], Some(contents))], vec![]),
            &spec,
        ));
        assert!(message.contains("300") && message.contains("INT8"), "{message}");
    }
}
