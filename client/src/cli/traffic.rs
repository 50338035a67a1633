//! `ferry-client traffic ...`: version labels and traffic policies from the command line, printed as JSON
//! in the same shape as the server's `traffic.json` and REST answers.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_client::{
    Client,
    traffic::proto::{Shadow, TrafficChange, TrafficPolicy, TrafficStatus},
};
use serde_json::{Map, Value, json};

/// What `ferry-client traffic` can do.
#[derive(Debug, Subcommand)]
pub enum TrafficCommand {
    /// Show a model's policy (labels, split, shadow) and the last error reading its traffic.json.
    Get {
        /// Model name.
        model: String,
    },
    /// Replace a model's policy with JSON such as {"labels": {"stable": 1, "canary": 2},
    /// "split": {"stable": 90, "canary": 10}}.
    Set {
        /// Model name.
        model: String,
        #[command(flatten)]
        policy: PolicySource,
    },
    /// Point a label at a version, or remove it with --remove.
    Label {
        /// Model name.
        model: String,
        /// Label name ([a-z][a-z0-9_-]*).
        label: String,
        /// Version number.
        #[arg(required_unless_present = "remove")]
        version: Option<String>,
        /// Remove the label instead.
        #[arg(long, conflicts_with = "version")]
        remove: bool,
    },
    /// Point --to at --from's version and send every request without a version to it.
    Promote {
        /// Model name.
        model: String,
        /// The label (or version) promoted.
        #[arg(long, default_value = "canary")]
        from: String,
        /// The label that takes the traffic.
        #[arg(long, default_value = "stable")]
        to: String,
    },
    /// Restore the policy as it was before its last change.
    Rollback {
        /// Model name.
        model: String,
    },
    /// Show the model's last policy changes, oldest first.
    History {
        /// Model name.
        model: String,
    },
}

/// Where a new policy comes from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PolicySource {
    /// The policy as JSON text.
    #[arg(long, value_name = "JSON")]
    policy_json: Option<String>,
    /// Path of a file holding the policy JSON (a traffic.json).
    #[arg(long, value_name = "PATH")]
    policy_file: Option<PathBuf>,
}

/// Runs one traffic command and prints its answer.
pub async fn run(client: &Client, command: TrafficCommand) -> anyhow::Result<()> {
    let answer = match command {
        TrafficCommand::Get { model } => status_json(client.get_traffic(&model).await?),
        TrafficCommand::Set { model, policy } => {
            let text = match (policy.policy_json, policy.policy_file) {
                (Some(text), _) => text,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read --policy-file {}", path.display()))?,
                (None, None) => bail!("give --policy-json or --policy-file"),
            };
            let value: Value = serde_json::from_str(&text).context("the policy is not JSON")?;
            status_json(client.set_traffic(&model, policy_from_json(&value)?).await?)
        }
        TrafficCommand::Label {
            model,
            label,
            version,
            remove: _,
        } => status_json(
            client
                .set_label(&model, &label, version.as_deref().unwrap_or_default())
                .await?,
        ),
        TrafficCommand::Promote { model, from, to } => status_json(client.promote(&model, &from, &to).await?),
        TrafficCommand::Rollback { model } => status_json(client.rollback(&model).await?),
        TrafficCommand::History { model } => {
            let changes: Vec<Value> = client
                .traffic_history(&model)
                .await?
                .into_iter()
                .map(change_json)
                .collect();
            json!({ "changes": changes })
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// A policy from `traffic.json`'s format; the server checks names and bounds.
pub fn policy_from_json(value: &Value) -> anyhow::Result<TrafficPolicy> {
    let object = value.as_object().context("a policy is a JSON object")?;
    let mut policy = TrafficPolicy::default();
    for (field, value) in object {
        match field.as_str() {
            "labels" => {
                for (label, version) in members(value, "labels")? {
                    let version = version
                        .as_u64()
                        .with_context(|| format!("labels.{label}: a version number, got {version}"))?;
                    policy.labels.insert(label.clone(), version);
                }
            }
            "split" => {
                for (target, weight) in members(value, "split")? {
                    let weight = weight
                        .as_u64()
                        .and_then(|w| u32::try_from(w).ok())
                        .with_context(|| format!("split.{target}: a whole weight, got {weight}"))?;
                    policy.split.insert(target.clone(), weight);
                }
            }
            "shadow" => {
                let shadow = value.as_object().context("shadow: a JSON object")?;
                policy.shadow = Some(Shadow {
                    target: shadow
                        .get("target")
                        .and_then(Value::as_str)
                        .context("shadow.target: a label or version, as a string")?
                        .to_owned(),
                    max_in_flight: shadow
                        .get("max_in_flight")
                        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                        .unwrap_or(Some(0))
                        .context("shadow.max_in_flight: a whole number")?,
                    float_tolerance: shadow
                        .get("float_tolerance")
                        .map(Value::as_f64)
                        .unwrap_or(Some(0.0))
                        .context("shadow.float_tolerance: a number")?,
                });
            }
            other => bail!("unknown policy field '{other}' (expected labels, split, shadow)"),
        }
    }
    Ok(policy)
}

fn members<'a>(value: &'a Value, field: &str) -> anyhow::Result<&'a Map<String, Value>> {
    value
        .as_object()
        .with_context(|| format!("{field}: a JSON object"))
}

/// A policy in `traffic.json`'s format.
pub fn policy_json(policy: &TrafficPolicy) -> Value {
    let mut object = Map::new();
    let labels: std::collections::BTreeMap<_, _> = policy.labels.iter().collect();
    let split: std::collections::BTreeMap<_, _> = policy.split.iter().collect();
    object.insert("labels".into(), json!(labels));
    object.insert("split".into(), json!(split));
    if let Some(shadow) = &policy.shadow {
        object.insert(
            "shadow".into(),
            json!({
                "target": shadow.target,
                "max_in_flight": shadow.max_in_flight,
                "float_tolerance": shadow.float_tolerance,
            }),
        );
    }
    Value::Object(object)
}

fn status_json(status: TrafficStatus) -> Value {
    let mut object = json!({
        "model": status.model,
        "policy": policy_json(&status.policy.unwrap_or_default()),
        "file": status.file,
    });
    if !status.last_error.is_empty() {
        object["last_error"] = json!(status.last_error);
    }
    object
}

fn change_json(change: TrafficChange) -> Value {
    json!({
        "unix_ms": change.unix_ms,
        "who": change.who,
        "action": change.action,
        "from": policy_json(&change.from.unwrap_or_default()),
        "to": policy_json(&change.to.unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_round_trips_through_json() {
        let value = json!({
            "labels": {"canary": 2, "stable": 1},
            "split": {"canary": 10, "stable": 90},
            "shadow": {"target": "canary", "max_in_flight": 4, "float_tolerance": 0.001}
        });
        let policy = policy_from_json(&value).expect("policy");
        assert_eq!(policy.labels.get("canary"), Some(&2));
        assert_eq!(policy_json(&policy), value);
        assert!(policy_from_json(&json!({"labels": {"a": -1}})).is_err());
        assert!(policy_from_json(&json!({"splits": {}})).is_err());
    }
}
