//! Reading typed outputs out of an inference response.
//!
//! The response is kept as received and each output is decoded on demand, so outputs that are never read
//! cost nothing and `BYTES` elements are slices of the received buffer rather than copies.

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn};

use crate::ClientError;
use crate::element::{self, BYTES, TensorElement, element_count};
use crate::proto::ModelInferResponse;
use crate::proto::model_infer_response::InferOutputTensor;

/// The answer to one inference request, with typed access to its outputs by name.
///
/// Outputs may arrive either in `raw_output_contents` (what Ferry and Triton send) or in the typed
/// `contents` fields (what some other KServe servers send); both read the same.
#[derive(Debug, Clone)]
pub struct InferResult {
    response: ModelInferResponse,
}

impl From<ModelInferResponse> for InferResult {
    fn from(response: ModelInferResponse) -> Self {
        Self { response }
    }
}

impl InferResult {
    /// The model that answered, which differs from the requested name only for aliases.
    pub fn model_name(&self) -> &str {
        &self.response.model_name
    }

    /// The version that answered; useful when the request left the choice to the server.
    pub fn model_version(&self) -> &str {
        &self.response.model_version
    }

    /// The request id echoed back, to pair responses with requests.
    pub fn id(&self) -> &str {
        &self.response.id
    }

    /// The names of the outputs present, in the server's order, for callers that print whatever came back.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.response.outputs.iter().map(|output| output.name.as_str())
    }

    /// The datatype string of an output, to pick the Rust type to read it as when it is not known ahead.
    pub fn output_datatype(&self, name: &str) -> Result<&str, ClientError> {
        Ok(&self.find(name)?.1.datatype)
    }

    /// The shape of an output as the server reported it, batch dimension included.
    pub fn output_shape(&self, name: &str) -> Result<&[i64], ClientError> {
        Ok(&self.find(name)?.1.shape)
    }

    /// An output's elements, row-major, as `T`; fails unless the output's datatype is `T::DATATYPE` and
    /// its contents hold exactly as many elements as its shape.
    pub fn output_as<T: TensorElement>(&self, name: &str) -> Result<Vec<T>, ClientError> {
        let (index, output) = self.find(name)?;
        if output.datatype != T::DATATYPE {
            return Err(ClientError::DatatypeMismatch {
                tensor: output.name.clone(),
                expected: T::DATATYPE,
                given: output.datatype.clone(),
            });
        }
        let count = element_count(&output.name, &output.shape)?;
        let values = match self.raw(index, output)? {
            Some(raw) => {
                let expected = count
                    .checked_mul(T::SIZE)
                    .ok_or_else(|| ClientError::malformed(&output.name, "shape overflows the byte length"))?;
                if raw.len() != expected {
                    return Err(ClientError::ByteLengthMismatch {
                        tensor: output.name.clone(),
                        datatype: output.datatype.clone(),
                        shape: output.shape.clone(),
                        expected,
                        given: raw.len(),
                    });
                }
                T::decode_le(raw)
            }
            None => match &output.contents {
                Some(contents) => T::from_contents(contents)
                    .map_err(|reason| ClientError::malformed(&output.name, reason))?,
                None => Vec::new(),
            },
        };
        check_count(output, count, values.len())?;
        Ok(values)
    }

    /// An output as an `ndarray` array shaped as the server reported, with the checks of
    /// [`InferResult::output_as`].
    pub fn output_array<T: TensorElement>(&self, name: &str) -> Result<ArrayD<T>, ClientError> {
        let values = self.output_as::<T>(name)?;
        let output = self.find(name)?.1;
        // output_as has checked every dimension is non-negative and their product is the length.
        let dims: Vec<usize> = output.shape.iter().map(|&dim| dim as usize).collect();
        ArrayD::from_shape_vec(IxDyn(&dims), values)
            .map_err(|err| ClientError::malformed(&output.name, err.to_string()))
    }

    /// The elements of a `BYTES` output, row-major; each shares the response's buffer instead of copying.
    pub fn output_bytes(&self, name: &str) -> Result<Vec<Bytes>, ClientError> {
        let (index, output) = self.find(name)?;
        if output.datatype != BYTES {
            return Err(ClientError::DatatypeMismatch {
                tensor: output.name.clone(),
                expected: BYTES,
                given: output.datatype.clone(),
            });
        }
        let count = element_count(&output.name, &output.shape)?;
        let items = match self.raw(index, output)? {
            Some(raw) => element::decode_bytes(&output.name, raw)?,
            None => output
                .contents
                .as_ref()
                .map(|c| c.bytes_contents.clone())
                .unwrap_or_default(),
        };
        check_count(output, count, items.len())?;
        Ok(items)
    }

    /// The response message as received, for fields this type does not surface (such as parameters).
    pub fn as_proto(&self) -> &ModelInferResponse {
        &self.response
    }

    fn find(&self, name: &str) -> Result<(usize, &InferOutputTensor), ClientError> {
        self.response
            .outputs
            .iter()
            .enumerate()
            .find(|(_, output)| output.name == name)
            .ok_or_else(|| ClientError::UnknownOutput {
                tensor: name.to_owned(),
                available: self.output_names().map(String::from).collect(),
            })
    }

    /// The raw contents of the output at `index`, or `None` when the response uses typed contents. The
    /// protocol sends raw contents for all outputs or for none, in the order of `outputs`.
    fn raw(&self, index: usize, output: &InferOutputTensor) -> Result<Option<&Bytes>, ClientError> {
        let raw = &self.response.raw_output_contents;
        if raw.is_empty() {
            return Ok(None);
        }
        raw.get(index).map(Some).ok_or_else(|| {
            ClientError::malformed(
                &output.name,
                format!(
                    "it is output {index} but the response has only {} raw_output_contents entries",
                    raw.len()
                ),
            )
        })
    }
}

