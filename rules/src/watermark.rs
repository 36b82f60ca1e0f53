//! Per-partition watermarks combined by minimum, and the filter that makes a
//! redelivered event count once (used by [`crate::detect`]; the exact rules
//! are in `detect_design.md`, "Time" and "Redelivered events").
//!
//! Pure: processing time is whatever the caller passes in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// A partition of the input (a Kinesis shard, one account+region of a
/// queue or an archive, one input file), from [`crate::Detector::partition`].
/// Valid for the detector that gave it, across snapshots and restores of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionId(pub(crate) u32);

/// Where a partition stands, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub name: String,
    /// Newest event time seen in it (not counting future-skewed ones).
    pub max_event_ms: Option<i64>,
    /// Holds the combined watermark back (not idle, not closed).
    pub active: bool,
    pub closed: bool,
    /// Correlation observations of its events dropped as late (since start;
    /// not kept in snapshots).
    pub late_dropped: u64,
}

#[derive(Debug, Clone)]
struct Part {
    name: String,
    max_time: Option<i64>,
    /// Processing time of its last event (or of its registration). None:
    /// not seen since a restore; set by the next processing time passed in,
    /// so a restored partition holds for a full idle timeout.
    last_active: Option<i64>,
    closed: bool,
    /// A future-skewed event was reported for it already (logged once).
    future_reported: bool,
    late: u64,
}

/// The snapshot form of a partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartSnap {
    pub name: String,
    pub max_time: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Watermarks {
    parts: Vec<Part>,
    index: HashMap<String, u32>,
    /// Newest processing time passed in.
    now: Option<i64>,
    /// The combined watermark; never moves backwards.
    wm: Option<i64>,
    /// Processing time before which `wm` does not advance.
    hold_until: Option<i64>,
    lateness: i64,
    idle_ms: Option<i64>,
    future_ms: Option<i64>,
    pub future_events: u64,
    /// Some partition has no `last_active` yet.
    unset: bool,
    /// Partitions whose first future-skewed event is not reported yet.
    newly_future: Vec<String>,
}

impl Watermarks {
    pub(crate) fn new(lateness: i64, idle_ms: Option<i64>, future_ms: Option<i64>) -> Self {
        Watermarks { lateness, idle_ms, future_ms, ..Watermarks::default() }
    }

    pub(crate) fn get(&self) -> Option<i64> {
        self.wm
    }

    /// The partition named `name`, registered if new: from then on it holds
    /// the watermark (until it has events, idles or closes).
    pub(crate) fn partition(&mut self, name: &str) -> PartitionId {
        if let Some(&i) = self.index.get(name) {
            return PartitionId(i);
        }
        let i = self.parts.len() as u32;
        self.unset |= self.now.is_none();
        self.parts.push(Part {
            name: name.to_string(),
            max_time: None,
            last_active: self.now,
            closed: false,
            future_reported: false,
            late: 0,
        });
        self.index.insert(name.to_string(), i);
        PartitionId(i)
    }

    fn set_now(&mut self, now: i64) {
        if self.now.is_none_or(|n| now > n) {
            self.now = Some(now);
        }
        if std::mem::take(&mut self.unset) {
            let now = self.now.unwrap_or(now);
            for p in &mut self.parts {
                if p.last_active.is_none() {
                    p.last_active = Some(now);
                }
            }
        }
    }

    fn is_idle(&self, p: &Part) -> bool {
        match (self.idle_ms, p.last_active, self.now) {
            (Some(idle), Some(a), Some(n)) => n.saturating_sub(a) >= idle,
            _ => false,
        }
    }

