//! How nemoctl prints: a table with a header, or JSON.

use clap::ValueEnum;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Prints what a delete removed: its name, as the one record `deleted`.
pub fn print_deleted(out: Output, name: &str) {
    print_records(
        out,
        &["deleted"],
        vec![vec![name.to_owned()]],
        vec![serde_json::json!({ "deleted": name })],
    );
}

/// Prints records (what a command created, changed, showed or listed):
/// `rows` under `header` as a table, or with `--output json` an array of
/// one object per record, an array even for one record or none.
pub fn print_records(
    output: Output,
    header: &[&str],
    rows: Vec<Vec<String>>,
    records: Vec<serde_json::Value>,
) {
    print_table_or(output, header, rows, serde_json::Value::Array(records));
}

/// Prints a report (an overview of one thing, `status` or `pair status`):
/// `rows` under `header` as a table, or with `--output json` one object.
pub fn print_report(
    output: Output,
    header: &[&str],
    rows: Vec<Vec<String>>,
    report: serde_json::Map<String, serde_json::Value>,
) {
    print_table_or(output, header, rows, serde_json::Value::Object(report));
}

/// Prints one record of a stream (`--follow`) as it comes: a table line,
/// or with `--output json` its object on a line of its own (JSON Lines).
pub fn print_streamed(output: Output, row: Vec<String>, record: &serde_json::Value) {
    match output {
        Output::Json => println!("{record}"),
        Output::Table => println!("{}", row.join("  ")),
    }
}

/// Records printed as they arrive, for a history that can be long (a
/// million events kept): the same shapes as [`print_records`] (a header
/// then rows; a JSON array) without holding them all first. The rows'
/// cells come padded by the caller, since widths cannot be measured ahead.
#[derive(Debug)]
pub struct RecordArray {
    output: Output,
    empty: bool,
}

impl RecordArray {
    /// Starts it: the header, or the array's opening bracket.
    pub fn start(output: Output, header: &[String]) -> RecordArray {
        match output {
            Output::Json => println!("["),
            Output::Table => println!("{}", header.join("  ").to_uppercase().trim_end()),
        }
        RecordArray {
            output,
            empty: true,
        }
    }

    /// One record.
    pub fn push(&mut self, row: Vec<String>, record: &serde_json::Value) {
        match self.output {
            Output::Json if self.empty => print!("{record}"),
            Output::Json => print!(",\n{record}"),
            Output::Table => println!("{}", row.join("  ").trim_end()),
        }
        self.empty = false;
    }

    /// Ends it: the array's closing bracket.
    pub fn end(self) {
        if self.output == Output::Json {
            println!("{}]", if self.empty { "" } else { "\n" });
        }
    }
}

/// A report's object from its fields, in order.
pub fn report<const N: usize>(
    fields: [(&str, serde_json::Value); N],
) -> serde_json::Map<String, serde_json::Value> {
    fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn print_table_or(
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

pub use nemo_daemon::clock::now_unix_ms;

/// Whole seconds from now until `unix_ms` (0 once past), as `"N s"`.
pub fn seconds_until(unix_ms: i64) -> String {
    format!("{} s", (unix_ms - now_unix_ms()).max(0) / 1000)
}

/// Milliseconds since the Unix epoch as UTC, `2026-11-27T21:34:41.123Z`.
pub fn utc(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let in_day = unix_ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// An event's detail (JSON) on one line, at most 120 characters.
pub fn detail(json: &str) -> String {
    let compact = serde_json::from_str::<serde_json::Value>(json)
        .map(|value| value.to_string())
        .unwrap_or_else(|_| json.to_owned());
    if compact.chars().count() > 120 {
        format!("{}...", compact.chars().take(117).collect::<String>())
    } else {
        compact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_is_the_calendar_date_and_time() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        // date -u -d @1795815281.123 +%FT%T.%3NZ
        assert_eq!(utc(1_795_815_281_123), "2026-11-27T21:34:41.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn details_fit_a_line() {
        assert_eq!(detail("{ \"a\": 1 }"), "{\"a\":1}");
        assert_eq!(
            detail(&format!("\"{}\"", "x".repeat(300))).chars().count(),
            120
        );
    }
}
