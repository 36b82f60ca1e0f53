//! The detector stage: one thread that owns the rules and the correlation
//! windows. It evaluates batches in arrival order, hands findings and dead
//! letters to the sink stage, and at every commit interval sends a commit
//! marker carrying the window snapshot, the positions and the acks of every
//! batch evaluated before it (see `design.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{CommitRequest, Output};
use crate::evaluate::{Emitted, EvalStats, Evaluator, EventRef};
use crate::metrics;
use crate::pipeline::batch::{AckStatus, SourceBatch};
use crate::pipeline::Input;
use crate::state::Committed;

pub(crate) struct DetectorStage {
    pub eval: Evaluator,
    pub rx: mpsc::Receiver<Input>,
    pub tx: mpsc::Sender<Output>,
    pub commit_interval: Duration,
    /// Fixed processing time (replays); None = the clock.
    pub now: Option<OffsetDateTime>,
    /// Decide every open window at the end (finite input only; a service
    /// that stops keeps its windows in the snapshot instead).
    pub flush_at_end: bool,
    /// Take window snapshots at commits (a store is configured and there
    /// are correlations).
    pub snapshots: bool,
    /// Progress reports for liveness: busy while evaluating, idle while
    /// waiting for input or for the sink stage.
    pub beat: crate::health::StageBeat,
    /// Derive `%org_accounts%` from the input (no AWS Organizations access).
    pub derive: Option<Derive>,
    /// Sources whose shards are leased (`coordination = "leases"`): each
    /// leased shard has window state of its own, which moves with its lease.
    pub leased: std::collections::BTreeSet<String>,
    pub shards: std::collections::HashMap<Arc<str>, ShardWindows>,
    /// Late drops by partition, to the metrics.
    pub late: super::late::LatePublisher,
    /// The re-keying stage (`crate::rekey`): matches of the principal
    /// streams' events for it, and the re-keyed stream's shards.
    pub rekey: Option<crate::rekey::RekeyStage>,
}

/// One leased shard's window state.
pub(crate) struct ShardWindows {
    /// The lease's tenure: batches of another tenure do not count here.
    gen: u64,
    det: trailwatch_rules::Detector,
    /// Events or ticks went through it since the last commit.
    changed: bool,
    /// Its stats as last published to the window metrics.
    published: trailwatch_rules::DetectorStats,
    /// Its stats when adopted (the restored counters are the previous owner's).
    adopted: trailwatch_rules::DetectorStats,
}

/// The accounts seen as `recipientAccountId` so far, and how to recompile.
pub(crate) struct Derive {
    pub known: std::collections::BTreeSet<String>,
    pub org_id: Option<String>,
    pub recompile: crate::org::Recompile,
}

#[derive(Default)]
struct Pending {
    positions: BTreeMap<String, String>,
    acks: Vec<oneshot::Sender<AckStatus>>,
    batches: u64,
    /// Events or ticks went through the windows since the last commit.
    windows_changed: bool,
    /// Held re-keyed matches were counted by a tick: their findings and
    /// windows are to be committed even if no batch comes.
    released: bool,
}

