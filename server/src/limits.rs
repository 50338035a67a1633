//! Message-size limits as gRPC clients expect them.
//!
//! tonic refuses a message above the configured size with `OUT_OF_RANGE`; gRPC's reference implementations,
//! and so Triton and its clients, use `RESOURCE_EXHAUSTED` for that. Ferry's own handlers never answer
//! `OUT_OF_RANGE`, so this layer rewrites that status on the way out, and nothing else.

use http::{HeaderValue, Response};
use tonic::Code;

/// The gRPC status header of a trailers-only response, where tonic puts errors raised before a handler runs.
const GRPC_STATUS: &str = "grpc-status";

/// Rewrites an `OUT_OF_RANGE` status to `RESOURCE_EXHAUSTED`, leaving every other response untouched.
pub fn resource_exhausted_for_oversized<B>(mut response: Response<B>) -> Response<B> {
    let out_of_range = HeaderValue::from(Code::OutOfRange as i32);
    if response.headers().get(GRPC_STATUS) == Some(&out_of_range) {
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(Code::ResourceExhausted as i32));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(code: Code) -> Response<()> {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from(code as i32));
        response
    }

    #[test]
    fn only_out_of_range_is_rewritten() {
        let rewritten = resource_exhausted_for_oversized(with_status(Code::OutOfRange));
        assert_eq!(rewritten.headers()[GRPC_STATUS], "8");
        let kept = resource_exhausted_for_oversized(with_status(Code::InvalidArgument));
        assert_eq!(kept.headers()[GRPC_STATUS], "3");
        let ok = resource_exhausted_for_oversized(Response::new(()));
        assert!(ok.headers().get(GRPC_STATUS).is_none());
    }
}
