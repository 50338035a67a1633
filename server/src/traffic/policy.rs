//! A model's traffic policy: as written (in `traffic.json` or an admin request, [`PolicySpec`]) and as
//! compiled for requests ([`Policy`]), where every label and split arm already knows its version, its
//! routing-rule name and its counter, so that routing a request allocates nothing.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::AtomicU64},
};

use serde::{Deserialize, Serialize};

use super::{route, shadow::Slot};

/// The longest version label, in bytes.
pub const MAX_LABEL_BYTES: usize = 32;
/// The most labels one model may have.
pub const MAX_LABELS: usize = 16;
/// The most arms one split may have.
pub const MAX_SPLIT_ARMS: usize = 8;
/// The largest weight of one split arm.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// The most shadow requests of one model in flight at once.
pub const MAX_SHADOW_IN_FLIGHT: u32 = 64;
/// The shadow in-flight budget when the policy does not name one.
pub const DEFAULT_SHADOW_IN_FLIGHT: u32 = 4;

/// A policy as written: the JSON of `traffic.json`, of the REST routes, and the fields of the gRPC
/// `TrafficPolicy`. Unknown fields are refused, so that a misspelt field is an error rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Label name -> version number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    /// Split target (a label, or a version number in digits) -> weight. Without a positive weight, requests
    /// that name no version go to the highest ready version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub split: BTreeMap<String, u32>,
    /// Shadow (mirror) traffic to one more version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}

/// Shadow traffic as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// A label, or a version number in digits.
    pub target: String,
    /// Shadow requests in flight at most (1 to [`MAX_SHADOW_IN_FLIGHT`]); more are dropped.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// The largest absolute difference at which two floating-point values still agree.
    #[serde(default)]
    pub float_tolerance: f64,
}

fn default_in_flight() -> u32 {
    DEFAULT_SHADOW_IN_FLIGHT
}

/// Whether `name` has the form of a label: `[a-z][a-z0-9_-]*`, at most [`MAX_LABEL_BYTES`] bytes. Version
/// numbers are digits, so the two never meet.
pub fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_BYTES
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Checks a label name; the error names the field and the rule.
pub fn check_label(field: &str, name: &str) -> Result<(), String> {
    if is_label(name) {
        Ok(())
    } else {
        Err(format!(
            "{field}: '{}' is not a label; a label is 1 to {MAX_LABEL_BYTES} bytes of [a-z][a-z0-9_-]*",
            name.escape_default()
        ))
    }
}

impl PolicySpec {
    /// Checks every bound and reference; the error names the field, the expected and the given value.
    pub fn check(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "labels: at most {MAX_LABELS} labels, got {}",
                self.labels.len()
            ));
        }
        for (label, version) in &self.labels {
            check_label("labels", label)?;
            if *version == 0 {
                return Err(format!("labels.{label}: a version number is > 0, got 0"));
            }
        }
        if self.split.len() > MAX_SPLIT_ARMS {
            return Err(format!(
                "split: at most {MAX_SPLIT_ARMS} arms, got {}",
                self.split.len()
            ));
        }
        for (target, weight) in &self.split {
            self.target_version(&format!("split.{}", target.escape_default()), target)?;
            if *weight > MAX_WEIGHT {
                return Err(format!(
                    "split.{target}: a weight is 0 to {MAX_WEIGHT}, got {weight}"
                ));
            }
        }
        if let Some(shadow) = &self.shadow {
            self.target_version("shadow.target", &shadow.target)?;
            if !(1..=MAX_SHADOW_IN_FLIGHT).contains(&shadow.max_in_flight) {
                return Err(format!(
                    "shadow.max_in_flight: 1 to {MAX_SHADOW_IN_FLIGHT}, got {}",
                    shadow.max_in_flight
                ));
            }
            if !(shadow.float_tolerance.is_finite() && shadow.float_tolerance >= 0.0) {
                return Err(format!(
                    "shadow.float_tolerance: a finite number >= 0, got {}",
                    shadow.float_tolerance
                ));
            }
        }
        Ok(())
    }

    /// The version a target (a label of this policy, or a version number) names.
    pub fn target_version(&self, field: &str, target: &str) -> Result<u64, String> {
        if let Some(version) = self.labels.get(target) {
            return Ok(*version);
        }
        if is_label(target) {
            return Err(format!(
                "{field}: '{target}' is not a label of this policy (labels: {})",
                known(self.labels.keys())
            ));
        }
        match target.parse::<u64>() {
            Ok(version) if version > 0 && target.bytes().all(|b| b.is_ascii_digit()) => Ok(version),
            _ => Err(format!(
                "{field}: a target is a label or a version number > 0, got '{}'",
                target
                    .chars()
                    .take(MAX_LABEL_BYTES)
                    .collect::<String>()
                    .escape_default()
            )),
        }
    }
}

