//! Running a batch of validated requests as one ONNX Runtime call.
//!
//! Each input of the batch is copied once, request after request, into a buffer the instance keeps from
//! batch to batch, and ONNX Runtime reads it in place. Each output comes back to every request as a slice of
//! the batch's output tensor, which the response bytes keep alive: no copy before encoding.
//!
//! A ragged input (`allow_ragged_batch`) is the same copy given a flat 1-D shape, and the batch inputs that
//! describe it are built by `ragged`.

use std::{ffi::c_void, sync::Arc, time::Instant};

use bytes::Bytes;
use ort::{
    memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType},
    session::{Session, SessionInputValue, SessionOutputs},
    value::{DynTensor, DynTensorValueType, DynValue, Shape, TensorRefMut},
};

use super::{ragged, staging::Binding, strings, zipmap::ClassColumns};
use crate::{
    DataType, Error,
    config::{ModelSpec, TensorSpec},
    request::{InferRequest, TensorData},
    stats::BatchTimes,
};

/// One output of one request, ready to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Position of the output in the model spec.
    pub index: usize,
    /// The shape to report, batch dimension included.
    pub shape: Vec<i64>,
    /// Raw contents: little-endian elements, or 4-byte length-prefixed elements for BYTES.
    pub data: Bytes,
}

/// An instance's reusable input buffers. Kept as 8-byte words so that every element type is aligned.
pub struct BatchRunner {
    buffers: Vec<Vec<u64>>,
    memory: MemoryInfo<'static>,
    /// For each output of the spec that a `ZipMap` produces, the column of each class.
    class_columns: Vec<Option<Arc<ClassColumns>>>,
    /// For a session on a GPU: pinned input tensors and the IO binding ([`super::staging`]).
    binding: Option<Binding>,
}

impl BatchRunner {
    /// A runner for a session on `device` (`None`: the CPU). A GPU session's batches go through pinned
    /// host tensors and ONNX Runtime's IO binding; a CPU session's through plain buffers read in place.
    pub fn for_device(device: Option<i32>) -> Result<Self, Error> {
        let mut runner = Self::new()?;
        runner.binding = device.map(|device| Binding::new(Some(device)));
        Ok(runner)
    }

    /// A runner that takes the IO-bound path on the CPU: the GPU path's code, testable without a GPU.
    #[cfg(test)]
    fn io_bound_on_cpu() -> Result<Self, Error> {
        let mut runner = Self::new()?;
        runner.binding = Some(Binding::new(None));
        Ok(runner)
    }

    /// How many input tensors the IO-bound path has allocated (`None` for a plain runner).
    pub fn staged_allocations(&self) -> Option<u64> {
        self.binding.as_ref().map(|b| b.pool.allocations())
    }

