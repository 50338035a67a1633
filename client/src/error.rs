//! The one error type of the client, so that callers match on a single enum whether a call failed on the
//! wire, on the server or while turning tensors into Rust values.

/// Everything that can go wrong between building a request and reading a typed output.
///
/// Variants carry the tensor name, the expected and the given value, so that a message alone is enough to
/// see which side of the contract broke.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is not a URI tonic can dial; caught before any network activity.
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        /// The endpoint as the caller gave it.
        endpoint: String,
        /// Why tonic rejected it; left out of the message, as error sources are, and printed by reporters
        /// that walk the chain (`anyhow`'s `{:#}`).
        source: tonic::transport::Error,
    },

    /// An API key or token that cannot be sent as a header value (empty, or with spaces, control or
    /// non-ASCII characters); caught before any network activity. The secret is not repeated.
    #[error("the API key or token cannot be sent: it must be non-empty visible ASCII without spaces")]
    InvalidCredentials,

    /// TLS options were given for an endpoint whose scheme is not `https`; caught before any network
    /// activity, rather than connecting in plain text.
    #[error("TLS options were given for {endpoint:?}, which is not an https:// endpoint")]
    TlsNeedsHttps {
        /// The endpoint as the caller gave it.
        endpoint: String,
    },

    /// The TLS options cannot be used: a CA or client certificate that is not PEM, or a key that does not
    /// fit its certificate; caught before any network activity.
    #[error("invalid TLS options for {endpoint}")]
    InvalidTls {
        /// The URI that was to be dialled.
        endpoint: String,
        /// Why tonic rejected them.
        source: tonic::transport::Error,
    },

    /// A load test's settings describe no run at all (no connections, nothing in flight, no window, a rate
    /// that is not a positive number); caught before any connection is opened.
    #[error("invalid load test: {reason}")]
    InvalidLoad {
        /// Which setting is wrong and what it must be.
        reason: &'static str,
    },

    /// The connection could not be established, so no RPC ever reached a server.
    #[error("cannot connect to {endpoint}")]
    Transport {
        /// The URI that was dialled.
        endpoint: String,
        /// The underlying transport failure.
        source: tonic::transport::Error,
    },

    /// The server (or the channel on its behalf) answered with a non-OK gRPC status.
    ///
    /// The status is kept whole, boxed because it is large, so callers can branch on
    /// [`tonic::Status::code`] (for example retry on `UNAVAILABLE`) rather than on text.
    #[error("grpc status {}: {}", code_name(.0.code()), .0.message())]
    Status(Box<tonic::Status>),

    /// An input was added without data, so its datatype and contents are unknown.
    #[error("input {tensor:?} has no data")]
    MissingInputData {
        /// The input's name.
        tensor: String,
    },

    /// The number of elements does not match the product of the shape.
    #[error("tensor {tensor:?} with shape {shape:?} needs {expected} elements, given {given}")]
    ElementCountMismatch {
        /// The tensor's name.
        tensor: String,
        /// The shape the count was derived from.
        shape: Vec<i64>,
        /// The element count the shape implies.
        expected: usize,
        /// The element count actually present.
        given: usize,
    },

    /// Raw contents have a byte length that does not fit the shape and datatype.
    #[error("tensor {tensor:?} of {datatype} with shape {shape:?} needs {expected} bytes, given {given}")]
    ByteLengthMismatch {
        /// The tensor's name.
        tensor: String,
        /// The tensor's datatype, which fixes the element size.
        datatype: String,
        /// The tensor's shape.
        shape: Vec<i64>,
        /// The byte length the shape and datatype imply.
        expected: usize,
        /// The byte length actually present.
        given: usize,
    },

    /// An output was read as a Rust type that does not match its Triton datatype.
    #[error("output {tensor:?} is {given}, not {expected}")]
    DatatypeMismatch {
        /// The output's name.
        tensor: String,
        /// The datatype the requested Rust type stands for.
        expected: &'static str,
        /// The datatype the server sent.
        given: String,
    },

    /// The response holds no output of that name (it was not requested, or the model has no such output).
    #[error("no output {tensor:?} in the response; it has {available:?}")]
    UnknownOutput {
        /// The name that was asked for.
        tensor: String,
        /// The output names the response does hold.
        available: Vec<String>,
    },

    /// A tensor breaks the protocol in a way the variants above do not describe (negative dimension,
    /// truncated BYTES element, missing raw entry, out-of-range typed value).
    #[error("tensor {tensor:?}: {reason}")]
    MalformedTensor {
        /// The tensor's name.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC status behind this error, if the server answered at all; lets callers inspect the code and
    /// metadata without matching on the enum.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }

    /// Shorthand for a [`ClientError::MalformedTensor`], the catch-all of the decoding paths.
    pub(crate) fn malformed(tensor: &str, reason: impl Into<String>) -> Self {
        Self::MalformedTensor {
            tensor: tensor.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(Box::new(status))
    }
}

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`), the spelling users grep for in server logs
/// and other Triton clients; tonic's own `Display` prints a sentence instead.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
