//! The dynamic batcher seen from outside: batches form under concurrent load, each request gets exactly its
//! own rows, and queue timeouts, cancellations and a full queue get their answers without running anything.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, ModelInferRequest, infer_parameter::ParameterChoice,
    model_infer_request::InferInputTensor,
};
use ferry_tests::{TestServer, test_repository};
use tonic::Code;

/// A request of `rows` rows of 4 FP32 values for an `add_one_*` model, row `r` filled with `base + r`.
fn add_one_request(model: &str, rows: usize, base: f32) -> ModelInferRequest {
    let values: Vec<u8> = (0..rows)
        .flat_map(|r| [base + r as f32; 4])
        .flat_map(f32::to_le_bytes)
        .collect();
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 4],
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_input_contents: vec![Bytes::from(values)],
        ..Default::default()
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

async fn start() -> TestServer {
    TestServer::start(vec![test_repository()]).await.expect("server")
}

#[tokio::test]
async fn concurrent_requests_form_one_full_batch() {
    let server = start().await;
    let client = server.raw_client().await.expect("client");
    // add_one_dynamic waits up to 2 s for 4 rows: four 1-row requests sent together leave as one batch.
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let response = client
                    .model_infer(add_one_request("add_one_dynamic", 1, 10.0 * i as f32))
                    .await
                    .expect("infer")
                    .into_inner();
                assert_eq!(response.outputs[0].shape, [1, 4]);
                assert_eq!(
                    floats(&response.raw_output_contents[0]),
                    vec![10.0 * i as f32 + 1.0; 4]
                );
            })
        })
        .collect();
    let started = Instant::now();
    for task in tasks {
        task.await.expect("task");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a full batch does not wait out the delay"
    );
    let stats = server.statistics("add_one_dynamic").await;
    assert_eq!(stats.execution_count, 1);
    assert_eq!(stats.inference_count, 4);
    let sizes: Vec<(u64, u64)> = stats
        .batch_stats
        .iter()
        .map(|b| (b.batch_size, b.compute_infer.as_ref().map_or(0, |d| d.count)))
        .collect();
    assert_eq!(sizes, [(4, 1)]);
    let inference = stats.inference_stats.expect("inference stats");
    assert_eq!(inference.success.map(|s| s.count), Some(4));
    assert_eq!(inference.queue.map(|q| q.count), Some(4));
    server.stop().await;
}

