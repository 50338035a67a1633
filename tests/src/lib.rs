//! Shared harness for Ferry's end-to-end tests: a real server, started in-process on an ephemeral loopback
//! port with the repository's example and test models, and stopped when the test ends.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use ferry_proto::GrpcInferenceServiceClient;
use ferry_server::{Server, ServerOptions, onnx};
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

/// A Ferry server serving gRPC on a loopback port for the lifetime of the value.
pub struct TestServer {
    /// The address the server listens on.
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `repositories`, with ONNX Runtime found the way the `ferry` binary finds it.
    pub async fn start(repositories: Vec<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with_limit(repositories, ferry_server::MAX_MESSAGE_BYTES).await
    }

    /// Starts a server whose gRPC messages may be at most `max_message_bytes` long.
    pub async fn start_with_limit(
        repositories: Vec<PathBuf>,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let onnxruntime = onnx::find_library(std::env::var_os("ORT_DYLIB_PATH").as_deref().map(Path::new))
            .context(onnx::MISSING_LIBRARY_HELP)?;
        let options = ServerOptions {
            model_repositories: repositories,
            onnxruntime,
            max_message_bytes,
        };
        let server = tokio::task::spawn_blocking(move || Server::start(&options)).await??;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = server.serve(listener, shutdown).await {
                eprintln!("test server failed: {error}");
            }
        });
        Ok(TestServer {
            address,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts a server on the example and test repositories together.
    pub async fn with_all_models() -> anyhow::Result<Self> {
        Self::start(vec![example_repository(), test_repository()]).await
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
