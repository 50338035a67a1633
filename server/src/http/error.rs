//! Failed REST requests, answered as Triton does: a JSON body `{"error": "<message>"}` with the HTTP status
//! [`Error::http_status`] gives the failure, the one mapping both front ends share.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::Error;

/// A failed REST request: the status to answer and a message that names the field and the values at fault.
/// Made from Ferry's [`Error`], except for a known path asked with the wrong method, which is routing's
/// refusal and no failure of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// The message the client reads in `error`.
    pub message: String,
}

impl HttpError {
    /// Triton's answer to a known path with the wrong method: 405 `{"error": "Method Not Allowed"}`.
    pub fn method_not_allowed() -> Self {
        HttpError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "Method Not Allowed".to_owned(),
        }
    }
}

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        HttpError {
            status: error.http_status(),
            message: crate::limits::bounded_message(error.to_string()),
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status, &serde_json::json!({ "error": self.message }));
        // RFC 9110: a 401 names the scheme that would authenticate the caller.
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON answer with `status`. Serializing a `serde_json::Value` cannot fail; if it ever did, the client
/// gets a 500 saying so rather than a panic.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = (status, body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialize the response: {error}"),
        )
            .into_response(),
    }
}
