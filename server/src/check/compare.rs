//! Comparing what a model answered with what a sample expects: datatype and shape when the sample gives
//! them, then every element, floats within the tolerance and everything else exactly.

use ferry_proto::inference::ModelInferResponse;
use serde_json::Value;

use super::samples::{ExpectedOutput, Tolerance};
use crate::DataType;

/// One element of an output, decoded from its raw bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Element<'a> {
    Bool(bool),
    Integer(i128),
    Float(f64),
    Bytes(&'a [u8]),
}

/// What is wrong with output `expected.name` of `response`, if anything: one message naming the output,
/// and for elements the first that differs with the expected and the received value.
pub fn compare_output(
    response: &ModelInferResponse,
    expected: &ExpectedOutput,
    tolerance: Tolerance,
) -> Option<String> {
    let name = &expected.name;
    let Some(position) = response.outputs.iter().position(|o| o.name == *name) else {
        let returned: Vec<String> = response.outputs.iter().map(|o| format!("'{}'", o.name)).collect();
        return Some(format!(
            "output '{name}' is not in the response; the model returned {}",
            returned.join(", ")
        ));
    };
    let output = &response.outputs[position];
    let raw = response
        .raw_output_contents
        .get(position)
        .map(|raw| &raw[..])
        .unwrap_or_default();
    if let Some(datatype) = &expected.datatype
        && *datatype != output.datatype
    {
        return Some(format!(
            "output '{name}': expected datatype {datatype}, got {}",
            output.datatype
        ));
    }
    if let Some(shape) = &expected.shape
        && *shape != output.shape
    {
        return Some(format!(
            "output '{name}': expected shape {shape:?}, got {:?}",
            output.shape
        ));
    }
    let Some(datatype) = DataType::from_wire_name(&output.datatype) else {
        return Some(format!(
            "output '{name}' has datatype {}, which Ferry cannot read",
            output.datatype
        ));
    };
    // The received elements are read one at a time, never all at once: only the expected ones, bounded by
    // the sample file's size, are held.
    let Some(count) = element_count(datatype, raw) else {
        return Some(format!("output '{name}' holds malformed {datatype} data"));
    };
    let mut wanted = Vec::new();
    leaves(&expected.data, &mut wanted);
    if wanted.len() != count {
        return Some(format!(
            "output '{name}': expected {} elements, got {count} (shape {:?})",
            wanted.len(),
            output.shape
        ));
    }
    let mut first = None;
    let mut differing = 0usize;
    for (index, (want, have)) in wanted.iter().zip(elements(datatype, raw)).enumerate() {
        if !matches(want, have, tolerance) {
            differing += 1;
            first.get_or_insert((index, *want, have));
        }
    }
    let (index, want, have) = first?;
    let float = matches!(have, Element::Float(_));
    let allowed = if float {
        format!(
            "; tolerance: absolute {}, relative {}",
            tolerance.absolute, tolerance.relative
        )
    } else {
        String::new()
    };
    Some(format!(
        "output '{name}' {}: expected {}, got {} ({differing} of {} elements differ{allowed})",
        position_text(index, &output.shape),
        excerpt(&want.to_string()),
        show(have, datatype),
        count,
    ))
}

/// Whether a received element is the expected JSON value: floats within `tolerance`, everything else
/// exactly; a JSON value of the wrong kind never matches.
fn matches(want: &Value, have: Element<'_>, tolerance: Tolerance) -> bool {
    match have {
        Element::Bool(have) => want.as_bool() == Some(have),
        Element::Integer(have) => {
            want.as_i64().map(i128::from) == Some(have) || want.as_u64().map(i128::from) == Some(have)
        }
        Element::Float(have) => want.as_f64().is_some_and(|want| tolerance.accepts(want, have)),
        Element::Bytes(have) => want.as_str().is_some_and(|want| want.as_bytes() == have),
    }
}

/// How many elements raw `data` of `datatype` holds; `None` when the bytes are not whole elements.
fn element_count(datatype: DataType, data: &[u8]) -> Option<usize> {
    match datatype.element_size() {
        Some(size) => data.len().is_multiple_of(size).then(|| data.len() / size),
        None => {
            let mut count = 0usize;
            let mut rest = data;
            while !rest.is_empty() {
                let (prefix, tail) = rest.split_first_chunk::<4>()?;
                rest = tail.get(u32::from_le_bytes(*prefix) as usize..)?;
                count += 1;
            }
            Some(count)
        }
    }
}

