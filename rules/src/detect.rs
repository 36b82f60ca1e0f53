//! The stateful detector: detection matches, suppressions, and correlation
//! windows over event time. See `detect_design.md` next to this file for
//! exactly when windows fire and when late data is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod baseline;

use crate::doc::Event;
use crate::engine::{RuleSet, Scratch};
use crate::groups::{blob, with_pairs, Fired, Group, GroupMap, Pair, Times};
use crate::json::JsonError;
use crate::logsource::EventClass;
use crate::matcher::Cidr;
use crate::parse::fnv1a;
use crate::watermark::{PartSnap, PartitionId, PartitionState, SeenIds, Watermarks};
use crate::window::{CorrelationRule, CorrelationType};
use baseline::{BaselineSnap, Baselines};

/// Which clock windows use; also the `[windows] time_mode` config value
/// (`"event"` / `"processing"`), so there is one enum for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TimeMode {
    /// Event time (`eventTime`, EventBridge `time`) with a watermark.
    #[default]
    #[serde(rename = "event")]
    EventTime,
    /// The `now_ms` the caller passes with each event (the arrival time at
    /// trailwatch).
    #[serde(rename = "processing")]
    ProcessingTime,
}

/// An allowlist entry: matches whose event has `field` equal (case-
/// insensitively) to one of `values`, or inside one of `cidrs`, are dropped.
#[derive(Debug, Clone, Default)]
pub struct Suppression {
    pub field: String,
    pub values: Vec<String>,
    pub cidrs: Vec<Cidr>,
    /// Rule ids it applies to; empty = every rule.
    pub rule_ids: Vec<String>,
    /// Epoch ms (processing time) after which the entry no longer applies.
    pub expires_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub time_mode: TimeMode,
    pub allowed_lateness_ms: i64,
    /// Cap on group keys over all correlations; the least recently seen go.
    pub max_keys: usize,
    pub dedup_period_ms: i64,
    pub suppressions: Vec<Suppression>,
    /// A partition without events for this long (processing time passed
    /// in) stops holding the watermark back. None: never.
    pub idle_timeout_ms: Option<i64>,
    /// Event times further than this ahead of the processing time passed in
    /// move no watermark (counted). None: no bound (replays).
    pub max_future_skew_ms: Option<i64>,
    /// Bound on the event ids remembered to count a redelivered event once
    /// (about 40 bytes each); 0 turns the check off.
    pub max_event_ids: usize,
    /// Cap on combinations remembered by first_seen rules (all together);
    /// the least recently seen tenth goes when it is reached.
    pub max_baseline_entries: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            time_mode: TimeMode::EventTime,
            allowed_lateness_ms: 15 * 60 * 1000,
            max_keys: 1_000_000,
            dedup_period_ms: 3600 * 1000,
            suppressions: Vec::new(),
            idle_timeout_ms: Some(10 * 60 * 1000),
            max_future_skew_ms: None,
            max_event_ids: 1_000_000,
            max_baseline_entries: 1_000_000,
        }
    }
}

/// What the detector reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    Detection { rule: u32, event_id: Option<String>, event_time_ms: Option<i64> },
    Correlation(CorrelationAlert),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationAlert {
    /// Index into [`RuleSet::correlations`].
    pub rule: usize,
    /// Events (event_count), distinct values (value_count) or distinct rules
    /// (temporal) in the window.
    pub count: u64,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub group: Vec<(String, String)>,
    /// The first and last few contributing event ids.
    pub sample_event_ids: Vec<String>,
    /// Same rule, group and dedup period → same key (and finding Id).
    pub dedup_key: String,
    /// A repeat within the dedup period: update the finding, count is cumulative.
    pub is_update: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    pub keys: u64,
    pub evictions: u64,
    pub late_dropped: u64,
    pub missing_group_key: u64,
    pub suppressed: u64,
    pub expired_suppressions: u64,
    pub correlation_alerts: u64,
    pub correlation_updates: u64,
    pub watermark_ms: Option<i64>,
    /// Redelivered events (an event id already counted) kept out of windows.
    #[serde(default)]
    pub duplicate_events: u64,
    /// Events too far ahead of processing time to move a watermark.
    #[serde(default)]
    pub future_events: u64,
    /// Event ids forgotten over `max_event_ids`.
    #[serde(default)]
    pub event_id_evictions: u64,
    /// Combinations remembered by first_seen rules.
    #[serde(default)]
    pub baseline_entries: u64,
    /// Combinations forgotten early because of `max_baseline_entries`.
    #[serde(default)]
    pub baseline_evictions: u64,
    /// first_seen rules still in their learning period.
    #[serde(default)]
    pub baseline_learning_rules: u64,
}

