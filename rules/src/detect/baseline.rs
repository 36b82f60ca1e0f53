//! First-seen baselines: the state of our `first_seen` correlation (what
//! Elastic calls new-terms rules). See "First-seen baselines" in
//! `detect_design.md` for the contract.
//!
//! Per rule, a map from the 64-bit hash of the group-by combination (the same
//! hash windows use) to the event time it was last seen, in whole seconds:
//! 12 bytes of payload per remembered combination. The display values are
//! not kept; an alert takes them from the event that fires it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use super::{CorrelationAlert, DetectorConfig, DetectorStats, TimeMode};
use crate::engine::RuleSet;
use crate::window::{CorrelationRule, FirstSeenSpec};

/// Keys are already FNV hashes: one multiply spreads them over the table
/// (SipHash would only cost time).
#[derive(Default, Clone, Copy)]
pub(crate) struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SeenMap = HashMap<u64, u32, BuildHasherDefault<Mix>>;

/// Every first_seen rule's memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Baselines {
    /// Per correlation (same index as [`RuleSet::correlations`]); `None` for
    /// the other correlation types.
    rules: Vec<Option<RuleBaseline>>,
    since_prune: u32,
}

#[derive(Debug, Clone)]
struct RuleBaseline {
    spec: FirstSeenSpec,
    /// Event time of the first event this rule saw: learning lasts until
    /// `start + learning`.
    start: Option<i64>,
    /// The newest event time this rule saw.
    newest: i64,
    /// Combination hash → last seen (whole seconds since the epoch).
    seen: SeenMap,
}

/// One rule's memory in a snapshot.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct BaselineSnap {
    start: Option<i64>,
    newest: i64,
    /// (combination hash, last seen in seconds), sorted by hash.
    seen: Vec<(u64, u32)>,
}

