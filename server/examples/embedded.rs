//! Ferry embedded in a program, with no server and no port: opens a model repository, runs Triton's
//! `simple` model (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 on 16 INT32 values), shows that a
//! wrong request fails as it would over gRPC, and shuts down.
//!
//! `cargo run -p ferry-server --example embedded [REPOSITORY]` (default: the bundled
//! `examples/model_repository`). docs/embedded.md explains each step.

use std::{path::PathBuf, process::ExitCode};

use ferry_server::engine::{Engine, Request};

fn main() -> ExitCode {
    let repository = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/model_repository"));
    // Loading blocks (ONNX Runtime opens and warms up every model): before the async runtime starts.
    let engine = match Engine::open(&repository) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("cannot open {}: {error}", repository.display());
            return ExitCode::FAILURE;
        }
    };
    for model in engine.models() {
        println!("model {} version {}: {}", model.name, model.version, model.state);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let a: Vec<i32> = (0..16).collect();
        let b = vec![1i32; 16];
        let request = Request::new("simple")
            .input("INPUT0", &[1, 16], &a)
            .input("INPUT1", &[1, 16], &b);
        let response = engine.infer(request).await?;
        let sum: Vec<i32> = response.output("OUTPUT0")?.to_vec()?;
        let difference: Vec<i32> = response.output("OUTPUT1")?.to_vec()?;
        println!("version {} answered", response.model_version);
        println!("INPUT0 + INPUT1 = {sum:?}");
        println!("INPUT0 - INPUT1 = {difference:?}");
        // The same validation as the servers: 15 values where the model takes 16.
        let wrong =
            Request::new("simple")
                .input("INPUT0", &[1, 15], &a[..15])
                .input("INPUT1", &[1, 15], &b[..15]);
        if let Err(error) = engine.infer(wrong).await {
            println!("a wrong shape fails with {:?}: {error}", error.grpc_code());
        }
        engine.shutdown().await;
        Ok::<_, ferry_server::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inference failed: {error}");
            ExitCode::FAILURE
        }
    }
}