impl DetectorStage {
    /// Runs until every sender is gone; returns what was evaluated.
    pub fn run(mut self) -> EvalStats {
        let mut pending = Pending::default();
        let mut last_commit = Instant::now();
        let mut last_publish = Instant::now();
        let m = metrics::get();
        let depth = m.pipeline_queue_depth.with_label_values(&["rules"]);
        while let Some(msg) = self.rx.blocking_recv() {
            self.beat.busy();
            depth.set(self.rx.len() as i64);
            let ok = match msg {
                Input::Batch(b) => self.batch(*b, &mut pending),
                Input::Rules(set) => {
                    let set = self.split_rules(set);
                    if let Err(e) = self.eval.replace_rules(Arc::clone(&set)) {
                        tracing::error!("new rules not swapped in: {e}");
                    }
                    for (key, s) in self.shards.iter_mut() {
                        self.eval.swap_detector(&mut s.det);
                        if let Err(e) = self.eval.replace_rules(Arc::clone(&set)) {
                            tracing::error!(shard = %key, "new rules not swapped in: {e}");
                        }
                        self.eval.swap_detector(&mut s.det);
                    }
                    true
                }
                Input::Tick => {
                    let now = self.now();
                    let mut out = Collected::default();
                    // Closing windows by time: a panic here is counted and
                    // logged, not fatal (a restart would restore the same
                    // windows and panic again).
                    let eval = &mut self.eval;
                    if let Err(message) = crate::panics::guard("windows", || eval.advance(now, &mut |e| out.push(e))) {
                        tracing::error!("closing windows panicked: {message}");
                        self.eval.recover_from_panic();
                    }
                    for s in self.shards.values_mut() {
                        self.eval.swap_detector(&mut s.det);
                        let eval = &mut self.eval;
                        if let Err(message) =
                            crate::panics::guard("windows", || eval.advance(now, &mut |e| out.push(e)))
                        {
                            tracing::error!("closing windows panicked: {message}");
                            self.eval.recover_from_panic();
                        }
                        self.eval.swap_detector(&mut s.det);
                        s.changed = true;
                    }
                    if let Some(rk) = &mut self.rekey {
                        let mut shards = std::mem::take(&mut rk.shards);
                        for s in shards.values_mut() {
                            pending.released |= rk.advance(s, now, false, &mut |e| out.push(e));
                        }
                        rk.shards = shards;
                    }
                    pending.windows_changed = true;
                    self.send(out, None)
                }
            };
            if !ok {
                tracing::error!("the sink stage stopped; the detector stops too");
                return self.stats();
            }
            if last_publish.elapsed() >= Duration::from_secs(1) {
                self.publish_metrics();
                last_publish = Instant::now();
            }
            if (pending.batches > 0 || pending.released) && last_commit.elapsed() >= self.commit_interval {
                if !self.commit(&mut pending, false) {
                    return self.stats();
                }
                last_commit = Instant::now();
            }
            self.beat.idle();
        }
        // Every source is done (or stopped): close what must close, commit.
        if self.flush_at_end {
            let now = self.now();
            let mut out = Collected::default();
            self.eval.flush(now, &mut |e| out.push(e));
            for s in self.shards.values_mut() {
                self.eval.swap_detector(&mut s.det);
                self.eval.flush(now, &mut |e| out.push(e));
                self.eval.swap_detector(&mut s.det);
            }
            if let Some(rk) = &mut self.rekey {
                let mut shards = std::mem::take(&mut rk.shards);
                for s in shards.values_mut() {
                    let _ = rk.advance(s, now, true, &mut |e| out.push(e));
                }
                rk.shards = shards;
            }
            pending.windows_changed = true;
            self.send(out, None);
        }
        self.commit(&mut pending, true);
        self.publish_metrics();
        self.stats()
    }

    /// What was evaluated; the detector counters include every leased
    /// shard's (since this instance adopted it) and their window keys.
    fn stats(&self) -> crate::evaluate::EvalStats {
        let mut s = self.eval.stats();
        for sh in self.shards.values() {
            let t = sh.det.stats();
            let mut since = t.clone();
            since.evictions = t.evictions.saturating_sub(sh.adopted.evictions);
            since.late_dropped = t.late_dropped.saturating_sub(sh.adopted.late_dropped);
            since.missing_group_key = t.missing_group_key.saturating_sub(sh.adopted.missing_group_key);
            since.suppressed = t.suppressed.saturating_sub(sh.adopted.suppressed);
            since.expired_suppressions = t.expired_suppressions.saturating_sub(sh.adopted.expired_suppressions);
            since.correlation_alerts = t.correlation_alerts.saturating_sub(sh.adopted.correlation_alerts);
            since.correlation_updates = t.correlation_updates.saturating_sub(sh.adopted.correlation_updates);
            since.duplicate_events = t.duplicate_events.saturating_sub(sh.adopted.duplicate_events);
            since.future_events = t.future_events.saturating_sub(sh.adopted.future_events);
            since.event_id_evictions = t.event_id_evictions.saturating_sub(sh.adopted.event_id_evictions);
            since.baseline_evictions = t.baseline_evictions.saturating_sub(sh.adopted.baseline_evictions);
            s.detector.add_counters(&since);
            s.detector.keys += t.keys;
            s.detector.baseline_entries += t.baseline_entries;
        }
        s
    }

