//! The evaluation core shared by `trailwatch replay` and the live service:
//! decoded events → rules and correlation windows → validated ASFF findings,
//! and malformed records → dead letters. Synchronous and single-threaded (it
//! owns the [`Detector`]); callers feed it events and take what it emits.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use trailwatch_rules::{
    Alert, CorrelationAlert, Detector, DetectorConfig, DetectorStats, EventClass, PartitionId, RuleSet,
};

use crate::decode::Position;
use crate::findings::{self, Finding, FindingContext, FindingInput};
use crate::metrics;
use crate::sinks::dead_letter::DeadLetter;

/// What evaluation produces.
#[derive(Debug)]
pub enum Emitted {
    Finding(Box<Finding>),
    /// A rule match as one JSON line, instead of a finding (see
    /// [`Evaluator::matches_only`]).
    Match(String),
    DeadLetter(DeadLetter),
    /// A Security Hub custom action asking for a response (`findings::request`).
    Request(Box<crate::findings::request::ResponseRequest>),
}

/// One line of [`Evaluator::matches_only`] output.
#[derive(serde::Serialize)]
struct MatchLine<'a> {
    rule_id: &'a str,
    rule_title: &'a str,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<String>,
    /// Correlations: the count, the window, the group and sample event ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<BTreeMap<&'a str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_ids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    update: bool,
}

impl MatchLine<'_> {
    fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
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
    /// Match lines emitted instead of findings ([`Evaluator::matches_only`]).
    pub match_lines: u64,
    /// rule id → (title, matches)
    pub matches: BTreeMap<String, (String, u64)>,
    pub detector: DetectorStats,
}

impl EvalStats {
    /// The summary lines that `run` and `replay` share, after each one's own
    /// headline: bad records by kind, windows, invalid findings, matches per rule.
    pub fn summary_details(&self) -> String {
        let mut s = String::new();
        if !self.bad_by_kind.is_empty() {
            let kinds: Vec<String> = self.bad_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            s.push_str(&format!("bad records by kind: {}\n", kinds.join(", ")));
        }
        // Always printed: late drops are what a backtest must see.
        let d = &self.detector;
        s.push_str(&format!(
            "windows: {} correlation findings ({} updates), {} late events dropped, {} keys evicted, {} matches suppressed\n",
            d.correlation_alerts, d.correlation_updates, d.late_dropped, d.evictions, d.suppressed
        ));
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
    /// Matches per rule index since the start, for [`EvalStats::matches`].
    rule_totals: Vec<u64>,
    corr_totals: Vec<u64>,
    published: DetectorStats,
    matches_only: bool,
    det_cfg: DetectorConfig,
}

impl Evaluator {
    pub fn new(set: Arc<RuleSet>, detector: DetectorConfig, ctx: FindingContext) -> Self {
        let det = Detector::new(Arc::clone(&set), detector.clone());
        for w in det.inert_suppressions() {
            tracing::warn!(field = w, "suppression on a field no rule reads never applies");
        }
        let scratch = set.scratch();
        let rule_matches = vec![0; set.rules().len()];
        let corr_matches = vec![0; set.correlations().len()];
        let (rule_totals, corr_totals) = (rule_matches.clone(), corr_matches.clone());
        Evaluator {
            set,
            det,
            scratch,
            alerts: Vec::new(),
            ctx,
            stats: EvalStats::default(),
            rule_matches,
            corr_matches,
            rule_totals,
            corr_totals,
            published: DetectorStats::default(),
            matches_only: false,
            det_cfg: detector,
        }
    }

    /// Swaps in the same rules compiled with other placeholder values (the
    /// org context changed): the windows carry over through a snapshot, the
    /// per-rule counters stay valid because the rules keep their order. Rare
    /// (a new account), so the hot path keeps its compiled matchers.
    pub fn replace_rules(&mut self, set: Arc<RuleSet>) -> Result<(), String> {
        let same = |a: &RuleSet, b: &RuleSet| {
            a.rules().len() == b.rules().len()
                && a.correlations().len() == b.correlations().len()
                && a.rules().iter().zip(b.rules()).all(|(x, y)| x.meta.id == y.meta.id)
                && a.correlations().iter().zip(b.correlations()).all(|(x, y)| x.meta.id == y.meta.id)
        };
        if !same(&self.set, &set) {
            return Err("the new rule set has other rules".to_string());
        }
        let snap = self.det.snapshot();
        let mut det = Detector::new(Arc::clone(&set), self.det_cfg.clone());
        det.restore(&snap).map_err(|e| e.to_string())?;
        self.scratch = set.scratch();
        self.det = det;
        self.set = set;
        Ok(())
    }

