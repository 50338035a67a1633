//! Triton's REST paths (`src/http_server.cc`) and their handlers. Each handler reads the path and body into
//! the values the core takes, calls the shared [`InferenceService`], and writes the answer (or the
//! [`Error`], through [`HttpError`]) as Triton's REST API does.

use std::collections::HashMap;

use axum::{
    Router,
    extract::{
        DefaultBodyLimit, FromRequestParts, RawPathParams, State,
        rejection::{BytesRejection, RawPathParamsRejection},
    },
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use ferry_proto::inference as pb;
use http::{HeaderMap, StatusCode, request::Parts};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    HttpError, encoding,
    error::json_response,
    infer,
    json::{self, access, proto_to_json, repository_parameter, triton_json},
    tensor::kind,
};
use crate::{Error, core::InferenceService};

/// What every handler shares: the core that does the work and the body limit it was built with.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) service: InferenceService,
    max_body_bytes: usize,
}

/// The REST API over `service`, refusing request bodies above `max_body_bytes` with 413.
pub fn router(service: InferenceService, max_body_bytes: usize) -> Router {
    const MODEL: &str = "/v2/models/{model}";
    const VERSION: &str = "/v2/models/{model}/versions/{version}";
    let mut router = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        // A static segment wins over `{model}`, so this is never read as the metadata of a model "stats".
        .route("/v2/models/stats", get(statistics));
    for base in [MODEL, VERSION] {
        router = router
            .route(base, get(model_metadata))
            .route(&format!("{base}/ready"), get(model_ready))
            .route(&format!("{base}/config"), get(model_config))
            .route(&format!("{base}/stats"), get(statistics))
            .route(&format!("{base}/infer"), post(model_infer));
        router = super::drift::routes(router, base);
        router = super::quality::routes(router, base);
    }
    for base in ["/v2/repository", "/v2/repository/{repository}"] {
        router = router
            .route(&format!("{base}/index"), post(repository_index))
            .route(&format!("{base}/models/{{model}}/load"), post(load))
            .route(&format!("{base}/models/{{model}}/unload"), post(unload));
    }
    super::traffic::routes(super::shm::routes(router))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(Shared {
            service,
            max_body_bytes,
        })
}

/// The shared state with the core acting for the caller the auth layer admitted ([`crate::auth`]): what
/// every handler that reaches the core takes, so that the core checks that caller's scopes per model.
pub(super) struct Caller(pub(super) Shared);

impl FromRequestParts<Shared> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, Self::Rejection> {
        Ok(Caller(Shared {
            service: shared.service.acting_for(&parts.extensions).into_owned(),
            max_body_bytes: shared.max_body_bytes,
        }))
    }
}

/// The names a path carries; empty when the path has none (an empty version means the policy's choice).
/// One extractor for every route, Triton's and Ferry's own, so that each path is read the same way.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) model: String,
    pub(super) version: String,
    pub(super) repository: String,
    /// A traffic label (`.../traffic/labels/{label}`).
    pub(super) label: String,
    /// A shared memory region (`.../region/{region}`).
    pub(super) region: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Names {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let params = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params,
            Err(RawPathParamsRejection::MissingPathParams(_)) => return Ok(Names::default()),
            Err(rejection) => return Err(Error::invalid(rejection.body_text()).into()),
        };
        let mut names = Names::default();
        for (key, value) in &params {
            let slot = match key {
                "model" => &mut names.model,
                "version" => &mut names.version,
                "repository" => &mut names.repository,
                "label" => &mut names.label,
                "region" => &mut names.region,
                // The routes declare no other name.
                _ => continue,
            };
            *slot = value.to_owned();
        }
        Ok(names)
    }
}

/// The request body, or the reason it could not be read: 413 above the size limit, 400 when the
/// connection failed while it was read.
pub(super) fn body(body: Result<Bytes, BytesRejection>, shared: &Shared) -> Result<Bytes, Error> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge(format!(
                "the request body is larger than the server's limit of {} bytes (--grpc-max-message-bytes)",
                shared.max_body_bytes
            ))
        } else {
            Error::invalid(format!("cannot read the request body: {}", rejection.body_text()))
        }
    })
}

