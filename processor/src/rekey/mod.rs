//! The re-keying stage (issue 19, item 3): correlations whose `group-by`
//! does not follow the stream's partition key, under `coordination = "leases"`.
//!
//! A leased shard keeps its own windows, so a correlation grouped by account
//! or source IP on a principal-keyed stream would have its windows split
//! across shards (and instances). Instead, the rule matches that feed such a
//! correlation — not raw events — are put on a second Kinesis stream, keyed
//! by the correlation and its group-by values, so one group's matches all go
//! to one shard of it. That stream is an ordinary leased Kinesis source
//! (named by `[rekey] source`): instances lease its shards too, and on it
//! only the re-keyed correlations run, one detector per unit (a correlation,
//! or a chain of them grouped alike) per shard, whose window state moves with
//! the shard's lease like the rest.
//!
//! - **Record**: the matching event's JSON with one member added at its end,
//!   `"trailwatchRekey": {v, correlation, match, from, rules, group}` (the
//!   correlation id, a deterministic match id, the source partition, the
//!   matched rule ids and the group-by values). The whole event travels: the
//!   correlation re-evaluates it exactly as a single instance would (its
//!   condition, value_count field, suppressions, finding templates, the
//!   account and region of the finding). One record per event, unit and
//!   group it feeds; partition key = hash(unit id, group values).
//! - **Acknowledged end to end**: records go out with the findings of their
//!   batch through the sink stage (`Publisher`, PutRecords, refused entries
//!   put again with backoff); a commit marker flushes them before the
//!   source's checkpoint is written, so a checkpoint never runs ahead of an
//!   unpublished match.
//! - **No double counting**: a principal shard re-read after a crash puts the
//!   same matches again. Each unit has its own detector, so the detector's
//!   bounded redelivered-event filter (event ids kept while not behind the
//!   watermark, in the snapshot: `detect_design.md`) is keyed by (unit,
//!   event id), which is what the match id says.
//! - **Order**: a window that fired spends its events, so counts depend on
//!   arrival order; matches of one group come from many principal shards,
//!   read by different instances. A record waits `reorder` (processing time)
//!   on its shard, then the due ones are counted in event-time order (held
//!   records are in the shard's snapshot: the checkpoint is past them).
//! - **Time**: on the re-keyed stream an event's watermark partition is the
//!   principal shard it came from (`from`), so a lagging principal shard holds
//!   a re-keyed window as it does in one engine (until it idles).

mod publish;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use trailwatch_rules::{Detector, RuleSet};

use crate::evaluate::{Emitted, Evaluator, EventRef};
use crate::findings::FindingContext;
use crate::sinks::dead_letter::DeadLetter;
pub use publish::{PublishError, Publisher};

/// The member added to a re-published event.
pub const HEADER: &str = "trailwatchRekey";
/// Kinesis takes records of at most 1 MiB (data + partition key).
pub const MAX_RECORD_BYTES: usize = 1_000_000;

/// `[rekey]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RekeyConfig {
    /// The `[sources.<name>]` (type kinesis, coordination = "leases") that
    /// reads the re-keyed stream; matches are put on its stream. Unset: no
    /// re-keying, and leases refuse correlations that do not group by the
    /// partition key.
    pub source: Option<String>,
    /// How long a re-keyed match waits (processing time) before it is
    /// counted, so that matches of one group that different instances put at
    /// about the same time are counted in event-time order (a window that
    /// fired spends its events: order matters). Findings of re-keyed
    /// correlations come this much later.
    #[serde(with = "crate::timetext::duration_text")]
    pub reorder: std::time::Duration,
}

impl Default for RekeyConfig {
    fn default() -> Self {
        RekeyConfig { source: None, reorder: std::time::Duration::from_secs(30) }
    }
}

