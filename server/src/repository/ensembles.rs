//! The repository's side of ensembles: members load before the ensembles that use them, and an ensemble
//! serves only while every member it names serves with the tensors it was checked against. The check runs
//! against the routing table as it is at that moment (`crate::ensemble::check_members`), so a member
//! unloaded, failed or reloaded with other tensors makes the ensemble unavailable with the reason, and a
//! member loaded again makes it ready again, with nothing to republish.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{ModelEntry, VersionState, files};
use crate::{
    config::{ModelSpec, is_ensemble, parse_model_config},
    model::ModelVersion,
};

/// The spec of version `version` (the highest ready one when `None`) of member `name` in `models`, or why
/// the ensemble cannot use it.
pub(super) fn member_spec(
    models: &BTreeMap<String, ModelEntry>,
    name: &str,
    version: Option<u64>,
) -> Result<Arc<ModelSpec>, String> {
    let entry = models
        .get(name)
        .ok_or_else(|| format!("model '{name}' is not loaded"))?;
    if let Some(failure) = &entry.failure {
        return Err(format!("model '{name}' is not ready: {failure}"));
    }
    match version {
        None => entry
            .ready_versions()
            .next()
            .map(|model| Arc::clone(&model.spec))
            .ok_or_else(|| {
                format!(
                    "model '{name}' has no ready version: {}",
                    entry.not_ready_reason()
                )
            }),
        Some(number) => match entry.versions.get(&number) {
            Some(VersionState::Ready { model, .. }) => Ok(Arc::clone(&model.spec)),
            Some(VersionState::Unavailable(reason)) => Err(format!(
                "version {number} of model '{name}' is not ready: {reason}"
            )),
            Some(VersionState::Loading) => Err(format!("version {number} of model '{name}' is loading")),
            None => Err(format!("model '{name}' has no version {number}")),
        },
    }
}

/// Why the ensemble version `model` cannot serve with the members in `models`; `None` when it can, or when
/// `model` is no ensemble.
pub(super) fn unready_reason(models: &BTreeMap<String, ModelEntry>, model: &ModelVersion) -> Option<String> {
    let steps = model.spec.ensemble.as_ref()?;
    crate::ensemble::check_members(&model.spec, steps, &|name, version| {
        member_spec(models, name, version)
    })
    .err()
}

/// The models an ensemble folder's config names as steps; `None` when the folder holds no readable
/// ensemble config.
fn members(dir: &Path) -> Option<BTreeSet<String>> {
    let text = files::read_text(dir, "config.pbtxt", files::MAX_CONFIG_BYTES).ok()??;
    let config = parse_model_config(&text, "config.pbtxt").ok()?;
    if !is_ensemble(&config) {
        return None;
    }
    match config.scheduling_choice {
        Some(ferry_proto::inference::model_config::SchedulingChoice::EnsembleScheduling(scheduling)) => {
            Some(scheduling.step.into_iter().map(|s| s.model_name).collect())
        }
        _ => Some(BTreeSet::new()),
    }
}

/// `wanted` in load waves: first every model that is no ensemble (loaded together), then ensembles, each
/// wave holding the ensembles whose ensemble members are in earlier waves. Ensembles on a cycle come last,
/// and fail their member check.
pub(super) fn load_waves(wanted: Vec<String>, folders: &BTreeMap<String, Vec<PathBuf>>) -> Vec<Vec<String>> {
    let mut plain = Vec::new();
    let mut ensembles = BTreeMap::new();
    for name in wanted {
        match folders.get(&name).map(Vec::as_slice) {
            Some([dir]) => match members(dir) {
                Some(members) => {
                    ensembles.insert(name, members);
                }
                None => plain.push(name),
            },
            _ => plain.push(name),
        }
    }
    let mut waves = vec![plain];
    while !ensembles.is_empty() {
        let wave: Vec<String> = ensembles
            .iter()
            .filter(|(_, members)| members.iter().all(|m| !ensembles.contains_key(m)))
            .map(|(name, _)| name.clone())
            .collect();
        if wave.is_empty() {
            waves.push(std::mem::take(&mut ensembles).into_keys().collect());
            break;
        }
        for name in &wave {
            ensembles.remove(name);
        }
        waves.push(wave);
    }
    waves
}
