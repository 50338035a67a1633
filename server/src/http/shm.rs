//! Triton's REST shared memory API (`docs/protocol/extension_shared_memory.md`, `HandleSystemSharedMemory`
//! and `HandleCudaSharedMemory` in its `http_server.cc`): status, register and unregister of system and CUDA
//! regions. Each handler reads the path and body into the protobuf request of the matching RPC and calls
//! the shared [`InferenceService`](crate::core::InferenceService), so both protocols see one registry and
//! refuse alike.
//!
//! Status is a GET that answers a JSON array of regions; register and unregister are POSTs that answer 200
//! with an empty body. A path without `region/<name>` means every region (status, unregister); register
//! needs a name.

use axum::{
    Router,
    extract::rejection::BytesRejection,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use ferry_proto::inference as pb;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{
    HttpError,
    error::json_response,
    json::parse_json,
    routes::{Caller, Names, Shared, body},
    tensor::kind,
};
use crate::Error;

/// Adds the shared memory paths, with and without `region/<name>`, to `router`.
pub(super) fn routes(mut router: Router<Shared>) -> Router<Shared> {
    for base in ["/v2/systemsharedmemory", "/v2/systemsharedmemory/region/{region}"] {
        router = router
            .route(&format!("{base}/status"), get(system_status))
            .route(&format!("{base}/register"), post(system_register))
            .route(&format!("{base}/unregister"), post(system_unregister));
    }
    for base in ["/v2/cudasharedmemory", "/v2/cudasharedmemory/region/{region}"] {
        router = router
            .route(&format!("{base}/status"), get(cuda_status))
            .route(&format!("{base}/register"), post(cuda_register))
            .route(&format!("{base}/unregister"), post(cuda_unregister));
    }
    router
}

async fn system_status(
    Caller(shared): Caller,
    Names { region: name, .. }: Names,
) -> Result<Response, HttpError> {
    let status = shared.service.system_regions(&name)?;
    let mut regions: Vec<_> = status.regions.into_values().collect();
    regions.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let regions = regions
        .into_iter()
        .map(|r| json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(regions)))
}

async fn system_register(
    Caller(shared): Caller,
    Names { region: name, .. }: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let request = system_register_request(name, &body(payload, &shared)?)?;
    shared.service.register_system_region(&request)?;
    Ok(StatusCode::OK.into_response())
}

/// Reads `{"key": "<shm key>", "offset": n, "byte_size": n}` (`offset` optional) as Triton does.
fn system_register_request(
    name: String,
    body: &[u8],
) -> Result<pb::SystemSharedMemoryRegisterRequest, Error> {
    if name.is_empty() {
        // Triton's text.
        return Err(Error::invalid(
            "'region name' is necessary to register system shared memory region",
        ));
    }
    let mut object = register_body(body)?;
    let key = match required(&mut object, "key")? {
        Value::String(key) => key,
        other => return Err(wrong_type("key", "a string", &other)),
    };
    let offset = match object.remove("offset") {
        None => 0,
        Some(offset) => unsigned("offset", offset)?,
    };
    let byte_size = unsigned("byte_size", required(&mut object, "byte_size")?)?;
    Ok(pb::SystemSharedMemoryRegisterRequest {
        name,
        key,
        offset,
        byte_size,
    })
}

async fn system_unregister(
    Caller(shared): Caller,
    Names { region: name, .. }: Names,
) -> Result<Response, HttpError> {
    shared.service.unregister_system_region(&name)?;
    Ok(StatusCode::OK.into_response())
}

async fn cuda_status(
    Caller(shared): Caller,
    Names { region: name, .. }: Names,
) -> Result<Response, HttpError> {
    let status = shared.service.cuda_regions(&name)?;
    let mut regions: Vec<_> = status.regions.into_values().collect();
    regions.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let regions = regions
        .into_iter()
        .map(|r| json!({"name": r.name, "device_id": r.device_id, "byte_size": r.byte_size}))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(regions)))
}

/// Asks the core, which decides whether CUDA regions can be registered at all.
async fn cuda_register(
    Caller(shared): Caller,
    Names { region: name, .. }: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let request = cuda_register_request(name, &body(payload, &shared)?)?;
    shared.service.register_cuda_region(&request)?;
    Ok(StatusCode::OK.into_response())
}

/// Reads `{"raw_handle": {"b64": "<base64>"}, "device_id": n, "byte_size": n}` as Triton does.
fn cuda_register_request(name: String, body: &[u8]) -> Result<pb::CudaSharedMemoryRegisterRequest, Error> {
    use base64::Engine as _;
    if name.is_empty() {
        // Triton's text.
        return Err(Error::invalid(
            "'region name' is necessary to register cuda shared memory region",
        ));
    }
    let mut object = register_body(body)?;
    let encoded = match required(&mut object, "raw_handle")? {
        Value::Object(mut handle) => match handle.remove("b64") {
            Some(Value::String(encoded)) => encoded,
            Some(other) => return Err(wrong_type("raw_handle.b64", "a string", &other)),
            None => {
                return Err(Error::invalid(
                    "'raw_handle' must be an object {\"b64\": \"<base64 handle>\"}; it has no 'b64'",
                ));
            }
        },
        other => return Err(wrong_type("raw_handle", "an object", &other)),
    };
    let raw_handle = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .map_err(|error| Error::invalid(format!("'raw_handle' is not valid base64: {error}")))?;
    let device_id = unsigned("device_id", required(&mut object, "device_id")?)?;
    let device_id = i64::try_from(device_id).map_err(|_| {
        Error::invalid(format!(
            "'device_id' must be at most {}, got {device_id}",
            i64::MAX
        ))
    })?;
    let byte_size = unsigned("byte_size", required(&mut object, "byte_size")?)?;
    Ok(pb::CudaSharedMemoryRegisterRequest {
        name,
        raw_handle: raw_handle.into(),
        device_id,
        byte_size,
    })
}

async fn cuda_unregister(
    Caller(shared): Caller,
    Names { region: name, .. }: Names,
) -> Result<Response, HttpError> {
    shared.service.unregister_cuda_region(&name)?;
    Ok(StatusCode::OK.into_response())
}

/// A register request's body: a JSON object, parsed within the REST front end's bounds.
fn register_body(body: &[u8]) -> Result<Map<String, Value>, Error> {
    match parse_json(body, "shared memory register request")? {
        Value::Object(object) => Ok(object),
        other => Err(Error::invalid(format!(
            "the shared memory register request must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

/// Field `field` of a register request, with Triton's text when it is missing.
fn required(object: &mut Map<String, Value>, field: &str) -> Result<Value, Error> {
    object
        .remove(field)
        .ok_or_else(|| Error::invalid(format!("Shared memory register request has no '{field}' field")))
}

/// A non-negative integer field, as Triton reads offsets, sizes and device ids.
fn unsigned(field: &str, value: Value) -> Result<u64, Error> {
    value
        .as_u64()
        .ok_or_else(|| wrong_type(field, "a non-negative integer", &value))
}

fn wrong_type(field: &str, expected: &str, value: &Value) -> Error {
    let given = match value {
        Value::Number(number) => format!("{number}"),
        other => kind(other).to_owned(),
    };
    Error::invalid(format!(
        "'{field}' of the shared memory register request must be {expected}, got {given}"
    ))
}
