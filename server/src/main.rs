//! `ferry`: serves ONNX models from Triton-layout model repositories over Triton's gRPC protocol.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use ferry_server::{Server, ServerOptions, onnx};
use tracing_subscriber::EnvFilter;

/// Serve ONNX models over Triton's gRPC inference protocol (KServe v2).
///
/// Flags keep Triton's names where Triton has them, so existing launch scripts carry over.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
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

    /// Port of the KServe v2 HTTP/REST server. Accepted for compatibility; not served yet.
    #[arg(long, default_value_t = 8000, value_name = "PORT")]
    http_port: u16,

    /// Port of the Prometheus metrics endpoint. Accepted for compatibility; not served yet.
    #[arg(long, default_value_t = 8002, value_name = "PORT")]
    metrics_port: u16,

    /// Verbose logging level: 0 logs info and above, 1 adds debug, 2 and more add trace. RUST_LOG, when set,
    /// takes precedence.
    #[arg(long, default_value_t = 0, value_name = "LEVEL")]
    log_verbose: u8,

    /// The largest gRPC message accepted or sent, in bytes; larger requests get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = ferry_server::MAX_MESSAGE_BYTES, value_name = "BYTES")]
    grpc_max_message_bytes: usize,

    /// Path of libonnxruntime.so. Without it Ferry looks in ORT_DYLIB_PATH, then the project's .venv, then
    /// the onnxruntime package of python3, then the system library path.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "FILE")]
    onnxruntime_lib: Option<PathBuf>,
}

fn init_logging(verbose: u8) {
    // ONNX Runtime logs every graph transformation at info level; it speaks only at warnings unless asked.
    let default = match verbose {
        0 => "info,ort=warn",
        1 => "debug,ort=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging(flags.log_verbose);
    let Some(onnxruntime) = onnx::find_library(flags.onnxruntime_lib.as_deref()) else {
        eprintln!("ferry: {}", onnx::MISSING_LIBRARY_HELP);
        return ExitCode::FAILURE;
    };
    tracing::info!(path = %onnxruntime.path.display(), found_by = onnxruntime.found_by, "using ONNX Runtime");
    let options = ServerOptions {
        model_repositories: flags.model_repositories.clone(),
        onnxruntime,
        max_message_bytes: flags.grpc_max_message_bytes,
    };
    let server = match Server::start(&options) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("ferry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = SocketAddr::new(flags.grpc_address, flags.grpc_port);
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address).await?;
        tracing::info!(%address, "gRPC server listening (inference.GRPCInferenceService)");
        tracing::info!(
            http_port = flags.http_port,
            metrics_port = flags.metrics_port,
            "the HTTP/REST and metrics ports are not served yet"
        );
        let shutdown = async {
            // If the signal handler cannot be installed the server runs until killed, which is still correct.
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        };
        server
            .serve(listener, shutdown)
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferry: {error:#}");
            ExitCode::FAILURE
        }
    }
}