/// The elements of raw little-endian `data` (4-byte length-prefixed for BYTES), already checked by
/// [`element_count`] to be whole elements.
fn elements(datatype: DataType, data: &[u8]) -> Box<dyn Iterator<Item = Element<'_>> + '_> {
    let Some(size) = datatype.element_size() else {
        let mut rest = data;
        return Box::new(std::iter::from_fn(move || {
            let (prefix, tail) = rest.split_first_chunk::<4>()?;
            let (element, after) = tail.split_at_checked(u32::from_le_bytes(*prefix) as usize)?;
            rest = after;
            Some(Element::Bytes(element))
        }));
    };
    Box::new(data.chunks_exact(size).map(move |c| {
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(c);
        let unsigned = u64::from_le_bytes(word);
        match datatype {
            DataType::Bool => Element::Bool(c[0] != 0),
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => {
                Element::Integer(i128::from(unsigned))
            }
            DataType::Int8 => Element::Integer(i128::from(c[0] as i8)),
            DataType::Int16 => Element::Integer(i128::from(unsigned as u16 as i16)),
            DataType::Int32 => Element::Integer(i128::from(unsigned as u32 as i32)),
            DataType::Int64 => Element::Integer(i128::from(unsigned as i64)),
            DataType::Fp16 => Element::Float(half::f16::from_bits(unsigned as u16).to_f64()),
            DataType::Bf16 => Element::Float(half::bf16::from_bits(unsigned as u16).to_f64()),
            DataType::Fp32 => Element::Float(f64::from(f32::from_bits(unsigned as u32))),
            DataType::Fp64 => Element::Float(f64::from_bits(unsigned)),
            DataType::Bytes => Element::Bytes(c),
        }
    }))
}

/// The leaves of `value` in row-major order: a nested `data` array read as flat, as the REST decoder does.
fn leaves<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => {
            for item in items {
                leaves(item, out);
            }
        }
        other => out.push(other),
    }
}

/// Where element `index` sits: its index in each dimension of `shape`, or the flat index when the shape
/// does not hold it.
fn position_text(index: usize, shape: &[i64]) -> String {
    let dims: Option<Vec<usize>> = shape.iter().map(|d| usize::try_from(*d).ok()).collect();
    let fits = dims
        .as_ref()
        .and_then(|dims| dims.iter().try_fold(1usize, |n, d| n.checked_mul(*d)))
        .is_some_and(|count| index < count);
    match dims.filter(|_| fits) {
        Some(dims) => {
            let mut rest = index;
            let mut at = vec![0usize; dims.len()];
            for (slot, dim) in at.iter_mut().zip(&dims).rev() {
                *slot = rest % dim;
                rest /= dim;
            }
            let at: Vec<String> = at.iter().map(ToString::to_string).collect();
            format!("[{}]", at.join(", "))
        }
        None => format!("element {index}"),
    }
}

/// A received element as the REST API would write it: FP32 in its shortest form, strings quoted.
fn show(element: Element<'_>, datatype: DataType) -> String {
    match element {
        Element::Bool(b) => b.to_string(),
        Element::Integer(i) => i.to_string(),
        Element::Float(f) if datatype == DataType::Fp32 => (f as f32).to_string(),
        Element::Float(f) => f.to_string(),
        Element::Bytes(bytes) => {
            excerpt(&Value::String(String::from_utf8_lossy(bytes).into_owned()).to_string())
        }
    }
}

