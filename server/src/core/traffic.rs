//! Version labels and traffic policies, Ferry's own administrative calls (`ferry.traffic.v1.Traffic` over
//! gRPC, `/v2/models/{model}/traffic...` over REST): each needs the caller's `repository` scope for the
//! model, and each change is audited, written to the model's `traffic.json` and kept in its history.

use std::sync::Arc;

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
    repository::{ModelName, Registry},
    traffic::{Change, PolicySpec, Status, check_label},
};

/// The label promotion moves when the call names none.
pub const DEFAULT_PROMOTE_TO: &str = "stable";
/// The label promotion reads the version from when the call names none.
pub const DEFAULT_PROMOTE_FROM: &str = "canary";

impl InferenceService {
    /// GetTraffic: the model's policy in force, and why its file was last refused, if it was.
    pub fn traffic_status(&self, model: &str) -> Result<Status, Error> {
        let model = checked(model)?;
        self.authorize("GetTraffic", Scope::Repository, Target::Model(&model))?;
        self.registry.traffic().status(&model)
    }

    /// History: the model's last policy changes, oldest first.
    pub fn traffic_history(&self, model: &str) -> Result<Vec<Change>, Error> {
        let model = checked(model)?;
        self.authorize("History", Scope::Repository, Target::Model(&model))?;
        self.registry.traffic().history(&model)
    }

    /// SetTraffic: replaces the model's policy as a whole.
    pub async fn set_traffic(&self, model: &str, spec: PolicySpec) -> Result<Status, Error> {
        self.change("SetTraffic", model, "set", move |_, _| Ok(spec))
            .await
    }

    /// SetLabel: points `label` at `version` (a number), or removes it when `version` is empty.
    pub async fn set_label(&self, model: &str, label: &str, version: &str) -> Result<Status, Error> {
        check_label("label", label).map_err(Error::invalid)?;
        let number = if version.is_empty() {
            None
        } else {
            Some(crate::repository::parse_version(version)?)
        };
        let label = label.to_owned();
        self.change("SetLabel", model, "label", move |current, _| {
            let mut spec = current.clone();
            match number {
                Some(number) => spec.labels.insert(label, number),
                None => spec.labels.remove(&label),
            };
            Ok(spec)
        })
        .await
    }

    /// Promote: points label `to` (default `stable`) at the version `from` (a label, default `canary`, or a
    /// number) names, and sends every request without a version to `to` (its split arm 100, every other
    /// arm 0).
    pub async fn promote(&self, model: &str, from: &str, to: &str) -> Result<Status, Error> {
        let from = if from.is_empty() {
            DEFAULT_PROMOTE_FROM
        } else {
            from
        }
        .to_owned();
        let to = if to.is_empty() { DEFAULT_PROMOTE_TO } else { to }.to_owned();
        check_label("to", &to).map_err(Error::invalid)?;
        self.change("Promote", model, "promote", move |current, _| {
            let version = current.target_version("from", &from).map_err(Error::invalid)?;
            let mut spec = current.clone();
            spec.labels.insert(to.clone(), version);
            spec.split.values_mut().for_each(|weight| *weight = 0);
            spec.split.insert(to, 100);
            Ok(spec)
        })
        .await
    }

    /// Rollback: restores the policy as it was before its last change (a second rollback undoes the first).
    pub async fn rollback(&self, model: &str) -> Result<Status, Error> {
        let name = model.to_owned();
        self.change("Rollback", model, "rollback", move |_, history| {
            history.last().map(|change| change.from.clone()).ok_or_else(|| {
                Error::invalid(format!(
                    "model '{name}' has no traffic policy change to roll back"
                ))
            })
        })
        .await
    }

    /// Runs one audited change of the model's policy off the async workers (it writes the file).
    async fn change(
        &self,
        action: &str,
        model: &str,
        what: &'static str,
        change: impl FnOnce(&PolicySpec, &crate::traffic::History) -> Result<PolicySpec, Error> + Send + 'static,
    ) -> Result<Status, Error> {
        let model = checked(model)?;
        let registry: Arc<Registry> = Arc::clone(&self.registry);
        let who = self.caller().to_string();
        let name = model.clone();
        self.audited(action, Scope::Repository, &model, async move {
            tokio::task::spawn_blocking(move || registry.traffic().change(&name, &who, what, change))
                .await
                .map_err(|error| Error::Internal(format!("the traffic change failed: {error}")))?
        })
        .await
    }
}

/// A model name within its bounds, for lookups and messages.
fn checked(model: &str) -> Result<String, Error> {
    Ok(ModelName::parse(model.to_owned())?.as_str().to_owned())
}
