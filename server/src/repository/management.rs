//! The memory budget (`--model-memory-budget`) and what model management counts: loads, evictions, the
//! latency of loads on demand and the memory each loaded version takes.
//!
//! Each version's memory is measured when it loads: the growth of the process's resident memory while it
//! loaded, and at least its model file's size; an instance that opens its session after the load adds what
//! it took, measured the same way (`crate::model`'s `memory` module). A load that would take the models past
//! the budget first unloads the least recently used models that are idle (no request queued, running or
//! routed, no load on demand waiting to use them) and not pinned (`ferry.pinned: "true"`); when those cannot
//! make room, the load fails with RESOURCE_EXHAUSTED naming the budget.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::{ModelEntry, Registry};
use crate::{
    Error,
    config::ModelSpec,
    metrics::{declare, escape_label},
    stats::{Histogram, LATENCY_BOUNDS_NS},
};

/// The config parameter that keeps a model from being evicted.
pub const PINNED: &str = "ferry.pinned";

/// What model management has done since the server started.
#[derive(Debug)]
pub(super) struct Management {
    /// Loads that made at least one new version serve, by model.
    loads: Mutex<BTreeMap<String, u64>>,
    /// Models unloaded to keep within the memory budget, by model.
    evictions: Mutex<BTreeMap<String, u64>>,
    /// How long requests' loads on demand took, in nanoseconds.
    on_demand: Histogram,
    /// Each version's memory as last measured, kept after it is unloaded: the estimate for its next load.
    measured: Mutex<BTreeMap<(String, u64), u64>>,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            loads: Mutex::default(),
            evictions: Mutex::default(),
            on_demand: Histogram::new(LATENCY_BOUNDS_NS),
            measured: Mutex::default(),
        }
    }
}

impl Management {
    pub(super) fn loaded(&self, name: &str) {
        *self
            .loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default() += 1;
    }

    pub(super) fn loaded_on_demand(&self, took: Duration) {
        self.on_demand
            .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Remembers what version `version` of `name` took when it loaded.
    pub(super) fn measure(&self, name: &str, version: u64, bytes: u64) {
        if bytes > 0 {
            self.measured
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((name.to_owned(), version), bytes);
        }
    }

    /// What version `version` of `name` took when it last loaded, if it did.
    pub(super) fn measured(&self, name: &str, version: u64) -> Option<u64> {
        self.measured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(name.to_owned(), version))
            .copied()
    }

    fn evicted(&self, name: &str) {
        *self
            .evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default() += 1;
    }
}

/// Whether the config pins the model in memory; a value other than true or false fails its load.
pub(super) fn pinned(spec: &ModelSpec) -> Result<bool, String> {
    pinned_value(
        spec.config
            .parameters
            .get(PINNED)
            .map(|p| p.string_value.as_str()),
    )
}

fn pinned_value(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(format!(
            "parameter {PINNED} must be \"true\" or \"false\", got '{}'",
            crate::limits::bounded_message(other.to_owned())
        )),
    }
}

/// The memory a model's served versions take, as measured at their loads and their later instances' opening.
fn entry_bytes(entry: &ModelEntry) -> u64 {
    entry.ready_versions().map(|model| model.memory_bytes()).sum()
}

impl Registry {
    /// The memory every loaded version takes now, as measured at their loads and their later instances'
    /// opening.
    pub fn model_memory_bytes(&self) -> u64 {
        self.models.load().values().map(|entry| entry_bytes(entry)).sum()
    }

