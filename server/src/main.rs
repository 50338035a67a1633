//! `ferry`: serves ONNX models from Triton-layout model repositories over Triton's gRPC and HTTP/REST protocols,
//! with Prometheus metrics on a third port.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use ferry_server::auth::{Access, AccessOptions, JwtOptions, QuotaOptions, Rate, Scope};
use ferry_server::{
    Server, ServerOptions,
    cache::CacheFlags,
    compression::grpc::ResponseCompression,
    connection::{self, ConnectionLimits},
    core::ServerName,
    limits::ResourceLimits,
    onnx,
    repository::{ControlMode, RepositoryOptions},
    telemetry::{self, LogFormat, TelemetryOptions},
    tls::{self, TlsFlags},
};

mod immediate_exit;

/// mimalloc instead of glibc's allocator: the request path allocates and frees many small buffers across
/// threads (HTTP/2 frames, protobuf messages, tensors handed from tokio workers to instance threads and back),
/// where glibc's arenas cost about a tenth of the server's CPU under load (`perf record`, mlp_small, 32 in
/// flight); docs/benchmarks.md has the A/B figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve ONNX models over Triton's gRPC and HTTP/REST inference protocols (KServe v2).
///
/// Flags keep Triton's names where Triton has them, so existing launch scripts carry over.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None,
          after_help = "To check a model repository before shipping it, without serving it: ferry check --help\n\
                        To run a model over a file of inputs, offline: ferry batch --help")]
struct Flags {
    /// A model repository in Triton's layout: <repo>/<model>/config.pbtxt and numbered version folders
    /// holding model.onnx. Repeat the flag to serve several repositories; model names must be unique.
    #[arg(long = "model-repository", value_name = "DIR", required = true)]
    model_repositories: Vec<PathBuf>,

    /// Address the gRPC server binds to.
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDRESS")]
    grpc_address: std::net::IpAddr,

    /// Port of the gRPC server (Triton's GRPCInferenceService).
    #[arg(long, default_value_t = 8001, value_name = "PORT")]
    grpc_port: u16,

    /// Address the HTTP/REST server binds to.
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDRESS")]
    http_address: std::net::IpAddr,

    /// Port of the KServe v2 HTTP/REST server (Triton's REST API, served alongside gRPC).
    #[arg(long, default_value_t = 8000, value_name = "PORT")]
    http_port: u16,

    /// Whether to serve Prometheus metrics (GET /metrics on --metrics-port).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    allow_metrics: bool,

    /// Address the Prometheus metrics endpoint binds to.
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDRESS")]
    metrics_address: std::net::IpAddr,

    /// Port of the Prometheus metrics endpoint (GET /metrics, Triton's metric names).
    #[arg(long, default_value_t = 8002, value_name = "PORT")]
    metrics_port: u16,

    /// How logs are written: `text` lines or one `json` object per line.
    #[arg(long, value_enum, default_value_t = LogFormatFlag::Text, value_name = "FORMAT")]
    log_format: LogFormatFlag,

    /// OTLP/gRPC endpoint (e.g. http://127.0.0.1:4317) to export request, queue, batch and execution spans
    /// to; without it the standard OTEL_EXPORTER_OTLP_ENDPOINT is used, and without either nothing is
    /// exported. W3C `traceparent` sent by clients is continued; TraceSetting changes the sampling rate.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// Seconds that requests and streams still open when the listeners close get to finish before ferry
    /// exits anyway.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    exit_timeout_secs: u64,

    /// Seconds between SIGTERM (or SIGINT) and closing the listeners, during which ferry reports not ready
    /// but still serves, so that load balancers stop sending first (Kubernetes: a few seconds). A second
    /// signal exits at once.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    shutdown_drain_secs: u64,

    /// Client connections open at once on all ports together; more are closed as soon as they are accepted,
    /// with a warning. Lowered at start to fit the open file limit.
    #[arg(long, default_value_t = connection::DEFAULT_MAX_CONNECTIONS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,

    /// Calls open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS); clients queue more.
    #[arg(long, default_value_t = connection::DEFAULT_MAX_CONCURRENT_STREAMS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_streams: u32,

    /// Seconds a new connection may take to send its first request's headers (on HTTP/1, every request's
    /// headers) before it is closed.
    #[arg(long, default_value_t = connection::DEFAULT_HEADER_READ_TIMEOUT.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,

