//! Triton's system shared memory extension: clients register POSIX shared memory objects as named regions,
//! then point inputs and outputs at them through the tensor parameters `shared_memory_region`,
//! `shared_memory_offset` and `shared_memory_byte_size` instead of sending the bytes over gRPC.
//!
//! A region's object is opened once, when it is registered, and shared behind an [`Arc`]: unregistering
//! removes the name at once, but a request that already resolved the region keeps the object open until it
//! ends. Input bytes are copied out of the region while the request is parsed, so the client may reuse the
//! region as soon as it has the response; output bytes are copied in after the model ran, before the
//! response is sent. The server never unlinks the objects: they belong to the client.
//!
//! The object is memory another process writes, so Ferry never maps it: it reads and writes it with
//! `pread`/`pwrite` on the descriptor, after checking the object's current size. A client that writes while
//! a request reads gets a torn tensor, and a client that truncates the object under a registered region gets
//! an error naming the region; neither can fault the server (a mapping would raise SIGBUS there).

use std::{
    collections::HashMap,
    ffi::CString,
    fs::File,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::FileExt,
    },
    sync::{Arc, PoisonError, RwLock},
};

use ferry_proto::inference::{
    InferParameter, infer_parameter::ParameterChoice, model_infer_request::InferRequestedOutputTensor,
};

use crate::Error;

pub mod cuda;

/// The tensor parameter naming the region.
pub const REGION: &str = "shared_memory_region";
/// The tensor parameter giving the tensor's offset in the region (optional, 0 by default).
pub const OFFSET: &str = "shared_memory_offset";
/// The tensor parameter giving the tensor's size in bytes (required with a region).
pub const BYTE_SIZE: &str = "shared_memory_byte_size";
/// The longest region name Register accepts: names are kept for as long as the region is registered and
/// echoed by Status, so a client cannot make the server hold megabytes of name.
pub const MAX_REGION_NAME_BYTES: usize = 255;
/// The most regions registered at once: each keeps an open file descriptor and its name, so without a
/// bound a client could exhaust the server's descriptors by registering without ever unregistering.
pub const MAX_REGIONS: usize = 1024;

/// The registered regions by name; shared by every request of a front end, so it is behind a lock.
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

impl SharedMemoryRegistry {
    /// An empty registry that keeps at most `max_regions` regions at once ([`MAX_REGIONS`] by default).
    pub fn with_max_regions(max_regions: usize) -> Self {
        Self {
            regions: RwLock::default(),
            cuda: cuda::CudaSharedMemoryRegistry,
            max_regions,
        }
    }