    /// Makes room for `needed` more bytes under the memory budget before `name` loads, unloading the least
    /// recently used idle models that are not pinned; RESOURCE_EXHAUSTED when that cannot make enough.
    pub(super) fn make_room(&self, name: &str, needed: u64) -> Result<(), Error> {
        let Some(budget) = self.options.memory_budget else {
            return Ok(());
        };
        if needed > budget {
            // No eviction can make room: fail before unloading anything.
            return Err(Error::TooLarge(format!(
                "loading model '{name}' needs about {needed} bytes, more than the whole model memory budget \
                 (--model-memory-budget) of {budget} bytes"
            )));
        }
        loop {
            let used = self.model_memory_bytes();
            if used.saturating_add(needed) <= budget {
                return Ok(());
            }
            let Some(victim) = self.eviction_candidate(name) else {
                return Err(Error::TooLarge(format!(
                    "loading model '{name}' needs about {needed} bytes, but {used} of the {budget} bytes of \
                     the model memory budget (--model-memory-budget) are in use and no loaded model can be \
                     unloaded: each is pinned ({PINNED}) or has requests queued or running"
                )));
            };
            tracing::info!(model = %victim, for_model = %name, needed, used, budget, "evicting the least recently used model");
            self.unload_model(&victim);
            self.management.evicted(&victim);
        }
    }

    /// The least recently used model other than `name` that may be unloaded now: loaded, not pinned, with
    /// no request holding or queued on any of its versions and no load on demand waiting to use it.
    fn eviction_candidate(&self, name: &str) -> Option<String> {
        let models = self.models.load();
        let pending = self.on_demand.pending_names();
        models
            .iter()
            .filter(|(model, entry)| {
                model.as_str() != name
                    && !pending.contains(*model)
                    && entry.ready_versions().next().is_some()
                    && entry
                        .spec
                        .as_ref()
                        .is_none_or(|spec| !pinned(spec).unwrap_or(true))
                    // The table holds one reference; a request in flight or a load's waiters hold more.
                    && entry
                        .ready_versions()
                        .all(|version| Arc::strong_count(version) == 1 && version.queued() == 0)
            })
            .min_by_key(|(_, entry)| entry.ready_versions().map(|v| v.last_used()).max())
            .map(|(model, _)| model.clone())
    }

    /// Appends the model management families to a scrape.
    pub(crate) fn render_management_metrics(&self, out: &mut String) {
        let counter = |out: &mut String, name: &str, help: &str, counts: &Mutex<BTreeMap<String, u64>>| {
            declare(out, name, help, "counter");
            for (model, count) in counts.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {count}", escape_label(model));
            }
        };
        counter(
            out,
            "ferry_model_loads_total",
            "Loads that made at least one new version of the model serve (at start, on request, on demand)",
            &self.management.loads,
        );
        counter(
            out,
            "ferry_model_evictions_total",
            "Times the model was unloaded to keep within the model memory budget (--model-memory-budget)",
            &self.management.evictions,
        );
        let name = "ferry_model_load_on_demand_duration_seconds";
        declare(
            out,
            name,
            "How long loads on demand took, from the first request that needed the model to the model serving",
            "histogram",
        );
        crate::metrics::write_histogram_seconds(out, name, "", &self.management.on_demand.snapshot());
        let name = "ferry_model_memory_bytes";
        declare(
            out,
            name,
            "Memory a loaded model version takes: resident memory growth while it loaded and while each later instance opened its session, at least its model file's size each",
            "gauge",
        );
        for (model, entry) in self.models.load().iter() {
            for version in entry.ready_versions() {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",version=\"{}\"}} {}",
                    escape_label(model),
                    version.version,
                    version.memory_bytes()
                );
            }
        }
        if let Some(budget) = self.options.memory_budget {
            let name = "ferry_model_memory_budget_bytes";
            declare(
                out,
                name,
                "The model memory budget (--model-memory-budget)",
                "gauge",
            );
            let _ = writeln!(out, "{name} {budget}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_is_true_or_false_and_anything_else_fails_the_load() {
        assert_eq!(pinned_value(None), Ok(false));
        for yes in ["true", "1", " true "] {
            assert_eq!(pinned_value(Some(yes)), Ok(true), "{yes}");
        }
        for no in ["false", "0"] {
            assert_eq!(pinned_value(Some(no)), Ok(false), "{no}");
        }
        let refused = pinned_value(Some("yes")).expect_err("not a bool");
        assert!(refused.contains(PINNED) && refused.contains("'yes'"), "{refused}");
    }
}
