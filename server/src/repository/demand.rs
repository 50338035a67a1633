//! Loading on first request (`--load-on-demand`): a request for a model that is in a repository but not
//! loaded waits while the model loads, once, however many requests wait for it; a load that fails fails
//! every request that waited for it, and later ones at once, until the model's files change.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use tokio::sync::watch;

use super::{
    ControlMode, LoadRequest, ModelName, Registry, Routed, Routing, background, files, scan::Fingerprint,
};
use crate::{
    Error,
    config::{ConfigSource, LOAD_ON_DEMAND, load_on_demand, parse_model_config},
    model::ModelVersion,
};

/// What one load on demand came to: the versions it made ready, held until each request that waited for
/// them has been routed, so that no eviction takes them away in between; or why it failed.
type Outcome = Result<Arc<Vec<Arc<ModelVersion>>>, Error>;

/// The loads on demand in progress and the failed ones, by model.
#[derive(Debug, Default)]
pub(super) struct OnDemand {
    /// Each load in progress, watched by the requests that wait for it.
    pending: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
    /// Models whose last load on demand failed, with their folder's fingerprint then and the failure: a
    /// request finds the same failure until the files change. At most one entry per model folder.
    failed: Mutex<HashMap<String, (Fingerprint, Error)>>,
    /// The threads loads on demand run on, below the serving threads; started by the first load.
    loaders: std::sync::OnceLock<background::Pool>,
}

impl OnDemand {
    /// The models whose load on demand is under way: their waiters are about to use them.
    pub(super) fn pending_names(&self) -> std::collections::HashSet<String> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Whether the last load on demand of `name` failed (and its files have not been loaded since).
    pub(super) fn has_failed(&self, name: &str) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }
}

impl Registry {
    /// Routes a request like [`Registry::route`]; in explicit mode, a model that is in a repository but has
    /// no version serving and loads on demand (its config's `ferry.load_on_demand`, else
    /// `--load-on-demand`) is loaded first, the request waiting at most the load timeout
    /// (`--load-on-demand-timeout-secs`). Concurrent requests for the model share one load.
    pub async fn route_or_load(
        self: &Arc<Self>,
        name: &str,
        version: &str,
        routing: Routing<'_>,
    ) -> Result<Routed, Error> {
        let refused = match self.route(name, version, routing) {
            Ok(routed) => {
                routed.model.touch();
                return Ok(routed);
            }
            Err(error) => error,
        };
        if self.options.control_mode != ControlMode::Explicit {
            return Err(refused);
        }
        let Some(dir) = self.loadable(name) else {
            return Err(refused);
        };
        let server_default = self.options.load_on_demand;
        // Reading the config is file work: off the async workers.
        let on_demand = tokio::task::spawn_blocking(move || marked_on_demand(&dir).unwrap_or(server_default))
            .await
            .unwrap_or(false);
        if !on_demand {
            return Err(refused);
        }
        let _loaded = self.load_on_demand(name).await?;
        let routed = self.route(name, version, routing)?;
        routed.model.touch();
        Ok(routed)
    }

    /// The folder of `name` when it is a model folder of the repositories with no version serving. One that
    /// is loading is: its request joins the load on demand under way, or waits for the load request's to end.
    fn loadable(&self, name: &str) -> Option<PathBuf> {
        if let Some(entry) = self.models.load().get(name)
            && entry.ready_versions().next().is_some()
        {
            return None;
        }
        // Checked as a folder name first: a request's model name never becomes a path outside the roots.
        ModelName::parse(name.to_owned()).ok()?;
        self.options
            .roots
            .iter()
            .map(|root| root.join(name))
            .find(|dir| dir.is_dir())
    }