    /// Emit each match as a short JSON line ([`Emitted::Match`]: rule, level,
    /// event id and time; for correlations the count, window and group)
    /// instead of building a finding: for backtesting rules over archives,
    /// where which events fire matters and findings are not wanted.
    pub fn matches_only(mut self, on: bool) -> Self {
        self.matches_only = on;
        self
    }

    pub fn rule_set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    pub fn detector(&mut self) -> &mut Detector {
        &mut self.det
    }

    /// A detector with empty windows for the current rules (the window
    /// state of one leased shard).
    pub fn new_detector(&self) -> Detector {
        Detector::new(Arc::clone(&self.set), self.det_cfg.clone())
    }

    /// Exchanges the window state: a leased shard's batch is evaluated with
    /// its own detector swapped in (matching, findings and counters stay).
    pub fn swap_detector(&mut self, other: &mut Detector) {
        std::mem::swap(&mut self.det, other);
    }

    /// The detection rules the last event evaluated matched (the
    /// re-keying stage puts matches of some on another stream).
    pub fn last_matches(&self) -> &[u32] {
        self.det.last_matches()
    }

    /// The first value of each of `fields` in the last event evaluated
    /// (`json` must be its text); None when one is missing.
    pub fn read_fields<'a>(&'a self, json: &'a str, fields: &[u32]) -> Option<Vec<&'a str>> {
        self.set.read_fields(json, &self.scratch, fields)
    }

    /// The event time (epoch ms; CloudTrail `eventTime`, else EventBridge
    /// `time`) of the last event evaluated (`json` must be its text).
    pub fn last_event_time(&self, json: &str) -> Option<i64> {
        let m = &self.set.meta_fields;
        [m.event_time, m.eb_time]
            .iter()
            .find_map(|f| self.set.read_fields(json, &self.scratch, std::slice::from_ref(f)))
            .and_then(|v| v.into_iter().next())
            .and_then(trailwatch_rules::detect::parse_rfc3339_ms)
    }

    /// The id (CloudTrail `eventID`, else EventBridge `id`) of the last
    /// event evaluated (`json` must be its text).
    pub fn last_event_id<'a>(&'a self, json: &'a str) -> Option<&'a str> {
        let m = &self.set.meta_fields;
        [m.event_id, m.eb_id]
            .iter()
            .find_map(|f| self.set.read_fields(json, &self.scratch, std::slice::from_ref(f)))
            .and_then(|v| v.into_iter().next())
    }

    pub fn stats(&self) -> EvalStats {
        let mut s = self.stats.clone();
        s.detector = self.det.stats();
        let rules = self.set.rules().iter().map(|r| &r.meta).zip(&self.rule_totals);
        let corrs = self.set.correlations().iter().map(|c| &c.meta).zip(&self.corr_totals);
        for (meta, &n) in rules.chain(corrs).filter(|(_, &n)| n > 0) {
            s.matches.insert(meta.id.clone(), (meta.title.clone(), n));
        }
        s
    }

    /// Evaluates one event of the default partition. `now` is the
    /// processing time (UpdatedAt).
    pub fn event(&mut self, ev: EventRef<'_>, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        let p = self.det.partition("");
        self.event_in(p, ev, now, out);
    }

    /// The watermark partition named `name` (a shard, an account+region, a
    /// file; see the rules crate's `detect_design.md`), registered if new.
    pub fn partition(&mut self, name: &str) -> PartitionId {
        self.det.partition(name)
    }

    /// The partition has ended (a Kinesis shard read to SHARD_END).
    pub fn close_partition(&mut self, p: PartitionId, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        let mut alerts = Vec::new();
        self.det.close_partition(p, &mut alerts);
        for a in alerts {
            self.alert(a, None, &mut None, now, out);
        }
    }

