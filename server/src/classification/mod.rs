//! Triton's classification extension: a requested output with the `classification` parameter is answered
//! with its top classes, as a BYTES tensor of "value:index" or "value:index:label" strings, instead of its
//! raw values. Both front ends reach it through the one inference path: the parameter is read once when the
//! request is parsed ([`requested`]), the labels once when the model loads ([`OutputLabels::load`]), and the
//! model's outputs are replaced after it has run ([`apply`]).
//!
//! The facts come from Triton (server `src/classification.cc`, `src/grpc/infer_handler.h`,
//! `src/grpc/grpc_utils.cc`, `src/http_server.cc`; core `src/label_provider.cc`, `src/model.cc`):
//! - a batching model is classified row by row into shape `[batch, min(k, classes)]`, a model without
//!   batching as one flat tensor into `[min(k, classes)]`; the index is the position in the row, flattened;
//! - values are sorted largest first; floats print as C's `%f` (six decimals), integers in decimal;
//! - the label of class `i` is line `i` of the output's `label_filename`; a missing or empty line adds none;
//! - only the fixed-size numeric types may be classified (not BOOL, FP16, BF16 or BYTES).
//!
//! Where Triton leaves things open, Ferry decides: equal values keep index order and NaN comes last (Triton's
//! sort gives no order), and a count above 2^32 is not truncated (Triton keeps 32 bits of it).

mod labels;

use std::{cmp::Ordering, io::Write as _, num::NonZeroU64};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, infer_parameter::ParameterChoice, model_infer_request::InferRequestedOutputTensor,
};

pub use labels::{Labels, MAX_LABEL_FILE_BYTES, OutputLabels};

use crate::{DataType, Error, config::ModelSpec, onnx::OutputTensor};

/// The requested-output parameter that asks for classification.
pub const PARAMETER: &str = "classification";

/// How many classes an output is asked for: at least one. A count above an output's class count returns
/// every class, so the count itself is never allocated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassCount(NonZeroU64);

impl ClassCount {
    /// A count of `count` classes; `None` for 0.
    pub fn new(count: u64) -> Option<Self> {
        NonZeroU64::new(count).map(Self)
    }

    /// The number of classes asked for.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// Reads a gRPC `classification` parameter, with Triton's checks and messages (`ParseClassificationParams`
    /// in its `grpc_utils.cc`): an `int64_param` greater than 0.
    pub fn from_parameter(parameter: &InferParameter) -> Result<Self, Error> {
        match parameter.parameter_choice {
            Some(ParameterChoice::Int64Param(count)) => u64::try_from(count)
                .ok()
                .and_then(Self::new)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "invalid value for 'classification' parameter, expected >= 0 (got {count}; ask for 1 or \
                         more classes)"
                    ))
                }),
            ref other => Err(Error::invalid(format!(
                "invalid value type for 'classification' parameter, expected int64_param (got {other:?})"
            ))),
        }
    }
}

/// A requested output to answer with its top classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The output's position in the model spec.
    pub output: usize,
    /// How many classes to return per row.
    pub count: ClassCount,
}

/// The classifications `outputs` ask for. An output may not be both classified and written to shared
/// memory, and only outputs of a numeric fixed-size type can be classified; both are refused here, before
/// the model runs, with Triton's messages. Unknown output names are left to the caller.
pub fn requested(
    outputs: &[InferRequestedOutputTensor],
    spec: &ModelSpec,
) -> Result<Vec<Classification>, Error> {
    let mut classifications = Vec::new();
    for wire in outputs {
        let Some(parameter) = wire.parameters.get(PARAMETER) else {
            continue;
        };
        let count = ClassCount::from_parameter(parameter)?;
        if wire.parameters.contains_key(crate::shm::REGION) {
            return Err(Error::invalid(format!(
                "output can't set both 'shared_memory_region' and 'classification' (output '{}')",
                wire.name
            )));
        }
        let Some((output, tensor)) = spec.output(&wire.name) else {
            continue;
        };
        if !classifiable(tensor.data_type) {
            return Err(Error::invalid(format!(
                "class result not available for output due to unsupported type '{}' (output '{}')",
                tensor.data_type.wire_name(),
                wire.name
            )));
        }
        classifications.push(Classification { output, count });
    }
    Ok(classifications)
}

