//! Building inference requests from Rust slices and `ndarray` arrays.
//!
//! Inputs are encoded into `raw_input_contents` as soon as data is attached, so a request holds exactly
//! the bytes that go on the wire and the shape check happens once, before anything is sent.

use bytes::Bytes;
use ndarray::{ArrayBase, Data, Dimension};

use crate::ClientError;
use crate::element::{self, BYTES, TensorElement, element_count};
use crate::proto::ModelInferRequest;
use crate::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

/// One named input tensor: its shape, datatype and raw little-endian contents.
///
/// Built in two steps, `InferInput::new(name, shape).with_data(&values)`, so that the shape reads next to
/// the name as in a model config; [`InferInput::from_array`] takes both from an `ndarray` array instead.
#[derive(Debug, Clone)]
pub struct InferInput {
    name: String,
    shape: Vec<i64>,
    payload: Payload,
}

/// What [`InferInput`] holds between construction and sending; an invalid payload is kept rather than
/// reported at once so the builder methods stay infallible.
#[derive(Debug, Clone)]
enum Payload {
    Missing,
    Ready {
        datatype: &'static str,
        elements: usize,
        raw: Bytes,
    },
    Invalid(String),
}

impl InferInput {
    /// Starts an input with its full shape, batch dimension included; data comes next.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<i64>>) -> Self {
        Self {
            name: name.into(),
            shape: shape.into(),
            payload: Payload::Missing,
        }
    }

    /// Sets the contents, row-major, and with them the datatype (`T::DATATYPE`).
    pub fn with_data<T: TensorElement>(mut self, values: &[T]) -> Self {
        let mut raw = Vec::new();
        T::encode_le(values, &mut raw);
        self.payload = Payload::Ready {
            datatype: T::DATATYPE,
            elements: values.len(),
            raw: raw.into(),
        };
        self
    }

    /// Sets `BYTES` contents, row-major: strings, byte vectors or anything else viewable as bytes.
    pub fn with_bytes<B: AsRef<[u8]>>(mut self, values: &[B]) -> Self {
        self.payload = bytes_payload(&self.name, values);
        self
    }

    /// An input whose shape and contents both come from `array`, read in logical (row-major) order
    /// whatever its memory layout.
    pub fn from_array<T, S, D>(name: impl Into<String>, array: &ArrayBase<S, D>) -> Self
    where
        T: TensorElement,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let input = Self::new(name, array_shape(array));
        match array.as_slice() {
            Some(values) => input.with_data(values),
            None => input.with_data(&array.iter().copied().collect::<Vec<_>>()),
        }
    }

    /// A `BYTES` input whose shape and elements come from `array` (of `String`, `Vec<u8>`, `&str`, ...).
    pub fn from_bytes_array<B, S, D>(name: impl Into<String>, array: &ArrayBase<S, D>) -> Self
    where
        B: AsRef<[u8]>,
        S: Data<Elem = B>,
        D: Dimension,
    {
        let mut input = Self::new(name, array_shape(array));
        input.payload = bytes_payload(&input.name, array.iter());
        input
    }

    /// Checks the contents against the shape and splits the input into its tensor description and its
    /// entry of `raw_input_contents`.
    fn into_wire(self) -> Result<(InferInputTensor, Bytes), ClientError> {
        let (datatype, elements, raw) = match self.payload {
            Payload::Ready {
                datatype,
                elements,
                raw,
            } => (datatype, elements, raw),
            Payload::Missing => return Err(ClientError::MissingInputData { tensor: self.name }),
            Payload::Invalid(reason) => return Err(ClientError::malformed(&self.name, reason)),
        };
        let expected = element_count(&self.name, &self.shape)?;
        if expected != elements {
            return Err(ClientError::ElementCountMismatch {
                tensor: self.name,
                shape: self.shape,
                expected,
                given: elements,
            });
        }
        let tensor = InferInputTensor {
            name: self.name,
            datatype: datatype.to_owned(),
            shape: self.shape,
            ..Default::default()
        };
        Ok((tensor, raw))
    }
}

/// The shape of an `ndarray` array as the protocol's signed dimensions.
fn array_shape<S: Data, D: Dimension>(array: &ArrayBase<S, D>) -> Vec<i64> {
    // ndarray bounds every dimension by isize::MAX, so each fits an i64.
    array.shape().iter().map(|&dim| dim as i64).collect()
}

fn bytes_payload<B: AsRef<[u8]>>(tensor: &str, values: impl IntoIterator<Item = B>) -> Payload {
    let mut raw = Vec::new();
    match element::encode_bytes(tensor, values, &mut raw) {
        Ok(elements) => Payload::Ready {
            datatype: BYTES,
            elements,
            raw: raw.into(),
        },
        Err(err) => Payload::Invalid(err.to_string()),
    }
}