    /// Evaluates one event of partition `p`.
    pub fn event_in(&mut self, p: PartitionId, ev: EventRef<'_>, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        self.stats.events += 1;
        *self.stats.events_by_class.entry(ev.class.service()).or_default() += 1;
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut alerts = std::mem::take(&mut self.alerts);
        alerts.clear();
        let res = self.det.process_in(p, ev.class, ev.json, now_ms, &mut self.scratch, &mut alerts);
        self.log_future(&ev);
        Self::respond_request(&ev, out);
        match res {
            Err(e) => self.bad_record(ev.origin, ev.position, "json", &e.to_string(), Some(ev.json), out),
            Ok(()) => {
                // Parsed once for all the alerts of this event, and only if any.
                let mut parsed = None;
                for a in alerts.drain(..) {
                    self.alert(a, Some(ev), &mut parsed, now, out);
                }
            }
        }
        self.alerts = alerts;
    }

    /// An event of partition `p` that [`Detector::screen`] (run on another
    /// thread) found matching no rule: counted and timed as [`Self::event_in`]
    /// would, without parsing it again. Windows closed by its time are decided.
    pub fn event_unmatched(
        &mut self,
        p: PartitionId,
        ev: EventRef<'_>,
        event_time_ms: Option<i64>,
        now: OffsetDateTime,
        out: &mut dyn FnMut(Emitted),
    ) {
        self.stats.events += 1;
        *self.stats.events_by_class.entry(ev.class.service()).or_default() += 1;
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut alerts = std::mem::take(&mut self.alerts);
        alerts.clear();
        self.det.process_unmatched(p, event_time_ms, now_ms, &mut alerts);
        self.log_future(&ev);
        Self::respond_request(&ev, out);
        for a in alerts.drain(..) {
            self.alert(a, Some(ev), &mut None, now, out);
        }
        self.alerts = alerts;
    }

    /// A Security Hub custom-action event (trailwatch: revoke sessions, ...)
    /// is a response request, whether or not a rule matched it.
    fn respond_request(ev: &EventRef<'_>, out: &mut dyn FnMut(Emitted)) {
        if ev.class != EventClass::CloudTrail {
            if let Some(r) = crate::findings::request::parse(ev.json) {
                out(Emitted::Request(Box::new(r)));
            }
        }
    }

    fn log_future(&mut self, ev: &EventRef<'_>) {
        for name in self.det.take_future_partitions() {
            tracing::warn!(
                partition = %name,
                origin = %ev.origin,
                position = %ev.position,
                "event time further ahead of processing time than windows.max_future_skew: it moves no watermark (logged once per partition, all are counted)"
            );
        }
    }

    /// After a panic caught while evaluating one event (`panics::guard`): the
    /// per-event scratch may be half-written, so it starts afresh. (Why the
    /// windows are kept is in `service/design.md`, "Panics".)
    pub fn recover_from_panic(&mut self) {
        self.scratch = self.set.scratch();
        self.alerts.clear();
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
            self.alert(a, None, &mut None, now, out);
        }
    }

    /// End of input: decides every window still open.
    pub fn flush(&mut self, now: OffsetDateTime, out: &mut dyn FnMut(Emitted)) {
        let mut alerts = Vec::new();
        self.det.flush(&mut alerts);
        for a in alerts {
            self.alert(a, None, &mut None, now, out);
        }
    }

    /// Adds what changed since the last call to the Prometheus metrics.
    pub fn publish_metrics(&mut self) {
        self.publish_metrics_with(&mut [])
    }

    /// [`Evaluator::publish_metrics`], with the window metrics covering the
    /// given detectors too (leased shards' windows, each with the stats it
    /// last published).
    pub fn publish_metrics_with(&mut self, shards: &mut [(&Detector, &mut DetectorStats)]) {
        self.publish_rule_metrics(true);
        self.publish_windows(shards);
    }

