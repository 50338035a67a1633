//! The traffic families of `GET /metrics`: requests routed by each rule of each model's policy. Their
//! cardinality is bounded by the rules policies name (labels and split arms, each with its version).

use std::fmt::Write as _;

use super::Store;
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
}
