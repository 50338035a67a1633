//! Triton's binary tensor data extension: a request or response body is a JSON header followed by raw tensor
//! blobs, and the `Inference-Header-Content-Length` header says where the JSON ends.
//!
//! Every size a client sends is checked before it is used: the header must be a plain decimal no larger than
//! the body, each `binary_data_size` must fit in what is left, and the sizes must account for every byte.
//! Blobs are `Bytes` slices of the received body, never copies.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::Error;

/// The header that gives the length of the JSON part of a body holding binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Reads `Inference-Header-Content-Length`: `None` when the request does not send it (the whole body is
/// JSON), otherwise the JSON length, checked to be a decimal byte count within the `body_len` received.
pub fn header_length(headers: &HeaderMap, body_len: usize) -> Result<Option<usize>, Error> {
    let mut values = headers.get_all(HEADER_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::invalid(
            "Inference-Header-Content-Length is given more than once",
        ));
    }
    let text = value.to_str().map_err(|_| {
        Error::invalid("Inference-Header-Content-Length must be a decimal byte count, got non-ASCII bytes")
    })?;
    let digits = text.trim_matches([' ', '\t']);
    // Triton's text for a length outside the body (`GetInferenceHeaderLength` in its `http_server.cc`).
    let out_of_range = |detail: String| {
        Error::invalid(format!(
            "inference header size should be in range (0, {body_len}), got: {text}; {detail}"
        ))
    };
    if let Some(magnitude) = digits.strip_prefix('-')
        && !magnitude.is_empty()
        && magnitude.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(out_of_range(
            "Inference-Header-Content-Length must not be negative".to_owned(),
        ));
    }
    // Triton reads the value with `atoi`, so that text which is no number reads as 0 (a raw binary
    // request); Ferry refuses it with its own message instead.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(format!(
            "Inference-Header-Content-Length must be a decimal byte count, got '{text}'"
        )));
    }
    // Only digits remain, so the one way to fail is a number too large for usize: larger than any body.
    let length: usize = digits.parse().unwrap_or(usize::MAX);
    if length > body_len {
        return Err(out_of_range(format!(
            "Inference-Header-Content-Length is {digits} but the request body holds only {body_len} bytes"
        )));
    }
    Ok(Some(length))
}

/// The binary part of a request body, handed out input by input in the order the JSON lists them. Without
/// `Inference-Header-Content-Length` the whole body is JSON and the binary part is empty, as in Triton.
#[derive(Debug)]
pub struct BinaryTail<'a> {
    data: Bytes,
    offset: usize,
    /// The model, which Triton's messages name.
    model: &'a str,
}

impl<'a> BinaryTail<'a> {
    /// The bytes after the JSON header of a request to `model`.
    pub fn new(data: Bytes, model: &'a str) -> Self {
        BinaryTail {
            data,
            offset: 0,
            model,
        }
    }

    /// The next `size` bytes, for `input`'s `binary_data_size`, as a slice of the body. Triton's text when
    /// they run out (`ParseJsonTritonIO` in its `http_server.cc`), then Ferry's detail.
    pub fn take(&mut self, input: &str, size: u64) -> Result<Bytes, Error> {
        let remaining = self.data.len() - self.offset;
        let size = match usize::try_from(size) {
            Ok(size) if size <= remaining => size,
            _ => {
                return Err(Error::invalid(format!(
                    "unexpected size for input '{input}', expecting {} additional bytes for model '{}'; \
                     binary_data_size {size} but only {remaining} bytes of binary data remain in the request body",
                    size - remaining as u64,
                    self.model
                )));
            }
        };
        let blob = self.data.slice(self.offset..self.offset + size);
        self.offset += size;
        Ok(blob)
    }

