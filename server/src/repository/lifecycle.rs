//! Changing what is served: loading at start, loading and unloading on request (explicit mode), and the
//! reload that swaps a new copy in only once it is ready.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
    sync::{Arc, PoisonError, atomic::AtomicU64},
};

use bytes::Bytes;
use ferry_proto::inference::ModelConfig;
use ort::environment::Environment;
use prost_reflect::DynamicMessage;

use super::{
    ControlMode, ModelEntry, Registry, RepositoryOptions, VersionState, files,
    loader::{self, Current, LoadFailure, ModelSource},
    scan::{ChangeDetector, Fingerprint, model_folders},
};
use crate::{Error, config::model_config_descriptor, limits::ThreadBudget};

/// State that only changes under the lifecycle lock: what poll mode last saw and acted on, and where
/// uploaded model files go.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    pub(super) detector: ChangeDetector,
    /// The upload folder each model loaded from files now serves from, removed when that model is
    /// unloaded or loaded from elsewhere.
    uploads: BTreeMap<String, PathBuf>,
    /// Models loaded along with an ensemble (explicit mode) rather than by a load request of their own:
    /// what `unload_dependents` may unload with the ensemble.
    implicit: BTreeSet<String>,
}

/// The longest model name Ferry accepts: the longest file name Linux allows, since names are folders.
pub const MAX_MODEL_NAME_BYTES: usize = 255;

/// A model name that is safe to use as a folder name: checked once, where a load or unload request arrives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelName(String);

impl ModelName {
    /// Accepts a name of 1 to [`MAX_MODEL_NAME_BYTES`] bytes that names one folder: no `/`, `\\` or NUL, not
    /// `.` or `..`, and not hidden (a leading `.`, which repository scans skip). The names Triton refuses
    /// (`ValidateModelName`: empty, only whitespace, `/` or `..` anywhere) get Triton's text.
    pub fn parse(name: String) -> Result<Self, Error> {
        crate::limits::check_string_length("model name", &name, MAX_MODEL_NAME_BYTES)?;
        if name.is_empty() {
            return Err(Error::invalid("model name must not be empty"));
        }
        if name
            .chars()
            .all(|c| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'))
        {
            return Err(Error::invalid(
                "model name must not contain only whitespace characters",
            ));
        }
        if name.contains("..") || name.contains('/') {
            return Err(Error::invalid(format!(
                "invalid model name '{name}', model name must not contain path traversal characters"
            )));
        }
        if !files::is_plain_file_name(&name) || name.starts_with('.') {
            return Err(Error::invalid(format!(
                "invalid model name {name:?}: a model name is a folder name; it must not start with '.' nor \
                 contain '\\' or NUL"
            )));
        }
        Ok(ModelName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A load request (RepositoryModelLoad): a model to load or reload, with an optional config and files that
/// replace what is on disk.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The model.
    pub name: ModelName,
    /// The `config` parameter: the model's config as JSON, used instead of `config.pbtxt`.
    pub config_json: Option<String>,
    /// The `file:<version>/<path>` parameters: model files, written to a folder of Ferry's own.
    pub files: Vec<(String, Bytes)>,
}

impl LoadRequest {
    /// A request to load `name` from its folder in the repositories, as it is on disk.
    pub fn new(name: ModelName) -> Self {
        LoadRequest {
            name,
            config_json: None,
            files: Vec::new(),
        }
    }
}

/// Triton's answer to a load or unload request outside explicit mode.
const CONTROL_DISABLED: &str = "explicit model load / unload is not allowed if polling is enabled";

impl Registry {
    /// Loads the models the options ask for at start and, in poll mode, starts following the repositories.
    pub fn start(environment: Environment, options: RepositoryOptions) -> Result<Arc<Self>, Error> {
        let folders = model_folders(&options.roots).map_err(Error::ModelLoad)?;
        let wanted: Vec<String> = match options.control_mode {
            ControlMode::Explicit if options.startup_models.iter().any(|m| m == "*") => {
                startup_models(&options, &folders)
            }
            ControlMode::Explicit if options.load_on_demand => startup_models(&options, &folders),
            ControlMode::Explicit => options.startup_models.clone(),
            ControlMode::None | ControlMode::Poll => folders.keys().cloned().collect(),
        };
        // The members of the ensembles asked for load with them, as in Triton.
        let (wanted, implicit) = super::ensembles::with_members(wanted, &folders);
        let registry = Arc::new(Registry {
            models: Default::default(),
            draining: Default::default(),
            lifecycle: Default::default(),
            threads: ThreadBudget::new(options.limits.max_model_threads),
            uploads: uploads_root(),
            options,
            environment,
            shutting_down: Default::default(),
            traffic: Default::default(),
            on_demand: Default::default(),
            management: Default::default(),
        });
        registry
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .implicit = implicit;
        // Ensembles load after their members, which load together, on a few threads: a thousand models
        // need no thousand loader threads.
        // Under a memory budget one at a time, so that each load's memory growth is its own.
        let loaders = match registry.options.memory_budget {
            Some(_) => 1,
            None => std::thread::available_parallelism().map_or(2, usize::from) * 2,
        };
        for wave in super::ensembles::load_waves(wanted, &folders) {
            let next = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..loaders.min(wave.len()) {
                    let (registry, folders, wave, next) = (&registry, &folders, &wave, &next);
                    scope.spawn(move || {
                        while let Some(name) =
                            wave.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                        {
                            registry.load_from_folders(name, folders);
                        }
                    });
                }
            });
        }
        if registry.options.control_mode == ControlMode::Poll {
            let mut lifecycle = registry.lifecycle.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, paths) in &folders {
                if let [path] = paths.as_slice() {
                    lifecycle.detector.acted_on(name, Fingerprint::of(path));
                }
            }
            drop(lifecycle);
            super::poll::spawn(&registry);
        }
        for row in registry.index() {
            match row.state {
                "READY" => tracing::info!(model = %row.name, version = %row.version, "model version ready"),
                // Not asked for at start (explicit mode): nothing to say.
                "" => {}
                _ => {
                    tracing::warn!(model = %row.name, version = %row.version, state = row.state, reason = %row.reason, "model not ready")
                }
            }
        }
        Ok(registry)
    }