    /// Seconds a connection with no request in flight and no bytes moving stays open.
    #[arg(long, default_value_t = connection::DEFAULT_IDLE_TIMEOUT.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    connection_idle_timeout_secs: u64,

    /// The largest request head in bytes, on every port: HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE (gRPC and
    /// REST), and on HTTP/1 the read buffer (a larger head gets 431).
    #[arg(long, default_value_t = connection::DEFAULT_MAX_HEADER_BYTES, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(i64::from(connection::MIN_MAX_HEADER_BYTES)..=16 * 1024 * 1024))]
    max_header_bytes: u32,

    /// Verbose logging level: 0 logs info and above, 1 adds debug, 2 and more add trace. RUST_LOG, when set,
    /// takes precedence; LogSettings changes it at run time.
    #[arg(long, default_value_t = 0, value_name = "LEVEL")]
    log_verbose: u8,

    /// How the set of served models may change: `none` loads every model at start and ignores later changes;
    /// `poll` also follows the repositories on disk (see --repository-poll-secs); `explicit` loads only
    /// --load-model models at start and then what RepositoryModelLoad and RepositoryModelUnload ask for.
    #[arg(long, value_enum, default_value_t = ControlModeFlag::None, value_name = "MODE", ignore_case = true)]
    model_control_mode: ControlModeFlag,

    /// In poll mode, seconds between two looks at the repositories. A change is loaded once two looks in a
    /// row see the same files, so a model still being copied is never loaded half-written.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    repository_poll_secs: u64,

    /// In explicit mode, a model to load at start; repeat for several, or give `*` (alone) for all.
    #[arg(long = "load-model", value_name = "NAME")]
    load_models: Vec<String>,

    /// In explicit mode, load a model that is in a repository but not loaded when a request for it comes:
    /// the request waits while it loads (once, however many wait), up to --load-on-demand-timeout-secs.
    #[arg(long)]
    load_on_demand: bool,

    /// The longest a request waits for its model to load on demand.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    load_on_demand_timeout_secs: u64,

    /// The most memory loaded models may take, in bytes (each version's resident memory measured at load
    /// and as each later instance opens its session, at least its model file's size each); a load that would pass it first unloads the least recently used
    /// idle models that are not pinned (`ferry.pinned`), or fails with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "BYTES")]
    model_memory_budget: Option<u64>,

    /// Whether the server reports ready only when every model it knows is ready (true, as in Triton), or
    /// as soon as it has started (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    strict_readiness: bool,

    /// The largest gRPC message accepted or sent, in bytes; larger requests get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = ferry_server::MAX_MESSAGE_BYTES, value_name = "BYTES")]
    grpc_max_message_bytes: usize,

    /// Whether ModelInfer and ModelStreamInfer answers are compressed (Triton's flag): `none`, or `low`,
    /// `medium`, `high`, which pick gzip or deflate from the client's grpc-accept-encoding as gRPC's C core
    /// does (low: gzip, medium and high: deflate, when the client reads both). Compressed requests are
    /// always accepted.
    #[arg(long, value_enum, default_value_t = ResponseCompression::None, value_name = "LEVEL", ignore_case = true)]
    grpc_infer_response_compression_level: ResponseCompression,

    #[command(flatten)]
    limits: ResourceLimits,

    #[command(flatten)]
    cache: CacheFlags,

    // Identity and authorisation (docs/security.md). Without --api-keys-file and --auth-policy every API
    // is open, as in Triton.
    /// API keys: a file of `<identity> sha256:<digest of the key>` lines (the digest of
    /// `printf %s "$KEY" | sha256sum`). Callers send a key as `authorization: Bearer <key>` or
    /// `x-api-key: <key>`. Without --auth-policy, every key's identity may do everything and callers without
    /// a key nothing but health.
    #[arg(long, value_name = "FILE")]
    api_keys_file: Option<PathBuf>,

    /// Bearer JWTs: a JSON Web Key Set file of HS256 (`oct`), RS256 (`RSA`) or ES256 (`EC`, P-256) keys,
    /// re-read when it changes. A token's `sub` is the caller's identity; `exp` is required, `nbf` checked.
    #[arg(long, value_name = "FILE")]
    jwt_jwks: Option<PathBuf>,

