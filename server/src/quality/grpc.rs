//! Ferry's `ferry.feedback.v1.Feedback` over gRPC: the same core calls as the REST feedback routes
//! ([`crate::core::InferenceService::post_feedback`], [`crate::core::InferenceService::model_quality`]),
//! acting for the caller the auth layer admitted.

use ferry_proto::ferry::feedback::v1::{self as pb, feedback_server::Feedback};
use tonic::{Request, Response, Status};

use super::{FeedbackItem, QualityReport};
use crate::core::InferenceService;

/// The feedback service over the core that serves every front end.
#[derive(Debug, Clone)]
pub struct FeedbackGrpc(pub InferenceService);

#[tonic::async_trait]
impl Feedback for FeedbackGrpc {
    async fn post_feedback(
        &self,
        request: Request<pb::PostFeedbackRequest>,
    ) -> Result<Response<pb::PostFeedbackResponse>, Status> {
        let core = self.0.acting_for(request.extensions());
        let request = request.into_inner();
        FeedbackItem::check_count(request.items.len())?;
        let items = request
            .items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                FeedbackItem::parse(index, item.request_id, item.classes, item.labels, item.values)
            })
            .collect::<Result<Vec<_>, crate::Error>>()?;
        let outcomes = core.post_feedback(&request.model, &request.version, items)?;
        Ok(Response::new(pb::PostFeedbackResponse {
            results: outcomes
                .into_iter()
                .map(|outcome| pb::FeedbackResult {
                    status: outcome.status.name().to_owned(),
                    reason: outcome.status.reason().to_owned(),
                    request_id: outcome.request_id,
                    version: outcome.version.to_string(),
                })
                .collect(),
        }))
    }

    async fn model_quality(
        &self,
        request: Request<pb::ModelQualityRequest>,
    ) -> Result<Response<pb::ModelQualityResponse>, Status> {
        let core = self.0.acting_for(request.extensions());
        let request = request.into_inner();
        let reports = core.model_quality(&request.model, &request.version)?;
        Ok(Response::new(pb::ModelQualityResponse {
            model: request.model,
            versions: reports.into_iter().map(version).collect(),
        }))
    }
}

/// A version's report as its message.
fn version(report: QualityReport) -> pb::VersionQuality {
    pb::VersionQuality {
        model: report.model,
        version: report.version,
        metric: report.metric.to_owned(),
        output: report.output,
        rows: report.rows,
        value: report.value,
        sum: report.sum,
        predictions: report.predictions,
        predictions_dropped: report.predictions_dropped,
        predictions_expired: report.predictions_expired,
        predictions_duplicate: report.predictions_duplicate,
        predictions_waiting: report.predictions_waiting,
        feedback_joined: report.feedback_joined,
        feedback_waiting: report.feedback_waiting,
        feedback_duplicate: report.feedback_duplicate,
        feedback_rejected: report.feedback_rejected,
        feedback_unmatched: report.feedback_unmatched,
        calibration: report
            .calibration
            .into_iter()
            .map(|bucket| pb::CalibrationBucket {
                lower: bucket.lower,
                upper: bucket.upper,
                count: bucket.count,
                mean_predicted: bucket.mean_predicted,
                observed_frequency: bucket.observed_frequency,
            })
            .collect(),
    }
}
