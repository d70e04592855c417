//! The two text formats metrics are scraped in. The registries encode
//! OpenMetrics 1.0 (`prometheus_client`): a counter's family is named
//! without `_total`, its samples with it, and the body ends in `# EOF`.
//! A scraper that asks for OpenMetrics (Prometheus sends
//! `Accept: application/openmetrics-text`) gets that, labelled as such;
//! anything else (curl, `promtool check metrics`, older scrapers) gets the
//! classic text format 0.0.4, where the family carries the sample's name.

/// The content type of OpenMetrics 1.0 text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's headers ask for OpenMetrics.
pub fn wants_openmetrics(request: &[u8]) -> bool {
    String::from_utf8_lossy(request).lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("accept:") && line.contains("application/openmetrics-text")
    })
}

/// OpenMetrics text as the classic format: counters' HELP and TYPE named
/// as their samples (`_total`), no `# UNIT`, no `# EOF`.
pub fn classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            let family = name.strip_suffix("_total").unwrap_or(name);
            counters
                .contains(family)
                .then(|| format!("{tag}{family}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_BODY: &str = "# HELP nemo_x_dropped Dropped, by reason.\n\
        # TYPE nemo_x_dropped counter\n\
        nemo_x_dropped_total{reason=\"a\"} 0\n\
        # HELP nemo_x_bindings Bindings.\n\
        # TYPE nemo_x_bindings gauge\n\
        nemo_x_bindings 3\n\
        # HELP nemo_x_seconds Latency.\n\
        # TYPE nemo_x_seconds histogram\n\
        # UNIT nemo_x_seconds seconds\n\
        nemo_x_seconds_sum 0.5\n\
        nemo_x_seconds_count 1\n\
        nemo_x_seconds_bucket{le=\"+Inf\"} 1\n\
        # EOF\n";

    #[test]
    fn counters_are_named_as_their_samples_and_the_end_marker_goes() {
        let text = classic(OPENMETRICS_BODY);
        assert!(text.contains("# HELP nemo_x_dropped_total Dropped, by reason.\n"));
        assert!(text.contains("# TYPE nemo_x_dropped_total counter\n"));
        assert!(text.contains("# TYPE nemo_x_bindings gauge\n"));
        assert!(text.contains("# TYPE nemo_x_seconds histogram\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            OPENMETRICS_BODY
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count()
        );
    }

    #[test]
    fn prometheus_asks_for_openmetrics_curl_does_not() {
        assert!(wants_openmetrics(
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"
        ));
        assert!(!wants_openmetrics(
            b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"
        ));
    }

    #[test]
    fn promtool_finds_nothing_to_say() {
        nemo_testkit::promtool_check(&classic(OPENMETRICS_BODY));
    }
}
