//! Version labels and traffic policies, without any transport: which version of a model answers a request
//! that names a label or no version at all, how the policy is read from and written to the model's
//! `traffic.json`, and the history of its changes.
//!
//! Requests read a model's policy as one immutable [`Policy`] snapshot (an `ArcSwap` of every model's
//! policy, loaded once per request); every change compiles a new snapshot and swaps it in whole, so no
//! request sees half a change. A model without a policy costs a request one atomic load and an emptiness
//! check. Changes (admin calls, edits of the file) are serialised by one lock, written to the file before
//! they are installed, and logged in a bounded [`History`].

mod file;
mod history;
mod metrics;
mod policy;
mod route;
mod shadow;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
pub use file::{FILE_NAME, MAX_FILE_BYTES, TEMP_NAME};
pub use history::{Change, HISTORY_LENGTH, History};
pub use metrics::render_metrics;
pub use policy::{
    Arm, DEFAULT_SHADOW_IN_FLIGHT, MAX_LABEL_BYTES, MAX_LABELS, MAX_SHADOW_IN_FLIGHT, MAX_SPLIT_ARMS,
    MAX_WEIGHT, Policy, PolicySpec, Rule, Shadow, ShadowSpec, check_label, is_label,
};
pub use route::{MAX_ROUTING_KEY_BYTES, choose, hash};
use serde::Serialize;
pub use shadow::{DIFFERENCE_BOUNDS, Outcome, Output, PairStats, Permit, Slot, compare};

use crate::Error;

/// A model's policy as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The model.
    pub model: String,
    /// The policy in force.
    pub policy: PolicySpec,
    /// Why the last read of `traffic.json` was refused (the policy in force is then the one before), if it
    /// was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The policy file.
    pub file: String,
}

/// One model's shadow tallies, for metrics.
pub type ShadowTallies = (String, Vec<((u64, u64), PairStats)>);

/// What the store knows of a model beyond its snapshot: where its file is, how the file looked when last
/// read or written, its history and its last error.
#[derive(Debug, Default)]
struct Admin {
    dir: PathBuf,
    stamp: file::Stamp,
    history: History,
    last_error: Option<String>,
    spec: PolicySpec,
}

/// The counters of routed requests by model, version and rule.
type Counters = BTreeMap<(String, u64, Arc<str>), Arc<AtomicU64>>;

/// Every model's policy.
#[derive(Debug, Default)]
pub struct Store {
    policies: ArcSwap<HashMap<String, Arc<Policy>>>,
    admin: Mutex<BTreeMap<String, Admin>>,
    counters: Mutex<Counters>,
    shadows: Mutex<BTreeMap<String, Arc<Slot>>>,
}

impl Store {
    /// The policy of `model`, if it has one: what a request reads, once.
    pub fn policy(&self, model: &str) -> Option<Arc<Policy>> {
        let policies = self.policies.load();
        if policies.is_empty() {
            return None;
        }
        policies.get(model).cloned()
    }

    fn admin(&self) -> MutexGuard<'_, BTreeMap<String, Admin>> {
        self.admin.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the policy file of `model` in `dir`: read when the model loads, and again whenever the folder
    /// or the file changed since.
    pub fn attach(&self, model: &str, dir: &Path) {
        let mut admin = self.admin();
        let entry = admin.entry(model.to_owned()).or_default();
        if entry.dir != dir {
            entry.dir = dir.to_path_buf();
            entry.stamp = None;
            self.reread(model, entry, true);
        } else {
            self.reread(model, entry, false);
        }
    }

    /// Forgets `model` (its folder is gone): its policy, history and counters.
    pub fn detach(&self, model: &str) {
        self.admin().remove(model);
        self.install(model, None);
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.retain(|(name, _, _), _| name != model);
        drop(counters);
        self.shadows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(model);
    }

    /// Rereads every followed file that changed on disk (poll mode).
    pub fn poll(&self) {
        let mut admin = self.admin();
        for (model, entry) in admin.iter_mut() {
            self.reread(model, entry, false);
        }
    }

