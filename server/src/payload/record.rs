//! A record as one JSON line: the request id, when and what the model version answered, and each logged
//! tensor with its values flattened in row-major order (as Triton's JSON protocol sends them). BYTES
//! elements are strings when they are UTF-8 and `{"base64": ...}` otherwise; non-finite floats are the
//! strings "NaN", "inf" and "-inf", which JSON numbers cannot be.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Payload, Record, Tensor};
use crate::DataType;

/// What a redacted tensor's `data` says.
pub const REDACTED: &str = "[redacted]";

/// `record` of version `version` of `model`, as one JSON object.
pub(super) fn to_json(model: &str, version: u64, record: &Record) -> Value {
    let capture = &record.capture;
    json!({
        "timestamp": rfc3339(capture.time),
        "model": model,
        "version": version.to_string(),
        "id": capture.id,
        "latency_us": u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX),
        "inputs": capture.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "outputs": capture.outputs.iter().map(tensor).collect::<Vec<_>>(),
    })
}

fn tensor(tensor: &Tensor) -> Value {
    let mut object = Map::new();
    object.insert("name".into(), tensor.name.clone().into());
    object.insert("datatype".into(), tensor.data_type.wire_name().into());
    object.insert("shape".into(), tensor.shape.clone().into());
    let elements = tensor.shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    });
    let data = match &tensor.payload {
        Payload::Redacted => Some(Value::from(REDACTED)),
        Payload::Truncated => None,
        Payload::Fixed(bytes) => Some(Value::Array(numbers(tensor.data_type, bytes))),
        Payload::Strings(items) => Some(Value::Array(items.iter().map(string).collect())),
        Payload::Prefixed(bytes) => elements
            .and_then(|n| crate::request::split_length_prefixed(bytes.clone(), &tensor.name, n).ok())
            .map(|items| Value::Array(items.iter().map(string).collect())),
    };
    match data {
        Some(data) => {
            object.insert("data".into(), data);
        }
        None => {
            object.insert("truncated".into(), true.into());
        }
    }
    Value::Object(object)
}

/// A BYTES element: its text when it is UTF-8, its base64 otherwise.
fn string(item: &Bytes) -> Value {
    match std::str::from_utf8(item) {
        Ok(text) => text.into(),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(item) }),
    }
}

/// The little-endian elements of `bytes` as JSON values.
fn numbers(data_type: DataType, bytes: &[u8]) -> Vec<Value> {
    fn each<const N: usize>(bytes: &[u8], convert: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        bytes
            .chunks_exact(N)
            .map(|chunk| convert(chunk.try_into().unwrap_or([0; N])))
            .collect()
    }
    match data_type {
        DataType::Bool => each(bytes, |[b]: [u8; 1]| Value::Bool(b != 0)),
        DataType::Uint8 => each(bytes, |b| u8::from_le_bytes(b).into()),
        DataType::Int8 => each(bytes, |b| i8::from_le_bytes(b).into()),
        DataType::Uint16 => each(bytes, |b| u16::from_le_bytes(b).into()),
        DataType::Int16 => each(bytes, |b| i16::from_le_bytes(b).into()),
        DataType::Uint32 => each(bytes, |b| u32::from_le_bytes(b).into()),
        DataType::Int32 => each(bytes, |b| i32::from_le_bytes(b).into()),
        DataType::Uint64 => each(bytes, |b| u64::from_le_bytes(b).into()),
        DataType::Int64 => each(bytes, |b| i64::from_le_bytes(b).into()),
        DataType::Fp16 => each(bytes, |b| float(half::f16::from_le_bytes(b).to_f64())),
        DataType::Bf16 => each(bytes, |b| float(half::bf16::from_le_bytes(b).to_f64())),
        DataType::Fp32 => each(bytes, |b| float(f64::from(f32::from_le_bytes(b)))),
        DataType::Fp64 => each(bytes, |b| float(f64::from_le_bytes(b))),
        DataType::Bytes => Vec::new(),
    }
}

/// A float as a JSON number, or as a string where JSON has no number for it.
fn float(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or_else(
        || {
            Value::from(if value.is_nan() {
                "NaN"
            } else if value > 0.0 {
                "inf"
            } else {
                "-inf"
            })
        },
        Value::Number,
    )
}

/// `time` in UTC as RFC 3339 with microseconds, e.g. `2026-11-30T20:15:03.123456Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(at(1_709_210_096), "2024-02-29T12:34:56.000000Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00.000000Z");
    }

    #[test]
    fn values_keep_their_type_and_non_finite_floats_become_strings() {
        let floats: Vec<u8> = [1.5f32, f32::NAN, f32::NEG_INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            numbers(DataType::Fp32, &floats),
            vec![json!(1.5), json!("NaN"), json!("-inf")]
        );
        assert_eq!(numbers(DataType::Int8, &[255]), vec![json!(-1)]);
        assert_eq!(numbers(DataType::Bool, &[0, 1]), vec![json!(false), json!(true)]);
        assert_eq!(string(&Bytes::from_static(b"hi")), json!("hi"));
        assert_eq!(string(&Bytes::from_static(&[0xff])), json!({"base64": "/w=="}));
    }
}