    /// Loads `name` from its folder in the repositories, recording a model found in several as unavailable.
    pub(super) fn load_from_folders(&self, name: &str, folders: &BTreeMap<String, Vec<PathBuf>>) {
        let result = match folders.get(name).map(Vec::as_slice) {
            Some([dir]) => self.load_model(
                name,
                &ModelSource {
                    dir: dir.clone(),
                    config: None,
                },
            ),
            Some(paths) => {
                let reason = format!(
                    "model '{name}' is in more than one repository: {}",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.publish(name, Some(failed(reason.clone())));
                Err(LoadFailure::Model(reason))
            }
            None => {
                let reason = format!("no model folder named '{name}' in the model repositories");
                self.publish(name, Some(failed(reason.clone())));
                Err(LoadFailure::Model(reason))
            }
        };
        if let Err(reason) = result {
            tracing::warn!(model = %name, %reason, "model load failed");
        }
    }

    /// Loads or reloads `name` from `source` as one transaction, as Triton does: the versions the policy
    /// selects load in the background while the current ones keep serving; only when every one of them is
    /// ready are they swapped in together, and the versions that left the policy drain. If any fails, the
    /// serving set stays exactly as it was, the failed versions show as unavailable with the reason, and
    /// the versions this load had opened are released. Returns the first failure, if any.
    pub(super) fn load_model(&self, name: &str, source: &ModelSource) -> Result<(), LoadFailure> {
        // The traffic policy lives next to the config: read (or reread, if it changed) with every load.
        self.traffic.attach(name, &source.dir);
        let before = self
            .models
            .load()
            .get(name)
            .map(|entry| ModelEntry::clone(entry))
            .unwrap_or_default();
        let prepared = match loader::prepare(&self.environment, name, source, &self.options.limits) {
            Ok(prepared) => prepared,
            Err(failure) => {
                self.keep_serving_or_fail(name, before, &failure.to_string());
                return Err(failure);
            }
        };
        let pinned = super::management::pinned(&prepared.spec);
        if let Err(reason) = pinned {
            let failure = LoadFailure::Model(reason);
            self.keep_serving_or_fail(name, before, &failure.to_string());
            return Err(failure);
        }
        if self.options.memory_budget.is_some() && prepared.spec.ensemble.is_none() {
            // Versions that serve already with the same files are kept, and need no room.
            let needed: u64 = prepared
                .versions
                .iter()
                .filter(|(version, _, files)| {
                    !(matches!(before.versions.get(version), Some(VersionState::Ready { .. }))
                        && before.loaded_files.get(version) == Some(files))
                })
                .map(|(version, path, _)| {
                    self.management
                        .measured(name, *version)
                        .unwrap_or_else(|| crate::model::file_bytes(path))
                })
                .sum();
            if let Err(error) = self.make_room(name, needed) {
                let failure = LoadFailure::Budget(error.to_string());
                self.keep_serving_or_fail(name, before, &failure.to_string());
                return Err(failure);
            }
        }
        if let Some(steps) = &prepared.spec.ensemble {
            let models = self.models.load();
            let checked = crate::ensemble::check_members(&prepared.spec, steps, &|member, version| {
                super::ensembles::member_spec(&models, member, version)
            });
            if let Err(reason) = checked {
                let failure = LoadFailure::Model(format!("ensemble '{name}': {reason}"));
                self.keep_serving_or_fail(name, before, &failure.to_string());
                return Err(failure);
            }
        }
        let current: BTreeMap<u64, Current> = before
            .versions
            .iter()
            .map(|(version, state)| {
                let files = before.loaded_files.get(version).cloned().unwrap_or_default();
                (
                    *version,
                    Current {
                        state: state.clone(),
                        files,
                    },
                )
            })
            .collect();
        // Versions that are not serving yet show as loading while they load.
        let mut loading = before.clone();
        for (version, _, _) in &prepared.versions {
            if !matches!(loading.versions.get(version), Some(VersionState::Ready { .. })) {
                loading.versions.insert(*version, VersionState::Loading);
            }
        }
        loading.failure = None;
        self.publish(name, Some(loading));

        let outcome = loader::load_versions(
            &self.environment,
            &prepared,
            &current,
            &self.threads,
            self.options.limits.instance_idle(),
            self.options.payload_log.as_ref(),
        );
        if let Some((version, reason)) = outcome.failed.iter().next() {
            let failure = LoadFailure::Version {
                version: *version,
                reason: reason.clone(),
            };
            self.publish(name, Some(aborted(before, outcome, &failure.to_string())));
            return Err(failure);
        }
        if outcome.fresh > 0 {
            self.management.loaded(name);
        }
        let mut versions = BTreeMap::new();
        let mut loaded_files = BTreeMap::new();
        for (version, (model, files)) in outcome.ready {
            self.management.measure(name, version, model.memory_bytes());
            let note = outcome
                .resized
                .iter()
                .find(|(v, _)| *v == version)
                .and_then(|(_, path)| {
                    model
                        .set_instances(&self.environment, path, prepared.spec.instances, &self.threads)
                        .err()
                        .map(|error| format!("changing the instance count failed: {error}"))
                });
            versions.insert(version, VersionState::Ready { model, note });
            loaded_files.insert(version, files);
        }
        // The committed config, including instance_group changes applied in place to kept versions.
        self.publish(
            name,
            Some(ModelEntry {
                spec: Some(Arc::clone(&prepared.spec)),
                versions,
                failure: None,
                loaded_files,
            }),
        );
        // The estimate before the load may have been low (a first load counts the file's size only): what
        // the versions measured may take the models past the budget, and others make room now.
        if self.options.memory_budget.is_some()
            && let Err(error) = self.make_room(name, 0)
        {
            tracing::warn!(model = %name, %error, "over the model memory budget after a load");
        }
        Ok(())
    }

    /// After a config that cannot be used: versions already serving go on (with the reason noted); a model
    /// with none becomes unavailable with the reason.
    fn keep_serving_or_fail(&self, name: &str, mut before: ModelEntry, reason: &str) {
        if before.ready_versions().next().is_none() {
            self.publish(name, Some(failed(reason.to_owned())));
            return;
        }
        for state in before.versions.values_mut() {
            if let VersionState::Ready { note, .. } = state {
                *note = Some(format!("reload failed: {reason}"));
            }
        }
        self.publish(name, Some(before));
    }

    /// Takes `name` out of service: its versions finish the requests they have, then are freed. The model
    /// stays in the index as unavailable, as in Triton.
    pub(super) fn unload_model(&self, name: &str) {
        self.publish(name, Some(failed(super::UNLOADED.to_owned())));
    }

    /// Refuses load and unload requests outside explicit mode, with Triton's status and text.
    pub fn check_model_control(&self) -> Result<(), Error> {
        if self.options.control_mode == ControlMode::Explicit {
            Ok(())
        } else {
            Err(Error::ModelControlDisabled(CONTROL_DISABLED.to_owned()))
        }
    }

    /// Handles RepositoryModelLoad. Blocks while the model loads: call it off the async workers.
    ///
    /// Failures are Triton's (`ModelRepositoryManager::LoadUnloadModel`): a model that cannot be found,
    /// read or configured is `INTERNAL` "failed to load '<model>', failed to poll from model repository",
    /// and a version that fails to load is `INVALID_ARGUMENT` "load failed for model '<model>': version N
    /// is at UNAVAILABLE state: <reason>;". Ferry's detail follows Triton's text after `"; "`.
    pub fn load_request(&self, request: LoadRequest) -> Result<(), Error> {
        self.check_model_control()?;
        if !request.files.is_empty() && !self.options.allow_model_file_upload {
            return Err(Error::PermissionDenied(format!(
                "load request for '{}' carries model files ('file:' parameters), which this server does not \
                 accept; start it with --allow-model-file-upload to allow uploads",
                request.name.as_str()
            )));
        }
        let name = request.name.as_str();
        let config = request
            .config_json
            .as_deref()
            .map(config_from_json)
            .transpose()
            .map_err(|error| poll_failure(name, error))?;
        let mut lifecycle = self.lifecycle.lock().unwrap_or_else(PoisonError::into_inner);
        let (source, upload) = if request.files.is_empty() {
            let folders = model_folders(&self.options.roots).map_err(|error| poll_failure(name, error))?;
            match folders.get(name).map(Vec::as_slice) {
                Some([dir]) => (
                    ModelSource {
                        dir: dir.clone(),
                        config,
                    },
                    None,
                ),
                Some(_) => return Err(poll_failure(name, "not unique across all model repositories")),
                None => return Err(poll_failure(name, "model not found in any model repository")),
            }
        } else {
            let Some(config) = config else {
                return Err(poll_failure(
                    name,
                    "Load parameter 'config' must be specified for model file override",
                ));
            };
            let dir = write_uploads(&self.uploads, &request.name, &request.files)
                .map_err(|error| poll_failure(name, error))?;
            (
                ModelSource {
                    dir: dir.clone(),
                    config: Some(config),
                },
                Some(dir),
            )
        };
        // As in Triton, a model asked for by name is no longer one loaded along with an ensemble; an
        // ensemble's members load first.
        lifecycle.implicit.remove(name);
        if let Ok(folders) = model_folders(&self.options.roots) {
            self.load_members(&source, &folders, &mut lifecycle.implicit);
        }
        let loaded = self.load_model(name, &source);
        match (&loaded, upload) {
            (Err(_), Some(new)) => remove_folder(&new),
            (Err(_), None) => {}
            (Ok(()), new) => {
                let old = match new {
                    Some(new) => lifecycle.uploads.insert(name.to_owned(), new),
                    None => lifecycle.uploads.remove(name),
                };
                if let Some(old) = old {
                    remove_folder(&old);
                }
            }
        }
        loaded.map_err(|failure| match failure {
            LoadFailure::Model(reason) => poll_failure(name, reason),
            LoadFailure::NoVersions(_) => Error::ModelLoad(format!(
                "load failed for model '{name}': at least one version must be available under the version \
                 policy of model '{name}'\n"
            )),
            LoadFailure::Budget(reason) => Error::TooLarge(reason),
            LoadFailure::Version { version, reason } => Error::ModelLoad(format!(
                "load failed for model '{name}': version {version} is at UNAVAILABLE state: {reason};\n"
            )),
        })
    }

    /// Handles RepositoryModelUnload. As in Triton, unloading a model that is not loaded, or not in any
    /// repository, succeeds: afterwards it is not served either way.
    ///
    /// With `unload_dependents`, the members an ensemble's load brought in go with it, unless another
    /// ensemble uses them (Triton's `unload_dependents`).
    pub fn unload_request(&self, name: &ModelName, unload_dependents: bool) -> Result<(), Error> {
        self.check_model_control()?;
        let name = name.as_str();
        let mut lifecycle = self.lifecycle.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.models.load().contains_key(name) {
            return Ok(());
        }
        let dependents = if unload_dependents {
            self.dependents_to_unload(name, &lifecycle.implicit)
        } else {
            Vec::new()
        };
        for model in std::iter::once(name).chain(dependents.iter().map(String::as_str)) {
            self.unload_model(model);
            lifecycle.implicit.remove(model);
            if let Some(upload) = lifecycle.uploads.remove(model) {
                remove_folder(&upload);
            }
        }
        Ok(())
    }

    /// Removes every file uploaded with load requests; called at exit (and when the registry drops).
    pub fn remove_uploads(&self) {
        let mut lifecycle = self.lifecycle.lock().unwrap_or_else(PoisonError::into_inner);
        lifecycle.uploads.clear();
        if self.uploads.exists() {
            remove_folder(&self.uploads);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.remove_uploads();
    }
}

/// The models explicit mode loads at start: those named by `--load-model`, then each other folder whose
/// config's `ferry.load_on_demand` says `"false"` (under `--load-on-demand`, such a model loads at start
/// instead), and with `--load-model=*` each other folder whose config does not say `"true"` (such a model
/// waits for its first request).
fn startup_models(options: &RepositoryOptions, folders: &BTreeMap<String, Vec<PathBuf>>) -> Vec<String> {
    let everything = options.startup_models.iter().any(|m| m == "*");
    let named: BTreeSet<&String> = options.startup_models.iter().filter(|m| *m != "*").collect();
    let mut wanted: Vec<String> = named.iter().map(|m| (*m).clone()).collect();
    for (name, paths) in folders {
        if named.contains(name) {
            continue;
        }
        let marked = match paths.as_slice() {
            [dir] => super::demand::marked_on_demand(dir),
            _ => None,
        };
        if marked.map_or(everything, |on_demand| !on_demand) {
            wanted.push(name.clone());
        }
    }
    wanted
}

/// Where a registry writes uploaded model files: a folder of its own under the temporary directory, so
/// that two registries of one process (as in tests) never remove each other's files.
fn uploads_root() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ferry-uploads-{}-{serial}", std::process::id()))
}

fn remove_folder(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!(folder = %dir.display(), %error, "cannot remove uploaded model files");
    }
}

