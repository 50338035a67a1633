//! Ferry's drift routes beside Triton's: `GET /v2/models/{model}[/versions/{version}]/drift` returns the
//! drift report of the version (or of every ready version), and `POST .../drift/baseline` replaces a
//! version's baseline: with no body or `{"source": "live"}` its live window is frozen, with
//! `{"source": "file"}` the config's baseline file (or none) comes back.

use axum::{
    Router,
    extract::rejection::BytesRejection,
    response::Response,
    routing::{get, post},
};
use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::{
    HttpError,
    error::json_response,
    routes::{Caller, Names, Shared, body, object_body},
    tensor::kind,
};
use crate::{Error, core::BaselineChange};

/// Adds the drift routes under `base`, a model's or a version's path.
pub(super) fn routes(router: Router<Shared>, base: &str) -> Router<Shared> {
    router
        .route(&format!("{base}/drift"), get(report))
        .route(&format!("{base}/drift/baseline"), post(baseline))
}

async fn report(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let reports = shared.service.drift_report(&names.model, &names.version)?;
    let versions = serde_json::to_value(&reports)
        .map_err(|error| Error::Internal(format!("writing the drift report: {error}")))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"model": names.model, "versions": versions}),
    ))
}

async fn baseline(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let mut object = object_body(&body(payload, &shared)?, "drift baseline")?;
    let change = match object.remove("source") {
        None => BaselineChange::FreezeLive,
        Some(Value::String(source)) if source == "live" => BaselineChange::FreezeLive,
        Some(Value::String(source)) if source == "file" => BaselineChange::File,
        Some(other) => {
            return Err(Error::invalid(format!(
                "the drift baseline request's 'source' must be \"live\" or \"file\", got {}",
                match &other {
                    Value::String(text) => format!("'{}'", text.chars().take(64).collect::<String>()),
                    other => kind(other).to_owned(),
                }
            ))
            .into());
        }
    };
    if let Some(key) = object.keys().next() {
        return Err(Error::invalid(format!(
            "the drift baseline request has an unknown field '{}', expected only 'source'",
            key.chars().take(64).collect::<String>()
        ))
        .into());
    }
    let report = shared
        .service
        .change_drift_baseline(&names.model, &names.version, change)?;
    let report = serde_json::to_value(&report)
        .map_err(|error| Error::Internal(format!("writing the drift report: {error}")))?;
    Ok(json_response(StatusCode::OK, &report))
}