/// Ferry's adaptive queue delay, which Triton does not have: Triton's dynamic batcher (core
/// `src/dynamic_batch_scheduler.cc`, `GetDynamicBatch` and `pending_batch_delay_ns_`) holds a batch that is
/// neither full nor of a preferred size until its oldest request has waited `max_queue_delay_microseconds`,
/// as Ferry does without the flag.
#[tokio::test]
async fn under_the_adaptive_delay_one_request_at_a_time_runs_without_waiting_out_the_delay() {
    let server = start().await;
    let mut client = server.raw_client().await.expect("client");
    // Both models hold a batch for up to 2 s; only add_one_adaptive has ferry.adaptive_queue_delay.
    let delay = Duration::from_secs(2);
    for i in 0..5 {
        let started = Instant::now();
        let response = client
            .model_infer(add_one_request("add_one_adaptive", 1, i as f32))
            .await
            .expect("infer")
            .into_inner();
        let took = started.elapsed();
        assert_eq!(floats(&response.raw_output_contents[0]), vec![i as f32 + 1.0; 4]);
        assert!(
            took < delay / 2,
            "request {i} took {took:?}, the delay is {delay:?}"
        );
    }
    let stats = server.statistics("add_one_adaptive").await;
    assert_eq!(
        (stats.inference_count, stats.execution_count),
        (5, 5),
        "each ran alone"
    );
    let started = Instant::now();
    client
        .model_infer(add_one_request("add_one_dynamic", 1, 0.0))
        .await
        .expect("infer");
    assert!(
        started.elapsed() >= delay,
        "the fixed-delay twin waits out the delay, took {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn under_the_adaptive_delay_a_burst_is_batched_and_its_tail_does_not_wait_out_the_delay() {
    let server = start().await;
    let client = server.raw_client().await.expect("client");
    // 201 requests at once: while the instance is busy the others gather into batches, and once the burst
    // is over the last, partial batch leaves without waiting out the 2 s delay.
    let started = Instant::now();
    let tasks: Vec<_> = (0..201)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let response = client
                    .model_infer(add_one_request("add_one_adaptive", 1, i as f32))
                    .await
                    .expect("infer")
                    .into_inner();
                assert_eq!(floats(&response.raw_output_contents[0]), vec![i as f32 + 1.0; 4]);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let stats = server.statistics("add_one_adaptive").await;
    assert_eq!(stats.inference_count, 201);
    let sizes: Vec<u64> = stats.batch_stats.iter().map(|b| b.batch_size).collect();
    assert!(
        sizes.iter().any(|&size| size > 1),
        "requests were batched: {sizes:?}"
    );
    assert!(sizes.iter().all(|&size| size <= 4), "{sizes:?}");
    server.stop().await;
}

#[tokio::test]
async fn every_request_gets_exactly_its_own_rows_under_load() {
    let server = start().await;
    let client = server.raw_client().await.expect("client");
    let tasks: Vec<_> = (0..300usize)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let rows = 1 + i % 5;
                let base = 1000.0 * i as f32;
                let mut request = add_one_request("add_one_greedy", rows, base);
                request.id = format!("r{i}");
                let response = client.model_infer(request).await.expect("infer").into_inner();
                assert_eq!(response.id, format!("r{i}"));
                assert_eq!(response.outputs[0].shape, [rows as i64, 4]);
                let expected: Vec<f32> = (0..rows).flat_map(|r| [base + r as f32 + 1.0; 4]).collect();
                assert_eq!(floats(&response.raw_output_contents[0]), expected, "request {i}");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let stats = server.statistics("add_one_greedy").await;
    let rows: u64 = (0..300u64).map(|i| 1 + i % 5).sum();
    assert_eq!(stats.inference_count, rows);
    let batched_rows: u64 = stats
        .batch_stats
        .iter()
        .map(|b| b.batch_size * b.compute_infer.as_ref().map_or(0, |d| d.count))
        .sum();
    assert_eq!(batched_rows, rows, "batch statistics account for every row");
    assert!(stats.batch_stats.iter().all(|b| b.batch_size <= 16));
    server.stop().await;
}

#[tokio::test]
async fn a_request_past_its_queue_timeout_fails_without_running() {
    let server = start().await;
    let mut client = server.raw_client().await.expect("client");
    let mut request = add_one_request("add_one_queue", 1, 0.0);
    request.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(1_000)),
        },
    );
    let started = Instant::now();
    let status = client.model_infer(request).await.expect_err("times out");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    // Triton's text, compared whole by Triton's own tests (`DynamicBatchScheduler`).
    assert_eq!(status.message(), "Request timeout expired");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout, not the 3 s delay, ended the wait"
    );
    // A full batch now runs at once; the timed-out request is not part of it.
    client
        .model_infer(add_one_request("add_one_queue", 8, 0.0))
        .await
        .expect("full batch");
    let stats = server.statistics("add_one_queue").await;
    assert_eq!((stats.execution_count, stats.inference_count), (1, 8));
    server.stop().await;
}

