//! Offline replay: files (or stdin) → decoders → rules → ASFF findings, one
//! JSON finding per line. The same engine as the live service; used for
//! backtesting rules over archives and for the embedded default run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use trailwatch_rules::{Alert, CorrelationAlert, Detector, DetectorConfig, DetectorStats, EventClass, RuleSet};

use crate::decode::{self, DecodeOptions, Decoded, Position};
use crate::findings::{self, FindingContext, FindingInput};

/// What to replay and where findings go.
pub struct ReplayOptions {
    /// Files, directories (walked recursively) or `-` for stdin.
    pub inputs: Vec<PathBuf>,
    /// Dead-letter file for records that could not be decoded or evaluated
    /// (JSON lines with origin, position and reason).
    pub dead_letter: Option<PathBuf>,
    pub progress: bool,
    pub decode: DecodeOptions,
    pub findings: FindingContext,
    /// The time written as UpdatedAt (passed in so replays are reproducible).
    pub now: OffsetDateTime,
    /// Correlation windows and suppressions.
    pub detector: DetectorConfig,
}

/// Counters reported at the end of a replay.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    pub inputs: u64,
    pub bytes: u64,
    pub events: u64,
    pub events_by_class: BTreeMap<&'static str, u64>,
    pub bad_records: u64,
    pub bad_by_kind: BTreeMap<&'static str, u64>,
    pub skipped: u64,
    pub object_refs: u64,
    pub findings: u64,
    pub invalid_findings: u64,
    /// rule id → (title, matches)
    pub matches: BTreeMap<String, (String, u64)>,
    pub detector: DetectorStats,
    pub elapsed: Duration,
}

impl ReplayStats {
    /// The end-of-run summary printed to stderr.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "replayed {} input{}, {} events in {:.2}s ({:.0} events/s); {} bad records; {} skipped; {} findings\n",
            self.inputs,
            if self.inputs == 1 { "" } else { "s" },
            self.events,
            secs,
            self.events as f64 / secs,
            self.bad_records,
            self.skipped,
            self.findings,
        );
        if !self.bad_by_kind.is_empty() {
            let kinds: Vec<String> = self.bad_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            s.push_str(&format!("bad records by kind: {}\n", kinds.join(", ")));
        }
        if self.object_refs > 0 {
            s.push_str(&format!(
                "{} S3 object notifications not followed (replay reads local files only; give the objects themselves)\n",
                self.object_refs
            ));
        }
        let d = &self.detector;
        if d.correlation_alerts + d.correlation_updates + d.late_dropped + d.suppressed + d.evictions > 0 {
            s.push_str(&format!(
                "windows: {} correlation findings ({} updates), {} late events dropped, {} keys evicted, {} matches suppressed\n",
                d.correlation_alerts, d.correlation_updates, d.late_dropped, d.evictions, d.suppressed
            ));
        }
        if self.invalid_findings > 0 {
            s.push_str(&format!("{} findings failed ASFF validation (see the log)\n", self.invalid_findings));
        }
        if !self.matches.is_empty() {
            s.push_str("matches per rule:\n");
            let mut rows: Vec<_> = self.matches.iter().collect();
            rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
            for (id, (title, n)) in rows {
                s.push_str(&format!("  {n:>8}  {title}  ({id})\n"));
            }
        }
        s
    }
}

/// Errors past this many are logged at debug level only (they are all counted).
const LOGGED_ERRORS: u64 = 100;

