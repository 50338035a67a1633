//! The model repository: which model versions serve, and how that changes while traffic flows.
//!
//! Requests read the routing table without locks (an `ArcSwap`); every change builds a new table and swaps
//! it in whole, so a request sees either the old or the new set of versions, never a half-made one. A
//! replaced or removed version is freed when its last request ends.

mod background;
mod demand;
mod ensembles;
pub(crate) mod files;
mod lifecycle;
mod loader;
mod management;
pub mod mlflow;
mod poll;
mod routing;
mod scan;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
#[doc(hidden)]
pub use lifecycle::config_from_json;
pub use lifecycle::{LoadRequest, MAX_MODEL_NAME_BYTES, ModelName};
use ort::environment::Environment;
pub use routing::{Routed, Routing};
pub use scan::Fingerprint;
pub(crate) use scan::model_folders;

use crate::{
    Error,
    config::ModelSpec,
    limits::{ResourceLimits, ThreadBudget, bounded_message},
    model::ModelVersion,
};

/// How the set of served models may change (Triton's `--model-control-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlMode {
    /// Load everything at start; later changes on disk are ignored; no load or unload requests.
    #[default]
    None,
    /// Load everything at start, then follow the repositories as they change on disk.
    Poll,
    /// Load only what is asked for, at start (`--load-model`) and by load and unload requests.
    Explicit,
}

/// How the repository is managed.
#[derive(Debug, Clone)]
pub struct RepositoryOptions {
    /// Model repositories in Triton's layout.
    pub roots: Vec<PathBuf>,
    /// How the set of models may change.
    pub control_mode: ControlMode,
    /// How often poll mode looks at the repositories.
    pub poll_interval: Duration,
    /// Models to load at start in explicit mode; `*` loads all.
    pub startup_models: Vec<String>,
    /// Whether the server is ready only when every loaded model is ready.
    pub strict_readiness: bool,
    /// Bounds on instances, threads and request memory that every model's config must respect.
    pub limits: ResourceLimits,
    /// Whether a load request may carry model files (`file:<version>/<path>` parameters), which Ferry
    /// writes to disk and runs (`--allow-model-file-upload`). Off by default: whoever may load models could
    /// otherwise run any model file they send.
    pub allow_model_file_upload: bool,
    /// The server's response cache (`--cache-config local,size=BYTES`), shared by every model whose config
    /// enables it; `None` when the server has none, and then no model caches, as in Triton.
    pub response_cache: Option<Arc<crate::cache::ResponseCache>>,
    /// Whether a request for a model that is in a repository but not loaded loads it (`--load-on-demand`,
    /// explicit mode only).
    pub load_on_demand: bool,
    /// The longest a request waits for its model to load on demand.
    pub load_on_demand_timeout: Duration,
    /// The most memory loaded models may take, in bytes (`--model-memory-budget`).
    pub memory_budget: Option<u64>,
    /// Where versions whose config turns payload logging on write their records (`--payload-log-dir`);
    /// `None` refuses such configs.
    pub payload_log: Option<crate::payload::PayloadLogOptions>,
}

impl RepositoryOptions {
    /// Triton's defaults for `roots`: control mode none, strict readiness.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        RepositoryOptions {
            roots,
            control_mode: ControlMode::None,
            poll_interval: Duration::from_secs(15),
            startup_models: Vec::new(),
            strict_readiness: true,
            limits: ResourceLimits::default(),
            allow_model_file_upload: false,
            response_cache: None,
            load_on_demand: false,
            load_on_demand_timeout: Duration::from_secs(60),
            memory_budget: None,
            payload_log: None,
        }
    }
}

/// A version's state as RepositoryIndex reports it.
#[derive(Debug, Clone)]
pub enum VersionState {
    /// Being loaded; not serving yet.
    Loading,
    /// Serving. `note` says why a newer copy failed to replace it, if one did.
    Ready {
        /// The served version.
        model: Arc<ModelVersion>,
        /// The failure of the last reload attempt, if it failed.
        note: Option<String>,
    },
    /// Failed to load, with the reason.
    Unavailable(String),
}

/// Everything known about one model.
#[derive(Debug, Clone, Default)]
pub struct ModelEntry {
    /// The validated config of the served versions; `None` while loading for the first time or when the
    /// config itself failed.
    pub spec: Option<Arc<ModelSpec>>,
    /// The versions the policy selected, by number.
    pub versions: BTreeMap<u64, VersionState>,
    /// Why the model as a whole is not served (a bad config, no versions, unloaded), if it is not.
    pub failure: Option<String>,
    /// The fingerprint of each version's folder when it was loaded, to tell unchanged versions on reload.
    pub loaded_files: BTreeMap<u64, Fingerprint>,
}

impl ModelEntry {
    /// The ready versions, highest first.
    pub fn ready_versions(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.versions.values().rev().filter_map(|state| match state {
            VersionState::Ready { model, .. } => Some(model),
            _ => None,
        })
    }

