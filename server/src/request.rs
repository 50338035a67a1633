//! Turning a `ModelInferRequest` into an [`InferRequest`] checked against the model's spec: the one place
//! where request contents are validated. Everything after this trusts shapes, sizes and names.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, infer_parameter::ParameterChoice,
    model_infer_request::InferInputTensor,
};

use crate::{
    DataType, Error,
    classification::Classification,
    config::{ModelSpec, TensorSpec},
    shm::{SharedMemoryRegistry, TensorRegion},
};

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
        let in_shared_memory = wire_inputs
            .iter()
            .map(|wire| {
                if wire.parameters.is_empty() {
                    // The common case, without building the name for messages.
                    Ok(None)
                } else {
                    TensorRegion::from_parameters(&wire.parameters, &format!("input '{}'", wire.name))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let uses_raw = !raw_input_contents.is_empty();
        if uses_raw {
            if let Some(typed) = wire_inputs
                .iter()
                .zip(&in_shared_memory)
                .find(|(i, region)| region.is_none() && i.contents.as_ref().is_some_and(has_values))
            {
                return Err(Error::invalid(format!(
                    "input '{}' sets contents while the request also uses raw_input_contents; a request uses \
                     one or the other for all its inputs",
                    typed.0.name
                )));
            }
            let shared = in_shared_memory.iter().filter(|r| r.is_some()).count();
            let expected = wire_inputs.len() - shared;
            if raw_input_contents.len() != expected {
                let which = if shared == 0 { "" } else { " not in shared memory" };
                let without: Vec<&str> = wire_inputs
                    .iter()
                    .zip(&in_shared_memory)
                    .filter(|(_, region)| region.is_none())
                    .skip(raw_input_contents.len())
                    .map(|(input, _)| input.name.as_str())
                    .collect();
                let named = if without.is_empty() {
                    String::new()
                } else {
                    format!("; inputs without contents: '{}'", without.join("', '"))
                };
                return Err(Error::invalid(format!(
                    "raw_input_contents has {} entries but the request has {expected} inputs{which}; expected one \
                     entry per input{which}{named}",
                    raw_input_contents.len(),
                )));
            }
        }
        let mut raw = raw_input_contents.into_iter();
        let mut inputs = Vec::with_capacity(wire_inputs.len());
        let mut decoded = 0usize;
        let mut batch: Option<(usize, String)> = None;
        for (wire, region) in wire_inputs.into_iter().zip(in_shared_memory) {
            let Some((index, tensor)) = spec.input(&wire.name) else {
                let names: Vec<&str> = spec.inputs.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::invalid(format!(
                    "unknown input '{}' for model '{}'; expected inputs: {}",
                    wire.name,
                    spec.name,
                    names.join(", ")
                )));
            };
            if inputs.iter().any(|i: &InputTensor| i.index == index) {
                return Err(Error::invalid(format!(
                    "input '{}' is given more than once",
                    wire.name
                )));
            }
            let elements = check_shape(&wire, tensor, spec.max_batch_size)?;
            if spec.max_batch_size > 0 {
                let rows = wire.shape[0] as usize;
                match &batch {
                    Some((expected, first)) if *expected != rows => {
                        return Err(Error::invalid(format!(
                            "input '{}' has batch size {rows} but input '{first}' has batch size {expected}; all \
                             inputs of a request share the batch size",
                            wire.name
                        )));
                    }
                    Some(_) => {}
                    None => batch = Some((rows, wire.name.clone())),
                }
            }
            let raw_bytes = if region.is_none() { raw.next() } else { None };
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
                (Some(region), _) => shared_memory_data(&wire, &region, regions, tensor.data_type, elements)?,
                (None, Some(bytes)) => raw_data(bytes, &wire.name, tensor.data_type, elements, RAW)?,
                (None, None) => typed_data(wire.contents.as_ref(), &wire.name, tensor.data_type, elements)?,
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
        let outputs = requested_outputs(wire_outputs.iter().map(|o| o.name.as_str()), spec)?;
        let classifications = crate::classification::requested(&wire_outputs, spec)?;
        // Spec order, whatever order the client sent: requests that batch together line up input by input.
        inputs.sort_unstable_by_key(|input| input.index);
        Ok(InferRequest {
            id,
            inputs,
            outputs,
            batch_size: batch.map_or(1, |(rows, _)| rows),
            priority,
            timeout,
            classifications,
        })
    }
}

/// A request parameter that must be a non-negative integer (`priority`, `timeout`), sent as int64 or uint64.
fn unsigned_parameter(parameters: &HashMap<String, InferParameter>, key: &str) -> Result<Option<u64>, Error> {
    let Some(parameter) = parameters.get(key) else {
        return Ok(None);
    };
    match parameter.parameter_choice {
        Some(ParameterChoice::Uint64Param(value)) => Ok(Some(value)),
        Some(ParameterChoice::Int64Param(value)) if value >= 0 => Ok(Some(value as u64)),
        Some(ParameterChoice::Int64Param(value)) => Err(Error::invalid(format!(
            "parameter '{key}' must be 0 or more, got {value}"
        ))),
        ref other => Err(Error::invalid(format!(
            "parameter '{key}' must be an integer (int64_param or uint64_param), got {other:?}"
        ))),
    }
}

fn has_values(contents: &InferTensorContents) -> bool {
    !(contents.bool_contents.is_empty()
        && contents.int_contents.is_empty()
        && contents.int64_contents.is_empty()
        && contents.uint_contents.is_empty()
        && contents.uint64_contents.is_empty()
        && contents.fp32_contents.is_empty()
        && contents.fp64_contents.is_empty()
        && contents.bytes_contents.is_empty())
}

/// The config's shape with the batch dimension, as clients see it.
pub fn full_dims(tensor: &TensorSpec, max_batch_size: usize) -> Vec<i64> {
    let batch = (max_batch_size > 0).then_some(-1);
    batch.into_iter().chain(tensor.dims.iter().copied()).collect()
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

/// Checks data type and shape, returning the number of elements.
fn check_shape(wire: &InferInputTensor, tensor: &TensorSpec, max_batch_size: usize) -> Result<usize, Error> {
    let name = &wire.name;
    if wire.datatype != tensor.data_type.wire_name() {
        return Err(Error::invalid(format!(
            "input '{name}' has datatype {} but the model expects {}",
            wire.datatype, tensor.data_type
        )));
    }
    let expected = full_dims(tensor, max_batch_size);
    if wire.shape.len() != expected.len() {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {:?} (rank {}) but the model expects shape {expected:?} (rank {})",
            wire.shape,
            wire.shape.len(),
            expected.len()
        )));
    }
    if let Some(position) = wire
        .shape
        .iter()
        .zip(&expected)
        .position(|(given, want)| *given < 0 || (*want != -1 && given != want))
    {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {:?} but the model expects shape {expected:?}: dimension {position} is {}",
            wire.shape, wire.shape[position]
        )));
    }
    if max_batch_size > 0 {
        let rows = wire.shape[0];
        if rows < 1 || rows as usize > max_batch_size {
            return Err(Error::invalid(format!(
                "input '{name}' has batch size {rows} but the model's max_batch_size is {max_batch_size}; \
                 send between 1 and {max_batch_size} rows"
            )));
        }
    }
    wire.shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d as usize))
        .ok_or_else(|| {
            Error::invalid(format!(
                "input '{name}' has shape {:?}, which is too large",
                wire.shape
            ))
        })
}