    /// A runner with empty buffers; they grow to the largest batch seen and stay.
    pub fn new() -> Result<Self, Error> {
        let memory = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|error| Error::ModelLoad(format!("describing CPU memory for ONNX Runtime: {error}")))?;
        Ok(BatchRunner {
            buffers: Vec::new(),
            memory,
            class_columns: Vec::new(),
            binding: None,
        })
    }

    /// The runner of a model whose outputs at these positions of the spec are `ZipMap`s, served as
    /// FP32 `[rows, classes]` in the order of their columns.
    pub fn with_class_columns(mut self, class_columns: Vec<Option<Arc<ClassColumns>>>) -> Self {
        self.class_columns = class_columns;
        self
    }

    /// Runs `requests` (which agree in every dimension but the batch dimension) as one batch, returning each
    /// request's outputs in the order it asked for them, and how long each phase took.
    pub fn run(
        &mut self,
        session: &mut Session,
        spec: &ModelSpec,
        requests: &[&InferRequest],
    ) -> Result<(Vec<Vec<OutputTensor>>, BatchTimes), Error> {
        let started = Instant::now();
        let Some(first) = requests.first() else {
            return Ok((Vec::new(), BatchTimes::default()));
        };
        let batched = spec.max_batch_size > 0;
        let ragged = spec.variable_lengths.ragged.as_deref();
        let row_counts: Vec<usize> = requests
            .iter()
            .map(|r| if batched { r.batch_size } else { 1 })
            .collect();
        let rows: usize = row_counts.iter().sum();
        check_batch(spec, requests)?;
        if let Some(binding) = &mut self.binding {
            return run_bound(
                binding,
                session,
                spec,
                requests,
                &row_counts,
                &self.class_columns,
                started,
            );
        }
        self.fill_buffers(requests);
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(first.inputs.len());
        for (position, input) in first.inputs.iter().enumerate() {
            let tensor = &spec.inputs[input.index];
            let mut shape = input.model_shape.clone();
            if ragged.is_some_and(|r| r.is_ragged(input.index)) {
                // Every request's elements, back to back, as one 1-D tensor (Triton's ONNX Runtime backend).
                let elements = match &input.data {
                    TensorData::Fixed(_) => {
                        fixed_bytes(requests, position) / tensor.data_type.element_size().unwrap_or(1)
                    }
                    TensorData::Strings(_) => string_count(requests, position),
                };
                shape = vec![elements as i64];
            } else if batched {
                shape[0] = rows as i64;
            }
            let value = match &input.data {
                TensorData::Fixed(_) => {
                    let filled = fixed_bytes(requests, position);
                    let needed = shape_bytes(tensor.data_type, &shape);
                    if needed != Some(filled) || self.buffers[position].len() * 8 < filled {
                        return Err(Error::Execution(format!(
                            "input '{}': the batch holds {filled} bytes but shape {shape:?} of {} needs {needed:?}",
                            tensor.name, tensor.data_type
                        )));
                    }
                    let data = self.buffers[position].as_mut_ptr().cast::<c_void>();
                    // SAFETY: `fill_buffers` wrote this input of every request, back to back, into the buffer;
                    // the check above proved that those bytes are exactly `shape` elements of the input's type
                    // and that the buffer holds them. The buffer is neither moved nor written again before the
                    // run below ends and `inputs` is dropped.
                    unsafe { view(tensor.data_type, &self.memory, data, shape) }
                }
                TensorData::Strings(_) => {
                    let items = requests.iter().flat_map(|r| match &r.inputs[position].data {
                        TensorData::Strings(items) => items.as_slice(),
                        TensorData::Fixed(_) => &[],
                    });
                    strings::strings_tensor(&shape, items).map(|t| SessionInputValue::from(t.into_dyn()))
                }
            }
            .map_err(|error| Error::Execution(format!("building input '{}': {error}", tensor.name)))?;
            inputs.push((tensor.name.as_str(), value));
        }
        if let Some(ragged) = ragged {
            inputs.extend(ragged::batch_input_tensors(&ragged.batch_inputs, requests)?);
        }
        let built = Instant::now();
        let mut outputs = session
            .run(inputs)
            .map_err(|error| Error::Execution(error.to_string()))?;
        let ran = Instant::now();
        let per_request = collect_outputs(&mut outputs, spec, requests, &row_counts, &self.class_columns)?;
        let times = BatchTimes {
            input: built - started,
            infer: ran - built,
            output: ran.elapsed(),
        };
        Ok((per_request, times))
    }

    /// Copies every fixed-size input of every request into that input's buffer, growing it when needed.
    fn fill_buffers(&mut self, requests: &[&InferRequest]) {
        let inputs = requests.first().map_or(0, |r| r.inputs.len());
        if self.buffers.len() < inputs {
            self.buffers.resize_with(inputs, Vec::new);
        }
        for (position, buffer) in self.buffers.iter_mut().enumerate().take(inputs) {
            let total = fixed_bytes(requests, position);
            if total == 0 {
                continue;
            }
            let words = total.div_ceil(8);
            if buffer.len() < words {
                buffer.resize(words, 0);
            }
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(buffer.as_mut_slice());
            let mut at = 0;
            for request in requests {
                if let TensorData::Fixed(data) = &request.inputs[position].data {
                    bytes[at..at + data.len()].copy_from_slice(data);
                    at += data.len();
                }
            }
        }
    }
}

