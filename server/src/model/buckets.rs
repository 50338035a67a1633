//! Padding to bucket lengths (`ferry.pad_to_bucket`, see [`crate::config::BucketPadding`]): a request is
//! padded to the shortest bucket that holds it before it queues, so that it batches with the other requests
//! of its bucket (and only with them: their shapes agree, others' do not), and the outputs that carry the
//! padded dimension are trimmed back to the request's own length before they are answered.
//!
//! The rule for outputs: an output whose config dims have -1 at the padded position is trimmed there when
//! the model returned exactly the bucket length in that dimension; any other output is answered as the
//! model computed it, so an output that pools over the padded dimension must not depend on the padding (a
//! sum over tokens padded with zeros, a masked mean).

use bytes::Bytes;

use crate::{Error, config::BucketPadding, config::ModelSpec, onnx::OutputTensor, request::InferRequest};
use crate::{config::PAD_TO_BUCKET, request::TensorData};

/// What padding did to a request: its own length and the bucket it was padded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Padded {
    length: usize,
    bucket: usize,
}

/// `request` padded to its bucket, with what [`trim`] needs to undo it. A request longer than the largest
/// bucket, or whose padded inputs differ in length, is INVALID_ARGUMENT naming the input, its length and the
/// largest bucket; padded inputs that would together pass `--max-request-bytes` are RESOURCE_EXHAUSTED,
/// refused before the padded copy is made.
pub(super) fn pad(
    mut request: InferRequest,
    padding: &BucketPadding,
    spec: &ModelSpec,
) -> Result<(InferRequest, Padded), Error> {
    let at = padding.dim + 1; // the position in the request's shape, which starts with the batch dimension
    let mut length: Option<(usize, &str)> = None;
    for input in &request.inputs {
        if padding.pad.get(input.index).is_none_or(Option::is_none) {
            continue;
        }
        let name = spec.inputs[input.index].name.as_str();
        let given = input
            .shape
            .get(at)
            .map_or(0, |d| usize::try_from(*d).unwrap_or(0));
        match length {
            Some((first, first_name)) if first != given => {
                return Err(Error::invalid(format!(
                    "inputs '{first_name}' and '{name}' have lengths {first} and {given} in dimension {at}; inputs \
                     padded to one bucket ({PAD_TO_BUCKET}) must agree there"
                )));
            }
            _ => length = Some((given, name)),
        }
    }
    let (length, name) = length.unwrap_or((0, ""));
    let bucket = padding.bucket(length).ok_or_else(|| {
        Error::invalid(format!(
            "input '{name}' has length {length} in dimension {at}, more than the largest bucket of model '{}' \
             ({PAD_TO_BUCKET}: {})",
            spec.name,
            padding.largest()
        ))
    })?;
    let padded = Padded { length, bucket };
    if bucket == length {
        return Ok((request, padded));
    }
    let mut total = 0usize;
    for input in &mut request.inputs {
        let (Some(Some(element)), TensorData::Fixed(data)) = (padding.pad.get(input.index), &input.data)
        else {
            continue;
        };
        let (rows, block) = (outer(&input.shape, at), inner(&input.shape, at, element.len()));
        let grown_bytes = rows.saturating_mul(bucket).saturating_mul(block);
        total = total.saturating_add(grown_bytes);
        if total > spec.max_request_bytes {
            return Err(Error::TooLarge(format!(
                "input '{}' padded from length {length} to bucket {bucket} would take the request past {} bytes \
                 (--max-request-bytes)",
                spec.inputs[input.index].name, spec.max_request_bytes
            )));
        }
        let filler = element.repeat((bucket - length) * block / element.len().max(1));
        let mut grown = Vec::with_capacity(grown_bytes);
        for row in 0..rows {
            let own = row * length * block..(row + 1) * length * block;
            grown.extend_from_slice(data.get(own).unwrap_or_default());
            grown.extend_from_slice(&filler);
        }
        input.data = TensorData::Fixed(Bytes::from(grown));
        input.shape[at] = bucket as i64;
        input.model_shape[at] = bucket as i64;
    }
    Ok((request, padded))
}

/// `outputs` with the padding taken back out of those that carry the padded dimension (see the module's
/// rule).
pub(super) fn trim(
    outputs: Vec<OutputTensor>,
    padded: Padded,
    padding: &BucketPadding,
    spec: &ModelSpec,
) -> Vec<OutputTensor> {
    let at = padding.dim + 1;
    let Padded { length, bucket } = padded;
    outputs
        .into_iter()
        .map(|mut output| {
            let trimmed = padding.trimmed.get(output.index).copied().unwrap_or(false);
            let size = spec.outputs[output.index].data_type.element_size().unwrap_or(0);
            if !trimmed || length == bucket || size == 0 || output.shape.get(at) != Some(&(bucket as i64)) {
                return output;
            }
            let block = inner(&output.shape, at, size);
            let mut kept = Vec::with_capacity(outer(&output.shape, at) * length * block);
            for chunk in output.data.chunks(bucket * block) {
                kept.extend_from_slice(&chunk[..(length * block).min(chunk.len())]);
            }
            output.data = Bytes::from(kept);
            output.shape[at] = length as i64;
            output
        })
        .collect()
}

