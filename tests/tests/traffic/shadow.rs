//! Shadow traffic: requests mirrored to another version whose answers are compared and never returned, run
//! only within the model's shadow budget.

use std::time::{Duration, Instant};

use ferry_server::repository::ControlMode;

use super::{Load, check_consistent, infer, repository, sdk, start};

/// The policy of these tests: every request without a version is served by version 1 and mirrored to
/// version 2, which answers 1 more (version k adds k).
fn policy(max_in_flight: u32, tolerance: f64) -> String {
    format!(
        r#"{{"labels": {{"stable": 1, "canary": 2}}, "split": {{"stable": 100}},
            "shadow": {{"target": "canary", "max_in_flight": {max_in_flight}, "float_tolerance": {tolerance}}}}}"#
    )
}

/// The value of the metric line that starts with `series`, 0 when there is none.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Shadow outcomes of `m` (served 1, shadow 2): agree, disagree, error, dropped.
fn outcomes(text: &str) -> [u64; 4] {
    ["agree", "disagree", "error", "dropped"].map(|outcome| {
        metric(
            text,
            &format!(
                r#"ferry_shadow_requests_total{{model="m",served_version="1",shadow_version="2",outcome="{outcome}"}}"#
            ),
        )
    })
}

/// Waits until every one of `answered` requests has its shadow outcome counted, and returns the metrics.
async fn settled(server: &ferry_tests::TestServer, answered: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = ferry_server::metrics::render_registry(server.registry());
        let counted: u64 = outcomes(&text).iter().sum();
        assert!(
            counted <= answered,
            "{counted} shadow outcomes for {answered} requests"
        );
        if counted == answered {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} of {answered} shadows counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_answers_are_never_returned_and_disagreements_are_measured() {
    let dir = repository(Some(&policy(64, 0.5)));
    let server = start(&dir, ControlMode::None).await;
    let mut client = server.raw_client().await.expect("client");
    for _ in 0..200 {
        let answer = infer(&mut client, "", None).await.expect("answer");
        assert_eq!(
            (answer.version.as_str(), answer.addend, answer.route.as_deref()),
            ("1", 1.0, Some("split:stable"))
        );
    }
    let text = settled(&server, 200).await;
    let [agree, disagree, error, dropped] = outcomes(&text);
    assert_eq!((agree, error), (0, 0), "{text}");
    assert!(disagree > 100, "{disagree} disagreements, {dropped} dropped");
    // Every difference is 1 (version 2 answers 1 more): all in the bucket up to 1, none below.
    let bucket = |le: &str| {
        metric(
            &text,
            &format!(
                r#"ferry_shadow_difference_bucket{{model="m",served_version="1",shadow_version="2",le="{le}"}}"#
            ),
        )
    };
    assert_eq!(
        (bucket("0.1"), bucket("1"), bucket("+Inf")),
        (0, disagree, disagree),
        "{text}"
    );
    // With a tolerance above the difference, the same answers agree.
    let sdk = sdk(&server).await;
    let mut spec = sdk
        .get_traffic("m")
        .await
        .expect("status")
        .policy
        .expect("policy");
    spec.shadow.as_mut().expect("shadow").float_tolerance = 1.5;
    sdk.set_traffic("m", spec).await.expect("tolerance changed");
    for _ in 0..50 {
        check_consistent(&infer(&mut client, "", None).await.expect("answer"));
    }
    let text = settled(&server, 250).await;
    let [agree, ..] = outcomes(&text);
    assert!(agree > 0, "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_load_is_dropped_first_when_its_budget_is_full() {
    let dir = repository(Some(&policy(1, 0.0)));
    let server = start(&dir, ControlMode::None).await;
    let client = server.raw_client().await.expect("client");
    let load = Load::start(&client, 8, &[""]);
    load.until(2_000).await;
    let answers = load.finish().await;
    for answer in &answers {
        let answer = answer.as_ref().expect("no real request fails");
        assert_eq!((answer.version.as_str(), answer.addend), ("1", 1.0));
    }
    let text = settled(&server, answers.len() as u64).await;
    let [agree, disagree, error, dropped] = outcomes(&text);
    assert_eq!((agree, error), (0, 0), "{text}");
    assert!(
        dropped > 0 && disagree > 0,
        "{disagree} run, {dropped} dropped of {}",
        answers.len()
    );
    server.stop().await;
}