    /// An event of partition `pid` at event time `t`, processing time `now`.
    /// Returns false when `t` is too far ahead of `now` to move the watermark.
    pub(crate) fn event(&mut self, pid: PartitionId, t: i64, now: i64) -> bool {
        self.set_now(now);
        let now = self.now.unwrap_or(now);
        let wm = self.wm;
        let lateness = self.lateness;
        let future = self.future_ms.is_some_and(|f| t > now.saturating_add(f));
        let was_idle = self.is_idle(&self.parts[pid.0 as usize]);
        let p = &mut self.parts[pid.0 as usize];
        p.last_active = Some(now);
        let was_closed = std::mem::replace(&mut p.closed, false);
        if future {
            self.future_events += 1;
            if !p.future_reported {
                p.future_reported = true;
                self.newly_future.push(p.name.clone());
            }
            return false;
        }
        let old = p.max_time;
        if old.is_some_and(|m| t <= m) {
            return true;
        }
        p.max_time = Some(t);
        // Only the partition at (or below) the combined watermark can move
        // it; a partition ahead of it raising its own max changes nothing.
        let could_hold = match (old, wm) {
            (None, _) | (_, None) => true,
            (Some(m), Some(w)) => m - lateness <= w,
        };
        if could_hold || was_idle || was_closed {
            self.recompute();
        }
        true
    }

    /// Processing time moves on (idle partitions stop holding).
    pub(crate) fn tick(&mut self, now: i64) {
        self.set_now(now);
        self.recompute();
    }

    pub(crate) fn close(&mut self, pid: PartitionId) {
        self.parts[pid.0 as usize].closed = true;
        self.recompute();
    }

    pub(crate) fn hold_until(&mut self, until: i64) {
        self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
    }

    /// Processing mode: the watermark is the newest processing time.
    pub(crate) fn processing(&mut self, now: i64) {
        self.set_now(now);
        self.wm = Some(self.wm.map_or(now, |w| w.max(now)));
    }

    pub(crate) fn take_future(&mut self) -> Vec<String> {
        std::mem::take(&mut self.newly_future)
    }

    fn recompute(&mut self) {
        if let Some(h) = self.hold_until {
            if self.now.is_none_or(|n| n < h) {
                return;
            }
            self.hold_until = None;
        }
        // None: no active partition; Some(None): an active one without events.
        let mut min: Option<Option<i64>> = None;
        let mut max_all: Option<i64> = None;
        for p in &self.parts {
            let w = p.max_time.map(|m| m - self.lateness);
            max_all = max_all.max(w);
            if p.closed || self.is_idle(p) {
                continue;
            }
            min = Some(match min {
                None => w,
                Some(m) => match (m, w) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    _ => None,
                },
            });
        }
        // Every partition idle or closed: nothing holds the watermark back.
        let cand = match min {
            None => max_all,
            Some(m) => m,
        };
        if let Some(c) = cand {
            self.wm = Some(self.wm.map_or(c, |w| w.max(c)));
        }
    }

    pub(crate) fn states(&self) -> Vec<PartitionState> {
        self.parts
            .iter()
            .map(|p| PartitionState {
                name: p.name.clone(),
                max_event_ms: p.max_time,
                active: !p.closed && !self.is_idle(p),
                closed: p.closed,
                late_dropped: p.late,
            })
            .collect()
    }

    /// Name and late drops of every partition that dropped any (no copies:
    /// read once a second for metrics, with thousands of partitions).
    pub(crate) fn late_drops(&self) -> impl Iterator<Item = (&str, u64)> {
        self.parts.iter().filter(|p| p.late > 0).map(|p| (p.name.as_str(), p.late))
    }

    /// `n` late drops of partition `pid`'s events.
    pub(crate) fn add_late(&mut self, pid: PartitionId, n: u64) {
        if let Some(p) = self.parts.get_mut(pid.0 as usize) {
            p.late += n;
        }
    }

    pub(crate) fn to_snap(&self) -> Vec<PartSnap> {
        self.parts.iter().map(|p| PartSnap { name: p.name.clone(), max_time: p.max_time, closed: p.closed }).collect()
    }

    /// Restored state: partitions hold from the next processing time passed
    /// in (a full idle timeout), the combined watermark is as it was.
    pub(crate) fn restore(&mut self, parts: Vec<PartSnap>, wm: Option<i64>) {
        self.parts.clear();
        self.index.clear();
        self.now = None;
        self.hold_until = None;
        self.unset = true;
        for s in parts {
            let i = self.parts.len() as u32;
            self.index.insert(s.name.clone(), i);
            self.parts.push(Part {
                name: s.name,
                max_time: s.max_time,
                last_active: None,
                closed: s.closed,
                future_reported: false,
                late: 0,
            });
        }
        self.wm = wm;
    }
}

