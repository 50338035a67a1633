//! Tensor data in JSON, both ways.
//!
//! Inputs: a `data` array (flat, or nested like the shape) becomes the raw little-endian bytes the gRPC path
//! takes in `raw_input_contents`, so the shared core validates JSON and binary inputs alike. Each element is
//! checked against the datatype here, where the JSON value is still at hand for the message: BOOL takes JSON
//! booleans, integer types take integers within their range, FP32 and FP64 take numbers, BYTES takes strings.
//! FP16 and BF16 have no JSON form (as in Triton) and travel only as binary data.
//!
//! Outputs: raw bytes from the core are written as JSON values without building a `serde_json::Value` per
//! element; FP32 values are written in their shortest round-tripping form.

use serde::ser::{Error as _, Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::json::{access, triton_json};
use crate::{DataType, Error};

/// Converts `data`, the JSON elements of input `name`, to raw bytes of `datatype`, checking that it holds
/// exactly `elements` values (BYTES excepted: the shared core counts strings with Triton's message).
///
/// Mistakes Triton's REST front end catches get its texts (`ReadDataFromJson`, `ReadDataFromJsonHelper` and
/// `JsonBytesArrayByteSize` in its `http_server.cc`) and statuses: its JSON reader's errors and its shape
/// check are `INTERNAL` there, so 500. Values out of a narrow type's range, which Triton silently
/// truncates, get Ferry's own 400.
pub fn json_to_raw(name: &str, datatype: DataType, data: &Value, elements: usize) -> Result<Vec<u8>, Error> {
    let Some(element_size) = json_element_size(datatype) else {
        return Err(no_json_form(name, datatype));
    };
    if !data.is_array() {
        return Err(triton_json(format!(
            "Unable to parse 'data': {}; input '{name}' has 'data' of type {}",
            access::ARRAY,
            kind(data)
        )));
    }
    let counted = datatype != DataType::Bytes;
    // The shape may promise far more elements than the body holds: reserve by the JSON, not the shape.
    let mut out = Vec::with_capacity(element_size * elements.min(1 << 16));
    let mut count = 0usize;
    visit_leaves(data, &mut |value| {
        if counted && count == elements {
            return Err(count_mismatch(name, data, elements));
        }
        push_element(&mut out, datatype, value, name, count)?;
        count += 1;
        Ok(())
    })?;
    if counted && count != elements {
        return Err(count_mismatch(name, data, elements));
    }
    Ok(out)
}

/// Triton's refusal of FP16 and BF16 data in JSON (`ReadDataFromJson`).
fn no_json_form(name: &str, datatype: DataType) -> Error {
    Error::invalid(format!(
        "receiving {datatype} data via JSON is not supported. Please use the binary data format for input {name}"
    ))
}

/// Bytes one element takes in raw form, for reserving space; `None` for types that have no JSON form.
fn json_element_size(datatype: DataType) -> Option<usize> {
    match datatype {
        DataType::Fp16 | DataType::Bf16 => None,
        // Four bytes of length prefix and, usually, a few of text.
        DataType::Bytes => Some(8),
        other => other.element_size(),
    }
}

fn count_mismatch(name: &str, data: &Value, elements: usize) -> Error {
    let mut count = 0usize;
    // Counting cannot fail; the closure never errs.
    let _ = visit_leaves(data, &mut |_| {
        count += 1;
        Ok(())
    });
    triton_json(format!(
        "Unable to parse 'data': Shape does not match true shape of 'data' field; input '{name}' has {count} \
         values in 'data' but its shape holds {elements}"
    ))
}

/// Calls `f` on every non-array value of `value`, depth first: the row-major order of nested data. The depth
/// is bounded by the JSON parser's own nesting limit.
fn visit_leaves(value: &Value, f: &mut impl FnMut(&Value) -> Result<(), Error>) -> Result<(), Error> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| visit_leaves(item, f)),
        leaf => f(leaf),
    }
}

