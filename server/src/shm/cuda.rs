//! Triton's CUDA shared memory extension: a client hands over a CUDA IPC handle of its own device memory
//! (`cudaIpcGetMemHandle`, 64 bytes, as tritonclient's `cuda_shared_memory` utilities send it in
//! `raw_handle`), and Ferry opens it on the client's `device_id` with `cuIpcOpenMemHandle`.
//!
//! Clients that use both kinds of shared memory clean up with "unregister every CUDA region" and ask for the
//! CUDA status next to the system one (Triton's `simple_grpc_shm_client.py` does), so unregister and status
//! answer on every machine. Registering needs the NVIDIA driver: without it, it fails with Triton's
//! `INVALID_ARGUMENT` text for a handle that cannot be opened, naming the missing driver. Region names share
//! one namespace with the system regions, as in Triton. A region is opened once, when it is registered, and
//! closed when the last user of it (the registry, or a request that resolved it) lets it go.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use super::{MAX_REGION_NAME_BYTES, MAX_REGIONS, SharedMemoryRegistry};
use crate::{
    Error,
    gpu::{
        MAX_GPU_ID,
        driver::{Driver, IPC_HANDLE_BYTES, IpcMapping},
    },
};

/// What Status reports about a CUDA region, as Triton's `CudaSharedMemoryStatusResponse.RegionStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaRegionInfo {
    /// The region's name, as requests refer to it.
    pub name: String,
    /// The GPU the region's memory is on.
    pub device_id: u64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

/// A registered CUDA region: the client's device memory, opened in this process.
#[derive(Debug)]
pub struct CudaRegion {
    name: String,
    byte_size: u64,
    mapping: IpcMapping,
}

impl CudaRegion {
    /// The region's size in bytes.
    pub fn byte_size(&self) -> u64 {
        self.byte_size
    }

    /// Copies `into.len()` bytes from `offset` of the region (device to host).
    pub fn read(&self, offset: u64, into: &mut [u8]) -> Result<(), Error> {
        self.mapping
            .read(offset, into)
            .map_err(|error| Error::Internal(format!("CUDA shared memory region '{}': {error}", self.name)))
    }

    /// Copies `from` to the region at `offset` (host to device).
    pub fn write(&self, offset: u64, from: &[u8]) -> Result<(), Error> {
        self.mapping
            .write(offset, from)
            .map_err(|error| Error::Internal(format!("CUDA shared memory region '{}': {error}", self.name)))
    }
}

/// The part of a CUDA region a tensor points at, bounds-checked with Triton's errors.
#[derive(Debug, Clone)]
pub struct CudaSlice {
    region: Arc<CudaRegion>,
    offset: u64,
    byte_size: usize,
}

impl CudaSlice {
    /// `byte_size` bytes from `offset` of `region`; Triton's `INVALID_ARGUMENT` texts when they do not fit
    /// (`SharedMemoryManager::GetMemoryInfo`).
    pub fn new(region: Arc<CudaRegion>, offset: u64, byte_size: u64) -> Result<Self, Error> {
        let byte_size = check_bounds(&region.name, region.byte_size, offset, byte_size)?;
        Ok(CudaSlice {
            region,
            offset,
            byte_size,
        })
    }

    /// The slice's size in bytes.
    pub fn byte_size(&self) -> usize {
        self.byte_size
    }

    /// The slice's bytes, copied from the device.
    pub fn to_bytes(&self) -> Result<bytes::Bytes, Error> {
        let mut bytes = vec![0u8; self.byte_size];
        self.region.read(self.offset, &mut bytes)?;
        Ok(bytes.into())
    }

    /// Copies `data` to the start of the slice (the caller checked that it fits).
    pub fn copy_in(&self, data: &[u8]) -> Result<(), Error> {
        self.region.write(self.offset, data)
    }
}

/// Checks that `byte_size` bytes from `offset` lie in region `name` of `holds` bytes, with Triton's texts.
fn check_bounds(name: &str, holds: u64, offset: u64, byte_size: u64) -> Result<usize, Error> {
    if offset >= holds.max(1) {
        return Err(Error::invalid(format!(
            "Invalid offset for shared memory region: '{name}'; {} {offset}, the region holds {holds} bytes",
            super::OFFSET
        )));
    }
    let fits = offset.checked_add(byte_size).is_some_and(|end| end <= holds);
    usize::try_from(byte_size).ok().filter(|_| fits).ok_or_else(|| {
        Error::invalid(format!(
            "Invalid offset + byte size for shared memory region: '{name}'; {} {offset} + {} {byte_size}, the \
             region holds {holds} bytes",
            super::OFFSET,
            super::BYTE_SIZE
        ))
    })
}

