//! OpenTelemetry export: an OTLP trace receiver started by the test gets the spans of a request, under the
//! trace id the client sent in its W3C `traceparent` metadata.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
use ferry_server::telemetry::{self, TelemetryOptions};
use ferry_tests::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, metadata::MetadataValue};

/// A received span: its name and trace id.
type Received = (String, Vec<u8>);

/// Keeps every span it is sent.
#[derive(Debug, Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (span.name, span.trace_id)));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_s_spans_reach_the_otlp_receiver_under_the_client_s_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let options = TelemetryOptions {
        otlp_endpoint: Some(format!("http://{address}")),
        ..TelemetryOptions::default()
    };
    telemetry::init(&options).expect("telemetry starts");

    let server = TestServer::with_all_models().await.expect("server");
    let mut client = server.raw_client().await.expect("client");
    let values: Vec<u8> = [1.0f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut request = Request::new(ModelInferRequest {
        model_name: "add_one_greedy".into(),
        id: "traced".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(values)],
        ..Default::default()
    });
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent.as_str()).expect("ascii"),
    );
    client.model_infer(request).await.expect("infer");
    server.stop().await;
    tokio::task::spawn_blocking(telemetry::shutdown)
        .await
        .expect("flush");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names: Vec<String> = receiver
            .spans
            .lock()
            .expect("spans")
            .iter()
            .filter(|(_, trace)| hex(trace) == TRACE_ID)
            .map(|(name, _)| name.clone())
            .collect();
        if ["request", "infer", "queue"]
            .iter()
            .all(|n| names.iter().any(|name| name == n))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans under the client's trace: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = receiver.spans.lock().expect("spans");
    assert!(
        all.iter().any(|(name, _)| name == "batch"),
        "the batch span is exported too"
    );
}