impl DetectorStats {
    /// Adds another detector's counters (not its gauges: keys, watermark,
    /// baseline entries and learning rules).
    pub fn add_counters(&mut self, o: &DetectorStats) {
        self.evictions += o.evictions;
        self.late_dropped += o.late_dropped;
        self.missing_group_key += o.missing_group_key;
        self.suppressed += o.suppressed;
        self.expired_suppressions += o.expired_suppressions;
        self.correlation_alerts += o.correlation_alerts;
        self.correlation_updates += o.correlation_updates;
        self.duplicate_events += o.duplicate_events;
        self.future_events += o.future_events;
        self.event_id_evictions += o.event_id_evictions;
        self.baseline_evictions += o.baseline_evictions;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is not valid: {0}")]
    Invalid(String),
    #[error("snapshot version {0} is not supported (this build reads version {SNAPSHOT_VERSION})")]
    Version(u32),
    #[error("snapshot was taken with other correlation rules ({0}); it cannot continue these windows")]
    Rules(String),
}

pub const SNAPSHOT_VERSION: u32 = 3;

/// The running state (see `groups.rs` for how a group is stored).
#[derive(Debug, Clone, Default)]
struct State {
    groups: Vec<GroupMap>,
    wm: Watermarks,
    /// Ids of counted events (redeliveries count once).
    seen: SeenIds,
    stats: DetectorStats,
    /// Non-monotone windows waiting for the watermark, per correlation:
    /// (close time, key). Decided in (close time, correlation, key) order.
    closes: Vec<BinaryHeap<Reverse<(i64, u64)>>>,
    since_expiry: u32,
    /// first_seen memory (`baseline.rs`).
    baselines: Baselines,
}

/// The snapshot format (version 3): plain JSON, independent of the
/// in-memory encoding. Version 2 had one `max_time` instead of partitions,
/// watermark and event ids.
#[derive(Serialize, Deserialize)]
struct StateSnap {
    version: u32,
    /// Ids of the correlations, to refuse a snapshot of other rules.
    rules: Vec<String>,
    groups: Vec<Vec<GroupSnap>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_time: Option<i64>,
    #[serde(default)]
    partitions: Vec<PartSnap>,
    #[serde(default)]
    watermark: Option<i64>,
    /// (event time, id hash) of counted events still ahead of the watermark.
    #[serde(default)]
    event_ids: Vec<(i64, u64)>,
    stats: DetectorStats,
    /// first_seen memory per correlation (absent in snapshots without any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    baselines: Vec<Option<BaselineSnap>>,
}

#[derive(Serialize, Deserialize)]
struct GroupSnap {
    key: u64,
    last_seen: i64,
    /// (event time ms, aux) sorted by time.
    times: Vec<(i64, u64)>,
    /// Display values: kept only for correlations decided at window close.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<String>,
    first_ids: Vec<String>,
    last_ids: Vec<String>,
    /// (spent until, dedup bucket, dedup count) once the group has fired.
    fired: Option<(i64, i64, u64)>,
}

/// What [`Detector::screen`] found in one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screened {
    /// Some detection rule matched (suppressions not applied yet).
    pub matched: bool,
    /// `eventTime`, else EventBridge `time`, if it parses.
    pub event_time_ms: Option<i64>,
}

/// Evaluates events and keeps correlation windows.
pub struct Detector {
    set: Arc<RuleSet>,
    cfg: DetectorConfig,
    supp_fields: Vec<Option<u32>>,
    state: State,
    matches: Vec<u32>,
    /// Reused per event: distinct value hashes for value_count.
    aux_buf: Vec<u64>,
}

/// At most this many values of one event count towards a value_count
/// window (bounds the work a huge array can cause).
const MAX_VALUES_PER_EVENT: usize = 1024;

/// Epoch ms of an RFC 3339 time (`2024-07-31T13:06:24Z`, fractions and
/// offsets allowed).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    // Digits only (`str::parse` would take a sign), no allocation: this runs per event.
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i];
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if *c == b'+' { 1 } else { -1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + se - offset_s) * 1000 + ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn group_hash(values: &[&str]) -> u64 {
    let mut buf = Vec::with_capacity(64);
    for v in values {
        buf.extend_from_slice(v.as_bytes());
        buf.push(0);
    }
    fnv1a(&buf)
}

impl Detector {
    pub fn new(set: Arc<RuleSet>, cfg: DetectorConfig) -> Self {
        let supp_fields = cfg.suppressions.iter().map(|s| set.fields().get(&s.field)).collect();
        let n = set.correlations().len();
        let state = State {
            groups: vec![GroupMap::default(); n],
            closes: vec![BinaryHeap::new(); n],
            wm: Self::watermarks(&cfg),
            seen: SeenIds::new(cfg.max_event_ids),
            baselines: Baselines::new(&set),
            ..State::default()
        };
        Detector { set, cfg, supp_fields, state, matches: Vec::new(), aux_buf: Vec::new() }
    }