impl RekeyConfig {
    pub fn validate(&self, sources: &BTreeMap<String, crate::sources::SourceConfig>, problems: &mut Vec<String>) {
        let Some(name) = &self.source else { return };
        match sources.get(name) {
            Some(crate::sources::SourceConfig::Kinesis(k))
                if k.coordination == crate::sources::kinesis::Coordination::Leases => {}
            Some(_) => problems.push(format!(
                "rekey.source `{name}` must be a kinesis source with coordination = \"leases\" (its shards are leased \
                 and their windows move with them)"
            )),
            None => problems.push(format!("rekey.source `{name}` is not a configured source")),
        }
        if self.reorder > std::time::Duration::from_secs(600) {
            problems.push("rekey.reorder must be at most 10m (re-keyed findings wait this long)".to_string());
        }
    }
}

/// What a re-keyed record says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub v: u32,
    /// The unit's id (its first correlation's).
    pub correlation: String,
    /// hash(correlation id, event id or text): the same for a re-read match.
    #[serde(rename = "match")]
    pub match_id: String,
    /// The principal-stream partition (`<source>/<shard>`) it came from.
    pub from: String,
    /// Ids of the matched rules that feed the correlation.
    pub rules: Vec<String>,
    /// group-by name → value.
    pub group: BTreeMap<String, String>,
    /// The event time (epoch ms), for ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
}

/// One record for the re-keyed stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition_key: String,
    pub data: Vec<u8>,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The partition key of a correlation's group: every match of one group
/// goes to one shard (Kinesis hashes the key with MD5).
pub fn partition_key(correlation: &str, values: &[&str]) -> String {
    let mut parts = vec![correlation];
    parts.extend_from_slice(values);
    format!("{}:{:016x}", short(correlation), fnv1a(&parts))
}

