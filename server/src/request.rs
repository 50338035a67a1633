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
        let at = Context {
            tag: request_tag(&id),
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
        let in_shared_memory = wire_inputs
            .iter()
            .map(|wire| {
                if wire.parameters.is_empty() {
                    Ok(None)
                } else {
                    TensorRegion::from_parameters(&wire.parameters, &wire.name)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        })
    }
}

/// What messages about one request carry: Triton's request tag and the model's name.
struct Context<'a> {
    /// `[request id: <id>] `, as Triton's core starts its messages about a request (`LogRequest`).
    tag: String,
    /// The model the request is for.
    model: &'a str,
}

/// Triton's tag for messages about the request with id `id`; `<id_unknown>` when it has none.
fn request_tag(id: &str) -> String {
    let id = if id.is_empty() { "<id_unknown>" } else { id };
    format!("[request id: {id}] ")
}

/// Where an input's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// In a registered shared memory region.
    Shared,
    /// The next entry of `raw_input_contents`.
    Raw,
    /// The input's typed `contents` (possibly empty).
    Typed,
}

/// Decides where each input's bytes are, as Triton's `InferGRPCToInput` does, with its errors: contents
/// with shared memory or with `raw_input_contents`, and an input with no data at all. Raw entries left
/// over (Triton ignores them) are refused with Ferry's own message.
fn data_sources(
    wire_inputs: &[InferInputTensor],
    in_shared_memory: &[Option<TensorRegion>],
    raw_entries: usize,
    at: &Context,
) -> Result<Vec<Source>, Error> {
    let model = at.model;
    let mut raw_left = raw_entries;
    let mut sources = Vec::with_capacity(wire_inputs.len());
    for (wire, region) in wire_inputs.iter().zip(in_shared_memory) {
        let name = &wire.name;
        let typed = wire.contents.as_ref().is_some_and(has_values);
        let source = if region.is_some() {
            if typed {
                return Err(Error::invalid(format!(
                    "unexpected 'content' provided when using shared memory for input tensor '{name}' for \
                     model '{model}'"
                )));
            }
            Source::Shared
        } else if typed && raw_entries > 0 {
            return Err(Error::invalid(format!(
                "contents field must not be specified when using raw_input_contents for '{name}' for model \
                 '{model}'"
            )));
        } else if typed {
            Source::Typed
        } else if raw_left > 0 {
            raw_left -= 1;
            Source::Raw
        } else if wire.contents.is_some() {
            Source::Typed
        } else {
            return Err(Error::invalid(format!(
                "unable to find data for input tensor '{name}' for model '{model}' in request."
            )));
        };
        sources.push(source);
    }
    if raw_left > 0 {
        let shared = in_shared_memory.iter().filter(|r| r.is_some()).count();
        let which = if shared == 0 { "" } else { " not in shared memory" };
        return Err(Error::invalid(format!(
            "raw_input_contents has {raw_entries} entries but the request has {} inputs{which}; expected one \
             entry per input{which}",
            wire_inputs.len() - shared,
        )));
    }
    Ok(sources)
}

/// Triton's check that the request has as many inputs as the model takes (between its required and all
/// of its inputs), naming the inputs given and the required ones missing.
fn check_input_count(wire_inputs: &[InferInputTensor], spec: &ModelSpec, at: &Context) -> Result<(), Error> {
    let required = spec.inputs.iter().filter(|t| !t.optional).count();
    let given = wire_inputs.len();
    if given <= spec.inputs.len() && given >= required {
        return Ok(());
    }
    // Triton's lists: `['a','b']`, and a quirk kept as it is: an empty list of missing inputs prints `]`.
    let quoted = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let got = format!(
        "[{}]",
        quoted(wire_inputs.iter().map(|w| w.name.as_str()).collect())
    );
    let missing: Vec<&str> = spec
        .inputs
        .iter()
        .filter(|t| !t.optional && !wire_inputs.iter().any(|w| w.name == t.name))
        .map(|t| t.name.as_str())
        .collect();
    let missing = if missing.is_empty() {
        "]".to_owned()
    } else {
        format!("[{}]", quoted(missing))
    };
    let expected = if required == spec.inputs.len() {
        format!("expected {} inputs", spec.inputs.len())
    } else {
        format!(
            "expected number of inputs between {required} and {}",
            spec.inputs.len()
        )
    };
    Err(Error::invalid(format!(
        "{}{expected} but got {given} inputs for model '{}'. Got inputs {got}, but missing required inputs \
         {missing}. Please provide all required inputs.",
        at.tag, at.model
    )))
}

