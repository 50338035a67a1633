//! Triton's CUDA shared memory extension, as a server without GPU support answers it.
//!
//! Clients that use both kinds of shared memory clean up with "unregister every CUDA region" and ask for the
//! CUDA status next to the system one (Triton's `simple_grpc_shm_client.py` does), so these calls must
//! succeed on a machine without CUDA, as they do on a Triton built without GPU support: unregister answers
//! OK, status answers an empty list (or `NOT_FOUND` for a named region), and only register fails, with
//! Triton's message. The registry keeps the shape a real one will have (register, unregister, status by
//! name), so that CUDA regions can be added here without touching the front ends.

use super::SharedMemoryRegistry;
use crate::Error;

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

/// The registered CUDA regions. This build has no GPU support, so there are none: registering fails and
/// the set stays empty.
#[derive(Debug, Default)]
pub struct CudaSharedMemoryRegistry;

impl CudaSharedMemoryRegistry {
    /// Would register `byte_size` bytes of the CUDA IPC handle `raw_handle` on GPU `device_id` as region
    /// `name`; without GPU support it is Triton's `INVALID_ARGUMENT`, naming the region.
    pub fn register(
        &self,
        name: &str,
        _raw_handle: &[u8],
        _device_id: i64,
        _byte_size: u64,
    ) -> Result<(), Error> {
        // Triton built without GPU support: the register handlers of `grpc_server.cc` and `http_server.cc`.
        Err(Error::invalid(format!(
            "failed to register CUDA shared memory region: '{name}', GPUs not supported"
        )))
    }

    /// Forgets CUDA region `name`, or every CUDA region when `name` is empty. As in Triton, a name that is
    /// not a CUDA region is not an error: the region is gone either way.
    pub fn unregister(&self, _name: &str) {}

    /// CUDA region `name`, or every CUDA region when `name` is empty. Region names share one namespace
    /// with the system regions of `system`, so a system region's name gets Triton's message saying so.
    pub fn status(&self, name: &str, system: &SharedMemoryRegistry) -> Result<Vec<CudaRegionInfo>, Error> {
        if name.is_empty() {
            return Ok(Vec::new());
        }
        // Triton's texts, from `SharedMemoryManager::GetStatus` (`src/shared_memory_manager.cc`).
        Err(Error::NotFound(if system.contains(name) {
            format!("The region named '{name}' is registered as system shared memory, not CUDA shared memory")
        } else {
            format!("Unable to find cuda shared memory region: '{name}'")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_gpus_only_register_fails() {
        let cuda = CudaSharedMemoryRegistry;
        let system = SharedMemoryRegistry::default();
        let refused = cuda.register("gpu", &[0; 64], 0, 1024).expect_err("no GPUs");
        assert_eq!(
            refused,
            Error::InvalidRequest(
                "failed to register CUDA shared memory region: 'gpu', GPUs not supported".into()
            )
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

    #[test]
    fn a_system_region_is_not_a_cuda_region() {
        let path = format!("/dev/shm/ferry_unit_cuda_{}", std::process::id());
        std::fs::write(&path, [0u8; 16]).expect("create the object");
        let system = SharedMemoryRegistry::default();
        let key = path.trim_start_matches("/dev/shm");
        let registered = system.register("sys", key, 0, 16);
        let status = CudaSharedMemoryRegistry.status("sys", &system);
        let _ = std::fs::remove_file(&path);
        registered.expect("register");
        assert_eq!(
            status,
            Err(Error::NotFound(
                "The region named 'sys' is registered as system shared memory, not CUDA shared memory".into()
            ))
        );
    }
}
