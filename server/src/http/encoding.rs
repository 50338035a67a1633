//! Compressed inference requests and answers (`Content-Encoding`, `Accept-Encoding`), as Triton's
//! `HandleInfer` treats them (`src/http_server.cc`): only the infer endpoint reads and writes them.
//!
//! - A request body with `Content-Encoding: gzip` or `deflate` is inflated before it is parsed, bounded by
//!   the body limit (`--grpc-max-message-bytes`): a body that inflates past it is refused with 413 as soon
//!   as it does, whatever size it would reach. `Inference-Header-Content-Length` then counts in the inflated
//!   body, as in Triton. Data that does not inflate is 400; any other coding is 415 with
//!   `Accept-Encoding: gzip, deflate`, as in Triton.
//! - A successful answer is compressed with the coding `Accept-Encoding` prefers among gzip, deflate and
//!   identity (Triton's rule: the highest `q`, the first on a tie), and says so in `Content-Encoding`;
//!   `Inference-Header-Content-Length` still counts in the uncompressed answer, which is what tritonclient
//!   reads after inflating it. Errors are never compressed.
//!
//! Both run on the blocking pool: inflating or compressing a few hundred megabytes takes a second.

use std::{future::poll_fn, pin::Pin};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Body as _;

use super::HttpError;
use crate::{
    Error,
    compression::{self, Encoding, InflateError},
};

/// What Ferry reads, as Triton's 415 answer lists it.
const ACCEPTED: &str = "gzip, deflate";

/// The body of an inference request as the client meant it: inflated when `Content-Encoding` says it is
/// compressed, to at most `limit` bytes. A refusal is a whole answer, since a 415 carries a header of its own.
pub async fn decode_request(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Response> {
    inflate(headers, body, limit).await.map_err(refusal)
}

async fn inflate(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Error> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    let name = String::from_utf8_lossy(value.as_bytes());
    let name = name.trim();
    if name.is_empty() || name.eq_ignore_ascii_case("identity") {
        return Ok(body);
    }
    let Some(encoding) = Encoding::from_name(name) else {
        return Err(Error::UnsupportedEncoding(format!(
            "Content-Encoding '{name}' is not supported: send gzip, deflate or identity"
        )));
    };
    let compressed = body.len();
    let inflated = tokio::task::spawn_blocking(move || compression::inflate(&body, limit))
        .await
        .map_err(|error| Error::Internal(format!("inflating the request body failed: {error}")))?;
    inflated.map(Bytes::from).map_err(|error| match error {
        InflateError::TooLarge { limit } => Error::BodyTooLarge(format!(
            "the request body inflates to more than the server's limit of {limit} bytes \
             (--grpc-max-message-bytes); it is {compressed} bytes compressed ({})",
            encoding.name()
        )),
        InflateError::Corrupt { .. } => Error::invalid(format!(
            "cannot inflate the request body (Content-Encoding: {}): {error}",
            encoding.name()
        )),
    })
}

/// The answer to a body that cannot be read: the error's, and for a coding Ferry does not read, the
/// `Accept-Encoding` header that lists those it does, as Triton's 415 answer has.
fn refusal(error: Error) -> Response {
    let unsupported = matches!(error, Error::UnsupportedEncoding(_));
    let mut response = HttpError::from(error).into_response();
    if unsupported {
        response
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED));
    }
    response
}

/// The coding of the answer, from the request's `Accept-Encoding` as Triton reads it
/// (`CompressionTypeUsed`): of gzip, deflate and identity, the one with the highest `q` (1 when not
/// given), the first on a tie; nothing listed, or only `q=0`, means identity. Other codings and `*` are
/// not considered.
pub fn response_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let value = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    let mut best: (Option<Encoding>, f64) = (None, 0.0);
    'codings: for item in value.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let mut weight = 1.0;
        for parameter in parts {
            let parameter = parameter.trim();
            if let Some(q) = parameter
                .strip_prefix("q=")
                .or_else(|| parameter.strip_prefix("Q="))
            {
                match q.trim().parse::<f64>() {
                    Ok(q) => weight = q,
                    Err(_) => continue 'codings,
                }
            }
        }
        let coding = if name.eq_ignore_ascii_case("identity") {
            None
        } else if let Some(encoding) = Encoding::from_name(name) {
            Some(encoding)
        } else {
            continue;
        };
        if weight > best.1 {
            best = (coding, weight);
        }
    }
    best.0
}

