//! The registered system shared memory regions by name: Register, Unregister and Status, and the lookup
//! that turns a tensor's parameters into a checked [`RegionSlice`].

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use super::{
    TensorRegion, cuda,
    region::{Region, RegionSlice},
};
use crate::Error;

/// The longest region name Register accepts: names are kept for as long as the region is registered and
/// echoed by Status, so a client cannot make the server hold megabytes of name.
pub const MAX_REGION_NAME_BYTES: usize = 255;
/// The most regions registered at once: each keeps an open file descriptor and its name, so without a
/// bound a client could exhaust the server's descriptors by registering without ever unregistering.
pub const MAX_REGIONS: usize = 1024;

/// The registered regions by name. The server keeps one, which the gRPC and REST front ends share through
/// [`InferenceService`](crate::core::InferenceService), as Triton's do: a region registered over one protocol
/// is used and unregistered over the other. Requests of both read it at once, so it is behind a lock.
#[derive(Debug)]
pub struct SharedMemoryRegistry {
    regions: RwLock<HashMap<String, Arc<Region>>>,
    /// The CUDA regions, kept here because both kinds share one namespace of names, as in Triton.
    cuda: cuda::CudaSharedMemoryRegistry,
    max_regions: usize,
}

impl Default for SharedMemoryRegistry {
    fn default() -> Self {
        Self::with_max_regions(MAX_REGIONS)
    }
}

/// What Status reports about a region: the registration as the client made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region's name, as requests refer to it.
    pub name: String,
    /// The shared memory object, as `shm_open` names it (`/my_key` is `/dev/shm/my_key` on Linux).
    pub key: String,
    /// Where the region starts in the object, in bytes.
    pub offset: u64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

impl RegionInfo {
    /// What Status reports about `region`.
    fn of(region: &Region) -> Self {
        RegionInfo {
            name: region.name().to_owned(),
            key: region.key().to_owned(),
            offset: region.offset(),
            byte_size: region.byte_size() as u64,
        }
    }
}

impl SharedMemoryRegistry {
    /// An empty registry that keeps at most `max_regions` regions at once ([`MAX_REGIONS`] by default).
    pub fn with_max_regions(max_regions: usize) -> Self {
        Self {
            regions: RwLock::default(),
            cuda: cuda::CudaSharedMemoryRegistry::default(),
            max_regions,
        }
    }

