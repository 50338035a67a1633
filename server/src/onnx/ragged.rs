//! The batch inputs of Triton's ragged batching: tensors Ferry builds from a formed batch to tell the model
//! where each request's elements lie in a ragged input, which reaches it flattened into one 1-D tensor.
//! Values follow Triton's `BackendInputCollector` (`BatchInputShape`, `ProcessBatchInput`).

use ferry_proto::inference::batch_input::Kind;
use ort::{session::SessionInputValue, value::Tensor};

use crate::{DataType, Error, config::BatchInputSpec, request::InferRequest};

/// The shape and values of batch input `kind` over the source input's shapes, one per request (each with
/// its batch dimension). Counts are element counts of the whole shape, as Triton counts them.
fn batch_input_values(kind: Kind, shapes: &[&[i64]]) -> (Vec<i64>, Vec<i64>) {
    let count = |shape: &[i64]| shape.iter().product::<i64>();
    let requests = shapes.len() as i64;
    match kind {
        Kind::BatchElementCount => (vec![requests], shapes.iter().map(|s| count(s)).collect()),
        Kind::BatchAccumulatedElementCount | Kind::BatchAccumulatedElementCountWithZero => {
            let zero = (kind == Kind::BatchAccumulatedElementCountWithZero).then_some(0);
            let ends = shapes.iter().scan(0, |total, s| {
                *total += count(s);
                Some(*total)
            });
            let values: Vec<i64> = zero.into_iter().chain(ends).collect();
            (vec![values.len() as i64], values)
        }
        Kind::BatchMaxElementCountAsShape => {
            // Only the shape says something; Triton leaves the contents uninitialized, Ferry zeroes them.
            let max = shapes.iter().map(|s| count(s)).max().unwrap_or(0);
            (vec![max], vec![0; usize::try_from(max).unwrap_or(0)])
        }
        Kind::BatchItemShape | Kind::BatchItemShapeFlatten => {
            // One row per batch item (a request of batch size n gives n), holding the item's shape.
            let rank = shapes.first().map_or(0, |s| s.len().saturating_sub(1));
            let values: Vec<i64> = shapes
                .iter()
                .flat_map(|s| {
                    let rows = usize::try_from(s.first().copied().unwrap_or(0)).unwrap_or(0);
                    std::iter::repeat_n(s.get(1..).unwrap_or(&[]), rows)
                        .flatten()
                        .copied()
                })
                .collect();
            let items = values.len().checked_div(rank).unwrap_or(0) as i64;
            let shape = if kind == Kind::BatchItemShape {
                vec![items, rank as i64]
            } else {
                vec![values.len() as i64]
            };
            (shape, values)
        }
    }
}

/// The shape of input `source` in each request, batch dimension included. An optional source a request
/// left out counts no elements and no rows: shape `[0]`.
fn source_shapes<'r>(source: usize, requests: &[&'r InferRequest]) -> Vec<&'r [i64]> {
    requests
        .iter()
        .map(|r| {
            r.inputs
                .iter()
                .find(|i| i.index == source)
                .map_or(&[0][..], |i| i.shape.as_slice())
        })
        .collect()
}

