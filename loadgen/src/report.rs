//! Markdown tables: one row per metric, one column per server, then the ratio of the first
//! server to each of the others.

use std::fmt::Write as _;
use std::time::Duration;

use crate::hold::HoldReport;
use crate::relay::RelayReport;

/// How a metric's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Rounded to a whole number, with thousands separators.
    Count,
    /// With this many decimals.
    Decimals(usize),
}

/// One row of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// What is measured, with its unit.
    pub name: String,
    /// One value per server (`None`: not measured).
    pub values: Vec<Option<f64>>,
    /// How the values are written.
    pub format: Format,
    /// Whether the ratio columns make sense for this row.
    pub ratio: bool,
}

impl Metric {
    fn new(name: &str, format: Format, values: Vec<Option<f64>>) -> Self {
        Self {
            name: name.to_owned(),
            values,
            format,
            ratio: true,
        }
    }

    fn without_ratio(mut self) -> Self {
        self.ratio = false;
        self
    }
}

/// Writes `value` in `format`.
pub fn format_value(value: f64, format: Format) -> String {
    match format {
        Format::Count => thousands(value.round() as i64),
        Format::Decimals(places) => format!("{value:.places$}"),
    }
}

fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0 {
        out.insert(0, '-');
    }
    out
}

/// A Markdown table of `metrics` for servers `labels`, with ratio columns `first / other`.
pub fn markdown(labels: &[String], metrics: &[Metric]) -> String {
    let mut out = String::from("| metric |");
    for label in labels {
        let _ = write!(out, " {label} |");
    }
    let first = labels.first().cloned().unwrap_or_default();
    for label in labels.iter().skip(1) {
        let _ = write!(out, " {first} / {label} |");
    }
    out.push_str("\n|---|");
    for _ in 0..(labels.len() * 2).saturating_sub(1) {
        out.push_str("---:|");
    }
    out.push('\n');
    for metric in metrics {
        let _ = write!(out, "| {} |", metric.name);
        for value in &metric.values {
            match value {
                Some(v) => {
                    let _ = write!(out, " {} |", format_value(*v, metric.format));
                }
                None => out.push_str(" – |"),
            }
        }
        let base = metric.values.first().copied().flatten();
        for value in metric.values.iter().skip(1) {
            match (metric.ratio, base, value) {
                (true, Some(a), Some(b)) if *b != 0.0 => {
                    let _ = write!(out, " {:.2} |", a / b);
                }
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// The relay scenario's table.
pub fn relay_table(reports: &[RelayReport]) -> String {
    let labels: Vec<String> = reports.iter().map(|r| r.label.clone()).collect();
    let col = |f: &dyn Fn(&RelayReport) -> Option<f64>| reports.iter().map(f).collect();
    let metrics = vec![
        Metric::new(
            "peers joined",
            Format::Count,
            col(&|r| Some(r.joined as f64)),
        )
        .without_ratio(),
        Metric::new("joins/s", Format::Count, col(&|r| Some(r.joins_per_sec()))),
        Metric::new(
            "join p50 (ms)",
            Format::Decimals(2),
            col(&|r| r.join_latency.map(|s| ms(s.p50))),
        ),
        Metric::new(
            "join p99 (ms)",
            Format::Decimals(2),
            col(&|r| r.join_latency.map(|s| ms(s.p99))),
        ),
        Metric::new(
            "signals relayed",
            Format::Count,
            col(&|r| Some(r.received as f64)),
        )
        .without_ratio(),
        Metric::new(
            "signals lost",
            Format::Count,
            col(&|r| Some(r.lost() as f64)),
        )
        .without_ratio(),
        Metric::new(
            "relayed signals/s",
            Format::Count,
            col(&|r| Some(r.relayed_per_sec())),
        ),
        Metric::new(
            "relay latency p50 (ms)",
            Format::Decimals(2),
            col(&|r| r.latency.map(|s| ms(s.p50))),
        ),
        Metric::new(
            "relay latency p99 (ms)",
            Format::Decimals(2),
            col(&|r| r.latency.map(|s| ms(s.p99))),
        ),
        Metric::new(
            "relay latency max (ms)",
            Format::Decimals(2),
            col(&|r| r.latency.map(|s| ms(s.max))),
        ),
        Metric::new(
            "server RSS before (MiB)",
            Format::Decimals(1),
            col(&|r| mib(r.rss_before_kib)),
        ),
        Metric::new(
            "server RSS, all joined (MiB)",
            Format::Decimals(1),
            col(&|r| mib(r.rss_joined_kib)),
        ),
        Metric::new(
            "server RSS after relay (MiB)",
            Format::Decimals(1),
            col(&|r| mib(r.rss_after_relay_kib)),
        ),
        Metric::new(
            "server RSS per connection (KiB)",
            Format::Decimals(1),
            col(&|r| r.rss_per_peer_kib()),
        ),
        Metric::new("refusals", Format::Count, col(&|r| Some(r.refused as f64))).without_ratio(),
        Metric::new(
            "connections closed early",
            Format::Count,
            col(&|r| Some(r.closed_early as f64)),
        )
        .without_ratio(),
    ];
    let mut out = markdown(&labels, &metrics);
    for report in reports {
        if let Some(err) = &report.first_join_error {
            let _ = writeln!(out, "\n{}: first join failure: {err}", report.label);
        }
        if let Some(why) = &report.first_refusal {
            let _ = writeln!(out, "\n{}: first refusal: {why}", report.label);
        }
        if report.discovered < report.discoveries_expected {
            let _ = writeln!(
                out,
                "\n{}: only {} of {} join notifications arrived before the relay",
                report.label, report.discovered, report.discoveries_expected
            );
        }
        if report.unreadable > 0 {
            let _ = writeln!(
                out,
                "\n{}: {} frames could not be read",
                report.label, report.unreadable
            );
        }
    }
    out
}

/// The idle hold's table.
pub fn hold_table(reports: &[HoldReport]) -> String {
    let labels: Vec<String> = reports.iter().map(|r| r.label.clone()).collect();
    let col = |f: &dyn Fn(&HoldReport) -> Option<f64>| reports.iter().map(f).collect();
    let gib = |kib: Option<f64>| kib.map(|k| k / (1024.0 * 1024.0));
    let metrics = vec![
        Metric::new(
            "idle peers asked",
            Format::Count,
            col(&|r| Some(r.peers as f64)),
        )
        .without_ratio(),
        Metric::new(
            "idle peers held",
            Format::Count,
            col(&|r| Some(r.alive as f64)),
        )
        .without_ratio(),
        Metric::new(
            "connections failed",
            Format::Count,
            col(&|r| Some(r.failed as f64)),
        )
        .without_ratio(),
        Metric::new("joins/s", Format::Count, col(&|r| Some(r.joins_per_sec()))),
        Metric::new(
            "server RSS before (MiB)",
            Format::Decimals(1),
            col(&|r| mib(r.rss_before_kib)),
        ),
        Metric::new(
            "server RSS holding (MiB)",
            Format::Decimals(1),
            col(&|r| mib(r.rss_held_kib)),
        ),
        Metric::new(
            "server RSS per idle peer (KiB)",
            Format::Decimals(2),
            col(&|r| r.rss_per_peer_kib()),
        ),
        Metric::new(
            "server RSS after release (MiB)",
            Format::Decimals(1),
            col(&|r| mib(r.rss_released_kib)),
        ),
        Metric::new(
            "projected, 100,000 peers (GiB)",
            Format::Decimals(2),
            col(&|r| gib(r.projected_kib(100_000))),
        ),
        Metric::new(
            "projected, 1,000,000 peers (GiB)",
            Format::Decimals(1),
            col(&|r| gib(r.projected_kib(1_000_000))),
        ),
    ];
    let mut out = markdown(&labels, &metrics);
    for report in reports {
        if let Some(err) = &report.first_error {
            let _ = writeln!(out, "\n{}: first connection failure: {err}", report.label);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_with_ratios() {
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let metrics = vec![
            Metric::new("speed", Format::Count, vec![Some(2000.0), Some(1000.0)]),
            Metric::new("size", Format::Decimals(1), vec![Some(1.0), None]),
            Metric::new("count", Format::Count, vec![Some(5.0), Some(5.0)]).without_ratio(),
        ];
        assert_eq!(
            markdown(&labels, &metrics),
            "| metric | a | b | a / b |\n\
             |---|---:|---:|---:|\n\
             | speed | 2,000 | 1,000 | 2.00 |\n\
             | size | 1.0 | – | – |\n\
             | count | 5 | 5 | – |\n"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }
}