/// At most 64 characters of an id (keys are at most 256).
fn short(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The event JSON with the header added as its last member; None when it is
/// not a JSON object.
pub fn encode(event: &str, header: &Header) -> Option<String> {
    let body = event.trim();
    let inner = body.strip_prefix('{')?.strip_suffix('}')?;
    let h = serde_json::to_string(header).ok()?;
    let sep = if inner.trim().is_empty() { "" } else { "," };
    Some(format!("{{{inner}{sep}\"{HEADER}\":{h}}}"))
}

/// The header of a re-keyed record (its last `"trailwatchRekey":` member:
/// a quote inside a string value is escaped, so the pattern cannot come
/// from the event's own text).
pub fn decode(json: &str) -> Option<Header> {
    let pat = format!("\"{HEADER}\":");
    let at = json.rfind(&pat)? + pat.len();
    serde_json::Deserializer::from_str(&json[at..]).into_iter::<Header>().next()?.ok()
}

/// Re-keyed correlations that run together: one, or a chain (a correlation
/// that uses another; they must group by the same fields, so their matches
/// share partition keys and one detector sees them all).
#[derive(Debug)]
pub struct Unit {
    /// The id of its first correlation: what records and snapshots name.
    pub id: String,
    /// Indices in the full rule set.
    pub members: Vec<usize>,
}

/// Which correlations are re-keyed, and the rule sets each side runs.
pub struct Plan {
    /// The leased source that reads the re-keyed stream.
    pub source: Arc<str>,
    pub units: Vec<Unit>,
    /// Every rule (the set the principal side reads group values with).
    full: Arc<RuleSet>,
    /// Detection rule index → (unit, correlation in the full set, position
    /// of the rule in its `rules`).
    feeds: Vec<Vec<(usize, usize, usize)>>,
}

/// The rule sets of a plan: the principal side's and one per unit.
pub struct Sets {
    /// Every rule, without the re-keyed correlations.
    pub main: RuleSet,
    /// Per unit (plan order): only its correlations, no detection reports.
    pub rekeyed: Vec<RuleSet>,
}

impl Plan {
    /// The correlations of `set` that do not group by every one of `keys`
    /// (the partition keys of the leased principal streams). One the rule
    /// selection left out (fed nothing) needs nothing: no record goes out
    /// for it.
    pub fn needing(set: &RuleSet, keys: &[&str]) -> Vec<usize> {
        set.correlations()
            .iter()
            .enumerate()
            .filter(|&(i, _)| set.correlation_live(i))
            .filter(|(_, c)| !keys.iter().all(|k| c.group_by.iter().any(|g| g == k)))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn new(source: &str, full: Arc<RuleSet>, rekeyed: &[usize]) -> Result<(Plan, Sets), String> {
        use trailwatch_rules::window::RuleRef;
        // Units: the chains among the re-keyed correlations (union-find).
        let mut unit_of: BTreeMap<usize, usize> = rekeyed.iter().map(|&i| (i, i)).collect();
        fn root(u: &BTreeMap<usize, usize>, mut i: usize) -> usize {
            while u[&i] != i {
                i = u[&i];
            }
            i
        }
        for &i in rekeyed {
            for r in &full.correlations()[i].rules {
                if let RuleRef::Correlation(k) = r {
                    if !unit_of.contains_key(k) {
                        return Err(format!(
                            "re-keyed correlation {} uses correlation {}, which is not re-keyed",
                            full.correlations()[i].meta.id,
                            full.correlations()[*k].meta.id
                        ));
                    }
                    let (a, b) = (root(&unit_of, i), root(&unit_of, *k));
                    unit_of.insert(a.max(b), a.min(b));
                }
            }
        }
        let mut units: Vec<Unit> = Vec::new();
        let mut index: BTreeMap<usize, usize> = BTreeMap::new();
        for &i in rekeyed {
            let r = root(&unit_of, i);
            let u = *index.entry(r).or_insert_with(|| {
                units.push(Unit { id: full.correlations()[r].meta.id.clone(), members: Vec::new() });
                units.len() - 1
            });
            units[u].members.push(i);
        }
        for u in &units {
            let first = &full.correlations()[u.members[0]];
            if let Some(other) =
                u.members.iter().map(|&i| &full.correlations()[i]).find(|c| c.group_by != first.group_by)
            {
                return Err(format!(
                    "chained correlations {} and {} group by different fields: their matches cannot share a shard",
                    first.meta.id, other.meta.id
                ));
            }
        }
        let mut feeds = vec![Vec::new(); full.rules().len()];
        for (k, u) in units.iter().enumerate() {
            for &ci in &u.members {
                for (pos, rr) in full.correlations()[ci].rules.iter().enumerate() {
                    if let RuleRef::Detection(d) = rr {
                        feeds[*d as usize].push((k, ci, pos));
                    }
                }
            }
        }
        let plan = Plan { source: Arc::from(source), units, full, feeds };
        let sets = plan.sets(&plan.full)?;
        Ok((plan, sets))
    }

    /// Splits a full rule set (the same rules, maybe compiled with other
    /// org values) the way this plan does.
    pub fn sets(&self, full: &RuleSet) -> Result<Sets, String> {
        let rekeyed: Vec<usize> = self.units.iter().flat_map(|u| u.members.iter().copied()).collect();
        let keep: Vec<usize> = (0..full.correlations().len()).filter(|i| !rekeyed.contains(i)).collect();
        let main = full.with_correlations(&keep, true).map_err(|e| {
            format!("{e}: a correlation that uses a re-keyed correlation cannot run on the principal stream")
        })?;
        let rekeyed =
            self.units.iter().map(|u| full.with_correlations(&u.members, false)).collect::<Result<Vec<_>, _>>()?;
        Ok(Sets { main, rekeyed })
    }

    /// The unit a record names.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.units.iter().position(|c| c.id == id)
    }

    /// After `eval` evaluated `ev` (from partition `from`): one record per
    /// re-keyed correlation (and group) the event's matches feed. A group
    /// value missing: nothing to count (as the engine). A record over the
    /// Kinesis limit is dead-lettered.
    pub fn collect(&self, eval: &Evaluator, ev: &EventRef<'_>, from: &str, out: &mut dyn FnMut(RekeyOut)) {
        let matches = eval.last_matches();
        if matches.iter().all(|&m| self.feeds[m as usize].is_empty()) {
            return;
        }
        let mut done: Vec<(usize, String)> = Vec::new();
        for &m in matches {
            for &(k, ci, pos) in &self.feeds[m as usize] {
                let c = &self.full.correlations()[ci];
                let unit = &self.units[k].id;
                let Some(vals) = eval.read_fields(ev.json, &c.group_fields[pos]) else { continue };
                let key = partition_key(unit, &vals);
                if done.iter().any(|(dk, dkey)| *dk == k && *dkey == key) {
                    continue;
                }
                let rules: Vec<String> = matches
                    .iter()
                    .filter(|&&r| self.feeds[r as usize].iter().any(|(kk, _, _)| *kk == k))
                    .map(|&r| self.full.rule(r).meta.id.clone())
                    .collect();
                let event_key = eval.last_event_id(ev.json).unwrap_or(ev.json);
                let header = Header {
                    v: 1,
                    correlation: unit.clone(),
                    match_id: format!("{:016x}", fnv1a(&[unit, event_key])),
                    from: from.to_string(),
                    rules,
                    group: c.group_by.iter().cloned().zip(vals.iter().map(|v| v.to_string())).collect(),
                    time: eval.last_event_time(ev.json),
                };
                done.push((k, key.clone()));
                match encode(ev.json, &header) {
                    Some(data) if data.len() + key.len() <= MAX_RECORD_BYTES => {
                        out(RekeyOut::Record(Record { partition_key: key, data: data.into_bytes() }))
                    }
                    other => {
                        crate::metrics::get().rekey_failed.with_label_values(&["too_large"]).inc();
                        let why = match other {
                            Some(d) => format!("{} bytes, over the Kinesis record limit", d.len()),
                            None => "not a JSON object".to_string(),
                        };
                        tracing::warn!(origin = %ev.origin, position = %ev.position, correlation = %c.meta.id, "match not re-keyed: {why}");
                        out(RekeyOut::DeadLetter(DeadLetter {
                            origin: ev.origin.to_string(),
                            position: ev.position.clone(),
                            kind: "rekey_too_large",
                            error: format!("match for correlation {} not re-keyed: {why}", c.meta.id),
                            raw: None,
                        }))
                    }
                }
            }
        }
    }
}

/// What [`Plan::collect`] gives.
pub enum RekeyOut {
    Record(Record),
    DeadLetter(DeadLetter),
}

/// One leased shard of the re-keyed stream: a detector per correlation,
/// and the records read but not counted yet (`reorder`).
pub struct RekeyShard {
    /// The lease's tenure (as `ShardWindows`).
    pub gen: u64,
    dets: Vec<Option<Detector>>,
    held: Vec<Held>,
    pub changed: bool,
}

/// A record waiting to be counted. Kept in the shard's snapshot: the
/// checkpoint is past it, so a new owner must count it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    /// Event time (ms), or the earliest when unknown.
    t: i64,
    /// Processing time (ms) from which it may be counted.
    due: i64,
    /// Arrival order (ties of `t` keep it).
    seq: u64,
    /// `EventClass::index()`.
    class: u8,
    origin: String,
    json: String,
}

