//! One ONNX Runtime session: opening it, reading its signature, and running a validated request on it.

use std::path::Path;

use bytes::Bytes;
use ort::{
    environment::Environment,
    memory::Allocator,
    session::{Session, SessionInputValue},
    value::{DynTensor, DynTensorValueType, DynValue, Outlet, ValueType},
};

use super::strings;
use crate::{
    DataType, Error,
    config::{InstancePlan, ModelSignature, ModelSpec, ModelTensor},
    request::{InferRequest, TensorData},
};

/// One output of a run, ready to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Position of the output in the model spec.
    pub index: usize,
    /// The shape to report, batch dimension included.
    pub shape: Vec<i64>,
    /// Raw contents: little-endian elements, or 4-byte length-prefixed elements for BYTES.
    pub data: Bytes,
}

/// Opens a session on `model_path` with the thread counts of `plan`.
///
/// `instances_sharing_cores` is how many sessions of the model run at once: when the config does not set
/// `intra_op_thread_count`, the machine's cores are shared out between them instead of every session
/// starting one thread per core.
pub fn open_session(
    environment: &Environment,
    model_path: &Path,
    plan: &InstancePlan,
) -> Result<Session, Error> {
    let fail = |error: ort::Error| Error::ModelLoad(format!("{}: {error}", model_path.display()));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let intra = plan
        .intra_op_threads
        .unwrap_or((cores / plan.count.max(1)).max(1));
    let mut builder = Session::builder(environment)
        .map_err(fail)?
        .with_intra_threads(intra)
        .map_err(|e| fail(e.into()))?;
    if let Some(inter) = plan.inter_op_threads {
        builder = builder.with_inter_threads(inter).map_err(|e| fail(e.into()))?;
    }
    builder.commit_from_file(model_path).map_err(fail)
}

/// The tensors a session declares, in the form config checks use.
pub fn signature(session: &Session) -> ModelSignature {
    ModelSignature {
        inputs: session.inputs().iter().map(model_tensor).collect(),
        outputs: session.outputs().iter().map(model_tensor).collect(),
    }
}

fn model_tensor(outlet: &Outlet) -> ModelTensor {
    let (data_type, shape) = match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => (DataType::from_ort(*ty), shape.to_vec()),
        _ => (None, Vec::new()),
    };
    ModelTensor {
        name: outlet.name().to_owned(),
        data_type,
        shape,
    }
}

/// Runs one validated request and returns the requested outputs.
pub fn run(
    session: &mut Session,
    spec: &ModelSpec,
    request: &InferRequest,
) -> Result<Vec<OutputTensor>, Error> {
    let mut inputs: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let tensor = &spec.inputs[input.index];
        let value = to_ort_value(&tensor.name, tensor.data_type, &input.model_shape, &input.data)?;
        inputs.push((tensor.name.as_str(), value.into()));
    }
    let mut outputs = session
        .run(inputs)
        .map_err(|error| Error::Execution(error.to_string()))?;
    request
        .outputs
        .iter()
        .map(|&index| {
            let tensor = &spec.outputs[index];
            let value = outputs
                .remove(&tensor.name)
                .ok_or_else(|| Error::Execution(format!("the model produced no output '{}'", tensor.name)))?;
            let (shape, data) = from_ort_value(value, &tensor.name)?;
            // A reshaped output is reported with the config's dims when they are fixed.
            let shape = match &tensor.reshape {
                Some(_) if tensor.dims.iter().all(|d| *d > 0) => {
                    let batch = (spec.max_batch_size > 0).then(|| shape.first().copied().unwrap_or(1));
                    batch.into_iter().chain(tensor.dims.iter().copied()).collect()
                }
                _ => shape,
            };
            Ok(OutputTensor { index, shape, data })
        })
        .collect()
}

/// Builds an ONNX Runtime tensor from validated contents: one copy into memory ONNX Runtime owns (which is
/// aligned for the element type, which the request's bytes need not be).
fn to_ort_value(
    name: &str,
    data_type: DataType,
    shape: &[i64],
    data: &TensorData,
) -> Result<DynValue, Error> {
    let fail = |error: ort::Error| Error::Execution(format!("building input '{name}': {error}"));
    match data {
        TensorData::Fixed(bytes) => {
            let mut tensor =
                DynTensor::new(&Allocator::default(), data_type.to_ort(), shape.to_vec()).map_err(fail)?;
            if !bytes.is_empty() {
                let target = tensor.data_ptr_mut().cast::<u8>();
                // SAFETY: the tensor was just allocated for `shape` elements of `data_type`, and validation
                // guaranteed `bytes.len()` is exactly that many elements of that size; the regions are distinct.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), target, bytes.len()) };
            }
            Ok(tensor.into_dyn())
        }
        TensorData::Strings(items) => strings::strings_tensor(shape, items)
            .map(DynTensor::into_dyn)
            .map_err(|error| Error::Execution(format!("building input '{name}': {error}"))),
    }
}

