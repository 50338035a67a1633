//! Triton's own client example flows (`tests/python/test_triton_examples.py`: health and metadata, sync, async
//! and streaming inference, strings, INT8, identity, statistics) through `tritonclient.grpc` and
//! `tritonclient.http`, against Ferry's ONNX twins of Triton's example models.

use ferry_tests::{TestServer, run_pytest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritons_example_client_flows_work_unchanged() {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    let status = run_pytest(
        "test_triton_examples.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the Triton example flows failed: {status}");
}
