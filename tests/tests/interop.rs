//! Interop with NVIDIA's own Python client: runs `tests/python/test_interop.py` (pytest, `tritonclient[grpc]`,
//! `onnxruntime` as the reference) against a real Ferry server on a loopback port.

use std::process::Stdio;

use ferry_tests::{TestServer, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_the_answers_onnxruntime_gives() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` to create the Python environment the interop test needs",
        python.display()
    );
    let server = TestServer::with_all_models().await.expect("server");
    let status = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python/test_interop.py",
        ])
        .current_dir(repo_root())
        .env("FERRY_GRPC_URL", server.url())
        .env("FERRY_REPO_ROOT", repo_root())
        .stdin(Stdio::null())
        .status()
        .await
        .expect("pytest starts");
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient interop suite failed: {status}"
    );
}