/// The elements before dimension `at` of `shape`, together.
fn outer(shape: &[i64], at: usize) -> usize {
    shape[..at.min(shape.len())]
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(0))
        .product()
}

/// The bytes of one step along dimension `at` of `shape`: the elements after it, times `size`.
fn inner(shape: &[i64], at: usize, size: usize) -> usize {
    shape
        .get(at + 1..)
        .unwrap_or(&[])
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(0))
        .product::<usize>()
        * size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{ConfigSource, complete_config, parse_model_config},
        request::InputTensor,
    };

    /// A model with `x` FP32 [-1, 2] padded to buckets 4 and 8 with -1, `y` [-1, 2] trimmed and `s` [2] not.
    fn spec() -> ModelSpec {
        let text = "max_batch_size: 4\n\
            input [ { name: \"x\", data_type: TYPE_FP32, dims: [ -1, 2 ] } ]\n\
            output [ { name: \"y\", data_type: TYPE_FP32, dims: [ -1, 2 ] }, { name: \"s\", data_type: TYPE_FP32, dims: [ 2 ] } ]\n\
            parameters { key: \"ferry.pad_to_bucket\" value { string_value: \"4,8\" } }\n\
            parameters { key: \"ferry.pad_to_bucket.value\" value { string_value: \"-1\" } }\n";
        let mut config = parse_model_config(text, "m/config.pbtxt").expect("parses");
        complete_config(&mut config, None, "m/config.pbtxt").expect("completes");
        let source = ConfigSource {
            path: "m/config.pbtxt",
            text: Some(text),
        };
        ModelSpec::from_config(config, "m", source).expect("valid")
    }

    fn floats(values: &[f32]) -> Bytes {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }

    fn request(rows: usize, length: usize) -> InferRequest {
        let values: Vec<f32> = (0..rows * length * 2).map(|v| v as f32).collect();
        let shape = vec![rows as i64, length as i64, 2];
        InferRequest {
            id: String::new(),
            inputs: vec![InputTensor {
                index: 0,
                shape: shape.clone(),
                model_shape: shape,
                data: TensorData::Fixed(floats(&values)),
            }],
            outputs: vec![0, 1],
            batch_size: rows,
            priority: 0,
            timeout: None,
            classifications: Vec::new(),
            sequence: None,
        }
    }

    #[test]
    fn each_row_is_padded_to_its_bucket_and_trimmed_back() {
        let spec = spec();
        let padding = spec.variable_lengths.buckets.clone().expect("buckets");
        let (padded, how) = pad(request(2, 3), &padding, &spec).expect("fits");
        assert_eq!(padded.inputs[0].shape, [2, 4, 2]);
        assert_eq!(padded.inputs[0].model_shape, [2, 4, 2]);
        let expected = floats(&[
            0., 1., 2., 3., 4., 5., -1., -1., 6., 7., 8., 9., 10., 11., -1., -1.,
        ]);
        assert_eq!(padded.inputs[0].data, TensorData::Fixed(expected.clone()));
        // The model's answer for the padded batch: y keeps the bucket length, s has no such dimension.
        let outputs = vec![
            OutputTensor {
                index: 0,
                shape: vec![2, 4, 2],
                data: expected,
            },
            OutputTensor {
                index: 1,
                shape: vec![2, 2],
                data: floats(&[1., 2., 3., 4.]),
            },
        ];
        let answered = trim(outputs, how, &padding, &spec);
        assert_eq!(answered[0].shape, [2, 3, 2]);
        assert_eq!(
            answered[0].data,
            floats(&(0..12).map(|v| v as f32).collect::<Vec<_>>())
        );
        assert_eq!(answered[1].shape, [2, 2]);
        assert_eq!(answered[1].data, floats(&[1., 2., 3., 4.]));
        let (exact, _) = pad(request(1, 8), &padding, &spec).expect("a full bucket");
        assert_eq!(
            exact,
            request(1, 8),
            "a request of a bucket's length is left as it is"
        );
        let (empty, _) = pad(request(1, 0), &padding, &spec).expect("an empty sequence");
        assert_eq!(empty.inputs[0].data, TensorData::Fixed(floats(&[-1.; 8])));
    }

    #[test]
    fn a_request_longer_than_the_largest_bucket_names_the_limit() {
        let spec = spec();
        let padding = spec.variable_lengths.buckets.clone().expect("buckets");
        let error = pad(request(1, 9), &padding, &spec).expect_err("too long");
        assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "input 'x' has length 9 in dimension 1, more than the largest bucket of model 'm' \
             (ferry.pad_to_bucket: 8)"
        );
    }

    #[test]
    fn padding_past_the_request_memory_limit_is_refused_before_the_copy() {
        let mut spec = spec();
        spec.max_request_bytes = 64;
        let padding = spec.variable_lengths.buckets.clone().expect("buckets");
        // 1 row of 4 × 2 floats: 32 bytes once padded.
        pad(request(1, 3), &padding, &spec).expect("within the limit");
        // 2 rows of 8 × 2 floats: 128 bytes once padded.
        let error = pad(request(2, 5), &padding, &spec).expect_err("over the limit");
        assert!(matches!(error, Error::TooLarge(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("from length 5 to bucket 8 would take the request past 64 bytes"),
            "{error}"
        );
    }
}