    pub fn rule_set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Suppression entries whose field no rule set reads (pass the field in
    /// `CompileOptions::extra_fields`): they can never apply.
    pub fn inert_suppressions(&self) -> Vec<&str> {
        self.cfg
            .suppressions
            .iter()
            .zip(&self.supp_fields)
            .filter(|(_, f)| f.is_none())
            .map(|(s, _)| s.field.as_str())
            .collect()
    }

    fn watermarks(cfg: &DetectorConfig) -> Watermarks {
        match cfg.time_mode {
            TimeMode::EventTime => {
                Watermarks::new(cfg.allowed_lateness_ms, cfg.idle_timeout_ms, cfg.max_future_skew_ms)
            }
            TimeMode::ProcessingTime => Watermarks::new(0, None, None),
        }
    }

    fn watermark(&self) -> Option<i64> {
        self.state.wm.get()
    }

    /// The partition named `name` (a shard id, an account+region, a file),
    /// registered if new. From its registration it holds the combined
    /// watermark back until it has events, idles or is closed.
    pub fn partition(&mut self, name: &str) -> PartitionId {
        self.state.wm.partition(name)
    }

    /// The partition has ended (a closed shard read to its end, a file read
    /// to its end): it stops holding the watermark back. An event of it
    /// later opens it again.
    pub fn close_partition(&mut self, p: PartitionId, out: &mut Vec<Alert>) {
        self.state.wm.close(p);
        let set = Arc::clone(&self.set);
        self.close_due(&set, false, out);
    }

    /// The watermark does not advance before processing time `until_ms`
    /// (e.g. until redelivered queue messages have come back).
    pub fn hold_watermark_until(&mut self, until_ms: i64) {
        self.state.wm.hold_until(until_ms);
    }

    /// Every partition and where it stands.
    pub fn partitions(&self) -> Vec<PartitionState> {
        self.state.wm.states()
    }

    /// Each partition that dropped late events: its name and how many (since
    /// start), without copying the partition list.
    pub fn late_drops(&self) -> impl Iterator<Item = (&str, u64)> {
        self.state.wm.late_drops()
    }

    /// Names of the partitions whose first too-far-future event came since
    /// the last call (to log once per partition).
    pub fn take_future_partitions(&mut self) -> Vec<String> {
        self.state.wm.take_future()
    }

    /// Evaluates one event of the default partition (named ``).
    pub fn process(
        &mut self,
        class: EventClass,
        json: &str,
        now_ms: i64,
        scratch: &mut Scratch,
        out: &mut Vec<Alert>,
    ) -> Result<(), JsonError> {
        let p = self.partition("");
        self.process_in(p, class, json, now_ms, scratch, out)
    }

    /// Evaluates one event of partition `p`; pushes detections and fired
    /// correlations. `now_ms` is the processing time.
    pub fn process_in(
        &mut self,
        p: PartitionId,
        class: EventClass,
        json: &str,
        now_ms: i64,
        scratch: &mut Scratch,
        out: &mut Vec<Alert>,
    ) -> Result<(), JsonError> {
        self.matches.clear();
        let set = Arc::clone(&self.set);
        let ev = set.eval(class, json, scratch, &mut self.matches)?;
        let event_time = set.event_time(&ev).and_then(parse_rfc3339_ms);
        let t = self.time_of(event_time, now_ms);
        let late_before = self.state.stats.late_dropped;
        let event_id = set.event_id(&ev);
        // Decided at the first window this event would count in.
        let mut duplicate: Option<bool> = None;
        let matches = std::mem::take(&mut self.matches);
        let mut aux_buf = std::mem::take(&mut self.aux_buf);
        for &m in &matches {
            let rule = set.rule(m);
            if self.suppressed(&rule.meta.id, &ev, now_ms) {
                self.state.stats.suppressed += 1;
                continue;
            }
            if set.emits(m) {
                out.push(Alert::Detection {
                    rule: m,
                    event_id: event_id.map(str::to_string),
                    event_time_ms: event_time,
                });
            }
            for &(ci, pos) in set.detection_consumers(m) {
                let dup = *duplicate.get_or_insert_with(|| match event_id {
                    Some(id) if !id.is_empty() => !self.state.seen.insert(fnv1a(id.as_bytes()), t),
                    _ => false,
                });
                if dup {
                    continue;
                }
                let c = &set.correlations()[ci];
                let mut vals: Vec<&str> = Vec::with_capacity(c.group_fields[pos].len());
                let mut missing = false;
                for f in &c.group_fields[pos] {
                    match ev.first(*f) {
                        Some(v) => vals.push(v),
                        None => missing = true,
                    }
                }
                if missing {
                    self.state.stats.missing_group_key += 1;
                    continue;
                }
                let aux = match c.kind {
                    CorrelationType::ValueCount => {
                        // Every distinct value of the field counts, also when
                        // one event carries several (the image digests of one
                        // BatchDeleteImage call), as detections match any element.
                        let Some(f) = c.value_fields[pos] else {
                            continue;
                        };
                        aux_buf.clear();
                        for v in ev.texts(f).take(MAX_VALUES_PER_EVENT) {
                            let h = fnv1a(v.to_lowercase().as_bytes());
                            if !aux_buf.contains(&h) {
                                aux_buf.push(h);
                            }
                        }
                        let Some((&first, rest)) = aux_buf.split_first() else {
                            continue;
                        };
                        let id = event_id.unwrap_or("");
                        self.observe(&set, ci, t, &vals, first, id, out);
                        for &h in rest {
                            self.observe(&set, ci, t, &vals, h, "", out);
                        }
                        continue;
                    }
                    CorrelationType::FirstSeen => {
                        let key = group_hash(&vals);
                        let id = event_id.unwrap_or("");
                        let (cfg, st) = (&self.cfg, &mut self.state);
                        if let Some(a) = st.baselines.observe(c, ci, t, key, &vals, id, cfg, &mut st.stats) {
                            if set.correlation_emits(ci) {
                                out.push(Alert::Correlation(a));
                            }
                        }
                        continue;
                    }
                    CorrelationType::Temporal | CorrelationType::TemporalOrdered => pos as u64,
                    CorrelationType::EventCount => 0,
                };
                self.observe(&set, ci, t, &vals, aux, event_id.unwrap_or(""), out);
            }
        }
        self.matches = matches;
        self.aux_buf = aux_buf;
        if duplicate == Some(true) {
            self.state.stats.duplicate_events += 1;
        }
        let late = self.state.stats.late_dropped - late_before;
        if late > 0 {
            self.state.wm.add_late(p, late);
        }
        self.after_event(&set, p, t, now_ms, out);
        Ok(())
    }

    /// The detection rules the last event given to [`Detector::process_in`]
    /// matched (suppressed ones included), in rule order.
    pub fn last_matches(&self) -> &[u32] {
        &self.matches
    }

    /// The time windows place an event at.
    fn time_of(&self, event_time: Option<i64>, now_ms: i64) -> i64 {
        match self.cfg.time_mode {
            TimeMode::EventTime => event_time.unwrap_or(now_ms),
            TimeMode::ProcessingTime => now_ms,
        }
    }

    /// What every event does after its matches: moves its partition's
    /// watermark and decides the windows that closed.
    fn after_event(&mut self, set: &RuleSet, p: PartitionId, t: i64, now_ms: i64, out: &mut Vec<Alert>) {
        match self.cfg.time_mode {
            TimeMode::EventTime => {
                self.state.wm.event(p, t, now_ms);
            }
            TimeMode::ProcessingTime => self.state.wm.processing(now_ms),
        }
        self.close_due(set, false, out);
        self.state.since_expiry += 1;
        if self.state.since_expiry >= 4096 {
            self.expire();
        }
    }

    /// Evaluates an event's detection rules without the detector's state
    /// (pure: any thread, with its own scratch). An event that matched no
    /// rule can then be given to [`Detector::process_unmatched`] instead of
    /// [`Detector::process_in`], with the same effect and no second parse;
    /// one that matched goes through `process_in` as usual.
    pub fn screen(
        set: &RuleSet,
        class: EventClass,
        json: &str,
        scratch: &mut Scratch,
        matches: &mut Vec<u32>,
    ) -> Result<Screened, JsonError> {
        matches.clear();
        let ev = set.eval(class, json, scratch, matches)?;
        Ok(Screened { matched: !matches.is_empty(), event_time_ms: set.event_time(&ev).and_then(parse_rfc3339_ms) })
    }

    /// An event of partition `p` that [`Detector::screen`] found matching
    /// no rule: exactly what `process_in` does for it (its time moves the
    /// partition's watermark; windows that closed are decided).
    pub fn process_unmatched(&mut self, p: PartitionId, event_time_ms: Option<i64>, now_ms: i64, out: &mut Vec<Alert>) {
        let set = Arc::clone(&self.set);
        let t = self.time_of(event_time_ms, now_ms);
        self.after_event(&set, p, t, now_ms, out);
    }

    /// Moves processing time forward without an event (idle streams).
    /// Idle partitions stop holding the watermark back.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Alert>) {
        match self.cfg.time_mode {
            TimeMode::EventTime => self.state.wm.tick(now_ms),
            TimeMode::ProcessingTime => self.state.wm.processing(now_ms),
        }
        let set = Arc::clone(&self.set);
        self.close_due(&set, false, out);
        self.expire();
    }

