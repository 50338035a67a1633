//! Padding to bucket lengths, an opt-in beyond Triton for models with a dynamic sequence dimension: the
//! `ferry.pad_to_bucket` parameters, checked when the model loads.
//!
//! With `ferry.pad_to_bucket: "16,32,64"`, a request whose inputs have length 20 in the padded dimension is
//! padded to 32 before it queues, so that it batches with every other request of bucket 32, and the outputs
//! that carry that dimension are trimmed back to 20 before they are answered ([`crate::model`] does both).

use ferry_proto::inference::ModelConfig;

use super::{ConfigSource, TensorSpec};
use crate::{DataType, Error};

/// The parameter holding the bucket lengths, ascending, comma-separated.
pub const PAD_TO_BUCKET: &str = "ferry.pad_to_bucket";
/// The parameter naming the padded dimension as a position in the config's `dims` (default 0, the first
/// dimension after the batch dimension).
pub const PAD_TO_BUCKET_DIM: &str = "ferry.pad_to_bucket.dim";
/// The parameter holding the value padded elements take (default 0), written in the input's type.
pub const PAD_TO_BUCKET_VALUE: &str = "ferry.pad_to_bucket.value";
/// The most bucket lengths a model may list.
pub const MAX_BUCKETS: usize = 32;
/// The longest bucket a model may list, in elements of the padded dimension.
pub const MAX_BUCKET_LENGTH: usize = 1 << 20;

/// A model's bucket lengths and what padding and trimming touch.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketPadding {
    /// The bucket lengths, strictly ascending.
    pub lengths: Vec<usize>,
    /// The padded dimension, as a position in the config's dims (0 is the first after the batch dimension).
    pub dim: usize,
    /// Per config input, in config order: the little-endian bytes of one pad element for an input whose
    /// dims have -1 at `dim`, which is padded; `None` for an input left as it is.
    pub pad: Vec<Option<Vec<u8>>>,
    /// Per config output, in config order: whether its dims have -1 at `dim`, so that it is trimmed back.
    pub trimmed: Vec<bool>,
}

impl BucketPadding {
    /// The shortest bucket that holds `length`, or `None` when `length` exceeds the largest.
    pub fn bucket(&self, length: usize) -> Option<usize> {
        self.lengths.iter().copied().find(|bucket| *bucket >= length)
    }

    /// The largest bucket length: the longest a request may be.
    pub fn largest(&self) -> usize {
        self.lengths.last().copied().unwrap_or(0)
    }
}

