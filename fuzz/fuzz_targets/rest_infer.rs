//! A REST inference request body: JSON alone, or a JSON header followed by binary tensors with
//! `Inference-Header-Content-Length`. The first byte chooses the headers: bit 0 sends the length header,
//! taken from the first line after that byte when bit 1 is set and from the next two bytes (little-endian)
//! otherwise; bit 2 sends the body gzip-compressed, which must inflate back to the same bytes before it is
//! parsed, as the REST front end inflates it. A body that translates is validated against the fuzz models,
//! and its inputs are sent back as a response's outputs, which must encode as the REST answer.

#![no_main]

use bytes::Bytes;
use ferry_fuzz::{check_parsed, specs};
use ferry_proto::inference::{ModelInferResponse, model_infer_response::InferOutputTensor};
use ferry_server::{
    compression,
    http::{
        binary::HEADER_LENGTH,
        infer::{build_response, parse_request},
    },
    request::InferRequest,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    if mode & 1 != 0 {
        let value = if mode & 2 != 0 {
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let value = HeaderValue::from_bytes(&rest[..end]).ok();
            rest = rest.get(end + 1..).unwrap_or_default();
            value
        } else {
            let Some((length, body)) = rest.split_first_chunk::<2>() else {
                return;
            };
            rest = body;
            Some(HeaderValue::from(u16::from_le_bytes(*length)))
        };
        if let Some(value) = value {
            headers.insert(HEADER_LENGTH, value);
        }
    }
    let body = if mode & 4 != 0 {
        let packed = compression::compress(compression::Encoding::Gzip, rest);
        let inflated = compression::inflate(&packed, rest.len()).expect("a gzip body inflates back");
        assert_eq!(inflated, rest, "a gzip body inflates to what was compressed");
        Bytes::from(inflated)
    } else {
        Bytes::copy_from_slice(rest)
    };
    let Ok(rest_request) = parse_request("batched", "", &headers, body) else {
        return;
    };
    for spec in specs() {
        if let Ok(parsed) = InferRequest::parse(rest_request.request.clone(), spec) {
            check_parsed(&parsed, spec);
        }
    }
    let request = rest_request.request;
    let response = ModelInferResponse {
        model_name: request.model_name,
        model_version: request.model_version,
        id: request.id,
        parameters: request.parameters,
        outputs: request
            .inputs
            .into_iter()
            .map(|input| InferOutputTensor {
                name: input.name,
                datatype: input.datatype,
                shape: input.shape,
                parameters: input.parameters,
                contents: None,
            })
            .collect(),
        raw_output_contents: request.raw_input_contents,
    };
    let Ok(reply) = build_response(&response, &rest_request.outputs) else {
        return;
    };
    assert_eq!(reply.status(), StatusCode::OK);
    let json_length = reply.headers().get(HEADER_LENGTH).map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .expect("a byte count")
    });
    let body = futures::executor::block_on(reply.into_body().collect())
        .expect("the body is in memory")
        .to_bytes();
    let json = body
        .get(..json_length.unwrap_or(body.len()))
        .expect("Inference-Header-Content-Length within the body");
    if let Err(error) = serde_json::from_slice::<serde_json::Value>(json) {
        panic!(
            "the response header is not JSON ({error}): {}",
            String::from_utf8_lossy(json)
        );
    }
});