    /// Maps `byte_size` bytes of the POSIX shared memory object `key`, from `offset` on, as region `name`.
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
        self.check_room(self.read().len())?;
        let region = Region::map(name, key, offset, byte_size)?;
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
    /// its mapping until they end. An unknown name is not an error, as in Triton: the region is gone either
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
            let mut all: Vec<RegionInfo> = regions.values().map(|r| r.info()).collect();
            all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            return Ok(all);
        }
        match regions.get(name) {
            Some(region) => Ok(vec![region.info()]),
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

    /// The bytes `tensor` points at, checked against its region with Triton's errors
    /// (`SharedMemoryManager::GetMemoryInfo`).
    pub fn slice(&self, tensor: &TensorRegion) -> Result<RegionSlice, Error> {
        let region = self.read().get(&tensor.region).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "Unable to find shared memory region: '{}'",
                tensor.region
            ))
        })?;
        let (size, offset) = (tensor.byte_size, tensor.offset);
        let holds = region.byte_size;
        if offset >= holds {
            return Err(Error::invalid(format!(
                "Invalid offset for shared memory region: '{}'; {OFFSET} {offset}, the region holds {holds} bytes",
                region.name
            )));
        }
        if offset.checked_add(size).is_none_or(|end| end > holds) {
            return Err(Error::invalid(format!(
                "Invalid offset + byte size for shared memory region: '{}'; {OFFSET} {offset} + {BYTE_SIZE} \
                 {size}, the region holds {holds} bytes",
                region.name
            )));
        }
        Ok(RegionSlice {
            region,
            offset: tensor.offset,
            byte_size: tensor.byte_size,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Region>>> {
        // The map is never left half-updated, so a panic elsewhere while it was held cannot corrupt it.
        self.regions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Region>>> {
        self.regions.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Refuses a region name longer than [`MAX_REGION_NAME_BYTES`], before anything is opened or stored.
fn check_name_length(name: &str) -> Result<(), Error> {
    if name.len() > MAX_REGION_NAME_BYTES {
        return Err(Error::invalid(format!(
            "shared memory region name is {} bytes long; the most is {MAX_REGION_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

fn already_registered(existing: &Region) -> Error {
    Error::AlreadyExists(format!(
        "shared memory region '{}' already in manager",
        existing.name
    ))
}

/// Where a tensor's bytes are, as its shared memory parameters say; not yet checked against the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRegion {
    /// The region's name.
    pub region: String,
    /// Offset in the region, in bytes.
    pub offset: usize,
    /// Size in bytes.
    pub byte_size: usize,
}

impl TensorRegion {
    /// Reads the shared memory parameters of the tensor named `tensor`; `None` when it sets none of them.
    /// As in Triton (`ParseSharedMemoryParams`, whose texts the errors are), the offset and size are only
    /// valid with a region, and a region needs a size.
    pub fn from_parameters(
        parameters: &HashMap<String, InferParameter>,
        tensor: &str,
    ) -> Result<Option<Self>, Error> {
        let region = match parameters.get(REGION).map(|p| &p.parameter_choice) {
            None => None,
            Some(Some(ParameterChoice::StringParam(region))) => Some(region.clone()),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "invalid value type for '{REGION}' parameter for tensor '{tensor}', expected string_param."
                )));
            }
        };
        let offset = size_parameter(parameters, OFFSET, tensor, region.is_some())?;
        let byte_size = size_parameter(parameters, BYTE_SIZE, tensor, region.is_some())?;
        let Some(region) = region else {
            return Ok(None);
        };
        let Some(byte_size) = byte_size else {
            return Err(Error::invalid(format!(
                "'{BYTE_SIZE}' must be specified along with '{REGION}' parameter for tensor '{tensor}'"
            )));
        };
        Ok(Some(TensorRegion {
            region,
            offset: offset.unwrap_or(0),
            byte_size,
        }))
    }

    /// The parameters that say where this tensor is, as a response echoes them.
    pub fn parameters(&self) -> HashMap<String, InferParameter> {
        let int = |value: usize| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(
                i64::try_from(value).unwrap_or(i64::MAX),
            )),
        };
        let mut parameters = HashMap::from([
            (
                REGION.to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::StringParam(self.region.clone())),
                },
            ),
            (BYTE_SIZE.to_owned(), int(self.byte_size)),
        ]);
        if self.offset != 0 {
            parameters.insert(OFFSET.to_owned(), int(self.offset));
        }
        parameters
    }
}

/// An offset or size parameter of the tensor named `tensor`: a non-negative int64 as Triton's clients send
/// it, or a uint64; only valid `with_region`.
fn size_parameter(
    parameters: &HashMap<String, InferParameter>,
    key: &str,
    tensor: &str,
    with_region: bool,
) -> Result<Option<usize>, Error> {
    let Some(parameter) = parameters.get(key) else {
        return Ok(None);
    };
    if !with_region {
        return Err(Error::invalid(format!(
            "'{key}' can not be specified without '{REGION}' parameter for tensor '{tensor}'"
        )));
    }
    let (value, given) = match parameter.parameter_choice {
        Some(ParameterChoice::Int64Param(value)) => (u64::try_from(value).ok(), i128::from(value)),
        Some(ParameterChoice::Uint64Param(value)) => (Some(value), i128::from(value)),
        _ => {
            return Err(Error::invalid(format!(
                "invalid value type for '{key}' parameter for tensor '{tensor}', expected int64_param."
            )));
        }
    };
    value
        .and_then(|value| usize::try_from(value).ok())
        .map(Some)
        .ok_or_else(|| {
            Error::invalid(format!(
                "invalid value for '{key}' parameter for tensor '{tensor}', expected a value >= 0 that fits \
                 in memory, got {given}"
            ))
        })
}

/// Bytes of a registered region that one tensor reads or writes, already checked to lie in the region.
/// Holding it keeps the mapping alive, even if the region is unregistered meanwhile.
#[derive(Debug, Clone)]
pub struct RegionSlice {
    region: Arc<Region>,
    offset: usize,
    byte_size: usize,
}

impl RegionSlice {
    /// The slice's size in bytes (`shared_memory_byte_size`).
    pub fn byte_size(&self) -> usize {
        self.byte_size
    }

    /// The region's name, for messages.
    pub fn region_name(&self) -> &str {
        &self.region.name
    }

