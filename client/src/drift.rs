//! Ferry's input drift service (`ferry.drift.v1.DriftService`), which Triton does not have: a model
//! version's drift report, and replacing its baseline.

use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::client::MAX_MESSAGE_SIZE;
use crate::{Client, ClientError, Credentials};
use ferry_proto::ferry::drift::v1::{
    DriftBaselineRequest, DriftReportRequest, DriftReportResponse, VersionDrift,
    drift_baseline_request::Source, drift_service_client::DriftServiceClient,
};

/// The generated stub of Ferry's drift service, on a [`Client`]'s connection with its credentials.
pub type DriftStub = DriftServiceClient<InterceptedService<Channel, Credentials>>;

impl Client {
    /// The drift service's stub on the same connection, with the same credentials.
    pub fn drift(&self) -> DriftStub {
        DriftServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The drift report of `version` of model `name`, or of every ready version when `version` is `None`.
    /// The server answers `NOT_FOUND` when the model's config leaves drift monitoring off.
    pub async fn drift_report(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<DriftReportResponse, ClientError> {
        let request = DriftReportRequest {
            model: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        Ok(self.drift().drift_report(request).await?.into_inner())
    }

    /// Replaces the drift baseline of `version` of model `name` (the server's choice when `None`): with
    /// [`Source::Live`] its live window is frozen, with [`Source::File`] the config's file comes back. The
    /// caller needs the `repository` scope.
    pub async fn drift_baseline(
        &self,
        name: &str,
        version: Option<&str>,
        source: Source,
    ) -> Result<VersionDrift, ClientError> {
        let request = DriftBaselineRequest {
            model: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            source: source.into(),
        };
        let response = self.drift().drift_baseline(request).await?.into_inner();
        response.version.ok_or_else(|| {
            ClientError::from(tonic::Status::internal("the drift baseline answer has no report"))
        })
    }
}
