//! POSIX shared memory objects for tests, made as files in `/dev/shm` (what `shm_open` creates on Linux).

use std::path::PathBuf;

/// A POSIX shared memory object for one test, unlinked when dropped (the server never unlinks).
pub struct ShmObject {
    /// The key clients register it by (`/name`).
    pub key: String,
    path: PathBuf,
}

impl ShmObject {
    /// A zero-filled object of `byte_size` bytes whose key holds `tag` and the process id.
    pub fn new(tag: &str, byte_size: usize) -> Self {
        let key = format!("/ferry_e2e_{tag}_{}", std::process::id());
        let path = PathBuf::from(format!("/dev/shm{key}"));
        std::fs::write(&path, vec![0u8; byte_size]).expect("create the shared memory object");
        ShmObject { key, path }
    }

    /// Writes `bytes` at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        let mut contents = std::fs::read(&self.path).expect("read");
        contents[offset..offset + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&self.path, contents).expect("write");
    }

    /// `len` bytes from `offset`.
    pub fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        std::fs::read(&self.path).expect("read")[offset..offset + len].to_vec()
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