impl BaselineSnap {
    /// The union of two memories of one rule (shards that merged): a
    /// combination seen by either is known, at its latest sighting; learning
    /// started at the earlier start.
    pub(crate) fn union(self, other: BaselineSnap) -> BaselineSnap {
        let mut seen: HashMap<u64, u32> = self.seen.into_iter().collect();
        for (k, l) in other.seen {
            let e = seen.entry(k).or_insert(l);
            *e = (*e).max(l);
        }
        let mut seen: Vec<(u64, u32)> = seen.into_iter().collect();
        seen.sort_unstable();
        let start = match (self.start, other.start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        BaselineSnap { start, newest: self.newest.max(other.newest), seen }
    }
}

fn secs(t: i64) -> u32 {
    t.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

/// Prune and the like run this often (in first_seen observations).
const PRUNE_EVERY: u32 = 4096;

impl Baselines {
    pub(crate) fn new(set: &RuleSet) -> Baselines {
        let rules = set
            .correlations()
            .iter()
            .map(|c| {
                c.first_seen.map(|spec| RuleBaseline { spec, start: None, newest: i64::MIN, seen: SeenMap::default() })
            })
            .collect();
        Baselines { rules, since_prune: 0 }
    }

    /// Remembered combinations over all rules.
    pub(crate) fn len(&self) -> usize {
        self.rules.iter().flatten().map(|r| r.seen.len()).sum()
    }

    /// Rules whose learning period has not ended (by their newest event).
    pub(crate) fn learning(&self) -> usize {
        self.rules
            .iter()
            .flatten()
            .filter(|r| r.start.is_none_or(|s| r.newest < s.saturating_add(r.spec.learning_ms)))
            .count()
    }

    /// One event of correlation `ci` with combination `key` at event time `t`:
    /// the alert when the combination is new (after learning), else `None`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe(
        &mut self,
        c: &CorrelationRule,
        ci: usize,
        t: i64,
        key: u64,
        vals: &[&str],
        event_id: &str,
        cfg: &DetectorConfig,
        stats: &mut DetectorStats,
    ) -> Option<CorrelationAlert> {
        self.since_prune += 1;
        if self.since_prune >= PRUNE_EVERY {
            self.prune(cfg);
        }
        if !self.rules.get(ci).is_some_and(Option::is_some) {
            return None;
        }
        let total = self.len();
        let is_new_key = self.rules[ci].as_ref().is_some_and(|r| !r.seen.contains_key(&key));
        if is_new_key && total >= cfg.max_baseline_entries.max(1) {
            self.evict(cfg.max_baseline_entries.max(1), stats);
        }
        let r = self.rules[ci].as_mut()?;
        let start = *r.start.get_or_insert(t);
        r.newest = r.newest.max(t);
        let learning = t < start.saturating_add(r.spec.learning_ms);
        let s = secs(t);
        let last = r.seen.get(&key).copied();
        // New: never seen, or last seen more than `history` before this
        // event. A combination already seen later (out of order) is not new.
        let new = match last {
            None => true,
            Some(l) => t - i64::from(l) * 1000 > r.spec.history_ms,
        };
        r.seen.insert(key, last.map_or(s, |l| l.max(s)));
        if learning || !new {
            return None;
        }
        stats.correlation_alerts += 1;
        let period = cfg.dedup_period_ms.max(1);
        Some(CorrelationAlert {
            rule: ci,
            count: 1,
            window_start_ms: t,
            window_end_ms: t,
            group: c.group_by.iter().cloned().zip(vals.iter().map(|v| v.to_string())).collect(),
            sample_event_ids: if event_id.is_empty() { Vec::new() } else { vec![event_id.to_string()] },
            dedup_key: format!("{}|{}|{}", c.meta.id, vals.join("\u{1f}"), t.div_euclid(period)),
            is_update: false,
        })
    }

    /// Forgets combinations no event within lateness can still find in
    /// `history` (memory only: the history test itself is by time).
    fn prune(&mut self, cfg: &DetectorConfig) {
        self.since_prune = 0;
        let lateness = match cfg.time_mode {
            TimeMode::EventTime => cfg.allowed_lateness_ms,
            TimeMode::ProcessingTime => 0,
        };
        for r in self.rules.iter_mut().flatten() {
            if r.newest == i64::MIN {
                continue;
            }
            let keep_from = r.newest.saturating_sub(r.spec.history_ms).saturating_sub(lateness);
            r.seen.retain(|_, l| i64::from(*l) * 1000 >= keep_from);
        }
    }

    /// Over the cap: forgets the least recently seen tenth (over all rules).
    fn evict(&mut self, max: usize, stats: &mut DetectorStats) {
        let mut all: Vec<(u32, usize, u64)> = Vec::with_capacity(self.len());
        for (ci, r) in self.rules.iter().enumerate() {
            if let Some(r) = r {
                all.extend(r.seen.iter().map(|(k, l)| (*l, ci, *k)));
            }
        }
        let n = (max / 10).max(1).min(all.len());
        if n == 0 {
            return;
        }
        if n < all.len() {
            all.select_nth_unstable(n - 1);
        }
        for &(_, ci, k) in &all[..n] {
            if let Some(r) = self.rules[ci].as_mut() {
                r.seen.remove(&k);
            }
        }
        stats.baseline_evictions += n as u64;
    }

    /// Empty when no rule is a first_seen one (the snapshot then has no
    /// `baselines` key, as before they existed).
    pub(crate) fn snapshot(&self) -> Vec<Option<BaselineSnap>> {
        if self.rules.iter().all(Option::is_none) {
            return Vec::new();
        }
        self.rules
            .iter()
            .map(|r| {
                r.as_ref().map(|r| {
                    let mut seen: Vec<(u64, u32)> = r.seen.iter().map(|(k, l)| (*k, *l)).collect();
                    seen.sort_unstable();
                    BaselineSnap { start: r.start, newest: r.newest, seen }
                })
            })
            .collect()
    }

    /// From a snapshot of the same rules (checked by the caller by id); a
    /// snapshot without baselines (taken before they existed) starts empty.
    pub(crate) fn restore(set: &RuleSet, snaps: Vec<Option<BaselineSnap>>) -> Result<Baselines, String> {
        let mut b = Baselines::new(set);
        if snaps.is_empty() {
            return Ok(b);
        }
        if snaps.len() != b.rules.len() {
            return Err(format!("{} baselines for {} correlations", snaps.len(), b.rules.len()));
        }
        for (ci, (r, s)) in b.rules.iter_mut().zip(snaps).enumerate() {
            match (r, s) {
                (None, None) => {}
                (Some(r), Some(s)) => {
                    r.start = s.start;
                    r.newest = s.newest;
                    r.seen = s.seen.into_iter().collect();
                }
                _ => return Err(format!("correlation {ci}: first_seen memory does not match the rule type")),
            }
        }
        Ok(b)
    }
}
