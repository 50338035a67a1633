//! Ferry's REST routes for version labels and traffic policies, the JSON twin of the gRPC
//! `ferry.traffic.v1.Traffic` service (docs/rest.md): each handler reads the path and JSON body into the
//! core's plain values and answers the core's [`Status`] or history as JSON.
//!
//! - `GET|PUT /v2/models/{model}/traffic`: the policy (PUT replaces it; the body is `traffic.json`'s format)
//! - `PUT|DELETE /v2/models/{model}/traffic/labels/{label}`: point a label at `{"version": N}`, or remove it
//! - `POST /v2/models/{model}/traffic/promote`: `{"from": "canary", "to": "stable"}`, both optional
//! - `POST /v2/models/{model}/traffic/rollback`: restore the policy before the last change
//! - `GET /v2/models/{model}/traffic/history`: the last changes, oldest first

use axum::{
    Router,
    extract::rejection::BytesRejection,
    response::Response,
    routing::{get, post, put},
};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    HttpError,
    error::json_response,
    routes::{Caller, Names, Shared, body},
};
use crate::{
    Error,
    traffic::{MAX_FILE_BYTES, PolicySpec, Status},
};

/// Adds the traffic routes to `router`.
pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    const BASE: &str = "/v2/models/{model}/traffic";
    router
        .route(BASE, get(status).put(set))
        .route(
            &format!("{BASE}/labels/{{label}}"),
            put(set_label).delete(remove_label),
        )
        .route(&format!("{BASE}/promote"), post(promote))
        .route(&format!("{BASE}/rollback"), post(rollback))
        .route(&format!("{BASE}/history"), get(history))
}

/// A JSON body as `T`, strictly; an empty body is `T`'s default. Bodies are bounded as `traffic.json` is,
/// before they are parsed.
fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8], what: &str) -> Result<T, Error> {
    if body.is_empty() {
        return Ok(T::default());
    }
    if body.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::invalid(format!(
            "the {what} body is {} bytes, over the {MAX_FILE_BYTES} bytes a traffic policy may have",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|error| Error::invalid(format!("the {what} body: {error}")))
}

fn answer(status: Status) -> Result<Response, HttpError> {
    let value = serde_json::to_value(status)
        .map_err(|error| Error::Internal(format!("cannot write the traffic status: {error}")))?;
    Ok(json_response(StatusCode::OK, &value))
}

async fn status(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    answer(shared.service.traffic_status(&names.model)?)
}

async fn set(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let spec: PolicySpec = parse(&body(payload, &shared)?, "traffic policy")?;
    answer(shared.service.set_traffic(&names.model, spec).await?)
}

/// The body of a label's PUT.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    version: Option<Value>,
}

async fn set_label(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let label: LabelBody = parse(&body(payload, &shared)?, "label")?;
    let version = match label.version {
        Some(Value::Number(number)) => number.to_string(),
        Some(Value::String(text)) if !text.is_empty() => text,
        other => {
            return Err(Error::invalid(format!(
                "the label body needs 'version', a version number, got {}",
                other.map_or_else(
                    || "nothing".to_owned(),
                    |v| v.to_string().chars().take(64).collect()
                )
            ))
            .into());
        }
    };
    answer(
        shared
            .service
            .set_label(&names.model, &names.label, &version)
            .await?,
    )
}

async fn remove_label(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    answer(shared.service.set_label(&names.model, &names.label, "").await?)
}

/// The body of a promotion: both labels optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

async fn promote(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let promote: PromoteBody = parse(&body(payload, &shared)?, "promote")?;
    answer(
        shared
            .service
            .promote(&names.model, &promote.from, &promote.to)
            .await?,
    )
}

async fn rollback(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    answer(shared.service.rollback(&names.model).await?)
}

async fn history(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let changes = shared.service.traffic_history(&names.model)?;
    Ok(json_response(StatusCode::OK, &json!({ "changes": changes })))
}
