//! BYTES tensors as ONNX Runtime string tensors, byte for byte.
//!
//! Triton's BYTES elements are arbitrary bytes, while the safe `ort` string API takes UTF-8 text. ONNX
//! Runtime itself stores `std::string`s, so these two functions use its C API directly to move raw bytes in
//! and out without requiring UTF-8 and without stopping at a NUL.

use std::ffi::CStr;

use bytes::Bytes;
use ort::{
    AsPointer,
    memory::Allocator,
    sys::OrtStatusPtr,
    value::{DynTensor, TensorElementType},
};

/// Turns an ONNX Runtime status into a `Result`, releasing the status.
fn check(status: OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status is an error object owned by the caller; its message is a NUL-terminated string
    // valid until the status is released, which happens only after the message is copied.
    unsafe {
        let message = CStr::from_ptr((api.GetErrorMessage)(status.0))
            .to_string_lossy()
            .into_owned();
        (api.ReleaseStatus)(status.0);
        Err(message)
    }
}

/// A string tensor of `shape` holding `items`, which validation sized to the shape's element count.
pub fn strings_tensor<'a>(
    shape: &[i64],
    items: impl IntoIterator<Item = &'a Bytes>,
) -> Result<DynTensor, String> {
    let mut tensor = DynTensor::new(&Allocator::default(), TensorElementType::String, shape.to_vec())
        .map_err(|e| e.to_string())?;
    let count = tensor.shape().num_elements();
    let api = ort::api();
    for (index, item) in items.into_iter().enumerate() {
        if index >= count {
            return Err(format!(
                "more strings than the {count} elements of shape {shape:?}"
            ));
        }
        let mut buffer: *mut std::ffi::c_char = std::ptr::null_mut();
        // SAFETY: `tensor` is a live string tensor with `items.len()` elements; ONNX Runtime resizes element
        // `index` to `item.len()` bytes and returns a buffer of that size, which is filled before any other call.
        unsafe {
            check((api.GetResizedStringTensorElementBuffer)(
                tensor.ptr_mut(),
                index,
                item.len(),
                &mut buffer,
            ))?;
            if !item.is_empty() {
                std::ptr::copy_nonoverlapping(item.as_ptr(), buffer.cast::<u8>(), item.len());
            }
        }
    }
    Ok(tensor)
}

/// The elements of a string tensor in Triton's raw BYTES form (each a 4-byte little-endian length, then the
/// bytes), with the offset where each element starts and, last, the total length: element `i` is
/// `raw[starts[i]..starts[i + 1]]`.
pub fn strings_to_raw(tensor: &DynTensor) -> Result<(Bytes, Vec<usize>), String> {
    let api = ort::api();
    let count = tensor.shape().num_elements();
    let mut total = 0usize;
    // SAFETY: `tensor` is a live string tensor; these calls only read its contents into buffers sized by the
    // lengths ONNX Runtime reports.
    unsafe { check((api.GetStringTensorDataLength)(tensor.ptr(), &mut total))? };
    let mut content = vec![0u8; total];
    let mut offsets = vec![0usize; count];
    if count > 0 {
        // SAFETY: as above; `content` holds `total` bytes and `offsets` holds one entry per element.
        unsafe {
            check((api.GetStringTensorContent)(
                tensor.ptr(),
                content.as_mut_ptr().cast(),
                total,
                offsets.as_mut_ptr(),
                count,
            ))?;
        }
    }
    let mut raw = Vec::with_capacity(total + 4 * count);
    let mut starts = Vec::with_capacity(count + 1);
    for (index, start) in offsets.iter().enumerate() {
        let end = offsets.get(index + 1).copied().unwrap_or(total);
        let item = content
            .get(*start..end)
            .ok_or("ONNX Runtime reported string offsets out of order")?;
        starts.push(raw.len());
        raw.extend_from_slice(&(item.len() as u32).to_le_bytes());
        raw.extend_from_slice(item);
    }
    starts.push(raw.len());
    Ok((Bytes::from(raw), starts))
}