    /// Only the rule counters of [`Evaluator::publish_metrics`] (matches,
    /// and evaluations if `evaluations`): an evaluator whose windows are not
    /// the service's main ones, or that evaluates events counted elsewhere.
    pub fn publish_rule_metrics(&mut self, evaluations: bool) {
        let m = metrics::get();
        // Counted by the engine per rule (a plain add in its loop), added
        // here with the matches: once a second, not per event.
        let set = &self.set;
        self.scratch.drain_evaluations(|rule, n| {
            if evaluations {
                m.rule_evaluations.with_label_values(&[set.rule(rule).meta.id.as_str()]).inc_by(n);
            }
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
    }

    fn publish_windows(&mut self, shards: &mut [(&Detector, &mut DetectorStats)]) {
        let m = metrics::get();
        let s = self.det.stats();
        publish_window_counters(&s, &self.published);
        let (mut keys, mut baseline) = (s.keys, s.baseline_entries);
        let mut watermark = s.watermark_ms;
        // Leased shards' detectors: their counters since adoption (a restored
        // snapshot's counters were published by the previous owner), their
        // keys added up, the watermark of the slowest.
        for (det, published) in shards.iter_mut() {
            let t = det.stats();
            publish_window_counters(&t, published);
            keys += t.keys;
            baseline += t.baseline_entries;
            watermark = match (watermark, t.watermark_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            **published = t;
        }
        m.window_keys.set(keys as i64);
        m.baseline_entries.set(baseline as i64);
        if let Some(w) = watermark {
            m.window_watermark.set(w as f64 / 1000.0);
        }
        self.published = s;
    }

    /// Turns one alert into a finding. `current` is the event being
    /// processed when the alert fired (None for windows closed without one),
    /// `parsed` its JSON once a detection needed it (and whether whole).
    fn alert(
        &mut self,
        alert: Alert,
        current: Option<EventRef<'_>>,
        parsed: &mut Option<(serde_json::Value, bool)>,
        now: OffsetDateTime,
        out: &mut dyn FnMut(Emitted),
    ) {
        match alert {
            Alert::Detection { rule, event_id, event_time_ms } => {
                let Some(ev) = current else { return };
                let set = Arc::clone(&self.set);
                let r = set.rule(rule);
                self.rule_totals[rule as usize] += 1;
                self.rule_matches[rule as usize] += 1;
                if self.matches_only {
                    let line = MatchLine {
                        rule_id: &r.meta.id,
                        rule_title: &r.meta.title,
                        level: r.meta.level.as_str(),
                        event_id: event_id.as_deref(),
                        event_time: event_time_ms.map(|t| findings::rfc3339(ms_time(t))),
                        count: None,
                        window_start: None,
                        window_end: None,
                        group: None,
                        event_ids: None,
                        update: false,
                    };
                    self.stats.match_lines += 1;
                    return out(Emitted::Match(line.to_line()));
                }
                // A title template may read any field: it needs the whole event.
                let full = r.meta.finding.is_some();
                if parsed.as_ref().is_none_or(|(_, whole)| full && !whole) {
                    // Only the fields a finding reads, unless the finding Id
                    // must hash the whole event (no event id) or a template
                    // reads it.
                    let whole = full || event_id.is_none();
                    let res = match whole {
                        false => findings::parse_event(ev.json),
                        true => serde_json::from_str(ev.json),
                    };
                    match res {
                        Ok(v) => *parsed = Some((v, whole)),
                        Err(e) => {
                            return self.bad_record(ev.origin, ev.position, "json", &e.to_string(), Some(ev.json), out)
                        }
                    }
                }
                let Some((event, _)) = parsed.as_ref() else { return };
                let input = FindingInput {
                    rule: &r.meta,
                    class: ev.class,
                    event,
                    event_ids: event_id.into_iter().collect(),
                    correlation: None,
                    now,
                };
                self.emit(&input, ev.origin, ev.position, event_time_ms, ev.ingest_ms, false, out);
            }
            Alert::Correlation(c) => {
                let set = Arc::clone(&self.set);
                let meta = &set.correlations()[c.rule].meta;
                self.corr_totals[c.rule] += 1;
                self.corr_matches[c.rule] += 1;
                if self.matches_only {
                    let line = MatchLine {
                        rule_id: &meta.id,
                        rule_title: &meta.title,
                        level: meta.level.as_str(),
                        event_id: None,
                        event_time: None,
                        count: Some(c.count),
                        window_start: Some(findings::rfc3339(ms_time(c.window_start_ms))),
                        window_end: Some(findings::rfc3339(ms_time(c.window_end_ms))),
                        group: Some(c.group.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()),
                        event_ids: Some(&c.sample_event_ids),
                        update: c.is_update,
                    };
                    self.stats.match_lines += 1;
                    return out(Emitted::Match(line.to_line()));
                }
                let (class, event) = correlation_document(&c, current.map(|e| (e.class, e.json)));
                let summary = findings::CorrelationSummary {
                    count: c.count,
                    window_start: ms_time(c.window_start_ms),
                    window_end: ms_time(c.window_end_ms),
                    group: c.group.clone(),
                    sample_event_ids: c.sample_event_ids.clone(),
                    dedup_key: c.dedup_key.clone(),
                    timespan_ms: set.correlations()[c.rule].timespan_ms,
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
        match Finding::build(input, &self.ctx, event_time_ms, ingest_ms, is_update) {
            Ok(f) => {
                self.stats.findings += 1;
                out(Emitted::Finding(Box::new(f)));
            }
            Err(invalid) => {
                self.stats.invalid_findings += 1;
                metrics::get().findings_invalid.inc();
                let why: Vec<String> = invalid.violations.iter().map(|v| v.to_string()).collect();
                tracing::error!(rule = %input.rule.id, %origin, position = %pos, "finding failed ASFF validation: {}", why.join("; "));
                // Dead-lettered with the reason, like a bad record, so it is kept
                // (and synced) before the input is acknowledged.
                let error = format!("rule {}: finding {}: {}", input.rule.id, invalid.id, why.join("; "));
                out(Emitted::DeadLetter(DeadLetter::new(origin, pos, "invalid_finding", error, Some(&invalid.json))));
            }
        }
    }

    /// A record that could not be read or evaluated (counted, logged, dead-lettered).
    pub fn bad_record(
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
        out(Emitted::DeadLetter(DeadLetter::new(origin, pos, kind, reason, raw)));
    }
}

fn ms_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The document a correlation finding describes: its group key as nested
/// fields (so resources are typed from e.g. `userIdentity.arn`), plus the
/// account and region of the event that completed the window, if any.
fn correlation_document(c: &CorrelationAlert, current: Option<(EventClass, &str)>) -> (EventClass, serde_json::Value) {
    let mut doc = trailwatch_rules::template::group_document(&c.group);
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

/// The window counters' increase since `p` (gauges are set by the caller).
fn publish_window_counters(s: &DetectorStats, p: &DetectorStats) {
    let m = metrics::get();
    m.window_evictions.inc_by(s.evictions.saturating_sub(p.evictions));
    m.baseline_evictions.inc_by(s.baseline_evictions.saturating_sub(p.baseline_evictions));
    m.window_late_events.inc_by(s.late_dropped.saturating_sub(p.late_dropped));
    m.window_duplicate_events.inc_by(s.duplicate_events.saturating_sub(p.duplicate_events));
    m.window_future_events.inc_by(s.future_events.saturating_sub(p.future_events));
    m.window_missing_group_key.inc_by(s.missing_group_key.saturating_sub(p.missing_group_key));
    m.suppressed.inc_by(s.suppressed.saturating_sub(p.suppressed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_rules::RuleFile;

    /// Issue 15: a finding that fails validation was only logged and
    /// counted; it is dead-lettered now, with the reason and the finding.
    #[test]
    fn an_invalid_finding_is_dead_lettered_with_the_reason() {
        let rule = r#"
title: bad types
id: 6f1d1b0e-0000-4000-8000-0000000000bb
level: high
asff_types: ["Not A Namespace/x"]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: ListUsers}
    condition: sel
"#;
        let (set, _) = crate::ruleset::compile(
            &[RuleFile { name: "bad.yml".into(), text: rule.into() }],
            &trailwatch_rules::CompileOptions::default(),
        )
        .unwrap();
        let mut eval = Evaluator::new(Arc::new(set), DetectorConfig::default(), FindingContext::default());
        let json = r#"{"eventVersion":"1.08","eventID":"e1","eventTime":"2026-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","awsRegion":"us-east-1","recipientAccountId":"111122223333","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u","accountId":"111122223333"}}"#;
        let pos = Position { line: 7, ..Default::default() };
        let mut out = Vec::new();
        let ev = EventRef { class: EventClass::CloudTrail, json, origin: "f.ndjson", position: &pos, ingest_ms: None };
        eval.event(ev, OffsetDateTime::UNIX_EPOCH, &mut |e| out.push(e));
        assert_eq!(out.len(), 1, "{out:?}");
        let Emitted::DeadLetter(d) = &out[0] else { panic!("not a dead letter: {out:?}") };
        assert_eq!(d.kind, "invalid_finding");
        assert_eq!(d.origin, "f.ndjson");
        assert_eq!(d.position.line, 7);
        assert!(d.error.contains("Types") && d.error.contains("Not A Namespace/x"), "{}", d.error);
        assert!(d.raw.as_deref().unwrap().contains("\"GeneratorId\":\"6f1d1b0e-0000-4000-8000-0000000000bb\""));
        assert_eq!(eval.stats().invalid_findings, 1);
        assert_eq!(eval.stats().findings, 0);
    }
}