    /// Window metrics over the main detector and every leased shard's.
    fn publish_metrics(&mut self) {
        let mut shards: Vec<_> = self.shards.values_mut().map(|s| (&s.det, &mut s.published)).collect();
        self.eval.publish_metrics_with(&mut shards);
        if let Some(rk) = &mut self.rekey {
            rk.publish_metrics();
        }
        // Leased shards' windows live in detectors of their own.
        let main = self.eval.detector().late_drops();
        let shards = self.shards.values().flat_map(|s| s.det.late_drops());
        self.late.publish(main.chain(shards));
    }

    fn now(&self) -> OffsetDateTime {
        self.now.unwrap_or_else(OffsetDateTime::now_utc)
    }

    /// A leased shard's batch is evaluated with the shard's own window state
    /// swapped in; one of an earlier tenure (the lease was lost, maybe taken
    /// back since) with throwaway windows: the new owner counts those events
    /// from its checkpoint.
    fn batch(&mut self, b: SourceBatch, pending: &mut Pending) -> bool {
        if self.rekey.as_ref().is_some_and(|r| *r.plan.source == *b.source) {
            return self.rekey_batch(b, pending);
        }
        if !self.leased.contains(&*b.source) {
            return self.batch_in(b, pending);
        }
        for a in &b.partitions.adopt {
            let mut det = self.eval.new_detector();
            if !a.snapshots.is_empty() {
                let jsons: Result<Vec<Vec<u8>>, String> =
                    a.snapshots.iter().map(|b| crate::state::leased::unpack(b).map_err(|e| e.to_string())).collect();
                match jsons.and_then(|j| {
                    let parts: Vec<&[u8]> = j.iter().map(Vec::as_slice).collect();
                    det.restore_merged(&parts).map_err(|e| e.to_string())
                }) {
                    Ok(None) => {}
                    Ok(Some(note)) => tracing::warn!(shard = %a.key, "{note}"),
                    Err(e) => {
                        tracing::warn!(shard = %a.key, "shard window state not restored, its windows start empty: {e}")
                    }
                }
            }
            det.partition(&a.key);
            tracing::info!(shard = %a.key, restored = a.snapshots.len(), "shard window state adopted");
            let published = det.stats();
            let adopted = published.clone();
            self.shards.insert(Arc::clone(&a.key), ShardWindows { gen: a.gen, det, changed: true, published, adopted });
        }
        for k in &b.partitions.drop {
            self.shards.remove(k);
        }
        // The shard: the events' partition, or (SHARD_END) the checkpoint's.
        let key: Option<Arc<str>> = b
            .partitions
            .default
            .clone()
            .or_else(|| b.checkpoint.as_ref().map(|c| Arc::from(Committed::key(&b.source, &c.partition).as_str())));
        let Some(key) = key else { return self.batch_in(b, pending) };
        let gen =
            b.checkpoint.as_ref().and_then(|c| c.position.split_once(':')).and_then(|(g, _)| g.parse::<u64>().ok());
        let own = matches!(self.shards.get(&key), Some(s) if gen.is_none_or(|g| g == s.gen));
        let mut slot = if own { self.shards.remove(&key) } else { None };
        let mut spare = None;
        let det = match &mut slot {
            Some(s) => {
                s.changed = true;
                &mut s.det
            }
            None => spare.insert(self.eval.new_detector()),
        };
        self.eval.swap_detector(det);
        let ok = self.batch_in(b, pending);
        self.eval.swap_detector(det);
        if let Some(s) = slot {
            self.shards.insert(key, s);
        }
        ok
    }

    /// The principal side's rules out of a full rule set (recompiled for a
    /// new org context): without the re-keyed correlations, whose own sets
    /// go to the re-keying stage.
    fn split_rules(&mut self, set: Arc<trailwatch_rules::RuleSet>) -> Arc<trailwatch_rules::RuleSet> {
        let Some(rk) = &mut self.rekey else { return set };
        match rk.plan.sets(&set) {
            Ok(sets) => {
                rk.replace_rules(sets.rekeyed);
                Arc::new(sets.main)
            }
            Err(e) => {
                tracing::error!("new rules not split for re-keying: {e}");
                set
            }
        }
    }