/// An optional JSON object body, as the model-control endpoints take: empty means no fields. Triton parses
/// any body that is not empty (`HandleRepositoryIndex`, `HandleRepositoryControl`), so blanks are not JSON.
pub(super) fn object_body(body: &[u8], what: &str) -> Result<Map<String, Value>, Error> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match json::parse_json(body, &format!("{what} request"))? {
        Value::Object(object) => Ok(object),
        other => Err(Error::invalid(format!(
            "the {what} request must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

/// Refuses a body `object` that still holds a field once its handler has taken out those it knows, so that
/// a misspelt field is reported rather than ignored. `what` names the request, `expected` its fields.
pub(super) fn no_unknown_field(object: &Map<String, Value>, what: &str, expected: &str) -> Result<(), Error> {
    match object.keys().next() {
        Some(key) => Err(Error::invalid(format!(
            "the {what} request has an unknown field '{}', expected only {expected}",
            key.chars().take(64).collect::<String>()
        ))),
        None => Ok(()),
    }
}

/// One of Ferry's own reports as JSON. Reports are plain data, so a failure here is Ferry's bug, answered
/// as an internal error that names the report (`what`) rather than a panic.
pub(super) fn report_json(report: &impl Serialize, what: &str) -> Result<Value, Error> {
    serde_json::to_value(report).map_err(|error| Error::Internal(format!("writing the {what}: {error}")))
}

/// 200 with `{"model": ..., "versions": [...]}`: the answer of Ferry's per-version report routes (drift,
/// quality), one report per version the path named (or per ready version).
pub(super) fn versions_answer(
    model: &str,
    reports: &impl Serialize,
    what: &str,
) -> Result<Response, HttpError> {
    let versions = report_json(reports, what)?;
    Ok(ok_json(
        &serde_json::json!({"model": model, "versions": versions}),
    ))
}

/// The `parameters` of a load body, as protobuf parameters. Triton's `HandleRepositoryControl` reads them
/// as an object of strings; its JSON reader's texts come first, with its `INTERNAL` status (500).
fn load_parameters(
    mut object: Map<String, Value>,
) -> Result<HashMap<String, pb::ModelRepositoryParameter>, Error> {
    match object.remove("parameters") {
        None => Ok(HashMap::new()),
        Some(Value::Object(parameters)) => parameters
            .iter()
            .map(|(key, value)| {
                if !value.is_string() {
                    return Err(triton_json(format!(
                        "{}; load parameter '{key}' is {}",
                        access::STRING,
                        kind(value)
                    )));
                }
                Ok((key.clone(), repository_parameter(key, value)?))
            })
            .collect(),
        Some(other) => Err(triton_json(format!(
            "{}; the load request's 'parameters' is {}",
            access::MEMBERS,
            kind(&other)
        ))),
    }
}

/// The `parameters` of an unload body. Triton's `HandleRepositoryControl` reads `unload_dependents` alone,
/// as a boolean, and ignores `parameters` that are no object.
fn unload_parameters(
    mut object: Map<String, Value>,
) -> Result<HashMap<String, pb::ModelRepositoryParameter>, Error> {
    let Some(Value::Object(parameters)) = object.remove("parameters") else {
        return Ok(HashMap::new());
    };
    if let Some(value) = parameters.get("unload_dependents")
        && !value.is_boolean()
    {
        return Err(triton_json(format!(
            "Unable to parse 'unload_dependents': {}; got {}",
            access::BOOL,
            kind(value)
        )));
    }
    parameters
        .iter()
        .map(|(key, value)| Ok((key.clone(), repository_parameter(key, value)?)))
        .collect()
}

fn ok_json(value: &Value) -> Response {
    json_response(StatusCode::OK, value)
}

/// 200 with the KServe v2 body (`{"live": true}` / `{"ready": true}`, which KServe's `InferenceRESTClient` reads
/// and Triton's clients ignore) when `yes`, otherwise Triton's 400 with an empty body (`HandleServerHealth`).
fn health(key: &str, yes: bool) -> Response {
    if yes {
        let mut body = Map::new();
        body.insert(key.to_owned(), Value::Bool(true));
        ok_json(&Value::Object(body))
    } else {
        StatusCode::BAD_REQUEST.into_response()
    }
}

async fn live(State(shared): State<Shared>) -> Response {
    health("live", shared.service.is_live())
}

async fn ready(State(shared): State<Shared>) -> Response {
    health("ready", shared.service.is_ready())
}

async fn server_metadata(Caller(shared): Caller) -> Result<Response, HttpError> {
    let metadata = shared.service.server_info();
    Ok(ok_json(&proto_to_json(
        &metadata,
        "inference.ServerMetadataResponse",
    )?))
}

async fn model_metadata(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let metadata = shared.service.describe_model(&pb::ModelMetadataRequest {
        name: names.model,
        version: names.version,
    })?;
    Ok(ok_json(&proto_to_json(
        &metadata,
        "inference.ModelMetadataResponse",
    )?))
}

async fn model_ready(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let ready = shared.service.is_model_ready(&pb::ModelReadyRequest {
        name: names.model,
        version: names.version,
    })?;
    if ready {
        Ok(StatusCode::OK.into_response())
    } else {
        // Triton's answer (`HandleModelReady`).
        Err(Error::invalid("Model version not ready").into())
    }
}

async fn model_config(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let config = shared.service.model_config_of(&pb::ModelConfigRequest {
        name: names.model,
        version: names.version,
    })?;
    Ok(ok_json(&proto_to_json(&config, "inference.ModelConfig")?))
}

async fn statistics(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let statistics = shared.service.statistics_of(&pb::ModelStatisticsRequest {
        name: names.model,
        version: names.version,
    })?;
    Ok(ok_json(&proto_to_json(
        &statistics,
        "inference.ModelStatisticsResponse",
    )?))
}

/// Inference. The body is read and inflated first (a refusal there is the transport's, as a gRPC message
/// over the limit is); the core then resolves the model and only then has the body decoded, so that a body
/// the model cannot take counts as a failed request of the model, as the same mistake over gRPC does.
async fn model_infer(
    Caller(shared): Caller,
    names: Names,
    headers: HeaderMap,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let payload = body(payload, &shared)?;
    let payload = match encoding::decode_request(&headers, payload, shared.max_body_bytes).await {
        Ok(payload) => payload,
        // A refusal is a whole answer: a 415 carries its Accept-Encoding header.
        Err(refusal) => return Ok(refusal),
    };
    let (response, forms) = shared
        .service
        .infer_with(&names.model, &names.version, routing_key(&headers)?, || {
            let rest = infer::parse_request(&names.model, &names.version, &headers, payload)?;
            Ok((rest.request, rest.outputs))
        })
        .await?;
    let answer = infer::build_response(&response, &forms)?;
    Ok(encoding::encode_response(answer, encoding::response_encoding(&headers)).await)
}

/// The `x-ferry-routing-key` header, if the request has one.
fn routing_key(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    headers
        .get(crate::core::ROUTING_KEY_HEADER)
        .map(|value| {
            value.to_str().map_err(|_| {
                Error::invalid(format!(
                    "the {} header must be visible ASCII",
                    crate::core::ROUTING_KEY_HEADER
                ))
            })
        })
        .transpose()
}

async fn repository_index(
    Caller(shared): Caller,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let mut object = object_body(&body(payload, &shared)?, "repository index")?;
    let ready = match object.remove("ready") {
        None => false,
        Some(Value::Bool(ready)) => ready,
        // Triton's `HandleRepositoryIndex` passes its JSON reader's error on bare (500).
        Some(other) => {
            return Err(triton_json(format!("{}; 'ready' is {}", access::BOOL, kind(&other))).into());
        }
    };
    // Triton's REST index ignores a repository name in the path (`HandleRepositoryIndex`), unlike gRPC.
    let request = pb::RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let index = shared.service.list_models(&request)?;
    // Triton answers the bare array of models, not the message that holds it, and writes only the fields a
    // model has (`TRITONSERVER_ServerModelIndex`): a model never loaded is its name alone, a ready version
    // has no reason.
    let mut models = match proto_to_json(&index, "inference.RepositoryIndexResponse")? {
        Value::Object(mut message) => message
            .remove("models")
            .unwrap_or_else(|| Value::Array(Vec::new())),
        _ => Value::Array(Vec::new()),
    };
    if let Value::Array(rows) = &mut models {
        for row in rows.iter_mut().filter_map(Value::as_object_mut) {
            row.retain(|key, value| key == "name" || value.as_str() != Some(""));
        }
    }
    Ok(ok_json(&models))
}

async fn load(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let object = object_body(&body(payload, &shared)?, "load")?;
    let request = pb::RepositoryModelLoadRequest {
        repository_name: names.repository,
        model_name: names.model,
        parameters: load_parameters(object)?,
    };
    shared.service.load_model(request).await?;
    Ok(StatusCode::OK.into_response())
}

async fn unload(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let object = object_body(&body(payload, &shared)?, "unload")?;
    let request = pb::RepositoryModelUnloadRequest {
        repository_name: names.repository,
        model_name: names.model,
        parameters: unload_parameters(object)?,
    };
    shared.service.unload_model(request).await?;
    Ok(StatusCode::OK.into_response())
}

/// Triton's answer to a known path with the wrong method.
async fn method_not_allowed() -> HttpError {
    HttpError::method_not_allowed()
}

/// Triton's answer to a path it does not serve: 400 with an empty body (`HTTPAPIServer::Handle`).
async fn not_found() -> Response {
    StatusCode::BAD_REQUEST.into_response()
}
