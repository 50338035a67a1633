//! Ferry's server: a Triton-compatible inference server for ONNX models.
//!
//! [`Server::start`] loads a model repository on ONNX Runtime and [`Server::serve`] answers Triton's gRPC
//! protocol on a listener; the `ferry` binary wires them to command-line flags. Tests use the same two calls
//! on an ephemeral loopback port.

pub mod config;
mod datatype;
mod error;
pub mod grpc;
mod limits;
pub mod model;
pub mod onnx;
pub mod repository;
pub mod request;
pub mod stats;

use std::{future::Future, path::PathBuf, sync::Arc};

pub use datatype::DataType;
pub use error::Error;
use ferry_proto::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// The largest gRPC message Ferry accepts or sends by default: generous for tensors, bounded against abuse.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Model repositories in Triton's layout.
    pub model_repositories: Vec<PathBuf>,
    /// Where ONNX Runtime was found.
    pub onnxruntime: onnx::LibrarySource,
    /// The largest gRPC message accepted or sent; larger requests get `RESOURCE_EXHAUSTED`.
    pub max_message_bytes: usize,
}

/// A server with its models loaded, ready to serve.
#[derive(Debug, Clone)]
pub struct Server {
    registry: Arc<repository::Registry>,
    max_message_bytes: usize,
}

impl Server {
    /// Starts ONNX Runtime and loads every model of the repositories. Blocks while models load, so call it
    /// from a blocking context (or before the async runtime starts serving).
    pub fn start(options: &ServerOptions) -> Result<Self, anyhow::Error> {
        let environment = onnx::start(&options.onnxruntime).map_err(anyhow::Error::msg)?;
        let registry = repository::Registry::load(&environment, &options.model_repositories)?;
        Ok(Server {
            registry: Arc::new(registry),
            max_message_bytes: options.max_message_bytes,
        })
    }

    /// The registry of served models.
    pub fn registry(&self) -> &Arc<repository::Registry> {
        &self.registry
    }

    /// Serves gRPC on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let service =
            GrpcInferenceServiceServer::new(grpc::InferenceService::new(Arc::clone(&self.registry)))
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes);
        // Small responses must not wait for Nagle's algorithm; the listener, not the builder, sets it here.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            // Outermost, so that it sees the statuses tonic produces before any handler runs.
            .layer(tower::util::MapResponseLayer::new(
                limits::resource_exhausted_for_oversized,
            ))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}