/// For a batching model, Triton's checks of the batch dimension across inputs (in request order) and
/// against `max_batch_size`; returns the request's rows (1 for a model that does not batch).
fn check_batch(wire_inputs: &[InferInputTensor], spec: &ModelSpec, at: &Context) -> Result<usize, Error> {
    let max = spec.max_batch_size;
    if max == 0 {
        return Ok(1);
    }
    let (tag, model) = (&at.tag, at.model);
    let mut batch: Option<i64> = None;
    for wire in wire_inputs {
        if spec.input(&wire.name).is_none() {
            return Err(unexpected_input(&wire.name, spec));
        }
        let name = &wire.name;
        let Some(&rows) = wire.shape.first() else {
            return Err(Error::invalid(format!(
                "{tag}input '{name}' has no shape but model requires batch dimension for '{model}'"
            )));
        };
        match batch {
            None => batch = Some(rows),
            Some(first) if first != rows => {
                return Err(Error::invalid(format!(
                    "{tag}input '{name}' batch size does not match other inputs for '{model}'"
                )));
            }
            Some(_) => {}
        }
    }
    let rows = batch.unwrap_or(0);
    // Triton reads the batch dimension as unsigned: a negative one is "too large" there too.
    if rows < 0 || rows as u64 > max as u64 {
        return Err(Error::invalid(format!(
            "{tag}inference request batch-size must be <= {max} for '{model}'"
        )));
    }
    if rows == 0 {
        return Err(Error::invalid(format!(
            "{tag}inference request batch-size is 0 for '{model}'; send between 1 and {max} rows"
        )));
    }
    Ok(rows as usize)
}

/// Triton's error for an input the model does not have (`Model::GetInput`).
fn unexpected_input(name: &str, spec: &ModelSpec) -> Error {
    Error::invalid(format!(
        "unexpected inference input '{name}' for model '{}'",
        spec.name
    ))
}