/// The entry after a load that did not commit: every version that served before serves on unchanged (a
/// failed reload of one of them is noted on it), each selected version that is not serving shows as
/// unavailable with its own failure or the load's, and what the load had opened is dropped here.
fn aborted(before: ModelEntry, outcome: loader::LoadOutcome, reason: &str) -> ModelEntry {
    let mut entry = ModelEntry {
        versions: before
            .versions
            .into_iter()
            .filter(|(_, state)| matches!(state, VersionState::Ready { .. }))
            .collect(),
        failure: None,
        ..before
    };
    let attempted = outcome.failed.keys().chain(outcome.ready.keys());
    for version in attempted {
        let own = outcome.failed.get(version);
        match entry.versions.get_mut(version) {
            Some(VersionState::Ready { note, .. }) => {
                *note = own.map(|own| format!("reload failed: {own}"));
            }
            _ => {
                let why = own.cloned().unwrap_or_else(|| format!("not loaded: {reason}"));
                entry.versions.insert(*version, VersionState::Unavailable(why));
            }
        }
    }
    entry
        .loaded_files
        .retain(|version, _| matches!(entry.versions.get(version), Some(VersionState::Ready { .. })));
    entry
}

/// Triton's answer to a load of a model it cannot find, read or configure (it finds out while polling the
/// repository), with Ferry's reason after it.
fn poll_failure(name: &str, detail: impl std::fmt::Display) -> Error {
    Error::Internal(format!(
        "failed to load '{name}', failed to poll from model repository; {detail}"
    ))
}