#[tokio::test]
async fn a_request_whose_client_gave_up_never_runs() {
    let server = start().await;
    let mut client = server.raw_client().await.expect("client");
    let mut request = tonic::Request::new(add_one_request("add_one_queue", 1, 0.0));
    request.set_timeout(Duration::from_millis(100));
    let status = client
        .model_infer(request)
        .await
        .expect_err("deadline passes in the queue");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{:?}: {}",
        status.code(),
        status.message()
    );
    client
        .model_infer(add_one_request("add_one_queue", 8, 0.0))
        .await
        .expect("full batch");
    let stats = server.statistics("add_one_queue").await;
    assert_eq!(
        (stats.execution_count, stats.inference_count),
        (1, 8),
        "the abandoned request never ran"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_unavailable_at_once() {
    let server = start().await;
    let client = server.raw_client().await.expect("client");
    // Two requests fill add_one_queue's queue (max_queue_size 2) while it waits for 8 rows.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(add_one_request("add_one_queue", 1, 0.0));
                request.set_timeout(Duration::from_secs(1));
                client.model_infer(request).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut third = client.clone();
    let status = third
        .model_infer(add_one_request("add_one_queue", 1, 0.0))
        .await
        .expect_err("queue full");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    // Triton's text (`DynamicBatchScheduler::Enqueue`), whole.
    assert_eq!(status.message(), "Exceeds maximum queue size");
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once");
    for task in waiting {
        assert!(
            task.await.expect("task").is_err(),
            "the waiting requests hit their deadline"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_scheduling_parameters_are_invalid_arguments() {
    let server = start().await;
    let mut client = server.raw_client().await.expect("client");
    let mut request = add_one_request("add_one_greedy", 1, 0.0);
    request.parameters.insert(
        "priority".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(3)),
        },
    );
    let status = client.model_infer(request).await.expect_err("no level 3");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("priority 3"), "{}", status.message());
    server.stop().await;
}

fn index_request(index: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "gather_table".into(),
        inputs: vec![InferInputTensor {
            name: "index".into(),
            datatype: "INT64".into(),
            shape: vec![1, 1],
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_input_contents: vec![Bytes::from(index.to_le_bytes().to_vec())],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failing_batch_fails_its_requests_with_internal_and_the_instance_goes_on() {
    let server = start().await;
    let mut client = server.raw_client().await.expect("client");
    let status = client
        .model_infer(index_request(30))
        .await
        .expect_err("index out of range");
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert!(
        status.message().contains("out of data bounds"),
        "ONNX Runtime's message: {}",
        status.message()
    );
    let response = client
        .model_infer(index_request(3))
        .await
        .expect("the instance still serves")
        .into_inner();
    assert_eq!(floats(&response.raw_output_contents[0]), [30.0]);
    let stats = server.statistics("gather_table").await;
    let inference = stats.inference_stats.expect("inference stats");
    assert_eq!(inference.fail.map(|f| f.count), Some(1));
    assert_eq!(inference.success.map(|s| s.count), Some(1));
    server.stop().await;
}

/// With `ferry.lone_requests_on_worker` on, requests sent one at a time may run on their handler's worker
/// and bursts on the instance: either way each request gets exactly its own rows, and the statistics account
/// for every row and request. Two workers, as the server has on two cores, so that a burst's handlers meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_requests_on_the_worker_get_their_own_rows_alone_and_in_bursts() {
    let server = start().await;
    let mut client = server.raw_client().await.expect("client");
    let check = |response: ferry_proto::inference::ModelInferResponse, rows: usize, base: f32| {
        let expected: Vec<f32> = (0..rows).flat_map(|r| [base + r as f32 + 1.0; 4]).collect();
        assert_eq!(floats(&response.raw_output_contents[0]), expected);
    };
    for i in 0..100usize {
        let (rows, base) = (1 + i % 3, 10.0 * i as f32);
        let response = client
            .model_infer(add_one_request("add_one_lone", rows, base))
            .await
            .expect("infer alone")
            .into_inner();
        check(response, rows, base);
    }
    let tasks: Vec<_> = (0..64usize)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let (rows, base) = (1 + i % 4, 5000.0 + 100.0 * i as f32);
                let response = client
                    .model_infer(add_one_request("add_one_lone", rows, base))
                    .await
                    .expect("infer in a burst")
                    .into_inner();
                (response, rows, base)
            })
        })
        .collect();
    for task in tasks {
        let (response, rows, base) = task.await.expect("task");
        check(response, rows, base);
    }
    let stats = server.statistics("add_one_lone").await;
    let rows: u64 = (0..100u64).map(|i| 1 + i % 3).sum::<u64>() + (0..64u64).map(|i| 1 + i % 4).sum::<u64>();
    assert_eq!(stats.inference_count, rows);
    let inference = stats.inference_stats.expect("inference stats");
    assert_eq!(inference.success.map(|d| d.count), Some(164));
    assert_eq!(inference.fail.map(|d| d.count), Some(0));
    server.stop().await;
}
