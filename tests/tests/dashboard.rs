//! The Grafana dashboard in `deploy/grafana/ferry.json`: Grafana can import it (every panel has an id, a
//! place inside the 24-column grid that no other panel takes, and Prometheus queries), it shows what issue 12
//! asks of it (the traffic split, latency and errors per version, drift), and every metric family its queries
//! name is one that a running Ferry declares at `/metrics`, so a renamed family breaks this test instead of
//! silently emptying a panel.

use std::{
    collections::{BTreeSet, HashSet},
    path::Path,
    sync::Arc,
};

use ferry_server::{cache::ResponseCache, repository::RepositoryOptions};
use ferry_tests::{TestServer, example_repository, rest_request};
use serde_json::Value;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/ferry.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn panels(dashboard: &Value) -> &Vec<Value> {
    dashboard["panels"].as_array().expect("a panels array")
}

/// Every query of the dashboard's panels.
fn queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .iter()
        .filter(|panel| panel["type"] != "row")
        .flat_map(|panel| panel["targets"].as_array().expect("targets").iter())
        .map(|target| target["expr"].as_str().expect("a PromQL expr").to_owned())
        .collect()
}

/// The metric names a PromQL query uses: its words that start with Ferry's or Triton's prefix.
fn metric_names(query: &str) -> BTreeSet<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("ferry_") || word.starts_with("nv_"))
        .map(str::to_owned)
        .collect()
}

fn cell(panel: &Value, key: &str) -> u64 {
    panel["gridPos"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("gridPos.{key} of {panel}"))
}

#[test]
fn the_dashboard_imports_into_grafana_with_panels_that_do_not_overlap() {
    let dashboard = dashboard();
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|variable| variable["name"].as_str().expect("a variable name"))
        .collect();
    assert_eq!(variables, ["datasource", "model"]);

    let mut ids = HashSet::new();
    let mut taken = HashSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a numeric id")),
            "id twice: {panel}"
        );
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()), "{panel}");
        let (x, y, w, h) = (
            cell(panel, "x"),
            cell(panel, "y"),
            cell(panel, "w"),
            cell(panel, "h"),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "outside the grid: {panel}");
        for column in x..x + w {
            for row in y..y + h {
                assert!(taken.insert((column, row)), "two panels on ({column}, {row})");
            }
        }
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "a panel without queries: {panel}");
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
            }
        }
    }
}

#[test]
fn the_dashboard_shows_the_split_latency_and_errors_per_version_and_drift() {
    let used: BTreeSet<String> = queries(&dashboard())
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    for family in [
        "ferry_routed_requests_total",
        "ferry_request_duration_seconds_bucket",
        "nv_inference_request_failure",
        "ferry_shadow_requests_total",
        "ferry_input_drift_psi",
        "ferry_input_drift_ks",
        "ferry_quality_score_total",
        "ferry_quality_rows_total",
    ] {
        assert!(
            used.contains(family),
            "{family} is not on the dashboard: {used:?}"
        );
    }
    for query in queries(&dashboard()) {
        if query.contains("nv_inference_request_failure") {
            assert!(
                query.contains("version") || query.contains("reason"),
                "failures shown without their version: {query}"
            );
        }
    }
}

#[tokio::test]
async fn every_family_the_dashboard_queries_is_declared_by_a_running_server() {
    let options = RepositoryOptions {
        response_cache: Some(Arc::new(ResponseCache::new(1 << 20))),
        ..RepositoryOptions::new(vec![example_repository()])
    };
    let server = TestServer::start_with(options, ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("server");
    let metrics = server.start_metrics().await.expect("metrics endpoint");
    let reply = rest_request(metrics.address, "GET", "/metrics", b"")
        .await
        .expect("a scrape");
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).expect("UTF-8");
    let mut declared = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a name and a type");
            declared.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    declared.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    for query in queries(&dashboard()) {
        for name in metric_names(&query) {
            assert!(
                declared.contains(&name),
                "the dashboard queries {name}, which /metrics does not declare: {query}"
            );
        }
    }
    metrics.stop().await;
    server.stop().await;
}
