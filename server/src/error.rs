//! Ferry's one error type and the one place that maps it to a gRPC status.

use tonic::{Code, Status};

/// Everything that can go wrong between receiving a request and answering it, or while loading a model.
///
/// Each variant carries a message that already names the field, the expected and the given value, so front
/// ends only choose the status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No model of that name is in any repository.
    #[error("unknown model '{model}'")]
    UnknownModel {
        /// The requested model name.
        model: String,
    },
    /// The model exists but the version does not, or is not one it serves.
    #[error("unknown version '{version}' of model '{model}' (versions served: {served})")]
    UnknownVersion {
        /// The requested model name.
        model: String,
        /// The requested version, as sent.
        version: String,
        /// The versions that are ready, comma-separated.
        served: String,
    },
    /// The model or version is known but cannot serve (failed to load, or is not loaded yet).
    #[error("model '{model}' is not ready: {reason}")]
    ModelNotReady {
        /// The requested model name.
        model: String,
        /// Why it is not ready.
        reason: String,
    },
    /// The request breaks the model's contract: the message names the tensor or field and both values.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request waited in the queue past its timeout and was never run.
    #[error("{0}")]
    QueueTimeout(String),
    /// A bounded resource is exhausted (a full queue); the client may retry later.
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
    /// The RPC exists in the protocol but Ferry does not serve it yet.
    #[error("{0} is not implemented by this server")]
    Unimplemented(&'static str),
}

impl Error {
    /// The gRPC status code Triton uses for this kind of failure.
    pub fn grpc_code(&self) -> Code {
        match self {
            Error::UnknownModel { .. } | Error::UnknownVersion { .. } => Code::NotFound,
            Error::ModelNotReady { .. } | Error::QueueTimeout(_) => Code::Unavailable,
            Error::InvalidRequest(_) | Error::Config { .. } | Error::ModelLoad(_) => Code::InvalidArgument,
            Error::Overloaded(_) => Code::ResourceExhausted,
            Error::Execution(_) => Code::Internal,
            Error::Unimplemented(_) => Code::Unimplemented,
        }
    }

    /// A shorthand for the most common error: a request that breaks the model's contract.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(error.grpc_code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_triton() {
        let unknown = Error::UnknownModel { model: "m".into() };
        assert_eq!(Status::from(unknown).code(), Code::NotFound);
        assert_eq!(Status::from(Error::invalid("x")).code(), Code::InvalidArgument);
        assert_eq!(
            Status::from(Error::Overloaded("full".into())).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(Error::Execution("boom".into())).code(),
            Code::Internal
        );
        let not_ready = Error::ModelNotReady {
            model: "m".into(),
            reason: "r".into(),
        };
        assert_eq!(Status::from(not_ready).code(), Code::Unavailable);
        let status = Status::from(Error::Unimplemented("ModelStreamInfer"));
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("ModelStreamInfer"));
    }
}
