//! Turning a model folder into served versions: reading and completing its config, choosing versions by
//! policy, and loading (and warming up) each version that is new or changed, reusing the ones that are not.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ferry_proto::inference::ModelConfig;
use ort::environment::Environment;

use super::{
    VersionState, files, mlflow,
    scan::{Fingerprint, version_folders},
};
use crate::{
    config::{
        ConfigSource, ModelSpec, VersionPolicy, complete_config_with, needs_signature, parse_model_config,
    },
    limits::{ResourceLimits, ThreadBudget},
    model::{ModelVersion, read_signature},
};

/// Where a model's files and config come from.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// The model folder: version folders (and `config.pbtxt` unless `config` is given).
    pub dir: PathBuf,
    /// A config given with a load request, used instead of `config.pbtxt`.
    pub config: Option<ModelConfig>,
}

/// A validated config and the versions it selects, before any session is opened.
#[derive(Debug)]
pub struct Prepared {
    /// The completed, validated config.
    pub spec: Arc<ModelSpec>,
    /// The model folder, which every model file must stay inside.
    pub dir: PathBuf,
    /// Selected versions with their model files and the fingerprints of their folders.
    pub versions: Vec<(u64, PathBuf, Fingerprint)>,
}

/// Why loading a model failed, in the kinds Triton answers differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadFailure {
    /// The config could not be read, completed or validated: Triton finds this while it polls the
    /// repository, before any version loads.
    Model(String),
    /// The version policy selects no version folder (Triton's `AsyncLoad`).
    NoVersions(String),
    /// The memory budget has no room for the model and nothing can be evicted.
    Budget(String),
    /// A selected version failed to load, so the load committed nothing.
    Version {
        /// The version that failed first.
        version: u64,
        /// Why.
        reason: String,
    },
}

impl From<String> for LoadFailure {
    fn from(reason: String) -> Self {
        LoadFailure::Model(reason)
    }
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadFailure::Model(reason) | LoadFailure::NoVersions(reason) | LoadFailure::Budget(reason) => {
                f.write_str(reason)
            }
            LoadFailure::Version { version, reason } => write!(f, "version {version}: {reason}"),
        }
    }
}

/// Reads, completes and validates the config of the model `name` and selects its versions.
pub fn prepare(
    environment: &Environment,
    name: &str,
    source: &ModelSource,
    limits: &ResourceLimits,
) -> Result<Prepared, LoadFailure> {
    let config_path = source.dir.join("config.pbtxt");
    // Errors name where the config came from: the file, or the load request that carried it.
    let path_text = match &source.config {
        Some(_) => "the load request's 'config' parameter".to_owned(),
        None => config_path.display().to_string(),
    };
    let (mut config, text) = match &source.config {
        Some(config) => (config.clone(), None),
        None => match files::read_text(&source.dir, "config.pbtxt", files::MAX_CONFIG_BYTES)? {
            Some(text) => (
                parse_model_config(&text, &path_text).map_err(|e| e.to_string())?,
                Some(text),
            ),
            None => (ModelConfig::default(), None),
        },
    };
    let selected = VersionPolicy::from_config(&config).select(&version_folders(&source.dir));
    let Some(&highest) = selected.first() else {
        return Err(LoadFailure::NoVersions(format!(
            "no version folder of {} is selected by its version policy (folders are named 1, 2, ...)",
            source.dir.display()
        )));
    };
    // An MLflow model folder names its ONNX file, and its signature completes the model's open shapes.
    let mlflow = mlflow::read(&source.dir, highest)?;
    let filename = match (&mlflow, config.default_model_filename.as_str()) {
        (Some(mlflow), "") => mlflow.data.as_str(),
        (None, "") => "model.onnx",
        (_, named) => named,
    };
    if !files::is_plain_file_name(filename) {
        return Err(LoadFailure::Model(format!(
            "{path_text}: default_model_filename must be a file name inside each version folder, without \
             '/' or '..', got '{filename}'"
        )));
    }
    let signature = if needs_signature(&config) {
        let path = source.dir.join(highest.to_string()).join(filename);
        let path = files::contained_file(&source.dir, &path)?;
        let mut signature = read_signature(environment, &path)
            .map_err(|e| format!("auto-complete of the config failed: {e}"))?;
        if let Some(mlflow) = &mlflow {
            mlflow::complete_signature(&mut signature, mlflow)
                .map_err(|e| format!("auto-complete of the config failed: {e}"))?;
        }
        Some(signature)
    } else {
        None
    };
    complete_config_with(
        &mut config,
        signature.as_ref(),
        &path_text,
        limits.default_max_batch_size(),
    )
    .map_err(|e| e.to_string())?;
    let config_source = ConfigSource {
        path: &path_text,
        text: text.as_deref(),
    };
    let mut spec = ModelSpec::from_config(config, name, config_source).map_err(|e| e.to_string())?;
    check_limits(&spec, limits, &path_text)?;
    spec.max_request_bytes = limits.max_request_bytes;
    spec.labels = crate::classification::OutputLabels::load(&source.dir, &spec)?;
    let spec = Arc::new(spec);
    let explicit_filename = !spec.config.default_model_filename.is_empty();
    let versions = selected
        .into_iter()
        .map(|version| {
            let folder = source.dir.join(version.to_string());
            let file = match mlflow::read(&source.dir, version)? {
                Some(mlflow) if !explicit_filename => mlflow.data,
                _ => spec.model_filename.clone(),
            };
            Ok((version, folder.join(file), Fingerprint::of(&folder)))
        })
        .collect::<Result<_, String>>()?;
    Ok(Prepared {
        spec,
        dir: source.dir.clone(),
        versions,
    })
}