/// Whether Triton's `TopkClassifications` accepts the type: the integers, FP32 and FP64.
fn classifiable(data_type: DataType) -> bool {
    !matches!(
        data_type,
        DataType::Bool | DataType::Fp16 | DataType::Bf16 | DataType::Bytes
    )
}

/// Replaces each classified output of `outputs` by its top classes: BYTES elements, 4-byte length-prefixed
/// as raw BYTES contents are. `max_bytes` bounds what the strings may take, so that a large output cannot
/// turn into a larger answer than a response may carry.
pub fn apply(
    mut outputs: Vec<OutputTensor>,
    classifications: &[Classification],
    spec: &ModelSpec,
    max_bytes: usize,
) -> Result<Vec<OutputTensor>, Error> {
    for output in &mut outputs {
        let Some(wanted) = classifications.iter().find(|c| c.output == output.index) else {
            continue;
        };
        let Some(tensor) = spec.outputs.get(output.index) else {
            continue;
        };
        let (shape, data) = classify(
            &output.shape,
            &output.data,
            tensor.data_type,
            wanted.count,
            spec.max_batch_size > 0,
            spec.labels.of(output.index),
            max_bytes,
        )
        .map_err(|budget| {
            Error::TooLarge(format!(
                "the top classes of output '{}' of model '{}' take more than {budget} bytes, the most a \
                 response may carry (--grpc-max-message-bytes); ask for fewer classes or rows",
                tensor.name, spec.name
            ))
        })?;
        output.shape = shape;
        output.data = data;
    }
    Ok(outputs)
}

/// The top `count` classes of a tensor of `shape` and `data_type` (one row per batch entry when `batched`,
/// else the whole tensor as one row), with the shape they answer in; `Err(max_bytes)` when the strings
/// would take more than `max_bytes`.
pub fn classify(
    shape: &[i64],
    data: &[u8],
    data_type: DataType,
    count: ClassCount,
    batched: bool,
    labels: Option<&Labels>,
    max_bytes: usize,
) -> Result<(Vec<i64>, Bytes), usize> {
    let rows = match (batched, shape.first()) {
        (true, Some(rows)) => usize::try_from(*rows).unwrap_or(0),
        _ => 1,
    };
    let size = data_type.element_size().unwrap_or(1);
    let per_row = match rows {
        0 => 0,
        rows => data.len() / size / rows,
    };
    let k = usize::try_from(count.get()).unwrap_or(usize::MAX).min(per_row);
    let mut writer = ClassWriter {
        out: Vec::new(),
        labels,
        max_bytes,
    };
    // With no class per row (k is 0), each row is an empty list of strings.
    if k > 0 {
        for row in data.chunks_exact(per_row * size).take(rows) {
            match data_type {
                DataType::Uint8 => writer.top::<u8>(row, k)?,
                DataType::Uint16 => writer.top::<u16>(row, k)?,
                DataType::Uint32 => writer.top::<u32>(row, k)?,
                DataType::Uint64 => writer.top::<u64>(row, k)?,
                DataType::Int8 => writer.top::<i8>(row, k)?,
                DataType::Int16 => writer.top::<i16>(row, k)?,
                DataType::Int32 => writer.top::<i32>(row, k)?,
                DataType::Int64 => writer.top::<i64>(row, k)?,
                DataType::Fp32 => writer.top::<f32>(row, k)?,
                DataType::Fp64 => writer.top::<f64>(row, k)?,
                // Refused when the request was parsed.
                DataType::Bool | DataType::Fp16 | DataType::Bf16 | DataType::Bytes => {}
            }
        }
    }
    let mut answer_shape = Vec::with_capacity(2);
    if batched && !shape.is_empty() {
        answer_shape.push(rows as i64);
    }
    answer_shape.push(k as i64);
    Ok((answer_shape, Bytes::from(writer.out)))
}

