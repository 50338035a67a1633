//! Ferry's one error type and the one place that maps it to the gRPC status and the HTTP status a client
//! gets, whichever protocol carried the request.

use tonic::{Code, Status};

use crate::stats::FailureReason;

/// Everything that can go wrong between receiving a request and answering it, or while loading a model.
///
/// Each variant carries a message that already names the field, the expected and the given value, so front
/// ends only choose the status code. Where Triton 2.51 has a message for the same failure, the text is
/// Triton's word for word (clients and scripts compare them), and Ferry's own detail, if any, follows it
/// after `"; "`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No model of that name is in any repository (Triton's `ModelLifeCycle::GetModel`, prefixed by
    /// `ModelRepositoryManager::GetModel`).
    #[error("Request for unknown model: '{model}' is not found")]
    UnknownModel {
        /// The requested model name.
        model: String,
    },
    /// The model exists but not that version.
    #[error("Request for unknown model: '{model}' version {version} is not found")]
    UnknownVersion {
        /// The requested model name.
        model: String,
        /// The requested version number.
        version: u64,
    },
    /// The model is known but no version of it serves: it failed to load, is loading or was unloaded.
    /// Triton answers `NOT_FOUND` here; Ferry adds why after Triton's text.
    #[error(
        "Request for unknown model: '{model}' has no available versions{}",
        detail(reason)
    )]
    NoAvailableVersion {
        /// The requested model name.
        model: String,
        /// Why no version serves, if Ferry knows.
        reason: String,
    },
    /// The version exists but is not serving (loading, failed, or being taken down): Triton's `UNAVAILABLE`.
    #[error(
        "Request for unknown model: '{model}' version {version} is not at ready state{}",
        detail(reason)
    )]
    VersionNotReady {
        /// The requested model name.
        model: String,
        /// The version number.
        version: u64,
        /// Why it is not ready.
        reason: String,
    },
    /// The request breaks the model's contract: the message names the tensor or field and both values.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request waited in the queue past its timeout and was never run.
    #[error("{0}")]
    QueueTimeout(String),
    /// A full queue; the client may retry later.
    #[error("{0}")]
    Overloaded(String),
    /// A `config.pbtxt` is malformed or impossible.
    #[error("{path}:{line}: {message}")]
    Config {
        /// The file that holds the mistake.
        path: String,
        /// The 1-based line of the mistake (0 when the file as a whole is at fault).
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A model file could not be loaded, or does not match its configuration.
    #[error("{0}")]
    ModelLoad(String),
    /// ONNX Runtime failed while running a request.
    #[error("onnx runtime failed: {0}")]
    Execution(String),
    /// A load or unload request outside explicit model control mode.
    #[error("{0}")]
    ModelControlDisabled(String),
    /// A failure Triton reports as `INTERNAL`: a shared memory object that cannot be opened, an output
    /// region too small for the result, a model that cannot be found or read when a load asks for it.
    #[error("{0}")]
    Internal(String),
    /// The RPC exists in the protocol but Ferry does not serve it yet.
    #[error("{0} is not implemented by this server")]
    Unimplemented(&'static str),
    /// A request for something Triton does not support either (its `UNSUPPORTED`, gRPC `UNIMPLEMENTED`, HTTP
    /// 501), such as a repository name; the message is Triton's.
    #[error("{0}")]
    Unsupported(String),
    /// A named thing other than a model is missing: a shared memory region or object. The message names it.
    #[error("{0}")]
    NotFound(String),
    /// A request or a load that would take more memory, threads or instances than Ferry's limits allow
    /// (`docs/limits.md`); the message names the limit, its flag, and the value asked for.
    #[error("{0}")]
    TooLarge(String),
    /// A name is already taken, such as a shared memory region registered twice; the client must free it
    /// first.
    #[error("{0}")]
    AlreadyExists(String),
    /// A REST body that Triton's JSON reader (`TritonJson` in `triton_json.h`) refuses: not JSON, or a
    /// member missing or of the wrong JSON type. Triton reports these as `INTERNAL`, so HTTP 500, however
    /// much they are the client's mistake; the message starts with Triton's text.
    #[error("{0}")]
    MalformedJson(String),
    /// A REST body over the size limit (`--grpc-max-message-bytes`), as received or once inflated: HTTP 413,
    /// as from Triton's HTTP server; over gRPC such a message is `RESOURCE_EXHAUSTED`.
    #[error("{0}")]
    BodyTooLarge(String),
    /// A REST body in a `Content-Encoding` Ferry does not read: HTTP 415, as from Triton; gRPC answers an
    /// unknown `grpc-encoding` with `UNIMPLEMENTED`.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// The caller is not known: no credential where the action needs one, or a credential that identifies
    /// no one (`UNAUTHENTICATED`, HTTP 401 with `WWW-Authenticate: Bearer`). The message says what is
    /// missing and never repeats the credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this: its policy lacks the scope, or the server turned the API
    /// off (`PERMISSION_DENIED`, HTTP 403). The message names the scope, flag or policy that would allow it.
    #[error("{0}")]
    PermissionDenied(String),
    /// A request without the header of one of Triton's restricted protocol groups
    /// (`--grpc-restricted-protocol`, `--http-restricted-api`): Triton answers gRPC `UNAVAILABLE` and HTTP
    /// 403, with its own text naming the header.
    #[error("{0}")]
    Restricted(String),
    /// The caller is over its rate limit or has too many requests in flight (`--rate-limit`,
    /// `--max-in-flight-per-identity`): `RESOURCE_EXHAUSTED`, HTTP 429, both with `Retry-After`. The
    /// message names the identity, the limit and its flag.
    #[error("{0}")]
    RateLimited(String),
}

impl Error {
    /// The gRPC status code Triton uses for this kind of failure.
    pub fn grpc_code(&self) -> Code {
        match self {
            Error::UnknownModel { .. }
            | Error::UnknownVersion { .. }
            | Error::NoAvailableVersion { .. }
            | Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            // Triton answers a full queue with UNAVAILABLE ("Exceeds maximum queue size"), like a timeout.
            Error::VersionNotReady { .. }
            | Error::QueueTimeout(_)
            | Error::ModelControlDisabled(_)
            | Error::Overloaded(_)
            | Error::Restricted(_) => Code::Unavailable,
            Error::InvalidRequest(_) | Error::Config { .. } | Error::ModelLoad(_) => Code::InvalidArgument,
            Error::Execution(_) | Error::Internal(_) | Error::MalformedJson(_) => Code::Internal,
            Error::TooLarge(_) | Error::BodyTooLarge(_) | Error::RateLimited(_) => Code::ResourceExhausted,
            Error::Unimplemented(_) | Error::Unsupported(_) | Error::UnsupportedEncoding(_) => {
                Code::Unimplemented
            }
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
        }
    }

    /// Why a request of a serving model that ends in this error failed, for the `reason` label of Triton's
    /// failure counter: the queue's refusals are `REJECTED` (as Triton's scheduler reports a full queue and a
    /// passed queue timeout), the model's own failures `BACKEND`, the rest `OTHER`.
    pub fn failure_reason(&self) -> FailureReason {
        match self {
            Error::QueueTimeout(_) | Error::Overloaded(_) => FailureReason::Rejected,
            Error::Execution(_) | Error::Internal(_) => FailureReason::Backend,
            _ => FailureReason::Other,
        }
    }

    /// The HTTP status the REST front end answers for this failure: the status Triton's `HttpCodeFromError`
    /// gives its gRPC code ([`http_status`]), except for the two refusals of a body's transport that HTTP
    /// has statuses of its own for, 413 and 415, and the refusals of a caller, which Triton's mapping has no
    /// place for: 401 (unknown caller) and 403 (known caller without the right, or a missing restricted
    /// API header, as Triton's `RespondIfRestricted` answers), and 429 for a caller over its rate or in-flight
    /// limit, which Triton does not have.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Error::BodyTooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedEncoding(_) => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unauthenticated(_) => http::StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) | Error::Restricted(_) => http::StatusCode::FORBIDDEN,
            Error::RateLimited(_) => http::StatusCode::TOO_MANY_REQUESTS,
            other => http_status(other.grpc_code()),
        }
    }

    /// A shorthand for the most common error: a request that breaks the model's contract.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }
}