/// The tensors of `batch_inputs` for `requests`, ready to pass with the batch's inputs. A value the batch
/// input's type cannot hold exactly (beyond `i32::MAX` for INT32, 2^24 for FP32) fails the batch, rather
/// than giving the model a wrong offset.
pub(super) fn batch_input_tensors<'s>(
    batch_inputs: &'s [BatchInputSpec],
    requests: &[&InferRequest],
) -> Result<Vec<(&'s str, SessionInputValue<'static>)>, Error> {
    let mut tensors = Vec::with_capacity(batch_inputs.len());
    for batch_input in batch_inputs {
        let (shape, values) =
            batch_input_values(batch_input.kind, &source_shapes(batch_input.source, requests));
        let exact = match batch_input.data_type {
            DataType::Fp32 => 1 << f32::MANTISSA_DIGITS,
            _ => i64::from(i32::MAX),
        };
        if let Some(too_large) = values.iter().find(|v| **v > exact) {
            return Err(Error::Execution(format!(
                "batch input '{}' would hold {too_large}, more than type {} holds exactly ({exact})",
                batch_input.target,
                batch_input.data_type.wire_name()
            )));
        }
        let built = match batch_input.data_type {
            DataType::Fp32 => {
                Tensor::from_array((shape, values.iter().map(|v| *v as f32).collect::<Vec<_>>()))
                    .map(|t| SessionInputValue::from(t.into_dyn()))
            }
            _ => Tensor::from_array((shape, values.iter().map(|v| *v as i32).collect::<Vec<_>>()))
                .map(|t| SessionInputValue::from(t.into_dyn())),
        }
        .map_err(|error| {
            Error::Execution(format!("building batch input '{}': {error}", batch_input.target))
        })?;
        tensors.push((batch_input.target.as_str(), built));
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Triton's examples in `model_config.proto` and `ragged_batching.md`: requests of 3, 4 and 5 elements,
    /// and for the item shapes a batch-2 request of items [3, 1] with a batch-1 request of item [2, 2].
    #[test]
    fn every_kind_matches_tritons_examples() {
        let ragged: [&[i64]; 3] = [&[1, 3], &[1, 4], &[1, 5]];
        for (kind, shape, values) in [
            (Kind::BatchElementCount, vec![3], vec![3, 4, 5]),
            (Kind::BatchAccumulatedElementCount, vec![3], vec![3, 7, 12]),
            (
                Kind::BatchAccumulatedElementCountWithZero,
                vec![4],
                vec![0, 3, 7, 12],
            ),
            (Kind::BatchMaxElementCountAsShape, vec![5], vec![0; 5]),
        ] {
            assert_eq!(batch_input_values(kind, &ragged), (shape, values), "{kind:?}");
        }
        let items: [&[i64]; 2] = [&[2, 3, 1], &[1, 2, 2]];
        assert_eq!(
            batch_input_values(Kind::BatchItemShape, &items),
            (vec![3, 2], vec![3, 1, 3, 1, 2, 2])
        );
        assert_eq!(
            batch_input_values(Kind::BatchItemShapeFlatten, &items),
            (vec![6], vec![3, 1, 3, 1, 2, 2])
        );
    }

    /// A request of batch size 1 whose only input, if any, is input `index` of `shape` (with no data: the
    /// batch inputs read shapes alone).
    fn request(input: Option<(usize, Vec<i64>)>) -> InferRequest {
        InferRequest {
            id: String::new(),
            inputs: input
                .map(|(index, shape)| crate::request::InputTensor {
                    index,
                    model_shape: shape.clone(),
                    shape,
                    data: crate::request::TensorData::Fixed(bytes::Bytes::new()),
                })
                .into_iter()
                .collect(),
            outputs: vec![0],
            batch_size: 1,
            priority: 0,
            timeout: None,
            classifications: Vec::new(),
            sequence: None,
        }
    }

    #[test]
    fn a_request_without_an_optional_source_counts_nothing() {
        let (with, without) = (request(Some((1, vec![1, 3]))), request(None));
        let shapes = source_shapes(1, &[&with, &without, &with]);
        assert_eq!(
            batch_input_values(Kind::BatchAccumulatedElementCount, &shapes).1,
            [3, 3, 6]
        );
        assert_eq!(batch_input_values(Kind::BatchItemShape, &shapes).0, [2, 1]);
    }

    #[test]
    fn values_a_type_cannot_hold_exactly_fail_the_batch() {
        let spec = BatchInputSpec {
            kind: Kind::BatchElementCount,
            target: "count".into(),
            data_type: DataType::Fp32,
            source: 0,
        };
        // Checked before any tensor is built, so no ONNX Runtime is needed here.
        let too_many = request(Some((0, vec![1, (1 << 24) + 1])));
        let Err(error) = batch_input_tensors(std::slice::from_ref(&spec), &[&too_many]) else {
            panic!("2^24 + 1 is not exact in FP32");
        };
        assert!(
            error
                .to_string()
                .contains("batch input 'count' would hold 16777217"),
            "{error}"
        );
    }
}