    fn replace_all_rules(&mut self, set: Arc<trailwatch_rules::RuleSet>) -> Result<(), String> {
        let set = self.split_rules(set);
        self.eval.replace_rules(set)
    }

    /// A batch of the re-keyed stream (`crate::rekey`): each record is
    /// evaluated by its correlation's detector of the batch's shard (restored
    /// from the lease when adopted, as for principal shards); one of an
    /// earlier tenure with throwaway windows.
    fn rekey_batch(&mut self, b: SourceBatch, pending: &mut Pending) -> bool {
        let Some(mut rk) = self.rekey.take() else { return self.batch_in(b, pending) };
        let span = tracing::info_span!("detector_batch", source = %b.source, events = b.events.len() as i64);
        crate::telemetry::set_parent(&span, b.trace);
        let _entered = span.enter();
        let m = metrics::get();
        m.pipeline_batches.inc();
        let now = self.now();
        let mut out = Collected::default();
        let source = Arc::clone(&b.source);
        for a in &b.partitions.adopt {
            let mut jsons = Vec::new();
            for bytes in &a.snapshots {
                match crate::state::leased::unpack(bytes) {
                    Ok(json) => jsons.push(json),
                    Err(e) => {
                        tracing::warn!(shard = %a.key, "re-keyed shard window state not unpacked, its windows start empty: {e}")
                    }
                }
            }
            let parts: Vec<&[u8]> = jsons.iter().map(|j| j.as_slice()).collect();
            let shard = rk.restore_shard(&a.key, a.gen, &parts);
            tracing::info!(shard = %a.key, restored = parts.len(), "re-keyed shard window state adopted");
            rk.shards.insert(Arc::clone(&a.key), shard);
        }
        for k in &b.partitions.drop {
            rk.shards.remove(k);
        }
        for (e, origin) in b.events.errors() {
            m.decode_errors.with_label_values(&[&source, e.kind]).inc();
            self.eval.bad_record(origin, &e.position, e.kind, &e.message, e.raw.as_deref(), &mut |x| out.push(x));
        }
        let key: Option<Arc<str>> = b
            .partitions
            .default
            .clone()
            .or_else(|| b.checkpoint.as_ref().map(|c| Arc::from(Committed::key(&b.source, &c.partition).as_str())));
        let gen =
            b.checkpoint.as_ref().and_then(|c| c.position.split_once(':')).and_then(|(g, _)| g.parse::<u64>().ok());
        let own = key.as_ref().is_some_and(|k| matches!(rk.shards.get(k), Some(s) if gen.is_none_or(|g| g == s.gen)));
        let mut shard = match (&key, own) {
            (Some(k), true) => rk.shards.remove(k).unwrap_or_else(|| rk.empty_shard(0)),
            _ => rk.empty_shard(gen.unwrap_or(0)),
        };
        for (ev, json, origin) in b.events.events() {
            m.rekey_received.inc();
            let r = EventRef { class: ev.class, json, origin, position: &ev.position, ingest_ms: b.events.ingest_ms };
            if let Err(why) = rk.hold(&mut shard, r, now) {
                m.rekey_failed.with_label_values(&["invalid"]).inc();
                tracing::warn!(%origin, position = %ev.position, "re-keyed record not evaluated; dead-lettered: {why}");
                self.eval.bad_record(origin, &ev.position, "rekey", &why, Some(json), &mut |x| out.push(x));
            }
        }
        // A batch of an earlier tenure counts at once, in throwaway windows.
        let _ = rk.release(&mut shard, now, !own, &mut |x| out.push(x));
        if let (Some(k), true) = (key, own) {
            rk.shards.insert(k, shard);
        }
        self.rekey = Some(rk);
        if let Some(cp) = b.checkpoint {
            pending.positions.insert(Committed::key(&source, &cp.partition), cp.position);
        }
        if let Some(ack) = b.ack {
            pending.acks.push(ack);
        }
        pending.batches += 1;
        let trace = crate::telemetry::context_of(&span);
        self.send(out, trace)
    }