/// Each request's outputs out of a run's outputs, split by rows, in the order each request asked for them.
fn collect_outputs(
    outputs: &mut SessionOutputs<'_>,
    spec: &ModelSpec,
    requests: &[&InferRequest],
    row_counts: &[usize],
    class_columns: &[Option<Arc<ClassColumns>>],
) -> Result<Vec<Vec<OutputTensor>>, Error> {
    let mut per_request: Vec<Vec<OutputTensor>> = requests
        .iter()
        .map(|r| Vec::with_capacity(r.outputs.len()))
        .collect();
    for (index, tensor) in spec.outputs.iter().enumerate() {
        if !requests.iter().any(|r| r.outputs.contains(&index)) {
            continue;
        }
        let value = outputs
            .remove(&tensor.name)
            .ok_or_else(|| Error::Execution(format!("the model produced no output '{}'", tensor.name)))?;
        let columns = class_columns.get(index).and_then(Option::as_deref);
        let parts = split_output(value, tensor, spec, row_counts, columns)?;
        for ((request, outputs), (shape, data)) in requests.iter().zip(&mut per_request).zip(parts) {
            if request.outputs.contains(&index) {
                outputs.push(OutputTensor { index, shape, data });
            }
        }
    }
    for (request, outputs) in requests.iter().zip(&mut per_request) {
        outputs.sort_by_key(|o| request.outputs.iter().position(|i| *i == o.index));
    }
    Ok(per_request)
}

/// Runs a checked batch through the IO binding: each fixed-size input is packed straight into its reused
/// (pinned, on a GPU) tensor and copied to the device once when bound; each output wanted is bound to
/// (pinned) host memory, so it comes back once. A new binding per batch, so that no output of an earlier
/// batch, still referenced by a response being encoded, is ever written again.
fn run_bound(
    binding: &mut Binding,
    session: &mut Session,
    spec: &ModelSpec,
    requests: &[&InferRequest],
    row_counts: &[usize],
    class_columns: &[Option<Arc<ClassColumns>>],
    started: Instant,
) -> Result<(Vec<Vec<OutputTensor>>, BatchTimes), Error> {
    let Some(first) = requests.first() else {
        return Ok((Vec::new(), BatchTimes::default()));
    };
    let rows: usize = row_counts.iter().sum();
    let batched = spec.max_batch_size > 0;
    let bind_error = |what: &str, error: ort::Error| Error::Execution(format!("binding {what}: {error}"));
    let mut io = session
        .create_binding()
        .map_err(|e| bind_error("the session", e))?;
    let (allocator, output_memory, pool) = binding.parts(session)?;
    for (position, input) in first.inputs.iter().enumerate() {
        let tensor = &spec.inputs[input.index];
        let mut shape = input.model_shape.clone();
        if batched {
            shape[0] = rows as i64;
        }
        match &input.data {
            TensorData::Fixed(_) => {
                let staged = pool
                    .fill(allocator, position, tensor.data_type, &shape, requests)
                    .map_err(|error| Error::Execution(format!("input '{}': {error}", tensor.name)))?;
                io.bind_input(tensor.name.as_str(), staged)
                    .map_err(|e| bind_error(&tensor.name, e))?;
            }
            TensorData::Strings(_) => {
                let items = requests.iter().flat_map(|r| match &r.inputs[position].data {
                    TensorData::Strings(items) => items.as_slice(),
                    TensorData::Fixed(_) => &[],
                });
                let strings = strings::strings_tensor(&shape, items).map_err(|error| {
                    Error::Execution(format!("building input '{}': {error}", tensor.name))
                })?;
                io.bind_input(tensor.name.as_str(), &strings)
                    .map_err(|e| bind_error(&tensor.name, e))?;
            }
        }
    }
    for (index, tensor) in spec.outputs.iter().enumerate() {
        if requests.iter().any(|r| r.outputs.contains(&index)) {
            io.bind_output_to_device(tensor.name.as_str(), output_memory)
                .map_err(|e| bind_error(&tensor.name, e))?;
        }
    }
    let built = Instant::now();
    let mut outputs = session
        .run_binding(&io)
        .map_err(|error| Error::Execution(error.to_string()))?;
    let ran = Instant::now();
    let per_request = collect_outputs(&mut outputs, spec, requests, row_counts, class_columns)?;
    let times = BatchTimes {
        input: built - started,
        infer: ran - built,
        output: ran.elapsed(),
    };
    Ok((per_request, times))
}