fn push_element(
    out: &mut Vec<u8>,
    datatype: DataType,
    value: &Value,
    name: &str,
    position: usize,
) -> Result<(), Error> {
    match datatype {
        DataType::Bool => match value {
            Value::Bool(b) => out.push(u8::from(*b)),
            other => return Err(wrong_kind(name, position, other, datatype, "booleans")),
        },
        DataType::Uint8 => {
            out.extend_from_slice(&unsigned::<u8>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Uint16 => {
            out.extend_from_slice(&unsigned::<u16>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Uint32 => {
            out.extend_from_slice(&unsigned::<u32>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Uint64 => {
            out.extend_from_slice(&unsigned::<u64>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Int8 => {
            out.extend_from_slice(&signed::<i8>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Int16 => {
            out.extend_from_slice(&signed::<i16>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Int32 => {
            out.extend_from_slice(&signed::<i32>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Int64 => {
            out.extend_from_slice(&signed::<i64>(value, name, position, datatype)?.to_le_bytes())
        }
        DataType::Fp32 => {
            let wide = number(value, name, position, datatype)?;
            // A finite value beyond f32's range would silently become infinity.
            if wide.abs() > f64::from(f32::MAX) {
                return Err(out_of_range(name, position, value, datatype));
            }
            out.extend_from_slice(&(wide as f32).to_le_bytes());
        }
        DataType::Fp64 => out.extend_from_slice(&number(value, name, position, datatype)?.to_le_bytes()),
        DataType::Bytes => match value {
            Value::String(text) => {
                let length =
                    u32::try_from(text.len()).map_err(|_| out_of_range(name, position, value, datatype))?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            other => return Err(wrong_kind(name, position, other, datatype, "strings")),
        },
        DataType::Fp16 | DataType::Bf16 => return Err(no_json_form(name, datatype)),
    }
    Ok(())
}

fn unsigned<T: TryFrom<u64>>(
    value: &Value,
    name: &str,
    position: usize,
    datatype: DataType,
) -> Result<T, Error> {
    let Value::Number(number) = value else {
        return Err(wrong_kind(name, position, value, datatype, "integers"));
    };
    match number.as_u64() {
        Some(wide) => T::try_from(wide).map_err(|_| out_of_range(name, position, value, datatype)),
        // Negative or not an integer: not a JSON unsigned integer to Triton's reader.
        None => Err(wrong_kind(name, position, value, datatype, "unsigned integers")),
    }
}

fn signed<T: TryFrom<i64>>(
    value: &Value,
    name: &str,
    position: usize,
    datatype: DataType,
) -> Result<T, Error> {
    let Value::Number(number) = value else {
        return Err(wrong_kind(name, position, value, datatype, "integers"));
    };
    match number.as_i64() {
        Some(wide) => T::try_from(wide).map_err(|_| out_of_range(name, position, value, datatype)),
        // Beyond int64 or not an integer: not a JSON signed integer to Triton's reader.
        None => Err(wrong_kind(name, position, value, datatype, "integers")),
    }
}

fn number(value: &Value, name: &str, position: usize, datatype: DataType) -> Result<f64, Error> {
    match value {
        // JSON has no NaN or infinity, so every number serde_json parsed is finite.
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| out_of_range(name, position, value, datatype)),
        other => Err(wrong_kind(name, position, other, datatype, "numbers")),
    }
}

/// Triton's text for an element its JSON reader cannot read as `datatype`, then which element it is.
fn wrong_kind(name: &str, position: usize, value: &Value, datatype: DataType, expected: &str) -> Error {
    let triton = match datatype {
        // `JsonBytesArrayByteSize` reads every BYTES element as a string first.
        DataType::Bytes => format!("Unable to parse JSON bytes array: {}", access::STRING),
        DataType::Bool => format!("Unable to parse 'data': {}", access::BOOL),
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => {
            format!("Unable to parse 'data': {}", access::UINT)
        }
        DataType::Fp32 | DataType::Fp64 => format!("Unable to parse 'data': {}", access::NUMBER),
        _ => format!("Unable to parse 'data': {}", access::INT),
    };
    triton_json(format!(
        "{triton}; input '{name}' element {position} is {} {}; {datatype} data must be JSON {expected}",
        kind(value),
        excerpt(value)
    ))
}

fn out_of_range(name: &str, position: usize, value: &Value, datatype: DataType) -> Error {
    Error::invalid(format!(
        "input '{name}' element {position} is {}, which does not fit in {datatype}",
        excerpt(value)
    ))
}

/// The JSON type of `value`, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `value` as JSON text, cut short so that a message stays one readable line.
fn excerpt(value: &Value) -> String {
    const LIMIT: usize = 40;
    let text = value.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The raw bytes of output `name`, checked to be writable as JSON and then written as a JSON array.
#[derive(Debug, Clone, Copy)]
pub struct JsonTensor<'a> {
    datatype: DataType,
    raw: &'a [u8],
}

impl<'a> JsonTensor<'a> {
    /// Checks that output `name`'s `raw` bytes can be JSON: FP16 and BF16 cannot, nor can NaN or infinite
    /// floats, nor BYTES elements that are not UTF-8 text. The message points the client to binary output.
    pub fn new(name: &str, datatype: DataType, raw: &'a [u8]) -> Result<Self, Error> {
        let use_binary = "request it with the output parameter binary_data: true";
        match datatype {
            DataType::Fp16 | DataType::Bf16 => {
                return Err(Error::invalid(format!(
                    "output '{name}' is {datatype}, which has no JSON form; {use_binary}"
                )));
            }
            DataType::Bytes => {
                for (position, element) in bytes_elements(raw).enumerate() {
                    let element = element.ok_or_else(|| {
                        Error::Internal(format!("output '{name}' holds malformed BYTES data"))
                    })?;
                    if std::str::from_utf8(element).is_err() {
                        return Err(Error::invalid(format!(
                            "output '{name}' element {position} is not UTF-8 text, which JSON cannot carry; \
                             {use_binary}"
                        )));
                    }
                }
            }
            DataType::Fp32 | DataType::Fp64 => {
                let finite = if datatype == DataType::Fp32 {
                    raw.chunks_exact(4)
                        .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                } else {
                    raw.chunks_exact(8).position(|c| {
                        !f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]).is_finite()
                    })
                };
                if let Some(position) = finite {
                    return Err(Error::invalid(format!(
                        "output '{name}' element {position} is NaN or infinite, which JSON cannot carry; {use_binary}"
                    )));
                }
            }
            _ => {}
        }
        if let Some(size) = datatype.element_size()
            && !raw.len().is_multiple_of(size)
        {
            return Err(Error::Internal(format!(
                "output '{name}' has {} bytes, not a whole number of {datatype} elements",
                raw.len()
            )));
        }
        Ok(JsonTensor { datatype, raw })
    }
}

/// The elements of length-prefixed BYTES data; `None` for an element whose prefix overruns the data.
fn bytes_elements(raw: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some((prefix, tail)) = rest.split_first_chunk::<4>() else {
            rest = &[];
            return Some(None);
        };
        let length = u32::from_le_bytes(*prefix) as usize;
        if length > tail.len() {
            rest = &[];
            return Some(None);
        }
        let (element, after) = tail.split_at(length);
        rest = after;
        Some(Some(element))
    })
}

impl Serialize for JsonTensor<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = self.raw;
        let elements = match self.datatype.element_size() {
            Some(size) => raw.len() / size,
            None => bytes_elements(raw).count(),
        };
        let mut seq = serializer.serialize_seq(Some(elements))?;
        macro_rules! each {
            ($t:ty, $n:literal, |$v:ident| $write:expr) => {
                for chunk in raw.chunks_exact($n) {
                    let mut bytes = [0u8; $n];
                    bytes.copy_from_slice(chunk);
                    let $v = <$t>::from_le_bytes(bytes);
                    seq.serialize_element(&$write)?;
                }
            };
        }
        match self.datatype {
            DataType::Bool => {
                for byte in raw {
                    seq.serialize_element(&(*byte != 0))?;
                }
            }
            DataType::Uint8 => each!(u8, 1, |v| v),
            DataType::Uint16 => each!(u16, 2, |v| v),
            DataType::Uint32 => each!(u32, 4, |v| v),
            DataType::Uint64 => each!(u64, 8, |v| v),
            DataType::Int8 => each!(i8, 1, |v| v),
            DataType::Int16 => each!(i16, 2, |v| v),
            DataType::Int32 => each!(i32, 4, |v| v),
            DataType::Int64 => each!(i64, 8, |v| v),
            DataType::Fp32 => each!(f32, 4, |v| v),
            DataType::Fp64 => each!(f64, 8, |v| v),
            DataType::Bytes => {
                for element in bytes_elements(raw) {
                    let text = element
                        .and_then(|e| std::str::from_utf8(e).ok())
                        .ok_or_else(|| S::Error::custom("BYTES output is not UTF-8 text"))?;
                    seq.serialize_element(text)?;
                }
            }
            DataType::Fp16 | DataType::Bf16 => {
                return Err(S::Error::custom("FP16 and BF16 have no JSON form"));
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(datatype: DataType, data: Value, elements: usize) -> Result<Vec<u8>, String> {
        json_to_raw("x", datatype, &data, elements).map_err(|e| e.to_string())
    }

    fn refused(datatype: DataType, data: Value, elements: usize, needles: &[&str]) {
        let message = raw(datatype, data.clone(), elements).expect_err("must be refused");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{datatype} {data}: '{message}' lacks '{needle}'"
            );
        }
    }

    #[test]
    fn every_json_type_becomes_little_endian_bytes() {
        assert_eq!(raw(DataType::Bool, json!([true, false]), 2), Ok(vec![1, 0]));
        assert_eq!(raw(DataType::Uint8, json!([0, 255]), 2), Ok(vec![0, 255]));
        assert_eq!(raw(DataType::Uint16, json!([513]), 1), Ok(vec![1, 2]));
        assert_eq!(raw(DataType::Uint32, json!([u32::MAX]), 1), Ok(vec![255; 4]));
        assert_eq!(raw(DataType::Uint64, json!([u64::MAX]), 1), Ok(vec![255; 8]));
        assert_eq!(raw(DataType::Int8, json!([-1, 127]), 2), Ok(vec![255, 127]));
        assert_eq!(
            raw(DataType::Int16, json!([-2]), 1),
            Ok((-2i16).to_le_bytes().to_vec())
        );
        assert_eq!(
            raw(DataType::Int32, json!([-3]), 1),
            Ok((-3i32).to_le_bytes().to_vec())
        );
        assert_eq!(
            raw(DataType::Int64, json!([i64::MIN]), 1),
            Ok(i64::MIN.to_le_bytes().to_vec())
        );
        assert_eq!(
            raw(DataType::Fp32, json!([1.5, 2]), 2),
            Ok([1.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect())
        );
        assert_eq!(
            raw(DataType::Fp64, json!([0.1]), 1),
            Ok(0.1f64.to_le_bytes().to_vec())
        );
        // Parsed from text, every double comes back bit for bit (serde_json's float_roundtrip).
        let doubles = [
            // Values serde_json's default (fast, inexact) parser gets wrong in the last bit.
            -0.9300397635799369,
            0.24242239933032694,
            1.0000000000000002,
            5e-324,
            f64::MAX,
        ];
        let text = format!("[{}]", doubles.map(|d| format!("{d:?}")).join(","));
        let parsed: Value = serde_json::from_str(&text).expect("JSON");
        let expected: Vec<u8> = doubles.iter().flat_map(|d| d.to_le_bytes()).collect();
        assert_eq!(raw(DataType::Fp64, parsed, doubles.len()), Ok(expected));
        assert_eq!(
            raw(DataType::Bytes, json!(["hi", ""]), 2),
            Ok(vec![2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0])
        );
    }

    #[test]
    fn nested_data_is_flattened_row_major() {
        assert_eq!(
            raw(DataType::Int8, json!([[1, 2], [3, 4]]), 4),
            Ok(vec![1, 2, 3, 4])
        );
        assert_eq!(raw(DataType::Int8, json!([[1], [2, [3]]]), 3), Ok(vec![1, 2, 3]));
        assert_eq!(raw(DataType::Int8, json!([]), 0), Ok(vec![]));
    }

    #[test]
    fn bad_elements_are_refused_naming_the_element() {
        refused(
            DataType::Int8,
            json!([1, 300]),
            2,
            &["'x'", "element 1", "300", "INT8"],
        );
        refused(DataType::Uint8, json!([-1]), 1, &["-1", "UINT8"]);
        refused(DataType::Uint64, json!([-1]), 1, &["-1", "UINT64"]);
        refused(DataType::Int64, json!([u64::MAX]), 1, &["INT64"]);
        refused(DataType::Int32, json!([1.5]), 1, &["1.5", "integers"]);
        refused(DataType::Int32, json!([2.0]), 1, &["integers"]);
        refused(DataType::Int32, json!(["1"]), 1, &["a string", "JSON integers"]);
        refused(DataType::Bool, json!([1]), 1, &["a number", "booleans"]);
        refused(DataType::Fp32, json!([1e39]), 1, &["FP32"]);
        refused(DataType::Fp32, json!([null]), 1, &["null", "numbers"]);
        refused(DataType::Bytes, json!([1]), 1, &["strings"]);
        refused(DataType::Int32, json!([[{"a": "x".repeat(100)}]]), 1, &["..."]);
    }

    /// Triton's texts and statuses (`ReadDataFromJson`, `ReadDataFromJsonHelper`, `JsonBytesArrayByteSize`
    /// in its `http_server.cc`; `TritonJson`'s `As*` texts in `triton_json.h`): its reader's errors are
    /// `INTERNAL`, so 500; FP16 and BF16 are `INVALID_ARG`, so 400.
    #[test]
    fn tritons_texts_come_first() {
        let error = |datatype: DataType, data: Value, elements: usize| {
            json_to_raw("x", datatype, &data, elements).expect_err("must be refused")
        };
        let internal = http::StatusCode::INTERNAL_SERVER_ERROR;
        for (datatype, data, text) in [
            (
                DataType::Int32,
                json!([1.5]),
                "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer; ",
            ),
            (
                DataType::Int64,
                json!([u64::MAX]),
                "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer; ",
            ),
            (
                DataType::Uint8,
                json!([-1]),
                "Unable to parse 'data': attempt to access JSON non-unsigned-integer as unsigned-integer; ",
            ),
            (
                DataType::Bool,
                json!([1]),
                "Unable to parse 'data': attempt to access JSON non-boolean as boolean; ",
            ),
            (
                DataType::Fp32,
                json!(["1"]),
                "Unable to parse 'data': attempt to access JSON non-number as double; ",
            ),
            (
                DataType::Bytes,
                json!([1]),
                "Unable to parse JSON bytes array: attempt to access JSON non-string as string; ",
            ),
            (
                DataType::Int32,
                json!(5),
                "Unable to parse 'data': attempt to access JSON non-array as array; ",
            ),
        ] {
            let error = error(datatype, data.clone(), 1);
            assert!(error.to_string().starts_with(text), "{datatype} {data}: {error}");
            assert_eq!(error.http_status(), internal, "{datatype} {data}");
        }
        for datatype in [DataType::Fp16, DataType::Bf16] {
            let error = error(datatype, json!([1.0]), 1);
            assert_eq!(
                error.to_string(),
                format!(
                    "receiving {datatype} data via JSON is not supported. Please use the binary data format for input x"
                )
            );
            assert_eq!(error.http_status(), http::StatusCode::BAD_REQUEST);
        }
        let range = error(DataType::Int8, json!([300]), 1);
        assert_eq!(
            range.http_status(),
            http::StatusCode::BAD_REQUEST,
            "Ferry's own check"
        );
    }

    /// Triton's `ReadDataFromJson`: too many or too few values for the shape, 500.
    #[test]
    fn counts_must_match_the_shape() {
        let text = "Unable to parse 'data': Shape does not match true shape of 'data' field; ";
        refused(
            DataType::Int32,
            json!([1, 2, 3]),
            2,
            &[text, "3 values", "holds 2"],
        );
        refused(
            DataType::Int32,
            json!([[1], [2]]),
            3,
            &[text, "2 values", "holds 3"],
        );
        let error = json_to_raw("x", DataType::Int32, &json!([1]), 2).expect_err("short");
        assert_eq!(error.http_status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        // BYTES strings are counted by the shared core, with Triton's core message.
        assert!(raw(DataType::Bytes, json!(["a", "b"]), 3).is_ok());
    }

    fn to_json(datatype: DataType, raw: &[u8]) -> Result<String, String> {
        let tensor = JsonTensor::new("y", datatype, raw).map_err(|e| e.to_string())?;
        serde_json::to_string(&tensor).map_err(|e| e.to_string())
    }

    #[test]
    fn outputs_are_written_as_json() {
        assert_eq!(to_json(DataType::Bool, &[1, 0]), Ok("[true,false]".into()));
        assert_eq!(
            to_json(DataType::Int16, &(-2i16).to_le_bytes()),
            Ok("[-2]".into())
        );
        assert_eq!(
            to_json(DataType::Uint64, &u64::MAX.to_le_bytes()),
            Ok(format!("[{}]", u64::MAX))
        );
        assert_eq!(to_json(DataType::Fp32, &0.1f32.to_le_bytes()), Ok("[0.1]".into()));
        assert_eq!(
            to_json(DataType::Fp64, &0.25f64.to_le_bytes()),
            Ok("[0.25]".into())
        );
        assert_eq!(
            to_json(DataType::Bytes, &[2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]),
            Ok(r#"["hi",""]"#.into())
        );
    }

    #[test]
    fn outputs_json_cannot_carry_are_refused() {
        for (datatype, raw, needle) in [
            (DataType::Fp16, vec![0, 60], "FP16"),
            (DataType::Bf16, vec![0, 60], "BF16"),
            (DataType::Fp32, f32::NAN.to_le_bytes().to_vec(), "NaN"),
            (DataType::Fp64, f64::INFINITY.to_le_bytes().to_vec(), "infinite"),
            (DataType::Bytes, vec![1, 0, 0, 0, 0xff], "UTF-8"),
        ] {
            let message = to_json(datatype, &raw).expect_err("must be refused");
            assert!(
                message.contains(needle) && message.contains("binary_data"),
                "{message}"
            );
        }
        assert!(to_json(DataType::Bytes, &[9, 0, 0, 0]).is_err());
        assert!(to_json(DataType::Int32, &[0; 3]).is_err());
    }
}