    fn batch_in(&mut self, b: SourceBatch, pending: &mut Pending) -> bool {
        // One span per batch (low cardinality: the source name only), a
        // child of the source's span for the batch.
        let span = tracing::info_span!(
            "detector_batch",
            source = %b.source,
            // i64: tracing-opentelemetry records unsigned fields as text.
            events = b.events.len() as i64,
            findings = tracing::field::Empty,
            dead_letters = tracing::field::Empty
        );
        crate::telemetry::set_parent(&span, b.trace);
        let _entered = span.enter();
        crate::panics::test_point("detector");
        let m = metrics::get();
        m.pipeline_batches.inc();
        let now = self.now();
        let mut out = Collected::default();
        let source = Arc::clone(&b.source);
        for (e, origin) in b.events.errors() {
            m.decode_errors.with_label_values(&[&source, e.kind]).inc();
            self.eval.bad_record(origin, &e.position, e.kind, &e.message, e.raw.as_deref(), &mut |x| out.push(x));
        }
        for _ in &b.events.object_refs {
            self.eval.object_ref();
        }
        self.eval.skipped(b.events.skipped.values().sum());
        if self.derive.is_some() {
            self.derive_org(&b);
        }
        let parts = &b.partitions;
        if let Some(d) = parts.hold_for {
            let until = now + d;
            self.eval.detector().hold_watermark_until((until.unix_timestamp_nanos() / 1_000_000) as i64);
        }
        for name in &parts.open {
            self.eval.partition(name);
        }
        // Registered at its first event only: a source whose events all go
        // to partitions of their own (SQS) must not hold the watermark with
        // an empty partition of its name.
        let mut default = None;
        // Events of one origin come together: look its partition up once.
        let mut last: Option<(Arc<str>, trailwatch_rules::PartitionId)> = None;
        let mut by_class: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (ev, json, origin) in b.events.events() {
            *by_class.entry(ev.class.service()).or_default() += 1;
            let p = match b.events.partition_of(ev) {
                None => {
                    *default.get_or_insert_with(|| self.eval.partition(parts.default.as_deref().unwrap_or(&source)))
                }
                Some(name) => match last {
                    Some((ref n, id)) if Arc::ptr_eq(n, name) => id,
                    _ => {
                        let id = self.eval.partition(name);
                        last = Some((Arc::clone(name), id));
                        id
                    }
                },
            };
            let r = EventRef { class: ev.class, json, origin, position: &ev.position, ingest_ms: b.events.ingest_ms };
            // One event's panic dead-letters that event; the stream goes on
            // (a crash would meet it again after every restart).
            let eval = &mut self.eval;
            let caught = crate::panics::guard("evaluate", || {
                crate::panics::test_point_record("evaluate", json.as_bytes());
                eval.event_in(p, r, now, &mut |x| out.push(x));
            });
            match caught {
                Err(message) => {
                    tracing::error!(%origin, position = %ev.position, "evaluating an event panicked; dead-lettered: {message}");
                    self.eval.recover_from_panic();
                    self.eval.bad_record(origin, &ev.position, "panic", &message, Some(json), &mut |x| out.push(x));
                }
                Ok(()) => {
                    if let Some(rk) = &self.rekey {
                        let from =
                            b.events.partition_of(ev).map(|n| &**n).or(parts.default.as_deref()).unwrap_or(&source);
                        rk.plan.collect(&self.eval, &r, from, &mut |x| out.push_rekey(x));
                    }
                }
            }
        }
        for name in &parts.close {
            let p = self.eval.partition(name);
            self.eval.close_partition(p, now, &mut |x| out.push(x));
        }
        for (class, n) in by_class {
            m.events_by_logsource.with_label_values(&[class]).inc_by(n);
        }
        if !b.events.is_empty() {
            pending.windows_changed = true;
        }
        if let Some(cp) = b.checkpoint {
            pending.positions.insert(Committed::key(&source, &cp.partition), cp.position);
        }
        if let Some(ack) = b.ack {
            pending.acks.push(ack);
        }
        pending.batches += 1;
        span.record("findings", out.findings.len() as i64);
        span.record("dead_letters", out.dead_letters.len() as i64);
        let trace = crate::telemetry::context_of(&span);
        self.send(out, trace)
    }

