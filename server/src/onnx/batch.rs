//! Running a batch of validated requests as one ONNX Runtime call.
//!
//! Each input of the batch is copied once, request after request, into a buffer the instance keeps from
//! batch to batch, and ONNX Runtime reads it in place. Each output comes back to every request as a slice of
//! the batch's output tensor, which the response bytes keep alive: no copy before encoding.

use std::{ffi::c_void, time::Instant};

use bytes::Bytes;
use ort::{
    memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType},
    session::{Session, SessionInputValue},
    value::{DynTensor, DynTensorValueType, DynValue, Shape, TensorRefMut},
};

use super::strings;
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
}

impl BatchRunner {
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
        })
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
        let row_counts: Vec<usize> = requests
            .iter()
            .map(|r| if batched { r.batch_size } else { 1 })
            .collect();
        let rows: usize = row_counts.iter().sum();
        self.fill_buffers(requests);
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(first.inputs.len());
        for (position, input) in first.inputs.iter().enumerate() {
            let tensor = &spec.inputs[input.index];
            let mut shape = input.model_shape.clone();
            if batched {
                shape[0] = rows as i64;
            }
            let value = match &input.data {
                TensorData::Fixed(_) => {
                    let data = self.buffers[position].as_mut_ptr().cast::<c_void>();
                    // SAFETY: `fill_buffers` wrote this input of every request, back to back, into the buffer,
                    // which validation sized to exactly `shape` elements of the input's type; the buffer is
                    // neither moved nor written again before the run below ends and `inputs` is dropped.
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
        let built = Instant::now();
        let mut outputs = session
            .run(inputs)
            .map_err(|error| Error::Execution(error.to_string()))?;
        let ran = Instant::now();

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
            let parts = split_output(value, tensor, spec, &row_counts)?;
            for ((request, outputs), (shape, data)) in requests.iter().zip(&mut per_request).zip(parts) {
                if request.outputs.contains(&index) {
                    outputs.push(OutputTensor { index, shape, data });
                }
            }
        }
        // Each request lists its outputs in the order it asked for them.
        for (request, outputs) in requests.iter().zip(&mut per_request) {
            outputs.sort_by_key(|o| request.outputs.iter().position(|i| *i == o.index));
        }
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
            let total: usize = requests
                .iter()
                .map(|r| match &r.inputs[position].data {
                    TensorData::Fixed(bytes) => bytes.len(),
                    TensorData::Strings(_) => 0,
                })
                .sum();
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
) -> Result<Vec<(Vec<i64>, Bytes)>, Error> {
    let fail = |what: String| Error::Execution(format!("reading output '{}': {what}", tensor.name));
    let value = value
        .downcast::<DynTensorValueType>()
        .map_err(|e| fail(e.to_string()))?;
    let shape = value.shape().to_vec();
    let elements = value.shape().num_elements();
    let (data, starts) = output_bytes(value).map_err(fail)?;
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
