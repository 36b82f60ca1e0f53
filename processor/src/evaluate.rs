//! The evaluation core shared by `trailwatch replay` and the live service:
//! decoded events → rules and correlation windows → validated ASFF findings,
//! and malformed records → dead letters. Synchronous and single-threaded (it
//! owns the [`Detector`]); callers feed it events and take what it emits.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use trailwatch_rules::{Alert, CorrelationAlert, Detector, DetectorConfig, DetectorStats, EventClass, RuleSet};

use crate::decode::Position;
use crate::findings::{self, AsffFinding, FindingContext, FindingInput};
use crate::metrics;

/// A validated finding and what the pipeline needs to route and measure it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub asff: AsffFinding,
    /// Event time of the triggering event (window end for correlations).
    pub event_time_ms: Option<i64>,
    /// Processing time the triggering input reached trailwatch.
    pub ingest_ms: Option<i64>,
    /// A repeat of a correlation within its dedup period (same Id, higher count).
    pub is_update: bool,
}

/// A record that could not be decoded or evaluated, with where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub origin: String,
    pub position: Position,
    pub kind: &'static str,
    pub error: String,
    /// The raw text, cut to 64 KiB.
    pub raw: Option<String>,
}

impl DeadLetter {
    /// One JSON line for the dead-letter file.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "origin": self.origin,
            "line": self.position.line,
            "byte_offset": self.position.byte_offset,
            "record": self.position.record,
            "kind": self.kind,
            "error": self.error,
            "raw": self.raw,
        })
        .to_string()
    }
}

/// What evaluation produces.
#[derive(Debug)]
pub enum Emitted {
    Finding(Box<Finding>),
    DeadLetter(DeadLetter),
}

/// Counters over everything evaluated.
#[derive(Debug, Default, Clone)]
pub struct EvalStats {
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
}

/// Errors past this many are logged at debug level only (they are all counted).
const LOGGED_ERRORS: u64 = 100;

/// The event being evaluated, for findings and dead letters.
#[derive(Clone, Copy)]
pub struct EventRef<'a> {
    pub class: EventClass,
    pub json: &'a str,
    pub origin: &'a str,
    pub position: &'a Position,
    pub ingest_ms: Option<i64>,
}

pub struct Evaluator {
    set: Arc<RuleSet>,
    det: Detector,
    scratch: trailwatch_rules::Scratch,
    alerts: Vec<Alert>,
    ctx: FindingContext,
    stats: EvalStats,
    /// Matches per rule index, published to metrics in [`Evaluator::publish_metrics`].
    rule_matches: Vec<u64>,
    corr_matches: Vec<u64>,
    published: DetectorStats,
}

impl Evaluator {
    pub fn new(set: Arc<RuleSet>, detector: DetectorConfig, ctx: FindingContext) -> Self {
        let det = Detector::new(Arc::clone(&set), detector);
        for w in det.inert_suppressions() {
            tracing::warn!(field = w, "suppression on a field no rule reads never applies");
        }
        let scratch = set.scratch();
        let rule_matches = vec![0; set.rules().len()];
        let corr_matches = vec![0; set.correlations().len()];
        Evaluator {
            set,
            det,
            scratch,
            alerts: Vec::new(),
            ctx,
            stats: EvalStats::default(),
            rule_matches,
            corr_matches,
            published: DetectorStats::default(),
        }
    }

    pub fn rule_set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    pub fn detector(&mut self) -> &mut Detector {
        &mut self.det
    }

    pub fn stats(&self) -> EvalStats {
        let mut s = self.stats.clone();
        s.detector = self.det.stats();
        s
    }

    /// Evaluates one event. `now` is the processing time (UpdatedAt).
    pub fn event(&mut self, ev: EventRef<'_>, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        self.stats.events += 1;
        *self.stats.events_by_class.entry(ev.class.service()).or_default() += 1;
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut alerts = std::mem::take(&mut self.alerts);
        alerts.clear();
        match self.det.process(ev.class, ev.json, now_ms, &mut self.scratch, &mut alerts) {
            Err(e) => self.bad(ev.origin, ev.position, "json", &e.to_string(), Some(ev.json), out),
            Ok(()) => {
                for a in alerts.drain(..) {
                    self.alert(a, Some(ev), now, out);
                }
            }
        }
        self.alerts = alerts;
    }

    /// A record the decoder could not read (counted, logged, dead-lettered).
    pub fn bad_record(
        &mut self,
        origin: &str,
        pos: &Position,
        kind: &'static str,
        message: &str,
        raw: Option<&str>,
        out: &mut dyn FnMut(Emitted),
    ) {
        self.bad(origin, pos, kind, message, raw, out);
    }

    pub fn skipped(&mut self, n: u64) {
        self.stats.skipped += n;
    }

    pub fn object_ref(&mut self) {
        self.stats.object_refs += 1;
    }

    /// Moves processing time forward without an event (idle streams).
    pub fn advance(&mut self, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut alerts = Vec::new();
        self.det.advance(now_ms, &mut alerts);
        for a in alerts {
            self.alert(a, None, now, out);
        }
    }

