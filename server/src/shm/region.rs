//! A registered region's shared memory object, and the bounds-checked slices of it that requests read and
//! write: the only code of the shared memory modules that may use `unsafe`.
//!
//! # Safety invariants
//!
//! - The only `unsafe` code opens the object ([`open_object`]): `shm_open` gets a NUL-terminated
//!   name that outlives the call, and the descriptor it returns is owned by exactly one [`File`] from then
//!   on, which closes it when the last [`Region`] holding it is dropped.
//! - The object is memory another process writes and may shrink at any time, so it is never mapped into
//!   Ferry's memory and no Rust reference ever points into it. Bytes move with `pread`/`pwrite` on the
//!   descriptor, into and out of buffers Ferry owns: a concurrent writer can tear a tensor, and a truncated
//!   object can fail a request, but neither can fault the server (a mapping would raise SIGBUS there).
//! - A [`RegionSlice`] is only made by [`RegionSlice::new`], which checks it against its region, and every
//!   read or write checks again against the region and the object's current size before any I/O
//!   ([`Region::locate`]). Safe callers cannot name bytes outside a region.
//! - A slice holds its region by [`Arc`]: unregistering removes the name at once, but the object stays open
//!   until the last request using it ends.

use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::FileExt,
    },
    sync::Arc,
};

use super::{BYTE_SIZE, OFFSET};
use crate::Error;

/// A registered region and its open object.
#[derive(Debug)]
pub(super) struct Region {
    name: String,
    key: String,
    offset: u64,
    byte_size: usize,
    object: File,
}

impl Region {
    /// Opens the POSIX shared memory object `key` and checks that `byte_size` bytes from `offset` on lie in
    /// it, for region `name`. Errors are Triton's (`SharedMemoryManager::RegisterSystemSharedMemory`), with
    /// Ferry's detail after `"; "`: an object that cannot be opened is `INTERNAL`, a region past the end of
    /// the object `INVALID_ARGUMENT`.
    pub(super) fn open(name: &str, key: &str, offset: u64, byte_size: u64) -> Result<Self, Error> {
        // Triton's text, then Ferry's detail.
        let fail = |why: String| {
            Error::invalid(format!(
                "failed to register shared memory region '{name}': invalid args; {why}"
            ))
        };
        if byte_size == 0 {
            return Err(fail("byte_size is 0; a region holds at least one byte".into()));
        }
        let object = open_object(name, key)?;
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

    /// The region's name, as requests refer to it.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The shared memory object, as `shm_open` names it.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Where the region starts in the object, in bytes.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// The region's size in bytes.
    pub(super) fn byte_size(&self) -> usize {
        self.byte_size
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
fn open_object(name: &str, key: &str) -> Result<File, Error> {
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

/// Bytes of a registered region that one tensor reads or writes, already checked to lie in the region.
/// Holding it keeps the object open, even if the region is unregistered meanwhile.
#[derive(Debug, Clone)]
pub struct RegionSlice {
    region: Arc<Region>,
    offset: usize,
    byte_size: usize,
}

impl RegionSlice {
    /// The `byte_size` bytes at `offset` of `region`, checked against it with Triton's errors
    /// (`SharedMemoryManager::GetMemoryInfo`).
    pub(super) fn new(region: Arc<Region>, offset: usize, byte_size: usize) -> Result<Self, Error> {
        let holds = region.byte_size;
        if offset >= holds {
            return Err(Error::invalid(format!(
                "Invalid offset for shared memory region: '{}'; {OFFSET} {offset}, the region holds {holds} bytes",
                region.name
            )));
        }
        if offset.checked_add(byte_size).is_none_or(|end| end > holds) {
            return Err(Error::invalid(format!(
                "Invalid offset + byte size for shared memory region: '{}'; {OFFSET} {offset} + {BYTE_SIZE} \
                 {byte_size}, the region holds {holds} bytes",
                region.name
            )));
        }
        Ok(RegionSlice {
            region,
            offset,
            byte_size,
        })
    }

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

    /// Copies `data` to the start of the slice; more bytes than the slice holds are refused, whatever the
    /// region holds after it.
    pub(super) fn copy_in(&self, data: &[u8]) -> Result<(), Error> {
        if data.len() > self.byte_size {
            return Err(Error::invalid(format!(
                "{} bytes do not fit in the {} bytes at offset {} of shared memory region '{}'",
                data.len(),
                self.byte_size,
                self.offset,
                self.region.name
            )));
        }
        self.region.copy_in(self.offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::{
        SharedMemoryRegistry,
        testing::{Object, tensor},
    };

    #[test]
    fn regions_read_and_write_at_unaligned_offsets() {
        let bytes: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        let object = Object::new("rw", &bytes);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 4099, 5000).expect("register");
        let slice = registry.slice(&tensor("r", 1, 8)).expect("in bounds");
        assert_eq!(slice.to_bytes().expect("read").as_ref(), &bytes[4100..4108]);
        slice.copy_in(&[9; 4]).expect("fits");
        assert_eq!(&object.contents()[4100..4104], &[9; 4]);
        let error = slice.copy_in(&[0; 9]).expect_err("too big");
        assert!(error.to_string().contains("9 bytes do not fit"), "{error}");
        assert_eq!(
            &object.contents()[4104..4110],
            &bytes[4104..4110],
            "a refused write changes nothing"
        );
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
        let write = slice.copy_in(&[1; 8]).expect_err("truncated").to_string();
        assert!(write.contains("holds 100 bytes now"), "{write}");
        assert_eq!(
            object.contents().len(),
            100,
            "a refused write does not grow the object back"
        );
    }

    #[test]
    fn an_unregistered_region_stays_open_while_in_use() {
        let object = Object::new("inuse", &[7; 16]);
        let registry = SharedMemoryRegistry::default();
        registry.register("r", &object.key, 0, 16).expect("r");
        let slice = registry.slice(&tensor("r", 0, 16)).expect("slice");
        registry.unregister("r");
        drop(object);
        assert_eq!(slice.to_bytes().expect("still open").as_ref(), &[7; 16]);
        slice.copy_in(&[1; 16]).expect("still open");
        assert_eq!(slice.to_bytes().expect("still open").as_ref(), &[1; 16]);
    }
}
