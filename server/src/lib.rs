//! Ferry's server: a Triton-compatible inference server for ONNX models.
//!
//! [`Server::start`] loads a model repository on ONNX Runtime, [`Server::serve`] answers Triton's gRPC
//! protocol on a listener and [`Server::serve_http`] its HTTP/REST protocol on another; the `ferry` binary
//! wires them to command-line flags. Tests make the same calls on ephemeral loopback ports. [`engine::Engine`]
//! serves the same models in-process, with no port, for embedded and batch use.

pub mod auth;
pub mod batch;
pub mod cache;
pub mod check;
pub mod classification;
pub mod compression;
pub mod config;
pub mod connection;
pub mod core;
mod datatype;
pub mod drift;
pub mod engine;
pub mod ensemble;
mod error;
pub mod gpu;
pub mod grpc;
pub mod grpc_traffic;
mod handoff;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod payload;
pub mod quality;
pub mod repository;
pub mod request;
mod sampling;
pub mod settings;
pub mod shm;
pub mod stats;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod traffic;

use std::{future::Future, sync::Arc};

pub use datatype::DataType;
pub use error::Error;
use ferry_proto::GrpcInferenceServiceServer;
use tokio::net::TcpListener;

/// The largest gRPC message Ferry accepts or sends by default: generous for tensors, bounded against abuse.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The model repositories and how they are managed.
    pub repository: repository::RepositoryOptions,
    /// Where ONNX Runtime was found.
    pub onnxruntime: onnx::LibrarySource,
    /// The largest gRPC message accepted or sent; larger requests get `RESOURCE_EXHAUSTED`.
    pub max_message_bytes: usize,
    /// Bounds on client connections, on all ports together.
    pub connections: connection::ConnectionLimits,
    /// Whether gRPC inference answers are compressed, and with which coding the client reads
    /// (Triton's `--grpc-infer-response-compression-level`).
    pub grpc_response_compression: compression::grpc::ResponseCompression,
}

/// A server with its models loaded, ready to serve.
#[derive(Debug, Clone)]
pub struct Server {
    registry: Arc<repository::Registry>,
    /// System shared memory regions, one set for every front end, as in Triton.
    shared_memory: Arc<shm::SharedMemoryRegistry>,
    max_message_bytes: usize,
    grpc_response_compression: compression::grpc::ResponseCompression,
    /// Admits and bounds the connections of every port.
    gate: Arc<connection::Gate>,
    /// The name ServerMetadata reports on every front end.
    server_name: core::ServerName,
    /// The TLS acceptors of the ports that serve TLS.
    tls: tls::TlsPorts,
    /// Who may do what, on every front end ([`auth`]).
    access: Arc<auth::Access>,
}

impl Server {
    /// Starts ONNX Runtime and loads the models the control mode asks for. Blocks while models load, so call
    /// it from a blocking context (or before the async runtime starts serving).
    pub fn start(options: &ServerOptions) -> Result<Self, anyhow::Error> {
        let environment = onnx::start(&options.onnxruntime).map_err(anyhow::Error::msg)?;
        let registry = repository::Registry::start(environment, options.repository.clone())?;
        Ok(Server {
            registry,
            shared_memory: Arc::default(),
            max_message_bytes: options.max_message_bytes,
            grpc_response_compression: options.grpc_response_compression,
            gate: connection::Gate::new(&options.connections),
            server_name: core::ServerName::default(),
            tls: tls::TlsPorts::default(),
            access: Arc::default(),
        })
    }

    /// The same server admitting callers by `access` (API keys, policy, restricted groups, closed APIs)
    /// instead of letting everyone do everything.
    pub fn with_access(self, access: auth::Access) -> Self {
        Server {
            access: Arc::new(access),
            ..self
        }
    }

    /// The same server reporting `name` in ServerMetadata (gRPC and REST `GET /v2`) instead of "ferry".
    pub fn with_server_name(self, name: core::ServerName) -> Self {
        Server {
            server_name: name,
            ..self
        }
    }

    /// The same server with TLS on the ports `tls` has an acceptor for; the others stay plain text.
    pub fn with_tls(self, tls: tls::TlsPorts) -> Self {
        Server { tls, ..self }
    }

