//! Ferry's feedback routes beside Triton's, the JSON twin of the gRPC `ferry.feedback.v1.Feedback`
//! service (docs/feedback.md):
//!
//! - `POST /v2/models/{model}[/versions/{version}]/feedback`: `{"items": [{"request_id": "...", "classes":
//!   [3]} | {..., "labels": ["cat"]} | {..., "values": [1.5]}]}`, answered with one result per item
//! - `GET /v2/models/{model}[/versions/{version}]/quality`: the live quality of the version (or of every
//!   ready version that keeps it)

use axum::{
    Router,
    extract::rejection::BytesRejection,
    response::Response,
    routing::{get, post},
};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    HttpError,
    error::json_response,
    json::parse_json,
    routes::{Caller, Names, Shared, body, no_unknown_field, versions_answer},
    tensor::kind,
};
use crate::{Error, quality::FeedbackItem};

/// Adds the feedback routes under `base`, a model's or a version's path.
pub(super) fn routes(router: Router<Shared>, base: &str) -> Router<Shared> {
    router
        .route(&format!("{base}/feedback"), post(feedback))
        .route(&format!("{base}/quality"), get(quality))
}

/// One item as JSON carries it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    request_id: String,
    #[serde(default)]
    classes: Vec<i64>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    values: Vec<f64>,
}

async fn feedback(
    Caller(shared): Caller,
    names: Names,
    payload: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body(payload, &shared)?;
    let Value::Object(mut object) = parse_json(&body, "feedback request")? else {
        return Err(Error::invalid("the feedback request must be a JSON object with 'items'").into());
    };
    let items = match object.remove("items") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Error::invalid(format!(
                "the feedback request's 'items' must be an array, got {}",
                kind(&other)
            ))
            .into());
        }
        None => return Err(Error::invalid("the feedback request has no 'items'").into()),
    };
    no_unknown_field(&object, "feedback", "'items'")?;
    FeedbackItem::check_count(items.len())?;
    let items = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let item: Item = serde_json::from_value(item)
                .map_err(|error| Error::invalid(format!("feedback item {index}: {error}")))?;
            FeedbackItem::parse(index, item.request_id, item.classes, item.labels, item.values)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let outcomes = shared
        .service
        .post_feedback(&names.model, &names.version, items)?;
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|outcome| {
            let mut result = json!({
                "request_id": outcome.request_id,
                "status": outcome.status.name(),
                "version": outcome.version.to_string(),
            });
            if !outcome.status.reason().is_empty() {
                result["reason"] = Value::String(outcome.status.reason().to_owned());
            }
            result
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "results": results })))
}

async fn quality(Caller(shared): Caller, names: Names) -> Result<Response, HttpError> {
    let reports = shared.service.model_quality(&names.model, &names.version)?;
    versions_answer(&names.model, &reports, "quality report")
}