/// Where an input's bytes came from, as size errors name it.
const RAW: &str = "raw contents";
/// The same for an input in shared memory.
const SHARED: &str = "shared memory (shared_memory_byte_size)";

/// Checks the size of raw contents and, for BYTES, splits the length-prefixed elements without copying.
/// `source` says where the bytes came from ([`RAW`] or [`SHARED`]).
fn raw_data(
    bytes: Bytes,
    name: &str,
    data_type: DataType,
    elements: usize,
    source: &str,
) -> Result<TensorData, Error> {
    let Some(size) = data_type.element_size() else {
        return split_length_prefixed(bytes, name, elements).map(TensorData::Strings);
    };
    check_fixed_size(bytes.len(), name, data_type, elements, size, source)?;
    if data_type == DataType::Bool
        && let Some(position) = bytes.iter().position(|b| *b > 1)
    {
        return Err(Error::invalid(format!(
            "input '{name}' element {position} is byte {} but BOOL elements are 0 or 1",
            bytes[position]
        )));
    }
    Ok(TensorData::Fixed(bytes))
}

/// Checks that `given` bytes hold exactly `elements` elements of `size` bytes.
fn check_fixed_size(
    given: usize,
    name: &str,
    data_type: DataType,
    elements: usize,
    size: usize,
    source: &str,
) -> Result<(), Error> {
    let expected = elements.saturating_mul(size);
    if given != expected {
        return Err(Error::invalid(format!(
            "input '{name}' has {given} bytes of {source} but its shape holds {elements} {data_type} elements \
             of {size} bytes, {expected} bytes in all"
        )));
    }
    Ok(())
}

