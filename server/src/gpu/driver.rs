//! The CUDA driver calls Ferry makes, through `cudarc`'s bindings, loaded at run time.
//!
//! Safety invariants of this module (the only one under `gpu` allowed `unsafe`):
//! - No driver function is called before [`Driver::get`] found `libcuda` and `cuInit` succeeded; a
//!   [`Driver`] exists only then, and every call below takes `&Driver`.
//! - Every call runs inside [`guarded`]: `cudarc` panics when a symbol is missing from an old driver (and,
//!   in some versions, when the library is missing), and a panic must not take a request thread or the
//!   start-up down. The one `catch_unwind` of the GPU code is there, so that it turns into an error.
//! - Device pointers are only used with a context of their device current on the calling thread
//!   ([`Driver::enter`]); primary contexts are retained once and never released, so that a pointer opened in
//!   one stays valid for as long as its [`IpcMapping`] lives.
//! - An [`IpcMapping`] owns the pointer `cuIpcOpenMemHandle` gave: it is closed exactly once, when the
//!   mapping is dropped, and copies through it are bounds-checked against the registered byte size first.

use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Mutex, OnceLock, PoisonError},
};

use cudarc::driver::{
    result::{self, DriverError},
    sys,
};

use super::GpuDevice;

/// The size of a CUDA IPC memory handle (`cudaIpcMemHandle_t`), as tritonclient sends it in `raw_handle`.
pub const IPC_HANDLE_BYTES: usize = 64;

/// Proof that the CUDA driver is loaded and initialised; the one way to call it.
#[derive(Debug)]
pub struct Driver {
    /// Primary contexts retained so far, by ordinal (the raw `CUcontext`, kept as an address).
    contexts: Mutex<HashMap<i32, usize>>,
}

/// Runs `call`, turning a panic inside `cudarc` (a missing library or symbol) into an error naming `what`.
fn guarded<T>(what: &str, call: impl FnOnce() -> Result<T, DriverError>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA driver library is unusable");
            Err(format!("{what}: {message}"))
        }
    }
}

impl Driver {
    /// The driver, loaded and initialised on first use; the error says in one line why there is none.
    pub fn get() -> Result<&'static Driver, String> {
        static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
        DRIVER
            .get_or_init(|| {
                // SAFETY: only tries to open the library with the dynamic loader; calls nothing in it.
                let present = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
                if !present {
                    return Err(
                        "the CUDA driver library (libcuda.so.1) is not installed on this machine".into(),
                    );
                }
                guarded("the CUDA driver did not start (cuInit)", result::init)?;
                Ok(Driver {
                    contexts: Mutex::default(),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Every device the driver shows (after `CUDA_VISIBLE_DEVICES`).
    pub fn devices(&self) -> Result<Vec<GpuDevice>, String> {
        let count = guarded("counting CUDA devices", result::device::get_count)?;
        (0..count).map(|id| self.describe(id)).collect()
    }

    fn describe(&self, id: i32) -> Result<GpuDevice, String> {
        use sys::CUdevice_attribute::{
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
        };
        let what = format!("describing CUDA device {id}");
        guarded(&what, || {
            let device = result::device::get(id)?;
            let name = result::device::get_name(device)?;
            let uuid = result::device::get_uuid(device)?;
            // SAFETY: `device` came from `cuDeviceGet` just above.
            let (total, major, minor) = unsafe {
                (
                    result::device::total_mem(device)?,
                    result::device::get_attribute(device, MAJOR)?,
                    result::device::get_attribute(device, MINOR)?,
                )
            };
            Ok(GpuDevice {
                id,
                name,
                uuid: uuid_text(&uuid.bytes),
                total_bytes: total as u64,
                free_bytes: None,
                compute_capability: (major, minor),
            })
        })
    }

    /// Makes device `id`'s primary context current on this thread, retaining it the first time.
    fn enter(&self, id: i32) -> Result<(), String> {
        let mut contexts = self.contexts.lock().unwrap_or_else(PoisonError::into_inner);
        let context = match contexts.get(&id) {
            Some(context) => *context,
            None => {
                let what = format!("opening CUDA device {id}");
                let retained = guarded(&what, || {
                    let device = result::device::get(id)?;
                    // SAFETY: `device` came from `cuDeviceGet`; the context is never released (see the top).
                    unsafe { result::primary_ctx::retain(device) }
                })?;
                contexts.insert(id, retained as usize);
                retained as usize
            }
        };
        guarded("making a CUDA context current", || {
            // SAFETY: `context` is a primary context retained above and never released.
            unsafe { result::ctx::set_current(context as sys::CUcontext) }
        })
    }

    /// Opens the CUDA IPC handle `handle` (another process's allocation) on device `id`.
    pub fn open_ipc(&'static self, id: i32, handle: &[u8], byte_size: u64) -> Result<IpcMapping, String> {
        let raw: [u8; IPC_HANDLE_BYTES] = handle.try_into().map_err(|_| {
            format!(
                "'raw_handle' must be a {IPC_HANDLE_BYTES}-byte CUDA IPC handle (cudaIpcMemHandle_t), got {} bytes",
                handle.len()
            )
        })?;
        self.enter(id)?;
        let mut handle = sys::CUipcMemHandle {
            reserved: [0; IPC_HANDLE_BYTES],
        };
        for (to, from) in handle.reserved.iter_mut().zip(raw) {
            *to = from as std::ffi::c_char;
        }
        let mut pointer: sys::CUdeviceptr = 0;
        guarded("failed to open CUDA IPC handle", || {
            let flags = sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32;
            // SAFETY: the context of device `id` is current; `pointer` is written by the call only.
            unsafe { sys::cuIpcOpenMemHandle_v2(&mut pointer, handle, flags) }.result()
        })?;
        Ok(IpcMapping {
            driver: self,
            device: id,
            pointer,
            byte_size,
        })
    }
}

/// `base + offset` when `len` bytes from `offset` fit in `byte_size` bytes at `base`.
fn device_address(
    base: sys::CUdeviceptr,
    byte_size: u64,
    offset: u64,
    len: usize,
) -> Result<sys::CUdeviceptr, String> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= byte_size => Ok(base + offset),
        _ => Err(format!(
            "{len} bytes from offset {offset} do not fit in the CUDA region's {byte_size} bytes"
        )),
    }
}

/// A device UUID as NVML writes it: `GPU-` and 32 hex digits in groups of 8, 4, 4, 4 and 12.
fn uuid_text(bytes: &[std::ffi::c_char; 16]) -> String {
    let mut text = String::from("GPU-");
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push_str(&format!("{:02x}", *byte as u8));
    }
    text
}

/// Another process's device memory, opened from its IPC handle; closed when dropped.
#[derive(Debug)]
pub struct IpcMapping {
    driver: &'static Driver,
    device: i32,
    pointer: sys::CUdeviceptr,
    byte_size: u64,
}

impl IpcMapping {
    /// The device the memory is on.
    pub fn device(&self) -> i32 {
        self.device
    }

