//! `nemo-timeline`: the picture of a migration in the lab. The round trip
//! of every probe (`nemo-probe send --csv`) against time, lost probes
//! marked on the axis, the tenant's outage shaded, and a vertical line at
//! each moment the lab recorded (migration started, VM paused, VM resumed,
//! Binding Update sent, Binding Acknowledgement received, first reply).
//! Written as SVG by hand: a browser shows it, nothing else is needed.
//!
//! ```sh
//! nemo-timeline --probes probes.csv --marks marks.json --title "..." --out timeline.svg
//! ```
//!
//! `marks.json`: `{"marks": [{"label": "VM paused", "unix": 1795825622.1}, ...],
//! "gap": [from_unix, until_unix]}` (the gap is optional).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "nemo-timeline", version)]
struct Args {
    /// The probes: sequence,sent_unix,answered_unix,rtt_ms.
    #[arg(long)]
    probes: PathBuf,
    /// The moments to mark.
    #[arg(long)]
    marks: PathBuf,
    /// The picture's title.
    #[arg(long, default_value = "")]
    title: String,
    /// A line under the title (the figures, say).
    #[arg(long, default_value = "")]
    note: String,
    /// Time shown before the first mark and after the last, in ms.
    #[arg(long, default_value_t = 400.0)]
    margin_ms: f64,
    /// Where to write the SVG.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, serde::Deserialize)]
struct Mark {
    label: String,
    unix: f64,
}

#[derive(Debug, serde::Deserialize)]
struct Marks {
    marks: Vec<Mark>,
    #[serde(default)]
    gap: Option<(f64, f64)>,
}

/// One probe: when it was sent and its round trip (`None`: lost).
struct Probe {
    sent: f64,
    rtt_ms: Option<f64>,
}

/// Most probes read (8 s at one every 2 ms is 4,000).
const MOST_PROBES: usize = 1_000_000;

fn probes(text: &str) -> anyhow::Result<Vec<Probe>> {
    let mut probes = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        if probes.len() == MOST_PROBES {
            anyhow::bail!("more than {MOST_PROBES} probes");
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [_, sent, _, rtt] = fields[..] else {
            anyhow::bail!("probes line {}: 4 fields expected", number + 1);
        };
        probes.push(Probe {
            sent: sent
                .parse()
                .map_err(|_| anyhow::anyhow!("probes line {}: sent_unix", number + 1))?,
            rtt_ms: if rtt.is_empty() {
                None
            } else {
                Some(
                    rtt.parse()
                        .map_err(|_| anyhow::anyhow!("probes line {}: rtt_ms", number + 1))?,
                )
            },
        });
    }
    Ok(probes)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A step for axis ticks: about `count` of them over `span`.
fn step(span: f64, count: f64) -> f64 {
    let raw = span / count;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn render(probes: &[Probe], marks: &Marks, title: &str, note: &str, margin_ms: f64) -> String {
    let (width, height) = (1100.0, 540.0);
    let (left, right, top, bottom) = (70.0, 30.0, 80.0, 170.0);
    let origin = marks
        .marks
        .iter()
        .map(|m| m.unix)
        .fold(f64::INFINITY, f64::min);
    let last = marks
        .marks
        .iter()
        .map(|m| m.unix)
        .fold(f64::NEG_INFINITY, f64::max);
    let (start, end) = if origin.is_finite() {
        (-margin_ms, (last - origin) * 1000.0 + margin_ms)
    } else {
        (0.0, 1000.0)
    };
    let ms = |unix: f64| (unix - origin) * 1000.0;
    let shown: Vec<&Probe> = probes
        .iter()
        .filter(|p| (start..=end).contains(&ms(p.sent)))
        .collect();
    let top_rtt = shown.iter().filter_map(|p| p.rtt_ms).fold(1.0f64, f64::max) * 1.15;
    let x = |t: f64| left + (t - start) / (end - start) * (width - left - right);
    let y = |rtt: f64| height - bottom - rtt / top_rtt * (height - top - bottom);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="24" font-size="16">{}</text>
<text x="{left}" y="44">{}</text>
"##,
        escape(title),
        escape(note)
    );
    if let Some((from, until)) = marks.gap {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#f6c5c0"/>"##,
            x(ms(from)),
            (x(ms(until)) - x(ms(from))).max(1.0),
            height - top - bottom
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#b03a2e">outage {:.1} ms</text>"##,
            x(ms(from)) + 4.0,
            top + 16.0,
            (until - from) * 1000.0
        );
    }
    // Axes and ticks.
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{0}" stroke="black"/>"##,
        height - bottom,
        width - right
    );
    let time_step = step(end - start, 10.0);
    let mut tick = (start / time_step).ceil() * time_step;
    while tick <= end {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="black"/><text x="{0:.1}" y="{3}" text-anchor="middle">{tick:.0}</text>"##,
            x(tick),
            height - bottom,
            height - bottom + 5.0,
            height - bottom + 18.0
        );
        tick += time_step;
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{}" text-anchor="middle">time (ms, from the first mark)</text>"##,
        (left + width - right) / 2.0,
        height - bottom + 36.0
    );
    let rtt_step = step(top_rtt, 5.0);
    let mut tick = 0.0;
    while tick <= top_rtt {
        let _ = writeln!(
            svg,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="black"/><text x="{3}" y="{4:.1}" text-anchor="end">{tick}</text>"##,
            left - 5.0,
            y(tick),
            left,
            left - 8.0,
            y(tick) + 4.0
        );
        tick += rtt_step;
    }
    let _ = writeln!(
        svg,
        r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">round trip (ms)</text>"##,
        (top + height - bottom) / 2.0
    );
    // The probes: answered as dots, lost as red ticks under the axis.
    for probe in &shown {
        match probe.rtt_ms {
            Some(rtt) => {
                let _ = writeln!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="#1f5fa8"/>"##,
                    x(ms(probe.sent)),
                    y(rtt)
                );
            }
            None => {
                let _ = writeln!(
                    svg,
                    r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#c0392b"/>"##,
                    x(ms(probe.sent)),
                    height - bottom - 8.0,
                    height - bottom
                );
            }
        }
    }
    // The moments in time order, each line ending at its own label row
    // below the plot. A label left of its line crosses only the lines of
    // earlier moments, which end above it: none is crossed; one that would
    // run off the left edge goes right of its line.
    let mut sorted: Vec<&Mark> = marks.marks.iter().collect();
    sorted.sort_by(|a, b| a.unix.total_cmp(&b.unix));
    for (row, mark) in sorted.iter().enumerate() {
        let at = x(ms(mark.unix));
        let label_y = height - bottom + 56.0 + 16.0 * row as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{at:.1}" y1="{top}" x2="{at:.1}" y2="{label_y:.1}" stroke="#555" stroke-dasharray="4 3"/>"##
        );
        let text = format!("{} ({:+.1} ms)", mark.label, ms(mark.unix));
        // About 6.6 px a character at 12 px sans-serif.
        let (anchor, offset) = if at - 6.6 * text.chars().count() as f64 > 5.0 {
            ("end", -4.0)
        } else {
            ("start", 4.0)
        };
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"##,
            at + offset,
            label_y + 4.0,
            escape(&text)
        );
    }
    let lost = shown.iter().filter(|p| p.rtt_ms.is_none()).count();
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="62" fill="#555">{} probes shown, {lost} lost (red ticks); dots: round trip of each answered probe at its send time</text>"##,
        left,
        shown.len()
    );
    svg.push_str("</svg>\n");
    svg
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let read = |path: &PathBuf| {
        let size = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .len();
        if size > 256 << 20 {
            anyhow::bail!("{}: larger than 256 MiB", path.display());
        }
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let probes = probes(&read(&args.probes)?)?;
    let marks: Marks = serde_json::from_str(&read(&args.marks)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.marks.display()))?;
    std::fs::write(
        &args.out,
        render(&probes, &marks, &args.title, &args.note, args.margin_ms),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    println!("timeline written to {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;

    const HEADER: &str = "sequence,sent_unix,answered_unix,rtt_ms\n";

    #[test]
    fn a_malformed_probes_line_is_refused_naming_it() {
        for (body, expected) in [
            ("1,2.0,2.1\n", "probes line 2: 4 fields expected"),
            ("1,2.0,2.1,0.5\n2,soon,,\n", "probes line 3: sent_unix"),
            ("1,2.0,2.1,fast\n", "probes line 2"),
        ] {
            let error = probes(&format!("{HEADER}{body}")).err().unwrap();
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn lost_probes_are_drawn_apart_from_answered_ones() {
        let read = probes(&format!("{HEADER}1,10.000,10.001,1.0\n2,10.002,,\n")).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].rtt_ms, None);
        let marks = Marks {
            marks: vec![Mark {
                label: "VM resumed".into(),
                unix: 10.001,
            }],
            gap: Some((10.002, 10.003)),
        };
        let svg = render(&read, &marks, "a <title>", "", 10.0);
        assert!(svg.contains("1 lost"), "{svg}");
        assert!(svg.contains("VM resumed"), "{svg}");
        // Text is escaped: the picture stays well-formed.
        assert!(svg.contains("a &lt;title&gt;"), "{svg}");
    }
}
