//! The traffic families of `GET /metrics`: requests routed by each rule of each model's policy, and shadow
//! requests by outcome with the distribution of their differences. Their cardinality is bounded by what
//! policies name (labels, split arms and shadow targets, each with its version).

use std::fmt::Write as _;

use super::{DIFFERENCE_BOUNDS, Outcome, Store};
use crate::metrics::{declare, escape_label};

/// Appends the traffic families to `out`.
pub fn render_metrics(store: &Store, out: &mut String) {
    let name = "ferry_routed_requests_total";
    declare(
        out,
        name,
        "Inference requests a version label or a traffic split routed to a version, by rule",
        "counter",
    );
    for (model, version, rule, count) in store.routed() {
        let _ = writeln!(
            out,
            "{name}{{model=\"{}\",version=\"{version}\",rule=\"{}\"}} {count}",
            escape_label(&model),
            escape_label(&rule)
        );
    }
    let shadowed = store.shadowed();
    let name = "ferry_shadow_requests_total";
    declare(
        out,
        name,
        "Requests mirrored to a shadow version, by outcome: agree, disagree, error, dropped",
        "counter",
    );
    for (model, pairs) in &shadowed {
        for ((served, shadow), stats) in pairs {
            for (outcome, count) in Outcome::ALL.iter().zip(stats.outcomes) {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",served_version=\"{served}\",shadow_version=\"{shadow}\",outcome=\"{}\"}} {count}",
                    escape_label(model),
                    outcome.name()
                );
            }
        }
    }
    let name = "ferry_shadow_difference";
    declare(
        out,
        name,
        "Largest absolute difference between the served and the shadow answer of a request",
        "histogram",
    );
    for (model, pairs) in &shadowed {
        for ((served, shadow), stats) in pairs {
            let labels = format!(
                "model=\"{}\",served_version=\"{served}\",shadow_version=\"{shadow}\"",
                escape_label(model)
            );
            let mut cumulative = 0;
            for (bound, count) in DIFFERENCE_BOUNDS.iter().zip(stats.buckets) {
                cumulative += count;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let count: u64 = stats.buckets.iter().sum();
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", stats.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }
}