/// Checks what batching promises before any buffer is touched: every request has the same inputs, in the
/// same order, of the same kind, and agrees with the first in every dimension but the batch dimension. The
/// scheduler only groups such requests; this makes `run` safe to call with any requests at all.
fn check_batch(spec: &ModelSpec, requests: &[&InferRequest]) -> Result<(), Error> {
    let Some(first) = requests.first() else {
        return Ok(());
    };
    if first.inputs.iter().any(|input| input.index >= spec.inputs.len()) {
        return Err(Error::Execution(
            "a request names an input the model does not have".to_owned(),
        ));
    }
    let batched = spec.max_batch_size > 0;
    let ragged = |index: usize| {
        spec.variable_lengths
            .ragged
            .as_ref()
            .is_some_and(|r| r.is_ragged(index))
    };
    let agrees = |request: &&InferRequest| {
        request.inputs.len() == first.inputs.len()
            && request.inputs.iter().zip(&first.inputs).all(|(mine, theirs)| {
                let skip = usize::from(batched);
                mine.index == theirs.index
                    && mine.model_shape.len() == theirs.model_shape.len()
                    && (ragged(mine.index) || mine.model_shape.get(skip..) == theirs.model_shape.get(skip..))
                    && (!batched || mine.model_shape.first() == Some(&(request.batch_size as i64)))
                    && std::mem::discriminant(&mine.data) == std::mem::discriminant(&theirs.data)
            })
    };
    if !requests.iter().all(agrees) {
        return Err(Error::Execution(
            "the requests of a batch differ in their inputs or in a dimension other than the batch dimension"
                .to_owned(),
        ));
    }
    if !batched && requests.len() > 1 {
        return Err(Error::Execution(
            "a model without a batch dimension runs one request at a time".to_owned(),
        ));
    }
    Ok(())
}

/// The fixed-size bytes every request gives for the input at `position`, together.
fn fixed_bytes(requests: &[&InferRequest], position: usize) -> usize {
    requests
        .iter()
        .filter_map(|r| match &r.inputs.get(position)?.data {
            TensorData::Fixed(bytes) => Some(bytes.len()),
            TensorData::Strings(_) => None,
        })
        .sum()
}

/// The BYTES elements every request gives for the input at `position`, together.
fn string_count(requests: &[&InferRequest], position: usize) -> usize {
    requests
        .iter()
        .filter_map(|r| match &r.inputs.get(position)?.data {
            TensorData::Strings(items) => Some(items.len()),
            TensorData::Fixed(_) => None,
        })
        .sum()
}

/// The bytes a tensor of `shape` holds, or `None` for a negative dimension, an overflow, or BYTES.
fn shape_bytes(data_type: DataType, shape: &[i64]) -> Option<usize> {
    let size = data_type.element_size()?;
    shape.iter().try_fold(size, |total, d| {
        usize::try_from(*d).ok().and_then(|d| total.checked_mul(d))
    })
}

/// A tensor of `data_type` over memory Ferry owns.
///
/// # Safety
/// `data` must point to `shape`'s element count of `data_type` elements, valid and unchanged until the
/// returned value is dropped.
unsafe fn view(
    data_type: DataType,
    memory: &MemoryInfo<'static>,
    data: *mut c_void,
    shape: Vec<i64>,
) -> Result<SessionInputValue<'static>, String> {
    let shape = Shape::from(shape);
    macro_rules! view_as {
        ($t:ty) => {
            // SAFETY: guaranteed by this function's caller.
            unsafe { TensorRefMut::<$t>::from_raw(memory.clone(), data, shape) }
                .map(SessionInputValue::from)
                .map_err(|error| error.to_string())
        };
    }
    match data_type {
        DataType::Bool => view_as!(bool),
        DataType::Uint8 => view_as!(u8),
        DataType::Uint16 => view_as!(u16),
        DataType::Uint32 => view_as!(u32),
        DataType::Uint64 => view_as!(u64),
        DataType::Int8 => view_as!(i8),
        DataType::Int16 => view_as!(i16),
        DataType::Int32 => view_as!(i32),
        DataType::Int64 => view_as!(i64),
        DataType::Fp16 => view_as!(half::f16),
        DataType::Fp32 => view_as!(f32),
        DataType::Fp64 => view_as!(f64),
        DataType::Bf16 => view_as!(half::bf16),
        DataType::Bytes => Err("BYTES tensors are built as string tensors, not views".to_owned()),
    }
}