/// The bucket padding `config` asks for with its `ferry.pad_to_bucket*` parameters, or `None` without
/// them. Each mistake names the parameter: lengths that are not ascending positive integers within
/// [`MAX_BUCKET_LENGTH`], more than [`MAX_BUCKETS`], a model that does not batch, no input with a variable
/// dimension at `dim`, a BYTES or reshaped tensor there, a pad value the input's type cannot hold, or a key
/// of the family Ferry does not know.
pub(super) fn bucket_padding(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    max_batch_size: usize,
    source: ConfigSource<'_>,
) -> Result<Option<BucketPadding>, Error> {
    let prefix = format!("{PAD_TO_BUCKET}.");
    if let Some(unknown) = config
        .parameters
        .keys()
        .find(|k| k.starts_with(&prefix) && ![PAD_TO_BUCKET_DIM, PAD_TO_BUCKET_VALUE].contains(&k.as_str()))
    {
        return Err(source.error(
            &[unknown],
            format!(
                "unknown parameter {unknown}: the bucket parameters are {PAD_TO_BUCKET}, {PAD_TO_BUCKET_DIM} and \
                 {PAD_TO_BUCKET_VALUE}"
            ),
        ));
    }
    let value = |key: &str| config.parameters.get(key).map(|p| p.string_value.trim());
    let Some(lengths_text) = value(PAD_TO_BUCKET) else {
        if let Some(key) = [PAD_TO_BUCKET_DIM, PAD_TO_BUCKET_VALUE]
            .into_iter()
            .find(|k| config.parameters.contains_key(*k))
        {
            return Err(source.error(
                &[key],
                format!("parameter {key} needs {PAD_TO_BUCKET}, the bucket lengths"),
            ));
        }
        return Ok(None);
    };
    let at = |key: &str, message: String| source.error(&[key], message);
    let lengths = bucket_lengths(lengths_text).map_err(|why| {
        at(
            PAD_TO_BUCKET,
            format!(
                "parameter {PAD_TO_BUCKET} must list 1 to {MAX_BUCKETS} strictly ascending lengths from 1 to \
                 {MAX_BUCKET_LENGTH}, comma-separated, got '{lengths_text}' ({why})"
            ),
        )
    })?;
    if max_batch_size == 0 {
        return Err(at(
            PAD_TO_BUCKET,
            format!("parameter {PAD_TO_BUCKET} needs a model that batches, but max_batch_size is 0"),
        ));
    }
    let dim_text = value(PAD_TO_BUCKET_DIM).unwrap_or("0");
    let dim: usize = dim_text.parse().map_err(|_| {
        at(
            PAD_TO_BUCKET_DIM,
            format!("parameter {PAD_TO_BUCKET_DIM} must be a position in dims (0 or more), got '{dim_text}'"),
        )
    })?;
    let pad_text = value(PAD_TO_BUCKET_VALUE).unwrap_or("0");
    let padded = |t: &TensorSpec| t.dims.get(dim) == Some(&-1);
    let mut pad = Vec::with_capacity(inputs.len());
    for input in inputs {
        if !padded(input) {
            pad.push(None);
            continue;
        }
        if input.data_type == DataType::Bytes || input.reshape.is_some() {
            return Err(at(
                PAD_TO_BUCKET,
                format!(
                    "input '{}' has -1 at dims position {dim} but is BYTES or reshaped, which {PAD_TO_BUCKET} \
                     cannot pad",
                    input.name
                ),
            ));
        }
        let bytes = pad_element(input.data_type, pad_text).ok_or_else(|| {
            at(
                PAD_TO_BUCKET_VALUE,
                format!(
                    "parameter {PAD_TO_BUCKET_VALUE} is '{pad_text}', which input '{}' of type {} cannot hold",
                    input.name,
                    input.data_type.wire_name()
                ),
            )
        })?;
        pad.push(Some(bytes));
    }
    if pad.iter().all(Option::is_none) {
        return Err(at(
            PAD_TO_BUCKET,
            format!(
                "parameter {PAD_TO_BUCKET} pads dims position {dim}, but no input has a variable dimension (-1) \
                 there"
            ),
        ));
    }
    let mut trimmed = Vec::with_capacity(outputs.len());
    for output in outputs {
        let trim = padded(output);
        if trim && (output.data_type == DataType::Bytes || output.reshape.is_some()) {
            return Err(at(
                PAD_TO_BUCKET,
                format!(
                    "output '{}' has -1 at dims position {dim} but is BYTES or reshaped, which {PAD_TO_BUCKET} \
                     cannot trim",
                    output.name
                ),
            ));
        }
        trimmed.push(trim);
    }
    Ok(Some(BucketPadding {
        lengths,
        dim,
        pad,
        trimmed,
    }))
}

/// The bucket lengths of `text`, or why they are not valid.
fn bucket_lengths(text: &str) -> Result<Vec<usize>, String> {
    let mut lengths: Vec<usize> = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let length: usize = item
            .parse()
            .ok()
            .filter(|l| (1..=MAX_BUCKET_LENGTH).contains(l))
            .ok_or_else(|| format!("'{item}' is not a length"))?;
        if lengths.last().is_some_and(|last| *last >= length) {
            return Err(format!("{length} does not exceed the length before it"));
        }
        if lengths.len() == MAX_BUCKETS {
            return Err(format!("more than {MAX_BUCKETS} lengths"));
        }
        lengths.push(length);
    }
    Ok(lengths)
}