/// Labels listed for a message, or "none".
pub fn known<'a>(labels: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = labels.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// A routing rule: its name as responses and metrics show it (`label:canary`, `split:v2`) and the counter of
/// requests it routed to its version.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `label:<label>`, `split:<label>` or `split:v<version>`.
    pub name: Arc<str>,
    /// The version it routes to.
    pub version: u64,
    /// Requests it routed (shared with every policy that has the same rule for the same version).
    pub count: Arc<AtomicU64>,
}

/// One arm of a split, compiled.
#[derive(Debug, Clone)]
pub struct Arm {
    /// The rule that names it.
    pub rule: Rule,
    /// Its weight.
    pub weight: u32,
    /// The hash of its target's name, which keyed routing mixes with the key: the same name keeps its keys
    /// whatever the other arms do.
    pub seed: u64,
}

/// The shadow target, compiled.
#[derive(Debug, Clone)]
pub struct Shadow {
    /// The model's shadow budget and tallies.
    pub slot: Arc<Slot>,
    /// The version that answers shadow requests.
    pub version: u64,
    /// Its in-flight budget.
    pub max_in_flight: u32,
    /// The float tolerance of comparisons.
    pub float_tolerance: f64,
}

/// A policy ready for requests: one immutable snapshot, swapped whole on every change.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The policy as written.
    pub spec: PolicySpec,
    labels: Vec<(String, Rule)>,
    arms: Vec<Arm>,
    /// The shadow target, if any.
    pub shadow: Option<Shadow>,
}

impl Policy {
    /// Compiles a checked `spec`; `counter` gives the shared counter of a (version, rule name) pair, and
    /// `slot` is the model's shadow budget.
    pub fn compile(
        spec: PolicySpec,
        mut counter: impl FnMut(u64, &str) -> Arc<AtomicU64>,
        slot: Arc<Slot>,
    ) -> Result<Self, String> {
        spec.check()?;
        let mut rule = |prefix: &str, target: &str, version: u64| {
            let name = if is_label(target) {
                format!("{prefix}:{target}")
            } else {
                format!("{prefix}:v{version}")
            };
            Rule {
                count: counter(version, &name),
                name: Arc::from(name),
                version,
            }
        };
        let labels = spec
            .labels
            .iter()
            .map(|(label, version)| (label.clone(), rule("label", label, *version)))
            .collect();
        let mut arms = Vec::with_capacity(spec.split.len());
        for (target, weight) in &spec.split {
            let version = spec.target_version("split", target)?;
            arms.push(Arm {
                rule: rule("split", target, version),
                weight: *weight,
                seed: route::hash(target.as_bytes()),
            });
        }
        let shadow = match &spec.shadow {
            Some(shadow) => Some(Shadow {
                slot,
                version: spec.target_version("shadow.target", &shadow.target)?,
                max_in_flight: shadow.max_in_flight,
                float_tolerance: shadow.float_tolerance,
            }),
            None => None,
        };
        Ok(Policy {
            spec,
            labels,
            arms,
            shadow,
        })
    }