/// Splits a batch output between the requests, `row_counts[k]` rows for request `k`, without copying
/// fixed-size elements.
fn split_output(
    value: DynValue,
    tensor: &TensorSpec,
    spec: &ModelSpec,
    row_counts: &[usize],
    class_columns: Option<&ClassColumns>,
) -> Result<Vec<(Vec<i64>, Bytes)>, Error> {
    let fail = |what: String| Error::Execution(format!("reading output '{}': {what}", tensor.name));
    let (shape, data, starts) = match class_columns {
        Some(columns) => {
            let (shape, data) = columns.tensor(value).map_err(fail)?;
            (shape, data, None)
        }
        None => {
            let value = value
                .downcast::<DynTensorValueType>()
                .map_err(|e| fail(e.to_string()))?;
            let shape = value.shape().to_vec();
            let (data, starts) = output_bytes(value).map_err(fail)?;
            (shape, data, starts)
        }
    };
    let elements = shape
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(0))
        .product::<usize>();
    let batched = spec.max_batch_size > 0;
    let rows: usize = row_counts.iter().sum();
    if batched && shape.first().copied() != Some(rows as i64) {
        return Err(fail(format!(
            "the model returned shape {shape:?} for a batch of {rows} rows"
        )));
    }
    let report_shape = |rows: usize| -> Vec<i64> {
        // A reshaped output is reported with the config's dims when they are fixed.
        let tail: &[i64] = match &tensor.reshape {
            Some(_) if tensor.dims.iter().all(|d| *d > 0) => &tensor.dims,
            _ if batched => &shape[1..],
            _ => &shape,
        };
        let batch = batched.then_some(rows as i64);
        batch.into_iter().chain(tail.iter().copied()).collect()
    };
    if !batched {
        return Ok(vec![(report_shape(1), data)]);
    }
    let per_row = elements.checked_div(rows).unwrap_or(0);
    let mut parts = Vec::with_capacity(row_counts.len());
    let mut row = 0;
    for &count in row_counts {
        let (first, last) = (row * per_row, (row + count) * per_row);
        let range = match &starts {
            Some(starts) => starts[first]..starts[last],
            None => {
                let element = data.len().checked_div(elements).unwrap_or(0);
                first * element..last * element
            }
        };
        parts.push((report_shape(count), data.slice(range)));
        row += count;
    }
    Ok(parts)
}

/// An output's raw contents and, for BYTES, where each element starts.
fn output_bytes(tensor: DynTensor) -> Result<(Bytes, Option<Vec<usize>>), String> {
    let element_type = *tensor.data_type();
    match DataType::from_ort(element_type) {
        Some(DataType::Bytes) => strings::strings_to_raw(&tensor).map(|(raw, starts)| (raw, Some(starts))),
        Some(_) => {
            let len = element_type
                .byte_size(tensor.shape().num_elements())
                .ok_or_else(|| format!("element type {element_type:?} has no fixed size"))?;
            Ok((Bytes::from_owner(OrtBuffer { tensor, len }), None))
        }
        None => Err(format!("element type {element_type:?} has no Triton data type")),
    }
}

/// An output tensor kept alive for as long as the response bytes that point into it.
struct OrtBuffer {
    tensor: DynTensor,
    len: usize,
}

