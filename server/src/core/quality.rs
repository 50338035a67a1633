//! Feedback and live quality: truths posted for earlier requests, joined with their predictions, and the
//! quality each version keeps from them ([`crate::quality`]).

use std::sync::Arc;

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
    model::ModelVersion,
    quality::{FeedbackItem, ItemStatus, QualityMonitor, QualityReport},
};

/// The action name of a feedback post, in refusals and the audit log.
pub const POST_FEEDBACK: &str = "PostFeedback";
/// The action name of the quality report.
pub const MODEL_QUALITY: &str = "ModelQuality";

/// What became of one posted truth, and the version it went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackOutcome {
    /// The request id it named.
    pub request_id: String,
    /// Its status.
    pub status: ItemStatus,
    /// The version it went to.
    pub version: u64,
}

impl InferenceService {
    /// Posts `items`, truths of earlier requests, to version `version` of model `name`. With no version,
    /// each goes to the ready version whose prediction for its id waits, or else to the highest ready
    /// version that keeps quality, to wait there. Posting the outcome of inferences is part of inferring,
    /// so it needs the `infer` scope.
    pub fn post_feedback(
        &self,
        name: &str,
        version: &str,
        items: Vec<FeedbackItem>,
    ) -> Result<Vec<FeedbackOutcome>, Error> {
        self.authorize(POST_FEEDBACK, Scope::Infer, Target::Model(name))?;
        FeedbackItem::check_count(items.len())?;
        let versions = if version.is_empty() {
            self.registry.ready_versions(name, "")?
        } else {
            vec![self.registry.resolve(name, version)?]
        };
        let monitors: Vec<(u64, &Arc<QualityMonitor>)> = versions
            .iter()
            .filter_map(|model| model.quality.as_ref().map(|q| (model.version, q)))
            .collect();
        let Some(&(fallback, _)) = monitors.first() else {
            return Err(versions
                .first()
                .map_or_else(|| quality_off_model(name), |model| quality_off(model)));
        };
        // Grouped per version, in order, so that each version's lock is taken once.
        let mut outcomes = Vec::with_capacity(items.len());
        let mut groups: Vec<(u64, Vec<FeedbackItem>)> = Vec::new();
        for item in items {
            let target = monitors
                .iter()
                .find(|(_, monitor)| monitors.len() > 1 && monitor.holds(&item.request_id))
                .map_or(fallback, |(version, _)| *version);
            outcomes.push(FeedbackOutcome {
                request_id: item.request_id.clone(),
                status: ItemStatus::Waiting,
                version: target,
            });
            match groups.iter_mut().find(|(v, _)| *v == target) {
                Some((_, group)) => group.push(item),
                None => groups.push((target, vec![item])),
            }
        }
        for (target, group) in groups {
            let monitor = monitors
                .iter()
                .find(|(v, _)| *v == target)
                .map(|(_, monitor)| monitor)
                .ok_or_else(|| Error::Internal("a feedback group lost its version".into()))?;
            let mut statuses = monitor.post(group).into_iter();
            for outcome in outcomes.iter_mut().filter(|o| o.version == target) {
                if let Some(status) = statuses.next() {
                    outcome.status = status;
                }
            }
        }
        Ok(outcomes)
    }

    /// The live quality of version `version` of model `name`, or of every ready version that keeps it
    /// when `version` is empty. Reading it needs the `stats` scope, as statistics do.
    pub fn model_quality(&self, name: &str, version: &str) -> Result<Vec<QualityReport>, Error> {
        self.authorize(MODEL_QUALITY, Scope::Stats, Target::Model(name))?;
        let versions = self.registry.ready_versions(name, version)?;
        let reports: Vec<QualityReport> = versions
            .iter()
            .filter_map(|model| model.quality.as_ref().map(|q| q.report()))
            .collect();
        match versions.first() {
            Some(model) if reports.is_empty() => Err(quality_off(model)),
            _ => Ok(reports),
        }
    }
}

/// The answer for a version whose config leaves quality off.
fn quality_off(model: &ModelVersion) -> Error {
    Error::NotFound(format!(
        "live quality is off for model '{}' version {}; set the config parameter ferry.quality.metric to \
         accuracy, log_loss or mae to turn it on",
        model.spec.name, model.version
    ))
}

/// The answer for a model with no ready version.
fn quality_off_model(name: &str) -> Error {
    Error::NotFound(format!(
        "model '{name}' has no ready version that keeps live quality"
    ))
}
