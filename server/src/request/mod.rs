//! Turning a `ModelInferRequest` into an [`InferRequest`] checked against the model's spec: the one place
//! where request contents are validated. Everything after this trusts shapes, sizes and names.
//!
//! [`InferRequest::parse_with_shared_memory`] runs the checks in Triton's order; each job has a module:
//!
//! - `parameters`: the request's `priority` and `timeout`; `sequence`: its sequence id and flags.
//! - `sources`: where each input's bytes are (shared memory, `raw_input_contents` or typed `contents`).
//! - `shape`: the input count, the batch dimension, and each input's data type and shape.
//! - `outputs`: which outputs are requested.
//! - `raw`, `strings`, `typed`, `shared_memory`: each input's bytes, from raw contents, BYTES elements,
//!   typed contents or a shared memory region.

mod outputs;
mod parameters;
mod raw;
mod sequence;
mod shape;
mod shared_memory;
mod sources;
mod strings;
#[cfg(test)]
mod tests;
mod typed;

use std::time::Duration;

use bytes::Bytes;
use ferry_proto::inference::ModelInferRequest;

use self::{
    outputs::requested_outputs,
    parameters::unsigned_parameter,
    raw::raw_data,
    shape::{check_batch, check_input_count, check_shape, unexpected_input},
    shared_memory::{input_regions, shared_memory_data},
    sources::{Source, data_sources},
    typed::typed_data,
};
pub use self::{
    sequence::{MAX_CORRELATION_ID_BYTES, SequenceFlags},
    shape::full_dims,
    strings::{SplitError, split_length_prefixed},
};
use crate::{DataType, Error, classification::Classification, config::ModelSpec, shm::SharedMemoryRegistry};

/// The elements of one input tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Fixed-size elements, little-endian and row-major, exactly `elements × element size` bytes.
    Fixed(Bytes),
    /// BYTES elements, one slice each.
    Strings(Vec<Bytes>),
}

/// One input of a validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// Position of the input in the model spec.
    pub index: usize,
    /// The shape the client sent, batch dimension included.
    pub shape: Vec<i64>,
    /// The shape ONNX Runtime receives: `shape`, or the batch dimension and the config's `reshape`.
    pub model_shape: Vec<i64>,
    /// The elements.
    pub data: TensorData,
}

/// A request that fits its model: every input present once, with the right type, shape and byte size, and
/// every requested output known.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: String,
    /// The inputs, in the order the client sent them.
    pub inputs: Vec<InputTensor>,
    /// Positions in the model spec of the outputs to return, in the order requested.
    pub outputs: Vec<usize>,
    /// Rows in this request: its first dimension for a batching model, otherwise 1.
    pub batch_size: usize,
    /// The `priority` parameter: 0 for the model's default level, 1 for the highest.
    pub priority: u64,
    /// The `timeout` parameter (microseconds on the wire): a shorter queue timeout, where the model allows.
    pub timeout: Option<Duration>,
    /// The requested outputs to answer with their top classes (the `classification` parameter).
    pub classifications: Vec<Classification>,
    /// The sequence the request belongs to (`sequence_id`, `sequence_start`, `sequence_end`), if any.
    pub sequence: Option<SequenceFlags>,
}

impl InferRequest {
    /// Validates `request` against `spec`, taking its tensor payloads without copying raw contents. No
    /// shared memory region is known here, so an input in shared memory is refused as `NOT_FOUND`.
    pub fn parse(request: ModelInferRequest, spec: &ModelSpec) -> Result<Self, Error> {
        Self::parse_with_shared_memory(request, spec, &SharedMemoryRegistry::default())
    }