/// A value type a classified output may hold.
trait Score: Copy {
    /// Its size in bytes.
    const SIZE: usize;
    /// Reads one little-endian value of exactly `SIZE` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Ascending order, NaN below everything.
    fn order(self, other: Self) -> Ordering;
    /// Writes the value as Triton's `std::to_string` does.
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! integer_score {
    ($($t:ty),*) => {$(
        impl Score for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(std::array::from_fn(|i| bytes[i]))
            }
            fn order(self, other: Self) -> Ordering {
                self.cmp(&other)
            }
            fn write(self, out: &mut Vec<u8>) {
                // Writing into a Vec cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

integer_score!(u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! float_score {
    ($($t:ty),*) => {$(
        impl Score for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(std::array::from_fn(|i| bytes[i]))
            }
            fn order(self, other: Self) -> Ordering {
                match (self.is_nan(), other.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => self.partial_cmp(&other).unwrap_or(Ordering::Equal),
                }
            }
            fn write(self, out: &mut Vec<u8>) {
                // C's "%f" of the value widened to double: Rust's fixed-precision output is the same
                // correctly rounded decimal, except that C spells NaN "nan" or "-nan".
                let value = f64::from(self);
                if value.is_nan() {
                    out.extend_from_slice(if value.is_sign_negative() { b"-nan" } else { b"nan" });
                } else {
                    let _ = write!(out, "{value:.6}");
                }
            }
        }
    )*};
}

float_score!(f32, f64);

/// Writes class strings, length-prefixed, into one buffer bounded by `max_bytes`.
struct ClassWriter<'a> {
    out: Vec<u8>,
    labels: Option<&'a Labels>,
    max_bytes: usize,
}

impl ClassWriter<'_> {
    /// Appends the `k` largest values of `row` (indices in the row), largest first.
    fn top<T: Score>(&mut self, row: &[u8], k: usize) -> Result<(), usize> {
        if k == 0 {
            return Ok(());
        }
        let values: Vec<T> = row.chunks_exact(T::SIZE).map(T::read).collect();
        let mut order: Vec<usize> = (0..values.len()).collect();
        let by_rank = |a: &usize, b: &usize| values[*b].order(values[*a]).then(a.cmp(b));
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, by_rank);
            order.truncate(k);
        }
        order.sort_unstable_by(by_rank);
        for index in order {
            let start = self.out.len();
            self.out.extend_from_slice(&[0; 4]);
            values[index].write(&mut self.out);
            let _ = write!(self.out, ":{index}");
            if let Some(label) = self.labels.and_then(|labels| labels.get(index)) {
                self.out.push(b':');
                self.out.extend_from_slice(label);
            }
            if self.out.len() > self.max_bytes {
                return Err(self.max_bytes);
            }
            let length = (self.out.len() - start - 4) as u32;
            self.out[start..start + 4].copy_from_slice(&length.to_le_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{ConfigSource, complete_config, parse_model_config};

    /// A model with one output of each kind the tests need.
    pub(crate) fn spec(max_batch_size: usize) -> ModelSpec {
        let text = format!(
            "platform: \"onnxruntime_onnx\"\nmax_batch_size: {max_batch_size}\n\
             input [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n\
             output [ {{ name: \"p\" data_type: TYPE_FP32 dims: [ 4 ] label_filename: \"labels.txt\" }},\n\
                      {{ name: \"b\" data_type: TYPE_BOOL dims: [ 4 ] }},\n\
                      {{ name: \"h\" data_type: TYPE_FP16 dims: [ 4 ] }} ]\n"
        );
        let mut config = parse_model_config(&text, "m/config.pbtxt").expect("parses");
        complete_config(&mut config, None, "m/config.pbtxt").expect("completes");
        let source = ConfigSource {
            path: "m/config.pbtxt",
            text: Some(&text),
        };
        ModelSpec::from_config(config, "m", source).expect("valid")
    }

    fn parameter(choice: ParameterChoice) -> InferParameter {
        InferParameter {
            parameter_choice: Some(choice),
        }
    }

    fn output(name: &str, parameters: &[(&str, ParameterChoice)]) -> InferRequestedOutputTensor {
        InferRequestedOutputTensor {
            name: name.into(),
            parameters: parameters
                .iter()
                .map(|(key, choice)| ((*key).to_owned(), parameter(choice.clone())))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
        result.expect_err("must fail").to_string()
    }

    /// The strings of a length-prefixed BYTES tensor.
    fn strings(data: &Bytes, count: usize) -> Vec<String> {
        crate::request::split_length_prefixed(data.clone(), "out", count)
            .expect("well-formed")
            .iter()
            .map(|s| String::from_utf8(s.to_vec()).expect("UTF-8"))
            .collect()
    }

    fn le<T: Copy>(values: &[T], to_le: fn(T) -> Vec<u8>) -> Vec<u8> {
        values.iter().flat_map(|v| to_le(*v)).collect()
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        le(values, |v| v.to_le_bytes().to_vec())
    }

    /// Triton's gRPC checks (`ParseClassificationParams` in server `src/grpc/grpc_utils.cc`).
    #[test]
    fn the_grpc_parameter_is_a_positive_int64() {
        let count = |choice| ClassCount::from_parameter(&parameter(choice));
        assert_eq!(count(ParameterChoice::Int64Param(5)).expect("valid").get(), 5);
        for bad in [0, -1, i64::MIN] {
            let text = message(count(ParameterChoice::Int64Param(bad)));
            assert!(
                text.starts_with("invalid value for 'classification' parameter, expected >= 0"),
                "{text}"
            );
        }
        for bad in [
            ParameterChoice::Uint64Param(3),
            ParameterChoice::StringParam("3".into()),
            ParameterChoice::DoubleParam(3.0),
        ] {
            let text = message(count(bad));
            assert!(
                text.starts_with("invalid value type for 'classification' parameter, expected int64_param"),
                "{text}"
            );
        }
    }

    /// Triton refuses classification with shared memory (`InferAllocatorPayload` in server
    /// `src/grpc/infer_handler.h`) and on types `TopkClassifications` cannot rank (`src/classification.cc`).
    #[test]
    fn requested_outputs_are_checked_before_the_model_runs() {
        let spec = spec(4);
        let k = |n| (PARAMETER, ParameterChoice::Int64Param(n));
        let found = requested(&[output("b", &[]), output("p", &[k(3)])], &spec).expect("valid");
        assert_eq!(
            found,
            [Classification {
                output: 0,
                count: ClassCount::new(3).expect("non-zero")
            }]
        );
        let region = (crate::shm::REGION, ParameterChoice::StringParam("r".into()));
        let both = message(requested(&[output("p", &[k(3), region])], &spec));
        assert!(
            both.starts_with("output can't set both 'shared_memory_region' and 'classification'"),
            "{both}"
        );
        for (name, type_name) in [("b", "BOOL"), ("h", "FP16")] {
            let text = message(requested(&[output(name, &[k(1)])], &spec));
            assert!(
                text.starts_with(&format!(
                    "class result not available for output due to unsupported type '{type_name}'"
                )),
                "{text}"
            );
        }
    }

    /// Rows, order, formatting and labels as Triton's `TopkClassifications` and `std::to_string` give them.
    #[test]
    fn batched_outputs_are_ranked_row_by_row() {
        let labels = Labels::from_bytes(b"zero\none\n\nthree\n".to_vec());
        let data = f32s(&[0.1, 0.7, 0.2, -3.5, 2.0, -0.0, 1e10, 0.5]);
        let count = ClassCount::new(2).expect("non-zero");
        let (shape, out) = classify(
            &[2, 4],
            &data,
            DataType::Fp32,
            count,
            true,
            Some(&labels),
            1 << 20,
        )
        .expect("fits");
        assert_eq!(shape, [2, 2]);
        assert_eq!(
            strings(&out, 4),
            [
                "0.700000:1:one",
                "0.200000:2", // an empty label line adds no label
                "10000000000.000000:2",
                "2.000000:0:zero",
            ]
        );
        // More classes than the row holds: every class, shape [rows, classes].
        let all = ClassCount::new(u64::MAX).expect("non-zero");
        let (shape, out) = classify(&[2, 4], &data, DataType::Fp32, all, true, None, 1 << 20).expect("fits");
        assert_eq!(shape, [2, 4]);
        assert_eq!(
            strings(&out, 8)[4..],
            ["10000000000.000000:2", "2.000000:0", "0.500000:3", "-0.000000:1"]
        );
    }

    #[test]
    fn unbatched_outputs_are_ranked_as_one_flat_row() {
        let data = le(&[-128i8, 5, 127, 5, 0, -1], |v| v.to_le_bytes().to_vec());
        let count = ClassCount::new(4).expect("non-zero");
        let (shape, out) =
            classify(&[2, 3], &data, DataType::Int8, count, false, None, 1 << 20).expect("fits");
        assert_eq!(shape, [4]);
        // Equal values keep index order.
        assert_eq!(strings(&out, 4), ["127:2", "5:1", "5:3", "0:4"]);
        let data = le(&[u64::MAX, 1], |v| v.to_le_bytes().to_vec());
        let (_, out) = classify(&[2], &data, DataType::Uint64, count, false, None, 1 << 20).expect("fits");
        assert_eq!(strings(&out, 2), ["18446744073709551615:0", "1:1"]);
    }

    #[test]
    fn nan_ranks_last_and_prints_as_c_does() {
        let data = le(&[f64::NAN, 1.0, f64::NEG_INFINITY, -f64::NAN], |v| {
            v.to_le_bytes().to_vec()
        });
        let count = ClassCount::new(4).expect("non-zero");
        let (_, out) = classify(&[1, 4], &data, DataType::Fp64, count, true, None, 1 << 20).expect("fits");
        assert_eq!(strings(&out, 4), ["1.000000:1", "-inf:2", "nan:0", "-nan:3"]);
    }

    #[test]
    fn empty_rows_give_empty_lists_and_the_budget_is_kept() {
        let count = ClassCount::new(3).expect("non-zero");
        let (shape, out) = classify(&[2, 0], &[], DataType::Fp32, count, true, None, 1 << 20).expect("fits");
        assert_eq!((shape, out.len()), (vec![2, 0], 0));
        let data = f32s(&[1.0; 64]);
        assert_eq!(
            classify(&[64], &data, DataType::Fp32, count, false, None, 20),
            Err(20)
        );
    }

    #[test]
    fn apply_replaces_only_the_classified_outputs() {
        let mut spec = spec(4);
        spec.labels = OutputLabels::from_labels(vec![Some(Labels::from_bytes(b"a\nb\nc\nd\n".to_vec()))]);
        let outputs = vec![
            OutputTensor {
                index: 0,
                shape: vec![1, 4],
                data: Bytes::from(f32s(&[0.0, 3.0, 1.0, 2.0])),
            },
            OutputTensor {
                index: 1,
                shape: vec![1, 4],
                data: Bytes::from_static(&[1, 0, 1, 0]),
            },
        ];
        let wanted = [Classification {
            output: 0,
            count: ClassCount::new(1).expect("non-zero"),
        }];
        let answered = apply(outputs.clone(), &wanted, &spec, 1 << 20).expect("fits");
        assert_eq!(answered[0].shape, [1, 1]);
        assert_eq!(strings(&answered[0].data, 1), ["3.000000:1:b"]);
        assert_eq!(answered[1], outputs[1]);
        match apply(outputs, &wanted, &spec, 4) {
            Err(Error::TooLarge(text)) => assert!(text.contains("output 'p' of model 'm'"), "{text}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