fn check_count(output: &InferOutputTensor, expected: usize, given: usize) -> Result<(), ClientError> {
    if expected == given {
        return Ok(());
    }
    Err(ClientError::ElementCountMismatch {
        tensor: output.name.clone(),
        shape: output.shape.clone(),
        expected,
        given,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fmt::Debug;

    use half::{bf16, f16};
    use ndarray::array;
    use prost::Message;

    use super::*;
    use crate::proto::{InferTensorContents, ModelInferRequest};
    use crate::{InferInput, InferRequest};

    /// Plays an identity model: each request input comes back as an output of the same name, datatype and
    /// raw bytes, and both messages go through their protobuf encoding on the way.
    fn echo(request: InferRequest) -> InferResult {
        let wire = request.into_proto().unwrap().encode_to_vec();
        let request = ModelInferRequest::decode(wire.as_slice()).unwrap();
        let response = ModelInferResponse {
            model_name: request.model_name,
            model_version: "1".into(),
            id: request.id,
            outputs: request
                .inputs
                .into_iter()
                .map(|input| InferOutputTensor {
                    name: input.name,
                    datatype: input.datatype,
                    shape: input.shape,
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: request.raw_input_contents,
            ..Default::default()
        };
        ModelInferResponse::decode(response.encode_to_vec().as_slice())
            .unwrap()
            .into()
    }

    fn round_trip<T: TensorElement + PartialEq + Debug>(values: &[T]) {
        let shape = [1, values.len() as i64];
        let result = echo(InferRequest::new("m").with_input(InferInput::new("X", shape).with_data(values)));
        assert_eq!(result.output_datatype("X").unwrap(), T::DATATYPE);
        assert_eq!(result.output_shape("X").unwrap(), shape);
        assert_eq!(result.output_as::<T>("X").unwrap(), values, "{}", T::DATATYPE);
        assert_eq!(result.output_array::<T>("X").unwrap().shape(), [1, values.len()]);
    }

    #[test]
    fn every_element_type_round_trips_through_raw_contents() {
        round_trip(&[true, false, true]);
        round_trip(&[i8::MIN, -1, 0, i8::MAX]);
        round_trip(&[i16::MIN, -1, 0, i16::MAX]);
        round_trip(&[i32::MIN, -1, 0, i32::MAX]);
        round_trip(&[i64::MIN, -1, 0, i64::MAX]);
        round_trip(&[0, 1, u8::MAX]);
        round_trip(&[0, 1, u16::MAX]);
        round_trip(&[0, 1, u32::MAX]);
        round_trip(&[0, 1, u64::MAX]);
        round_trip(&[f32::MIN, -0.5, 0.0, f32::MAX, f32::INFINITY]);
        round_trip(&[f64::MIN, -0.5, 0.0, f64::MAX, f64::NEG_INFINITY]);
        round_trip(&[f16::MIN, f16::from_f32(-0.5), f16::ZERO, f16::MAX]);
        round_trip(&[bf16::MIN, bf16::from_f32(-0.5), bf16::ZERO, bf16::MAX]);
    }

    #[test]
    fn bytes_round_trip_with_empty_and_binary_elements() {
        let items: [&[u8]; 4] = [b"hello", b"", b"\0\xff", "żółw".as_bytes()];
        let result = echo(InferRequest::new("m").with_input(InferInput::new("S", [2, 2]).with_bytes(&items)));
        assert_eq!(result.output_bytes("S").unwrap(), items);
    }

    #[test]
    fn identity_fields_are_echoed() {
        let result = echo(
            InferRequest::new("m")
                .with_id("abc")
                .with_input(InferInput::new("X", [1]).with_data(&[1u8])),
        );
        assert_eq!(
            (result.model_name(), result.model_version(), result.id()),
            ("m", "1", "abc")
        );
        assert_eq!(result.output_names().collect::<Vec<_>>(), ["X"]);
    }

    #[test]
    fn arrays_keep_the_reported_shape() {
        let input = array![[1.5f32, 2.5, 3.5], [4.5, 5.5, 6.5]];
        let result = echo(InferRequest::new("m").with_input(InferInput::from_array("X", &input)));
        assert_eq!(result.output_array::<f32>("X").unwrap(), input.into_dyn());
    }

    fn typed(datatype: &str, shape: Vec<i64>, contents: InferTensorContents) -> InferResult {
        ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "Y".into(),
                datatype: datatype.into(),
                shape,
                contents: Some(contents),
                ..Default::default()
            }],
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn typed_contents_are_read_for_every_type_that_has_a_field() {
        let c = InferTensorContents::default;
        let ints = || InferTensorContents {
            int_contents: vec![-3, 4],
            ..c()
        };
        let uints = || InferTensorContents {
            uint_contents: vec![3, 4],
            ..c()
        };
        let two = || vec![2];
        let bools = InferTensorContents {
            bool_contents: vec![true, false],
            ..c()
        };
        assert_eq!(
            typed("BOOL", two(), bools).output_as::<bool>("Y").unwrap(),
            [true, false]
        );
        assert_eq!(
            typed("INT8", two(), ints()).output_as::<i8>("Y").unwrap(),
            [-3, 4]
        );
        assert_eq!(
            typed("INT16", two(), ints()).output_as::<i16>("Y").unwrap(),
            [-3, 4]
        );
        assert_eq!(
            typed("INT32", two(), ints()).output_as::<i32>("Y").unwrap(),
            [-3, 4]
        );
        let int64 = InferTensorContents {
            int64_contents: vec![-3, 4],
            ..c()
        };
        assert_eq!(
            typed("INT64", two(), int64).output_as::<i64>("Y").unwrap(),
            [-3, 4]
        );
        assert_eq!(
            typed("UINT8", two(), uints()).output_as::<u8>("Y").unwrap(),
            [3, 4]
        );
        assert_eq!(
            typed("UINT16", two(), uints()).output_as::<u16>("Y").unwrap(),
            [3, 4]
        );
        assert_eq!(
            typed("UINT32", two(), uints()).output_as::<u32>("Y").unwrap(),
            [3, 4]
        );
        let uint64 = InferTensorContents {
            uint64_contents: vec![3, 4],
            ..c()
        };
        assert_eq!(
            typed("UINT64", two(), uint64).output_as::<u64>("Y").unwrap(),
            [3, 4]
        );
        let fp32 = InferTensorContents {
            fp32_contents: vec![0.5, 1.5],
            ..c()
        };
        assert_eq!(
            typed("FP32", two(), fp32).output_as::<f32>("Y").unwrap(),
            [0.5, 1.5]
        );
        let fp64 = InferTensorContents {
            fp64_contents: vec![0.5, 1.5],
            ..c()
        };
        assert_eq!(
            typed("FP64", two(), fp64).output_as::<f64>("Y").unwrap(),
            [0.5, 1.5]
        );
        let bytes = InferTensorContents {
            bytes_contents: vec![Bytes::from("a"), Bytes::new()],
            ..c()
        };
        assert_eq!(
            typed("BYTES", two(), bytes).output_bytes("Y").unwrap(),
            [&b"a"[..], b""]
        );
    }

    #[test]
    fn typed_contents_must_fill_the_shape() {
        let contents = InferTensorContents {
            fp32_contents: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        let err = typed("FP32", vec![2, 2], contents)
            .output_as::<f32>("Y")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor \"Y\" with shape [2, 2] needs 4 elements, given 3"
        );
        let err = typed("FP16", vec![1], InferTensorContents::default())
            .output_as::<f16>("Y")
            .unwrap_err();
        assert!(
            err.to_string().contains("FP16 has no typed contents field"),
            "{err}"
        );
    }

    #[test]
    fn reading_as_the_wrong_type_names_both_datatypes() {
        let result = echo(InferRequest::new("m").with_input(InferInput::new("X", [2]).with_data(&[1i64, 2])));
        let err = result.output_as::<f64>("X").unwrap_err();
        assert_eq!(err.to_string(), "output \"X\" is INT64, not FP64");
        assert!(matches!(
            err,
            ClientError::DatatypeMismatch { expected: "FP64", .. }
        ));
        let err = result.output_bytes("X").unwrap_err();
        assert_eq!(err.to_string(), "output \"X\" is INT64, not BYTES");
    }

    #[test]
    fn raw_contents_must_match_the_shape_in_bytes() {
        let mut response =
            echo(InferRequest::new("m").with_input(InferInput::new("X", [3]).with_data(&[1i32; 3])))
                .as_proto()
                .clone();
        response.outputs[0].shape = vec![2, 2];
        let err = InferResult::from(response).output_as::<i32>("X").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor \"X\" of INT32 with shape [2, 2] needs 16 bytes, given 12"
        );
    }

    #[test]
    fn bytes_outputs_must_match_the_shape_in_elements() {
        let mut response =
            echo(InferRequest::new("m").with_input(InferInput::new("S", [2]).with_bytes(&["a", "b"])))
                .as_proto()
                .clone();
        response.outputs[0].shape = vec![3];
        let err = InferResult::from(response).output_bytes("S").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor \"S\" with shape [3] needs 3 elements, given 2"
        );
    }

    #[test]
    fn unknown_outputs_list_what_is_there() {
        let result = echo(InferRequest::new("m").with_input(InferInput::new("X", [1]).with_data(&[1u8])));
        let err = result.output_as::<u8>("Z").unwrap_err();
        assert_eq!(err.to_string(), "no output \"Z\" in the response; it has [\"X\"]");
        assert!(result.output_shape("Z").is_err());
    }

    #[test]
    fn a_missing_raw_entry_is_reported() {
        let mut response = echo(
            InferRequest::new("m")
                .with_input(InferInput::new("A", [1]).with_data(&[1u8]))
                .with_input(InferInput::new("B", [1]).with_data(&[2u8])),
        )
        .as_proto()
        .clone();
        response.raw_output_contents.truncate(1);
        let result = InferResult::from(response);
        assert_eq!(result.output_as::<u8>("A").unwrap(), [1]);
        let err = result.output_as::<u8>("B").unwrap_err();
        assert!(
            err.to_string().contains("only 1 raw_output_contents entries"),
            "{err}"
        );
    }
}
