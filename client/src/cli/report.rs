//! The human form of a load test's report: a few aligned lines, latencies all in milliseconds with
//! microsecond precision so they compare at a glance.

use std::time::Duration;

use ferry_client::bench::LoadReport;

/// Renders `report`; the `late` line only appears for an open loop (`open_loop`), the only mode that can
/// fall behind a schedule.
pub fn render(report: &LoadReport, open_loop: bool) -> String {
    let latency = &report.latency;
    let errors = if report.errors.is_empty() {
        "none".to_owned()
    } else {
        let counts: Vec<String> = report
            .errors
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect();
        counts.join(", ")
    };
    let mut lines = vec![
        format!(
            "throughput: {:.1} req/s ({} ok in {:.3} s)",
            report.throughput,
            report.ok,
            report.elapsed.as_secs_f64()
        ),
        format!(
            "latency:    p50 {}  p90 {}  p99 {}  mean {}  max {}",
            millis(latency.p50),
            millis(latency.p90),
            millis(latency.p99),
            millis(latency.mean),
            millis(latency.max)
        ),
        format!("errors:     {errors}"),
    ];
    if open_loop {
        lines.push(format!("late:       {}", report.late));
    }
    lines.join("\n")
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use ferry_client::bench::Latency;

    use super::*;

    #[test]
    fn reports_read_as_aligned_lines() {
        let report = LoadReport {
            ok: 3000,
            errors: [("NOT_FOUND".to_owned(), 4), ("TRANSPORT".to_owned(), 1)].into(),
            late: 2,
            elapsed: Duration::from_secs(3),
            throughput: 1000.0,
            latency: Latency {
                mean: Duration::from_micros(530),
                p50: Duration::from_micros(512),
                p90: Duration::from_micros(800),
                p99: Duration::from_micros(1200),
                max: Duration::from_micros(4100),
            },
        };
        assert_eq!(
            render(&report, true),
            "throughput: 1000.0 req/s (3000 ok in 3.000 s)\n\
             latency:    p50 0.512 ms  p90 0.800 ms  p99 1.200 ms  mean 0.530 ms  max 4.100 ms\n\
             errors:     NOT_FOUND 4, TRANSPORT 1\n\
             late:       2"
        );
        let closed = render(
            &LoadReport {
                errors: Default::default(),
                ..report
            },
            false,
        );
        assert!(closed.ends_with("errors:     none"), "{closed}");
    }
}