    /// Why no version of the model serves: the detail Ferry adds after Triton's "has no available versions".
    pub fn not_ready_reason(&self) -> String {
        if let Some(failure) = &self.failure {
            return failure.clone();
        }
        if self
            .versions
            .values()
            .any(|state| matches!(state, VersionState::Loading))
        {
            return LOADING.to_owned();
        }
        let failed: Vec<String> = self
            .versions
            .iter()
            .filter_map(|(version, state)| match state {
                VersionState::Unavailable(reason) => Some(format!("version {version}: {reason}")),
                _ => None,
            })
            .collect();
        failed.join("; ")
    }
}

/// A requested version number. Like Triton (`GetModelVersionFromString`), a version that is not a whole
/// number, or is negative, is INVALID_ARGUMENT with Triton's message, not an unknown version; Triton's
/// parse also accepts a number followed by other text ("1.5"), which Ferry refuses.
pub fn parse_version(version: &str) -> Result<u64, Error> {
    match version.parse::<i64>() {
        Ok(number) => u64::try_from(number).map_err(|_| {
            Error::invalid(format!(
                "invalid model version specified '{version}' , version should be an integral value > 0"
            ))
        }),
        Err(_) => Err(Error::invalid(format!(
            "failed to get model version from specified version string '{version}' (details: stol), version \
             should be an integral value > 0"
        ))),
    }
}

/// The reason RepositoryIndex gives for a model unloaded on request, as Triton words it.
const UNLOADED: &str = "unloaded";

/// Ferry's detail for a version that is still loading.
const LOADING: &str = "it is loading";

/// The reason RepositoryIndex gives for a model found in several repositories
/// (`MODEL_READY_REASON_DUPLICATE` in Triton's `model_repository_manager.h`).
const DUPLICATE: &str = "model appears in two or more repositories";

/// One row of RepositoryIndex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, or empty for a model that is not served as a whole.
    pub version: String,
    /// `LOADING`, `READY`, `UNLOADING` or `UNAVAILABLE`; empty for a model that was never loaded.
    pub state: &'static str,
    /// Why it is not ready, or why a reload failed; empty otherwise.
    pub reason: String,
}

/// The routing table: every model Ferry knows, by name. Entries are shared, so that publishing one model's
/// change copies the table's pointers, not every model's state (a thousand models, each published twice
/// while they load, would otherwise copy a million entries).
pub(crate) type Models = BTreeMap<String, Arc<ModelEntry>>;

/// A version taken out of the table that still answers the requests it had.
#[derive(Debug)]
struct Draining {
    name: String,
    version: u64,
    model: Weak<ModelVersion>,
}

/// The served models and the machinery that changes them.
pub struct Registry {
    models: ArcSwap<Models>,
    draining: Mutex<Vec<Draining>>,
    lifecycle: Mutex<lifecycle::Lifecycle>,
    options: RepositoryOptions,
    environment: Environment,
    /// The threads model instances may still start, shared by every model.
    threads: Arc<ThreadBudget>,
    /// Where files uploaded with load requests are written; removed with the registry.
    uploads: PathBuf,
    /// Set once shutdown begins, so that load balancers and probes stop sending before the listeners close.
    shutting_down: AtomicBool,
    /// Every model's version labels and traffic policy.
    traffic: crate::traffic::Store,
    /// Loads on demand in progress and failed.
    on_demand: demand::OnDemand,
    /// Loads, evictions and the memory each loaded version takes.
    management: management::Management,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("models", &self.models.load().len())
            .field("control_mode", &self.options.control_mode)
            .finish()
    }
}

impl Registry {
    /// The model named `name`.
    pub fn model(&self, name: &str) -> Result<ModelEntry, Error> {
        self.models
            .load()
            .get(name)
            .map(|entry| ModelEntry::clone(entry))
            .ok_or_else(|| Error::UnknownModel {
                model: name.to_owned(),
            })
    }

    /// The version that serves a request for `name` and `version`; an empty version means the highest ready
    /// version, and a version label the version it points at. Errors are Triton's
    /// (`ModelRepositoryManager::GetModel`): the version string is checked first, then the model, then the
    /// version.
    pub fn resolve(&self, name: &str, version: &str) -> Result<Arc<ModelVersion>, Error> {
        self.route(name, version, Routing::Highest)
            .map(|routed| routed.model)
    }

    /// Every model's version labels and traffic policy.
    pub fn traffic(&self) -> &crate::traffic::Store {
        &self.traffic
    }

