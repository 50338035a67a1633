//! A small SVG line chart, enough to show throughput against concurrency without a plotting dependency.

use std::fmt::Write;

/// One line of a panel: a label, a colour and its points (x index into the panel's x labels, y value).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Any SVG colour.
    pub color: &'static str,
    /// Dashed lines mark references rather than measurements.
    pub dashed: bool,
    /// y values at each x position (`None` where not measured).
    pub values: Vec<Option<f64>>,
}

/// One chart: a title, category labels along x, and the lines drawn over them.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Shown above the chart.
    pub title: String,
    /// Shown beside the y axis.
    pub y_label: String,
    /// One label per x position.
    pub x_labels: Vec<String>,
    /// The lines.
    pub series: Vec<Series>,
}

const PANEL_WIDTH: f64 = 460.0;
const PANEL_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_TOP: f64 = 40.0;
const PLOT_WIDTH: f64 = 340.0;
const PLOT_HEIGHT: f64 = 200.0;

/// Renders panels side by side as one SVG document.
pub fn render(panels: &[Panel]) -> String {
    let width = PANEL_WIDTH * panels.len() as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{PANEL_HEIGHT}" fill="white"/>"#
    );
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, panel, PANEL_WIDTH * index as f64);
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, panel: &Panel, left: f64) {
    let x0 = left + MARGIN_LEFT;
    let y0 = MARGIN_TOP;
    let max = panel
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1.0)
        * 1.1;
    let steps = panel.x_labels.len().max(2) - 1;
    let x_at = |i: usize| x0 + PLOT_WIDTH * i as f64 / steps as f64;
    let y_at = |v: f64| y0 + PLOT_HEIGHT * (1.0 - v / max);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" font-size="13" font-weight="bold">{}</text>"#,
        x0,
        escape(&panel.title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" fill="none" stroke="#888"/>"##
    );
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        let y = y_at(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PLOT_WIDTH,
            x0 - 6.0,
            y + 4.0,
            format_value(value)
        );
    }
    for (i, label) in panel.x_labels.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x_at(i),
            y0 + PLOT_HEIGHT + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">concurrency (requests in flight)</text>"#,
        x0 + PLOT_WIDTH / 2.0,
        y0 + PLOT_HEIGHT + 32.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        left + 14.0,
        y0 + PLOT_HEIGHT / 2.0,
        escape(&panel.y_label)
    );
    for (row, series) in panel.series.iter().enumerate() {
        let points: Vec<String> = series
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x_at(i), y_at(v))))
            .collect();
        let dash = if series.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            points.join(" "),
            series.color
        );
        for point in &points {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                series.color
            );
        }
        let legend_y = y0 + PLOT_HEIGHT + 48.0 + 13.0 * row as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{x0}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{:.1}">{}</text>"#,
            legend_y - 4.0,
            x0 + 20.0,
            legend_y - 4.0,
            series.color,
            x0 + 26.0,
            legend_y,
            escape(&series.label)
        );
    }
}

fn format_value(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else {
        format!("{value:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_and_label() {
        let panel = Panel {
            title: "small <mlp>".into(),
            y_label: "req/s".into(),
            x_labels: vec!["1".into(), "8".into()],
            series: vec![Series {
                label: "batched".into(),
                color: "red",
                dashed: false,
                values: vec![Some(10.0), None],
            }],
        };
        let svg = render(&[panel]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("small &lt;mlp&gt;"));
        assert_eq!(
            svg.matches("<circle").count(),
            1,
            "unmeasured points are not drawn"
        );
        assert!(svg.contains(">batched<"));
    }
}
