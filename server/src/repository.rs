//! The model repository: scanning Triton-layout folders, loading every model at start (Triton's control mode
//! `none`), and answering which model version serves a request.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use ort::environment::Environment;

use crate::{
    Error,
    config::{ConfigSource, ModelSpec, VersionPolicy, complete_config, needs_signature, parse_model_config},
    model::{ModelVersion, read_signature},
};

/// A version's state as RepositoryIndex reports it.
#[derive(Debug, Clone)]
pub enum VersionState {
    /// Loaded and serving.
    Ready(Arc<ModelVersion>),
    /// Failed to load, with the reason.
    Unavailable(String),
}

/// Everything known about one model folder.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// The validated config; `None` when the config itself failed.
    pub spec: Option<Arc<ModelSpec>>,
    /// The versions the policy selected, by number.
    pub versions: BTreeMap<u64, VersionState>,
    /// Why the model as a whole cannot load (a bad config, no versions), if it cannot.
    pub failure: Option<String>,
}

impl ModelEntry {
    fn failed(reason: impl Into<String>) -> Self {
        ModelEntry {
            spec: None,
            versions: BTreeMap::new(),
            failure: Some(reason.into()),
        }
    }

    /// The ready versions, highest first.
    pub fn ready_versions(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.versions.values().rev().filter_map(|state| match state {
            VersionState::Ready(model) => Some(model),
            VersionState::Unavailable(_) => None,
        })
    }
}

/// One row of RepositoryIndex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, or empty for a model that failed as a whole.
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is unavailable; empty when ready.
    pub reason: String,
}

/// The served models. Requests read it without locks; a reload (a later issue) replaces it whole.
pub struct Registry {
    models: ArcSwap<BTreeMap<String, ModelEntry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("models", &self.models.load().len())
            .finish()
    }
}

