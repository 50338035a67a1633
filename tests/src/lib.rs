//! Shared harness for Ferry's end-to-end tests: a real server, started in-process on an ephemeral loopback
//! port with the repository's example and test models, and stopped when the test ends.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Certificates made for a test run (shared with the server's own tests).
#[path = "../../server/tests/support/pki.rs"]
pub mod pki;
mod rest;
mod shm;
pub mod tls;

pub use rest::{RestReply, rest_request, rest_request_with_headers};
pub use shm::ShmObject;

use anyhow::Context;
use ferry_proto::GrpcInferenceServiceClient;
use ferry_server::{
    Server, ServerOptions, auth::Access, connection::ConnectionLimits, core::ServerName, onnx,
    repository::RepositoryOptions, tls::TlsPorts,
};
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
    /// The address the gRPC server listens on.
    pub address: SocketAddr,
    server: Server,
    grpc: FrontEnd,
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
        Self::start_with_connections(repository, max_message_bytes, ConnectionLimits::default()).await
    }

    /// Starts a server whose connections are bounded by `connections` (small timeouts and caps, for tests
    /// of those bounds).
    pub async fn start_with_connections(
        repository: RepositoryOptions,
        max_message_bytes: usize,
        connections: ConnectionLimits,
    ) -> anyhow::Result<Self> {
        let mut options = Self::options(repository, max_message_bytes)?;
        options.connections = connections;
        Self::start_with_options(options).await
    }

    /// Starts a server that reports `name` in ServerMetadata (the `--server-name` flag).
    pub async fn start_named(repository: RepositoryOptions, name: ServerName) -> anyhow::Result<Self> {
        let options = Self::options(repository, ferry_server::MAX_MESSAGE_BYTES)?;
        Self::launch(options, name, Access::open()).await
    }

    /// The options the other constructors start a server with: `repository`, messages of at most
    /// `max_message_bytes`, ONNX Runtime found the way the `ferry` binary finds it, defaults elsewhere.
    pub fn options(repository: RepositoryOptions, max_message_bytes: usize) -> anyhow::Result<ServerOptions> {
        let onnxruntime = onnx::find_library(std::env::var_os("ORT_DYLIB_PATH").as_deref().map(Path::new))
            .context(onnx::MISSING_LIBRARY_HELP)?;
        Ok(ServerOptions {
            repository,
            onnxruntime,
            max_message_bytes,
            connections: ConnectionLimits::default(),
            grpc_response_compression: Default::default(),
        })
    }

    /// Starts a server with `options` as they are (from [`TestServer::options`], changed as a test needs).
    pub async fn start_with_options(options: ServerOptions) -> anyhow::Result<Self> {
        Self::launch(options, ServerName::default(), Access::open()).await
    }

    /// Starts a server on `repositories` with TLS on the ports `tls` has acceptors for (gRPC here, REST and
    /// metrics when [`TestServer::start_http`] and [`TestServer::start_metrics`] start them).
    pub async fn start_with_tls(repositories: Vec<PathBuf>, tls: TlsPorts) -> anyhow::Result<Self> {
        let repository = RepositoryOptions {
            strict_readiness: false,
            ..RepositoryOptions::new(repositories)
        };
        let options = Self::options(repository, ferry_server::MAX_MESSAGE_BYTES)?;
        Self::launch_with(options, ServerName::default(), tls, Access::open()).await
    }

    /// Starts a server on `repositories` with TLS on the ports of `tls` that admits callers by `access`: the
    /// caller of a mutual TLS connection is named by its client certificate.
    pub async fn start_with_tls_and_access(
        repositories: Vec<PathBuf>,
        tls: TlsPorts,
        access: Access,
    ) -> anyhow::Result<Self> {
        let options = Self::options(
            RepositoryOptions::new(repositories),
            ferry_server::MAX_MESSAGE_BYTES,
        )?;
        Self::launch_with(options, ServerName::default(), tls, access).await
    }

    /// Starts a server that admits callers by `access` (API keys, policy, restricted groups, closed APIs).
    pub async fn start_with_access(options: ServerOptions, access: Access) -> anyhow::Result<Self> {
        Self::launch(options, ServerName::default(), access).await
    }

    async fn launch(options: ServerOptions, name: ServerName, access: Access) -> anyhow::Result<Self> {
        Self::launch_with(options, name, TlsPorts::default(), access).await
    }

    async fn launch_with(
        options: ServerOptions,
        name: ServerName,
        tls: TlsPorts,
        access: Access,
    ) -> anyhow::Result<Self> {
        let server = tokio::task::spawn_blocking(move || Server::start(&options))
            .await??
            .with_server_name(name)
            .with_tls(tls)
            .with_access(access);
        let serving = server.clone();
        let grpc = spawn_front_end("gRPC", move |listener, stopped| async move {
            serving.serve(listener, stopped).await
        })
        .await?;
        Ok(TestServer {
            address: grpc.address,
            server,
            grpc,
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

    /// The server's registry, shared, for tests that build a front end of their own over it.
    pub fn registry_arc(&self) -> &std::sync::Arc<ferry_server::repository::Registry> {
        self.server.registry()
    }

    /// Who may do what on the server's front ends.
    pub fn access(&self) -> &std::sync::Arc<Access> {
        self.server.access()
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

    /// The ModelStatistics of `model`, which must have exactly one ready version.
    pub async fn statistics(&self, model: &str) -> ferry_proto::inference::ModelStatistics {
        let mut client = self.raw_client().await.expect("client");
        let request = ferry_proto::inference::ModelStatisticsRequest {
            name: model.into(),
            version: String::new(),
        };
        let mut stats = client
            .model_statistics(request)
            .await
            .expect("statistics")
            .into_inner()
            .model_stats;
        assert_eq!(stats.len(), 1, "{model} has one version");
        stats.remove(0)
    }

    /// Stops the gRPC server and waits until it has stopped (dropping it stops it without waiting).
    pub async fn stop(self) {
        self.grpc.stop().await;
    }
}

/// The shutdown signal a front end started by the harness waits on.
type Stopped = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds a loopback port and runs `serve` on it in a task until the returned handle stops it.
async fn spawn_front_end<F, Fut, E>(what: &'static str, serve: F) -> anyhow::Result<FrontEnd>
where
    F: FnOnce(TcpListener, Stopped) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown: Stopped = Box::pin(async {
            let _ = stopped.await;
        });
        if let Err(error) = serve(listener, shutdown).await {
            eprintln!("test {what} server failed: {error}");
        }
    });
    Ok(FrontEnd {
        address,
        stop: Some(stop),
        task: Some(task),
    })
}

impl TestServer {
    /// Also serves Triton's HTTP/REST protocol, on another loopback port, from the same loaded models. The
    /// REST front end runs until the returned value is stopped or dropped.
    pub async fn start_http(&self) -> anyhow::Result<HttpFrontEnd> {
        let server = self.server.clone();
        spawn_front_end("HTTP", move |listener, stopped| async move {
            server.serve_http(listener, stopped).await
        })
        .await
    }

    /// Also serves the Prometheus metrics endpoint (`GET /metrics`), on another loopback port, from the same
    /// loaded models, until the returned value is stopped or dropped.
    pub async fn start_metrics(&self) -> anyhow::Result<HttpFrontEnd> {
        let server = self.server.clone();
        spawn_front_end("metrics", move |listener, stopped| async move {
            server.serve_metrics(listener, stopped).await
        })
        .await
    }
}

/// A front end (REST or metrics) of a [`TestServer`], serving on a loopback port for the lifetime of the value.
pub struct FrontEnd {
    /// The address it listens on.
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The REST front end's handle, named for what the tests use it for.
pub type HttpFrontEnd = FrontEnd;

impl FrontEnd {
    /// The `host:port` a client dials (tritonclient.http's `url`, a metrics scraper's target).
    pub fn url(&self) -> String {
        self.address.to_string()
    }

    /// Stops the front end and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FrontEnd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs one Python test file of `tests/python/` with pytest from the project's `.venv`, with `env` set
/// (the server addresses), and says whether it passed.
pub async fn run_pytest(file: &str, env: &[(&str, String)]) -> std::process::ExitStatus {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` to create the Python environment the interop tests need",
        python.display()
    );
    tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            &format!("tests/python/{file}"),
        ])
        .current_dir(repo_root())
        .env("FERRY_REPO_ROOT", repo_root())
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .expect("pytest starts")
}

/// Writes into `repository` the model `name`: Y = X·W·W for X of [`rows`, `n`] (W of [`n`, `n`], 1/`n`
/// everywhere, so that a matrix of ones comes back as ones), `4·n²` bytes of weights and some
/// `4·rows·n²` floating-point operations a request: at 512 by 512, tens of milliseconds, so that a request
/// sent with another finds the instance running that one busy. Batches of one, two CPU instances.
pub fn write_matmul_model(repository: &Path, name: &str, n: usize, rows: usize) {
    let folder = repository.join(name);
    std::fs::create_dir_all(folder.join("1")).expect("version folder");
    let script = "import sys, numpy as np\n\
        from onnx import TensorProto, helper, numpy_helper\n\
        n, rows = int(sys.argv[2]), int(sys.argv[3])\n\
        w = numpy_helper.from_array(np.full((n, n), 1.0 / n, np.float32), 'W')\n\
        g = helper.make_graph([helper.make_node('MatMul', ['X', 'W'], ['A']), helper.make_node('MatMul', ['A', 'W'], ['Y'])], 'matmul',\n\
        \x20   [helper.make_tensor_value_info('X', TensorProto.FLOAT, ['b', rows, n])],\n\
        \x20   [helper.make_tensor_value_info('Y', TensorProto.FLOAT, ['b', rows, n])], [w])\n\
        m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n\
        m.ir_version = 8\n\
        open(sys.argv[1], 'wb').write(m.SerializeToString())\n";
    let status = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(folder.join("1/model.onnx"))
        .args([n.to_string(), rows.to_string()])
        .status()
        .expect("python starts");
    assert!(status.success(), "writing the model {name} failed");
    std::fs::write(
        folder.join("config.pbtxt"),
        format!(
            "max_batch_size: 1\n\
             input [ {{ name: \"X\", data_type: TYPE_FP32, dims: [ {rows}, {n} ] }} ]\n\
             output [ {{ name: \"Y\", data_type: TYPE_FP32, dims: [ {rows}, {n} ] }} ]\n\
             instance_group [ {{ count: 2, kind: KIND_CPU }} ]\n"
        ),
    )
    .expect("config");
}

/// A one-row request for a model of [`write_matmul_model`] with `n` columns and `rows` rows: X all ones, so
/// that Y comes back all ones.
pub fn matmul_request(model: &str, n: usize, rows: usize) -> ferry_proto::inference::ModelInferRequest {
    use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};

    let dim = |d: usize| i64::try_from(d).expect("a test dimension fits i64");
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "X".into(),
            datatype: "FP32".into(),
            shape: vec![1, dim(rows), dim(n)],
            ..Default::default()
        }],
        raw_input_contents: vec![1f32.to_le_bytes().repeat(rows * n).into()],
        ..Default::default()
    }
}

/// A one-row request for `model`, a copy of Triton's `simple` (INT32 INPUT0 and INPUT1 of [1, 16]; OUTPUT0 is
/// their sum, OUTPUT1 their difference), with every element of INPUT0 `a` and of INPUT1 `b`.
pub fn simple_request(model: &str, a: i32, b: i32) -> ferry_proto::inference::ModelInferRequest {
    use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};

    let row = |value: i32| value.to_le_bytes().repeat(16);
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        raw_input_contents: vec![row(a).into(), row(b).into()],
        ..Default::default()
    }
}

/// The access rules of a server whose only callers are API keys: `grants` holds each caller's identity,
/// key and scopes. The keys file and policy are written, as an operator would, to a folder that is gone once
/// they are loaded.
pub fn access_for_keys(grants: &[(&str, &str, &[&str])]) -> Access {
    use std::fmt::Write;

    let files = tempfile::tempdir().expect("temp dir");
    let (keys, policy) = (files.path().join("keys"), files.path().join("policy.toml"));
    let (mut key_lines, mut policy_text) = (String::new(), String::new());
    for (identity, key, scopes) in grants {
        let hash = ferry_server::auth::keys::hash_key(key.as_bytes());
        writeln!(key_lines, "{identity} {hash}").expect("string");
        let scopes: Vec<String> = scopes.iter().map(|scope| format!("{scope:?}")).collect();
        writeln!(
            policy_text,
            "[[grant]]\nidentity = {identity:?}\nscopes = [{}]\n",
            scopes.join(", ")
        )
        .expect("string");
    }
    std::fs::write(&keys, key_lines).expect("keys");
    std::fs::write(&policy, policy_text).expect("policy");
    Access::load(&ferry_server::auth::AccessOptions {
        api_keys_file: Some(keys),
        policy_file: Some(policy),
        ..ferry_server::auth::AccessOptions::default()
    })
    .expect("access")
}
