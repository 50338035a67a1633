//! BYTES elements in raw form: each a 4-byte little-endian length followed by that many bytes, split into
//! slices of the received buffer without copying.

use bytes::Bytes;

use super::Context;
use crate::Error;

/// How length-prefixed BYTES contents fail to hold the elements their shape says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// Fewer than 4 bytes are left where element `element`'s length prefix starts.
    TruncatedPrefix {
        /// The element's position.
        element: usize,
        /// The bytes left.
        available: usize,
    },
    /// Element `element` claims more bytes than remain.
    Overrun {
        /// The element's position.
        element: usize,
        /// The length its prefix claims.
        claimed: usize,
        /// The bytes left after the prefix.
        available: usize,
    },
    /// More elements than the `expected` ones of the shape.
    TooMany {
        /// The elements the shape holds.
        expected: usize,
    },
    /// Fewer elements (`count`) than the `expected` ones of the shape.
    TooFew {
        /// The elements found.
        count: usize,
        /// The elements the shape holds.
        expected: usize,
    },
}

impl SplitError {
    /// The error for input `name`, with Triton's texts (`ValidateBytesInputs`) where Triton has one; an
    /// element longer than the bytes left has none, so it keeps Ferry's description.
    pub(super) fn triton_error(self, name: &str, at: &Context) -> Error {
        let (tag, model) = (&at.tag, at.model);
        Error::invalid(match self {
            SplitError::TruncatedPrefix { available, .. } => format!(
                "{tag}incomplete string length indicator for inference input '{name}' for model '{model}', \
                 expecting 4 bytes but only {available} bytes available. Please make sure the string length \
                 indicator is in one buffer."
            ),
            SplitError::TooMany { expected } => format!(
                "{tag}unexpected number of string elements {} for inference input '{name}' for model \
                 '{model}', expecting {expected}",
                expected + 1
            ),
            SplitError::TooFew { count, expected } => format!(
                "{tag}expected {expected} string elements for inference input '{name}' for model '{model}', \
                 got {count}"
            ),
            SplitError::Overrun { .. } => self.describe(name),
        })
    }

    /// A plain description naming the input.
    fn describe(self, name: &str) -> String {
        match self {
            SplitError::TruncatedPrefix { element, available } => format!(
                "input '{name}' BYTES element {element} has a truncated 4-byte length prefix ({available} bytes \
                 left)"
            ),
            SplitError::Overrun {
                element,
                claimed,
                available,
            } => format!(
                "input '{name}' BYTES element {element} claims {claimed} bytes but only {available} remain"
            ),
            SplitError::TooMany { expected } => format!(
                "input '{name}' raw contents hold more than the {expected} BYTES elements its shape holds"
            ),
            SplitError::TooFew { count, expected } => format!(
                "input '{name}' raw contents hold {count} BYTES elements but its shape holds {expected}"
            ),
        }
    }
}

/// Splits raw BYTES contents: each element is a 4-byte little-endian length followed by that many bytes.
pub fn split_length_prefixed(bytes: Bytes, name: &str, elements: usize) -> Result<Vec<Bytes>, Error> {
    split_elements(bytes, elements).map_err(|error| Error::invalid(error.describe(name)))
}

/// [`split_length_prefixed`] with a typed error, checked in Triton's order: each prefix, then the count,
/// then the element's bytes.
pub(super) fn split_elements(bytes: Bytes, elements: usize) -> Result<Vec<Bytes>, SplitError> {
    let mut items = Vec::with_capacity(elements.min(bytes.len() / 4));
    let mut at = 0usize;
    while at < bytes.len() {
        let element = items.len();
        let Some(prefix) = bytes.get(at..at + 4) else {
            return Err(SplitError::TruncatedPrefix {
                element,
                available: bytes.len() - at,
            });
        };
        if element == elements {
            return Err(SplitError::TooMany { expected: elements });
        }
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= bytes.len())
            .ok_or(SplitError::Overrun {
                element,
                claimed: len,
                available: bytes.len() - start,
            })?;
        items.push(bytes.slice(start..end));
        at = end;
    }
    if items.len() != elements {
        return Err(SplitError::TooFew {
            count: items.len(),
            expected: elements,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::{InferTensorContents, ModelInferRequest};

    use super::*;
    use crate::{
        DataType,
        request::{
            InferRequest, TensorData,
            tests::{message, raw_request, spec, tensor, wire},
        },
    };

    #[test]
    fn bytes_elements_are_split_without_copying() {
        let spec = spec(0, vec![tensor("x", DataType::Bytes, &[-1])]);
        let raw = Bytes::from(vec![2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
        let request = ModelInferRequest {
            inputs: vec![wire("x", DataType::Bytes, &[2], None)],
            raw_input_contents: vec![raw.clone()],
            ..Default::default()
        };
        let parsed = InferRequest::parse(request, &spec).expect("valid");
        let TensorData::Strings(items) = &parsed.inputs[0].data else {
            panic!("BYTES must parse to strings");
        };
        assert_eq!(items, &[Bytes::from_static(b"hi"), Bytes::new()]);
        assert_eq!(
            items[0].as_ptr(),
            raw[4..].as_ptr(),
            "the element is a slice of the received bytes"
        );
    }

    #[test]
    fn bytes_prefixes_that_lie_are_rejected() {
        for (raw, needle) in [
            (vec![9, 0, 0, 0, b'a'], "claims 9 bytes"),
            (vec![1, 0, 0], "truncated"),
            (vec![1, 0, 0, 0, b'a', 1, 0, 0, 0, b'b'], "more than the 1"),
            (vec![], "hold 0 BYTES elements"),
        ] {
            let elements = 1;
            let error = split_length_prefixed(Bytes::from(raw), "x", elements).expect_err(needle);
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }

    /// BYTES elements are counted as Triton's `ValidateBytesInputs` counts them.
    #[test]
    fn bytes_messages_are_tritons() {
        let spec = spec(0, vec![tensor("s", DataType::Bytes, &[2])]);
        let parse = |raw: Vec<u8>| {
            message(InferRequest::parse(
                raw_request(vec![wire("s", DataType::Bytes, &[2], None)], vec![raw]),
                &spec,
            ))
        };
        assert_eq!(
            parse(vec![1, 0, 0, 0, b'a']),
            "[request id: id-7] expected 2 string elements for inference input 's' for model 'm', got 1"
        );
        assert_eq!(
            parse(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "[request id: id-7] unexpected number of string elements 3 for inference input 's' for model 'm', \
             expecting 2"
        );
        assert_eq!(
            parse(vec![0, 0, 0, 0, 1, 0]),
            "[request id: id-7] incomplete string length indicator for inference input 's' for model 'm', \
             expecting 4 bytes but only 2 bytes available. Please make sure the string length indicator is in \
             one buffer."
        );
        let typed = InferTensorContents {
            bytes_contents: vec![Bytes::new(); 3],
            ..Default::default()
        };
        assert_eq!(
            message(InferRequest::parse(
                raw_request(vec![wire("s", DataType::Bytes, &[2], Some(typed))], vec![]),
                &spec,
            )),
            "[request id: id-7] unexpected number of string elements 3 for inference input 's' for model 'm', \
             expecting 2"
        );
    }
}
