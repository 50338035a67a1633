//! Shared harness for Ferry's end-to-end tests: a real server, started in-process on an ephemeral loopback
//! port with the repository's example and test models, and stopped when the test ends.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use ferry_proto::GrpcInferenceServiceClient;
use ferry_server::{Server, ServerOptions, onnx, repository::RepositoryOptions};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// The repository root, where the model repositories and the Python environment live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bundled example models served to users.
pub fn example_repository() -> PathBuf {
    repo_root().join("examples/model_repository")
}

/// Models that exist only for tests: every data type, a corrupt file, a malformed config.
pub fn test_repository() -> PathBuf {
    repo_root().join("tests/model_repository")
}

/// A Ferry server serving gRPC on a loopback port for the lifetime of the value ([`TestServer::start_http`]
/// adds REST).
pub struct TestServer {
    /// The address the server listens on.
    pub address: SocketAddr,
    server: Server,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `repositories`, with ONNX Runtime found the way the `ferry` binary finds it.
    /// Readiness is not strict, since the test repository holds models that fail on purpose.
    pub async fn start(repositories: Vec<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with_limit(repositories, ferry_server::MAX_MESSAGE_BYTES).await
    }

    /// Starts a server whose gRPC messages may be at most `max_message_bytes` long.
    pub async fn start_with_limit(
        repositories: Vec<PathBuf>,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let repository = RepositoryOptions {
            strict_readiness: false,
            ..RepositoryOptions::new(repositories)
        };
        Self::start_with(repository, max_message_bytes).await
    }

    /// Starts a server with the given repository management (control mode, polling, readiness).
    pub async fn start_with(repository: RepositoryOptions, max_message_bytes: usize) -> anyhow::Result<Self> {
        let onnxruntime = onnx::find_library(std::env::var_os("ORT_DYLIB_PATH").as_deref().map(Path::new))
            .context(onnx::MISSING_LIBRARY_HELP)?;
        let options = ServerOptions {
            repository,
            onnxruntime,
            max_message_bytes,
        };
        let server = tokio::task::spawn_blocking(move || Server::start(&options)).await??;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = server.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = serving.serve(listener, shutdown).await {
                eprintln!("test server failed: {error}");
            }
        });
        Ok(TestServer {
            address,
            server,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts a server on the example and test repositories together.
    pub async fn with_all_models() -> anyhow::Result<Self> {
        Self::start(vec![example_repository(), test_repository()]).await
    }

    /// The server's registry, for tests that look at what is loaded from inside.
    pub fn registry(&self) -> &ferry_server::repository::Registry {
        self.server.registry()
    }

    /// The `host:port` a client dials.
    pub fn url(&self) -> String {
        self.address.to_string()
    }

    /// A raw generated client, for requests the typed client would refuse to build.
    pub async fn raw_client(&self) -> anyhow::Result<GrpcInferenceServiceClient<Channel>> {
        let client = GrpcInferenceServiceClient::connect(format!("http://{}", self.address)).await?;
        Ok(client.max_decoding_message_size(ferry_server::MAX_MESSAGE_BYTES))
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    /// Also serves Triton's HTTP/REST protocol, on another loopback port, from the same loaded models. The
    /// REST front end runs until the returned value is stopped or dropped.
    pub async fn start_http(&self) -> anyhow::Result<HttpFrontEnd> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = self.server.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = server.serve_http(listener, shutdown).await {
                eprintln!("test HTTP server failed: {error}");
            }
        });
        Ok(HttpFrontEnd {
            address,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// The HTTP/REST front end of a [`TestServer`], serving on a loopback port for the lifetime of the value.
pub struct HttpFrontEnd {
    /// The address the REST API listens on.
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HttpFrontEnd {
    /// The `host:port` a REST client dials (tritonclient.http's `url`).
    pub fn url(&self) -> String {
        self.address.to_string()
    }

    /// Stops the REST front end and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpFrontEnd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
