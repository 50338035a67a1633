//! Ferry called from other languages' stacks, each against a real server on loopback ports: KServe's own Python
//! clients (`tests/python/test_kserve.py`).

use ferry_tests::{HttpFrontEnd, TestServer, run_pytest};

async fn start() -> (TestServer, HttpFrontEnd) {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    (server, http)
}

async fn stop(server: TestServer, http: HttpFrontEnd) {
    http.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_grpc_and_rest_clients_get_the_answers_onnxruntime_gives() {
    let (server, http) = start().await;
    let status = run_pytest(
        "test_kserve.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    stop(server, http).await;
    assert!(status.success(), "the KServe client suite failed: {status}");
}
