//! Ferry's traffic administration (`ferry.traffic.v1.Traffic`): version labels, weighted splits, shadow
//! traffic, promotion, rollback and the history of changes, as methods of [`Client`]. The calls need the
//! `repository` scope on a server that authorises callers.
//!
//! ```no_run
//! use ferry_client::Client;
//!
//! # async fn run(client: Client) -> Result<(), ferry_client::ClientError> {
//! client.set_label("m", "canary", "2").await?;
//! client.promote("m", "canary", "stable").await?;
//! client.rollback("m").await?;
//! # Ok(())
//! # }
//! ```

use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{Client, ClientError, Credentials};
/// The generated messages of `ferry.traffic.v1`.
pub use ferry_proto::ferry::traffic::v1 as proto;
use proto::traffic_client::TrafficClient;

/// The generated traffic stub on a [`Client`]'s connection, with its credentials.
pub type TrafficStub = TrafficClient<InterceptedService<Channel, Credentials>>;

impl Client {
    /// The generated traffic stub, for calls this type does not wrap.
    pub fn traffic(&self) -> TrafficStub {
        let (channel, credentials) = self.parts();
        TrafficClient::with_interceptor(channel, credentials)
    }

    /// A model's traffic policy in force, and why its file was last refused, if it was.
    pub async fn get_traffic(&self, model: &str) -> Result<proto::TrafficStatus, ClientError> {
        let request = proto::GetTrafficRequest {
            model: model.to_owned(),
        };
        Ok(self.traffic().get_traffic(request).await?.into_inner())
    }

    /// Replaces a model's traffic policy as a whole.
    pub async fn set_traffic(
        &self,
        model: &str,
        policy: proto::TrafficPolicy,
    ) -> Result<proto::TrafficStatus, ClientError> {
        let request = proto::SetTrafficRequest {
            model: model.to_owned(),
            policy: Some(policy),
        };
        Ok(self.traffic().set_traffic(request).await?.into_inner())
    }

    /// Points `label` at `version`; an empty version removes the label.
    pub async fn set_label(
        &self,
        model: &str,
        label: &str,
        version: &str,
    ) -> Result<proto::TrafficStatus, ClientError> {
        let request = proto::SetLabelRequest {
            model: model.to_owned(),
            label: label.to_owned(),
            version: version.to_owned(),
        };
        Ok(self.traffic().set_label(request).await?.into_inner())
    }

    /// Points label `to` at the version of `from` and sends all unversioned traffic to it (empty names
    /// mean `canary` and `stable`).
    pub async fn promote(
        &self,
        model: &str,
        from: &str,
        to: &str,
    ) -> Result<proto::TrafficStatus, ClientError> {
        let request = proto::PromoteRequest {
            model: model.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        Ok(self.traffic().promote(request).await?.into_inner())
    }

    /// Restores the policy as it was before its last change.
    pub async fn rollback(&self, model: &str) -> Result<proto::TrafficStatus, ClientError> {
        let request = proto::RollbackRequest {
            model: model.to_owned(),
        };
        Ok(self.traffic().rollback(request).await?.into_inner())
    }

    /// The model's last policy changes, oldest first.
    pub async fn traffic_history(&self, model: &str) -> Result<Vec<proto::TrafficChange>, ClientError> {
        let request = proto::HistoryRequest {
            model: model.to_owned(),
        };
        Ok(self.traffic().history(request).await?.into_inner().changes)
    }
}
