//! The transport-free core below the front ends: every RPC of Triton's protocol as a method that takes plain
//! or protobuf values and returns the answer or Ferry's [`Error`](crate::Error). The gRPC front end
//! ([`crate::grpc`]), ModelStreamInfer ([`crate::stream`]) and REST ([`crate::http`]) each decode their wire
//! format, call the core, and encode what it returns (an error becomes a gRPC status through
//! [`grpc_code`](crate::Error::grpc_code) and an HTTP status through
//! [`http_status`](crate::Error::http_status)); none of them builds another's request types. So
//! validation, inference, statistics, model control and shared memory have one code path, and the same
//! mistake fails, and counts, the same on every protocol.
//!
//! - `infer`: inference, from a decoded request ([`InferenceService::infer`]) or from a REST body decoded
//!   once its model is known ([`InferenceService::infer_with`]).
//! - `server`: liveness, readiness and metadata of the server and its models, their configs and statistics.
//! - `repository`: the repository index and model control (load, unload).
//! - `shared_memory`: system and CUDA shared memory regions (status, register, unregister).
//! - `settings`: trace and log settings.
//! - `drift`: a version's input drift report, and its baseline ([`crate::drift`]).
//! - `quality`: truths posted for earlier requests, and the live quality kept from them
//!   ([`crate::quality`]).
//! - `traffic`: version labels and traffic policies (get, set, label, promote, rollback, history).
//! - `access`: the caller each request acts for, and the per-model checks of [`crate::auth`].

mod access;
mod drift;
mod infer;
mod quality;
mod repository;
mod server;
mod settings;
mod shadow;
mod shared_memory;
mod traffic;

use std::sync::Arc;

pub use drift::{BaselineChange, DRIFT_BASELINE, DRIFT_REPORT};
pub use infer::{
    ROUTE_PARAMETER, ROUTING_KEY_HEADER_FIELD, ROUTING_KEY_PARAMETER, check_routing_key, give_routing_key,
};
pub use quality::{FeedbackOutcome, MODEL_QUALITY, POST_FEEDBACK};
pub use server::{EXTENSIONS, MAX_SERVER_NAME_BYTES, SERVER_NAME, ServerName};

use crate::{repository::Registry, shm::SharedMemoryRegistry};

/// The header (gRPC metadata or HTTP) that carries a request's routing key, which keeps a caller on one
/// version of a model whose traffic is split.
pub const ROUTING_KEY_HEADER: &str = "x-ferry-routing-key";

/// The core every front end calls (gRPC unary and streaming, REST); cheap to clone, all state is in the
/// model registry and the shared memory regions.
#[derive(Debug, Clone)]
pub struct InferenceService {
    registry: Arc<Registry>,
    shared_memory: Arc<SharedMemoryRegistry>,
    max_message_bytes: usize,
    server_name: ServerName,
    /// Who may do what ([`crate::auth`]); everything is open unless the server was given a policy.
    access: Arc<crate::auth::Access>,
    /// The caller this copy of the service acts for ([`InferenceService::acting_for`]).
    caller: crate::auth::Identity,
}

impl InferenceService {
    /// A service answering from `registry` whose shared memory regions are `shared_memory`: front ends
    /// that share it see each other's registrations, as Triton's gRPC and HTTP endpoints do.
    pub fn with_shared_memory(registry: Arc<Registry>, shared_memory: Arc<SharedMemoryRegistry>) -> Self {
        Self {
            registry,
            shared_memory,
            max_message_bytes: crate::MAX_MESSAGE_BYTES,
            server_name: ServerName::default(),
            access: Arc::default(),
            caller: crate::auth::Identity::Anonymous,
        }
    }

    /// The same service reporting `name` in ServerMetadata.
    pub fn with_server_name(self, name: ServerName) -> Self {
        Self {
            server_name: name,
            ..self
        }
    }

    /// The same service refusing responses larger than `bytes` with RESOURCE_EXHAUSTED before they are
    /// sent (tonic would answer OUT_OF_RANGE, which Triton's clients do not expect).
    pub fn with_max_message_bytes(self, bytes: usize) -> Self {
        Self {
            max_message_bytes: bytes,
            ..self
        }
    }
}