/// Ferry's detail after Triton's text: `"; <detail>"`, or nothing when there is none.
fn detail(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!("; {reason}")
    }
}

/// The HTTP status for a gRPC status code: Triton's own mapping (`HttpCodeFromError` in its
/// `http_server.cc`), so that REST clients see what they would see from Triton. [`Error::http_status`]
/// applies it to every failure but a body too large (413) or in an unknown coding (415).
pub fn http_status(code: Code) -> http::StatusCode {
    match code {
        Code::Ok => http::StatusCode::OK,
        Code::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        Code::NotFound => http::StatusCode::NOT_FOUND,
        Code::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        Code::Unimplemented => http::StatusCode::NOT_IMPLEMENTED,
        _ => http::StatusCode::BAD_REQUEST,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(
            error.grpc_code(),
            crate::limits::bounded_message(error.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_triton() {
        let unknown = Status::from(Error::UnknownModel { model: "m".into() });
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(unknown.message(), "Request for unknown model: 'm' is not found");
        assert_eq!(Status::from(Error::invalid("x")).code(), Code::InvalidArgument);
        assert_eq!(
            Status::from(Error::Overloaded("Exceeds maximum queue size".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(Error::Execution("boom".into())).code(),
            Code::Internal
        );
        let not_ready = Error::VersionNotReady {
            model: "m".into(),
            version: 2,
            reason: "it is loading".into(),
        };
        let status = Status::from(not_ready);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "Request for unknown model: 'm' version 2 is not at ready state; it is loading"
        );
        let none = Error::NoAvailableVersion {
            model: "m".into(),
            reason: String::new(),
        };
        let status = Status::from(none);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "Request for unknown model: 'm' has no available versions"
        );
        assert_eq!(Status::from(Error::Internal("x".into())).code(), Code::Internal);
        assert_eq!(Status::from(Error::NotFound("r".into())).code(), Code::NotFound);
        assert_eq!(
            Status::from(Error::AlreadyExists("r".into())).code(),
            Code::AlreadyExists
        );
        let status = Status::from(Error::Unimplemented("ModelStreamInfer"));
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("ModelStreamInfer"));
    }

    #[test]
    fn http_statuses_follow_triton() {
        use http::StatusCode;
        assert_eq!(http_status(Code::Ok), StatusCode::OK);
        assert_eq!(http_status(Code::Internal), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::Unimplemented), StatusCode::NOT_IMPLEMENTED);
        for other in [
            Code::ResourceExhausted,
            Code::InvalidArgument,
            Code::Cancelled,
            Code::AlreadyExists,
            Code::Unknown,
        ] {
            assert_eq!(http_status(other), StatusCode::BAD_REQUEST, "{other:?}");
        }
    }

    /// Every failure's HTTP status is its gRPC code's, through Triton's `HttpCodeFromError`, but for the two
    /// transport refusals HTTP names itself.
    #[test]
    fn an_errors_http_status_follows_its_grpc_code() {
        use http::StatusCode;
        let cases = [
            (Error::UnknownModel { model: "m".into() }, StatusCode::NOT_FOUND),
            (Error::invalid("x"), StatusCode::BAD_REQUEST),
            (Error::Overloaded("x".into()), StatusCode::SERVICE_UNAVAILABLE),
            (Error::Internal("x".into()), StatusCode::INTERNAL_SERVER_ERROR),
            (
                Error::MalformedJson("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (Error::Unsupported("x".into()), StatusCode::NOT_IMPLEMENTED),
            (Error::TooLarge("x".into()), StatusCode::BAD_REQUEST),
            (Error::AlreadyExists("x".into()), StatusCode::BAD_REQUEST),
            (Error::BodyTooLarge("x".into()), StatusCode::PAYLOAD_TOO_LARGE),
            (
                Error::UnsupportedEncoding("x".into()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.http_status(), status, "{error:?}");
        }
        assert_eq!(Error::MalformedJson("x".into()).grpc_code(), Code::Internal);
        assert_eq!(
            Error::BodyTooLarge("x".into()).grpc_code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Error::UnsupportedEncoding("x".into()).grpc_code(),
            Code::Unimplemented
        );
    }

    /// Refusals of a caller: Ferry's own (401 / 403) and Triton's restricted groups (`UNAVAILABLE` over gRPC
    /// as in its `grpc_server.cc`, 403 over HTTP as in its `RespondIfRestricted`).
    #[test]
    fn refusals_of_a_caller_have_their_statuses() {
        use http::StatusCode;
        let cases = [
            (
                Error::Unauthenticated("x".into()),
                Code::Unauthenticated,
                StatusCode::UNAUTHORIZED,
            ),
            (
                Error::PermissionDenied("x".into()),
                Code::PermissionDenied,
                StatusCode::FORBIDDEN,
            ),
            (
                Error::Restricted("x".into()),
                Code::Unavailable,
                StatusCode::FORBIDDEN,
            ),
            (
                Error::RateLimited("x".into()),
                Code::ResourceExhausted,
                StatusCode::TOO_MANY_REQUESTS,
            ),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.grpc_code(), code, "{error:?}");
            assert_eq!(error.http_status(), status, "{error:?}");
        }
    }
}