    /// The `iss` every bearer JWT must carry.
    #[arg(long, value_name = "ISSUER", requires = "jwt_jwks")]
    jwt_issuer: Option<String>,

    /// The `aud` every bearer JWT must carry; without it, tokens that carry an `aud` are refused.
    #[arg(long, value_name = "AUDIENCE", requires = "jwt_jwks")]
    jwt_audience: Option<String>,

    /// Clock skew allowed on a JWT's `exp` and `nbf`, in seconds (at most 300).
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=300))]
    jwt_leeway_secs: u64,

    /// Which identity holds which scopes (infer, metadata, stats, repository, shm, settings), for all models
    /// or some: a TOML file (JSON when named *.json) of `[[grant]]` entries; `identity = "anonymous"`
    /// opens scopes to callers without credentials.
    #[arg(long, value_name = "FILE")]
    auth_policy: Option<PathBuf>,

    /// Closes administrative APIs to everyone, whatever the policy: a comma-separated list of
    /// `repository`, `shm`, `settings`, `stats`.
    #[arg(long, value_delimiter = ',', value_name = "APIS", value_parser = parse_scope)]
    disable_api: Vec<Scope>,

    /// Accept model files in load requests (`file:<version>/<path>` parameters), which Ferry writes to disk
    /// and runs. Refused without this flag.
    #[arg(long)]
    allow_model_file_upload: bool,

    /// Folder for payload logs: models whose config sets `ferry.payload_log.rate` write sampled requests
    /// and responses to `DIR/<model>/<version>/payload-<n>.jsonl`. Without it such models fail to load.
    #[arg(long, value_name = "DIR")]
    payload_log_dir: Option<PathBuf>,

    /// Size at which a payload log file is fsynced and closed and the next one started.
    #[arg(long, value_name = "BYTES", default_value_t = ferry_server::payload::DEFAULT_MAX_FILE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    payload_log_max_file_bytes: u64,

    /// Payload log files kept per model version; the oldest are deleted past it.
    #[arg(long, value_name = "N", default_value_t = ferry_server::payload::DEFAULT_MAX_FILES,
          value_parser = parse_max_files)]
    payload_log_max_files: usize,

    /// Triton's restricted protocol groups: `<groups>:<key>=<value>` makes gRPC calls to the groups need the
    /// header `triton-grpc-protocol-<key>: <value>`. Groups: health, metadata, inference, shared-memory,
    /// model-config, model-repository, statistics, trace, logging. Repeatable; a group may be named in one
    /// flag only.
    #[arg(long, value_name = "GROUPS:KEY=VALUE")]
    grpc_restricted_protocol: Vec<String>,

    /// Triton's restricted API groups for REST: `<groups>:<key>=<value>` makes requests to the groups need
    /// the header `<key>: <value>`. Groups as for --grpc-restricted-protocol. Repeatable.
    #[arg(long, value_name = "GROUPS:KEY=VALUE")]
    http_restricted_api: Vec<String>,

    /// Requests per second each identity may make, and how many at once after a pause (BURST, one second's
    /// worth by default): a token bucket per identity (callers without credentials share one). Over it,
    /// RESOURCE_EXHAUSTED / HTTP 429 with Retry-After. Health is never limited. Off by default.
    #[arg(long, value_name = "RPS[:BURST]", value_parser = Rate::parse)]
    rate_limit: Option<Rate>,

    /// Requests each identity may have in flight at once (a stream counts as one while it is open; callers
    /// without credentials share one count). More get RESOURCE_EXHAUSTED / HTTP 429. Off by default.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight_per_identity: Option<u32>,

    /// The name ServerMetadata reports (gRPC, and REST `GET /v2`): 1 to 64 bytes of printable ASCII. Give
    /// `triton` where clients or health checks expect Triton's name.
    #[arg(long, default_value = ferry_server::core::SERVER_NAME, value_name = "NAME")]
    server_name: ServerName,

    /// Path of libonnxruntime.so. Without it Ferry looks in ORT_DYLIB_PATH, then the project's .venv, then
    /// the onnxruntime package of python3, then the system library path.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,

    /// TLS on the gRPC, REST and metrics ports (docs/security.md).
    #[command(flatten)]
    tls: TlsFlags,
}

/// `--model-control-mode` values, named as in Triton.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ControlModeFlag {
    None,
    Poll,
    Explicit,
}