    /// Loads `name` for the requests that need it, or joins the load already under way.
    async fn load_on_demand(self: &Arc<Self>, name: &str) -> Outcome {
        let mut receiver = {
            let mut pending = self
                .on_demand
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match pending.get(name) {
                Some(receiver) => receiver.clone(),
                None => {
                    let loaders = match self.on_demand.loaders.get() {
                        Some(loaders) => loaders,
                        // The pending lock is held: no other request starts a pool meanwhile.
                        None => match background::Pool::start("ferry-demand-load", load_threads()) {
                            Ok(started) => self.on_demand.loaders.get_or_init(|| started),
                            Err(error) => {
                                return Err(Error::Overloaded(format!(
                                    "model '{name}' cannot be loaded on demand now: no thread to load it on \
                                     ({error}); retry later"
                                )));
                            }
                        },
                    };
                    let (sender, receiver) = watch::channel(None);
                    pending.insert(name.to_owned(), receiver.clone());
                    let registry = Arc::clone(self);
                    let name = name.to_owned();
                    // Loading opens files and sessions: off the async workers, and below the threads that
                    // serve loaded models (`background`).
                    loaders.run(move || {
                        // A panic in the load still answers its waiters and ends the pending entry, so
                        // that the next request starts a new load instead of finding this one for ever.
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            registry.load_once(&name)
                        }))
                        .unwrap_or_else(|_| Err(load_gone(&name)));
                        sender.send_replace(Some(outcome));
                        registry
                            .on_demand
                            .pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&name);
                    });
                    receiver
                }
            }
        };
        let timeout = self.options.load_on_demand_timeout;
        match tokio::time::timeout(timeout, receiver.wait_for(Option::is_some)).await {
            Ok(Ok(outcome)) => outcome.clone().unwrap_or_else(|| Err(load_gone(name))),
            Ok(Err(_)) => Err(load_gone(name)),
            Err(_) => Err(Error::Overloaded(format!(
                "model '{name}' is still loading on demand after {} s (--load-on-demand-timeout-secs); \
                 retry later",
                timeout.as_secs()
            ))),
        }
    }

    /// Loads `name` once, on a blocking thread: at once fails as before when its last load failed and its
    /// files have not changed since.
    fn load_once(&self, name: &str) -> Outcome {
        let model = ModelName::parse(name.to_owned())?;
        let fingerprint = self
            .options
            .roots
            .iter()
            .map(|root| root.join(name))
            .find(|dir| dir.is_dir())
            .map(|dir| Fingerprint::of(&dir))
            .unwrap_or_default();
        if let Some((seen, failure)) = self
            .on_demand
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            && *seen == fingerprint
        {
            return Err(failure.clone());
        }
        let started = Instant::now();
        let loaded = self.load_request(LoadRequest::new(model));
        let mut failed = self
            .on_demand
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match loaded {
            Ok(()) => {
                failed.remove(name);
                drop(failed);
                self.management.loaded_on_demand(started.elapsed());
                let models = self.models.load();
                let ready = models
                    .get(name)
                    .map(|entry| entry.ready_versions().cloned().collect())
                    .unwrap_or_default();
                Ok(Arc::new(ready))
            }
            // The budget has no room now: not the files' fault, so not remembered.
            Err(error @ Error::TooLarge(_)) => Err(error),
            Err(error) => {
                let failure = Error::NoAvailableVersion {
                    model: name.to_owned(),
                    reason: format!("its load on demand failed: {error}"),
                };
                tracing::warn!(model = %name, %error, "load on demand failed");
                failed.insert(name.to_owned(), (fingerprint, failure.clone()));
                Err(failure)
            }
        }
    }
}

/// What the config in the model folder `dir` says about loading the model on demand
/// (`ferry.load_on_demand`), read without loading the model: `None` when it says nothing, and also when the
/// config cannot be read or the value is not a switch; the model's own load then fails with the reason.
pub(super) fn marked_on_demand(dir: &Path) -> Option<bool> {
    let text = files::read_text(dir, "config.pbtxt", files::MAX_CONFIG_BYTES).ok()??;
    // Most configs never name the key: they are not parsed here.
    if !text.contains(LOAD_ON_DEMAND) {
        return None;
    }
    let path = dir.join("config.pbtxt").display().to_string();
    let config = parse_model_config(&text, &path).ok()?;
    let source = ConfigSource {
        path: &path,
        text: Some(&text),
    };
    load_on_demand(&config, source).ok()?
}

/// What the waiters of a load on demand get when it ended without an outcome (its thread panicked).
fn load_gone(name: &str) -> Error {
    Error::Internal(format!(
        "the load on demand of model '{name}' stopped without an answer"
    ))
}

/// Threads that load on demand at once: one per core, as many as loads can keep busy.
fn load_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