    /// Checks that the inputs' `binary_data_size` values accounted for every byte after the JSON header.
    pub fn finish(self) -> Result<(), Error> {
        if self.offset != self.data.len() {
            return Err(Error::invalid(format!(
                "unexpected additional input data for model '{}'; the request body has {} bytes of binary data \
                 after the JSON header but the inputs' binary_data_size values add up to {}",
                self.model,
                self.data.len(),
                self.offset
            )));
        }
        Ok(())
    }
}

/// A response body made of the JSON header and the output blobs, sent without copying them together.
/// Its exact length is known up front, so the response carries `Content-Length`.
#[derive(Debug)]
pub struct ChunkedBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl ChunkedBody {
    /// A body of `chunks`, in order.
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        ChunkedBody { chunks, remaining }
    }
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(next.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body::Body;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(HEADER_LENGTH, HeaderValue::from_str(value).expect("valid header"));
        }
        headers
    }

    fn message(result: Result<Option<usize>, Error>) -> String {
        result.expect_err("must be refused").to_string()
    }

    /// Triton's `GetInferenceHeaderLength`: a length below 0 or past the body gets its range message.
    #[test]
    fn header_length_is_strict() {
        assert_eq!(header_length(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(header_length(&headers(&["7"]), 10), Ok(Some(7)));
        assert_eq!(header_length(&headers(&[" 10 "]), 10), Ok(Some(10)));
        assert_eq!(header_length(&headers(&["0"]), 0), Ok(Some(0)));
        let negative = message(header_length(&headers(&["-1"]), 10));
        assert!(
            negative.starts_with("inference header size should be in range (0, 10), got: -1; ")
                && negative.contains("negative"),
            "{negative}"
        );
        for bad in ["abc", "", "+5", "5x", "1.5", "0x10", "- 1"] {
            let text = message(header_length(&headers(&[bad]), 10));
            assert!(text.contains("decimal byte count"), "{bad}: {text}");
        }
        let past = message(header_length(&headers(&["11"]), 10));
        assert!(
            past.starts_with("inference header size should be in range (0, 10), got: 11; ")
                && past.contains("only 10 bytes"),
            "{past}"
        );
        let huge = "99999999999999999999999999999";
        assert!(message(header_length(&headers(&[huge]), 10)).contains("only 10 bytes"));
        assert!(message(header_length(&headers(&["1", "2"]), 10)).contains("more than once"));
    }

    /// Triton's `ParseJsonTritonIO`: too few bytes name the input, the missing count and the model; bytes
    /// left over name the model.
    #[test]
    fn the_tail_is_sliced_without_copies_and_must_be_used_up() {
        let body = Bytes::from_static(b"abcdef");
        let mut tail = BinaryTail::new(body.clone(), "m");
        let first = tail.take("a", 2).expect("fits");
        assert_eq!(first, "ab");
        assert_eq!(first.as_ptr(), body.as_ptr());
        let error = tail.take("b", 5).expect_err("overruns");
        assert!(
            error
                .to_string()
                .starts_with("unexpected size for input 'b', expecting 1 additional bytes for model 'm'; ")
                && error.to_string().contains("4 bytes"),
            "{error}"
        );
        assert!(tail.take("b", u64::MAX).is_err());
        tail.take("b", 3).expect("fits");
        let error = tail.finish().expect_err("one byte left");
        assert!(
            error
                .to_string()
                .starts_with("unexpected additional input data for model 'm'; ")
                && error.to_string().contains("add up to 5"),
            "{error}"
        );

        let mut empty = BinaryTail::new(Bytes::new(), "m");
        assert_eq!(
            empty.take("x", 0),
            Ok(Bytes::new()),
            "an empty tensor needs no bytes"
        );
        let error = empty.take("x", 4).expect_err("no binary part");
        assert!(
            error.to_string().contains("expecting 4 additional bytes"),
            "{error}"
        );
    }

    #[test]
    fn the_response_body_knows_its_length() {
        let body = ChunkedBody::new([
            Bytes::from_static(b"{}"),
            Bytes::new(),
            Bytes::from_static(b"xyz"),
        ]);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
    }
}
