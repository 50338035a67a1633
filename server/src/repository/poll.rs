//! Poll mode: a thread that looks at the repositories every interval and loads, reloads or unloads models
//! whose folders changed and then stayed unchanged for one more look.

use std::sync::{Arc, PoisonError};

use super::{
    Registry,
    scan::{Change, Fingerprint, model_folders},
};

/// Starts the poll thread; it stops by itself once the registry is dropped.
pub(super) fn spawn(registry: &Arc<Registry>) {
    let weak = Arc::downgrade(registry);
    let interval = registry.options.poll_interval;
    let spawned = std::thread::Builder::new()
        .name("ferry-poll".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.poll_once();
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the repository poll thread; changes on disk will not be followed");
    }
}

impl Registry {
    /// One look at the repositories: acts on every settled change.
    pub(super) fn poll_once(&self) {
        let folders = match model_folders(&self.options.roots) {
            Ok(folders) => folders,
            Err(error) => {
                tracing::warn!(%error, "repository poll failed");
                return;
            }
        };
        let mut lifecycle = self.lifecycle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut settled = Vec::new();
        for (name, paths) in &folders {
            let fingerprint = match paths.as_slice() {
                [dir] => Fingerprint::of(dir),
                _ => Fingerprint::default(),
            };
            if lifecycle.detector.look(name, Some(fingerprint)) == Change::Settled {
                settled.push(name.clone());
            }
        }
        // Members before the ensembles that use them; then the ensembles that failed for want of one.
        for name in super::ensembles::load_waves(settled.clone(), &folders).concat() {
            tracing::info!(model = %name, "model files changed; reloading");
            self.load_from_folders(&name, &folders);
        }
        self.retry_ensembles(&settled, &folders);
        let gone: Vec<String> = lifecycle
            .detector
            .known()
            .filter(|n| !folders.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if lifecycle.detector.look(&name, None) == Change::Removed {
                tracing::info!(model = %name, "model folder removed; unloading");
                self.publish(&name, None);
            }
        }
        drop(lifecycle);
        self.traffic.poll();
    }
}