    /// Reads the file of `model` if its stamp changed (or always, when `force`): a good file replaces the
    /// policy, a bad one leaves it and is reported through `last_error` and a warning.
    fn reread(&self, model: &str, entry: &mut Admin, force: bool) {
        let stamp = file::stamp(&entry.dir);
        if !force && stamp == entry.stamp {
            return;
        }
        entry.stamp = stamp;
        let spec = match file::read(&entry.dir) {
            Ok(spec) => spec.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(model, %error, "traffic file refused; the previous policy stays");
                entry.last_error = Some(error);
                return;
            }
        };
        entry.last_error = None;
        if spec == entry.spec {
            return;
        }
        match self.compile(model, spec.clone()) {
            Ok(policy) => {
                tracing::info!(model, "traffic policy read from its file");
                self.commit(model, entry, policy, "file", "file");
            }
            Err(error) => entry.last_error = Some(error),
        }
    }

    /// Compiles `spec` for `model`, with the counters its rules share with earlier policies.
    fn compile(&self, model: &str, spec: PolicySpec) -> Result<Policy, String> {
        let slot = Arc::clone(
            self.shadows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(model.to_owned())
                .or_default(),
        );
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Policy::compile(
            spec,
            |version, rule| {
                Arc::clone(
                    counters
                        .entry((model.to_owned(), version, Arc::from(rule)))
                        .or_default(),
                )
            },
            slot,
        )
    }

    /// Installs `policy` as the one in force and logs the change.
    fn commit(&self, model: &str, entry: &mut Admin, policy: Policy, who: &str, action: &'static str) {
        entry.history.push(Change {
            unix_ms: history::now_ms(),
            who: who.to_owned(),
            action,
            from: std::mem::replace(&mut entry.spec, policy.spec.clone()),
            to: policy.spec.clone(),
        });
        let empty = policy.spec == PolicySpec::default();
        self.install(model, (!empty).then(|| Arc::new(policy)));
    }

    /// Swaps the snapshot of every policy for one where `model` has `policy` (or none).
    fn install(&self, model: &str, policy: Option<Arc<Policy>>) {
        self.policies.rcu(|policies| {
            let mut policies = HashMap::clone(policies);
            match &policy {
                Some(policy) => policies.insert(model.to_owned(), Arc::clone(policy)),
                None => policies.remove(model),
            };
            policies
        });
    }

    /// The policy of `model` as the admin API shows it.
    pub fn status(&self, model: &str) -> Result<Status, Error> {
        let admin = self.admin();
        let entry = admin.get(model).ok_or_else(|| not_followed(model))?;
        Ok(status(model, entry))
    }

    /// Changes the policy of `model` to what `change` makes of the current one: checked, written to the
    /// file, then installed and logged as `action` by `who`. A change that changes nothing is not logged.
    /// Blocks on the file: call it off the async workers.
    pub fn change(
        &self,
        model: &str,
        who: &str,
        action: &'static str,
        change: impl FnOnce(&PolicySpec, &History) -> Result<PolicySpec, Error>,
    ) -> Result<Status, Error> {
        let mut admin = self.admin();
        let entry = admin.get_mut(model).ok_or_else(|| not_followed(model))?;
        let spec = change(&entry.spec, &entry.history)?;
        if spec == entry.spec {
            return Ok(status(model, entry));
        }
        let policy = self.compile(model, spec).map_err(Error::invalid)?;
        file::write(&entry.dir, &policy.spec).map_err(Error::Internal)?;
        entry.stamp = file::stamp(&entry.dir);
        entry.last_error = None;
        self.commit(model, entry, policy, who, action);
        Ok(status(model, entry))
    }

    /// The remembered changes of `model`, oldest first.
    pub fn history(&self, model: &str) -> Result<Vec<Change>, Error> {
        let admin = self.admin();
        let entry = admin.get(model).ok_or_else(|| not_followed(model))?;
        Ok(entry.history.changes())
    }

    /// Every model's shadow tallies, by (served version, shadow version).
    pub fn shadowed(&self) -> Vec<ShadowTallies> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .shadows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(model, slot)| (model.clone(), Arc::clone(slot)))
            .collect();
        slots
            .into_iter()
            .map(|(model, slot)| (model, slot.pairs()))
            .filter(|(_, pairs)| !pairs.is_empty())
            .collect()
    }

    /// Every routed-request counter: model, version, rule, count.
    pub fn routed(&self) -> Vec<(String, u64, Arc<str>, u64)> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .map(|((model, version, rule), count)| {
                (
                    model.clone(),
                    *version,
                    Arc::clone(rule),
                    count.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

fn status(model: &str, entry: &Admin) -> Status {
    Status {
        model: model.to_owned(),
        policy: entry.spec.clone(),
        last_error: entry.last_error.clone(),
        file: file::path(&entry.dir).display().to_string(),
    }
}

/// A model the store does not follow: one never loaded.
fn not_followed(model: &str) -> Error {
    Error::UnknownModel {
        model: model.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_keeps_the_policy_and_says_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE_NAME), r#"{"labels": {"stable": 1}}"#).expect("file");
        let store = Store::default();
        store.attach("m", dir.path());
        assert_eq!(
            store
                .policy("m")
                .and_then(|p| p.label("stable").map(|r| r.version)),
            Some(1)
        );
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"labels": {"stable": 1}, "oops": 1}"#,
        )
        .expect("file");
        store.poll();
        assert_eq!(
            store
                .policy("m")
                .and_then(|p| p.label("stable").map(|r| r.version)),
            Some(1)
        );
        let error = store.status("m").expect("status").last_error.expect("an error");
        assert!(error.contains("traffic.json: unknown field `oops`"), "{error}");
        let history = store.history("m").expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!((history[0].who.as_str(), history[0].action), ("file", "file"));
    }

    #[test]
    fn a_bad_file_at_load_leaves_no_policy_and_says_why_until_it_is_mended() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE_NAME), "{").expect("file");
        let store = Store::default();
        store.attach("m", dir.path());
        assert!(store.policy("m").is_none());
        let error = store.status("m").expect("status").last_error.expect("an error");
        assert!(error.contains("traffic.json: EOF while parsing"), "{error}");
        // A change through the API replaces the bad file and clears the error.
        store
            .change("m", "alice", "set", |_, _| {
                Ok(serde_json::from_str(r#"{"labels": {"stable": 1}}"#).expect("spec"))
            })
            .expect("change");
        assert_eq!(store.status("m").expect("status").last_error, None);
        assert!(store.policy("m").is_some());
    }

    #[test]
    fn a_change_is_written_logged_and_an_empty_policy_is_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::default();
        store.attach("m", dir.path());
        assert!(store.policy("m").is_none());
        let status = store
            .change("m", "alice", "label", |spec, _| {
                let mut spec = spec.clone();
                spec.labels.insert("canary".into(), 2);
                Ok(spec)
            })
            .expect("change");
        assert_eq!(status.policy.labels.get("canary"), Some(&2));
        assert_eq!(file::read(dir.path()), Ok(Some(status.policy.clone())));
        assert!(store.policy("m").is_some());
        store
            .change("m", "bob", "set", |_, _| Ok(PolicySpec::default()))
            .expect("clear");
        assert!(store.policy("m").is_none());
        let who: Vec<String> = store
            .history("m")
            .expect("history")
            .into_iter()
            .map(|c| c.who)
            .collect();
        assert_eq!(who, ["alice", "bob"]);
        let refused = store.change("m", "carol", "set", |_, _| {
            Ok(serde_json::from_str(r#"{"split": {"nope": 1}}"#).expect("spec"))
        });
        assert!(matches!(refused, Err(Error::InvalidRequest(_))), "{refused:?}");
    }
}