impl From<ControlModeFlag> for ControlMode {
    fn from(flag: ControlModeFlag) -> Self {
        match flag {
            ControlModeFlag::None => ControlMode::None,
            ControlModeFlag::Poll => ControlMode::Poll,
            ControlModeFlag::Explicit => ControlMode::Explicit,
        }
    }
}

/// A `--disable-api` value.
fn parse_scope(name: &str) -> Result<Scope, String> {
    Scope::parse(name)
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatFlag {
    Text,
    Json,
}

fn main() -> ExitCode {
    // `ferry check ...` checks a repository without serving it (docs/operations.md). The server takes flags
    // only, so a first argument `check` or `batch` cannot be one of its command lines, which parse exactly
    // as before.
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(first) if first == "check" => return ferry_server::check::main(args),
        // `ferry batch ...` runs a model over a file of inputs, offline (docs/embedded.md).
        Some(first) if first == "batch" => return ferry_server::batch::main(args),
        _ => {}
    }
    let flags = Flags::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's connection lives on the runtime, so telemetry starts inside it.
    let telemetry = TelemetryOptions {
        log_format: match flags.log_format {
            LogFormatFlag::Text => LogFormat::Text,
            LogFormatFlag::Json => LogFormat::Json,
        },
        log_verbose: u32::from(flags.log_verbose),
        otlp_endpoint: flags.otlp_endpoint.clone(),
    };
    if let Err(error) = runtime.block_on(async { telemetry::init(&telemetry) }) {
        eprintln!("ferry: {error}");
        return ExitCode::FAILURE;
    }
    // Signals are handled from before the models load: as PID 1 in a container a signal without a handler
    // does nothing, so a stop while models load would otherwise wait for the runtime's kill. Until the
    // listeners open there is nothing to drain, and a signal exits at once.
    let signals = match runtime.block_on(async { Signals::install() }) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("ferry: cannot handle SIGTERM and SIGINT: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (loaded, loading) = tokio::sync::oneshot::channel();
    let while_loading = runtime.spawn(exit_on_signal_until(signals, loading));
    let Some(onnxruntime) = onnx::find_library(flags.onnxruntime_lib.as_deref()) else {
        eprintln!("ferry: {}", onnx::MISSING_LIBRARY_HELP);
        return ExitCode::FAILURE;
    };
    tracing::info!(path = %onnxruntime.path.display(), found_by = onnxruntime.found_by, "using ONNX Runtime");
    for setting in flags.limits.ignored_backend_settings() {
        tracing::warn!(%setting, "--backend-config setting ignored: Ferry acts only on [onnxruntime,]default-max-batch-size");
    }
    tracing::info!("{}", ferry_server::gpu::inventory().summary());
    if flags.load_models.iter().any(|m| m == "*") && flags.load_models.len() > 1 {
        eprintln!("ferry: --load-model=* must be the only --load-model");
        return ExitCode::FAILURE;
    }
    if flags.load_on_demand && flags.model_control_mode != ControlModeFlag::Explicit {
        eprintln!("ferry: --load-on-demand needs --model-control-mode=explicit");
        return ExitCode::FAILURE;
    }
    if flags.model_control_mode == ControlModeFlag::Poll && flags.repository_poll_secs == 0 {
        eprintln!("ferry: --repository-poll-secs must be greater than 0 in poll mode");
        return ExitCode::FAILURE;
    }
    let response_cache = match flags.cache.cache() {
        Ok(cache) => cache,
        Err(error) => {
            eprintln!("ferry: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(size) = flags.cache.deprecated_size() {
        tracing::warn!(
            "--response-cache-byte-size is deprecated, as in Triton: write --cache-config=local,size={size} instead"
        );
    }
    if let Some(cache) = &response_cache {
        tracing::info!(
            bytes = cache.usage().capacity,
            "response cache on, for models whose config has response_cache {{ enable: true }}"
        );
    }
    let repository = RepositoryOptions {
        control_mode: flags.model_control_mode.into(),
        poll_interval: Duration::from_secs(flags.repository_poll_secs),
        startup_models: flags.load_models.clone(),
        strict_readiness: flags.strict_readiness,
        limits: flags.limits,
        allow_model_file_upload: flags.allow_model_file_upload,
        payload_log: flags
            .payload_log_dir
            .clone()
            .map(|dir| ferry_server::payload::PayloadLogOptions {
                dir,
                max_file_bytes: flags.payload_log_max_file_bytes,
                max_files: flags.payload_log_max_files,
            }),
        response_cache,
        load_on_demand: flags.load_on_demand,
        load_on_demand_timeout: Duration::from_secs(flags.load_on_demand_timeout_secs),
        memory_budget: flags.model_memory_budget,
        ..RepositoryOptions::new(flags.model_repositories.clone())
    };
    let access = Access::load(&AccessOptions {
        api_keys_file: flags.api_keys_file.clone(),
        policy_file: flags.auth_policy.clone(),
        disabled: flags.disable_api.clone(),
        grpc_restricted: flags.grpc_restricted_protocol.clone(),
        http_restricted: flags.http_restricted_api.clone(),
        jwt: flags.jwt_jwks.clone().map(|jwks_file| JwtOptions {
            jwks_file,
            issuer: flags.jwt_issuer.clone(),
            audience: flags.jwt_audience.clone(),
            leeway_secs: flags.jwt_leeway_secs,
        }),
        quotas: QuotaOptions {
            rate: flags.rate_limit,
            max_in_flight: flags.max_in_flight_per_identity,
        },
    });
    let access = match access {
        Ok(access) => access,
        Err(error) => {
            eprintln!("ferry: {error}");
            return ExitCode::FAILURE;
        }
    };
    if access.authenticates() {
        tracing::info!("callers are authenticated and held to their scopes (docs/security.md)");
    } else {
        tracing::info!("every API is open to every caller, as in Triton (docs/security.md)");
    }
    if let Some(quotas) = access.quotas() {
        let options = quotas.options();
        tracing::info!(
            rate_per_second = options.rate.map(|rate| rate.per_second),
            burst = options.rate.map(|rate| rate.burst),
            max_in_flight = options.max_in_flight,
            "every identity is held to these limits; callers without credentials share one (docs/security.md)"
        );
    }
    let options = ServerOptions {
        repository,
        onnxruntime,
        max_message_bytes: flags.grpc_max_message_bytes,
        grpc_response_compression: flags.grpc_infer_response_compression_level,
        connections: ConnectionLimits {
            max_connections: usize::try_from(flags.max_connections).unwrap_or(usize::MAX),
            max_concurrent_streams: flags.max_concurrent_streams,
            header_read_timeout: Duration::from_secs(flags.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(flags.connection_idle_timeout_secs),
            max_header_bytes: flags.max_header_bytes,
        },
    };
    // Before the models load, so that a wrong certificate path fails at once.
    let tls_ports = match flags.tls.acceptors() {
        Ok(ports) => ports,
        Err(error) => {
            eprintln!("ferry: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(&options) {
        Ok(server) => server
            .with_server_name(flags.server_name.clone())
            .with_tls(tls_ports.clone())
            .with_access(access),
        Err(error) => {
            eprintln!("ferry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let _ = loaded.send(());
    let mut signals = match runtime.block_on(while_loading) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("ferry: the signal handler failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let registry = std::sync::Arc::clone(server.registry());
    let address = SocketAddr::new(flags.grpc_address, flags.grpc_port);
    let exit_timeout = Duration::from_secs(flags.exit_timeout_secs);
    let drain = Duration::from_secs(flags.shutdown_drain_secs);
    let http_address = SocketAddr::new(flags.http_address, flags.http_port);
    let metrics_address = SocketAddr::new(flags.metrics_address, flags.metrics_port);
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        let tls_acceptors = tls_ports.acceptors();
        if !tls_acceptors.is_empty() {
            tls::spawn_reloader(tls_acceptors, flags.tls.reload_poll())?;
        }
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen for gRPC on {address}: {error}"))?;
        let http_listener = tokio::net::TcpListener::bind(http_address)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen for HTTP on {http_address}: {error}"))?;
        // The bound addresses, so that port 0 shows which port the system chose.
        let (grpc_bound, http_bound) = (listener.local_addr()?, http_listener.local_addr()?);
        tracing::info!(address = %grpc_bound, tls = tls_ports.grpc.is_some(), "gRPC server listening (inference.GRPCInferenceService)");
        tracing::info!(address = %http_bound, tls = tls_ports.http.is_some(), "HTTP/REST server listening (KServe v2)");
        let metrics_listener = if flags.allow_metrics {
            let listener = tokio::net::TcpListener::bind(metrics_address)
                .await
                .map_err(|error| {
                    anyhow::anyhow!("cannot listen for metrics on {metrics_address}: {error}")
                })?;
            let bound = listener.local_addr()?;
            tracing::info!(address = %bound, tls = tls_ports.metrics.is_some(), "metrics server listening (Prometheus, /metrics)");
            Some(listener)
        } else {
            None
        };
        // One stop closes every listener; each server waits on its own receiver of it.
        let (stop, stopped) = tokio::sync::watch::channel(());
        let exit_deadline = until_stopped_then(stopped.clone(), exit_timeout);
        let (force, forced) = tokio::sync::oneshot::channel::<()>();
        let registry = std::sync::Arc::clone(server.registry());
        tokio::spawn(async move {
            let signal = signals.recv().await;
            registry.begin_shutdown();
            tracing::info!(
                signal,
                "shutdown 1/3: reporting not ready (ServerReady, /v2/health/ready, gRPC health)"
            );
            let close = async {
                if !drain.is_zero() {
                    tracing::info!(
                        drain_secs = drain.as_secs(),
                        "shutdown 2/3: still serving while load balancers drain"
                    );
                    tokio::time::sleep(drain).await;
                }
                tracing::info!(
                    exit_timeout_secs = exit_timeout.as_secs(),
                    "shutdown 3/3: closing the listeners; accepted requests and streams finish"
                );
                let _ = stop.send(());
                std::future::pending::<()>().await;
            };
            let signal = tokio::select! {
                () = close => return,
                signal = signals.recv() => signal,
            };
            tracing::warn!(signal, "second signal: exiting now, cutting requests still open");
            let _ = force.send(());
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<()>| async move {
            let _ = stopped.changed().await;
        };
        let grpc_stopped = until_stopped(stopped.clone());
        let http_stopped = until_stopped(stopped.clone());
        let metrics_stopped = until_stopped(stopped);
        let http = async {
            server
                .serve_http(http_listener, http_stopped)
                .await
                .map_err(anyhow::Error::from)
        };
        let metrics = async {
            match metrics_listener {
                Some(listener) => server
                    .serve_metrics(listener, metrics_stopped)
                    .await
                    .map_err(anyhow::Error::from),
                None => Ok(()),
            }
        };
        // Any server failing ends them all: ferry serves every port it was asked to or exits. After the
        // listeners close, requests in flight get --exit-timeout-secs to finish; clients still connected then
        // are cut.
        tokio::select! {
            served = async { tokio::try_join!(server.serve(listener, grpc_stopped), http, metrics) } => {
                served?;
                tracing::info!("shutdown complete: every request and stream finished");
                Ok(ExitCode::SUCCESS)
            }
            () = exit_deadline => {
                tracing::warn!(?exit_timeout, "exit timeout passed with requests or streams still open; exiting");
                Ok(ExitCode::SUCCESS)
            }
            Ok(()) = forced => Ok(ExitCode::FAILURE),
        }
    });
    registry.remove_uploads();
    telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ferry: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT until `loaded` fires, then hands the signals back for the graceful shutdown.
/// A signal before that, while the models load and no listener is open, exits at once with status 0: nothing
/// was accepted, so nothing is cut (spans are not flushed: nothing was served).
async fn exit_on_signal_until(mut signals: Signals, loaded: tokio::sync::oneshot::Receiver<()>) -> Signals {
    let signal = tokio::select! {
        signal = signals.recv() => signal,
        _ = loaded => return signals,
    };
    tracing::info!(signal, "signal while the models load: exiting without serving");
    // At once, without the C++ static destructors of ONNX Runtime, which threads still loading models use.
    immediate_exit::exit_now(0)
}

/// Completes `timeout` after the stop signal: the most ferry waits for open requests and streams to end.
async fn until_stopped_then(mut stopped: tokio::sync::watch::Receiver<()>, timeout: Duration) {
    let _ = stopped.changed().await;
    tokio::time::sleep(timeout).await;
}

/// The signals that stop ferry: SIGTERM (systemd, Kubernetes, container runtimes) and SIGINT (Ctrl-C).
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Replaces the default action of both signals; from here on they only wake [`Signals::recv`].
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// `--payload-log-max-files`: at least 1 (the file being written).
fn parse_max_files(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got '{text}'")),
    }
}