    /// Before a batch is evaluated: its new recipient accounts join the org
    /// (a recipient is an org account: an org trail logs only members), and
    /// the rules are recompiled once for all of them. An org account that has
    /// not logged anything yet still counts as outside until it does.
    fn derive_org(&mut self, b: &SourceBatch) {
        let Some(d) = self.derive.as_mut() else { return };
        let before = d.known.len();
        for (_, json, _) in b.events.events() {
            if let Some(a) = crate::org::recipient_of(json) {
                if !d.known.contains(a) {
                    d.known.insert(a.to_string());
                }
            }
        }
        if d.known.len() == before {
            return;
        }
        let values = crate::org::OrgValues { org_id: d.org_id.clone(), accounts: d.known.clone() };
        match (d.recompile)(&values) {
            Ok(set) => match self.replace_all_rules(Arc::new(set)) {
                Ok(()) => tracing::info!(
                    accounts = values.accounts.len(),
                    added = values.accounts.len() - before,
                    "org_accounts derived from the input (recipientAccountId)"
                ),
                Err(e) => tracing::error!("new rules not swapped in: {e}"),
            },
            Err(e) => tracing::error!("rules not recompiled for the derived org: {e:#}"),
        }
    }

    fn send(&mut self, out: Collected, trace: Option<crate::telemetry::TraceContext>) -> bool {
        if out.findings.is_empty() && out.dead_letters.is_empty() && out.requests.is_empty() && out.rekey.is_empty() {
            return true;
        }
        // Waiting on the sink stage is not this stage's stall.
        self.beat.idle();
        let ok = self
            .tx
            .blocking_send(Output::Batch {
                findings: out.findings,
                dead_letters: out.dead_letters,
                requests: out.requests,
                trace,
                rekey: out.rekey,
            })
            .is_ok();
        self.beat.busy();
        ok
    }

    fn commit(&mut self, pending: &mut Pending, last: bool) -> bool {
        let windows = (self.snapshots && (pending.windows_changed || last)).then(|| self.eval.detector().snapshot());
        let mut shard_windows = BTreeMap::new();
        for (key, s) in self.shards.iter_mut() {
            if s.changed || last {
                shard_windows.insert(key.to_string(), s.det.snapshot());
                s.changed = false;
            }
        }
        if let Some(rk) = &mut self.rekey {
            let mut shards = std::mem::take(&mut rk.shards);
            for (key, s) in shards.iter_mut() {
                if s.changed || last {
                    shard_windows.insert(key.to_string(), rk.snapshot(s));
                    s.changed = false;
                }
            }
            rk.shards = shards;
        }
        let p = std::mem::take(pending);
        let req = CommitRequest { positions: p.positions, acks: p.acks, windows, shard_windows, last };
        self.beat.idle();
        let ok = self.tx.blocking_send(Output::Commit(req)).is_ok();
        self.beat.busy();
        ok
    }
}

/// Findings and dead letters of one batch.
#[derive(Default)]
struct Collected {
    findings: Vec<Arc<crate::findings::Finding>>,
    dead_letters: Vec<crate::sinks::dead_letter::DeadLetter>,
    requests: Vec<Arc<crate::findings::request::ResponseRequest>>,
    rekey: Vec<crate::rekey::Record>,
}

impl Collected {
    fn push_rekey(&mut self, r: crate::rekey::RekeyOut) {
        match r {
            crate::rekey::RekeyOut::Record(r) => self.rekey.push(r),
            crate::rekey::RekeyOut::DeadLetter(d) => self.dead_letters.push(d),
        }
    }

    fn push(&mut self, e: Emitted) {
        match e {
            Emitted::Finding(f) => self.findings.push(Arc::from(f)),
            // The service always builds findings (matches_only is for replay).
            Emitted::Match(_) => {}
            Emitted::DeadLetter(d) => self.dead_letters.push(d),
            Emitted::Request(r) => self.requests.push(Arc::from(r)),
        }
    }
}