    /// Opens the POSIX shared memory object `key` and registers its `byte_size` bytes from `offset` on as
    /// region `name`.
    ///
    /// Errors are Triton's (`SharedMemoryManager::RegisterSystemSharedMemory`), with Ferry's detail after
    /// `"; "`: a taken name is `ALREADY_EXISTS`, an object that cannot be opened `INTERNAL`, a region past
    /// the end of the object `INVALID_ARGUMENT`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<(), Error> {
        check_name_length(name)?;
        if name.is_empty() {
            return Err(Error::invalid(
                "a shared memory region needs a name; 'name' is empty",
            ));
        }
        if let Some(existing) = self.read().get(name) {
            return Err(already_registered(existing));
        }
        if self.cuda.contains(name) {
            // One namespace for both kinds, as in Triton.
            return Err(Error::AlreadyExists(format!(
                "shared memory region '{name}' already in manager"
            )));
        }
        self.check_room(self.read().len())?;
        let region = Region::open(name, key, offset, byte_size)?;
        let mut regions = self.write();
        // Another request may have taken the name, or the last free place, while the object was opened.
        if let Some(existing) = regions.get(name) {
            return Err(already_registered(existing));
        }
        self.check_room(regions.len())?;
        regions.insert(name.to_owned(), Arc::new(region));
        Ok(())
    }

    /// Refuses a new region when `registered` regions already fill the registry, before anything is opened.
    fn check_room(&self, registered: usize) -> Result<(), Error> {
        if registered >= self.max_regions {
            return Err(Error::TooLarge(format!(
                "failed to register shared memory region: {registered} regions are registered, the most Ferry \
                 keeps at once ({}); unregister regions that are no longer used",
                self.max_regions
            )));
        }
        Ok(())
    }

    /// Forgets region `name`, or every region when `name` is empty. Requests already using a region keep
    /// its object open until they end. An unknown name is not an error, as in Triton: the region is gone either
    /// way.
    pub fn unregister(&self, name: &str) {
        let mut regions = self.write();
        if name.is_empty() {
            regions.clear();
        } else {
            regions.remove(name);
        }
    }

    /// Region `name`, or every region (by name) when `name` is empty; an unknown name is `NOT_FOUND`.
    pub fn status(&self, name: &str) -> Result<Vec<RegionInfo>, Error> {
        let regions = self.read();
        if name.is_empty() {
            let mut all: Vec<RegionInfo> = regions.values().map(|r| RegionInfo::of(r)).collect();
            all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            return Ok(all);
        }
        match regions.get(name) {
            Some(region) => Ok(vec![RegionInfo::of(region)]),
            None => Err(Error::NotFound(format!(
                "Unable to find system shared memory region: '{name}'"
            ))),
        }
    }

    /// Whether a system region named `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The CUDA regions, which share this registry's namespace of names.
    pub fn cuda(&self) -> &cuda::CudaSharedMemoryRegistry {
        &self.cuda
    }

    /// The bytes `tensor` points at, in a system or a CUDA region, checked against its region with Triton's
    /// errors (`SharedMemoryManager::GetMemoryInfo`).
    pub fn slice(&self, tensor: &TensorRegion) -> Result<Slice, Error> {
        if let Some(region) = self.read().get(&tensor.region).cloned() {
            return RegionSlice::new(region, tensor.offset, tensor.byte_size).map(Slice::System);
        }
        if let Some(region) = self.cuda.region(&tensor.region) {
            return cuda::CudaSlice::new(region, tensor.offset as u64, tensor.byte_size as u64)
                .map(Slice::Cuda);
        }
        Err(Error::NotFound(format!(
            "Unable to find shared memory region: '{}'",
            tensor.region
        )))
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<Region>>> {
        // The map is never left half-updated, so a panic elsewhere while it was held cannot corrupt it.
        self.regions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<Region>>> {
        self.regions.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The part of a region a tensor points at, in host or device memory.
#[derive(Debug, Clone)]
pub enum Slice {
    /// In a POSIX shared memory object.
    System(RegionSlice),
    /// In a client's GPU memory, opened from its CUDA IPC handle.
    Cuda(cuda::CudaSlice),
}

impl Slice {
    /// The slice's size in bytes.
    pub fn byte_size(&self) -> usize {
        match self {
            Slice::System(slice) => slice.byte_size(),
            Slice::Cuda(slice) => slice.byte_size(),
        }
    }

    /// The slice's bytes, copied out once.
    pub fn to_bytes(&self) -> Result<bytes::Bytes, Error> {
        match self {
            Slice::System(slice) => slice.to_bytes(),
            Slice::Cuda(slice) => slice.to_bytes(),
        }
    }

    /// Copies `data` to the start of the slice (the caller checked that it fits).
    pub fn copy_in(&self, data: &[u8]) -> Result<(), Error> {
        match self {
            Slice::System(slice) => slice.copy_in(data),
            Slice::Cuda(slice) => slice.copy_in(data),
        }
    }
}

/// Refuses a region name longer than [`MAX_REGION_NAME_BYTES`], before anything is opened or stored.
fn check_name_length(name: &str) -> Result<(), Error> {
    crate::limits::check_string_length("shared memory region name", name, MAX_REGION_NAME_BYTES)
}

fn already_registered(existing: &Region) -> Error {
    Error::AlreadyExists(format!(
        "shared memory region '{}' already in manager",
        existing.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::testing::Object;

    #[test]
    fn registration_errors_follow_triton() {
        let object = Object::new("reg", &[0; 64]);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 0, 64).expect("whole object");
        // Triton's statuses and texts (`SharedMemoryManager::RegisterSystemSharedMemory`).
        let taken = registry.register("r", &object.key, 0, 8).expect_err("taken");
        assert!(matches!(taken, Error::AlreadyExists(_)), "{taken:?}");
        assert_eq!(taken.to_string(), "shared memory region 'r' already in manager");
        let missing = registry
            .register("m", "/ferry_no_such_object", 0, 8)
            .expect_err("missing");
        assert!(
            matches!(&missing, Error::Internal(m)
                if m.starts_with("Unable to open shared memory region: '/ferry_no_such_object'; ")),
            "{missing:?}"
        );
        let past = registry
            .register("p", &object.key, 60, 8)
            .expect_err("past the end");
        let message = past.to_string();
        assert!(
            matches!(past, Error::InvalidRequest(_))
                && message.starts_with("failed to register shared memory region 'p': invalid args; ")
                && message.contains("offset 60 + byte_size 8")
                && message.contains("holds 64 bytes"),
            "{message}"
        );
        let overflow = registry
            .register("o", &object.key, u64::MAX, 2)
            .expect_err("overflow");
        assert!(matches!(overflow, Error::InvalidRequest(_)), "{overflow:?}");
        assert!(registry.register("z", &object.key, 0, 0).is_err());
        assert!(registry.register("", &object.key, 0, 8).is_err());
    }

    #[test]
    fn registrations_past_the_limit_are_refused_until_one_is_freed() {
        let object = Object::new("limit", &[0; 16]);
        let registry = SharedMemoryRegistry::with_max_regions(2);
        registry.register("a", &object.key, 0, 8).expect("a");
        registry.register("b", &object.key, 8, 8).expect("b");
        let full = registry.register("c", &object.key, 0, 8).expect_err("full");
        assert!(
            matches!(&full, Error::TooLarge(m) if m.contains("2 regions are registered")),
            "{full:?}"
        );
        assert_eq!(tonic::Status::from(full).code(), tonic::Code::ResourceExhausted);
        registry.unregister("a");
        registry.register("c", &object.key, 0, 8).expect("room again");
    }

    #[test]
    fn status_and_unregister() {
        let object = Object::new("status", &[0; 32]);
        let registry = SharedMemoryRegistry::default();
        registry.register("b", &object.key, 16, 16).expect("b");
        registry.register("a", &object.key, 0, 16).expect("a");
        let all = registry.status("").expect("all");
        assert_eq!(
            all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            registry.status("b").expect("b"),
            [RegionInfo {
                name: "b".into(),
                key: object.key.clone(),
                offset: 16,
                byte_size: 16
            }]
        );
        let unknown = registry.status("c").expect_err("unknown");
        assert_eq!(
            unknown,
            Error::NotFound("Unable to find system shared memory region: 'c'".into())
        );
        registry.unregister("a");
        registry.unregister("never registered");
        assert_eq!(registry.status("").expect("all").len(), 1);
        registry.unregister("");
        assert!(registry.status("").expect("all").is_empty());
    }

    #[test]
    fn region_names_are_bounded() {
        let object = Object::new("names", &[0; 8]);
        let registry = SharedMemoryRegistry::default();
        let longest = "n".repeat(MAX_REGION_NAME_BYTES);
        registry.register(&longest, &object.key, 0, 8).expect("255 bytes");
        let message = registry
            .register(&format!("{longest}n"), &object.key, 0, 8)
            .expect_err("256 bytes")
            .to_string();
        assert!(
            message.contains("256 bytes long") && message.contains("the most is 255"),
            "{message}"
        );
        assert!(registry.contains(&longest) && !registry.contains("n"));
    }
}