    /// End of input: decides every window still open.
    pub fn flush(&mut self, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        let mut alerts = Vec::new();
        self.det.flush(&mut alerts);
        for a in alerts {
            self.alert(a, None, now, out);
        }
    }

    /// Adds what changed since the last call to the Prometheus metrics.
    pub fn publish_metrics(&mut self) {
        let m = metrics::get();
        // Counted by the engine per rule (a plain add in its loop), added
        // here with the matches: once a second, not per event.
        let set = &self.set;
        self.scratch.drain_evaluations(|rule, n| {
            m.rule_evaluations.with_label_values(&[set.rule(rule).meta.id.as_str()]).inc_by(n);
        });
        for (i, n) in self.rule_matches.iter_mut().enumerate() {
            if *n > 0 {
                let meta = &self.set.rule(i as u32).meta;
                m.rule_matches.with_label_values(&[meta.id.as_str(), meta.level.as_str()]).inc_by(*n);
                *n = 0;
            }
        }
        for (i, n) in self.corr_matches.iter_mut().enumerate() {
            if *n > 0 {
                let meta = &self.set.correlations()[i].meta;
                m.rule_matches.with_label_values(&[meta.id.as_str(), meta.level.as_str()]).inc_by(*n);
                *n = 0;
            }
        }
        let s = self.det.stats();
        let p = &self.published;
        m.window_keys.set(s.keys as i64);
        m.window_evictions.inc_by(s.evictions.saturating_sub(p.evictions));
        m.window_late_events.inc_by(s.late_dropped.saturating_sub(p.late_dropped));
        m.window_missing_group_key.inc_by(s.missing_group_key.saturating_sub(p.missing_group_key));
        m.suppressed.inc_by(s.suppressed.saturating_sub(p.suppressed));
        if let Some(w) = s.watermark_ms {
            m.window_watermark.set(w as f64 / 1000.0);
        }
        self.published = s;
    }

    /// Turns one alert into a finding. `current` is the event being
    /// processed when the alert fired (None for windows closed without one).
    fn alert(
        &mut self,
        alert: Alert,
        current: Option<EventRef<'_>>,
        now: OffsetDateTime,
        out: &mut dyn FnMut(Emitted),
    ) {
        match alert {
            Alert::Detection { rule, event_id, event_time_ms } => {
                let Some(ev) = current else { return };
                let set = Arc::clone(&self.set);
                let r = set.rule(rule);
                self.count_match(&r.meta.id, &r.meta.title);
                self.rule_matches[rule as usize] += 1;
                // Matches are rare: parsing the whole event here costs little.
                let event: serde_json::Value = match serde_json::from_str(ev.json) {
                    Ok(v) => v,
                    Err(e) => return self.bad(ev.origin, ev.position, "json", &e.to_string(), Some(ev.json), out),
                };
                let input = FindingInput {
                    rule: &r.meta,
                    class: ev.class,
                    event: &event,
                    event_ids: event_id.into_iter().collect(),
                    correlation: None,
                    now,
                };
                self.emit(&input, ev.origin, ev.position, event_time_ms, ev.ingest_ms, false, out);
            }
            Alert::Correlation(c) => {
                let set = Arc::clone(&self.set);
                let meta = &set.correlations()[c.rule].meta;
                self.count_match(&meta.id, &meta.title);
                self.corr_matches[c.rule] += 1;
                let (class, event) = correlation_document(&c, current.map(|e| (e.class, e.json)));
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
                    now,
                };
                let end_of_input = Position::default();
                let (origin, pos, ingest) = match current {
                    Some(e) => (e.origin, e.position, e.ingest_ms),
                    None => ("window close", &end_of_input, None),
                };
                self.emit(&input, origin, pos, Some(c.window_end_ms), ingest, c.is_update, out);
            }
        }
    }

    fn count_match(&mut self, id: &str, title: &str) {
        let entry = self.stats.matches.entry(id.to_string()).or_insert_with(|| (title.to_string(), 0));
        entry.1 += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        input: &FindingInput<'_>,
        origin: &str,
        pos: &Position,
        event_time_ms: Option<i64>,
        ingest_ms: Option<i64>,
        is_update: bool,
        out: &mut dyn FnMut(Emitted),
    ) {
        let asff = findings::build_finding(input, &self.ctx);
        if let Err(violations) = findings::validate(&asff) {
            self.stats.invalid_findings += 1;
            metrics::get().findings_invalid.inc();
            let why: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            tracing::error!(rule = %input.rule.id, %origin, position = %pos, "finding failed ASFF validation: {}", why.join("; "));
            return;
        }
        self.stats.findings += 1;
        out(Emitted::Finding(Box::new(Finding { asff, event_time_ms, ingest_ms, is_update })));
    }

    fn bad(
        &mut self,
        origin: &str,
        pos: &Position,
        kind: &'static str,
        reason: &str,
        raw: Option<&str>,
        out: &mut dyn FnMut(Emitted),
    ) {
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
        out(Emitted::DeadLetter(DeadLetter {
            origin: origin.to_string(),
            position: pos.clone(),
            kind,
            error: reason.to_string(),
            raw: raw.map(|r| truncate(r, 64 * 1024).to_string()),
        }));
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
