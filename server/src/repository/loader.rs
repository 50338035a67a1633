//! Turning a model folder into served versions: reading and completing its config, choosing versions by
//! policy, and loading (and warming up) each version that is new or changed, reusing the ones that are not.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use ferry_proto::inference::ModelConfig;
use ort::environment::Environment;

use super::{
    VersionState,
    scan::{Fingerprint, version_folders},
};
use crate::{
    config::{ConfigSource, ModelSpec, VersionPolicy, complete_config, needs_signature, parse_model_config},
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
    /// Selected versions with their model files and the fingerprints of their folders.
    pub versions: Vec<(u64, PathBuf, Fingerprint)>,
}

/// Reads, completes and validates the config of the model `name` and selects its versions.
pub fn prepare(environment: &Environment, name: &str, source: &ModelSource) -> Result<Prepared, String> {
    let config_path = source.dir.join("config.pbtxt");
    let path_text = config_path.display().to_string();
    let (mut config, text) = match &source.config {
        Some(config) => (config.clone(), None),
        None => match std::fs::read_to_string(&config_path) {
            Ok(text) => (
                parse_model_config(&text, &path_text).map_err(|e| e.to_string())?,
                Some(text),
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (ModelConfig::default(), None),
            Err(error) => return Err(format!("cannot read {path_text}: {error}")),
        },
    };
    let selected = VersionPolicy::from_config(&config).select(&version_folders(&source.dir));
    let Some(&highest) = selected.first() else {
        return Err(format!(
            "no version folder of {} is selected by its version policy (folders are named 1, 2, ...)",
            source.dir.display()
        ));
    };
    let filename = if config.default_model_filename.is_empty() {
        "model.onnx".to_owned()
    } else {
        config.default_model_filename.clone()
    };
    let signature = if needs_signature(&config) {
        let path = source.dir.join(highest.to_string()).join(&filename);
        Some(
            read_signature(environment, &path)
                .map_err(|e| format!("auto-complete of the config failed: {e}"))?,
        )
    } else {
        None
    };
    complete_config(&mut config, signature.as_ref(), &path_text).map_err(|e| e.to_string())?;
    let config_source = ConfigSource {
        path: &path_text,
        text: text.as_deref(),
    };
    let spec = Arc::new(ModelSpec::from_config(config, name, config_source).map_err(|e| e.to_string())?);
    let versions = selected
        .into_iter()
        .map(|version| {
            let folder = source.dir.join(version.to_string());
            (
                version,
                folder.join(&spec.model_filename),
                Fingerprint::of(&folder),
            )
        })
        .collect();
    Ok(Prepared { spec, versions })
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

/// Builds the new state of every selected version: versions whose files and config are unchanged keep
/// serving as they are (their instance count adjusted in place); new or changed ones are loaded and warmed
/// up. A version that fails keeps its previous ready copy, if it had one, with the failure noted.
pub fn load_versions(
    environment: &Environment,
    prepared: &Prepared,
    current: &BTreeMap<u64, Current>,
) -> BTreeMap<u64, Current> {
    let key = reload_key(&prepared.spec);
    prepared
        .versions
        .iter()
        .map(|(version, path, files)| {
            let previous = current.get(version);
            let ready = previous.and_then(|c| match &c.state {
                VersionState::Ready { model, .. } => Some(model),
                _ => None,
            });
            if let Some(model) = ready
                && previous.is_some_and(|c| &c.files == files)
                && reload_key(&model.spec) == key
            {
                let state = match model.set_instances(environment, path, prepared.spec.instances) {
                    Ok(()) => VersionState::Ready {
                        model: Arc::clone(model),
                        note: None,
                    },
                    Err(error) => VersionState::Ready {
                        model: Arc::clone(model),
                        note: Some(format!("changing the instance count failed: {error}")),
                    },
                };
                return (*version, Current { state, files: files.clone() });
            }
            let loaded = load_version(environment, &prepared.spec, *version, path);
            let state = match (loaded, ready) {
                (Ok(model), _) => VersionState::Ready { model, note: None },
                (Err(error), Some(old)) => {
                    tracing::warn!(model = %prepared.spec.name, version, %error, "reload failed; the previous copy keeps serving");
                    // Keep serving the old copy, and keep its fingerprint so that the next change retries.
                    let files = previous.map_or_else(|| files.clone(), |c| c.files.clone());
                    let state = VersionState::Ready {
                        model: Arc::clone(old),
                        note: Some(format!("reload failed: {error}")),
                    };
                    return (*version, Current { state, files });
                }
                (Err(error), None) => VersionState::Unavailable(error),
            };
            (*version, Current { state, files: files.clone() })
        })
        .collect()
}

fn load_version(
    environment: &Environment,
    spec: &Arc<ModelSpec>,
    version: u64,
    path: &Path,
) -> Result<Arc<ModelVersion>, String> {
    if !path.exists() {
        return Err(format!("model file {} does not exist", path.display()));
    }
    ModelVersion::load(environment, Arc::clone(spec), version, path)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}
