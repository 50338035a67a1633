//! Input drift: a model version's report, and freezing its live window as its baseline ([`crate::drift`]).

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
    drift::{DriftMonitor, VersionReport},
    model::ModelVersion,
};

/// The action name of the drift report, in refusals and the audit log.
pub const DRIFT_REPORT: &str = "DriftReport";
/// The action name of a baseline change.
pub const DRIFT_BASELINE: &str = "DriftBaseline";

/// Where a new baseline comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineChange {
    /// The version's live window, frozen now.
    FreezeLive,
    /// The file the config names (`ferry.drift.baseline`), or none without one.
    File,
}

impl InferenceService {
    /// The drift reports of version `version` of model `name`, or of every ready version when `version` is
    /// empty. Reading them needs the `stats` scope, as statistics do.
    pub fn drift_report(&self, name: &str, version: &str) -> Result<Vec<VersionReport>, Error> {
        self.authorize(DRIFT_REPORT, Scope::Stats, Target::Model(name))?;
        let versions = self.registry.ready_versions(name, version)?;
        let reports: Vec<VersionReport> = versions
            .iter()
            .filter_map(|model| model.drift.as_ref().map(DriftMonitor::report))
            .collect();
        match versions.first() {
            Some(model) if reports.is_empty() => Err(drift_off(model)),
            _ => Ok(reports),
        }
    }

    /// Replaces the drift baseline of version `version` of model `name` (the policy's choice when empty):
    /// an administrative change, so it needs the `repository` scope and is audited.
    pub fn change_drift_baseline(
        &self,
        name: &str,
        version: &str,
        change: BaselineChange,
    ) -> Result<VersionReport, Error> {
        self.audited_now(DRIFT_BASELINE, Scope::Repository, name, || {
            let model = self.registry.resolve(name, version)?;
            let monitor = model.drift.as_ref().ok_or_else(|| drift_off(&model))?;
            match change {
                BaselineChange::FreezeLive => monitor.freeze(),
                BaselineChange::File => Ok(monitor.reset_baseline()),
            }
        })
    }
}

/// The answer for a version whose config leaves drift monitoring off.
fn drift_off(model: &ModelVersion) -> Error {
    Error::NotFound(format!(
        "drift monitoring is off for model '{}' version {}; set the config parameter \
         ferry.drift.sample_rate above 0 to turn it on",
        model.spec.name, model.version
    ))
}
