//! End-to-end tests of stateful models (`sequence_batching`): the real server on
//! `tests/sequence_repository` (GRU cells and running sums with explicit state, on real ONNX Runtime),
//! driven by NVIDIA's `tritonclient` over gRPC (unary and ModelStreamInfer) and REST in
//! `tests/python/test_sequence.py`, whose reference runs each model alone in onnxruntime.
//!
//! Triton behaviour pinned: core `sequence_batch_scheduler.cc` (SequenceBatchScheduler::Enqueue: a
//! correlation id is required, a sequence's first request must carry START, requests of a sequence run in
//! order; the reaper releases idle sequences) and `infer_handler.cc` (SetInferenceRequestMetadata: the
//! `sequence_id`, `sequence_start`, `sequence_end` parameters).

use ferry_tests::{TestServer, repo_root, run_pytest};

#[tokio::test(flavor = "multi_thread")]
async fn tritonclient_sequences_get_the_answers_of_a_lone_onnxruntime_run() {
    let server = TestServer::start(vec![repo_root().join("tests/sequence_repository")])
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_sequence.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient sequence suite failed: {status}"
    );
}
