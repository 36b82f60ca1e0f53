//! The run report: JSON for machines, a summary for people.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::score::Quality;
use super::{Order, Outcome, RunOptions};
use crate::output::Format;
use crate::truth::Truth;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub tool: String,
    pub dataset: DatasetInfo,
    pub trailwatch: RunInfo,
    pub throughput: Throughput,
    /// End-to-end latency of a live run (absent for replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<super::live::Latency>,
    pub quality: Quality,
    /// The same dataset through trailwatch with no configuration at all
    /// (`--compare-no-config`): the org context derived, pack defaults only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_config: Option<Quality>,
    /// Things that make the figures doubtful (events not read, bad records, late events dropped).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub dir: String,
    pub format: Format,
    pub order: Order,
    pub seed: u64,
    pub start: String,
    pub end: String,
    pub accounts: usize,
    pub regions: Vec<String>,
    pub rate: f64,
    pub events_generated: u64,
    pub input_bytes: u64,
    pub scenarios: usize,
    pub lookalikes: usize,
    pub generated_in_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub target: String,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub killed_after_seconds: Option<f64>,
    /// trailwatch's own end-of-run summary (stderr, last lines).
    pub summary: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    /// Events trailwatch read (from its summary), else the events generated.
    pub events: u64,
    pub wall_seconds: f64,
    pub events_per_second: f64,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub cpu_seconds: f64,
    /// CPU seconds per wall second.
    pub cores_used: f64,
    /// Events per CPU second: the rate one core sustains.
    pub events_per_cpu_second: f64,
    pub peak_rss_bytes: u64,
    pub peak_rss_source: String,
}

impl Report {
    pub fn new(opts: &RunOptions, target: &str, truth: &Truth, o: &Outcome, quality: Quality) -> Report {
        let events = o.events_read.unwrap_or(truth.generator.events);
        let wall = o.wall.as_secs_f64().max(1e-9);
        let cpu = o.cpu_user_seconds + o.cpu_system_seconds;
        let tail: Vec<&str> = o.stderr.lines().rev().take(40).collect();
        let mut warnings = Vec::new();
        match o.events_read {
            Some(n) if n != truth.generator.events => warnings.push(format!(
                "trailwatch read {n} events but the dataset has {}: see its summary",
                truth.generator.events
            )),
            None if o.killed_after_seconds.is_none() => {
                warnings.push("trailwatch printed no summary line; events counted from the dataset".into())
            }
            _ => {}
        }
        if let Some(n) = summary_number(&o.stderr, "replayed ", " bad records").filter(|&n| n > 0) {
            warnings.push(format!("trailwatch skipped {n} bad records"));
        }
        if let Some(n) = summary_number(&o.stderr, "windows: ", " late events dropped").filter(|&n| n > 0) {
            warnings.push(format!("trailwatch dropped {n} late events from correlation windows"));
        }
        Report {
            tool: format!("trailwatch-loadtest {}", env!("CARGO_PKG_VERSION")),
            dataset: DatasetInfo {
                dir: opts.dataset.display().to_string(),
                format: opts.format,
                order: opts.order,
                seed: truth.generator.seed,
                start: truth.generator.start.clone(),
                end: truth.generator.end.clone(),
                accounts: truth.org.accounts.len(),
                regions: truth.org.regions.clone(),
                rate: truth.generator.rate,
                events_generated: truth.generator.events,
                input_bytes: o.input_bytes,
                scenarios: truth.scenarios.len(),
                lookalikes: truth.lookalikes.len(),
                generated_in_seconds: opts.generated_in.map(|d| d.as_secs_f64()),
            },
            trailwatch: RunInfo {
                target: target.to_string(),
                command: o.command.clone(),
                exit_code: o.exit_code,
                killed_after_seconds: o.killed_after_seconds,
                summary: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            },
            throughput: Throughput {
                events,
                wall_seconds: wall,
                events_per_second: events as f64 / wall,
                cpu_user_seconds: o.cpu_user_seconds,
                cpu_system_seconds: o.cpu_system_seconds,
                cpu_seconds: cpu,
                cores_used: cpu / wall,
                events_per_cpu_second: if cpu > 0.0 { events as f64 / cpu } else { 0.0 },
                peak_rss_bytes: o.peak_rss_bytes,
                peak_rss_source: o.peak_rss_source.to_string(),
            },
            latency: o.latency.clone(),
            quality,
            no_config: None,
            warnings,
        }
    }