    /// Copies the slice out, so that the request owns its bytes and the client may reuse the region.
    pub fn to_bytes(&self) -> Result<bytes::Bytes, Error> {
        self.region.copy_out(self.offset, self.byte_size).map(Into::into)
    }

    /// Copies `data` to the start of the slice, which holds the output named `output`.
    pub fn write(&self, data: &[u8], output: &str) -> Result<(), Error> {
        self.check_fits(data.len(), output)?;
        self.region.copy_in(self.offset, data)
    }

    /// Whether `needed` bytes of the output named `output` fit in the slice; Triton's `INTERNAL` error
    /// (`ResponseAllocatorHelper`) when they do not.
    pub fn check_fits(&self, needed: usize, output: &str) -> Result<(), Error> {
        if needed > self.byte_size {
            return Err(Error::Internal(format!(
                "shared memory size specified with the request for output '{output}' ({} bytes) should be at \
                 least {needed} bytes to hold the results",
                self.byte_size
            )));
        }
        Ok(())
    }
}

/// The requested outputs that go to shared memory, resolved before the model runs so that a bad region
/// fails the request without spending compute on it.
#[derive(Debug, Default)]
pub struct OutputRegions {
    outputs: Vec<(String, TensorRegion, RegionSlice)>,
}

impl OutputRegions {
    /// Resolves the shared memory parameters of `outputs` against `registry`.
    pub fn resolve(
        registry: &SharedMemoryRegistry,
        outputs: &[InferRequestedOutputTensor],
    ) -> Result<Self, Error> {
        let mut resolved = Vec::new();
        for output in outputs {
            if let Some(tensor) = TensorRegion::from_parameters(&output.parameters, &output.name)? {
                let slice = registry.slice(&tensor)?;
                resolved.push((output.name.clone(), tensor, slice));
            }
        }
        Ok(OutputRegions { outputs: resolved })
    }

    /// Checks that `output`'s `needed` bytes fit its slice; outputs not in shared memory always fit.
    pub fn check_fits(&self, output: &str, needed: usize) -> Result<(), Error> {
        match self.find(output) {
            Some((_, slice)) => slice.check_fits(needed, output),
            None => Ok(()),
        }
    }

    /// Writes `data` into `output`'s slice and returns the parameters the response echoes for it; `None`
    /// for an output not in shared memory, whose bytes travel in the response.
    pub fn write(&self, output: &str, data: &[u8]) -> Result<Option<HashMap<String, InferParameter>>, Error> {
        let Some((tensor, slice)) = self.find(output) else {
            return Ok(None);
        };
        slice.write(data, output)?;
        Ok(Some(tensor.parameters()))
    }

    fn find(&self, output: &str) -> Option<(&TensorRegion, &RegionSlice)> {
        self.outputs
            .iter()
            .find(|(name, ..)| name == output)
            .map(|(_, tensor, slice)| (tensor, slice))
    }
}

/// A registered region and its open object.
#[derive(Debug)]
struct Region {
    name: String,
    key: String,
    offset: u64,
    byte_size: usize,
    object: File,
}

impl Region {
    fn map(name: &str, key: &str, offset: u64, byte_size: u64) -> Result<Self, Error> {
        // Triton's text, then Ferry's detail.
        let fail = |why: String| {
            Error::invalid(format!(
                "failed to register shared memory region '{name}': invalid args; {why}"
            ))
        };
        if byte_size == 0 {
            return Err(fail("byte_size is 0; a region holds at least one byte".into()));
        }
        let object = open(name, key)?;
        let object_size = object
            .metadata()
            .map_err(|error| Error::Internal(format!("Invalid shared memory region: '{key}'; {error}")))?
            .len();
        let end = offset.checked_add(byte_size);
        if end.is_none_or(|end| end > object_size) {
            return Err(fail(format!(
                "offset {offset} + byte_size {byte_size} goes past the end of shared memory object '{key}', \
                 which holds {object_size} bytes"
            )));
        }
        let byte_size = usize::try_from(byte_size).map_err(|_| {
            fail(format!(
                "byte_size {byte_size} does not fit in this machine's memory"
            ))
        })?;
        Ok(Region {
            name: name.to_owned(),
            key: key.to_owned(),
            offset,
            byte_size,
            object,
        })
    }

    fn info(&self) -> RegionInfo {
        RegionInfo {
            name: self.name.clone(),
            key: self.key.clone(),
            offset: self.offset,
            byte_size: self.byte_size as u64,
        }
    }