impl Registry {
    /// Loads every model of every repository. A model that fails is recorded as unavailable with its reason;
    /// the others are served.
    pub fn load(environment: &Environment, repositories: &[PathBuf]) -> Result<Self, Error> {
        let mut folders: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for repository in repositories {
            let entries = std::fs::read_dir(repository).map_err(|error| {
                Error::ModelLoad(format!(
                    "cannot read model repository {}: {error}",
                    repository.display()
                ))
            })?;
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && !name.starts_with('.') {
                    folders.entry(name).or_default().push(entry.path());
                }
            }
        }
        let loaded = std::thread::scope(|scope| {
            let handles: Vec<_> = folders
                .into_iter()
                .map(|(name, paths)| {
                    scope.spawn(move || {
                        let entry = match paths.as_slice() {
                            [path] => load_model(environment, &name, path),
                            _ => ModelEntry::failed(format!(
                                "model '{name}' is in more than one repository: {}",
                                paths
                                    .iter()
                                    .map(|p| p.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        };
                        (name, entry)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|handle| handle.join().ok())
                .collect::<BTreeMap<_, _>>()
        });
        for (name, entry) in &loaded {
            if let Some(failure) = &entry.failure {
                tracing::warn!(model = %name, reason = %failure, "model unavailable");
            }
            for (version, state) in &entry.versions {
                match state {
                    VersionState::Ready(_) => tracing::info!(model = %name, version, "model version ready"),
                    VersionState::Unavailable(reason) => {
                        tracing::warn!(model = %name, version, %reason, "model version unavailable")
                    }
                }
            }
        }
        Ok(Registry {
            models: ArcSwap::from_pointee(loaded),
        })
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Result<ModelEntry, Error> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownModel {
                model: name.to_owned(),
            })
    }

    /// The version that serves a request for `name` and `version`; an empty version means the highest ready
    /// version.
    pub fn resolve(&self, name: &str, version: &str) -> Result<Arc<ModelVersion>, Error> {
        let models = self.models.load();
        let entry = models.get(name).ok_or_else(|| Error::UnknownModel {
            model: name.to_owned(),
        })?;
        if let Some(failure) = &entry.failure {
            return Err(Error::ModelNotReady {
                model: name.to_owned(),
                reason: failure.clone(),
            });
        }
        if version.is_empty() {
            return entry
                .ready_versions()
                .next()
                .cloned()
                .ok_or_else(|| Error::ModelNotReady {
                    model: name.to_owned(),
                    reason: "no version is ready".to_owned(),
                });
        }
        let unknown = || Error::UnknownVersion {
            model: name.to_owned(),
            version: version.to_owned(),
            served: entry
                .ready_versions()
                .map(|m| m.version.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let number: u64 = version.parse().map_err(|_| unknown())?;
        match entry.versions.get(&number) {
            Some(VersionState::Ready(model)) => Ok(Arc::clone(model)),
            Some(VersionState::Unavailable(reason)) => Err(Error::ModelNotReady {
                model: format!("{name}' version '{version}"),
                reason: reason.clone(),
            }),
            None => Err(unknown()),
        }
    }

    /// The ready versions a statistics request covers: every model when `name` is empty, every version of
    /// the model when `version` is empty.
    pub fn ready_versions(&self, name: &str, version: &str) -> Result<Vec<Arc<ModelVersion>>, Error> {
        if !version.is_empty() {
            return self.resolve(name, version).map(|model| vec![model]);
        }
        let models = self.models.load();
        if name.is_empty() {
            return Ok(models
                .values()
                .flat_map(|e| e.ready_versions().cloned())
                .collect());
        }
        let entry = models.get(name).ok_or_else(|| Error::UnknownModel {
            model: name.to_owned(),
        })?;
        Ok(entry.ready_versions().cloned().collect())
    }

    /// Every model and version with its state, sorted by name and version.
    pub fn index(&self) -> Vec<IndexEntry> {
        let models = self.models.load();
        let mut rows = Vec::new();
        for (name, entry) in models.iter() {
            if let Some(failure) = &entry.failure {
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: failure.clone(),
                });
            }
            for (version, state) in &entry.versions {
                let (state, reason) = match state {
                    VersionState::Ready(_) => ("READY", String::new()),
                    VersionState::Unavailable(reason) => ("UNAVAILABLE", reason.clone()),
                };
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: version.to_string(),
                    state,
                    reason,
                });
            }
        }
        rows
    }
}

/// Numeric version folders; Triton ignores other names and names with a leading zero.
fn version_folders(model_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(model_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (!name.starts_with('0'))
                .then(|| name.parse::<u64>().ok())
                .flatten()
        })
        .collect()
}

fn load_model(environment: &Environment, name: &str, dir: &Path) -> ModelEntry {
    let config_path = dir.join("config.pbtxt");
    let path_text = config_path.display().to_string();
    let text = match std::fs::read_to_string(&config_path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return ModelEntry::failed(format!("cannot read {path_text}: {error}")),
    };
    let mut config = match text.as_deref().map(|t| parse_model_config(t, &path_text)) {
        Some(Ok(config)) => config,
        Some(Err(error)) => return ModelEntry::failed(error.to_string()),
        None => Default::default(),
    };
    let selected = VersionPolicy::from_config(&config).select(&version_folders(dir));
    let Some(&highest) = selected.first() else {
        return ModelEntry::failed(format!(
            "no version folder of {} is selected by its version policy (folders are named 1, 2, ...)",
            dir.display()
        ));
    };
    let filename = if config.default_model_filename.is_empty() {
        "model.onnx"
    } else {
        config.default_model_filename.as_str()
    };
    let signature = if needs_signature(&config) {
        match read_signature(environment, &dir.join(highest.to_string()).join(filename)) {
            Ok(signature) => Some(signature),
            Err(error) => return ModelEntry::failed(format!("auto-complete of the config failed: {error}")),
        }
    } else {
        None
    };
    if let Err(error) = complete_config(&mut config, signature.as_ref(), &path_text) {
        return ModelEntry::failed(error.to_string());
    }
    let source = ConfigSource {
        path: &path_text,
        text: text.as_deref(),
    };
    let spec = match ModelSpec::from_config(config, name, source) {
        Ok(spec) => Arc::new(spec),
        Err(error) => return ModelEntry::failed(error.to_string()),
    };
    let versions = selected
        .into_iter()
        .map(|version| {
            let model_path = dir.join(version.to_string()).join(&spec.model_filename);
            let state = if model_path.exists() {
                match ModelVersion::load(environment, Arc::clone(&spec), version, &model_path) {
                    Ok(model) => VersionState::Ready(Arc::new(model)),
                    Err(error) => VersionState::Unavailable(error.to_string()),
                }
            } else {
                VersionState::Unavailable(format!("model file {} does not exist", model_path.display()))
            };
            (version, state)
        })
        .collect();
    ModelEntry {
        spec: Some(spec),
        versions,
        failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numeric_folders_without_leading_zeros_are_versions() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["1", "2", "10", "01", "0", "latest", "3a"] {
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        std::fs::write(dir.path().join("4"), b"a file, not a folder").expect("write");
        let mut versions = version_folders(dir.path());
        versions.sort_unstable();
        assert_eq!(versions, [1, 2, 10]);
    }
}
