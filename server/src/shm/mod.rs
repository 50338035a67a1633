//! Triton's system shared memory extension: clients register POSIX shared memory objects as named regions,
//! then point inputs and outputs at them through the tensor parameters `shared_memory_region`,
//! `shared_memory_offset` and `shared_memory_byte_size` instead of sending the bytes over the socket.
//!
//! The server keeps one [`SharedMemoryRegistry`], which the gRPC and REST front ends share through
//! [`InferenceService`](crate::core::InferenceService); the core reads inputs out of it while it parses a
//! request and writes outputs into it after the model ran, the same way whichever protocol carried the
//! request. One job per module:
//!
//! - `tensor`: a tensor's `shared_memory_*` parameters ([`TensorRegion`]), read alike for inputs and outputs.
//! - `registry`: Register, Unregister and Status, and finding the [`RegionSlice`] a tensor points at.
//! - `input`: copying an input's bytes out, once, so the client may reuse the region as soon as it has the
//!   response.
//! - `output`: resolving requested outputs before the model runs ([`OutputRegions`]) and writing results.
//! - `region`: the open object and the bounds-checked slices of it; the only module here allowed `unsafe`,
//!   with its safety invariants written at its top. The object is never mapped: it is read and written with
//!   `pread`/`pwrite` after checking its current size, so a client that writes while a request reads gets
//!   a torn tensor and one that truncates the object gets an error naming the region, but neither can
//!   fault the server.
//! - `cuda`: the CUDA regions (client GPU memory opened from CUDA IPC handles), which share the registry's
//!   namespace of names; inputs and outputs in them are copied device to host and back, once.
//!
//! A region's object is opened once, when it is registered, and shared behind an `Arc`: unregistering
//! removes the name at once, but a request that already resolved the region keeps the object open until it
//! ends. The server never unlinks the objects: they belong to the client.

#![deny(unsafe_code)]

pub mod cuda;
mod input;
mod output;
#[allow(unsafe_code)]
mod region;
mod registry;
mod tensor;
#[cfg(test)]
pub(crate) mod testing;

pub use output::OutputRegions;
pub use region::RegionSlice;
pub use registry::{MAX_REGION_NAME_BYTES, MAX_REGIONS, RegionInfo, SharedMemoryRegistry, Slice};
pub use tensor::{BYTE_SIZE, OFFSET, REGION, TensorRegion};
