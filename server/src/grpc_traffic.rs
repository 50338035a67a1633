//! The gRPC front end of Ferry's own traffic service (`ferry.traffic.v1.Traffic`), beside Triton's on the
//! same port: each RPC converts its message to the core's plain values ([`crate::traffic::PolicySpec`]),
//! calls the core acting for the admitted caller, and converts the answer back.

use ferry_proto::ferry::traffic::v1::{self as pb, traffic_server::Traffic};
use tonic::{Request, Response, Status};

use crate::{
    core::InferenceService,
    traffic::{self, DEFAULT_SHADOW_IN_FLIGHT, PolicySpec, ShadowSpec},
};

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Traffic for InferenceService {
    async fn get_traffic(&self, request: Request<pb::GetTrafficRequest>) -> Reply<pb::TrafficStatus> {
        let status = self
            .acting_for(request.extensions())
            .traffic_status(&request.get_ref().model)?;
        Ok(Response::new(status_message(status)))
    }

    async fn set_traffic(&self, request: Request<pb::SetTrafficRequest>) -> Reply<pb::TrafficStatus> {
        let core = self.acting_for(request.extensions());
        let request = request.into_inner();
        let spec = policy_spec(request.policy.unwrap_or_default());
        Ok(Response::new(status_message(
            core.set_traffic(&request.model, spec).await?,
        )))
    }

    async fn set_label(&self, request: Request<pb::SetLabelRequest>) -> Reply<pb::TrafficStatus> {
        let core = self.acting_for(request.extensions());
        let r = request.get_ref();
        let status = core.set_label(&r.model, &r.label, &r.version).await?;
        Ok(Response::new(status_message(status)))
    }

    async fn promote(&self, request: Request<pb::PromoteRequest>) -> Reply<pb::TrafficStatus> {
        let core = self.acting_for(request.extensions());
        let r = request.get_ref();
        let status = core.promote(&r.model, &r.from, &r.to).await?;
        Ok(Response::new(status_message(status)))
    }

    async fn rollback(&self, request: Request<pb::RollbackRequest>) -> Reply<pb::TrafficStatus> {
        let core = self.acting_for(request.extensions());
        let status = core.rollback(&request.get_ref().model).await?;
        Ok(Response::new(status_message(status)))
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Reply<pb::HistoryResponse> {
        let changes = self
            .acting_for(request.extensions())
            .traffic_history(&request.get_ref().model)?;
        Ok(Response::new(pb::HistoryResponse {
            changes: changes
                .into_iter()
                .map(|change| pb::TrafficChange {
                    unix_ms: change.unix_ms,
                    who: change.who,
                    action: change.action.to_owned(),
                    from: Some(policy_message(change.from)),
                    to: Some(policy_message(change.to)),
                })
                .collect(),
        }))
    }
}

/// A policy message as the core's policy (checked by the core); a shadow's zero budget means the default.
pub fn policy_spec(policy: pb::TrafficPolicy) -> PolicySpec {
    PolicySpec {
        labels: policy.labels.into_iter().collect(),
        split: policy.split.into_iter().collect(),
        shadow: policy.shadow.map(|shadow| ShadowSpec {
            target: shadow.target,
            max_in_flight: if shadow.max_in_flight == 0 {
                DEFAULT_SHADOW_IN_FLIGHT
            } else {
                shadow.max_in_flight
            },
            float_tolerance: shadow.float_tolerance,
        }),
    }
}

/// The core's policy as a message.
pub fn policy_message(spec: PolicySpec) -> pb::TrafficPolicy {
    pb::TrafficPolicy {
        labels: spec.labels.into_iter().collect(),
        split: spec.split.into_iter().collect(),
        shadow: spec.shadow.map(|shadow| pb::Shadow {
            target: shadow.target,
            max_in_flight: shadow.max_in_flight,
            float_tolerance: shadow.float_tolerance,
        }),
    }
}

fn status_message(status: traffic::Status) -> pb::TrafficStatus {
    pb::TrafficStatus {
        model: status.model,
        policy: Some(policy_message(status.policy)),
        last_error: status.last_error.unwrap_or_default(),
        file: status.file,
    }
}