fn failed(reason: String) -> ModelEntry {
    ModelEntry {
        failure: Some(reason),
        ..ModelEntry::default()
    }
}

/// Parses the `config` parameter: `ModelConfig` in protobuf JSON, with Triton's field names. Public only so
/// that the fuzz targets (`fuzz/`) can reach it.
#[doc(hidden)]
pub fn config_from_json(json: &str) -> Result<ModelConfig, Error> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(model_config_descriptor().clone(), &mut deserializer).map_err(
        |error| {
            Error::invalid(format!(
                "the 'config' parameter is not a valid model config: {error}"
            ))
        },
    )?;
    message.transcode_to::<ModelConfig>().map_err(|error| {
        Error::invalid(format!(
            "the 'config' parameter is not a valid model config: {error}"
        ))
    })
}

/// Writes uploaded files into a fresh folder under Ferry's own upload directory (never into a user's
/// repository) and returns it. Each path must be `<version>/<relative path>` and stay inside the folder.
fn write_uploads(root: &Path, name: &ModelName, files: &[(String, Bytes)]) -> Result<PathBuf, Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("{}-{serial}", name.as_str()));
    let written = write_files(&dir, files);
    if written.is_err() {
        remove_folder(&dir);
    }
    written.map(|()| dir)
}

fn write_files(dir: &Path, files: &[(String, Bytes)]) -> Result<(), Error> {
    for (path, contents) in files {
        let relative = Path::new(path);
        let safe = relative.components().all(|c| matches!(c, Component::Normal(_)));
        let versioned = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .is_some_and(|v| v.parse::<u64>().is_ok());
        if !safe || !versioned || relative.components().count() < 2 {
            return Err(Error::invalid(format!(
                "parameter 'file:{path}' must name a file as <version>/<path> inside the model, without '..'"
            )));
        }
        let target = dir.join(relative);
        let written = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&target, contents));
        written.map_err(|error| {
            Error::ModelLoad(format!(
                "cannot write uploaded file {}: {error}",
                target.display()
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_uses_triton_field_names() {
        let config = config_from_json(
            r#"{"name": "m", "max_batch_size": 4, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}]}"#,
        )
        .expect("valid");
        assert_eq!(config.max_batch_size, 4);
        assert_eq!(config.input[0].dims, [3]);
        let error = config_from_json(r#"{"max_batch_sise": 4}"#).expect_err("unknown field");
        assert!(error.to_string().contains("max_batch_sise"), "{error}");
    }

    #[test]
    fn uploads_stay_inside_their_folder() {
        let root = uploads_root();
        for bad in [
            "../1/model.onnx",
            "/etc/passwd",
            "model.onnx",
            "v1/model.onnx",
            "1/../../x",
        ] {
            let error = write_uploads(&root, &name("m"), &[(bad.to_owned(), Bytes::from_static(b"x"))])
                .expect_err(bad);
            assert!(error.to_string().contains("<version>/<path>"), "{bad}: {error}");
        }
        let dir = write_uploads(
            &root,
            &name("m"),
            &[("1/model.onnx".to_owned(), Bytes::from_static(b"onnx"))],
        )
        .expect("ok");
        assert_eq!(std::fs::read(dir.join("1/model.onnx")).expect("written"), b"onnx");
        assert!(dir.starts_with(&root));
        remove_folder(&root);
    }

    fn name(text: &str) -> ModelName {
        ModelName::parse(text.to_owned()).expect("valid name")
    }

    /// A load request named `../../x` or `/abs` used to write its files outside the upload folder.
    #[test]
    fn model_names_are_single_folder_names() {
        for good in ["simple", "mlp_classifier", "a.b-c", "模型"] {
            assert_eq!(name(good).as_str(), good);
        }
        let long = "x".repeat(MAX_MODEL_NAME_BYTES + 1);
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "/abs",
            "a/b",
            "a\\b",
            "a\0b",
            ".hidden",
            "a..b",
            " \t",
            long.as_str(),
        ] {
            let error = ModelName::parse(bad.to_owned()).expect_err(bad);
            assert!(matches!(error, Error::InvalidRequest(_)), "{bad:?}: {error}");
            assert!(
                error.to_string().len() < 400,
                "the message does not echo a long name whole"
            );
        }
        // Triton's texts (`ValidateModelName` in model_repository_manager.cc).
        let message = |bad: &str| ModelName::parse(bad.to_owned()).expect_err(bad).to_string();
        assert_eq!(message(""), "model name must not be empty");
        assert_eq!(
            message("  "),
            "model name must not contain only whitespace characters"
        );
        assert_eq!(
            message("../x"),
            "invalid model name '../x', model name must not contain path traversal characters"
        );
    }
}