impl AsRef<[u8]> for OrtBuffer {
    fn as_ref(&self) -> &[u8] {
        let data = self.tensor.data_ptr().cast::<u8>();
        if self.len == 0 || data.is_null() {
            return &[];
        }
        // SAFETY: ONNX Runtime allocated `len` bytes for this CPU tensor, which `self` owns and never mutates;
        // the slice borrows `self`, so the tensor outlives it.
        unsafe { std::slice::from_raw_parts(data, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    use proptest::prelude::*;

    use super::*;
    use crate::{
        config::{ConfigSource, ModelSpec, complete_config, parse_model_config},
        onnx::{self, find_library, open_session, signature},
    };

    const TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/model_repository");

    /// A session and spec of a test model, loaded the way the repository loads it.
    fn load(model: &str) -> (Session, Arc<ModelSpec>) {
        let source = find_library(None).expect(onnx::MISSING_LIBRARY_HELP);
        let environment = onnx::start(&source).expect("ONNX Runtime starts");
        let dir = Path::new(TESTS).join(model);
        let text = std::fs::read_to_string(dir.join("config.pbtxt")).expect("config");
        let mut config = parse_model_config(&text, "config.pbtxt").expect("parses");
        complete_config(&mut config, None, "config.pbtxt").expect("completes");
        let spec = ModelSpec::from_config(
            config,
            model,
            ConfigSource {
                path: "c",
                text: Some(&text),
            },
        )
        .expect("valid");
        let plan = spec.instances;
        let model_path = dir.join("1/model.onnx");
        let session = open_session(&environment, &model_path, &plan, 0, None)
            .expect("model loads")
            .session;
        spec.check_signature(
            &signature(&session, &model_path).expect("signature"),
            "model.onnx",
        )
        .expect("matches");
        (session, Arc::new(spec))
    }

    fn request(spec: &ModelSpec, inputs: Vec<(&str, &str, Vec<i64>, Bytes)>) -> InferRequest {
        let (wire, raw): (Vec<_>, Vec<_>) = inputs
            .into_iter()
            .map(|(name, datatype, shape, bytes)| {
                let tensor = InferInputTensor {
                    name: name.into(),
                    datatype: datatype.into(),
                    shape,
                    parameters: Default::default(),
                    contents: None,
                };
                (tensor, bytes)
            })
            .unzip();
        let request = ModelInferRequest {
            inputs: wire,
            raw_input_contents: raw,
            ..Default::default()
        };
        InferRequest::parse(request, spec).expect("valid request")
    }

    /// Raw contents of three elements of each type, with values at the edges of each type's range.
    fn sample(data_type: DataType) -> Bytes {
        Bytes::from(match data_type {
            DataType::Bool => vec![1, 0, 1],
            DataType::Uint8 | DataType::Int8 => vec![0, 127, 255],
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => {
                vec![0, 0, 0xff, 0x7f, 0x80, 0xff]
            }
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => [0u32, 0x3f80_0000, u32::MAX - 1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => [0u64, 1, u64::MAX - 1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DataType::Bytes => {
                let items: [&[u8]; 3] = [b"plain", b"\0nul and \xff not utf-8", b""];
                items
                    .iter()
                    .flat_map(|item| {
                        (item.len() as u32)
                            .to_le_bytes()
                            .into_iter()
                            .chain(item.iter().copied())
                    })
                    .collect()
            }
        })
    }

    /// Both ways a batch runs: plain buffers read in place (CPU sessions), and the reused staging tensors
    /// with IO binding that GPU sessions use, here on the CPU.
    fn runners() -> [(&'static str, BatchRunner); 2] {
        [
            ("plain", BatchRunner::new().expect("runner")),
            ("io-bound", BatchRunner::io_bound_on_cpu().expect("runner")),
        ]
    }

    #[test]
    fn every_type_goes_through_onnx_runtime_unchanged() {
        let (mut session, spec) = load("identity_types");
        for (kind, mut runner) in runners() {
            let inputs = spec
                .inputs
                .iter()
                .map(|t| {
                    (
                        t.name.as_str(),
                        t.data_type.wire_name(),
                        vec![3],
                        sample(t.data_type),
                    )
                })
                .collect();
            let request = request(&spec, inputs);
            let (outputs, _) = runner.run(&mut session, &spec, &[&request]).expect("runs");
            assert_eq!(outputs[0].len(), spec.outputs.len());
            for output in &outputs[0] {
                let tensor = &spec.outputs[output.index];
                assert_eq!(output.shape, [3], "{kind}: {}", tensor.name);
                assert_eq!(output.data, sample(tensor.data_type), "{kind}: {}", tensor.name);
            }
        }
    }

    /// A GPU instance packs each batch into tensors it keeps: a batch of a shape seen before writes into the
    /// same memory, and the outputs of an earlier batch, still held by its responses, are never overwritten.
    #[test]
    fn io_bound_batches_reuse_their_staging_tensors() {
        let (mut session, spec) = load("add_one_greedy");
        let mut runner = BatchRunner::io_bound_on_cpu().expect("runner");
        let one = request(&spec, vec![("x", "FP32", vec![1, 4], rows_of(&[1.0; 4]))]);
        let two = request(&spec, vec![("x", "FP32", vec![1, 4], rows_of(&[5.0; 4]))]);
        let (first, _) = runner.run(&mut session, &spec, &[&one, &two]).expect("runs");
        let (second, _) = runner.run(&mut session, &spec, &[&two, &one]).expect("runs");
        assert_eq!(runner.staged_allocations(), Some(1), "same shape, same tensor");
        assert_eq!(
            first[0][0].data,
            rows_of(&[2.0; 4]),
            "the first batch's answer is kept"
        );
        assert_eq!(second[0][0].data, rows_of(&[6.0; 4]));
        runner.run(&mut session, &spec, &[&one]).expect("runs");
        assert_eq!(
            runner.staged_allocations(),
            Some(2),
            "a new batch size takes a new tensor"
        );
        assert_eq!(BatchRunner::new().expect("runner").staged_allocations(), None);
    }

    fn rows_of(values: &[f32]) -> Bytes {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }

    /// `run` is safe to call with requests that validation never produced: the view over the batch buffer
    /// must not let ONNX Runtime read past it. Each case would read out of bounds without the checks.
    #[test]
    fn hand_built_batches_that_break_the_batch_contract_are_refused() {
        let (mut session, spec) = load("add_one_greedy");
        for (kind, mut runner) in runners() {
            let good = request(&spec, vec![("x", "FP32", vec![1, 4], rows_of(&[1.0; 4]))]);
            let mut wider = good.clone();
            wider.inputs[0].shape = vec![1, 8];
            wider.inputs[0].model_shape = vec![1, 8];
            let mut taller = good.clone();
            taller.inputs[0].model_shape = vec![3, 4];
            taller.batch_size = 3;
            let mut short = good.clone();
            short.inputs[0].data = TensorData::Fixed(rows_of(&[1.0; 3]));
            let mut no_inputs = good.clone();
            no_inputs.inputs.clear();
            for (what, batch) in [
                ("different trailing dimensions", vec![&good, &wider]),
                ("more rows than bytes", vec![&taller]),
                ("fewer bytes than the shape", vec![&short]),
                ("different inputs", vec![&good, &no_inputs]),
            ] {
                let error = runner.run(&mut session, &spec, &batch).expect_err(what);
                assert!(matches!(error, Error::Execution(_)), "{kind}, {what}: {error}");
            }
            let (outputs, _) = runner
                .run(&mut session, &spec, &[&good, &good])
                .expect("a valid batch still runs");
            assert_eq!(outputs[1][0].data, rows_of(&[2.0; 4]), "{kind}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// However requests are grouped, each gets back exactly its own rows, in its own order, with its own
        /// shape; and the instance's reused buffers never leak one batch's rows into the next.
        #[test]
        fn each_request_gets_its_own_rows(
            batches in proptest::collection::vec(proptest::collection::vec((1usize..=4, -1000i32..1000), 1..5), 1..6)
        ) {
            let (mut session, spec) = load("add_one_greedy");
            for (_, mut runner) in runners() {
            for batch in batches.clone() {
                let requests: Vec<(usize, Vec<f32>, InferRequest)> = batch
                    .iter()
                    .map(|&(rows, seed)| {
                        let values: Vec<f32> = (0..rows * 4).map(|i| seed as f32 + i as f32 / 8.0).collect();
                        let request = request(&spec, vec![("x", "FP32", vec![rows as i64, 4], rows_of(&values))]);
                        (rows, values, request)
                    })
                    .collect();
                let refs: Vec<&InferRequest> = requests.iter().map(|(_, _, r)| r).collect();
                let (outputs, _) = runner.run(&mut session, &spec, &refs).expect("runs");
                prop_assert_eq!(outputs.len(), requests.len());
                for ((rows, values, _), output) in requests.iter().zip(&outputs) {
                    prop_assert_eq!(&output[0].shape, &vec![*rows as i64, 4]);
                    let expected: Vec<f32> = values.iter().map(|v| v + 1.0).collect();
                    prop_assert_eq!(output[0].data.clone(), rows_of(&expected));
                }
            }
            }
        }
    }
}