#[derive(Serialize, Deserialize)]
struct ShardSnap {
    rekey: u32,
    correlations: BTreeMap<String, Box<serde_json::value::RawValue>>,
    #[serde(default)]
    held: Vec<Held>,
}

/// The detector side: one evaluator per re-keyed correlation, and the
/// window state of each leased shard of the re-keyed stream.
pub struct RekeyStage {
    pub plan: Arc<Plan>,
    evals: Vec<Evaluator>,
    pub shards: HashMap<Arc<str>, RekeyShard>,
    reorder_ms: i64,
    seq: u64,
}

impl RekeyStage {
    pub fn new(
        plan: Arc<Plan>,
        sets: Vec<RuleSet>,
        cfg: trailwatch_rules::DetectorConfig,
        ctx: FindingContext,
        reorder: std::time::Duration,
    ) -> RekeyStage {
        let evals = sets.into_iter().map(|s| Evaluator::new(Arc::new(s), cfg.clone(), ctx.clone())).collect();
        RekeyStage { plan, evals, shards: HashMap::new(), reorder_ms: reorder.as_millis() as i64, seq: 0 }
    }

    /// A shard with empty windows.
    pub fn empty_shard(&self, gen: u64) -> RekeyShard {
        RekeyShard { gen, dets: (0..self.evals.len()).map(|_| None).collect(), held: Vec::new(), changed: true }
    }

