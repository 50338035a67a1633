//! The engine's request builder and answer: typed Rust slices in, typed vectors out, carried as the
//! protocol's `ModelInferRequest` and `ModelInferResponse` so that the core sees exactly what a gRPC client
//! would send.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::inference::{
    self as pb,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};

use crate::{DataType, Error};

/// A Rust type that is one element of a tensor of the protocol type [`Element::DATA_TYPE`], read and
/// written little-endian as the raw tensor contents are.
pub trait Element: Sized + Copy {
    /// The protocol data type of a tensor of this element.
    const DATA_TYPE: DataType;
    /// Appends `values` to `out` in the raw tensor layout.
    fn write(values: &[Self], out: &mut Vec<u8>);
    /// One element from exactly [`DataType::element_size`] bytes.
    fn read(bytes: &[u8]) -> Self;
}

macro_rules! numeric_element {
    ($($rust:ty => $data_type:ident),* $(,)?) => {$(
        impl Element for $rust {
            const DATA_TYPE: DataType = DataType::$data_type;
            fn write(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(std::mem::size_of_val(values));
                for value in values {
                    out.extend_from_slice(&value.to_le_bytes());
                }
            }
            fn read(bytes: &[u8]) -> Self {
                let mut array = [0u8; std::mem::size_of::<$rust>()];
                array.copy_from_slice(bytes);
                <$rust>::from_le_bytes(array)
            }
        }
    )*};
}

numeric_element!(
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    half::f16 => Fp16, half::bf16 => Bf16, f32 => Fp32, f64 => Fp64,
);

impl Element for bool {
    const DATA_TYPE: DataType = DataType::Bool;
    fn write(values: &[Self], out: &mut Vec<u8>) {
        out.extend(values.iter().map(|value| u8::from(*value)));
    }
    fn read(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// An inference request under construction: the model, its inputs as raw tensor contents, and the outputs
/// wanted (every output when none is named). Nothing is checked here; the engine checks the request against
/// the model as the server checks a gRPC request, and names what is wrong.
#[derive(Debug, Clone, Default)]
pub struct Request {
    request: pb::ModelInferRequest,
}

impl Request {
    /// A request for the highest ready version of model `model`.
    pub fn new(model: impl Into<String>) -> Self {
        Request {
            request: pb::ModelInferRequest {
                model_name: model.into(),
                ..pb::ModelInferRequest::default()
            },
        }
    }

    /// The same request for version `version` of the model (a number, or a version label).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.request.model_version = version.into();
        self
    }

    /// The same request with the id the answer repeats.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.request.id = id.into();
        self
    }

    /// The same request with input `name` of shape `shape` (the batch dimension first, for a model that
    /// batches) holding `values`, in C order.
    pub fn input<T: Element>(self, name: impl Into<String>, shape: &[i64], values: &[T]) -> Self {
        let mut raw = Vec::new();
        T::write(values, &mut raw);
        self.raw_input(name, T::DATA_TYPE, shape, Bytes::from(raw))
    }

    /// The same request with input `name` of type `data_type` and shape `shape` whose contents are `raw`:
    /// little-endian elements in C order, or for BYTES each element as a 4-byte little-endian length and
    /// its bytes (the protocol's raw layout).
    pub fn raw_input(
        mut self,
        name: impl Into<String>,
        data_type: DataType,
        shape: &[i64],
        raw: Bytes,
    ) -> Self {
        self.request.inputs.push(InferInputTensor {
            name: name.into(),
            datatype: data_type.wire_name().to_owned(),
            shape: shape.to_vec(),
            parameters: HashMap::new(),
            contents: None,
        });
        self.request.raw_input_contents.push(raw);
        self
    }

    /// The same request with input `name` of BYTES holding `values` (strings or binary), shape `shape`.
    pub fn bytes_input<V: AsRef<[u8]>>(self, name: impl Into<String>, shape: &[i64], values: &[V]) -> Self {
        let mut raw = Vec::new();
        for value in values {
            let value = value.as_ref();
            // An element longer than 4 GiB cannot be framed; the core refuses the wrong byte count.
            raw.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
            raw.extend_from_slice(value);
        }
        self.raw_input(name, DataType::Bytes, shape, Bytes::from(raw))
    }

    /// The same request asking for output `name`; a request that names no output gets every output.
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.request.outputs.push(InferRequestedOutputTensor {
            name: name.into(),
            parameters: HashMap::new(),
        });
        self
    }
}

impl From<Request> for pb::ModelInferRequest {
    fn from(request: Request) -> Self {
        request.request
    }
}

/// The answer to a request: the version that answered and its outputs.
#[derive(Debug, Clone)]
pub struct Response {
    /// The model that answered.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request's id, if it had one.
    pub id: String,
    /// The outputs, in the model's order.
    pub outputs: Vec<Output>,
}

impl Response {
    /// Output `name`, or `NOT_FOUND` naming it and the outputs there are.
    pub fn output(&self, name: &str) -> Result<&Output, Error> {
        self.outputs
            .iter()
            .find(|output| output.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.outputs.iter().map(|output| output.name.as_str()).collect();
                Error::NotFound(format!(
                    "the response of model '{}' has no output '{name}'; it has {names:?}",
                    self.model_name
                ))
            })
    }
}

impl From<pb::ModelInferResponse> for Response {
    fn from(response: pb::ModelInferResponse) -> Self {
        let outputs = response
            .outputs
            .into_iter()
            .zip(response.raw_output_contents)
            .map(|(tensor, data)| Output {
                name: tensor.name,
                datatype: tensor.datatype,
                shape: tensor.shape,
                data,
            })
            .collect();
        Response {
            model_name: response.model_name,
            model_version: response.model_version,
            id: response.id,
            outputs,
        }
    }
}

/// One output tensor as raw contents.
#[derive(Debug, Clone)]
pub struct Output {
    /// The output's name.
    pub name: String,
    /// Its protocol data type (`FP32`, `INT32`, `BYTES`, ...).
    pub datatype: String,
    /// Its shape, the batch dimension first for a model that batches.
    pub shape: Vec<i64>,
    /// Its contents in the protocol's raw layout (see [`Request::raw_input`]).
    pub data: Bytes,
}

impl Output {
    /// The elements as `T`, in C order; `INVALID_ARGUMENT` when the output is not of `T`'s type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, Error> {
        let expected = T::DATA_TYPE.wire_name();
        if self.datatype != expected {
            return Err(Error::invalid(format!(
                "output '{}' is {}, read as {expected}",
                self.name, self.datatype
            )));
        }
        let size = T::DATA_TYPE.element_size().unwrap_or(1);
        Ok(self.data.chunks_exact(size).map(T::read).collect())
    }

    /// The elements of a BYTES output, each as its bytes; `INVALID_ARGUMENT` for any other type or
    /// contents that are not length-prefixed elements.
    pub fn to_bytes_vec(&self) -> Result<Vec<Bytes>, Error> {
        if self.datatype != DataType::Bytes.wire_name() {
            return Err(Error::invalid(format!(
                "output '{}' is {}, read as BYTES",
                self.name, self.datatype
            )));
        }
        let malformed = || Error::invalid(format!("output '{}' has malformed BYTES contents", self.name));
        let mut elements = Vec::new();
        let mut offset = 0;
        while offset < self.data.len() {
            let prefix = self.data.get(offset..offset + 4).ok_or_else(malformed)?;
            let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            let end = (offset + 4).checked_add(length).ok_or_else(malformed)?;
            if end > self.data.len() {
                return Err(malformed());
            }
            elements.push(self.data.slice(offset + 4..end));
            offset = end;
        }
        Ok(elements)
    }
}