/// `response`, compressed with `encoding` when it is a success and an encoding was asked for.
pub async fn encode_response(response: Response, encoding: Option<Encoding>) -> Response {
    let Some(encoding) = encoding.filter(|_| response.status() == StatusCode::OK) else {
        return response;
    };
    let (mut parts, mut body) = response.into_parts();
    let mut chunks = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => chunks.extend(frame.into_data().ok()),
            Err(error) => {
                return HttpError::from(Error::Internal(format!(
                    "cannot read the answer to compress it: {error}"
                )))
                .into_response();
            }
        }
    }
    let compressed =
        match tokio::task::spawn_blocking(move || compression::compress_chunks(encoding, &chunks)).await {
            Ok(compressed) => compressed,
            Err(error) => {
                return HttpError::from(Error::Internal(format!("compressing the answer failed: {error}")))
                    .into_response();
            }
        };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.name()),
    );
    Response::from_parts(parts, Body::from(compressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> Option<Encoding> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        response_encoding(&headers)
    }

    /// Triton's `CompressionTypeUsed` (src/http_server.cc): highest q wins, the first on a tie, identity
    /// otherwise.
    #[test]
    fn accept_encoding_is_read_as_triton_reads_it() {
        assert_eq!(response_encoding(&HeaderMap::new()), None);
        assert_eq!(accept("gzip"), Some(Encoding::Gzip));
        assert_eq!(accept("deflate"), Some(Encoding::Deflate));
        assert_eq!(accept("gzip, deflate"), Some(Encoding::Gzip));
        assert_eq!(accept("deflate,gzip"), Some(Encoding::Deflate));
        assert_eq!(accept("gzip;q=0.5, deflate;q=0.8"), Some(Encoding::Deflate));
        assert_eq!(accept("identity, gzip"), None);
        assert_eq!(accept("br, gzip;q=0.1"), Some(Encoding::Gzip));
        assert_eq!(accept("gzip;q=0"), None);
        assert_eq!(accept("gzip;q=x, deflate;q=0.2"), Some(Encoding::Deflate));
        assert_eq!(accept("*"), None);
        assert_eq!(accept("br"), None);
    }

    fn encoded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
        headers
    }

    #[tokio::test]
    async fn request_bodies_are_inflated_within_the_limit() {
        let body = Bytes::from_static(b"{\"inputs\": []}");
        for (value, packed) in [
            ("gzip", compression::compress(Encoding::Gzip, &body)),
            ("deflate", compression::compress(Encoding::Deflate, &body)),
            ("GZIP", compression::compress(Encoding::Gzip, &body)),
        ] {
            let inflated = decode_request(&encoded(value), Bytes::from(packed.clone()), 1024)
                .await
                .expect(value);
            assert_eq!(inflated, body, "{value}");
            let refusal = decode_request(&encoded(value), Bytes::from(packed), 10)
                .await
                .expect_err("too large");
            assert_eq!(refusal.status(), StatusCode::PAYLOAD_TOO_LARGE, "{value}");
        }
        for value in ["identity", ""] {
            let same = decode_request(&encoded(value), body.clone(), 1)
                .await
                .expect(value);
            assert_eq!(same, body);
        }
        let refusal = decode_request(&encoded("gzip"), body.clone(), 1024)
            .await
            .expect_err("corrupt");
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
        let refusal = decode_request(&encoded("br"), body, 1024).await.expect_err("br");
        assert_eq!(refusal.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(refusal.headers()[header::ACCEPT_ENCODING], "gzip, deflate");
    }

    #[tokio::test]
    async fn only_successful_answers_are_compressed() {
        let answer = (StatusCode::OK, "{\"outputs\": []}").into_response();
        let compressed = encode_response(answer, Some(Encoding::Deflate)).await;
        assert_eq!(compressed.headers()[header::CONTENT_ENCODING], "deflate");
        let body = axum::body::to_bytes(compressed.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(
            compression::inflate(&body, 1024).expect("zlib"),
            b"{\"outputs\": []}"
        );
        let error = HttpError::from(Error::invalid("no")).into_response();
        let error = encode_response(error, Some(Encoding::Gzip)).await;
        assert!(!error.headers().contains_key(header::CONTENT_ENCODING));
    }
}