    /// A shard restored from its lease's snapshot (JSON); a correlation the
    /// snapshot lacks, or cannot restore, starts empty (logged).
    pub fn restore_shard(&self, key: &str, gen: u64, jsons: &[&[u8]]) -> RekeyShard {
        let mut s = self.empty_shard(gen);
        // One snapshot, or a merged shard's two parents': their held records
        // and each correlation's windows are united.
        let mut per_unit: BTreeMap<usize, (String, Vec<Box<serde_json::value::RawValue>>)> = BTreeMap::new();
        for json in jsons {
            let snap: ShardSnap = match serde_json::from_slice(json) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(shard = %key, "re-keyed shard window state not restored, its windows start empty: {e}");
                    continue;
                }
            };
            s.held.extend(snap.held);
            for (id, raw) in snap.correlations {
                let Some(k) = self.plan.index_of(&id) else {
                    tracing::warn!(shard = %key, correlation = %id, "window state of a correlation no longer re-keyed dropped");
                    continue;
                };
                per_unit.entry(k).or_insert_with(|| (id, Vec::new())).1.push(raw);
            }
        }
        for (k, (id, raws)) in per_unit {
            let mut det = self.evals[k].new_detector();
            let parts: Vec<&[u8]> = raws.iter().map(|r| r.get().as_bytes()).collect();
            match det.restore_merged(&parts) {
                Ok(None) => {}
                Ok(Some(note)) => tracing::warn!(shard = %key, correlation = %id, "{note}"),
                Err(e) => {
                    tracing::warn!(shard = %key, correlation = %id, "window state not restored, it starts empty: {e}");
                    continue;
                }
            }
            s.dets[k] = Some(det);
        }
        s
    }

    /// The shard's window state (JSON), every correlation that has any.
    pub fn snapshot(&self, s: &RekeyShard) -> Vec<u8> {
        let mut correlations = BTreeMap::new();
        for (k, d) in s.dets.iter().enumerate() {
            let Some(d) = d else { continue };
            let text = String::from_utf8(d.snapshot()).unwrap_or_default();
            if let Ok(raw) = serde_json::value::RawValue::from_string(text) {
                correlations.insert(self.plan.units[k].id.clone(), raw);
            }
        }
        serde_json::to_vec(&ShardSnap { rekey: 1, correlations, held: s.held.clone() }).unwrap_or_default()
    }

    /// Takes one re-keyed record into shard `s`: checked now (an unusable
    /// one is an error, to dead-letter), counted by [`RekeyStage::release`]
    /// once `reorder` has passed.
    pub fn hold(&mut self, s: &mut RekeyShard, ev: EventRef<'_>, now: OffsetDateTime) -> Result<(), String> {
        let h = decode(ev.json).ok_or_else(|| format!("no readable `{HEADER}` member"))?;
        if self.plan.index_of(&h.correlation).is_none() {
            return Err(format!("correlation {} is not re-keyed by this instance's rules", h.correlation));
        }
        self.seq += 1;
        s.held.push(Held {
            t: h.time.unwrap_or(i64::MIN),
            due: ms(now) + self.reorder_ms,
            seq: self.seq,
            class: ev.class.index() as u8,
            origin: ev.origin.to_string(),
            json: ev.json.to_string(),
        });
        s.changed = true;
        Ok(())
    }

    /// Counts the held records that are due, in event-time order, with every
    /// held record not later than the latest of them (`all`: every one).
    /// True when it counted any.
    pub fn release(
        &mut self,
        s: &mut RekeyShard,
        now: OffsetDateTime,
        all: bool,
        out: &mut dyn FnMut(Emitted),
    ) -> bool {
        let now_ms = ms(now);
        let Some(upto) = s.held.iter().filter(|h| all || h.due <= now_ms).map(|h| h.t).max() else { return false };
        let (mut go, keep): (Vec<Held>, Vec<Held>) = s.held.drain(..).partition(|h| h.t <= upto);
        s.held = keep;
        go.sort_by_key(|h| (h.t, h.seq));
        for h in go {
            let class = trailwatch_rules::EventClass::ALL
                .get(usize::from(h.class))
                .copied()
                .unwrap_or(trailwatch_rules::EventClass::CloudTrail);
            let pos = crate::decode::Position::default();
            let ev = EventRef { class, json: &h.json, origin: &h.origin, position: &pos, ingest_ms: None };
            if let Err(why) = self.event(s, ev, now, out) {
                crate::metrics::get().rekey_failed.with_label_values(&["invalid"]).inc();
                tracing::warn!(origin = %h.origin, "re-keyed record not evaluated; dead-lettered: {why}");
                out(Emitted::DeadLetter(DeadLetter {
                    origin: h.origin.clone(),
                    position: pos,
                    kind: "rekey",
                    error: why,
                    raw: Some(h.json.chars().take(64 * 1024).collect()),
                }));
            }
        }
        s.changed = true;
        true
    }

    /// Evaluates one re-keyed record with its correlation's detector of shard `s`.
    fn event(
        &mut self,
        s: &mut RekeyShard,
        ev: EventRef<'_>,
        now: OffsetDateTime,
        out: &mut dyn FnMut(Emitted),
    ) -> Result<(), String> {
        let h = decode(ev.json).ok_or_else(|| format!("no readable `{HEADER}` member"))?;
        let k = self
            .plan
            .index_of(&h.correlation)
            .ok_or_else(|| format!("correlation {} is not re-keyed by this instance's rules", h.correlation))?;
        let eval = &mut self.evals[k];
        let det = s.dets[k].get_or_insert_with(|| eval.new_detector());
        eval.swap_detector(det);
        let p = eval.partition(&h.from);
        let caught = crate::panics::guard("evaluate", || eval.event_in(p, ev, now, out));
        if caught.is_err() {
            eval.recover_from_panic();
        }
        eval.swap_detector(det);
        s.changed = true;
        caught.map_err(|m| format!("evaluating it panicked: {m}"))
    }

    /// Counts the held records that are due, then moves processing time for
    /// every correlation of shard `s` (or, with `flush`, counts every held
    /// record and decides every open window: end of finite input). True
    /// when held records were counted.
    pub fn advance(
        &mut self,
        s: &mut RekeyShard,
        now: OffsetDateTime,
        flush: bool,
        out: &mut dyn FnMut(Emitted),
    ) -> bool {
        let released = self.release(s, now, flush, out);
        for (k, d) in s.dets.iter_mut().enumerate() {
            let Some(det) = d else { continue };
            let eval = &mut self.evals[k];
            eval.swap_detector(det);
            let r =
                crate::panics::guard("windows", || if flush { eval.flush(now, out) } else { eval.advance(now, out) });
            if let Err(message) = r {
                tracing::error!("closing re-keyed windows panicked: {message}");
                eval.recover_from_panic();
            }
            eval.swap_detector(det);
        }
        s.changed = true;
        released
    }

    /// The same rules compiled again (org context): every evaluator and
    /// shard detector takes its correlation's new set.
    pub fn replace_rules(&mut self, sets: Vec<RuleSet>) {
        for (k, set) in sets.into_iter().enumerate() {
            let set = Arc::new(set);
            let eval = &mut self.evals[k];
            if let Err(e) = eval.replace_rules(Arc::clone(&set)) {
                tracing::error!(correlation = %self.plan.units[k].id, "new rules not swapped in: {e}");
                continue;
            }
            for s in self.shards.values_mut() {
                if let Some(det) = &mut s.dets[k] {
                    eval.swap_detector(det);
                    if let Err(e) = eval.replace_rules(Arc::clone(&set)) {
                        tracing::error!("new rules not swapped in: {e}");
                    }
                    eval.swap_detector(det);
                }
            }
        }
    }

    /// Match counters of the re-keyed correlations (their window gauges
    /// are not published, and their events' rule evaluations were counted
    /// on the principal side).
    pub fn publish_metrics(&mut self) {
        for e in &mut self.evals {
            e.publish_rule_metrics(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_survives_the_round_trip_and_the_event_stays_whole() {
        let ev =
            r#"{"eventVersion":"1.08","eventID":"e1","requestParameters":{"note":"\"trailwatchRekey\":{\"v\":9}"}}"#;
        let h = Header {
            v: 1,
            correlation: "c1".into(),
            match_id: "00ff".into(),
            from: "org/shardId-000000000001".into(),
            rules: vec!["r1".into()],
            group: BTreeMap::from([("sourceIPAddress".to_string(), "198.51.100.7".to_string())]),
            time: Some(1_700_000_000_000),
        };
        let rec = encode(ev, &h).unwrap();
        assert!(rec.starts_with(r#"{"eventVersion":"1.08""#), "the first key still says CloudTrail: {rec}");
        let v: serde_json::Value = serde_json::from_str(&rec).unwrap();
        assert_eq!(v["eventID"], "e1");
        assert_eq!(v["requestParameters"]["note"], "\"trailwatchRekey\":{\"v\":9}");
        assert_eq!(decode(&rec), Some(h.clone()));
        // The event's own text cannot forge a header.
        assert_eq!(decode(ev), None);
        assert_eq!(encode("[1]", &h), None);
        assert_eq!(decode(&encode("{ }", &h).unwrap()), Some(h));
    }

    const RULES: &str = r#"
title: failed login
id: r-failed
name: failed
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: ConsoleLogin, errorMessage: Failed authentication}
  condition: sel
---
title: login
id: r-login
name: login
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: ConsoleLogin}
  condition: sel
---
title: failures
id: c-failures
name: failures
correlation:
  type: event_count
  rules: [failed]
  group-by: [sourceIPAddress]
  timespan: 10m
  condition: {gte: 3}
---
title: failures then login
id: c-then
correlation:
  type: temporal_ordered
  rules: [failures, login]
  group-by: [sourceIPAddress]
  timespan: 10m
---
title: logins per principal
id: c-principal
correlation:
  type: event_count
  rules: [login]
  group-by: [userIdentity.arn]
  timespan: 10m
  condition: {gte: 100}
"#;

    fn set(text: &str) -> Arc<RuleSet> {
        let files = [trailwatch_rules::RuleFile { name: "r.yml".into(), text: text.into() }];
        Arc::new(trailwatch_rules::RuleSet::load(&files, &Default::default()).unwrap_or_else(|e| panic!("{e}")).0)
    }

    #[test]
    fn correlations_the_selection_leaves_out_are_not_rekeyed() {
        let files = [trailwatch_rules::RuleFile { name: "r.yml".into(), text: RULES.into() }];
        let select = trailwatch_rules::RuleSelect { disabled: ["c-then".to_string()].into(), ..Default::default() };
        let opts = trailwatch_rules::CompileOptions { select, ..Default::default() };
        let full = trailwatch_rules::RuleSet::load(&files, &opts).unwrap().0;
        // `c-failures` only fed the disabled `c-then`: neither goes out.
        assert!(Plan::needing(&full, &["userIdentity.arn"]).is_empty());
        let ids = |keys: &[&str]| -> Vec<String> {
            Plan::needing(&full, keys).iter().map(|&i| full.correlations()[i].meta.id.clone()).collect()
        };
        assert_eq!(ids(&["sourceIPAddress"]), ["c-principal"]);
    }

    #[test]
    fn a_chain_is_one_unit_and_matches_go_out_once_per_unit_and_group() {
        let full = set(RULES);
        let needing = Plan::needing(&full, &["userIdentity.arn"]);
        assert_eq!(needing.len(), 2);
        let (plan, sets) = Plan::new("rekeyed", Arc::clone(&full), &needing).unwrap();
        assert_eq!(plan.units.len(), 1, "the chain runs as one");
        assert_eq!(plan.units[0].id, "c-failures");
        assert_eq!(sets.main.correlations().len(), 1);
        assert_eq!(sets.rekeyed[0].correlations().len(), 2);
        let mut eval = Evaluator::new(Arc::new(sets.main), Default::default(), Default::default());
        let json = r#"{"eventVersion":"1.08","eventID":"e1","eventTime":"2026-11-01T10:00:00Z","eventName":"ConsoleLogin","errorMessage":"Failed authentication","sourceIPAddress":"198.51.100.7","userIdentity":{"arn":"arn:aws:iam::1:user/u"}}"#;
        let pos = crate::decode::Position::default();
        let r = EventRef {
            class: trailwatch_rules::EventClass::CloudTrail,
            json,
            origin: "o",
            position: &pos,
            ingest_ms: None,
        };
        eval.event(r, OffsetDateTime::UNIX_EPOCH, &mut |_| {});
        let mut out = Vec::new();
        plan.collect(&eval, &r, "org/shardId-1", &mut |o| out.push(o));
        // Both rules of the unit matched one event: one record.
        assert_eq!(out.len(), 1);
        let RekeyOut::Record(rec) = &out[0] else { panic!("not a record") };
        assert_eq!(rec.partition_key, partition_key("c-failures", &["198.51.100.7"]));
        let h = decode(std::str::from_utf8(&rec.data).unwrap()).unwrap();
        assert_eq!(h.correlation, "c-failures");
        assert_eq!(h.rules, ["r-failed", "r-login"]);
        assert_eq!(h.from, "org/shardId-1");
        assert_eq!(h.time, Some(1_793_527_200_000));
        assert_eq!(h.group.get("sourceIPAddress").map(String::as_str), Some("198.51.100.7"));
    }

    #[test]
    fn chains_that_cannot_be_rekeyed_are_refused() {
        let full = set(&RULES.replace(
            "  rules: [failures, login]\n  group-by: [sourceIPAddress]",
            "  rules: [failures, login]\n  group-by: [recipientAccountId]",
        ));
        let needing = Plan::needing(&full, &["userIdentity.arn"]);
        let e = Plan::new("rekeyed", Arc::clone(&full), &needing).err().unwrap();
        assert!(e.contains("group by different fields"), "{e}");
        // Only the inner one re-keyed: the chain would be split.
        let inner = vec![needing[0]];
        let e = Plan::new("rekeyed", full, &inner).err().unwrap();
        assert!(e.contains("re-keyed correlation"), "{e}");
    }

    #[test]
    fn one_group_is_one_partition_key() {
        let a = partition_key("c1", &["111122223333"]);
        assert_eq!(a, partition_key("c1", &["111122223333"]));
        assert_ne!(a, partition_key("c2", &["111122223333"]));
        assert_ne!(a, partition_key("c1", &["111122223334"]));
        // Values are separated: ("ab","c") and ("a","bc") differ.
        assert_ne!(partition_key("c", &["ab", "c"]), partition_key("c", &["a", "bc"]));
        assert!(partition_key(&"x".repeat(300), &["v"]).len() <= 256);
    }
}