    /// The rule of label `name`, if the policy has it.
    pub fn label(&self, name: &str) -> Option<&Rule> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, rule)| rule)
    }

    /// Whether the policy has any label.
    pub fn has_labels(&self) -> bool {
        !self.labels.is_empty()
    }

    /// The known labels, for messages.
    pub fn known_labels(&self) -> String {
        known(self.spec.labels.keys())
    }

    /// Whether requests without a version are split (some arm has a positive weight).
    pub fn splits(&self) -> bool {
        self.arms.iter().any(|arm| arm.weight > 0)
    }

    /// The split's arms.
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// Every rule, for metrics.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.labels
            .iter()
            .map(|(_, rule)| rule)
            .chain(self.arms.iter().map(|arm| &arm.rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<PolicySpec, String> {
        let spec: PolicySpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        spec.check().map(|()| spec)
    }

    #[test]
    fn labels_are_lowercase_names_of_bounded_length() {
        for good in ["stable", "canary", "a", "v2-beta_1"] {
            assert!(is_label(good), "{good}");
        }
        let long = "a".repeat(MAX_LABEL_BYTES + 1);
        for bad in ["", "Stable", "2", "-a", "a b", "ä", long.as_str()] {
            assert!(!is_label(bad), "{bad}");
        }
    }

    #[test]
    fn a_policy_is_parsed_strictly_and_errors_name_the_field() {
        let good = spec(r#"{"labels": {"stable": 1, "canary": 2}, "split": {"stable": 90, "canary": 10}}"#)
            .expect("good policy");
        assert_eq!(good.target_version("t", "canary"), Ok(2));
        assert_eq!(good.target_version("t", "7"), Ok(7));
        let cases = [
            (r#"{"label": {}}"#, "unknown field `label`"),
            (r#"{"labels": {"Stable": 1}}"#, "labels: 'Stable' is not a label"),
            (
                r#"{"labels": {"stable": 0}}"#,
                "labels.stable: a version number is > 0, got 0",
            ),
            (r#"{"labels": {"stable": -1}}"#, "invalid value"),
            (
                r#"{"split": {"canary": 10}}"#,
                "split.canary: 'canary' is not a label of this policy",
            ),
            (
                r#"{"split": {"0": 10}}"#,
                "split.0: a target is a label or a version number > 0",
            ),
            (
                r#"{"split": {"1": 2000000}}"#,
                "split.1: a weight is 0 to 1000000, got 2000000",
            ),
            (
                r#"{"shadow": {"target": "2", "max_in_flight": 0}}"#,
                "shadow.max_in_flight: 1 to 64, got 0",
            ),
            (
                r#"{"shadow": {"target": "x"}}"#,
                "shadow.target: 'x' is not a label",
            ),
        ];
        for (json, expected) in cases {
            let error = spec(json).expect_err(json);
            assert!(error.contains(expected), "{json}: {error}");
        }
        let many: BTreeMap<String, u64> = (0..=MAX_LABELS).map(|i| (format!("l{i}"), 1)).collect();
        let error = PolicySpec {
            labels: many,
            ..PolicySpec::default()
        }
        .check()
        .expect_err("too many labels");
        assert!(error.contains("at most 16 labels, got 17"), "{error}");
    }

    #[test]
    fn compiled_rules_name_labels_and_versions() {
        let spec = spec(r#"{"labels": {"canary": 2}, "split": {"1": 90, "canary": 10}}"#).expect("policy");
        let policy = Policy::compile(spec, |_, _| Arc::default(), Arc::default()).expect("compiles");
        let names: Vec<&str> = policy.rules().map(|r| &*r.name).collect();
        assert_eq!(names, ["label:canary", "split:v1", "split:canary"]);
        assert_eq!(policy.label("canary").map(|r| r.version), Some(2));
        assert!(policy.splits());
    }
}
