//! The KServe v2 / Triton HTTP REST front end.
//!
//! REST is a second front end over the transport-free core ([`crate::core`]) that gRPC also calls, not a
//! second server: each handler reads the path and body into the values the core takes, calls the same
//! [`InferenceService`], and writes its answer as JSON and binary tensors, or its [`crate::Error`] as
//! `{"error": ...}` with the status [`crate::Error::http_status`] gives. So validation, inference,
//! statistics, model control and shared memory have one code path, and a failure means the same thing on
//! both protocols. An inference body is decoded once the core has resolved its model, so a body the model
//! cannot take counts as a failed request, as the same mistake over gRPC does.
//!
//! - [`routes`]: Triton's paths and the handlers.
//! - [`infer`]: an inference request body to `ModelInferRequest`, and the response back.
//! - [`tensor`]: JSON tensor data to raw little-endian bytes and back.
//! - [`binary`]: the binary tensor data extension (`Inference-Header-Content-Length`).
//! - `quality`: Ferry's feedback and live quality routes (`/v2/models/{model}/feedback`, `.../quality`).
//! - `drift`: Ferry's input drift report and baseline routes (`/v2/models/{model}/drift`).
//! - `shm`: the shared memory endpoints (`/v2/systemsharedmemory/...`, `/v2/cudasharedmemory/...`).
//! - [`encoding`]: gzip and deflate inference requests and answers (`Content-Encoding`, `Accept-Encoding`).
//! - [`json`]: protobuf messages and parameters as Triton's JSON.
//! - [`error`]: `{"error": "<message>"}` answers.

pub mod binary;
mod drift;
pub mod encoding;
pub mod error;
pub mod infer;
pub mod json;
mod quality;
pub mod routes;
mod shm;
pub mod tensor;
mod traffic;

use std::{future::Future, sync::Arc};

pub use error::HttpError;
pub use routes::router;

/// The one gRPC-to-HTTP status mapping, re-exported so that clients and tests can check REST against gRPC.
pub use crate::error::http_status;

use crate::{connection::Gate, core::InferenceService};

/// Serves REST on `listener` until `shutdown` completes, answering every request through `service`.
/// Request bodies above `max_body_bytes` are refused with 413 before they are buffered; connections are
/// admitted and bounded by `gate`.
pub async fn serve(
    service: InferenceService,
    max_body_bytes: usize,
    gate: Arc<Gate>,
    listener: impl Into<crate::connection::Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access = Arc::clone(service.access());
    // Callers are admitted (or refused) before any handler runs or any body is read; the same span per
    // call as on the gRPC port, continuing a W3C `traceparent` header, covers refusals too.
    let app = router(service, max_body_bytes)
        .layer(crate::auth::AuthLayer::http(access))
        .layer(crate::telemetry::TraceContextLayer);
    crate::connection::serve_http(gate, listener, app, shutdown).await
}
