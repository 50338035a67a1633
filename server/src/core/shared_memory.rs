//! The shared memory extensions: status, register and unregister of system and CUDA regions. One set of
//! regions serves every front end, as in Triton, so a region registered over one protocol is used and
//! unregistered over the other. Each needs the caller's `shm` scope; changes are audited.

use ferry_proto::inference::{
    self as pb, cuda_shared_memory_status_response::RegionStatus as CudaRegionStatus,
    system_shared_memory_status_response::RegionStatus,
};

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
};

impl InferenceService {
    /// SystemSharedMemoryStatus: region `name`, or every region when `name` is empty.
    pub fn system_regions(&self, name: &str) -> Result<pb::SystemSharedMemoryStatusResponse, Error> {
        self.authorize("SystemSharedMemoryStatus", Scope::Shm, Target::Server)?;
        let regions = self
            .shared_memory
            .status(name)?
            .into_iter()
            .map(|region| {
                let status = RegionStatus {
                    name: region.name.clone(),
                    key: region.key,
                    offset: region.offset,
                    byte_size: region.byte_size,
                };
                (region.name, status)
            })
            .collect();
        Ok(pb::SystemSharedMemoryStatusResponse { regions })
    }

    /// SystemSharedMemoryRegister: maps `byte_size` bytes at `offset` of the shared memory object `key` as
    /// region `name`.
    pub fn register_system_region(
        &self,
        request: &pb::SystemSharedMemoryRegisterRequest,
    ) -> Result<(), Error> {
        // shm_open and fstat are quick system calls, not worth a blocking thread.
        self.audited_now("SystemSharedMemoryRegister", Scope::Shm, &request.name, || {
            self.shared_memory
                .register(&request.name, &request.key, request.offset, request.byte_size)
        })
    }

    /// SystemSharedMemoryUnregister: forgets region `name`, or every region when `name` is empty; a name
    /// that is not registered is no error, as in Triton.
    pub fn unregister_system_region(&self, name: &str) -> Result<(), Error> {
        self.audited_now("SystemSharedMemoryUnregister", Scope::Shm, name, || {
            self.shared_memory.unregister(name);
            Ok(())
        })
    }

    /// CudaSharedMemoryStatus: CUDA region `name`, or every CUDA region when `name` is empty.
    pub fn cuda_regions(&self, name: &str) -> Result<pb::CudaSharedMemoryStatusResponse, Error> {
        self.authorize("CudaSharedMemoryStatus", Scope::Shm, Target::Server)?;
        let regions = self
            .shared_memory
            .cuda()
            .status(name, &self.shared_memory)?
            .into_iter()
            .map(|region| {
                let status = CudaRegionStatus {
                    name: region.name.clone(),
                    device_id: region.device_id,
                    byte_size: region.byte_size,
                };
                (region.name, status)
            })
            .collect();
        Ok(pb::CudaSharedMemoryStatusResponse { regions })
    }

    /// CudaSharedMemoryRegister: the CUDA registry decides whether CUDA regions can be registered at all.
    pub fn register_cuda_region(&self, request: &pb::CudaSharedMemoryRegisterRequest) -> Result<(), Error> {
        self.audited_now("CudaSharedMemoryRegister", Scope::Shm, &request.name, || {
            self.shared_memory.cuda().register(
                &request.name,
                &request.raw_handle,
                request.device_id,
                request.byte_size,
                &self.shared_memory,
            )
        })
    }

    /// CudaSharedMemoryUnregister: forgets CUDA region `name`, or every CUDA region when `name` is empty.
    pub fn unregister_cuda_region(&self, name: &str) -> Result<(), Error> {
        self.audited_now("CudaSharedMemoryUnregister", Scope::Shm, name, || {
            self.shared_memory.cuda().unregister(name);
            Ok(())
        })
    }
}