/// Takes an output's shape and contents. Fixed-size outputs are not copied: the returned `Bytes` owns the
/// ONNX Runtime value and points into its buffer.
fn from_ort_value(value: DynValue, name: &str) -> Result<(Vec<i64>, Bytes), Error> {
    let fail = |what: String| Error::Execution(format!("reading output '{name}': {what}"));
    let tensor = value
        .downcast::<DynTensorValueType>()
        .map_err(|error| fail(error.to_string()))?;
    let shape = tensor.shape().to_vec();
    let element_type = *tensor.data_type();
    if DataType::from_ort(element_type) == Some(DataType::Bytes) {
        return strings::strings_to_raw(&tensor)
            .map(|raw| (shape, raw))
            .map_err(fail);
    }
    if DataType::from_ort(element_type).is_none() {
        return Err(fail(format!(
            "element type {element_type:?} has no Triton data type"
        )));
    }
    let len = element_type
        .byte_size(tensor.shape().num_elements())
        .ok_or_else(|| fail(format!("element type {element_type:?} has no fixed size")))?;
    Ok((shape, Bytes::from_owner(OrtBuffer { tensor, len })))
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
    use super::*;

    fn environment() -> Environment {
        let source = super::super::find_library(None).expect(super::super::MISSING_LIBRARY_HELP);
        super::super::start(&source).expect("ONNX Runtime starts")
    }

    /// Raw contents of three elements of each type, with values at the edges of each type's range.
    fn sample(data_type: DataType) -> TensorData {
        let fixed = |bytes: Vec<u8>| TensorData::Fixed(Bytes::from(bytes));
        match data_type {
            DataType::Bool => fixed(vec![1, 0, 1]),
            DataType::Uint8 | DataType::Int8 => fixed(vec![0, 127, 255]),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => {
                fixed(vec![0, 0, 0xff, 0x7f, 0x80, 0xff])
            }
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => fixed(
                [0u32, 0x3f80_0000, u32::MAX - 1]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => fixed(
                [0u64, 1, u64::MAX - 1]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DataType::Bytes => TensorData::Strings(vec![
                Bytes::from_static(b"plain"),
                Bytes::from_static(b"\0nul and \xff not utf-8"),
                Bytes::new(),
            ]),
        }
    }

    #[test]
    fn every_type_round_trips_through_onnx_runtime_values() {
        let _environment = environment();
        for data_type in DataType::ALL {
            let data = sample(data_type);
            let value =
                to_ort_value("x", data_type, &[3], &data).unwrap_or_else(|e| panic!("{data_type}: {e}"));
            let (shape, raw) = from_ort_value(value, "x").unwrap_or_else(|e| panic!("{data_type}: {e}"));
            assert_eq!(shape, [3], "{data_type}");
            let expected = match &data {
                TensorData::Fixed(bytes) => bytes.to_vec(),
                TensorData::Strings(items) => items
                    .iter()
                    .flat_map(|item| {
                        (item.len() as u32)
                            .to_le_bytes()
                            .into_iter()
                            .chain(item.iter().copied())
                    })
                    .collect(),
            };
            assert_eq!(raw.as_ref(), expected.as_slice(), "{data_type}");
        }
    }

    #[test]
    fn an_identity_model_runs_every_type() {
        let environment = environment();
        let model = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/model_repository/identity_types/1/model.onnx"
        );
        let plan = InstancePlan {
            count: 1,
            intra_op_threads: Some(1),
            inter_op_threads: None,
        };
        let mut session = open_session(&environment, Path::new(model), &plan).expect("model loads");
        let signature = signature(&session);
        let types: Vec<DataType> = signature.inputs.iter().filter_map(|t| t.data_type).collect();
        assert!(
            types.contains(&DataType::Bytes) && types.contains(&DataType::Fp16),
            "{types:?}"
        );
        let inputs: Vec<(String, DynValue)> = signature
            .inputs
            .iter()
            .map(|t| {
                let data_type = t.data_type.expect("supported type");
                let value = to_ort_value(&t.name, data_type, &[3], &sample(data_type)).expect("value");
                (t.name.clone(), value)
            })
            .collect();
        let mut outputs = session.run(inputs).expect("runs");
        for tensor in &signature.outputs {
            let data_type = tensor.data_type.expect("supported type");
            let (_, raw) = from_ort_value(outputs.remove(&tensor.name).expect("produced"), &tensor.name)
                .expect("output");
            let (_, expected) = from_ort_value(
                to_ort_value("x", data_type, &[3], &sample(data_type)).expect("value"),
                "x",
            )
            .expect("expected");
            assert_eq!(raw, expected, "{}", tensor.name);
        }
    }
}
