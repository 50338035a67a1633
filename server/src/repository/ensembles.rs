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

use ferry_proto::inference::{ModelConfig, model_config::SchedulingChoice};

use super::{ModelEntry, Registry, VersionState, files, loader::ModelSource};
use crate::{
    config::{ModelSpec, is_ensemble, parse_model_config},
    model::ModelVersion,
};

/// The spec of version `version` (the highest ready one when `None`) of member `name` in `models`, or why
/// the ensemble cannot use it.
pub(super) fn member_spec(
    models: &super::Models,
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
/// `model` is no ensemble. Runs on every request of an ensemble: when each step finds the member spec the
/// last successful check saw, the answer stands without checking again (an `Arc` clone and a pointer
/// comparison per step, no allocation); otherwise the members are checked and, if they fit, remembered.
pub(super) fn unready_reason(models: &super::Models, model: &ModelVersion) -> Option<String> {
    let steps = model.spec.ensemble.as_ref()?;
    let fitted = model.fitted_members.load();
    let unchanged = fitted.len() == steps.len()
        && steps.iter().zip(fitted.iter()).all(|(step, known)| {
            member_spec(models, &step.model_name, step.model_version)
                .is_ok_and(|spec| Arc::ptr_eq(&spec, known))
        });
    if unchanged {
        return None;
    }
    let lookup = |name: &str, version| member_spec(models, name, version);
    if let Err(reason) = crate::ensemble::check_members(&model.spec, steps, &lookup) {
        return Some(reason);
    }
    let members = steps
        .iter()
        .map(|step| lookup(&step.model_name, step.model_version))
        .collect::<Result<Vec<_>, _>>();
    if let Ok(members) = members {
        model.fitted_members.store(Arc::new(members));
    }
    None
}

/// The models an ensemble folder's config names as steps; `None` when the folder holds no readable
/// ensemble config.
fn members(dir: &Path) -> Option<BTreeSet<String>> {
    let text = files::read_text(dir, "config.pbtxt", files::MAX_CONFIG_BYTES).ok()??;
    let config = parse_model_config(&text, "config.pbtxt").ok()?;
    is_ensemble(&config).then(|| config_members(&config))
}

/// `wanted` with the members of its ensembles (and theirs), and the members that were not in `wanted`:
/// the models loaded along with an ensemble.
pub(super) fn with_members(
    wanted: Vec<String>,
    folders: &BTreeMap<String, Vec<PathBuf>>,
) -> (Vec<String>, BTreeSet<String>) {
    let asked: BTreeSet<String> = wanted.iter().cloned().collect();
    let mut all = asked.clone();
    let mut pending = wanted;
    while let Some(name) = pending.pop() {
        if let Some([dir]) = folders.get(&name).map(Vec::as_slice) {
            for member in members(dir).unwrap_or_default() {
                // A member with no folder is left to the ensemble's member check to name.
                if folders.contains_key(&member) && all.insert(member.clone()) {
                    pending.push(member);
                }
            }
        }
    }
    let implicit = all.difference(&asked).cloned().collect();
    (all.into_iter().collect(), implicit)
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

/// The members named by the steps of ensemble `config`, if it is one.
fn config_members(config: &ModelConfig) -> BTreeSet<String> {
    match &config.scheduling_choice {
        Some(SchedulingChoice::EnsembleScheduling(scheduling)) if is_ensemble(config) => {
            scheduling.step.iter().map(|s| s.model_name.clone()).collect()
        }
        _ => BTreeSet::new(),
    }
}

impl Registry {
    /// Loads the members of the ensemble about to load from `source` (explicit mode), as Triton loads the
    /// models an ensemble names along with it (`ModelRepositoryManager::LoadUnloadModels`): members of
    /// members first, each once. A member loaded, and unchanged on disk, is kept as it is; a member that
    /// was not loaded is remembered as loaded along with an ensemble, for `unload_dependents`. A member
    /// that fails to load is logged; the ensemble's own member check then names it.
    pub(super) fn load_members(
        &self,
        source: &ModelSource,
        folders: &BTreeMap<String, Vec<PathBuf>>,
        implicit: &mut BTreeSet<String>,
    ) {
        let members = match &source.config {
            Some(config) => config_members(config),
            None => members(&source.dir).unwrap_or_default(),
        };
        let mut visited = BTreeSet::new();
        for member in members {
            self.load_member(&member, folders, implicit, &mut visited);
        }
    }

    fn load_member(
        &self,
        name: &str,
        folders: &BTreeMap<String, Vec<PathBuf>>,
        implicit: &mut BTreeSet<String>,
        visited: &mut BTreeSet<String>,
    ) {
        // Each model once: this also ends a cycle of ensembles, whose member check then fails.
        // A member with no folder is left to the ensemble's member check to name.
        if !folders.contains_key(name) || !visited.insert(name.to_owned()) {
            return;
        }
        if let Some([dir]) = folders.get(name).map(Vec::as_slice) {
            for member in members(dir).unwrap_or_default() {
                self.load_member(&member, folders, implicit, visited);
            }
        }
        let serving = self
            .models
            .load()
            .get(name)
            .is_some_and(|entry| entry.failure.is_none() && entry.ready_versions().next().is_some());
        if !serving {
            implicit.insert(name.to_owned());
        }
        self.load_from_folders(name, folders);
    }

    /// Loads again, in poll mode, each ensemble that does not serve and names one of the models in
    /// `changed` as a step: it may have failed for want of that member, and its own folder has not changed
    /// since (Triton reloads an ensemble whose missing member appears, through its dependency graph).
    pub(super) fn retry_ensembles(&self, changed: &[String], folders: &BTreeMap<String, Vec<PathBuf>>) {
        // Each round retries the ensembles waiting on what the round before loaded (ensembles of
        // ensembles); each model at most once, so the rounds end.
        let mut done: BTreeSet<String> = changed.iter().cloned().collect();
        let mut changed = changed.to_vec();
        while !changed.is_empty() {
            let waiting: Vec<String> = self
                .models
                .load()
                .iter()
                .filter(|(name, entry)| {
                    !done.contains(*name)
                        && entry.ready_versions().next().is_none()
                        && entry.failure.as_deref() != Some(super::UNLOADED)
                })
                .filter_map(|(name, _)| match folders.get(name).map(Vec::as_slice) {
                    Some([dir]) => members(dir)
                        .filter(|members| changed.iter().any(|c| members.contains(c)))
                        .map(|_| name.clone()),
                    _ => None,
                })
                .collect();
            for name in load_waves(waiting.clone(), folders).concat() {
                tracing::info!(model = %name, "a member of the ensemble changed; loading it again");
                self.load_from_folders(&name, folders);
            }
            done.extend(waiting.iter().cloned());
            changed = waiting;
        }
    }

    /// The models to unload with ensemble `name` for `unload_dependents` (Triton's `UpdateDependencyGraph`
    /// with `deleted_dependents`): its members, and theirs, that were loaded along with an ensemble rather
    /// than by a load request of their own, and that no other loaded ensemble uses.
    pub(super) fn dependents_to_unload(&self, name: &str, implicit: &BTreeSet<String>) -> Vec<String> {
        let models = self.models.load();
        let uses = |entry: &ModelEntry| -> BTreeSet<String> {
            entry
                .spec
                .as_ref()
                .map(|spec| config_members(&spec.config))
                .unwrap_or_default()
        };
        let mut gone = BTreeSet::from([name.to_owned()]);
        let mut pending: Vec<String> = models
            .get(name)
            .map(|e| uses(e).into_iter().collect())
            .unwrap_or_default();
        let mut unload = Vec::new();
        while let Some(member) = pending.pop() {
            if gone.contains(&member) || !implicit.contains(&member) {
                continue;
            }
            let still_used = models.iter().any(|(other, entry)| {
                !gone.contains(other) && entry.failure.is_none() && uses(entry).contains(&member)
            });
            if still_used {
                continue;
            }
            gone.insert(member.clone());
            if let Some(entry) = models.get(&member) {
                pending.extend(uses(entry));
            }
            unload.push(member);
        }
        unload
    }
}
