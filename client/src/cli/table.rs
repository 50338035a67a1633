//! Plain-text tables for listings meant to be read in a terminal (models, tensor signatures).

/// Renders `rows` under `headers` in left-aligned columns two spaces apart, each line indented by
/// `indent`; trailing spaces are trimmed so the output diffs cleanly.
pub fn render<const N: usize>(indent: &str, headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{indent}{}", padded.join("  ").trim_end())
    };
    let mut lines = vec![line(headers)];
    lines.extend(rows.iter().map(|row| line(row.each_ref().map(String::as_str))));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_widest_cell() {
        let rows = [
            ["simple".to_owned(), "1".to_owned(), String::new()],
            ["m".into(), "12".into(), "x".into()],
        ];
        let table = render("  ", ["NAME", "VERSION", "REASON"], &rows);
        assert_eq!(
            table,
            "  NAME    VERSION  REASON\n  simple  1\n  m       12       x"
        );
    }
}