/// A request parameter that must be a non-negative integer (`priority`, `timeout`), sent as int64 or
/// uint64; the errors are Triton's (`SetInferenceRequestMetadata`).
fn unsigned_parameter(parameters: &HashMap<String, InferParameter>, key: &str) -> Result<Option<u64>, Error> {
    let Some(parameter) = parameters.get(key) else {
        return Ok(None);
    };
    match parameter.parameter_choice {
        Some(ParameterChoice::Uint64Param(value)) => Ok(Some(value)),
        Some(ParameterChoice::Int64Param(value)) if value >= 0 => Ok(Some(value as u64)),
        Some(ParameterChoice::Int64Param(_)) => Err(Error::invalid(format!(
            "invalid value for '{key}', expected value >= 0."
        ))),
        _ if key == "timeout" => Err(Error::invalid(format!(
            "invalid value type for '{key}' parameter, expected int64_param."
        ))),
        _ => Err(Error::invalid(format!(
            "invalid value type for '{key}' parameter, expected int64_param or uint64_param."
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

/// A shape as Triton writes it in messages (`DimsListToString`): `[1,16]`.
fn dims_text(dims: &[i64]) -> String {
    let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
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

/// Triton's note after a shape mismatch of a batching model (`InferenceRequest::Normalize`).
const BATCH_NOTE: &str = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension \
                          to be prepended to each input shape. If you want to specify the full shape including \
                          the batch dim in your input dims config, try setting max_batch_size to zero. See the \
                          model configuration docs for more info on max_batch_size.";

/// Checks data type and shape with Triton's errors, returning the number of elements. The batch dimension
/// was checked by [`check_batch`].
fn check_shape(
    wire: &InferInputTensor,
    tensor: &TensorSpec,
    max_batch_size: usize,
    at: &Context,
) -> Result<usize, Error> {
    let (name, tag, model) = (&wire.name, &at.tag, at.model);
    if wire.datatype != tensor.data_type.wire_name() {
        return Err(Error::invalid(format!(
            "{tag}inference input '{name}' data-type is '{}', but model '{model}' expects '{}'",
            wire.datatype, tensor.data_type
        )));
    }
    let batch = usize::from(max_batch_size > 0);
    let dims = wire.shape.get(batch..).unwrap_or_default();
    let mut matches = dims.len() == tensor.dims.len();
    if matches {
        for (given, want) in dims.iter().zip(&tensor.dims) {
            if *given == -1 {
                return Err(Error::invalid(format!(
                    "{tag}All input dimensions should be specified for input '{name}' for model '{model}', got {}",
                    dims_text(&wire.shape)
                )));
            }
            // Triton lets other negative sizes through to a -1 dimension; Ferry refuses them here.
            if *given < 0 || (*want != -1 && given != want) {
                matches = false;
                break;
            }
        }
    }
    if !matches {
        let note = if max_batch_size > 0 { BATCH_NOTE } else { "" };
        return Err(Error::invalid(format!(
            "{tag}unexpected shape for input '{name}' for model '{model}'. Expected {}, got {}. {note}",
            dims_text(&full_dims(tensor, max_batch_size)),
            dims_text(&wire.shape)
        )));
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

/// Checks the size of raw contents and, for BYTES, splits the length-prefixed elements without copying.
fn raw_data(
    bytes: Bytes,
    name: &str,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<TensorData, Error> {
    let Some(size) = data_type.element_size() else {
        return split_elements(bytes, elements)
            .map(TensorData::Strings)
            .map_err(|error| error.triton_error(name, at));
    };
    check_byte_size(bytes.len(), name, elements * size, at)?;
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

/// Triton's check that a fixed-size input has exactly the bytes its shape holds (`ValidateRequestInputs`).
fn check_byte_size(given: usize, name: &str, expected: usize, at: &Context) -> Result<(), Error> {
    if given != expected {
        return Err(Error::invalid(format!(
            "{}input byte size mismatch for input '{name}' for model '{}'. Expected {expected}, got {given}",
            at.tag, at.model
        )));
    }
    Ok(())
}

/// Copies an input's bytes out of its shared memory region, once. The region, the bounds and (for
/// fixed-size types) the size are checked first, so a bad request costs no copy; BYTES inputs are split
/// like raw contents.
fn shared_memory_data(
    name: &str,
    region: &TensorRegion,
    regions: &SharedMemoryRegistry,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<TensorData, Error> {
    let bytes = regions.read_input(region, |given| match data_type.element_size() {
        Some(size) => check_byte_size(given, name, elements * size, at),
        None => Ok(()),
    })?;
    raw_data(bytes, name, data_type, elements, at)
}

/// How length-prefixed BYTES contents fail to hold the elements their shape says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// Fewer than 4 bytes are left where element `element`'s length prefix starts.
    TruncatedPrefix {
        /// The element's position.
        element: usize,
        /// The bytes left.
        available: usize,
    },
    /// Element `element` claims more bytes than remain.
    Overrun {
        /// The element's position.
        element: usize,
        /// The length its prefix claims.
        claimed: usize,
        /// The bytes left after the prefix.
        available: usize,
    },
    /// More elements than the `expected` ones of the shape.
    TooMany {
        /// The elements the shape holds.
        expected: usize,
    },
    /// Fewer elements (`count`) than the `expected` ones of the shape.
    TooFew {
        /// The elements found.
        count: usize,
        /// The elements the shape holds.
        expected: usize,
    },
}

impl SplitError {
    /// The error for input `name`, with Triton's texts (`ValidateBytesInputs`) where Triton has one; an
    /// element longer than the bytes left has none, so it keeps Ferry's description.
    fn triton_error(self, name: &str, at: &Context) -> Error {
        let (tag, model) = (&at.tag, at.model);
        Error::invalid(match self {
            SplitError::TruncatedPrefix { available, .. } => format!(
                "{tag}incomplete string length indicator for inference input '{name}' for model '{model}', \
                 expecting 4 bytes but only {available} bytes available. Please make sure the string length \
                 indicator is in one buffer."
            ),
            SplitError::TooMany { expected } => format!(
                "{tag}unexpected number of string elements {} for inference input '{name}' for model \
                 '{model}', expecting {expected}",
                expected + 1
            ),
            SplitError::TooFew { count, expected } => format!(
                "{tag}expected {expected} string elements for inference input '{name}' for model '{model}', \
                 got {count}"
            ),
            SplitError::Overrun { .. } => self.describe(name),
        })
    }

    /// A plain description naming the input.
    fn describe(self, name: &str) -> String {
        match self {
            SplitError::TruncatedPrefix { element, available } => format!(
                "input '{name}' BYTES element {element} has a truncated 4-byte length prefix ({available} bytes \
                 left)"
            ),
            SplitError::Overrun {
                element,
                claimed,
                available,
            } => format!(
                "input '{name}' BYTES element {element} claims {claimed} bytes but only {available} remain"
            ),
            SplitError::TooMany { expected } => format!(
                "input '{name}' raw contents hold more than the {expected} BYTES elements its shape holds"
            ),
            SplitError::TooFew { count, expected } => format!(
                "input '{name}' raw contents hold {count} BYTES elements but its shape holds {expected}"
            ),
        }
    }
}

/// Splits raw BYTES contents: each element is a 4-byte little-endian length followed by that many bytes.
pub fn split_length_prefixed(bytes: Bytes, name: &str, elements: usize) -> Result<Vec<Bytes>, Error> {
    split_elements(bytes, elements).map_err(|error| Error::invalid(error.describe(name)))
}

/// [`split_length_prefixed`] with a typed error, checked in Triton's order: each prefix, then the count,
/// then the element's bytes.
fn split_elements(bytes: Bytes, elements: usize) -> Result<Vec<Bytes>, SplitError> {
    let mut items = Vec::with_capacity(elements.min(bytes.len() / 4));
    let mut at = 0usize;
    while at < bytes.len() {
        let element = items.len();
        let Some(prefix) = bytes.get(at..at + 4) else {
            return Err(SplitError::TruncatedPrefix {
                element,
                available: bytes.len() - at,
            });
        };
        if element == elements {
            return Err(SplitError::TooMany { expected: elements });
        }
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= bytes.len())
            .ok_or(SplitError::Overrun {
                element,
                claimed: len,
                available: bytes.len() - start,
            })?;
        items.push(bytes.slice(start..end));
        at = end;
    }
    if items.len() != elements {
        return Err(SplitError::TooFew {
            count: items.len(),
            expected: elements,
        });
    }
    Ok(items)
}

/// Converts typed `contents` to the tensor's raw form. As in Triton (`InferGRPCToInput`), one field may
/// carry values, and it must be the field of the input's type; a count that does not fit the shape is then
/// Triton's byte size (or string count) mismatch. Values out of a narrow type's range are refused.
fn typed_data(
    contents: Option<&InferTensorContents>,
    name: &str,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<TensorData, Error> {
    let empty = InferTensorContents::default();
    let contents = contents.unwrap_or(&empty);
    check_typed_field(contents, name, data_type, at)?;
    let size = data_type.element_size().unwrap_or(0);
    let check_count = |given: usize| check_byte_size(given * size, name, elements * size, at);
    let bytes = match data_type {
        DataType::Bool => {
            check_count(contents.bool_contents.len())?;
            contents.bool_contents.iter().map(|b| u8::from(*b)).collect()
        }
        DataType::Int8 => narrow(
            &contents.int_contents,
            i8::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Int16 => narrow(
            &contents.int_contents,
            i16::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Int32 => {
            check_count(contents.int_contents.len())?;
            little_endian(&contents.int_contents, |v| v.to_le_bytes())
        }
        DataType::Int64 => {
            check_count(contents.int64_contents.len())?;
            little_endian(&contents.int64_contents, |v| v.to_le_bytes())
        }
        DataType::Uint8 => narrow(
            &contents.uint_contents,
            u8::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Uint16 => narrow(
            &contents.uint_contents,
            u16::to_le_bytes,
            name,
            data_type,
            elements,
            at,
        )?,
        DataType::Uint32 => {
            check_count(contents.uint_contents.len())?;
            little_endian(&contents.uint_contents, |v| v.to_le_bytes())
        }
        DataType::Uint64 => {
            check_count(contents.uint64_contents.len())?;
            little_endian(&contents.uint64_contents, |v| v.to_le_bytes())
        }
        DataType::Fp32 => {
            check_count(contents.fp32_contents.len())?;
            little_endian(&contents.fp32_contents, |v| v.to_le_bytes())
        }
        DataType::Fp64 => {
            check_count(contents.fp64_contents.len())?;
            little_endian(&contents.fp64_contents, |v| v.to_le_bytes())
        }
        DataType::Bytes => {
            let count = contents.bytes_contents.len();
            let error = match count.cmp(&elements) {
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some(SplitError::TooMany { expected: elements }),
                std::cmp::Ordering::Less => Some(SplitError::TooFew {
                    count,
                    expected: elements,
                }),
            };
            if let Some(error) = error {
                return Err(error.triton_error(name, at));
            }
            return Ok(TensorData::Strings(contents.bytes_contents.clone()));
        }
        // No typed field carries these types, so only empty contents get here.
        DataType::Fp16 | DataType::Bf16 => {
            check_count(0)?;
            Vec::new()
        }
    };
    Ok(TensorData::Fixed(Bytes::from(bytes)))
}

/// Triton's checks of which typed field carries values: at most one, and the one of the input's type. The
/// `int_contents` and `uint_contents` fields carry the narrow types too.
fn check_typed_field(
    contents: &InferTensorContents,
    name: &str,
    data_type: DataType,
    at: &Context,
) -> Result<(), Error> {
    let int = match data_type {
        DataType::Int8 | DataType::Int16 => data_type,
        _ => DataType::Int32,
    };
    let uint = match data_type {
        DataType::Uint8 | DataType::Uint16 => data_type,
        _ => DataType::Uint32,
    };
    // In the order Triton reads them.
    let fields = [
        (DataType::Bool, contents.bool_contents.len()),
        (int, contents.int_contents.len()),
        (DataType::Int64, contents.int64_contents.len()),
        (uint, contents.uint_contents.len()),
        (DataType::Uint64, contents.uint64_contents.len()),
        (DataType::Fp32, contents.fp32_contents.len()),
        (DataType::Fp64, contents.fp64_contents.len()),
        (DataType::Bytes, contents.bytes_contents.len()),
    ];
    let model = at.model;
    let mut supplied = false;
    for (carried, count) in fields {
        if count == 0 {
            continue;
        }
        if supplied {
            return Err(Error::invalid(format!(
                "unexpected explicit tensor data for input tensor '{name}' for model '{model}', binary data was \
                 already supplied."
            )));
        }
        if carried != data_type {
            return Err(Error::invalid(format!(
                "unexpected explicit tensor data for input tensor '{name}' for model '{model}' of type \
                 '{carried}', expected datatype '{data_type}'"
            )));
        }
        supplied = true;
    }
    Ok(())
}

/// The values' little-endian bytes, one after the other.
fn little_endian<T: Copy, const N: usize>(values: &[T], to_le_bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|v| to_le_bytes(*v)).collect()
}

/// Converts integers carried in a wider typed-contents field (`int_contents` for INT8 and INT16,
/// `uint_contents` for UINT8 and UINT16) to `T`, rejecting values out of `T`'s range.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>, const N: usize>(
    values: &[W],
    to_le_bytes: fn(T) -> [u8; N],
    name: &str,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<Vec<u8>, Error> {
    check_byte_size(values.len() * N, name, elements * N, at)?;
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

/// Positions of the requested outputs; all outputs, in config order, when none is named. An unknown output
/// is Triton's error (`Model::GetOutput`); one named twice is refused (Triton merges them).
fn requested_outputs<'a>(
    names: impl Iterator<Item = &'a str>,
    spec: &ModelSpec,
) -> Result<Vec<usize>, Error> {
    let mut outputs = Vec::new();
    for name in names {
        let Some((index, _)) = spec.output(name) else {
            return Err(Error::invalid(format!(
                "unexpected inference output '{name}' for model '{}'",
                spec.name
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
                    // No typed field carries them: empty contents hold 0 of the 6 bytes (Triton's check).
                    assert_eq!(
                        message(InferRequest::parse(typed, &spec)),
                        "[request id: id-7] input byte size mismatch for input 'x' for model 'm'. Expected 6, \
                         got 0"
                    );
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
        assert!(message.contains("batch-size is 0"), "{message}");
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
                assert_eq!(message, "Unable to find shared memory region: 'in'")
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
        assert_eq!(
            size,
            "[request id: id-7] input byte size mismatch for input 'a' for model 'm'. Expected 8, got 12"
        );
        let bounds = message(parse(in_region(a(), "bad", 12, 8), vec![]));
        assert!(
            bounds.starts_with("Invalid offset + byte size for shared memory region: 'bad'; ")
                && bounds.contains("holds 16 bytes"),
            "{bounds}"
        );
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
        assert_eq!(
            typed,
            "unexpected 'content' provided when using shared memory for input tensor 'a' for model 'm'"
        );
        let mut no_size = in_region(a(), "bad", 0, 8);
        no_size.parameters.remove("shared_memory_byte_size");
        assert!(message(parse(no_size, vec![])).contains("shared_memory_byte_size"));
    }

    /// Each check's text is Triton's word for word (`infer_handler.cc` for the parameters and data sources,
    /// core's `infer_request.cc` `Normalize` and `ValidateRequestInputs` for the rest), with the request tag
    /// where Triton's core adds it.
    #[test]
    fn messages_are_tritons() {
        let batching = spec(
            8,
            vec![
                tensor("INPUT0", DataType::Int32, &[16]),
                tensor("INPUT1", DataType::Int32, &[16]),
            ],
        );
        let int = |name: &str, shape: &[i64]| wire(name, DataType::Int32, shape, None);
        let parse = |inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>| {
            message(InferRequest::parse(raw_request(inputs, raw), &batching))
        };
        let ok = vec![0u8; 64];
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 16]), int("INPUT0", &[1, 16])],
                vec![ok.clone(); 2]
            ),
            "[request id: id-7] input 'INPUT0' already exists in request"
        );
        assert_eq!(
            parse(vec![int("INPUT0", &[1, 16])], vec![ok.clone()]),
            "[request id: id-7] expected 2 inputs but got 1 inputs for model 'm'. Got inputs ['INPUT0'], but \
             missing required inputs ['INPUT1']. Please provide all required inputs."
        );
        assert_eq!(
            parse(
                vec![
                    int("INPUT0", &[1, 16]),
                    int("INPUT1", &[1, 16]),
                    int("X", &[1, 16])
                ],
                vec![ok.clone(); 3]
            ),
            "[request id: id-7] expected 2 inputs but got 3 inputs for model 'm'. Got inputs \
             ['INPUT0','INPUT1','X'], but missing required inputs ]. Please provide all required inputs."
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 16]), int("X", &[1, 16])],
                vec![ok.clone(); 2]
            ),
            "unexpected inference input 'X' for model 'm'"
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 16]), int("INPUT1", &[2, 16])],
                vec![ok.clone(); 2]
            ),
            "[request id: id-7] input 'INPUT1' batch size does not match other inputs for 'm'"
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[9, 16]), int("INPUT1", &[9, 16])],
                vec![vec![0; 576]; 2]
            ),
            "[request id: id-7] inference request batch-size must be <= 8 for 'm'"
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[]), int("INPUT1", &[1, 16])],
                vec![ok.clone(); 2]
            ),
            "[request id: id-7] input 'INPUT0' has no shape but model requires batch dimension for 'm'"
        );
        let fp32 = wire("INPUT1", DataType::Fp32, &[1, 16], None);
        assert_eq!(
            parse(vec![int("INPUT0", &[1, 16]), fp32], vec![ok.clone(); 2]),
            "[request id: id-7] inference input 'INPUT1' data-type is 'FP32', but model 'm' expects 'INT32'"
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 17]), int("INPUT1", &[1, 16])],
                vec![ok.clone(); 2]
            ),
            format!(
                "[request id: id-7] unexpected shape for input 'INPUT0' for model 'm'. Expected [-1,16], got \
                 [1,17]. {BATCH_NOTE}"
            )
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, -1]), int("INPUT1", &[1, 16])],
                vec![ok.clone(); 2]
            ),
            "[request id: id-7] All input dimensions should be specified for input 'INPUT0' for model 'm', got \
             [1,-1]"
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 16]), int("INPUT1", &[1, 16])],
                vec![ok.clone(), vec![0; 60]]
            ),
            "[request id: id-7] input byte size mismatch for input 'INPUT1' for model 'm'. Expected 64, got 60"
        );
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 16]), int("INPUT1", &[1, 16])],
                vec![ok.clone()]
            ),
            "unable to find data for input tensor 'INPUT1' for model 'm' in request."
        );
        let typed = |values: InferTensorContents| wire("INPUT1", DataType::Int32, &[1, 16], Some(values));
        let floats = InferTensorContents {
            fp32_contents: vec![0.0; 16],
            ..Default::default()
        };
        assert_eq!(
            parse(
                vec![int("INPUT0", &[1, 16]), typed(floats.clone())],
                vec![ok.clone()]
            ),
            "contents field must not be specified when using raw_input_contents for 'INPUT1' for model 'm'"
        );
        let mut request = raw_request(vec![typed(floats.clone())], vec![]);
        request.inputs.insert(
            0,
            wire(
                "INPUT0",
                DataType::Int32,
                &[1, 16],
                Some(InferTensorContents {
                    int_contents: vec![0; 16],
                    ..Default::default()
                }),
            ),
        );
        assert_eq!(
            message(InferRequest::parse(request.clone(), &batching)),
            "unexpected explicit tensor data for input tensor 'INPUT1' for model 'm' of type 'FP32', expected \
             datatype 'INT32'"
        );
        let mut both = floats;
        both.int_contents = vec![0; 16];
        request.inputs[1] = typed(both);
        assert_eq!(
            message(InferRequest::parse(request.clone(), &batching)),
            "unexpected explicit tensor data for input tensor 'INPUT1' for model 'm', binary data was already \
             supplied."
        );
        request.inputs[1] = typed(InferTensorContents {
            int_contents: vec![0; 15],
            ..Default::default()
        });
        assert_eq!(
            message(InferRequest::parse(request.clone(), &batching)),
            "[request id: id-7] input byte size mismatch for input 'INPUT1' for model 'm'. Expected 64, got 60"
        );
        request.outputs = vec![InferRequestedOutputTensor {
            name: "nope".into(),
            parameters: Default::default(),
        }];
        assert_eq!(
            message(InferRequest::parse(request.clone(), &batching)),
            "unexpected inference output 'nope' for model 'm'"
        );
        let parameter = |choice| InferParameter {
            parameter_choice: Some(choice),
        };
        request
            .parameters
            .insert("priority".into(), parameter(ParameterChoice::Int64Param(-1)));
        assert_eq!(
            message(InferRequest::parse(request.clone(), &batching)),
            "invalid value for 'priority', expected value >= 0."
        );
        request
            .parameters
            .insert("priority".into(), parameter(ParameterChoice::BoolParam(true)));
        assert_eq!(
            message(InferRequest::parse(request.clone(), &batching)),
            "invalid value type for 'priority' parameter, expected int64_param or uint64_param."
        );
        request.parameters.remove("priority");
        request.parameters.insert(
            "timeout".into(),
            parameter(ParameterChoice::StringParam("1".into())),
        );
        assert_eq!(
            message(InferRequest::parse(request, &batching)),
            "invalid value type for 'timeout' parameter, expected int64_param."
        );
        // A model that does not batch: the shape has no batch dimension and no note, and no request id
        // tags the message as `<id_unknown>`.
        let plain = spec(0, vec![tensor("x", DataType::Fp32, &[2])]);
        let mut request = raw_request(vec![wire("x", DataType::Fp32, &[3], None)], vec![vec![0; 12]]);
        request.id.clear();
        assert_eq!(
            message(InferRequest::parse(request, &plain)),
            "[request id: <id_unknown>] unexpected shape for input 'x' for model 'm'. Expected [2], got [3]. "
        );
    }

    /// BYTES elements are counted as Triton's `ValidateBytesInputs` counts them.
    #[test]
    fn bytes_messages_are_tritons() {
        let spec = spec(0, vec![tensor("s", DataType::Bytes, &[2])]);
        let parse = |raw: Vec<u8>| {
            message(InferRequest::parse(
                raw_request(vec![wire("s", DataType::Bytes, &[2], None)], vec![raw]),
                &spec,
            ))
        };
        assert_eq!(
            parse(vec![1, 0, 0, 0, b'a']),
            "[request id: id-7] expected 2 string elements for inference input 's' for model 'm', got 1"
        );
        assert_eq!(
            parse(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "[request id: id-7] unexpected number of string elements 3 for inference input 's' for model 'm', \
             expecting 2"
        );
        assert_eq!(
            parse(vec![0, 0, 0, 0, 1, 0]),
            "[request id: id-7] incomplete string length indicator for inference input 's' for model 'm', \
             expecting 4 bytes but only 2 bytes available. Please make sure the string length indicator is in \
             one buffer."
        );
        let typed = InferTensorContents {
            bytes_contents: vec![Bytes::new(); 3],
            ..Default::default()
        };
        assert_eq!(
            message(InferRequest::parse(
                raw_request(vec![wire("s", DataType::Bytes, &[2], Some(typed))], vec![]),
                &spec,
            )),
            "[request id: id-7] unexpected number of string elements 3 for inference input 's' for model 'm', \
             expecting 2"
        );
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