    /// Did trailwatch finish on its own with success?
    pub fn completed(&self) -> bool {
        self.trailwatch.killed_after_seconds.is_none() && self.trailwatch.exit_code == Some(0)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let d = &self.dataset;
        let t = &self.throughput;
        let q = &self.quality;
        let pct = |x: Option<f64>| x.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            s,
            "dataset: {} events ({} MiB {}, {} order), {} accounts, {} to {}, seed {}",
            d.events_generated,
            d.input_bytes >> 20,
            d.format.as_str(),
            match d.order {
                Order::Time => "time",
                Order::Path => "path",
            },
            d.accounts,
            d.start,
            d.end,
            d.seed
        );
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        if let Some(k) = self.trailwatch.killed_after_seconds {
            let _ = writeln!(s, "trailwatch KILLED after {k:.1}s (time limit): figures below are partial");
        } else if self.trailwatch.exit_code != Some(0) {
            let _ = writeln!(s, "trailwatch exited with {:?}: see its output below", self.trailwatch.exit_code);
        }
        let _ = writeln!(
            s,
            "throughput: {} events in {:.2}s = {:.0} events/s; CPU {:.2}s (user {:.2}s, sys {:.2}s, {:.2} cores) = {:.0} events/s per core; peak RSS {:.1} MiB ({})",
            t.events,
            t.wall_seconds,
            t.events_per_second,
            t.cpu_seconds,
            t.cpu_user_seconds,
            t.cpu_system_seconds,
            t.cores_used,
            t.events_per_cpu_second,
            t.peak_rss_bytes as f64 / 1048576.0,
            t.peak_rss_source
        );
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "latency ({}): p50 {:.2}s, p90 {:.2}s, p99 {:.2}s, max {:.2}s over {} findings",
                l.from_to, l.p50_seconds, l.p90_seconds, l.p99_seconds, l.max_seconds, l.findings_measured
            );
        }
        let _ = writeln!(
            s,
            "findings: {} ({} true positive, {} false positive); precision {}; recall {} ({}/{} scenarios)",
            q.findings,
            q.true_positive_findings,
            q.false_positive_findings,
            pct(q.precision),
            pct(q.recall),
            q.scenarios_detected,
            q.scenarios
        );
        if !q.by_theme.is_empty() {
            let themes: Vec<String> =
                q.by_theme.iter().map(|(k, v)| format!("{k} {}/{}", v.detected, v.scenarios)).collect();
            let _ = writeln!(s, "by theme: {}", themes.join("; "));
        }
        if !q.detected.is_empty() {
            let _ = writeln!(s, "detected:");
            for r in &q.detected {
                let rules: Vec<String> = r.rules.iter().map(|x| format!("{} ({})", x.title, x.findings)).collect();
                let _ = writeln!(s, "  {:<40} {}", r.id, rules.join(", "));
            }
        }
        if !q.missed.is_empty() {
            let _ = writeln!(s, "missed:");
            for r in &q.missed {
                let _ = writeln!(s, "  {:<40} [{}] {}", r.id, r.theme, r.summary);
            }
        }
        if !q.false_positives_by_rule.is_empty() {
            let _ = writeln!(s, "false positives by rule:");
            for r in &q.false_positives_by_rule {
                let _ = writeln!(s, "  {:>7}  {} ({})", r.findings, r.title, r.rule_id);
                if !r.on_lookalikes.is_empty() {
                    let l: Vec<String> = r.on_lookalikes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    let _ = writeln!(s, "           on look-alikes: {}", l.join(", "));
                }
                let e = &r.example;
                let ctx: Vec<String> =
                    e.context.iter().map(|(k, v)| format!("{}={v}", k.rsplit('/').next().unwrap_or(k))).collect();
                let _ = writeln!(
                    s,
                    "           e.g. event {} {}",
                    e.event_id.as_deref().unwrap_or("(none)"),
                    ctx.join(" ")
                );
            }
        }
        let _ = writeln!(s, "look-alikes raising findings: {}/{}", q.lookalikes_raised.len(), q.lookalikes);
        if let Some(n) = &self.no_config {
            let _ = writeln!(
                s,
                "with no configuration at all: findings {} ({} true positive, {} false positive); precision {}; recall {} ({}/{} scenarios); look-alikes raising findings: {}/{}",
                n.findings,
                n.true_positive_findings,
                n.false_positive_findings,
                pct(n.precision),
                pct(n.recall),
                n.scenarios_detected,
                n.scenarios,
                n.lookalikes_raised.len(),
                n.lookalikes
            );
            if !n.missed.is_empty() {
                let missed: Vec<&str> = n.missed.iter().map(|m| m.id.as_str()).collect();
                let _ = writeln!(s, "  missed with no configuration: {}", missed.join(", "));
            }
            if !n.lookalikes_raised.is_empty() {
                let _ = writeln!(
                    s,
                    "  look-alikes raising findings with no configuration: {}",
                    n.lookalikes_raised.join(", ")
                );
            }
            for r in &n.false_positives_by_rule {
                let _ = writeln!(s, "  no-config false positives: {} x {} ({})", r.findings, r.title, r.rule_id);
            }
        }
        s
    }
}

/// The number just before `suffix` on the summary line starting with `line_prefix`.
fn summary_number(stderr: &str, line_prefix: &str, suffix: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.starts_with(line_prefix))?;
    let end = line.find(suffix)?;
    line[..end].rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::summary_number;

    #[test]
    fn reads_counts_from_the_summary() {
        let s = "replayed 3 inputs, 10 events in 0.1s (100 events/s); 2 bad records; 0 skipped; 1 findings\n\
                 windows: 1 correlation findings (0 updates), 364 late events dropped, 0 keys evicted, 0 matches suppressed\n";
        assert_eq!(summary_number(s, "replayed ", " bad records"), Some(2));
        assert_eq!(summary_number(s, "windows: ", " late events dropped"), Some(364));
        assert_eq!(summary_number("replayed 1 input", "replayed ", " bad records"), None);
    }
}