/// Replays every input through `set`, writing findings to `out`.
pub fn replay(set: Arc<RuleSet>, opts: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplayStats> {
    let started = Instant::now();
    let inputs = expand_inputs(&opts.inputs)?;
    let total_bytes: u64 = inputs.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let bar = if opts.progress && total_bytes > (8 << 20) {
        let b = ProgressBar::new(total_bytes);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut dead_letter = match &opts.dead_letter {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create dead-letter file {}", p.display()))?,
        )),
        None => None,
    };
    let mut st = Processor {
        set: &set,
        det: Detector::new(Arc::clone(&set), opts.detector.clone()),
        scratch: set.scratch(),
        alerts: Vec::new(),
        stats: ReplayStats::default(),
        out,
        dead_letter: dead_letter.as_mut().map(|w| w as &mut dyn Write),
        opts,
        io_error: None,
    };
    for input in &inputs {
        st.stats.inputs += 1;
        let origin = input.display().to_string();
        let reader: Box<dyn Read> = if input.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(input).with_context(|| format!("cannot open {origin}"))?)
        };
        let reader = Counting { inner: reader, bar: &bar, n: 0 };
        let mut bytes = 0u64;
        decode::decode_reader(reader, &origin, &opts.decode, &mut |item| st.handle(&origin, item))
            .with_context(|| format!("cannot read {origin}"))?;
        if let Ok(m) = input.metadata() {
            bytes = m.len();
        }
        st.stats.bytes += bytes;
        if let Some(e) = st.io_error.take() {
            return Err(e).context("cannot write findings");
        }
    }
    bar.finish_and_clear();
    // End of input: decide every window still open.
    let mut alerts = Vec::new();
    st.det.flush(&mut alerts);
    for a in alerts {
        st.emit_alert(a, None);
    }
    if let Some(e) = st.io_error.take() {
        return Err(e).context("cannot write findings");
    }
    st.stats.detector = st.det.stats();
    for w in st.det.inert_suppressions() {
        tracing::warn!(field = w, "suppression on a field no rule reads never applies");
    }
    st.out.flush().context("cannot write findings")?;
    if let Some(d) = st.dead_letter.as_mut() {
        d.flush().context("cannot write the dead-letter file")?;
    }
    let mut stats = st.stats;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

struct Processor<'a> {
    set: &'a RuleSet,
    det: Detector,
    scratch: trailwatch_rules::Scratch,
    alerts: Vec<Alert>,
    stats: ReplayStats,
    out: &'a mut dyn Write,
    dead_letter: Option<&'a mut dyn Write>,
    opts: &'a ReplayOptions,
    io_error: Option<io::Error>,
}

impl Processor<'_> {
    fn handle(&mut self, origin: &str, item: Decoded<'_>) {
        match item {
            Decoded::Event(ev) => {
                self.stats.events += 1;
                *self.stats.events_by_class.entry(ev.class.service()).or_default() += 1;
                let now_ms = (self.opts.now.unix_timestamp_nanos() / 1_000_000) as i64;
                let mut alerts = std::mem::take(&mut self.alerts);
                alerts.clear();
                match self.det.process(ev.class, ev.json, now_ms, &mut self.scratch, &mut alerts) {
                    Err(e) => self.bad(origin, &ev.position, "json", &e.to_string(), Some(ev.json)),
                    Ok(()) => {
                        for a in alerts.drain(..) {
                            self.emit_alert(a, Some((ev.class, ev.json, origin, &ev.position)));
                        }
                    }
                }
                self.alerts = alerts;
            }
            Decoded::Error(e) => {
                let kind = e.kind.as_str();
                self.bad(origin, &e.position, kind, &e.message, None);
            }
            Decoded::Skipped { .. } => self.stats.skipped += 1,
            Decoded::ObjectRef(_) => self.stats.object_refs += 1,
        }
    }

    /// Turns one alert into a finding. `current` is the event being
    /// processed when the alert fired (None for windows closed at the end).
    fn emit_alert(&mut self, alert: Alert, current: Option<(EventClass, &str, &str, &Position)>) {
        match alert {
            Alert::Detection { rule, event_id, .. } => {
                let Some((class, json, origin, pos)) = current else { return };
                let set = self.set;
                let r = set.rule(rule);
                self.count_match(&r.meta.id, &r.meta.title);
                // Matches are rare: parsing the whole event here costs little.
                let event: serde_json::Value = match serde_json::from_str(json) {
                    Ok(v) => v,
                    Err(e) => return self.bad(origin, pos, "json", &e.to_string(), Some(json)),
                };
                let input = FindingInput {
                    rule: &r.meta,
                    class,
                    event: &event,
                    event_ids: event_id.into_iter().collect(),
                    correlation: None,
                    now: self.opts.now,
                };
                self.write(&input, origin, pos);
            }
            Alert::Correlation(c) => {
                let set = self.set;
                let meta = &set.correlations()[c.rule].meta;
                self.count_match(&meta.id, &meta.title);
                let (class, event) = correlation_document(&c, current.map(|(cl, j, _, _)| (cl, j)));
                let summary = findings::CorrelationSummary {
                    count: c.count,
                    window_start: ms_time(c.window_start_ms),
                    window_end: ms_time(c.window_end_ms),
                    group: c.group.clone(),
                    sample_event_ids: c.sample_event_ids.clone(),
                    dedup_key: c.dedup_key.clone(),
                };
                let input = FindingInput {
                    rule: meta,
                    class,
                    event: &event,
                    event_ids: c.sample_event_ids.clone(),
                    correlation: Some(summary),
                    now: self.opts.now,
                };
                let (origin, pos) = match current {
                    Some((_, _, o, p)) => (o.to_string(), p.clone()),
                    None => ("end of input".to_string(), Position::default()),
                };
                self.write(&input, &origin, &pos);
            }
        }
    }

    fn count_match(&mut self, id: &str, title: &str) {
        let entry = self.stats.matches.entry(id.to_string()).or_insert_with(|| (title.to_string(), 0));
        entry.1 += 1;
    }

    fn write(&mut self, input: &FindingInput<'_>, origin: &str, pos: &Position) {
        let finding = findings::build_finding(input, &self.opts.findings);
        let line = finding.to_json_line();
        if let Err(violations) = findings::validate_serialized(&finding, line.len()) {
            self.stats.invalid_findings += 1;
            let why: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            tracing::error!(rule = %input.rule.id, %origin, position = %pos, "finding failed ASFF validation: {}", why.join("; "));
            return;
        }
        self.stats.findings += 1;
        if let Err(e) = self.out.write_all(line.as_bytes()).and_then(|_| self.out.write_all(b"\n")) {
            self.io_error.get_or_insert(e);
        }
    }

    fn bad(&mut self, origin: &str, pos: &Position, kind: &'static str, reason: &str, raw: Option<&str>) {
        self.stats.bad_records += 1;
        *self.stats.bad_by_kind.entry(kind).or_default() += 1;
        if self.stats.bad_records <= LOGGED_ERRORS {
            tracing::warn!(%origin, position = %pos, kind, "bad record skipped: {reason}");
            if self.stats.bad_records == LOGGED_ERRORS {
                tracing::warn!("further bad records are logged at debug level (all are counted)");
            }
        } else {
            tracing::debug!(%origin, position = %pos, kind, "bad record skipped: {reason}");
        }
        if let Some(d) = self.dead_letter.as_mut() {
            let rec = serde_json::json!({
                "origin": origin,
                "line": pos.line,
                "byte_offset": pos.byte_offset,
                "record": pos.record,
                "kind": kind,
                "error": reason,
                "raw": raw.map(|r| truncate(r, 64 * 1024)),
            });
            if let Err(e) = writeln!(d, "{rec}") {
                self.io_error.get_or_insert(e);
            }
        }
    }
}