    /// Checks that `len` bytes from `offset` lie inside the region, returning the device address.
    fn address(&self, offset: u64, len: usize) -> Result<sys::CUdeviceptr, String> {
        device_address(self.pointer, self.byte_size, offset, len)
    }

    /// Copies `into.len()` bytes from `offset` of the region to host memory.
    pub fn read(&self, offset: u64, into: &mut [u8]) -> Result<(), String> {
        let address = self.address(offset, into.len())?;
        self.driver.enter(self.device)?;
        guarded("copying from CUDA shared memory", || {
            // SAFETY: the range was checked against the registered size; the device's context is current.
            unsafe { result::memcpy_dtoh_sync(into, address) }
        })
    }

    /// Copies `from` to the region at `offset`.
    pub fn write(&self, offset: u64, from: &[u8]) -> Result<(), String> {
        let address = self.address(offset, from.len())?;
        self.driver.enter(self.device)?;
        guarded("copying to CUDA shared memory", || {
            // SAFETY: the range was checked against the registered size; the device's context is current.
            unsafe { result::memcpy_htod_sync(address, from) }
        })
    }
}

impl Drop for IpcMapping {
    fn drop(&mut self) {
        let closed = self.driver.enter(self.device).and_then(|()| {
            guarded("failed to close CUDA IPC handle", || {
                // SAFETY: `pointer` came from `cuIpcOpenMemHandle` and is closed only here, once.
                unsafe { sys::cuIpcCloseMemHandle(self.pointer) }.result()
            })
        });
        if let Err(error) = closed {
            tracing::warn!(device = self.device, %error, "closing a CUDA shared memory region");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_stay_inside_the_region() {
        assert_eq!(device_address(0x1000, 64, 0, 64), Ok(0x1000));
        assert_eq!(device_address(0x1000, 64, 16, 48), Ok(0x1010));
        assert!(device_address(0x1000, 64, 16, 49).is_err());
        assert!(device_address(0x1000, 64, u64::MAX, 1).is_err());
    }

    #[test]
    fn uuids_are_written_as_nvml_writes_them() {
        let bytes: [std::ffi::c_char; 16] = std::array::from_fn(|i| (i as u8 * 17) as std::ffi::c_char);
        assert_eq!(uuid_text(&bytes), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    /// Neither this machine nor CI has the NVIDIA driver: getting it is an error in one line, not a panic.
    #[test]
    fn a_missing_driver_is_an_error_naming_the_library() {
        if let Err(reason) = Driver::get() {
            assert!(
                reason.contains("libcuda") || reason.contains("cuInit"),
                "{reason}"
            );
            assert!(!reason.contains('\n'));
        }
    }
}