/// The registered CUDA regions by name.
#[derive(Debug, Default)]
pub struct CudaSharedMemoryRegistry {
    regions: RwLock<HashMap<String, Arc<CudaRegion>>>,
}

impl CudaSharedMemoryRegistry {
    /// Opens the CUDA IPC handle `raw_handle` of `byte_size` bytes on GPU `device_id` as region `name`.
    ///
    /// Errors are Triton's (`SharedMemoryManager::RegisterCUDASharedMemory`): a taken name (system or CUDA)
    /// is `ALREADY_EXISTS`, a handle that cannot be opened `INVALID_ARGUMENT` with "failed to register CUDA
    /// shared memory region '<name>': failed to open CUDA IPC handle: <why>", and why names the missing
    /// driver on a machine without one.
    pub fn register(
        &self,
        name: &str,
        raw_handle: &[u8],
        device_id: i64,
        byte_size: u64,
        system: &SharedMemoryRegistry,
    ) -> Result<(), Error> {
        crate::limits::check_string_length("shared memory region name", name, MAX_REGION_NAME_BYTES)?;
        if name.is_empty() {
            return Err(Error::invalid(
                "a CUDA shared memory region needs a name; 'name' is empty",
            ));
        }
        if self.contains(name) || system.contains(name) {
            return Err(Error::AlreadyExists(format!(
                "shared memory region '{name}' already in manager"
            )));
        }
        let registered = self.read().len();
        if registered >= MAX_REGIONS {
            return Err(Error::TooLarge(format!(
                "failed to register CUDA shared memory region: {registered} regions are registered, the most Ferry \
                 keeps at once ({MAX_REGIONS}); unregister regions that are no longer used"
            )));
        }
        let refused = |why: String| {
            Error::invalid(format!(
                "failed to register CUDA shared memory region '{name}': failed to open CUDA IPC handle: {why}"
            ))
        };
        if raw_handle.len() != IPC_HANDLE_BYTES {
            return Err(refused(format!(
                "'raw_handle' must be a {IPC_HANDLE_BYTES}-byte cudaIpcMemHandle_t, got {} bytes",
                raw_handle.len()
            )));
        }
        let device = i32::try_from(device_id)
            .ok()
            .filter(|id| (0..=MAX_GPU_ID).contains(id))
            .ok_or_else(|| {
                refused(format!(
                    "'device_id' must be a GPU ordinal from 0 to {MAX_GPU_ID}, got {device_id}"
                ))
            })?;
        let driver = Driver::get()
            .map_err(|why| refused(format!("{why}; CUDA shared memory needs the NVIDIA driver")))?;
        if crate::gpu::inventory().device(device).is_none() {
            return Err(refused(format!(
                "this machine has no GPU {device} (it has {})",
                crate::gpu::inventory().ids()
            )));
        }
        let mapping = driver.open_ipc(device, raw_handle, byte_size).map_err(refused)?;
        let region = Arc::new(CudaRegion {
            name: name.to_owned(),
            byte_size,
            mapping,
        });
        let mut regions = self.regions.write().unwrap_or_else(PoisonError::into_inner);
        if regions.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "shared memory region '{name}' already in manager"
            )));
        }
        regions.insert(name.to_owned(), region);
        Ok(())
    }

    /// Forgets CUDA region `name`, or every CUDA region when `name` is empty. As in Triton, a name that is
    /// not a CUDA region is not an error: the region is gone either way. The handle closes when the last
    /// request using the region ends.
    pub fn unregister(&self, name: &str) {
        let mut regions = self.regions.write().unwrap_or_else(PoisonError::into_inner);
        if name.is_empty() {
            regions.clear();
        } else {
            regions.remove(name);
        }
    }

    /// Whether a CUDA region named `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// CUDA region `name`, for a request that reads or writes it.
    pub fn region(&self, name: &str) -> Option<Arc<CudaRegion>> {
        self.read().get(name).cloned()
    }

    /// CUDA region `name`, or every CUDA region when `name` is empty. Region names share one namespace
    /// with the system regions of `system`, so a system region's name gets Triton's message saying so.
    pub fn status(&self, name: &str, system: &SharedMemoryRegistry) -> Result<Vec<CudaRegionInfo>, Error> {
        let regions = self.read();
        let info = |region: &CudaRegion| CudaRegionInfo {
            name: region.name.clone(),
            device_id: region.mapping.device() as u64,
            byte_size: region.byte_size,
        };
        if name.is_empty() {
            let mut all: Vec<CudaRegionInfo> = regions.values().map(|r| info(r)).collect();
            all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            return Ok(all);
        }
        if let Some(region) = regions.get(name) {
            return Ok(vec![info(region)]);
        }
        // Triton's texts, from `SharedMemoryManager::GetStatus` (`src/shared_memory_manager.cc`).
        Err(Error::NotFound(if system.contains(name) {
            format!("The region named '{name}' is registered as system shared memory, not CUDA shared memory")
        } else {
            format!("Unable to find cuda shared memory region: '{name}'")
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<CudaRegion>>> {
        self.regions.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the NVIDIA driver (this machine and CI), register fails with Triton's INVALID_ARGUMENT text
    /// for a handle that cannot be opened (`RegisterCUDASharedMemory` in `src/shared_memory_manager.cc`),
    /// naming the driver; unregister and status answer as for no region.
    #[test]
    fn without_the_driver_register_says_so_and_the_rest_answers() {
        let cuda = CudaSharedMemoryRegistry::default();
        let system = SharedMemoryRegistry::default();
        if Driver::get().is_ok() {
            return;
        }
        let refused = cuda
            .register("gpu", &[0; 64], 0, 1024, &system)
            .expect_err("no driver");
        let Error::InvalidRequest(message) = &refused else {
            panic!("INVALID_ARGUMENT expected, got {refused:?}");
        };
        assert!(
            message.starts_with(
                "failed to register CUDA shared memory region 'gpu': failed to open CUDA IPC handle: "
            ) && message.contains("libcuda.so.1")
                && message.contains("NVIDIA driver"),
            "{message}"
        );
        cuda.unregister("");
        cuda.unregister("gpu");
        assert_eq!(cuda.status("", &system), Ok(Vec::new()));
        assert_eq!(
            cuda.status("gpu", &system),
            Err(Error::NotFound(
                "Unable to find cuda shared memory region: 'gpu'".into()
            ))
        );
    }

    /// Triton's bounds texts (`SharedMemoryManager::GetMemoryInfo`), as for system regions.
    #[test]
    fn slices_must_lie_inside_their_region() {
        assert_eq!(check_bounds("g", 64, 0, 64), Ok(64));
        assert_eq!(check_bounds("g", 64, 60, 4), Ok(4));
        for (offset, byte_size, expected) in [
            (64, 1, "Invalid offset for shared memory region: 'g'; "),
            (
                60,
                5,
                "Invalid offset + byte size for shared memory region: 'g'; ",
            ),
            (
                1,
                u64::MAX,
                "Invalid offset + byte size for shared memory region: 'g'; ",
            ),
        ] {
            let refused = check_bounds("g", 64, offset, byte_size).expect_err(expected);
            assert!(
                matches!(&refused, Error::InvalidRequest(m) if m.starts_with(expected)),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn malformed_registrations_are_refused_before_the_driver_is_asked() {
        let cuda = CudaSharedMemoryRegistry::default();
        let system = SharedMemoryRegistry::default();
        for (handle, device, expected) in [
            (
                vec![0u8; 16],
                0,
                "must be a 64-byte cudaIpcMemHandle_t, got 16 bytes",
            ),
            (vec![0u8; 64], -1, "from 0 to 63, got -1"),
            (vec![0u8; 64], 64, "from 0 to 63, got 64"),
        ] {
            let refused = cuda
                .register("r", &handle, device, 8, &system)
                .expect_err(expected);
            assert!(
                matches!(&refused, Error::InvalidRequest(m) if m.contains(expected)),
                "{refused:?}"
            );
        }
        let long = "n".repeat(MAX_REGION_NAME_BYTES + 1);
        assert!(matches!(
            cuda.register(&long, &[0; 64], 0, 8, &system),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            cuda.register("", &[0; 64], 0, 8, &system),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn a_system_region_is_not_a_cuda_region() {
        let path = format!("/dev/shm/ferry_unit_cuda_{}", std::process::id());
        std::fs::write(&path, [0u8; 16]).expect("create the object");
        let system = SharedMemoryRegistry::default();
        let key = path.trim_start_matches("/dev/shm");
        let registered = system.register("sys", key, 0, 16);
        let cuda = CudaSharedMemoryRegistry::default();
        let status = cuda.status("sys", &system);
        let taken = cuda.register("sys", &[0; 64], 0, 16, &system);
        let _ = std::fs::remove_file(&path);
        registered.expect("register");
        assert_eq!(
            status,
            Err(Error::NotFound(
                "The region named 'sys' is registered as system shared memory, not CUDA shared memory".into()
            ))
        );
        assert_eq!(
            taken,
            Err(Error::AlreadyExists(
                "shared memory region 'sys' already in manager".into()
            ))
        );
    }
}
