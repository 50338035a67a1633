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
    routes::{Caller, Names, Shared, body, no_unknown_field, object_body, report_json, versions_answer},
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
    versions_answer(&names.model, &reports, "drift report")
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
    no_unknown_field(&object, "drift baseline", "'source'")?;
    let report = shared
        .service
        .change_drift_baseline(&names.model, &names.version, change)?;
    Ok(json_response(
        StatusCode::OK,
        &report_json(&report, "drift report")?,
    ))
}
