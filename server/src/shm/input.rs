//! Inputs in shared memory: their bytes are copied out of the region once, while the request is parsed, so
//! that the request owns them and the client may reuse the region as soon as it has the response.

use bytes::Bytes;

use super::{SharedMemoryRegistry, TensorRegion};
use crate::Error;

impl SharedMemoryRegistry {
    /// The bytes of the input that `tensor` points at, copied out of its region. The region and the bounds
    /// are checked first, with Triton's errors, then `check_size` sees the input's size in bytes, so that a
    /// request refused for its size costs no copy.
    pub fn read_input(
        &self,
        tensor: &TensorRegion,
        check_size: impl FnOnce(usize) -> Result<(), Error>,
    ) -> Result<Bytes, Error> {
        let slice = self.slice(tensor)?;
        check_size(slice.byte_size())?;
        slice.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::testing::{Object, tensor};

    #[test]
    fn inputs_are_checked_before_they_are_copied() {
        let object = Object::new("input", &[1, 2, 3, 4, 5, 6, 7, 8]);
        let registry = SharedMemoryRegistry::default();
        registry.register("i", &object.key, 2, 6).expect("register");
        let exact = |expected: usize| {
            move |given: usize| {
                if given == expected {
                    Ok(())
                } else {
                    Err(Error::invalid(format!("expected {expected}, got {given}")))
                }
            }
        };
        let bytes = registry.read_input(&tensor("i", 1, 4), exact(4)).expect("read");
        assert_eq!(bytes.as_ref(), &[4, 5, 6, 7]);
        let size = registry
            .read_input(&tensor("i", 1, 4), exact(3))
            .expect_err("size");
        assert_eq!(size.to_string(), "expected 3, got 4");
        // The bounds come first: the size check never sees a slice outside the region.
        let bounds = registry
            .read_input(&tensor("i", 4, 4), |_| {
                panic!("the size check runs after the bounds")
            })
            .expect_err("bounds");
        assert!(
            bounds.to_string().starts_with("Invalid offset + byte size"),
            "{bounds}"
        );
        let unknown = registry
            .read_input(&tensor("j", 0, 4), |_| {
                panic!("the size check runs after the lookup")
            })
            .expect_err("unknown");
        assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");
    }
}
