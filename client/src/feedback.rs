//! Ferry's feedback service (`ferry.feedback.v1.Feedback`), which Triton does not have: posting the true
//! outcome of earlier requests by their id, and reading the live quality each model version keeps.

use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::client::MAX_MESSAGE_SIZE;
use crate::{Client, ClientError, Credentials};
use ferry_proto::ferry::feedback::v1::{
    FeedbackItem, FeedbackResult, ModelQualityRequest, ModelQualityResponse, PostFeedbackRequest,
    feedback_client::FeedbackClient,
};

/// The generated stub of Ferry's feedback service, on a [`Client`]'s connection with its credentials.
pub type FeedbackStub = FeedbackClient<InterceptedService<Channel, Credentials>>;

impl Client {
    /// The feedback service's stub on the same connection, with the same credentials.
    pub fn feedback(&self) -> FeedbackStub {
        FeedbackClient::with_interceptor(self.channel.clone(), self.credentials.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Posts `items`, true outcomes of earlier requests of model `name`, to `version` (or, when `None`, to
    /// the version holding each prediction); one result per item, in order. Needs the `infer` scope.
    pub async fn post_feedback(
        &self,
        name: &str,
        version: Option<&str>,
        items: Vec<FeedbackItem>,
    ) -> Result<Vec<FeedbackResult>, ClientError> {
        let request = PostFeedbackRequest {
            model: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            items,
        };
        Ok(self.feedback().post_feedback(request).await?.into_inner().results)
    }

    /// The live quality of `version` of model `name`, or of every ready version that keeps it when
    /// `version` is `None`. The server answers `NOT_FOUND` when the model's config leaves quality off.
    pub async fn model_quality(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<ModelQualityResponse, ClientError> {
        let request = ModelQualityRequest {
            model: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
        };
        Ok(self.feedback().model_quality(request).await?.into_inner())
    }
}