/// Refuses a config that asks for more instances or ONNX Runtime threads than the limits allow, before
/// any session or thread is started.
fn check_limits(spec: &ModelSpec, limits: &ResourceLimits, path: &str) -> Result<(), String> {
    let plan = &spec.instances;
    if plan.count > limits.max_instances_per_model {
        return Err(format!(
            "{path}: instance_group asks for {} instances but a model may run at most {} \
             (--max-instances-per-model)",
            plan.count, limits.max_instances_per_model
        ));
    }
    for (key, threads) in [
        ("intra_op_thread_count", plan.intra_op_threads),
        ("inter_op_thread_count", plan.inter_op_threads),
    ] {
        if let Some(threads) = threads.filter(|t| *t > limits.max_threads_per_instance) {
            return Err(format!(
                "{path}: parameter {key} asks for {threads} threads but an instance may use at most {} \
                 (--max-threads-per-instance)",
                limits.max_threads_per_instance
            ));
        }
    }
    Ok(())
}

/// Whether a version loaded with `old` keeps its sessions under `new`: only the number of instances may change
/// in place. A new placement (another kind, other GPUs) needs sessions opened elsewhere, so it reloads.
fn keeps_sessions(old: &ModelSpec, new: &ModelSpec) -> bool {
    reload_key(old) == reload_key(new)
        && old.labels == new.labels
        && old.instances.placement == new.instances.placement
}

/// The parts of a config whose change needs new sessions: everything but `instance_group` (applied in
/// place) and `version_policy` (which only chooses versions).
pub fn reload_key(spec: &ModelSpec) -> ModelConfig {
    ModelConfig {
        instance_group: Vec::new(),
        version_policy: None,
        ..spec.config.clone()
    }
}

/// A version as it is served now, with the fingerprint of the files it was loaded from.
#[derive(Debug, Clone)]
pub struct Current {
    /// Its state.
    pub state: VersionState,
    /// The fingerprint of its folder when it was loaded.
    pub files: Fingerprint,
}

/// What loading the selected versions of a model came to, before anything is published.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Versions that may serve once the load commits: freshly loaded ones, and unchanged ones kept as they
    /// are, with the fingerprint of their files.
    pub ready: BTreeMap<u64, (Arc<ModelVersion>, Fingerprint)>,
    /// Unchanged versions whose instance count the new config changes; applied only when the load commits.
    pub resized: Vec<(u64, PathBuf)>,
    /// Versions that failed to load, with the reason.
    pub failed: BTreeMap<u64, String>,
    /// Versions loaded afresh (not kept as they were).
    pub fresh: usize,
}