fn ms_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The document a correlation finding describes: its group key as nested
/// fields (so resources are typed from e.g. `userIdentity.arn`), plus the
/// account and region of the event that completed the window, if any.
fn correlation_document(c: &CorrelationAlert, current: Option<(EventClass, &str)>) -> (EventClass, serde_json::Value) {
    let mut doc = serde_json::Map::new();
    for (path, value) in &c.group {
        let parts: Vec<&str> = path.split('.').collect();
        let mut cur = &mut doc;
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur.insert((*p).to_string(), serde_json::Value::String(value.clone()));
                break;
            }
            let next = cur.entry((*p).to_string()).or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            match next {
                serde_json::Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    let mut class = EventClass::CloudTrail;
    if let Some((cl, json)) = current {
        class = cl;
        if let Ok(serde_json::Value::Object(ev)) = serde_json::from_str::<serde_json::Value>(json) {
            for k in ["recipientAccountId", "awsRegion", "account", "region"] {
                if let Some(v) = ev.get(k) {
                    doc.entry(k.to_string()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    (class, serde_json::Value::Object(doc))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Files of the inputs, directories walked recursively in name order.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for i in inputs {
        if i.as_os_str() == "-" {
            out.push(i.clone());
        } else if i.is_dir() {
            let mut files: Vec<PathBuf> = walkdir::WalkDir::new(i)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file() && !is_hidden(e.path()))
                .map(|e| e.into_path())
                .collect();
            files.sort();
            out.extend(files);
        } else if i.is_file() {
            out.push(i.clone());
        } else {
            anyhow::bail!("input {} does not exist", i.display());
        }
    }
    Ok(out)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Counts bytes read for the progress bar.
struct Counting<'b, R> {
    inner: R,
    bar: &'b ProgressBar,
    n: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        self.bar.inc(k as u64);
        Ok(k)
    }
}