    /// [`InferRequest::parse`], with inputs that name a region of `regions` in their `shared_memory_*`
    /// parameters. Their bytes are copied out of the region here, once, so that the request owns them and
    /// the client may reuse the region as soon as it has the response. As in Triton, `raw_input_contents`
    /// then holds one entry per input that is *not* in shared memory.
    ///
    /// The checks come in Triton's order, each failing with Triton's status and text where Triton has one
    /// (`infer_handler.cc` for parameters and where the data is, `InferenceRequest::Normalize` and
    /// `ValidateRequestInputs` in core's `infer_request.cc` for the rest): parameters, names, data sources,
    /// outputs, input count, batch size, then each input's type, shape and bytes.
    pub fn parse_with_shared_memory(
        request: ModelInferRequest,
        spec: &ModelSpec,
        regions: &SharedMemoryRegistry,
    ) -> Result<Self, Error> {
        let ModelInferRequest {
            id,
            parameters,
            inputs: wire_inputs,
            outputs: wire_outputs,
            raw_input_contents,
            ..
        } = request;
        let priority = unsigned_parameter(&parameters, "priority")?.unwrap_or(0);
        let timeout = unsigned_parameter(&parameters, "timeout")?.map(Duration::from_micros);
        let sequence = sequence::sequence_flags(&parameters)?;
        let at = Context {
            tag: RequestTag(&id),
            model: &spec.name,
        };
        if let Some(twice) = wire_inputs
            .iter()
            .enumerate()
            .find(|(i, input)| wire_inputs[..*i].iter().any(|earlier| earlier.name == input.name))
        {
            return Err(Error::invalid(format!(
                "{}input '{}' already exists in request",
                at.tag, twice.1.name
            )));
        }
        let in_shared_memory = input_regions(&wire_inputs)?;
        let sources = data_sources(&wire_inputs, &in_shared_memory, raw_input_contents.len(), &at)?;
        let outputs = requested_outputs(wire_outputs.iter().map(|o| o.name.as_str()), spec)?;
        check_input_count(&wire_inputs, spec, &at)?;
        let batch_size = check_batch(&wire_inputs, spec, &at)?;
        let mut raw = raw_input_contents.into_iter();
        let mut inputs = Vec::with_capacity(wire_inputs.len());
        let mut decoded = 0usize;
        for ((wire, region), source) in wire_inputs.into_iter().zip(in_shared_memory).zip(sources) {
            let Some((index, tensor)) = spec.input(&wire.name) else {
                return Err(unexpected_input(&wire.name, spec));
            };
            let elements = check_shape(&wire, tensor, spec.max_batch_size, &at)?;
            let raw_bytes = match source {
                Source::Raw => raw.next(),
                Source::Shared | Source::Typed => None,
            };
            let given = match (&region, &raw_bytes) {
                (Some(region), _) => region.byte_size,
                (None, Some(bytes)) => bytes.len(),
                (None, None) => 0,
            };
            decoded = decoded.saturating_add(decoded_cost(tensor.data_type, elements, given));
            if decoded > spec.max_request_bytes {
                return Err(Error::TooLarge(format!(
                    "request for model '{}' needs at least {decoded} bytes of memory once decoded (up to input \
                     '{}', {elements} {} elements), over the limit of {} bytes (--max-request-bytes)",
                    spec.name, wire.name, tensor.data_type, spec.max_request_bytes
                )));
            }
            let data = match (region, raw_bytes) {
                (Some(region), _) => {
                    shared_memory_data(&wire.name, &region, regions, tensor.data_type, elements, &at)?
                }
                (None, Some(bytes)) => raw_data(bytes, &wire.name, tensor.data_type, elements, &at)?,
                (None, None) => typed_data(
                    wire.contents.as_ref(),
                    &wire.name,
                    tensor.data_type,
                    elements,
                    &at,
                )?,
            };
            let model_shape = match &tensor.reshape {
                Some(reshape) => {
                    let batch_dims = if spec.max_batch_size > 0 {
                        &wire.shape[..1]
                    } else {
                        &[][..]
                    };
                    batch_dims.iter().chain(reshape).copied().collect()
                }
                None => wire.shape.clone(),
            };
            inputs.push(InputTensor {
                index,
                shape: wire.shape,
                model_shape,
                data,
            });
        }
        // Triton counts inputs, so with optional inputs a required one can still be missing.
        if let Some(missing) = spec
            .inputs
            .iter()
            .enumerate()
            .find(|(index, t)| !t.optional && !inputs.iter().any(|i| i.index == *index))
        {
            return Err(Error::invalid(format!(
                "missing input '{}' for model '{}' (expected {} {:?})",
                missing.1.name,
                spec.name,
                missing.1.data_type,
                full_dims(missing.1, spec.max_batch_size)
            )));
        }
        let classifications = crate::classification::requested(&wire_outputs, spec)?;
        // Spec order, whatever order the client sent: requests that batch together line up input by input.
        inputs.sort_unstable_by_key(|input| input.index);
        Ok(InferRequest {
            id,
            inputs,
            outputs,
            batch_size,
            priority,
            timeout,
            classifications,
            sequence,
        })
    }
}

/// What messages about one request carry: Triton's request tag and the model's name.
struct Context<'a> {
    /// `[request id: <id>] `, as Triton's core starts its messages about a request (`LogRequest`).
    tag: RequestTag<'a>,
    /// The model the request is for.
    model: &'a str,
}

/// Triton's tag for messages about the request with this id, `<id_unknown>` when it has none; written out
/// only when a message needs it, so that a request that passes costs no string.
struct RequestTag<'a>(&'a str);

impl std::fmt::Display for RequestTag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = if self.0.is_empty() { "<id_unknown>" } else { self.0 };
        write!(f, "[request id: {id}] ")
    }
}

/// The memory an input takes once decoded: its elements for fixed-size types; for BYTES, the `given` bytes
/// plus what holding each element costs (`BYTES_ELEMENT_COST`), so that a few megabytes of empty strings
/// cannot turn into gigabytes.
fn decoded_cost(data_type: DataType, elements: usize, given: usize) -> usize {
    match data_type.element_size() {
        Some(size) => elements.saturating_mul(size),
        None => elements
            .saturating_mul(crate::limits::BYTES_ELEMENT_COST)
            .saturating_add(given),
    }
}
