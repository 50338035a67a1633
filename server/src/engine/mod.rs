//! Ferry as a library: the model repository, the batchers and the ONNX Runtime backend in-process, with no
//! port opened. [`Engine::open`] loads a repository as `ferry` does at start; [`Engine::infer`] runs a
//! request through the same transport-free core ([`InferenceService`]) that the gRPC and REST front ends
//! call, so a request is validated, batched, counted and refused exactly as it would be over the network,
//! with the same [`Error`] (whose [`grpc_code`](Error::grpc_code) and [`http_status`](Error::http_status)
//! still say what a client would have got).
//!
//! ```no_run
//! # async fn run() -> Result<(), ferry_server::Error> {
//! use ferry_server::engine::{Engine, Request};
//!
//! let engine = Engine::open("examples/model_repository")?;
//! let request = Request::new("simple")
//!     .input("INPUT0", &[1, 16], &[1i32; 16])
//!     .input("INPUT1", &[1, 16], &[2i32; 16]);
//! let response = engine.infer(request).await?;
//! let sum: Vec<i32> = response.output("OUTPUT0")?.to_vec()?;
//! assert_eq!(sum, [3; 16]);
//! engine.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! `docs/embedded.md` describes it, and `server/examples/embedded.rs` runs it.

mod request;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use ferry_proto::inference as pb;
pub use request::{Element, Output, Request, Response};
use tokio::sync::Semaphore;

use crate::{
    Error,
    config::ModelSpec,
    core::InferenceService,
    onnx::{self, LibrarySource},
    repository::{IndexEntry, Registry, RepositoryOptions},
};

/// How an engine is opened: the repositories and how they are managed (the same options `ferry` takes
/// from its flags), where ONNX Runtime is, and the response size limit.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The model repositories, control mode, resource limits and response cache, as for the server.
    pub repository: RepositoryOptions,
    /// Where ONNX Runtime is; found as `ferry` finds it (ORT_DYLIB_PATH, the project's .venv, python3's
    /// onnxruntime, the system path) when `None`.
    pub onnxruntime: Option<LibrarySource>,
    /// The largest response, in bytes, as `--grpc-max-message-bytes` bounds the server's.
    pub max_response_bytes: usize,
}

impl EngineOptions {
    /// The server's defaults for the repositories `roots`: every model loaded at start, strict readiness,
    /// default limits, ONNX Runtime found as `ferry` finds it.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        EngineOptions {
            repository: RepositoryOptions::new(roots),
            onnxruntime: None,
            max_response_bytes: crate::MAX_MESSAGE_BYTES,
        }
    }
}

/// A model repository served in-process. Cheap to clone: clones share the models, and each may run requests
/// from any task. The models are released when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<Registry>,
    service: InferenceService,
    /// One permit per request in flight; [`Engine::shutdown`] takes them all to wait for the last.
    in_flight: Semaphore,
    /// Set once shutdown begins: new requests are refused from then on.
    closed: AtomicBool,
}

/// As many requests as may be in flight at once; far more than memory allows.
const MAX_IN_FLIGHT: u32 = u32::MAX >> 1;

impl Engine {
    /// Opens the model repository `root` with the server's defaults ([`EngineOptions::new`]). Blocks while
    /// the models load: call it before the async runtime starts, or from `spawn_blocking`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        Self::open_with(EngineOptions::new(vec![root.into()]))
    }

    /// Starts ONNX Runtime and loads the repositories as `options` say. A model that fails to load does not
    /// fail the engine (it is listed by [`Engine::models`] with its reason, and requests for it fail as on
    /// the server); a repository that cannot be read, or no ONNX Runtime, does. Blocks while the models load.
    pub fn open_with(options: EngineOptions) -> Result<Self, Error> {
        let library = match options.onnxruntime {
            Some(library) => library,
            None => onnx::find_library(None)
                .ok_or_else(|| Error::Internal(onnx::MISSING_LIBRARY_HELP.to_owned()))?,
        };
        let environment = onnx::start(&library).map_err(Error::Internal)?;
        let registry = Registry::start(environment, options.repository)?;
        let service = InferenceService::with_shared_memory(Arc::clone(&registry), Arc::default())
            .with_max_message_bytes(options.max_response_bytes);
        Ok(Engine {
            inner: Arc::new(Inner {
                registry,
                service,
                in_flight: Semaphore::new(MAX_IN_FLIGHT as usize),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Runs one inference request: a [`Request`] built here, or a protocol `ModelInferRequest` as a gRPC
    /// client would send it. The answer, or the error the server would have answered with; after
    /// [`Engine::shutdown`] began, `UNAVAILABLE` ([`Error::Overloaded`]).
    pub async fn infer(&self, request: impl Into<pb::ModelInferRequest>) -> Result<Response, Error> {
        let request = request.into();
        let _permit = self.admit(&request.model_name)?;
        self.inner.service.infer(request).await.map(Response::from)
    }

    /// A permit for one request, or the refusal of an engine that is shutting down.
    fn admit(&self, model: &str) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        let refused = || {
            Error::Overloaded(format!(
                "the engine is shutting down: the request for model '{model}' was not run"
            ))
        };
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(refused());
        }
        self.inner.in_flight.try_acquire().map_err(|_| refused())
    }

    /// Every model of the repositories with each version's state (`READY`, `UNAVAILABLE` and the reason,
    /// ...), sorted by name and version, as RepositoryIndex lists them.
    pub fn models(&self) -> Vec<IndexEntry> {
        self.inner.registry.index()
    }

    /// Whether every model the engine knows serves (the server's readiness, strict by default); false once
    /// shutdown began.
    pub fn is_ready(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire) && self.inner.service.is_ready()
    }

    /// Whether `version` of model `name` serves (any version when empty), as ModelReady answers; only a
    /// version that is neither a number nor a label is an error.
    pub fn is_model_ready(&self, name: &str, version: &str) -> Result<bool, Error> {
        self.inner.service.is_model_ready(&pb::ModelReadyRequest {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    /// ModelMetadata of model `name` (`version` empty for the highest ready one): its inputs and outputs
    /// with the batch dimension, as clients see them.
    pub fn metadata(&self, name: &str, version: &str) -> Result<pb::ModelMetadataResponse, Error> {
        self.inner.service.describe_model(&pb::ModelMetadataRequest {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    /// The validated configuration and version number of the version of `name` that serves a request for
    /// `version` (empty: the highest ready version), for callers that build requests from the model's
    /// tensors.
    pub fn model(&self, name: &str, version: &str) -> Result<(Arc<ModelSpec>, u64), Error> {
        let model = self.inner.registry.resolve(name, version)?;
        Ok((Arc::clone(&model.spec), model.version))
    }

    /// ModelStatistics of model `name` (every model when empty): requests, batches, and time spent queued
    /// and computing, as the server reports them.
    pub fn statistics(&self, name: &str) -> Result<pb::ModelStatisticsResponse, Error> {
        self.inner.service.statistics_of(&pb::ModelStatisticsRequest {
            name: name.to_owned(),
            version: String::new(),
        })
    }

    /// Stops taking requests (they fail with `UNAVAILABLE`, readiness turns false) and waits for those in
    /// flight, from every clone, to be answered. The models are released when the last clone is dropped:
    /// each version's queue closes and its instance threads end.
    pub async fn shutdown(self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.registry.begin_shutdown();
        // Every permit back means no request is in flight any more; the semaphore is never closed, so this
        // only waits.
        if let Ok(all) = self.inner.in_flight.acquire_many(MAX_IN_FLIGHT).await {
            all.forget();
        }
    }
}
