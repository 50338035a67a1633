//! Ferry embedded ([`ferry_server::engine`]): the bundled `simple` model run in-process through the same
//! core as the servers, on real ONNX Runtime, with the same validation and errors, listing and readiness,
//! and a shutdown that waits for requests in flight. `server/examples/embedded.rs` makes the same calls.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
};

use ferry_server::engine::{Engine, EngineOptions, Request};
use tonic::Code;

#[path = "support/bundled.rs"]
mod bundled;

use bundled::{repo_root, repository};

fn simple_request(a: &[i32], b: &[i32]) -> Request {
    let rows = (a.len() / 16) as i64;
    Request::new("simple")
        .input("INPUT0", &[rows, 16], a)
        .input("INPUT1", &[rows, 16], b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_adds_and_subtracts_in_process() {
    let engine = Engine::open(repo_root().join("examples/model_repository")).expect("opens");
    let a: Vec<i32> = (0..32).collect();
    let b: Vec<i32> = (0..32).map(|i| 100 - 3 * i).collect();
    let response = engine
        .infer(simple_request(&a, &b).id("r1"))
        .await
        .expect("answers");
    assert_eq!(
        (
            response.model_name.as_str(),
            response.model_version.as_str(),
            response.id.as_str()
        ),
        ("simple", "1", "r1")
    );
    let sum: Vec<i32> = response
        .output("OUTPUT0")
        .expect("OUTPUT0")
        .to_vec()
        .expect("INT32");
    let difference: Vec<i32> = response
        .output("OUTPUT1")
        .expect("OUTPUT1")
        .to_vec()
        .expect("INT32");
    assert_eq!(sum, a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>());
    assert_eq!(
        difference,
        a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>()
    );
    assert_eq!(response.output("OUTPUT0").expect("OUTPUT0").shape, [2, 16]);
    // Asked for one output, only that one comes back.
    let one = engine
        .infer(simple_request(&a[..16], &b[..16]).output("OUTPUT1"))
        .await
        .expect("answers");
    assert_eq!(one.outputs.len(), 1);
    assert_eq!(
        one.output("OUTPUT0").expect_err("not asked for").grpc_code(),
        Code::NotFound
    );
    // Read as the wrong type.
    let wrong = one
        .output("OUTPUT1")
        .expect("OUTPUT1")
        .to_vec::<f32>()
        .expect_err("INT32 is not FP32");
    assert!(wrong.to_string().contains("is INT32, read as FP32"), "{wrong}");
    // Counted as the servers count (ModelStatistics).
    let stats = engine.statistics("simple").expect("statistics");
    let inference = stats.model_stats[0]
        .inference_stats
        .as_ref()
        .expect("inference stats");
    assert_eq!(inference.success.as_ref().expect("success").count, 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated_and_fail_as_on_the_servers() {
    let engine = Engine::open(repo_root().join("examples/model_repository")).expect("opens");
    // Triton's text for an unknown model (`ModelRepositoryManager::GetModel`, model_repository_manager.cc),
    // NOT_FOUND as over gRPC.
    let error = engine.infer(Request::new("nope")).await.expect_err("unknown");
    assert_eq!(error.grpc_code(), Code::NotFound);
    assert_eq!(
        error.to_string(),
        "Request for unknown model: 'nope' is not found"
    );
    // Triton's shape check (`ValidateInputShape`-era text of core's infer_request.cc): 15 values where the
    // model takes 16, INVALID_ARGUMENT naming input, model, expected and given shape.
    let a = [1i32; 15];
    let error = engine
        .infer(
            Request::new("simple")
                .input("INPUT0", &[1, 15], &a)
                .input("INPUT1", &[1, 15], &a),
        )
        .await
        .expect_err("wrong shape");
    assert_eq!(error.grpc_code(), Code::InvalidArgument);
    let text = error.to_string();
    assert!(
        text.contains("unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]"),
        "{text}"
    );
    // A wrong data type names the input and both types.
    let floats = [1f32; 16];
    let error = engine
        .infer(Request::new("simple").input("INPUT0", &[1, 16], &floats).input(
            "INPUT1",
            &[1, 16],
            &[1i32; 16],
        ))
        .await
        .expect_err("wrong type");
    assert_eq!(error.grpc_code(), Code::InvalidArgument);
    assert!(
        error.to_string().contains("INPUT0") && error.to_string().contains("FP32"),
        "{error}"
    );
    // A version that is not there.
    let error = engine
        .infer(simple_request(&[0; 16], &[0; 16]).version("7"))
        .await
        .expect_err("no version 7");
    assert_eq!(error.grpc_code(), Code::NotFound);
    // Failed requests of a served model count as failures, as on the servers.
    let stats = engine.statistics("simple").expect("statistics");
    let inference = stats.model_stats[0]
        .inference_stats
        .as_ref()
        .expect("inference stats");
    assert_eq!(inference.fail.as_ref().expect("fail").count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_with_their_state_and_readiness() {
    let dir = repository(&["simple", "bad_config"]);
    let engine = Engine::open_with(EngineOptions::new(vec![dir.path().to_path_buf()])).expect("opens");
    let models = engine.models();
    let states: Vec<(&str, &str, &str)> = models
        .iter()
        .map(|row| (row.name.as_str(), row.version.as_str(), row.state))
        .collect();
    assert_eq!(
        states,
        [("bad_config", "", "UNAVAILABLE"), ("simple", "1", "READY")]
    );
    assert!(
        models[0].reason.contains("max_batch_sise"),
        "{}",
        models[0].reason
    );
    // Strict readiness, as the server's: one model that failed makes the engine unready.
    assert!(!engine.is_ready());
    assert!(engine.is_model_ready("simple", "").expect("simple"));
    assert!(engine.is_model_ready("simple", "1").expect("version 1"));
    assert!(!engine.is_model_ready("bad_config", "").expect("bad_config"));
    assert_eq!(
        engine
            .is_model_ready("simple", "one")
            .expect_err("not a version")
            .grpc_code(),
        Code::InvalidArgument
    );
    let metadata = engine.metadata("simple", "").expect("metadata");
    assert_eq!(metadata.inputs[0].shape, [-1, 16]);
    assert_eq!(metadata.inputs[0].datatype, "INT32");
    let (spec, version) = engine.model("simple", "").expect("served");
    assert_eq!((spec.max_batch_size, version), (8, 1));
    let error = engine
        .infer(Request::new("bad_config"))
        .await
        .expect_err("unavailable");
    assert_eq!(error.grpc_code(), Code::NotFound);
    assert!(error.to_string().contains("has no available versions"), "{error}");

    let alone = repository(&["simple"]);
    let engine = Engine::open(alone.path()).expect("opens");
    assert!(engine.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_requests_in_flight_and_refuses_new_ones() {
    // add_one_dynamic (y = x + 1) holds a lone row in its queue for up to 2 s waiting for a fuller batch,
    // so the request below is certainly in flight when shutdown begins.
    let dir = repository(&["add_one_dynamic"]);
    let engine = Engine::open(dir.path()).expect("opens");
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let in_flight = engine.infer(Request::new("add_one_dynamic").input("x", &[1, 4], &x));
    tokio::pin!(in_flight);
    // Polled once: admitted and queued, not answered yet.
    std::future::poll_fn(|cx| {
        assert!(
            in_flight.as_mut().poll(cx).is_pending(),
            "answered on the first poll"
        );
        Poll::Ready(())
    })
    .await;
    let answered = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let engine = engine.clone();
        let answered = Arc::clone(&answered);
        async move {
            engine.shutdown().await;
            answered.load(Ordering::SeqCst)
        }
    };
    let request = async {
        let response = in_flight.await;
        answered.store(true, Ordering::SeqCst);
        response
    };
    let (answered_before_shutdown_returned, response) = tokio::join!(shutdown, request);
    assert!(
        answered_before_shutdown_returned,
        "shutdown returned before the request in flight was answered"
    );
    let y: Vec<f32> = response
        .expect("answered")
        .output("y")
        .expect("y")
        .to_vec()
        .expect("FP32");
    assert_eq!(y, [2.0, 3.0, 4.0, 5.0]);
    // After shutdown: refused, UNAVAILABLE, and not ready.
    let error = engine
        .infer(Request::new("add_one_dynamic").input("x", &[1, 4], &x))
        .await
        .expect_err("shut down");
    assert_eq!(error.grpc_code(), Code::Unavailable);
    assert!(error.to_string().contains("shutting down"), "{error}");
    assert!(!engine.is_ready());
}
