//! gRPC health checking (`grpc.health.v1.Health`) that follows the registry: the server's readiness for
//! the empty service name and for `inference.GRPCInferenceService`, a model's readiness for its name, and
//! liveness for `liveness` (what a Kubernetes gRPC liveness probe asks, so that a server that is not ready,
//! still loading or draining, is not restarted).

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus, health_server::Health,
};

use crate::repository::Registry;

/// The service name whose status is liveness: `SERVING` whenever the server answers, ready or not (the gRPC
/// twin of ServerLive and `/v2/health/live`). Kubernetes' documentation names gRPC liveness probes this way.
pub const LIVENESS_SERVICE: &str = "liveness";

/// How often a Watch call looks for a change of status.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The health service; answers from the registry at the moment of each call.
#[derive(Debug, Clone)]
pub struct HealthService {
    registry: Arc<Registry>,
    /// Turns true when the server shuts down: Watch streams end then, so that shutdown does not wait on them.
    stopping: watch::Receiver<bool>,
}

impl HealthService {
    /// A health service over `registry` whose Watch streams end when `stopping` turns true.
    pub fn new(registry: Arc<Registry>, stopping: watch::Receiver<bool>) -> Self {
        HealthService { registry, stopping }
    }

    /// The status of `service`; `None` when it names neither the server nor a known model.
    fn status(&self, service: &str) -> Option<ServingStatus> {
        let serving = |ready: bool| {
            if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        match service {
            "" | "inference.GRPCInferenceService" => Some(serving(self.registry.is_ready())),
            LIVENESS_SERVICE => Some(ServingStatus::Serving),
            model => {
                self.registry.model(model).ok()?;
                Some(serving(self.registry.resolve(model, "").is_ok()))
            }
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!(
                "unknown service '{service}': neither the server nor a model"
            ))),
        }
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let (sender, receiver) = mpsc::channel(4);
        let mut health = self.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let stopping = *health.stopping.borrow_and_update();
                let now = health.status(&service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    if sender.send(Ok(response(now))).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                // The status at shutdown (NOT_SERVING once it has begun) is sent before the stream ends.
                if stopping {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                    () = sender.closed() => return,
                    _ = health.stopping.changed() => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