    /// Where `len` bytes at `offset` of the region lie in the object, once checked against the region and
    /// against the object's size now: the client may have truncated it since it registered the region.
    fn locate(&self, offset: usize, len: usize) -> Result<u64, Error> {
        let end = offset.checked_add(len).filter(|end| *end <= self.byte_size);
        let Some(end) = end else {
            return Err(Error::invalid(format!(
                "{len} bytes at offset {offset} lie outside shared memory region '{}' of {} bytes",
                self.name, self.byte_size
            )));
        };
        let at = self.offset + offset as u64;
        let size = self.object.metadata().map(|m| m.len()).map_err(|error| {
            Error::invalid(format!(
                "cannot read the size of shared memory object '{}' of region '{}': {error}",
                self.key, self.name
            ))
        })?;
        if self.offset + end as u64 > size {
            return Err(Error::invalid(format!(
                "shared memory object '{}' of region '{}' holds {size} bytes now, fewer than the {} the region \
                 needs: it was truncated after the region was registered; register it again",
                self.key,
                self.name,
                self.offset + self.byte_size as u64
            )));
        }
        Ok(at)
    }

    /// Copies `len` bytes from `offset` of the region out of the object.
    fn copy_out(&self, offset: usize, len: usize) -> Result<Vec<u8>, Error> {
        let at = self.locate(offset, len)?;
        let mut out = vec![0u8; len];
        self.object.read_exact_at(&mut out, at).map_err(|error| {
            Error::invalid(format!(
                "cannot read {len} bytes of shared memory region '{}': {error}",
                self.name
            ))
        })?;
        Ok(out)
    }

    /// Copies `data` into the region at `offset`.
    fn copy_in(&self, offset: usize, data: &[u8]) -> Result<(), Error> {
        let at = self.locate(offset, data.len())?;
        self.object.write_all_at(data, at).map_err(|error| {
            Error::invalid(format!(
                "cannot write {} bytes to shared memory region '{}': {error}",
                data.len(),
                self.name
            ))
        })
    }
}