/// `text` cut to a length a one-line message can carry.
fn excerpt(text: &str) -> String {
    const LIMIT: usize = 80;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_proto::inference::model_infer_response::InferOutputTensor;
    use serde_json::json;

    use super::*;
    use crate::check::samples::DEFAULT_TOLERANCE;

    fn response(outputs: Vec<(&str, DataType, Vec<i64>, Vec<u8>)>) -> ModelInferResponse {
        let mut response = ModelInferResponse::default();
        for (name, datatype, shape, raw) in outputs {
            response.outputs.push(InferOutputTensor {
                name: name.to_owned(),
                datatype: datatype.wire_name().to_owned(),
                shape,
                ..Default::default()
            });
            response.raw_output_contents.push(Bytes::from(raw));
        }
        response
    }

    fn expected(value: Value) -> ExpectedOutput {
        serde_json::from_value(value).expect("an expected output")
    }

    fn int32(values: &[i32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn integers_compare_exactly_and_the_first_difference_is_named() {
        let answer = response(vec![("OUT", DataType::Int32, vec![2, 2], int32(&[1, -2, 3, 4]))]);
        let good =
            expected(json!({"name": "OUT", "datatype": "INT32", "shape": [2, 2], "data": [[1, -2], [3, 4]]}));
        assert_eq!(compare_output(&answer, &good, DEFAULT_TOLERANCE), None);
        let wrong = expected(json!({"name": "OUT", "data": [1, -2, 5, 6]}));
        assert_eq!(
            compare_output(&answer, &wrong, DEFAULT_TOLERANCE).as_deref(),
            Some("output 'OUT' [1, 0]: expected 5, got 3 (2 of 4 elements differ)")
        );
        // An integer output never matches a float, however close.
        let float = expected(json!({"name": "OUT", "data": [1.0, -2, 3, 4]}));
        assert!(compare_output(&answer, &float, DEFAULT_TOLERANCE).is_some());
    }

    #[test]
    fn floats_compare_within_the_tolerance() {
        let raw: Vec<u8> = [0.5f32, 100.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let answer = response(vec![("y", DataType::Fp32, vec![2], raw)]);
        let close = expected(json!({"name": "y", "data": [0.5000004, 100.0009]}));
        assert_eq!(compare_output(&answer, &close, DEFAULT_TOLERANCE), None);
        let far = expected(json!({"name": "y", "data": [0.5, 100.01]}));
        let message = compare_output(&answer, &far, DEFAULT_TOLERANCE).expect("outside the tolerance");
        assert_eq!(
            message,
            "output 'y' [1]: expected 100.01, got 100 (1 of 2 elements differ; tolerance: absolute 0.000001, \
             relative 0.00001)"
        );
        let loose = Tolerance {
            absolute: 0.02,
            relative: 0.0,
        };
        assert_eq!(compare_output(&answer, &far, loose), None);
    }

    #[test]
    fn strings_bools_and_half_floats() {
        let strings: Vec<u8> = ["ab", ""]
            .iter()
            .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
            .collect();
        let half: Vec<u8> = [half::f16::from_f32(1.5)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let answer = response(vec![
            ("s", DataType::Bytes, vec![2], strings),
            ("b", DataType::Bool, vec![2], vec![1, 0]),
            ("h", DataType::Fp16, vec![1], half),
        ]);
        let ok = |value: Value| compare_output(&answer, &expected(value), DEFAULT_TOLERANCE);
        assert_eq!(ok(json!({"name": "s", "data": ["ab", ""]})), None);
        assert_eq!(
            ok(json!({"name": "s", "data": ["ab", "c"]})).as_deref(),
            Some("output 's' [1]: expected \"c\", got \"\" (1 of 2 elements differ)")
        );
        assert_eq!(ok(json!({"name": "b", "data": [true, false]})), None);
        assert!(
            ok(json!({"name": "b", "data": [1, 0]})).is_some(),
            "BOOL takes JSON booleans"
        );
        assert_eq!(ok(json!({"name": "h", "data": [1.5]})), None);
    }

    #[test]
    fn every_integer_type_decodes_to_its_exact_value() {
        let cases: Vec<(DataType, Vec<u8>, Value)> = vec![
            (DataType::Int8, vec![0xff], json!(-1)),
            (DataType::Uint8, vec![0xff], json!(255)),
            (DataType::Int16, (-2i16).to_le_bytes().to_vec(), json!(-2)),
            (DataType::Uint16, u16::MAX.to_le_bytes().to_vec(), json!(65535)),
            (DataType::Uint32, u32::MAX.to_le_bytes().to_vec(), json!(u32::MAX)),
            (DataType::Int64, i64::MIN.to_le_bytes().to_vec(), json!(i64::MIN)),
            (DataType::Uint64, u64::MAX.to_le_bytes().to_vec(), json!(u64::MAX)),
            (
                DataType::Bf16,
                half::bf16::from_f32(-2.5).to_le_bytes().to_vec(),
                json!(-2.5),
            ),
            (DataType::Fp64, 0.1f64.to_le_bytes().to_vec(), json!(0.1)),
        ];
        for (datatype, raw, value) in cases {
            let answer = response(vec![("o", datatype, vec![1], raw)]);
            let good = expected(json!({"name": "o", "data": [value]}));
            assert_eq!(
                compare_output(&answer, &good, DEFAULT_TOLERANCE),
                None,
                "{datatype}"
            );
            let off = expected(json!({"name": "o", "data": [7]}));
            assert!(
                compare_output(&answer, &off, DEFAULT_TOLERANCE).is_some(),
                "{datatype}"
            );
        }
    }

    #[test]
    fn malformed_output_data_is_said_not_read() {
        let overrun = [9u32.to_le_bytes().as_slice(), b"abc"].concat();
        let answer = response(vec![
            ("s", DataType::Bytes, vec![1], overrun),
            ("i", DataType::Int32, vec![1], vec![1, 2, 3]),
        ]);
        let check = |name: &str| {
            compare_output(
                &answer,
                &expected(json!({"name": name, "data": [1]})),
                DEFAULT_TOLERANCE,
            )
        };
        assert_eq!(
            check("s").as_deref(),
            Some("output 's' holds malformed BYTES data")
        );
        assert_eq!(
            check("i").as_deref(),
            Some("output 'i' holds malformed INT32 data")
        );
    }

    #[test]
    fn names_datatypes_shapes_and_counts_are_checked_first() {
        let answer = response(vec![("OUT", DataType::Int32, vec![1, 2], int32(&[1, 2]))]);
        let check =
            |value: Value| compare_output(&answer, &expected(value), DEFAULT_TOLERANCE).expect("fails");
        assert_eq!(
            check(json!({"name": "MISSING", "data": []})),
            "output 'MISSING' is not in the response; the model returned 'OUT'"
        );
        assert_eq!(
            check(json!({"name": "OUT", "datatype": "FP32", "data": [1, 2]})),
            "output 'OUT': expected datatype FP32, got INT32"
        );
        assert_eq!(
            check(json!({"name": "OUT", "shape": [2], "data": [1, 2]})),
            "output 'OUT': expected shape [2], got [1, 2]"
        );
        assert_eq!(
            check(json!({"name": "OUT", "data": [1, 2, 3]})),
            "output 'OUT': expected 3 elements, got 2 (shape [1, 2])"
        );
    }
}