/// One element of `data_type` holding `text`, little-endian, or `None` when the type cannot hold it.
fn pad_element(data_type: DataType, text: &str) -> Option<Vec<u8>> {
    fn int<T: TryFrom<i128>>(text: &str) -> Option<T> {
        text.parse::<i128>().ok().and_then(|v| T::try_from(v).ok())
    }
    let float = || text.parse::<f64>().ok().filter(|v| v.is_finite());
    Some(match data_type {
        DataType::Bool => match text {
            "0" | "false" => vec![0],
            "1" | "true" => vec![1],
            _ => return None,
        },
        DataType::Uint8 => int::<u8>(text)?.to_le_bytes().to_vec(),
        DataType::Uint16 => int::<u16>(text)?.to_le_bytes().to_vec(),
        DataType::Uint32 => int::<u32>(text)?.to_le_bytes().to_vec(),
        DataType::Uint64 => int::<u64>(text)?.to_le_bytes().to_vec(),
        DataType::Int8 => int::<i8>(text)?.to_le_bytes().to_vec(),
        DataType::Int16 => int::<i16>(text)?.to_le_bytes().to_vec(),
        DataType::Int32 => int::<i32>(text)?.to_le_bytes().to_vec(),
        DataType::Int64 => int::<i64>(text)?.to_le_bytes().to_vec(),
        DataType::Fp16 => half::f16::from_f64(float()?).to_le_bytes().to_vec(),
        DataType::Bf16 => half::bf16::from_f64(float()?).to_le_bytes().to_vec(),
        DataType::Fp32 => (float()? as f32).to_le_bytes().to_vec(),
        DataType::Fp64 => float()?.to_le_bytes().to_vec(),
        DataType::Bytes => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelSignature, ModelTensor, testing::spec_with_signature};

    fn parameters(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("parameters {{ key: \"{k}\" value {{ string_value: \"{v}\" }} }}\n"))
            .collect()
    }

    /// `m` with an input `x` and an output `y` of dims [-1], and `pairs` as parameters.
    fn spec(pairs: &[(&str, &str)]) -> Result<crate::config::ModelSpec, Error> {
        let tensor = |name: &str| ModelTensor {
            name: name.into(),
            data_type: Some(DataType::Fp32),
            shape: vec![-1, -1],
            form: Default::default(),
        };
        let signature = ModelSignature {
            inputs: vec![tensor("x")],
            outputs: vec![tensor("y")],
        };
        let text = format!(
            "max_batch_size: 8\ninput [ {{ name: \"x\", data_type: TYPE_FP32, dims: [ -1 ] }} ]\n\
             output [ {{ name: \"y\", data_type: TYPE_FP32, dims: [ -1 ] }} ]\n{}",
            parameters(pairs)
        );
        spec_with_signature(&text, &signature)
    }

    #[test]
    fn buckets_are_off_by_default_and_parsed_when_given() {
        assert_eq!(spec(&[]).expect("valid").variable_lengths.buckets, None);
        let spec = spec(&[(PAD_TO_BUCKET, "16, 32,64"), (PAD_TO_BUCKET_VALUE, "-1.5")]).expect("valid");
        let buckets = spec.variable_lengths.buckets.expect("buckets");
        assert_eq!(buckets.lengths, [16, 32, 64]);
        assert_eq!(buckets.dim, 0);
        assert_eq!(buckets.pad, [Some((-1.5f32).to_le_bytes().to_vec())]);
        assert_eq!(buckets.trimmed, [true]);
        assert_eq!(
            (
                buckets.bucket(1),
                buckets.bucket(16),
                buckets.bucket(17),
                buckets.bucket(65)
            ),
            (Some(16), Some(16), Some(32), None)
        );
    }

    #[test]
    fn mistakes_name_the_parameter() {
        for (pairs, expected) in [
            (
                vec![(PAD_TO_BUCKET, "32,16")],
                "16 does not exceed the length before it",
            ),
            (vec![(PAD_TO_BUCKET, "0")], "'0' is not a length"),
            (vec![(PAD_TO_BUCKET, "")], "'' is not a length"),
            (vec![(PAD_TO_BUCKET, "2097152")], "'2097152' is not a length"),
            (
                vec![(PAD_TO_BUCKET, "16"), (PAD_TO_BUCKET_DIM, "1")],
                "no input has a variable dimension",
            ),
            (
                vec![(PAD_TO_BUCKET, "16"), (PAD_TO_BUCKET_DIM, "x")],
                "must be a position in dims",
            ),
            (
                vec![(PAD_TO_BUCKET, "16"), (PAD_TO_BUCKET_VALUE, "pad")],
                "'pad', which input 'x' of type FP32",
            ),
            (vec![(PAD_TO_BUCKET_VALUE, "0")], "needs ferry.pad_to_bucket"),
            (
                vec![(PAD_TO_BUCKET, "16"), ("ferry.pad_to_bucket.size", "2")],
                "unknown parameter",
            ),
        ] {
            match spec(&pairs) {
                Err(Error::Config { message, line, .. }) => {
                    assert!(message.contains(expected), "{expected}: {message}");
                    assert!(line > 0, "{message}");
                }
                other => panic!("{expected}: expected a config error, got {other:?}"),
            }
        }
        let lengths = (1..=33).map(|l| l.to_string()).collect::<Vec<_>>().join(",");
        let error = spec(&[(PAD_TO_BUCKET, &lengths)]).expect_err("too many");
        assert!(error.to_string().contains("more than 32 lengths"), "{error}");
    }

    #[test]
    fn pad_values_are_checked_against_each_type() {
        assert_eq!(pad_element(DataType::Int8, "-128"), Some(vec![0x80]));
        assert_eq!(pad_element(DataType::Int8, "128"), None);
        assert_eq!(pad_element(DataType::Uint16, "-1"), None);
        assert_eq!(
            pad_element(DataType::Int64, "7"),
            Some(7i64.to_le_bytes().to_vec())
        );
        assert_eq!(pad_element(DataType::Bool, "true"), Some(vec![1]));
        assert_eq!(pad_element(DataType::Fp32, "inf"), None);
        assert_eq!(pad_element(DataType::Bytes, "0"), None);
    }
}