/// Copies an input's bytes out of its shared memory region, once. The region, the bounds and (for
/// fixed-size types) the size are checked first, so a bad request costs no copy; BYTES inputs are split
/// like raw contents.
fn shared_memory_data(
    wire: &InferInputTensor,
    region: &TensorRegion,
    regions: &SharedMemoryRegistry,
    data_type: DataType,
    elements: usize,
) -> Result<TensorData, Error> {
    let name = &wire.name;
    if wire.contents.as_ref().is_some_and(has_values) {
        return Err(Error::invalid(format!(
            "input '{name}' takes its data from shared memory region '{}' but also sets contents; an input \
             in shared memory has no contents",
            region.region
        )));
    }
    let slice = regions.slice(region, &format!("input '{name}'"))?;
    if let Some(size) = data_type.element_size() {
        check_fixed_size(slice.byte_size(), name, data_type, elements, size, SHARED)?;
    }
    raw_data(slice.to_bytes()?, name, data_type, elements, SHARED)
}

/// Splits raw BYTES contents: each element is a 4-byte little-endian length followed by that many bytes.
pub fn split_length_prefixed(bytes: Bytes, name: &str, elements: usize) -> Result<Vec<Bytes>, Error> {
    let mut items = Vec::with_capacity(elements.min(bytes.len() / 4));
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(prefix) = bytes.get(at..at + 4) else {
            return Err(Error::invalid(format!(
                "input '{name}' BYTES element {} has a truncated 4-byte length prefix at byte {at}",
                items.len()
            )));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "input '{name}' BYTES element {} claims {len} bytes but only {} remain",
                    items.len(),
                    bytes.len() - start
                ))
            })?;
        if items.len() == elements {
            return Err(Error::invalid(format!(
                "input '{name}' raw contents hold more than the {elements} BYTES elements its shape holds"
            )));
        }
        items.push(bytes.slice(start..end));
        at = end;
    }
    if items.len() != elements {
        return Err(Error::invalid(format!(
            "input '{name}' raw contents hold {} BYTES elements but its shape holds {elements}",
            items.len()
        )));
    }
    Ok(items)
}

