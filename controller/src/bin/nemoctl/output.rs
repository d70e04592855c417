//! How nemoctl prints: a table with a header, or JSON.

use clap::ValueEnum;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Prints `rows` under `header` as a table, or `json`.
pub fn print_rows(
    output: Output,
    header: &[&str],
    rows: Vec<Vec<String>>,
    json: serde_json::Value,
) {
    match output {
        Output::Json => println!("{json}"),
        Output::Table => {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            println!(
                "{}",
                line(header.iter().map(|h| h.to_uppercase()).collect())
            );
            for row in rows {
                println!("{}", line(row));
            }
        }
    }
}