/// Ids of the events counted in windows whose time is not yet behind the
/// watermark: a redelivery of one of them adds nothing. Bounded by
/// `cap`; over it the oldest ids are forgotten (counted).
#[derive(Debug, Clone, Default)]
pub(crate) struct SeenIds {
    set: HashSet<u64>,
    by_time: BinaryHeap<Reverse<(i64, u64)>>,
    pub cap: usize,
    pub evicted: u64,
}

impl SeenIds {
    pub(crate) fn new(cap: usize) -> Self {
        SeenIds { cap, ..SeenIds::default() }
    }

    /// Records `id` at time `t`; false when it was seen already.
    pub(crate) fn insert(&mut self, id: u64, t: i64) -> bool {
        if self.cap == 0 {
            return true;
        }
        if !self.set.insert(id) {
            return false;
        }
        self.by_time.push(Reverse((t, id)));
        while self.set.len() > self.cap {
            let Some(Reverse((_, old))) = self.by_time.pop() else { break };
            self.set.remove(&old);
            self.evicted += 1;
        }
        true
    }

    /// Forgets ids of events older than `t`: a copy of them would be late.
    pub(crate) fn prune_before(&mut self, t: i64) {
        while let Some(Reverse((ti, id))) = self.by_time.peek().copied() {
            if ti >= t {
                break;
            }
            self.by_time.pop();
            self.set.remove(&id);
        }
        if self.set.capacity() > 64 && self.set.len() * 4 < self.set.capacity() {
            self.set.shrink_to(self.set.len() * 2);
            self.by_time.shrink_to(self.set.len() * 2);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    pub(crate) fn to_pairs(&self) -> Vec<(i64, u64)> {
        let mut v: Vec<(i64, u64)> = self.by_time.iter().map(|Reverse(p)| *p).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn restore(&mut self, pairs: &[(i64, u64)]) {
        self.set.clear();
        self.by_time.clear();
        for &(t, id) in pairs {
            self.insert(id, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_partitions() {
        let mut w = Watermarks::new(10, Some(100), Some(5000));
        let a = w.partition("a");
        let b = w.partition("b");
        assert!(w.event(a, 1000, 0));
        assert_eq!(w.get(), None, "b has no events yet: it holds");
        w.event(b, 500, 0);
        assert_eq!(w.get(), Some(490));
        w.event(a, 2000, 10);
        assert_eq!(w.get(), Some(490));
        w.tick(99);
        assert_eq!(w.get(), Some(490));
        w.tick(100);
        assert_eq!(w.get(), Some(1990), "b idle since 0");
        w.event(b, 600, 101);
        assert_eq!(w.get(), Some(1990), "never backwards");
        assert!(!w.event(a, 10_000, 101), "future");
        assert_eq!(w.take_future(), vec!["a".to_string()]);
        assert!(!w.event(a, 10_000, 101));
        assert!(w.take_future().is_empty(), "reported once");
        assert_eq!(w.future_events, 2);
    }

    #[test]
    fn seen_ids_bounded_and_pruned() {
        let mut s = SeenIds::new(3);
        assert!(s.insert(1, 10) && s.insert(2, 20) && !s.insert(1, 30));
        assert!(s.insert(3, 5) && s.insert(4, 40));
        assert_eq!(s.len(), 3);
        assert_eq!(s.evicted, 1, "the oldest (3 at 5) went");
        s.prune_before(25);
        assert_eq!(s.to_pairs(), vec![(40, 4)]);
    }
}