    /// End of input: decides every open window as if time moved past it.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        let set = Arc::clone(&self.set);
        self.close_due(&set, true, out);
    }

    pub fn stats(&self) -> DetectorStats {
        let mut s = self.state.stats.clone();
        s.keys = self.state.groups.iter().map(|g| g.len() as u64).sum();
        s.watermark_ms = self.watermark();
        s.future_events = self.state.wm.future_events;
        s.event_id_evictions = self.state.seen.evicted;
        s.baseline_entries = self.state.baselines.len() as u64;
        s.baseline_learning_rules = self.state.baselines.learning() as u64;
        s
    }

    /// The whole window state, versioned (JSON).
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = StateSnap {
            version: SNAPSHOT_VERSION,
            rules: self.rule_ids(),
            groups: self
                .state
                .groups
                .iter()
                .map(|m| {
                    m.iter()
                        .map(|g| {
                            let ids = blob::ids(&g.blob);
                            let first = ids.len().min(usize::from(g.blob.first().copied().unwrap_or(0)));
                            GroupSnap {
                                key: g.key,
                                last_seen: g.last_seen,
                                times: g.times.to_pairs(),
                                values: blob::values(&g.blob),
                                first_ids: ids[..first].to_vec(),
                                last_ids: ids[first..].to_vec(),
                                fired: g.fired.as_ref().map(|f| (f.until, f.dedup_bucket, f.dedup_count)),
                            }
                        })
                        .collect()
                })
                .collect(),
            max_time: None,
            partitions: self.state.wm.to_snap(),
            watermark: self.state.wm.get(),
            event_ids: self.state.seen.to_pairs(),
            stats: self.stats_for_snapshot(),
            baselines: self.state.baselines.snapshot(),
        };
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    fn rule_ids(&self) -> Vec<String> {
        self.set.correlations().iter().map(|c| c.meta.id.clone()).collect()
    }

    fn stats_for_snapshot(&self) -> DetectorStats {
        let mut s = self.state.stats.clone();
        s.future_events = self.state.wm.future_events;
        s.event_id_evictions = self.state.seen.evicted;
        s.baseline_entries = self.state.baselines.len() as u64;
        s.baseline_learning_rules = self.state.baselines.learning() as u64;
        s
    }

    /// Restores a snapshot. Ok(Some(note)): restored, with something the
    /// operator should know (a version 2 snapshot: one watermark, no
    /// partitions or event ids; windows continue).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<Option<String>, SnapshotError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        if head.version != SNAPSHOT_VERSION && head.version != 2 {
            return Err(SnapshotError::Version(head.version));
        }
        let snap: StateSnap = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let want = self.rule_ids();
        if snap.rules != want || snap.groups.len() != want.len() {
            return Err(SnapshotError::Rules(format!("snapshot has {:?}, rules have {:?}", snap.rules, want)));
        }
        let baselines = Baselines::restore(&self.set, snap.baselines).map_err(SnapshotError::Invalid)?;
        let mut note = None;
        let mut wm = Self::watermarks(&self.cfg);
        let mut seen = SeenIds::new(self.cfg.max_event_ids);
        if head.version == 2 {
            // One global watermark: kept as the floor; partitions start anew.
            let lateness = if self.cfg.time_mode == TimeMode::EventTime { self.cfg.allowed_lateness_ms } else { 0 };
            wm.restore(Vec::new(), snap.max_time.map(|m| m - lateness));
            note = Some(
                "window snapshot of version 2 restored: per-partition watermarks and event ids start empty".to_string(),
            );
        } else {
            wm.restore(snap.partitions, snap.watermark);
            seen.restore(&snap.event_ids);
        }
        wm.future_events = snap.stats.future_events;
        seen.evicted = snap.stats.event_id_evictions;
        let mut st = State {
            wm,
            seen,
            stats: snap.stats,
            closes: vec![BinaryHeap::new(); want.len()],
            baselines,
            ..State::default()
        };
        for (ci, groups) in snap.groups.into_iter().enumerate() {
            let c = &self.set.correlations()[ci];
            let mut map = GroupMap::default();
            for gs in groups {
                if map.index_of(gs.key).is_some()
                    || gs.first_ids.len() > blob::SAMPLE.into()
                    || gs.last_ids.len() > blob::SAMPLE.into()
                {
                    return Err(SnapshotError::Invalid(format!(
                        "group {} of correlation {} is malformed",
                        gs.key, c.meta.id
                    )));
                }
                let mut times = gs.times;
                times.sort_by_key(|p| p.0);
                let vals: Vec<&str> = gs.values.iter().map(String::as_str).collect();
                let mut g = Group::new(gs.key, gs.last_seen, false, (!vals.is_empty()).then_some(&vals[..]));
                g.times = Times::from_pairs(&times);
                for id in gs.first_ids.iter().chain(&gs.last_ids) {
                    blob::push_id(&mut g.blob, id);
                }
                g.fired = gs
                    .fired
                    .map(|(until, dedup_bucket, dedup_count)| Box::new(Fired { until, dedup_bucket, dedup_count }));
                // Rebuild the queue of windows waiting to close.
                if !c.condition.is_monotone() {
                    if let Some(t0) = g.times.first_time() {
                        st.closes[ci].push(Reverse((t0 + c.timespan_ms, gs.key)));
                    }
                }
                map.insert_new(g);
            }
            st.groups.push(map);
        }
        self.state = st;
        Ok(note)
    }

    /// Restores the union of several snapshots of the same rules: the window
    /// states of Kinesis shards that merged into one. Their groups are
    /// disjoint in the normal case (each key hashed to one parent); a group in
    /// more than one (a state inherited by both children of an earlier split)
    /// is taken from the snapshot that saw it last, which holds every event
    /// of it since the split. Partitions, event ids and first_seen memories
    /// are united; the watermark is the lowest (an event a parent would still
    /// have counted is not late); counters are added up. One snapshot:
    /// exactly [`Detector::restore`].
    pub fn restore_merged(&mut self, snapshots: &[&[u8]]) -> Result<Option<String>, SnapshotError> {
        let Some((first, rest)) = snapshots.split_first() else { return Ok(None) };
        if rest.is_empty() {
            return self.restore(first);
        }
        let parse = |b: &[u8]| -> Result<StateSnap, SnapshotError> {
            let s: StateSnap = serde_json::from_slice(b).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
            if s.version != SNAPSHOT_VERSION {
                return Err(SnapshotError::Version(s.version));
            }
            Ok(s)
        };
        let mut all = parse(first)?;
        for b in rest {
            let s = parse(b)?;
            if s.rules != all.rules || s.groups.len() != all.groups.len() {
                return Err(SnapshotError::Rules(format!("merged snapshots of {:?} and {:?}", all.rules, s.rules)));
            }
            for (mine, theirs) in all.groups.iter_mut().zip(s.groups) {
                let mut by_key: HashMap<u64, usize> = mine.iter().enumerate().map(|(i, g)| (g.key, i)).collect();
                for g in theirs {
                    match by_key.get(&g.key) {
                        Some(&i) if mine[i].last_seen >= g.last_seen => {}
                        Some(&i) => mine[i] = g,
                        None => {
                            by_key.insert(g.key, mine.len());
                            mine.push(g);
                        }
                    }
                }
            }
            for p in s.partitions {
                match all.partitions.iter_mut().find(|q| q.name == p.name) {
                    Some(q) => {
                        q.max_time = q.max_time.max(p.max_time);
                        q.closed |= p.closed;
                    }
                    None => all.partitions.push(p),
                }
            }
            all.watermark = match (all.watermark, s.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            all.event_ids.extend(s.event_ids);
            all.event_ids.sort_unstable();
            all.event_ids.dedup();
            all.baselines = match (std::mem::take(&mut all.baselines), s.baselines) {
                (a, b) if b.is_empty() => a,
                (a, b) if a.is_empty() => b,
                (a, b) if a.len() == b.len() => a
                    .into_iter()
                    .zip(b)
                    .map(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) => Some(x.union(y)),
                        (x, y) => x.or(y),
                    })
                    .collect(),
                (a, b) => {
                    return Err(SnapshotError::Invalid(format!("{} and {} first_seen memories", a.len(), b.len())))
                }
            };
            all.stats.add_counters(&s.stats);
        }
        let bytes = serde_json::to_vec(&all).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        self.restore(&bytes)
    }

    fn suppressed(&mut self, rule_id: &str, ev: &Event<'_>, now_ms: i64) -> bool {
        for (i, s) in self.cfg.suppressions.iter().enumerate() {
            let Some(f) = self.supp_fields[i] else {
                continue;
            };
            if !s.rule_ids.is_empty() && !s.rule_ids.iter().any(|r| r == rule_id) {
                continue;
            }
            if s.expires_ms.is_some_and(|e| now_ms > e) {
                self.state.stats.expired_suppressions += 1;
                continue;
            }
            for v in ev.texts(f) {
                if s.values.iter().any(|x| x.eq_ignore_ascii_case(v)) {
                    return true;
                }
                if !s.cidrs.is_empty() {
                    if let Ok(ip) = v.trim().parse() {
                        if s.cidrs.iter().any(|c| c.contains(&ip)) {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        set: &RuleSet,
        ci: usize,
        t: i64,
        vals: &[&str],
        aux: u64,
        event_id: &str,
        out: &mut Vec<Alert>,
    ) {
        if self.cfg.time_mode == TimeMode::EventTime {
            if let Some(w) = self.watermark() {
                if t < w {
                    self.state.stats.late_dropped += 1;
                    return;
                }
            }
        }
        let c = &set.correlations()[ci];
        let key = group_hash(vals);
        let monotone = c.condition.is_monotone();
        let idx = match self.state.groups[ci].index_of(key) {
            Some(i) => i,
            None => {
                let total: usize = self.state.groups.iter().map(GroupMap::len).sum();
                if total >= self.cfg.max_keys {
                    self.evict();
                }
                // Monotone windows fire on an arriving event, which carries
                // the group values; others keep them for when they close.
                let keep = (!monotone).then_some(vals);
                let wide = c.kind == CorrelationType::ValueCount;
                self.state.groups[ci].insert_new(Group::new(key, t, wide, keep))
            }
        };
        let g = self.state.groups[ci].at_mut(idx);
        if g.fired.as_ref().is_some_and(|f| t <= f.until) {
            return;
        }
        let at = g.times.insert(t, aux);
        g.last_seen = g.last_seen.max(t);
        if !event_id.is_empty() {
            blob::push_id(&mut g.blob, event_id);
        }
        if !monotone {
            if at == 0 {
                let close = t + c.timespan_ms;
                self.state.closes[ci].push(Reverse((close, key)));
            }
            return;
        }
        let due = with_pairs!(&g.times, v => earliest_due(v, t, c));
        if let Some((start, end, n)) = due {
            self.fire(set, ci, key, start, end, n, Some(vals), out);
            return;
        }
        // Drop what no future window (within lateness) can use.
        if let Some(w) = self.watermark() {
            let g = self.state.groups[ci].at_mut(idx);
            let cut = g.times.count_lt(w - c.timespan_ms);
            if cut > 0 {
                g.times.drain_front(cut);
            }
        }
    }

    /// Reports a window of group `key`; `vals` are its group values when the
    /// caller has them (monotone windows), else they come from the group.
    #[allow(clippy::too_many_arguments)]
    fn fire(
        &mut self,
        set: &RuleSet,
        ci: usize,
        key: u64,
        start: i64,
        end: i64,
        n: u64,
        vals: Option<&[&str]>,
        out: &mut Vec<Alert>,
    ) {
        let c = &set.correlations()[ci];
        let period = self.cfg.dedup_period_ms.max(1);
        let Some(g) = self.state.groups[ci].get_mut(key) else {
            return;
        };
        let bucket = start.div_euclid(period);
        let f =
            g.fired.get_or_insert_with(|| Box::new(Fired { until: i64::MIN, dedup_bucket: i64::MIN, dedup_count: 0 }));
        let is_update = f.dedup_bucket == bucket;
        if is_update {
            f.dedup_count += n;
        } else {
            f.dedup_bucket = bucket;
            f.dedup_count = n;
        }
        // The window is spent: its events cannot fire again.
        f.until = end;
        let count = f.dedup_count;
        let values: Vec<String> = match vals {
            Some(v) => v.iter().map(|s| s.to_string()).collect(),
            None => blob::values(&g.blob),
        };
        let alert = CorrelationAlert {
            rule: ci,
            count,
            window_start_ms: start,
            window_end_ms: end,
            group: c.group_by.iter().cloned().zip(values.iter().cloned()).collect(),
            sample_event_ids: blob::ids(&g.blob),
            dedup_key: format!("{}|{}|{}", c.meta.id, values.join("\u{1f}"), bucket),
            is_update,
        };
        let cut = g.times.count_le(end);
        g.times.drain_front(cut);
        blob::clear_ids(&mut g.blob);
        if is_update {
            self.state.stats.correlation_updates += 1;
        } else {
            self.state.stats.correlation_alerts += 1;
        }
        // Chained correlations see this alert as an event at the window end.
        let consumers: Vec<(usize, usize)> = set.correlation_consumers(ci).to_vec();
        if set.correlation_emits(ci) {
            out.push(Alert::Correlation(alert.clone()));
        }
        if is_update {
            return;
        }
        for (cj, pos) in consumers {
            let parent = &set.correlations()[cj];
            let mut vals = Vec::new();
            for (gi, _) in parent.group_fields[pos].iter().enumerate() {
                let name = &parent.group_by[gi];
                match alert.group.iter().find(|(k, _)| k == name) {
                    Some((_, v)) => vals.push(v.clone()),
                    None => {
                        self.state.stats.missing_group_key += 1;
                        vals.clear();
                        break;
                    }
                }
            }
            if vals.len() != parent.group_by.len() {
                continue;
            }
            let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
            let aux = match parent.kind {
                CorrelationType::Temporal | CorrelationType::TemporalOrdered => pos as u64,
                CorrelationType::ValueCount => fnv1a(alert.dedup_key.as_bytes()),
                // Refused at compile time (first_seen counts detections only).
                CorrelationType::EventCount | CorrelationType::FirstSeen => 0,
            };
            self.observe(set, cj, alert.window_end_ms, &refs, aux, &alert.dedup_key.clone(), out);
        }
    }

    /// Decides non-monotone windows whose end the watermark passed.
    fn close_due(&mut self, set: &RuleSet, all: bool, out: &mut Vec<Alert>) {
        let wm = if all { i64::MAX } else { self.watermark().unwrap_or(i64::MIN) };
        loop {
            let next = (self.state.closes.iter().enumerate())
                .filter_map(|(ci, h)| h.peek().map(|Reverse((close, key))| (*close, ci, *key)))
                .min();
            let Some((close, ci, key)) = next else { break };
            if close > wm {
                break;
            }
            self.state.closes[ci].pop();
            let c = &set.correlations()[ci];
            let span = c.timespan_ms;
            let Some(g) = self.state.groups[ci].get(key) else {
                continue;
            };
            let Some(s) = g.times.first_time() else {
                continue;
            };
            if s + span != close {
                continue; // stale entry: the window start moved
            }
            let e_idx = g.times.count_le(s + span);
            let n = with_pairs!(&g.times, v => measure(c.kind, &v[..e_idx], c.rules.len()));
            let end = g.times.time_at(e_idx - 1);
            if c.condition.holds(n) {
                self.fire(set, ci, key, s, end, n, None, out);
            } else if let Some(g) = self.state.groups[ci].get_mut(key) {
                g.times.drain_front(e_idx);
                blob::clear_ids(&mut g.blob);
            }
            if let Some(g) = self.state.groups[ci].get(key) {
                if let Some(s2) = g.times.first_time() {
                    self.state.closes[ci].push(Reverse((s2 + span, key)));
                }
            }
        }
        if all {
            // Monotone windows that never met their condition just end.
            for groups in &mut self.state.groups {
                groups.clear();
            }
        }
    }

    /// Forgets groups with nothing left that could still count.
    fn expire(&mut self) {
        self.state.since_expiry = 0;
        let Some(w) = self.watermark() else { return };
        let set = Arc::clone(&self.set);
        // A copy of an event behind the watermark is late anyway; in
        // processing time a copy gets a new time, so ids last a timespan.
        let keep_from = match self.cfg.time_mode {
            TimeMode::EventTime => w,
            TimeMode::ProcessingTime => {
                w.saturating_sub(set.correlations().iter().map(|c| c.timespan_ms).max().unwrap_or(0))
            }
        };
        self.state.seen.prune_before(keep_from);
        for (ci, groups) in self.state.groups.iter_mut().enumerate() {
            let span = set.correlations()[ci].timespan_ms;
            groups.retain_seen_since(w - span);
        }
    }

    /// Over the cap: drops the least recently seen tenth of the keys.
    fn evict(&mut self) {
        let mut all: Vec<(i64, usize, u64)> = Vec::new();
        for (ci, groups) in self.state.groups.iter().enumerate() {
            all.extend(groups.iter().map(|g| (g.last_seen, ci, g.key)));
        }
        let n = (self.cfg.max_keys / 10).max(1).min(all.len());
        if n == 0 {
            return;
        }
        if n < all.len() {
            all.select_nth_unstable(n - 1);
        }
        for &(_, ci, k) in &all[..n] {
            self.state.groups[ci].remove(k);
        }
        self.state.stats.evictions += n as u64;
    }
}

/// For a monotone condition: the earliest window `[s, s + span]` containing
/// the new event at `t` whose count satisfies it → (start, end, count).
fn earliest_due<P: Pair>(times: &[P], t: i64, c: &CorrelationRule) -> Option<(i64, i64, u64)> {
    let span = c.timespan_ms;
    let lo = times.partition_point(|p| p.t() < t - span);
    let hi = times.partition_point(|p| p.t() <= t);
    let window = |s_idx: usize| {
        let s = times[s_idx].t();
        let e_idx = times.partition_point(|p| p.t() <= s + span);
        let win = &times[s_idx..e_idx];
        let n = measure(c.kind, win, c.rules.len());
        c.condition.holds(n).then(|| (s, win.last().map_or(s, |w| w.t()), n))
    };
    if hi == times.len() {
        // The new event is the newest: every candidate window reaches the
        // end, so windows starting later hold a subset of the events of
        // earlier ones and count no more; only the earliest can hold first.
        return if lo < hi { window(lo) } else { None };
    }
    (lo..hi).find_map(window)
}

/// The count a window's events give for a correlation type.
fn measure<P: Pair>(kind: CorrelationType, win: &[P], nrules: usize) -> u64 {
    match kind {
        CorrelationType::EventCount | CorrelationType::FirstSeen => win.len() as u64,
        CorrelationType::ValueCount | CorrelationType::Temporal => {
            let mut seen: Vec<u64> = win.iter().map(|p| p.aux()).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len() as u64
        }
        CorrelationType::TemporalOrdered => {
            // Longest prefix of the rule order matched at strictly increasing times.
            let mut next = 0u64;
            let mut last_t = i64::MIN;
            for p in win {
                if p.aux() == next && p.t() > last_t {
                    next += 1;
                    last_t = p.t();
                    if next as usize == nrules {
                        break;
                    }
                }
            }
            next
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("2024-07-31T13:06:24Z"), Some(1_722_431_184_000));
        assert_eq!(parse_rfc3339_ms("2024-07-31T13:06:24.5Z"), Some(1_722_431_184_500));
        assert_eq!(parse_rfc3339_ms("2024-07-31T15:06:24+02:00"), Some(1_722_431_184_000));
        assert_eq!(parse_rfc3339_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_rfc3339_ms("Dec 3, 2021, 6:02:30 PM"), None);
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
        // Days that do not exist, signs where digits belong, an empty fraction.
        assert_eq!(parse_rfc3339_ms("2024-02-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("1900-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-04-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-+1-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-01-01T00:00:00.Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
    }

    #[test]
    fn measures() {
        let w: [(i64, u64); 4] = [(1, 0), (2, 1), (3, 0), (4, 2)];
        assert_eq!(measure(CorrelationType::EventCount, &w, 3), 4);
        assert_eq!(measure(CorrelationType::ValueCount, &w, 3), 3);
        assert_eq!(measure(CorrelationType::TemporalOrdered, &w, 3), 3);
        assert_eq!(measure(CorrelationType::TemporalOrdered, &[(1i64, 1u64), (2, 0)], 2), 1);
        assert_eq!(measure(CorrelationType::TemporalOrdered, &[(1i64, 0u64), (1, 1)], 2), 1, "ties are not ordered");
    }
}
