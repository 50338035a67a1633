//! Interop with NVIDIA's own Python client: runs `tests/python/test_interop.py` (pytest, `tritonclient[grpc]`,
//! `onnxruntime` as the reference) against a real Ferry server on a loopback port.

use ferry_tests::{TestServer, run_pytest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_the_answers_onnxruntime_gives() {
    let server = TestServer::with_all_models().await.expect("server");
    let status = run_pytest("test_interop.py", &[("FERRY_GRPC_URL", server.url())]).await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient interop suite failed: {status}"
    );
}