/// Converts typed `contents` to the tensor's raw form, checking the count and each value's range.
fn typed_data(
    contents: Option<&InferTensorContents>,
    name: &str,
    data_type: DataType,
    elements: usize,
) -> Result<TensorData, Error> {
    let empty = InferTensorContents::default();
    let contents = contents.unwrap_or(&empty);
    let check_count = |field: &str, given: usize| {
        if given == elements {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "input '{name}' ({data_type}) has {given} values in contents.{field} but its shape holds {elements}"
            )))
        }
    };
    let bytes = match data_type {
        DataType::Bool => {
            check_count("bool_contents", contents.bool_contents.len())?;
            contents.bool_contents.iter().map(|b| u8::from(*b)).collect()
        }
        DataType::Int8 => narrow(
            &contents.int_contents,
            i8::to_le_bytes,
            "int_contents",
            name,
            data_type,
            elements,
        )?,
        DataType::Int16 => narrow(
            &contents.int_contents,
            i16::to_le_bytes,
            "int_contents",
            name,
            data_type,
            elements,
        )?,
        DataType::Int32 => {
            check_count("int_contents", contents.int_contents.len())?;
            contents
                .int_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DataType::Int64 => {
            check_count("int64_contents", contents.int64_contents.len())?;
            contents
                .int64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DataType::Uint8 => narrow(
            &contents.uint_contents,
            u8::to_le_bytes,
            "uint_contents",
            name,
            data_type,
            elements,
        )?,
        DataType::Uint16 => narrow(
            &contents.uint_contents,
            u16::to_le_bytes,
            "uint_contents",
            name,
            data_type,
            elements,
        )?,
        DataType::Uint32 => {
            check_count("uint_contents", contents.uint_contents.len())?;
            contents
                .uint_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DataType::Uint64 => {
            check_count("uint64_contents", contents.uint64_contents.len())?;
            contents
                .uint64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DataType::Fp32 => {
            check_count("fp32_contents", contents.fp32_contents.len())?;
            contents
                .fp32_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DataType::Fp64 => {
            check_count("fp64_contents", contents.fp64_contents.len())?;
            contents
                .fp64_contents
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DataType::Bytes => {
            check_count("bytes_contents", contents.bytes_contents.len())?;
            return Ok(TensorData::Strings(contents.bytes_contents.clone()));
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(Error::invalid(format!(
                "input '{name}' is {data_type}, which has no typed contents field; send it in raw_input_contents"
            )));
        }
    };
    Ok(TensorData::Fixed(Bytes::from(bytes)))
}

/// Converts integers carried in a wider typed-contents field (`int_contents` for INT8 and INT16,
/// `uint_contents` for UINT8 and UINT16) to `T`, rejecting values out of `T`'s range.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>, const N: usize>(
    values: &[W],
    to_le_bytes: fn(T) -> [u8; N],
    field: &str,
    name: &str,
    data_type: DataType,
    elements: usize,
) -> Result<Vec<u8>, Error> {
    if values.len() != elements {
        return Err(Error::invalid(format!(
            "input '{name}' ({data_type}) has {} values in contents.{field} but its shape holds {elements}",
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(elements * N);
    for (position, value) in values.iter().enumerate() {
        let narrowed = T::try_from(*value).map_err(|_| {
            Error::invalid(format!(
                "input '{name}' element {position} is {value}, which does not fit in {data_type}"
            ))
        })?;
        out.extend_from_slice(&to_le_bytes(narrowed));
    }
    Ok(out)
}

/// Positions of the requested outputs; all outputs, in config order, when none is named.
fn requested_outputs<'a>(
    names: impl Iterator<Item = &'a str>,
    spec: &ModelSpec,
) -> Result<Vec<usize>, Error> {
    let mut outputs = Vec::new();
    for name in names {
        let Some((index, _)) = spec.output(name) else {
            let known: Vec<&str> = spec.outputs.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown requested output '{name}' for model '{}'; outputs: {}",
                spec.name,
                known.join(", ")
            )));
        };
        if outputs.contains(&index) {
            return Err(Error::invalid(format!(
                "output '{name}' is requested more than once"
            )));
        }
        outputs.push(index);
    }
    if outputs.is_empty() {
        outputs = (0..spec.outputs.len()).collect();
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::model_infer_request::InferRequestedOutputTensor;

    use super::*;
    use crate::config::{InstancePlan, VersionPolicy};

    fn tensor(name: &str, data_type: DataType, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            data_type,
            dims: dims.to_vec(),
            reshape: None,
            optional: false,
        }
    }

    fn spec(max_batch_size: usize, inputs: Vec<TensorSpec>) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            max_batch_size,
            inputs,
            outputs: vec![
                tensor("out", DataType::Fp32, &[-1]),
                tensor("aux", DataType::Int64, &[1]),
            ],
            version_policy: VersionPolicy::Latest(1),
            instances: InstancePlan {
                count: 1,
                intra_op_threads: None,
                inter_op_threads: None,
                placement: Default::default(),
            },
            model_filename: "model.onnx".into(),
            batching: ferry_batching::BatchingPolicy::unbatched(None),
            max_request_bytes: 1 << 20,
            config: Default::default(),
            labels: Default::default(),
        }
    }

    fn wire(
        name: &str,
        datatype: DataType,
        shape: &[i64],
        contents: Option<InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.wire_name().into(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents,
        }
    }

    fn raw_request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            id: "id-7".into(),
            inputs,
            raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
            ..Default::default()
        }
    }

    fn message(result: Result<InferRequest, Error>) -> String {
        match result {
            Err(Error::InvalidRequest(message)) => message,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    /// Typed contents for three elements of `data_type`, and the raw bytes they must become.
    fn typed_and_raw(data_type: DataType) -> (InferTensorContents, Vec<u8>) {
        let mut contents = InferTensorContents::default();
        let raw: Vec<u8> = match data_type {
            DataType::Bool => {
                contents.bool_contents = vec![true, false, true];
                vec![1, 0, 1]
            }
            DataType::Int8 => {
                contents.int_contents = vec![-128, 0, 127];
                [-128i8, 0, 127].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Int16 => {
                contents.int_contents = vec![-32768, 1, 32767];
                [-32768i16, 1, 32767]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Int32 => {
                contents.int_contents = vec![i32::MIN, 0, i32::MAX];
                [i32::MIN, 0, i32::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Int64 => {
                contents.int64_contents = vec![i64::MIN, 0, i64::MAX];
                [i64::MIN, 0, i64::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Uint8 => {
                contents.uint_contents = vec![0, 1, 255];
                vec![0, 1, 255]
            }
            DataType::Uint16 => {
                contents.uint_contents = vec![0, 1, 65535];
                [0u16, 1, 65535].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Uint32 => {
                contents.uint_contents = vec![0, 1, u32::MAX];
                [0u32, 1, u32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Uint64 => {
                contents.uint64_contents = vec![0, 1, u64::MAX];
                [0u64, 1, u64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            DataType::Fp32 => {
                contents.fp32_contents = vec![-1.5, 0.0, f32::MAX];
                [-1.5f32, 0.0, f32::MAX]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Fp64 => {
                contents.fp64_contents = vec![-1.5, 0.0, f64::MIN_POSITIVE];
                [-1.5f64, 0.0, f64::MIN_POSITIVE]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            DataType::Bytes => {
                contents.bytes_contents = vec![
                    Bytes::from_static(b"a"),
                    Bytes::new(),
                    Bytes::from_static(b"\0\xff"),
                ];
                vec![1, 0, 0, 0, b'a', 0, 0, 0, 0, 2, 0, 0, 0, 0, 0xff]
            }
            DataType::Fp16 | DataType::Bf16 => {
                vec![0, 60, 0, 0, 0, 188]
            }
        };
        (contents, raw)
    }

    #[test]
    fn every_type_parses_from_raw_and_typed_to_the_same_tensor() {
        for data_type in DataType::ALL {
            let spec = spec(0, vec![tensor("x", data_type, &[-1])]);
            let (contents, raw) = typed_and_raw(data_type);
            let from_raw = InferRequest::parse(
                raw_request(vec![wire("x", data_type, &[3], None)], vec![raw]),
                &spec,
            )
            .unwrap_or_else(|e| panic!("{data_type} raw: {e}"));
            assert_eq!(from_raw.inputs[0].shape, [3]);
            let typed = raw_request(vec![wire("x", data_type, &[3], Some(contents))], vec![]);
            match data_type {
                DataType::Fp16 | DataType::Bf16 => {
                    let message = message(InferRequest::parse(typed, &spec));
                    assert!(message.contains("raw_input_contents"), "{message}");
                }
                _ => {
                    let from_typed = InferRequest::parse(typed, &spec)
                        .unwrap_or_else(|e| panic!("{data_type} typed: {e}"));
                    assert_eq!(from_typed.inputs[0].data, from_raw.inputs[0].data, "{data_type}");
                }
            }
        }
    }

    #[test]
    fn bytes_elements_are_split_without_copying() {
        let spec = spec(0, vec![tensor("x", DataType::Bytes, &[-1])]);
        let raw = Bytes::from(vec![2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
        let request = ModelInferRequest {
            inputs: vec![wire("x", DataType::Bytes, &[2], None)],
            raw_input_contents: vec![raw.clone()],
            ..Default::default()
        };
        let parsed = InferRequest::parse(request, &spec).expect("valid");
        let TensorData::Strings(items) = &parsed.inputs[0].data else {
            panic!("BYTES must parse to strings");
        };
        assert_eq!(items, &[Bytes::from_static(b"hi"), Bytes::new()]);
        assert_eq!(
            items[0].as_ptr(),
            raw[4..].as_ptr(),
            "the element is a slice of the received bytes"
        );
    }

    #[test]
    fn bytes_prefixes_that_lie_are_rejected() {
        for (raw, needle) in [
            (vec![9, 0, 0, 0, b'a'], "claims 9 bytes"),
            (vec![1, 0, 0], "truncated"),
            (vec![1, 0, 0, 0, b'a', 1, 0, 0, 0, b'b'], "more than the 1"),
            (vec![], "hold 0 BYTES elements"),
        ] {
            let elements = 1;
            let error = split_length_prefixed(Bytes::from(raw), "x", elements).expect_err(needle);
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }

    #[test]
    fn out_of_range_narrow_values_are_rejected() {
        let spec = spec(0, vec![tensor("x", DataType::Int8, &[1])]);
        let contents = InferTensorContents {
            int_contents: vec![300],
            ..Default::default()
        };
        let message = message(InferRequest::parse(
            raw_request(vec![wire("x", DataType::Int8, &[1], Some(contents))], vec![]),
            &spec,
        ));
        assert!(message.contains("300") && message.contains("INT8"), "{message}");
    }

    #[test]
    fn bool_bytes_must_be_zero_or_one() {
        let spec = spec(0, vec![tensor("x", DataType::Bool, &[2])]);
        let message = message(InferRequest::parse(
            raw_request(vec![wire("x", DataType::Bool, &[2], None)], vec![vec![1, 7]]),
            &spec,
        ));
        assert!(
            message.contains("element 1") && message.contains('7'),
            "{message}"
        );
    }

    #[test]
    fn batching_models_take_the_batch_from_the_first_dimension() {
        let spec = spec(4, vec![tensor("x", DataType::Fp32, &[2])]);
        let parsed = InferRequest::parse(
            raw_request(vec![wire("x", DataType::Fp32, &[3, 2], None)], vec![vec![0; 24]]),
            &spec,
        )
        .expect("valid");
        assert_eq!(parsed.batch_size, 3);
        assert_eq!(parsed.id, "id-7");
        assert_eq!(parsed.outputs, [0, 1], "all outputs when none is requested");
        let message = message(InferRequest::parse(
            raw_request(vec![wire("x", DataType::Fp32, &[0, 2], None)], vec![vec![]]),
            &spec,
        ));
        assert!(message.contains("batch size 0"), "{message}");
    }

    #[test]
    fn reshaped_inputs_reach_the_model_in_their_model_shape() {
        let mut scalar = tensor("x", DataType::Fp32, &[1]);
        scalar.reshape = Some(vec![]);
        let spec = spec(4, vec![scalar]);
        let parsed = InferRequest::parse(
            raw_request(vec![wire("x", DataType::Fp32, &[2, 1], None)], vec![vec![0; 8]]),
            &spec,
        )
        .expect("valid");
        assert_eq!(parsed.inputs[0].shape, [2, 1]);
        assert_eq!(parsed.inputs[0].model_shape, [2]);
    }

    #[test]
    fn optional_inputs_may_be_left_out() {
        let mut optional = tensor("b", DataType::Fp32, &[1]);
        optional.optional = true;
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[1]), optional]);
        let parsed = InferRequest::parse(
            raw_request(vec![wire("a", DataType::Fp32, &[1], None)], vec![vec![0; 4]]),
            &spec,
        )
        .expect("b is optional");
        assert_eq!(parsed.inputs.len(), 1);
    }

    #[test]
    fn requested_outputs_are_checked() {
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[1])]);
        let requested = |names: &[&str]| {
            let mut request = raw_request(vec![wire("a", DataType::Fp32, &[1], None)], vec![vec![0; 4]]);
            request.outputs = names
                .iter()
                .map(|n| InferRequestedOutputTensor {
                    name: (*n).into(),
                    parameters: Default::default(),
                })
                .collect();
            InferRequest::parse(request, &spec)
        };
        assert_eq!(requested(&["aux"]).expect("known").outputs, [1]);
        assert!(message(requested(&["nope"])).contains("'nope'"));
        assert!(message(requested(&["out", "out"])).contains("more than once"));
    }

    #[test]
    fn inputs_are_put_in_spec_order_and_scheduling_parameters_are_read() {
        let spec = spec(
            0,
            vec![
                tensor("a", DataType::Fp32, &[1]),
                tensor("b", DataType::Fp32, &[1]),
            ],
        );
        let mut request = raw_request(
            vec![
                wire("b", DataType::Fp32, &[1], None),
                wire("a", DataType::Fp32, &[1], None),
            ],
            vec![vec![0; 4], vec![1; 4]],
        );
        let int = |value| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(value)),
        };
        request.parameters.insert("priority".into(), int(2));
        request.parameters.insert("timeout".into(), int(1500));
        let parsed = InferRequest::parse(request.clone(), &spec).expect("valid");
        assert_eq!(parsed.inputs.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(parsed.inputs[0].data, TensorData::Fixed(Bytes::from(vec![1; 4])));
        assert_eq!(parsed.priority, 2);
        assert_eq!(parsed.timeout, Some(Duration::from_micros(1500)));
        request.parameters.insert("priority".into(), int(-1));
        assert!(message(InferRequest::parse(request.clone(), &spec)).contains("'priority'"));
        request.parameters.insert(
            "timeout".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam("soon".into())),
            },
        );
        request.parameters.remove("priority");
        assert!(message(InferRequest::parse(request, &spec)).contains("'timeout'"));
    }

    #[test]
    fn raw_entries_must_match_inputs_one_to_one() {
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[1])]);
        let request = raw_request(
            vec![wire("a", DataType::Fp32, &[1], None)],
            vec![vec![0; 4], vec![0; 4]],
        );
        assert!(message(InferRequest::parse(request, &spec)).contains("2 entries"));
    }

    /// A `/dev/shm` object holding `contents`, registered as region `name`; removed when dropped.
    struct ShmObject(std::path::PathBuf);

    impl ShmObject {
        fn register(registry: &SharedMemoryRegistry, name: &str, contents: &[u8]) -> Self {
            let key = format!("/ferry_request_{name}_{}", std::process::id());
            let path = std::path::PathBuf::from(format!("/dev/shm{key}"));
            std::fs::write(&path, contents).expect("create the shared memory object");
            registry
                .register(name, &key, 0, contents.len() as u64)
                .expect("register");
            ShmObject(path)
        }
    }

    impl Drop for ShmObject {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn in_region(mut input: InferInputTensor, region: &str, offset: i64, byte_size: i64) -> InferInputTensor {
        let int = |value| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(value)),
        };
        input.parameters.insert(
            "shared_memory_region".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(region.into())),
            },
        );
        input
            .parameters
            .insert("shared_memory_offset".into(), int(offset));
        input
            .parameters
            .insert("shared_memory_byte_size".into(), int(byte_size));
        input
    }

    #[test]
    fn inputs_in_shared_memory_are_copied_out_and_raw_entries_skip_them() {
        let registry = SharedMemoryRegistry::default();
        let mut contents = vec![0u8; 4];
        contents.extend([1, 0, 0, 0, 2, 0, 0, 0, b'x', b'y']);
        let _object = ShmObject::register(&registry, "in", &contents);
        let spec = spec(
            0,
            vec![
                tensor("a", DataType::Fp32, &[1]),
                tensor("b", DataType::Int32, &[1]),
                tensor("s", DataType::Bytes, &[-1]),
            ],
        );
        let request = raw_request(
            vec![
                in_region(wire("s", DataType::Bytes, &[1], None), "in", 8, 6),
                wire("a", DataType::Fp32, &[1], None),
                in_region(wire("b", DataType::Int32, &[1], None), "in", 4, 4),
            ],
            vec![vec![0, 0, 128, 63]],
        );
        let parsed =
            InferRequest::parse_with_shared_memory(request.clone(), &spec, &registry).expect("valid");
        assert_eq!(
            parsed.inputs[0].data,
            TensorData::Fixed(Bytes::from(vec![0, 0, 128, 63]))
        );
        assert_eq!(
            parsed.inputs[1].data,
            TensorData::Fixed(Bytes::from(vec![1, 0, 0, 0]))
        );
        assert_eq!(
            parsed.inputs[2].data,
            TensorData::Strings(vec![Bytes::from_static(b"xy")])
        );
        // Without the registry the region is unknown.
        match InferRequest::parse(request, &spec) {
            Err(Error::NotFound(message)) => {
                assert!(
                    message.contains("input 's'") && message.contains("'in'"),
                    "{message}"
                )
            }
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }
    }

    #[test]
    fn bad_shared_memory_inputs_are_refused() {
        let registry = SharedMemoryRegistry::default();
        let _object = ShmObject::register(&registry, "bad", &[0; 16]);
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[2])]);
        let parse = |input: InferInputTensor, raw: Vec<Vec<u8>>| {
            InferRequest::parse_with_shared_memory(raw_request(vec![input], raw), &spec, &registry)
        };
        let a = || wire("a", DataType::Fp32, &[2], None);
        let size = message(parse(in_region(a(), "bad", 0, 12), vec![]));
        assert!(
            size.contains("12 bytes of shared memory") && size.contains("8 bytes in all"),
            "{size}"
        );
        let bounds = message(parse(in_region(a(), "bad", 12, 8), vec![]));
        assert!(bounds.contains("holds 16 bytes"), "{bounds}");
        let raw_too = message(parse(in_region(a(), "bad", 0, 8), vec![vec![0; 8]]));
        assert!(
            raw_too.contains("1 entries") && raw_too.contains("0 inputs not in shared memory"),
            "{raw_too}"
        );
        let contents = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..Default::default()
        };
        let typed = message(parse(
            in_region(wire("a", DataType::Fp32, &[2], Some(contents)), "bad", 0, 8),
            vec![],
        ));
        assert!(typed.contains("also sets contents"), "{typed}");
        let mut no_size = in_region(a(), "bad", 0, 8);
        no_size.parameters.remove("shared_memory_byte_size");
        assert!(message(parse(no_size, vec![])).contains("shared_memory_byte_size"));
    }

    #[test]
    fn huge_shapes_do_not_overflow() {
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[-1, -1])]);
        let request = raw_request(
            vec![wire("a", DataType::Fp32, &[i64::MAX, i64::MAX], None)],
            vec![vec![0; 4]],
        );
        assert!(message(InferRequest::parse(request, &spec)).contains("too large"));
    }
}
