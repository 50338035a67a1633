//! Failed REST requests, answered as Triton does: a JSON body `{"error": "<message>"}` with the HTTP status
//! that `crate::error::http_status` gives the failure's gRPC code.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tonic::{Code, Status};

/// A failed REST request: the status to answer and a message that names the field and the values at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// The message the client reads in `error`.
    pub message: String,
}

impl HttpError {
    /// A failure with the meaning of a gRPC `code`, so REST answers it with the status gRPC's code maps to.
    pub fn from_code(code: Code, message: impl Into<String>) -> Self {
        HttpError {
            status: crate::error::http_status(code),
            message: crate::limits::bounded_message(message.into()),
        }
    }

    /// A request the REST layer finds malformed before the shared core sees it (Triton's `INVALID_ARG`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::from_code(Code::InvalidArgument, message)
    }

    /// A protocol feature Ferry does not serve (Triton's `UNSUPPORTED`).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::from_code(Code::Unimplemented, message)
    }

    /// A broken promise inside the server, such as a response the core built inconsistently.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::from_code(Code::Internal, message)
    }
}

impl From<Status> for HttpError {
    fn from(status: Status) -> Self {
        Self::from_code(status.code(), status.message())
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        json_response(self.status, &serde_json::json!({ "error": self.message }))
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