    /// The inference core every front end calls.
    fn inference_service(&self) -> core::InferenceService {
        core::InferenceService::with_shared_memory(
            Arc::clone(&self.registry),
            Arc::clone(&self.shared_memory),
        )
        .with_max_message_bytes(self.max_message_bytes)
        .with_server_name(self.server_name.clone())
        .with_access(Arc::clone(&self.access))
    }

    /// Who may do what on this server's front ends.
    pub fn access(&self) -> &Arc<auth::Access> {
        &self.access
    }

    /// The registry of served models.
    pub fn registry(&self) -> &Arc<repository::Registry> {
        &self.registry
    }

    /// Serves gRPC on `listener` until `shutdown` completes: Triton's inference service, Ferry's drift
    /// service ([`drift::grpc`]), its feedback service ([`quality::grpc`]), its traffic service, gRPC health checking and server reflection; over TLS when [`Server::with_tls`] gave the gRPC port an acceptor.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), anyhow::Error> {
        let service = GrpcInferenceServiceServer::new(self.inference_service())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        // Ferry's own traffic administration, beside Triton's service.
        let traffic =
            ferry_proto::ferry::traffic::v1::traffic_server::TrafficServer::new(self.inference_service())
                .max_decoding_message_size(self.max_message_bytes);
        // Every connection passes the gate, which also sets TCP_NODELAY, then its TLS handshake if any.
        let incoming = connection::incoming(
            Arc::clone(&self.gate),
            connection::Listener::new(listener, self.tls.grpc.clone()),
        );
        // Long-lived streams (health Watch) end when shutdown begins; otherwise shutdown would wait on them.
        let (stopping, stopping_signal) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(true);
        };
        let health = health::HealthService::new(Arc::clone(&self.registry), stopping_signal);
        let health = tonic_health::pb::health_server::HealthServer::new(health);
        // Reflection lets grpcurl, ghz and other tools call Ferry without its proto files.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.gate.limits().max_concurrent_streams)
            .http2_max_header_list_size(self.gate.limits().max_header_bytes)
            // Outermost, so that it sees the statuses tonic produces before any handler runs.
            .layer(tower::util::MapResponseLayer::new(
                limits::resource_exhausted_for_oversized,
            ))
            .layer(telemetry::TraceContextLayer)
            .layer(connection::TrackRequestsLayer)
            // Handlers and tonic see messages uncompressed, and answers are compressed last.
            .layer(compression::grpc::CompressionLayer::new(
                self.max_message_bytes,
                self.grpc_response_compression,
            ))
            // Innermost: callers are admitted from the request's head before tonic reads a message (the
            // compression layer above only wraps the body, which is inflated as tonic reads it).
            .layer(auth::AuthLayer::grpc(Arc::clone(&self.access)))
            .add_service(service)
            .add_service(
                ferry_proto::ferry::drift::v1::drift_service_server::DriftServiceServer::new(
                    drift::grpc::DriftGrpc(self.inference_service()),
                ),
            )
            .add_service(
                ferry_proto::ferry::feedback::v1::feedback_server::FeedbackServer::new(
                    quality::grpc::FeedbackGrpc(self.inference_service()),
                )
                .max_decoding_message_size(self.max_message_bytes),
            )
            .add_service(traffic)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }

    /// Serves Triton's HTTP/REST protocol (KServe v2) on `listener` until `shutdown` completes. Requests go
    /// through the same core ([`core::InferenceService`]) as [`Server::serve`], so both protocols validate,
    /// infer, count and fail alike; request bodies are bounded by the same message size limit. Over TLS when
    /// [`Server::with_tls`] gave the REST port an acceptor.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        http::serve(
            self.inference_service(),
            self.max_message_bytes,
            Arc::clone(&self.gate),
            connection::Listener::new(listener, self.tls.http.clone()),
            shutdown,
        )
        .await
    }

    /// Serves Prometheus metrics (`GET /metrics`, text format 0.0.4, Triton's metric names plus Ferry's
    /// histograms) on `listener` until `shutdown` completes. Like Triton, metrics get a port of their own so
    /// that scrapers need no access to the inference ports. Over TLS when [`Server::with_tls`] gave the
    /// metrics port an acceptor.
    pub async fn serve_metrics(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        metrics::serve(
            Arc::clone(&self.registry),
            Arc::clone(&self.gate),
            connection::Listener::new(listener, self.tls.metrics.clone()),
            shutdown,
        )
        .await
    }
}
