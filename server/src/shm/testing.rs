//! Shared memory objects for unit tests, here and in the request parser's tests.

use std::{fs::File, io::Write, path::PathBuf};

use super::TensorRegion;

/// A shared memory object for one test, removed when the test ends. Tags must differ between tests, which
/// run at once in one process.
pub(crate) struct Object {
    /// The object's name, as Register takes it.
    pub(crate) key: String,
    /// Where Linux shows it.
    pub(crate) path: PathBuf,
}

impl Object {
    /// An object holding `contents`, named after `tag`.
    pub(crate) fn new(tag: &str, contents: &[u8]) -> Self {
        let key = format!("/ferry_unit_{tag}_{}", std::process::id());
        let path = PathBuf::from(format!("/dev/shm{key}"));
        let mut file = File::create(&path).expect("create /dev/shm object");
        file.write_all(contents).expect("fill");
        Object { key, path }
    }

    /// What the object holds now.
    pub(crate) fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read back")
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The tensor parameters pointing at `byte_size` bytes at `offset` of `region`.
pub(crate) fn tensor(region: &str, offset: usize, byte_size: usize) -> TensorRegion {
    TensorRegion {
        region: region.into(),
        offset,
        byte_size,
    }
}