/// An inference request: the model, optionally its version, a request id, the inputs and which outputs to
/// return.
///
/// Leaving the version empty lets the server pick one by the model's version policy (normally the
/// latest); leaving the outputs empty returns every output of the model.
#[derive(Debug, Clone)]
pub struct InferRequest {
    model_name: String,
    model_version: String,
    id: String,
    inputs: Vec<InferInput>,
    outputs: Vec<String>,
}

impl InferRequest {
    /// Starts a request for `model_name` with no inputs yet.
    pub fn new(model_name: impl Into<String>) -> Self {
        Self {
            model_name: model_name.into(),
            model_version: String::new(),
            id: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Pins the model version, for reproducible results while several versions are loaded.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.model_version = version.into();
        self
    }

    /// Sets the request id, which the server echoes back so responses can be matched to requests in logs.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Adds an input; the order does not matter to the server.
    pub fn with_input(mut self, input: InferInput) -> Self {
        self.inputs.push(input);
        self
    }

    /// Asks for one output by name; once any is asked for, only those are computed and returned.
    pub fn with_output(mut self, name: impl Into<String>) -> Self {
        self.outputs.push(name.into());
        self
    }

    /// The protobuf message this request becomes, for callers driving the raw stub (for example over
    /// `ModelStreamInfer`). Fails if an input's data does not fit its shape.
    pub fn into_proto(self) -> Result<ModelInferRequest, ClientError> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        let mut raw_input_contents = Vec::with_capacity(self.inputs.len());
        for input in self.inputs {
            let (tensor, raw) = input.into_wire()?;
            inputs.push(tensor);
            raw_input_contents.push(raw);
        }
        let outputs = self
            .outputs
            .into_iter()
            .map(|name| InferRequestedOutputTensor {
                name,
                ..Default::default()
            })
            .collect();
        Ok(ModelInferRequest {
            model_name: self.model_name,
            model_version: self.model_version,
            id: self.id,
            inputs,
            outputs,
            raw_input_contents,
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ndarray::{Array2, array};

    use super::*;

    #[test]
    fn request_carries_version_id_outputs_and_raw_inputs_in_order() {
        let request = InferRequest::new("simple")
            .with_version("2")
            .with_id("req-7")
            .with_input(InferInput::new("A", [1, 2]).with_data(&[1i32, 2]))
            .with_input(InferInput::new("B", [2]).with_bytes(&["x", "yz"]))
            .with_output("OUT")
            .into_proto()
            .unwrap();
        assert_eq!(
            (request.model_name.as_str(), request.model_version.as_str()),
            ("simple", "2")
        );
        assert_eq!(request.id, "req-7");
        assert_eq!(request.outputs.len(), 1);
        assert_eq!(request.outputs[0].name, "OUT");
        let described: Vec<_> = request
            .inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.clone()))
            .collect();
        assert_eq!(described, [("A", "INT32", vec![1, 2]), ("B", "BYTES", vec![2])]);
        assert!(request.inputs.iter().all(|t| t.contents.is_none()));
        assert_eq!(request.raw_input_contents[0], &[1u8, 0, 0, 0, 2, 0, 0, 0][..]);
        assert_eq!(request.raw_input_contents[1], &b"\x01\0\0\0x\x02\0\0\0yz"[..]);
    }

    #[test]
    fn arrays_give_shape_and_row_major_data_even_when_transposed() {
        let array: Array2<f32> = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let request = InferRequest::new("m")
            .with_input(InferInput::from_array("T", &array.t()))
            .with_input(InferInput::from_bytes_array("S", &array![["a"], ["bc"]]))
            .into_proto()
            .unwrap();
        assert_eq!(request.inputs[0].shape, [3, 2]);
        assert_eq!(
            f32::decode_le(&request.raw_input_contents[0]),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
        assert_eq!(request.inputs[1].shape, [2, 1]);
        assert_eq!(request.raw_input_contents[1], &b"\x01\0\0\0a\x02\0\0\0bc"[..]);
    }

    #[test]
    fn shape_and_data_must_agree() {
        let err = InferRequest::new("m")
            .with_input(InferInput::new("A", [2, 3]).with_data(&[1u8; 5]))
            .into_proto()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor \"A\" with shape [2, 3] needs 6 elements, given 5"
        );
    }

    #[test]
    fn missing_data_and_negative_dimensions_are_rejected() {
        let err = InferRequest::new("m")
            .with_input(InferInput::new("A", [1]))
            .into_proto()
            .unwrap_err();
        assert_eq!(err.to_string(), "input \"A\" has no data");
        let err = InferRequest::new("m")
            .with_input(InferInput::new("A", [-1, 4]).with_data(&[0i64; 4]))
            .into_proto()
            .unwrap_err();
        assert!(err.to_string().contains("dimension -1"), "{err}");
    }
}
