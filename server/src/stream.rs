//! ModelStreamInfer: many inference requests over one bidirectional stream. Each request goes through the
//! same path as a unary ModelInfer (so stream requests are batched with every other request) and its answer
//! is sent as soon as it is ready, carrying the request's id.

use std::{pin::Pin, sync::Arc};

use ferry_proto::inference::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Status, Streaming};

use crate::core::InferenceService;

/// How many requests of one stream may be in the server at once; the stream stops reading beyond that, so a
/// fast sender is slowed down instead of queueing without bound.
pub const MAX_IN_FLIGHT_PER_STREAM: usize = 1024;

/// The response stream's type.
pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send + 'static>>;

/// Serves one stream; `routing_key` (the call's `x-ferry-routing-key`, checked) routes each request that
/// carries no `routing_key` parameter of its own. With `grpc_errors` (the client sent the `triton_grpc_error: true` header), a failed
/// request ends the stream with its gRPC status, as Triton does; otherwise its error goes in
/// `error_message` and the stream goes on.
pub fn serve(
    service: InferenceService,
    mut incoming: Streaming<ModelInferRequest>,
    grpc_errors: bool,
    routing_key: Option<String>,
) -> ResponseStream {
    let (sender, receiver) = mpsc::channel(MAX_IN_FLIGHT_PER_STREAM);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_STREAM));
        let mut in_flight = JoinSet::new();
        let mut broken = None;
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let mut request = match incoming.message().await {
                Ok(Some(request)) => request,
                // The client closed its side: finish what is in flight.
                Ok(None) => break,
                // A message that could not be read (too large, malformed, or one that would take too much
                // memory to decode): finish what is in flight, then end the stream with its status.
                Err(status) => {
                    broken = Some(status);
                    break;
                }
            };
            let (service, sender) = (service.clone(), sender.clone());
            if let Some(key) = &routing_key {
                crate::core::give_routing_key(&mut request, key);
            }
            in_flight.spawn(async move {
                let answer = answer(&service, request, grpc_errors).await;
                // A closed receiver means the client has gone; nothing is left to tell it.
                let _ = sender.send(answer).await;
                drop(permit);
            });
            // Reap finished tasks so that the set does not grow with the stream's length.
            while in_flight.try_join_next().is_some() {}
        }
        while in_flight.join_next().await.is_some() {}
        if let Some(status) = broken {
            let _ = sender.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

async fn answer(
    service: &InferenceService,
    request: ModelInferRequest,
    grpc_errors: bool,
) -> Result<ModelStreamInferResponse, Status> {
    let (id, model_name, model_version) = (
        request.id.clone(),
        request.model_name.clone(),
        request.model_version.clone(),
    );
    match service.infer(request).await {
        Ok(response) => Ok(ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(response),
        }),
        Err(error) if grpc_errors => Err(Status::from(error)),
        Err(error) => Ok(ModelStreamInferResponse {
            error_message: Status::from(error).message().to_owned(),
            infer_response: Some(ModelInferResponse {
                model_name,
                model_version,
                id,
                ..Default::default()
            }),
        }),
    }
}