/// Loads every selected version that is new or changed; versions whose files and config are unchanged are
/// reused as they are. Nothing is published and nothing that serves is touched: the caller commits the
/// outcome only if no version failed (Triton's all-or-nothing load of a model's versions).
pub fn load_versions(
    environment: &Environment,
    prepared: &Prepared,
    current: &BTreeMap<u64, Current>,
    threads: &Arc<ThreadBudget>,
    idle_after: Option<Duration>,
    payload_log: Option<&crate::payload::PayloadLogOptions>,
) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    for (version, path, files) in &prepared.versions {
        let reusable = current.get(version).and_then(|c| match &c.state {
            VersionState::Ready { model, .. }
                if &c.files == files && keeps_sessions(&model.spec, &prepared.spec) =>
            {
                Some(model)
            }
            _ => None,
        });
        if let Some(model) = reusable {
            // An ensemble has no instances of its own to resize.
            if prepared.spec.ensemble.is_none() && model.instance_count() != prepared.spec.instances.count {
                outcome.resized.push((*version, path.clone()));
            }
            outcome.ready.insert(*version, (Arc::clone(model), files.clone()));
            continue;
        }
        // A version loaded again keeps its live quality (waiting predictions, running metric) when it
        // measures the same way.
        let previous = current.get(version).and_then(|c| match &c.state {
            VersionState::Ready { model, .. } => model.quality.clone(),
            _ => None,
        });
        let loaded = load_version(
            environment,
            prepared,
            *version,
            path,
            threads,
            idle_after,
            payload_log,
        )
        .and_then(|mut model| {
            model.quality =
                crate::quality::QualityMonitor::start(&prepared.spec, *version, previous.as_ref())
                    .map_err(|error| error.to_string())?;
            Ok(Arc::new(model))
        });
        match loaded {
            Ok(model) => {
                outcome.fresh += 1;
                outcome.ready.insert(*version, (model, files.clone()));
            }
            Err(error) => {
                tracing::warn!(model = %prepared.spec.name, version, %error, "version failed to load");
                outcome.failed.insert(*version, error);
            }
        }
    }
    outcome
}

fn load_version(
    environment: &Environment,
    prepared: &Prepared,
    version: u64,
    path: &Path,
    threads: &Arc<ThreadBudget>,
    idle_after: Option<Duration>,
    payload_log: Option<&crate::payload::PayloadLogOptions>,
) -> Result<ModelVersion, String> {
    if prepared.spec.ensemble.is_some() {
        // An ensemble's version folder holds no model: its steps run on the members.
        // Its requests are logged as the ensemble's, with its own inputs and outputs.
        let mut model = ModelVersion::ensemble(Arc::clone(&prepared.spec), version);
        model.payload_log = crate::payload::PayloadLog::start(&prepared.spec, version, payload_log)
            .map_err(|error| error.to_string())?;
        return Ok(model);
    }
    let path = files::contained_file(&prepared.dir, path)?;
    let before = crate::model::resident_bytes();
    let model = ModelVersion::load(
        environment,
        Arc::clone(&prepared.spec),
        version,
        &path,
        threads,
        idle_after,
        payload_log,
    )
    .map_err(|e| e.to_string())?;
    // What the load took, at least the model file: the memory budget's measure of the version.
    let grown = crate::model::resident_bytes().saturating_sub(before);
    model.set_memory_bytes(grown.max(crate::model::file_bytes(&path)));
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::spec_from;

    /// Ferry's own rule (Triton reloads the whole model on any config change): a count edit is applied in
    /// place, a kind or GPU edit reloads, since the running sessions sit on the old device.
    #[test]
    fn only_count_edits_keep_the_sessions() {
        let spec = |groups: &str| {
            spec_from(&format!("max_batch_size: 2\ninstance_group [ {groups} ]\n")).expect("valid")
        };
        let cpu = spec("{ kind: KIND_CPU, count: 1 }");
        assert!(keeps_sessions(&cpu, &spec("{ kind: KIND_CPU, count: 3 }")));
        assert!(!keeps_sessions(&cpu, &spec("{ kind: KIND_AUTO, count: 1 }")));
        assert!(!keeps_sessions(
            &spec("{ kind: KIND_GPU, gpus: [ 0 ] }"),
            &spec("{ kind: KIND_GPU, gpus: [ 1 ] }")
        ));
        assert!(!keeps_sessions(
            &cpu,
            &spec_from("max_batch_size: 4\ninstance_group [ { kind: KIND_CPU } ]\n").expect("valid")
        ));
    }
}