    /// The ready versions a statistics request covers: every model when `name` is empty, every ready
    /// version of the model when `version` is empty (`version` may be a label of the model). Errors are Triton's
    /// (`TRITONSERVER_ServerModelStatistics`): a model with no ready version, known or not, is "not
    /// available", and so is a version that is not ready.
    pub fn ready_versions(&self, name: &str, version: &str) -> Result<Vec<Arc<ModelVersion>>, Error> {
        let number = if version.is_empty() {
            None
        } else {
            Some(self.version_number(name, version)?)
        };
        let models = self.models.load();
        if name.is_empty() {
            return Ok(models
                .values()
                .flat_map(|e| e.ready_versions().cloned())
                .collect());
        }
        let ready: Vec<Arc<ModelVersion>> = models
            .get(name)
            .map(|entry| entry.ready_versions().cloned().collect())
            .unwrap_or_default();
        if ready.is_empty() {
            return Err(Error::invalid(format!(
                "requested model '{name}' is not available"
            )));
        }
        match number {
            None => Ok(ready),
            Some(number) => ready
                .into_iter()
                .find(|model| model.version == number)
                .map(|model| vec![model])
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "requested model version is not available for model '{name}'"
                    ))
                }),
        }
    }

    /// Whether the server is ready: with strict readiness, when every model it knows serves every version it
    /// selected (as in Triton, a version whose load failed makes the server unready even while the
    /// previous versions serve, and a model unloaded on request does not); otherwise always, once start-up
    /// loading is over.
    pub fn is_ready(&self) -> bool {
        if self.shutting_down.load(Ordering::Relaxed) {
            return false;
        }
        let models = self.models.load();
        !self.options.strict_readiness
            || models.iter().all(|(name, entry)| match &entry.failure {
                // Unloaded on request or evicted, or a load on demand that failed: the server goes on.
                Some(reason) => reason.starts_with(UNLOADED) || self.on_demand.has_failed(name),
                None => {
                    !entry.versions.is_empty()
                        && entry.versions.values().all(|state| match state {
                            VersionState::Ready { model, .. } => {
                                ensembles::unready_reason(&models, model).is_none()
                            }
                            _ => false,
                        })
                }
            })
    }

    /// Makes the server report not ready from now on (ServerReady, `/v2/health/ready`, gRPC health), while
    /// models keep serving: the first step of a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// How the repository is managed.
    pub fn options(&self) -> &RepositoryOptions {
        &self.options
    }

    /// Every model and version with its state, sorted by name and version; versions still draining after
    /// removal are listed as `UNLOADING`. As in Triton (`ModelRepositoryManager::RepositoryIndex`), every
    /// model folder of the repositories is listed, loaded or not: one never loaded (explicit mode) has only
    /// its name, with empty version, state and reason, and one found in several repositories is
    /// `UNAVAILABLE` with Triton's reason.
    pub fn index(&self) -> Vec<IndexEntry> {
        let models = self.models.load();
        let mut rows = Vec::new();
        match model_folders(&self.options.roots) {
            Ok(folders) => {
                for (name, paths) in folders.iter().filter(|(name, _)| !models.contains_key(*name)) {
                    let (state, reason) = if paths.len() > 1 {
                        ("UNAVAILABLE", DUPLICATE.to_owned())
                    } else {
                        ("", String::new())
                    };
                    rows.push(IndexEntry {
                        name: name.clone(),
                        version: String::new(),
                        state,
                        reason,
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list the model repositories for RepositoryIndex"),
        }
        for (name, entry) in models.iter() {
            if let Some(failure) = &entry.failure {
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason: bounded_message(failure.clone()),
                });
            }
            for (version, state) in &entry.versions {
                let (state, reason) = match state {
                    VersionState::Loading => ("LOADING", String::new()),
                    VersionState::Ready { model, note } => match ensembles::unready_reason(&models, model) {
                        Some(reason) => ("UNAVAILABLE", reason),
                        None => ("READY", note.clone().unwrap_or_default()),
                    },
                    VersionState::Unavailable(reason) => ("UNAVAILABLE", reason.clone()),
                };
                let reason = bounded_message(reason);
                rows.push(IndexEntry {
                    name: name.clone(),
                    version: version.to_string(),
                    state,
                    reason,
                });
            }
        }
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|d| d.model.strong_count() > 0);
        for d in draining.iter() {
            let listed = models
                .get(&d.name)
                .is_some_and(|e| e.versions.contains_key(&d.version));
            if !listed {
                rows.push(IndexEntry {
                    name: d.name.clone(),
                    version: d.version.to_string(),
                    state: "UNLOADING",
                    reason: String::new(),
                });
            }
        }
        rows.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        rows
    }

    /// Publishes a new state for one model (or removes it), remembering the versions it replaces so that
    /// they show as unloading until their last request ends.
    fn publish(&self, name: &str, entry: Option<ModelEntry>) {
        let kept: Vec<*const ModelVersion> = entry
            .as_ref()
            .map(|e| e.ready_versions().map(Arc::as_ptr).collect())
            .unwrap_or_default();
        // Models load in parallel at start, so the swap retries if another model was published meanwhile.
        let shared = entry.map(Arc::new);
        let previous = self.models.rcu(|models| {
            let mut models = BTreeMap::clone(models);
            match &shared {
                Some(entry) => models.insert(name.to_owned(), Arc::clone(entry)),
                None => models.remove(name),
            };
            models
        });
        if shared.is_none() {
            self.traffic.detach(name);
        }
        let Some(old) = previous.get(name) else {
            return;
        };
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        for model in old.ready_versions().filter(|m| !kept.contains(&Arc::as_ptr(m))) {
            draining.push(Draining {
                name: name.to_owned(),
                version: model.version,
                model: Arc::downgrade(model),
            });
        }
    }
}