/// Opens the shared memory object `key` for reading and writing, as Triton does, with Triton's errors.
fn open(name: &str, key: &str) -> Result<File, Error> {
    let c_key = CString::new(key).map_err(|_| {
        Error::invalid(format!(
            "failed to register shared memory region '{name}': invalid args; key {key:?} contains a NUL byte"
        ))
    })?;
    // SAFETY: `c_key` is a NUL-terminated string that outlives the call; shm_open reads nothing else.
    let fd = unsafe { libc::shm_open(c_key.as_ptr(), libc::O_RDWR, 0) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return Err(Error::Internal(format!(
            "Unable to open shared memory region: '{key}'; {error}"
        )));
    }
    // SAFETY: shm_open just returned this descriptor; nothing else owns it, so the File may close it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use std::{io::Write, path::PathBuf};

    use super::*;

    /// A shared memory object for one test, removed when the test ends.
    struct Object {
        key: String,
        path: PathBuf,
    }

    impl Object {
        fn new(tag: &str, contents: &[u8]) -> Self {
            let key = format!("/ferry_unit_{tag}_{}", std::process::id());
            let path = PathBuf::from(format!("/dev/shm{key}"));
            let mut file = File::create(&path).expect("create /dev/shm object");
            file.write_all(contents).expect("fill");
            Object { key, path }
        }

        fn contents(&self) -> Vec<u8> {
            std::fs::read(&self.path).expect("read back")
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn tensor(region: &str, offset: usize, byte_size: usize) -> TensorRegion {
        TensorRegion {
            region: region.into(),
            offset,
            byte_size,
        }
    }

    #[test]
    fn regions_read_and_write_at_unaligned_offsets() {
        let bytes: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        let object = Object::new("rw", &bytes);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 4099, 5000).expect("register");
        let slice = registry.slice(&tensor("r", 1, 8)).expect("in bounds");
        assert_eq!(slice.to_bytes().expect("read").as_ref(), &bytes[4100..4108]);
        slice.write(&[9; 4], "y").expect("fits");
        assert_eq!(&object.contents()[4100..4104], &[9; 4]);
        let error = slice.write(&[0; 9], "y").expect_err("too big");
        // Triton's INTERNAL error (`ResponseAllocatorHelper` in grpc/infer_handler.cc).
        assert!(matches!(error, Error::Internal(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "shared memory size specified with the request for output 'y' (8 bytes) should be at least 9 \
             bytes to hold the results"
        );
    }

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

    #[test]
    fn slices_are_checked_against_their_region() {
        let object = Object::new("slice", &[0; 32]);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 0, 32).expect("r");
        // Triton's texts (`SharedMemoryManager::GetMemoryInfo`).
        let unknown = registry.slice(&tensor("q", 0, 4)).expect_err("unknown");
        assert_eq!(
            unknown,
            Error::NotFound("Unable to find shared memory region: 'q'".into())
        );
        for (offset, size, text) in [
            (
                30,
                4,
                "Invalid offset + byte size for shared memory region: 'r'; ",
            ),
            (usize::MAX, 2, "Invalid offset for shared memory region: 'r'; "),
            (32, 0, "Invalid offset for shared memory region: 'r'; "),
            (
                0,
                33,
                "Invalid offset + byte size for shared memory region: 'r'; ",
            ),
        ] {
            let message = registry
                .slice(&tensor("r", offset, size))
                .expect_err("out of bounds")
                .to_string();
            assert!(
                message.starts_with(text) && message.contains("holds 32 bytes"),
                "{message}"
            );
        }
        registry.slice(&tensor("r", 28, 4)).expect("last bytes");
    }

    /// A client that truncated its object under a registered region used to kill the server with SIGBUS.
    #[test]
    fn a_truncated_object_gives_an_error_not_a_fault() {
        let object = Object::new("truncated", &[5; 8192]);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 0, 8192).expect("r");
        let slice = registry.slice(&tensor("r", 4096, 4096)).expect("slice");
        File::options()
            .write(true)
            .open(&object.path)
            .and_then(|f| f.set_len(100))
            .expect("truncate");
        let read = slice.to_bytes().expect_err("truncated").to_string();
        assert!(read.contains("truncated") && read.contains("'r'"), "{read}");
        let write = slice.write(&[1; 8], "y").expect_err("truncated").to_string();
        assert!(write.contains("holds 100 bytes now"), "{write}");
        assert_eq!(
            object.contents().len(),
            100,
            "a refused write does not grow the object back"
        );
    }

    #[test]
    fn an_unregistered_region_stays_mapped_while_in_use() {
        let object = Object::new("inuse", &[7; 16]);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 0, 16).expect("r");
        let slice = registry.slice(&tensor("r", 0, 16)).expect("slice");
        registry.unregister("r");
        drop(object);
        assert_eq!(slice.to_bytes().expect("still open").as_ref(), &[7; 16]);
        slice.write(&[1; 16], "y").expect("still open");
        assert_eq!(slice.to_bytes().expect("still open").as_ref(), &[1; 16]);
    }

    #[test]
    fn parameters_are_parsed_like_triton() {
        let string = |s: &str| InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam(s.into())),
        };
        let int = |v: i64| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(v)),
        };
        let parse = |pairs: Vec<(&str, InferParameter)>| {
            let map: HashMap<String, InferParameter> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            TensorRegion::from_parameters(&map, "x")
        };
        assert_eq!(parse(vec![("other", int(1))]).expect("none"), None);
        let full = parse(vec![
            (REGION, string("r")),
            (OFFSET, int(8)),
            (BYTE_SIZE, int(64)),
        ])
        .expect("valid")
        .expect("some");
        assert_eq!(full, tensor("r", 8, 64));
        assert_eq!(full.parameters().len(), 3);
        assert_eq!(tensor("r", 0, 4).parameters().len(), 2, "offset 0 is not echoed");
        // Triton's texts (`ParseSharedMemoryParams` in grpc/grpc_utils.h).
        for (pairs, text) in [
            (
                vec![(REGION, string("r"))],
                "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter \
                 for tensor 'x'",
            ),
            (
                vec![(BYTE_SIZE, int(4))],
                "'shared_memory_byte_size' can not be specified without 'shared_memory_region' parameter \
                 for tensor 'x'",
            ),
            (
                vec![(OFFSET, int(4))],
                "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for \
                 tensor 'x'",
            ),
            (
                vec![(REGION, int(1)), (BYTE_SIZE, int(4))],
                "invalid value type for 'shared_memory_region' parameter for tensor 'x', expected \
                 string_param.",
            ),
            (
                vec![(REGION, string("r")), (BYTE_SIZE, string("4"))],
                "invalid value type for 'shared_memory_byte_size' parameter for tensor 'x', expected \
                 int64_param.",
            ),
        ] {
            assert_eq!(parse(pairs).expect_err(text).to_string(), text);
        }
        let negative = parse(vec![(REGION, string("r")), (BYTE_SIZE, int(-4))])
            .expect_err("negative")
            .to_string();
        assert!(negative.contains("expected a value >= 0"), "{negative}");
    }
}
