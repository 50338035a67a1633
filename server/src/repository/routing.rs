//! Which version answers: a version number as asked, a version label as its policy points it, and no
//! version as the model's traffic split sends it (or the highest ready version without a split).

use std::sync::Arc;

use super::{LOADING, ModelEntry, Registry, VersionState, parse_version};
use crate::{
    Error,
    model::ModelVersion,
    traffic::{self, Policy, Rule},
};

/// How a request without a version is routed.
#[derive(Debug, Clone, Copy)]
pub enum Routing<'a> {
    /// To the highest ready version (metadata, readiness, config): the split is for inference only.
    Highest,
    /// By the model's traffic split, if it has one, sticky by this routing key when there is one.
    Split(Option<&'a str>),
}

/// The version a request goes to, and the rule that chose it when a label or a split did.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The version that answers.
    pub model: Arc<ModelVersion>,
    /// The rule (`label:canary`, `split:v2`) that chose the version, when one did; inference counts it.
    pub rule: Option<Rule>,
    /// The policy the request was routed by, if the model has one (its shadow, if any, follows it).
    pub policy: Option<Arc<Policy>>,
}

impl Registry {
    /// The version of model `name` that serves a request for `version`: a number, a label of the model's
    /// policy, or nothing (routed as `routing` says). A model without labels answers a version that is not a
    /// number with Triton's error; a model with labels answers an unknown label with NOT_FOUND naming them,
    /// and a label whose version does not serve with UNAVAILABLE naming the label and the version. An
    /// ensemble routes only while its members serve with the tensors its steps need; otherwise it is not
    /// ready, with the reason (Triton's UNAVAILABLE).
    pub fn route(&self, name: &str, version: &str, routing: Routing<'_>) -> Result<Routed, Error> {
        let routed = self.route_version(name, version, routing)?;
        if routed.model.spec.ensemble.is_some()
            && let Some(reason) = super::ensembles::unready_reason(&self.models.load(), &routed.model)
        {
            return Err(Error::VersionNotReady {
                model: name.to_owned(),
                version: routed.model.version,
                reason,
            });
        }
        Ok(routed)
    }

    fn route_version(&self, name: &str, version: &str, routing: Routing<'_>) -> Result<Routed, Error> {
        let wants_policy = match routing {
            Routing::Split(_) => version.is_empty(),
            Routing::Highest => false,
        } || traffic::is_label(version);
        let policy = if wants_policy {
            self.traffic.policy(name)
        } else {
            None
        };
        let label = match &policy {
            Some(policy) if !version.is_empty() => match policy.label(version) {
                Some(rule) => Some(rule),
                None if policy.has_labels() && traffic::is_label(version) => {
                    return Err(Error::NotFound(format!(
                        "model '{name}' has no version label '{version}'; its labels are {}",
                        policy.known_labels()
                    )));
                }
                None => None,
            },
            _ => None,
        };
        let number = match (label, version.is_empty()) {
            (Some(rule), _) => Some(rule.version),
            (None, true) => None,
            (None, false) => Some(parse_version(version)?),
        };
        let models = self.models.load();
        let entry = models.get(name).ok_or_else(|| Error::UnknownModel {
            model: name.to_owned(),
        })?;
        let Some(number) = number else {
            if let (Routing::Split(key), Some(policy)) = (routing, &policy)
                && let Some(arm) = split(entry, policy, key)
                && let Some(model) = ready(entry, arm.rule.version)
            {
                return Ok(chosen(model, &arm.rule, policy));
            }
            return entry
                .ready_versions()
                .next()
                .map(|model| Routed {
                    model: Arc::clone(model),
                    rule: None,
                    policy: policy.clone(),
                })
                .ok_or_else(|| Error::NoAvailableVersion {
                    model: name.to_owned(),
                    reason: entry.not_ready_reason(),
                });
        };
        let labelled = |reason: String| match label {
            Some(_) => format!("version label '{version}' points at it; {reason}"),
            None => reason,
        };
        match entry.versions.get(&number) {
            Some(VersionState::Ready { model, .. }) if entry.failure.is_none() => match (label, &policy) {
                (Some(rule), Some(policy)) => Ok(chosen(model, rule, policy)),
                _ => Ok(Routed {
                    model: Arc::clone(model),
                    rule: None,
                    policy,
                }),
            },
            Some(state) => Err(Error::VersionNotReady {
                model: name.to_owned(),
                version: number,
                reason: labelled(match (&entry.failure, state) {
                    (Some(failure), _) => failure.clone(),
                    (None, VersionState::Unavailable(reason)) => reason.clone(),
                    (None, _) => LOADING.to_owned(),
                }),
            }),
            None if label.is_some() => Err(Error::VersionNotReady {
                model: name.to_owned(),
                version: number,
                reason: labelled("the model has no such version".to_owned()),
            }),
            None => Err(Error::UnknownVersion {
                model: name.to_owned(),
                version: number,
            }),
        }
    }
}

impl Registry {
    /// The version number `version` names for model `name`: a number, or a label of the model's policy. For
    /// requests that cover versions (statistics) rather than go to one.
    pub fn version_number(&self, name: &str, version: &str) -> Result<u64, Error> {
        if traffic::is_label(version)
            && let Some(policy) = self.traffic.policy(name)
            && policy.has_labels()
        {
            return policy.label(version).map(|rule| rule.version).ok_or_else(|| {
                Error::NotFound(format!(
                    "model '{name}' has no version label '{version}'; its labels are {}",
                    policy.known_labels()
                ))
            });
        }
        parse_version(version)
    }
}

/// The split arm a request goes to, among those whose version is ready.
fn split<'p>(entry: &ModelEntry, policy: &'p Policy, key: Option<&str>) -> Option<&'p traffic::Arm> {
    if !policy.splits() {
        return None;
    }
    let key = key.map(|key| traffic::hash(key.as_bytes()));
    traffic::choose(policy.arms(), key, |arm| ready(entry, arm.rule.version).is_some())
}

/// Version `version` of the model, if it serves.
fn ready(entry: &ModelEntry, version: u64) -> Option<&Arc<ModelVersion>> {
    match entry.versions.get(&version) {
        Some(VersionState::Ready { model, .. }) if entry.failure.is_none() => Some(model),
        _ => None,
    }
}

/// A request routed to `model` by `rule`.
fn chosen(model: &Arc<ModelVersion>, rule: &Rule, policy: &Arc<Policy>) -> Routed {
    Routed {
        model: Arc::clone(model),
        rule: Some(rule.clone()),
        policy: Some(Arc::clone(policy)),
    }
}
