//! The input tensors of a GPU instance, kept from batch to batch, and the IO-bound run that uses them.
//!
//! A `KIND_GPU` session's batch is packed, request after request, straight into tensors that ONNX Runtime
//! allocated in page-locked (pinned) host memory with its CUDA pinned allocator; the IO binding then copies
//! each input to the device once, over DMA, and the outputs are bound to pinned host memory so that each
//! comes back once. The tensors stay with the instance: the next batch of the same shape writes into the
//! same pinned memory, and a batch of another size takes a new tensor from ONNX Runtime's pinned arena,
//! which keeps freed blocks for reuse. The same code runs on the CPU with ONNX Runtime's CPU allocator,
//! which is how it is tested on machines without a GPU.

use ort::{
    memory::{Allocator, MemoryInfo},
    session::Session,
    value::{DynTensor, Tensor},
};

use crate::{DataType, Error, request::InferRequest, request::TensorData};

/// One input's tensor, with what it was made for.
struct Slot {
    data_type: DataType,
    shape: Vec<i64>,
    tensor: DynTensor,
}

/// An instance's input tensors by input position, reused while the shape stays the same.
#[derive(Default)]
pub struct StagingPool {
    slots: Vec<Option<Slot>>,
    allocations: u64,
}

impl StagingPool {
    /// How many tensors the pool has allocated so far: one per input per new shape.
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// The tensor for input `position` of a batch of `shape`, filled with that input of every request in
    /// turn; allocated from `allocator` only when the last batch's tensor has another type or shape.
    pub fn fill(
        &mut self,
        allocator: &Allocator,
        position: usize,
        data_type: DataType,
        shape: &[i64],
        requests: &[&InferRequest],
    ) -> Result<&DynTensor, String> {
        if self.slots.len() <= position {
            self.slots.resize_with(position + 1, || None);
        }
        let reusable = self.slots[position]
            .as_ref()
            .is_some_and(|slot| slot.data_type == data_type && slot.shape == shape);
        if !reusable {
            let tensor = allocate(allocator, data_type, shape)?;
            self.allocations += 1;
            self.slots[position] = Some(Slot {
                data_type,
                shape: shape.to_vec(),
                tensor,
            });
        }
        let Some(slot) = self.slots[position].as_mut() else {
            return Err("a staging slot vanished".to_owned());
        };
        let capacity = data_type
            .element_size()
            .and_then(|size| size.checked_mul(slot.tensor.shape().num_elements()))
            .ok_or_else(|| format!("{data_type} has no fixed element size"))?;
        let given: usize = requests
            .iter()
            .map(|r| match &r.inputs[position].data {
                TensorData::Fixed(bytes) => bytes.len(),
                TensorData::Strings(_) => 0,
            })
            .sum();
        if given != capacity {
            return Err(format!(
                "the batch holds {given} bytes but shape {shape:?} of {data_type} needs {capacity}"
            ));
        }
        let data = slot.tensor.data_ptr_mut().cast::<u8>();
        if capacity > 0 && data.is_null() {
            return Err("ONNX Runtime gave a tensor without memory".to_owned());
        }
        let mut at = 0;
        for request in requests {
            if let TensorData::Fixed(bytes) = &request.inputs[position].data {
                // SAFETY: the allocator returned host-accessible memory (CPU or CUDA pinned) of `capacity`
                // bytes, the requests' bytes add up to exactly `capacity` (checked above), and the pool owns
                // the tensor: no binding or run holds it while it is written.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(at), bytes.len()) };
                at += bytes.len();
            }
        }
        Ok(&slot.tensor)
    }
}

/// A zeroed-or-not tensor of `data_type` and `shape` from `allocator`.
fn allocate(allocator: &Allocator, data_type: DataType, shape: &[i64]) -> Result<DynTensor, String> {
    let shape = shape.to_vec();
    macro_rules! new_as {
        ($t:ty) => {
            Tensor::<$t>::new(allocator, shape)
                .map(|t| t.upcast())
                .map_err(|error| error.to_string())
        };
    }
    match data_type {
        DataType::Bool => new_as!(bool),
        DataType::Uint8 => new_as!(u8),
        DataType::Uint16 => new_as!(u16),
        DataType::Uint32 => new_as!(u32),
        DataType::Uint64 => new_as!(u64),
        DataType::Int8 => new_as!(i8),
        DataType::Int16 => new_as!(i16),
        DataType::Int32 => new_as!(i32),
        DataType::Int64 => new_as!(i64),
        DataType::Fp16 => new_as!(half::f16),
        DataType::Fp32 => new_as!(f32),
        DataType::Fp64 => new_as!(f64),
        DataType::Bf16 => new_as!(half::bf16),
        DataType::Bytes => Err("BYTES inputs are string tensors, not staged".to_owned()),
    }
}

/// Where an IO-bound instance keeps its inputs and wants its outputs.
pub struct Binding {
    /// The CUDA device of the session, or `None` for the CPU (tests on machines without a GPU).
    pub device: Option<i32>,
    allocator: Option<Allocator>,
    output_memory: Option<MemoryInfo<'static>>,
    /// The reused input tensors.
    pub pool: StagingPool,
}

impl Binding {
    /// A binding for a session on `device` (`None`: the CPU); allocators are made on the first batch,
    /// because ONNX Runtime makes them per session.
    pub fn new(device: Option<i32>) -> Self {
        Binding {
            device,
            allocator: None,
            output_memory: None,
            pool: StagingPool::default(),
        }
    }

    /// The input allocator, the output memory and the pool, for a batch of `session`: CUDA pinned host
    /// memory on a GPU, plain CPU memory otherwise.
    pub fn parts(
        &mut self,
        session: &Session,
    ) -> Result<(&Allocator, &MemoryInfo<'static>, &mut StagingPool), Error> {
        use ort::memory::{AllocationDevice, AllocatorType, MemoryType};
        let fail = |error: ort::Error| Error::Execution(format!("preparing pinned staging memory: {error}"));
        if self.allocator.is_none() || self.output_memory.is_none() {
            let (device, input, output) = match self.device {
                Some(_) => (
                    AllocationDevice::CUDA_PINNED,
                    MemoryType::CPUInput,
                    MemoryType::CPUOutput,
                ),
                None => (AllocationDevice::CPU, MemoryType::Default, MemoryType::Default),
            };
            let input_info =
                MemoryInfo::new(device.clone(), 0, AllocatorType::Device, input).map_err(fail)?;
            self.allocator = Some(if self.device.is_some() {
                Allocator::new(session, input_info).map_err(fail)?
            } else {
                Allocator::default()
            });
            self.output_memory =
                Some(MemoryInfo::new(device, 0, AllocatorType::Device, output).map_err(fail)?);
        }
        match (&self.allocator, &self.output_memory) {
            (Some(allocator), Some(output)) => Ok((allocator, output, &mut self.pool)),
            _ => Err(Error::Execution("staging memory is missing".to_owned())),
        }
    }
}
