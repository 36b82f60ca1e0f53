//! Per-partition watermarks (minimum over the active partitions, idle
//! release, closed partitions, future event times, holds), snapshots of
//! them, and redelivered events counting once. See `detect_design.md`.

mod support;

use std::sync::Arc;

use trailwatch_rules::{
    Alert, CompileOptions, CorrelationAlert, Detector, DetectorConfig, EventClass, PartitionId, RuleSet,
};

const RULES: &str = r#"
title: layer download
id: base-download
name: layer_download
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: other
id: base-other
name: other
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: Other}
  condition: sel
---
title: bulk downloads
id: corr-bulk
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 60s
  condition: {gte: 3}
---
title: distinct layers
id: corr-layers
correlation:
  type: value_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 60s
  condition: {gte: 3, field: requestParameters.layerDigest}
---
title: download then other
id: corr-then
correlation:
  type: temporal_ordered
  rules: [layer_download, other]
  group-by: [userIdentity.arn]
  timespan: 60s
"#;

const MIN: i64 = 60_000;
/// Event time 0 of the tests.
const NOW: i64 = 1_700_000_000_000;
/// Processing time: the events' times are behind it (not in the future).
const P: i64 = NOW + 3 * 3_600_000;

fn set() -> Arc<RuleSet> {
    support::load("w.yml", RULES, &CompileOptions::default())
}

fn cfg() -> DetectorConfig {
    DetectorConfig {
        allowed_lateness_ms: MIN,
        idle_timeout_ms: Some(10 * MIN),
        max_future_skew_ms: Some(5 * MIN),
        ..DetectorConfig::default()
    }
}

/// An event at `secs` after NOW (event time).
fn ev(name: &str, who: &str, secs: i64, id: &str, digest: &str) -> String {
    assert_eq!((NOW / 1000 + secs) / 86400, 19675, "tests stay within one day (2023-11-14)");
    format!(
        r#"{{"eventName":"{name}","eventID":"{id}","eventTime":"{}","userIdentity":{{"arn":"{who}"}},"requestParameters":{{"layerDigest":"{digest}"}}}}"#,
        support::event_time(secs)
    )
}

fn dl(who: &str, secs: i64, id: &str) -> String {
    ev("GetDownloadUrlForLayer", who, secs, id, &format!("sha256:{id}"))
}

struct Feed {
    det: Detector,
    scratch: trailwatch_rules::Scratch,
    out: Vec<Alert>,
}

impl Feed {
    fn new(cfg: DetectorConfig) -> Self {
        let det = Detector::new(set(), cfg);
        let scratch = det.rule_set().scratch();
        Feed { det, scratch, out: Vec::new() }
    }
    fn p(&mut self, name: &str) -> PartitionId {
        self.det.partition(name)
    }
    fn at(&mut self, p: PartitionId, now: i64, json: &str) {
        self.det.process_in(p, EventClass::CloudTrail, json, now, &mut self.scratch, &mut self.out).unwrap();
    }
    fn late(&self) -> u64 {
        self.det.stats().late_dropped
    }
    fn wm(&self) -> Option<i64> {
        self.det.stats().watermark_ms
    }
    fn corr(&self) -> Vec<CorrelationAlert> {
        support::correlations(&self.out)
    }
}

#[test]
fn a_slow_partition_holds_the_watermark() {
    let mut f = Feed::new(cfg());
    let (a, b) = (f.p("shard-a"), f.p("shard-b"));
    // Shard a races 30 minutes ahead while shard b has only its first minute.
    f.at(b, P, &dl("u", 0, "b0"));
    for i in 0..30 {
        f.at(a, P, &dl(&format!("other{i}"), i * 60, &format!("a{i}")));
    }
    assert_eq!(f.wm(), Some(NOW - MIN), "b's newest (0 s) − lateness");
    // b's events, 29 minutes behind a's newest, are not late.
    f.at(b, P, &dl("u", 10, "b1"));
    f.at(b, P, &dl("u", 20, "b2"));
    assert_eq!(f.late(), 0);
    let c = f.corr();
    assert_eq!(c.len(), 2, "event_count and value_count: {c:?}");
    assert!(c.iter().all(|c| c.count == 3 && c.group[0].1 == "u"));

    // The same events as one global watermark would have them: late.
    let mut g = Feed::new(cfg());
    let one = g.p("one");
    g.at(one, P, &dl("u", 0, "b0"));
    for i in 0..30 {
        g.at(one, P, &dl(&format!("other{i}"), i * 60, &format!("a{i}")));
    }
    g.at(one, P, &dl("u", 10, "b1"));
    g.at(one, P, &dl("u", 20, "b2"));
    assert!(g.late() > 0);
    assert!(g.corr().is_empty());
}

#[test]
fn an_idle_partition_stops_holding_and_a_closed_one_leaves() {
    let mut f = Feed::new(cfg());
    let (a, b) = (f.p("a"), f.p("b"));
    f.p("c");
    f.at(a, P, &dl("x", 600, "a1"));
    f.at(b, P, &dl("x", 0, "b1"));
    assert_eq!(f.wm(), None, "c is registered without events: it holds everything");
    // Processing time moves on: c has been silent for the idle timeout.
    let mut out = Vec::new();
    f.det.advance(P + 10 * MIN - 1, &mut out);
    assert_eq!(f.wm(), None);
    f.det.advance(P + 10 * MIN, &mut out);
    // b is idle too now (its only event came at P): all released.
    assert_eq!(f.wm(), Some(NOW + 600_000 - MIN));

    // Closing: b and c active again, then b closes.
    let mut g = Feed::new(cfg());
    let (a, b, c) = (g.p("a"), g.p("b"), g.p("c"));
    g.at(a, P, &dl("x", 600, "a1"));
    g.at(b, P, &dl("x", 0, "b1"));
    g.at(c, P, &dl("x", 300, "c1"));
    assert_eq!(g.wm(), Some(NOW - MIN));
    g.det.close_partition(b, &mut out);
    assert_eq!(g.wm(), Some(NOW + 300_000 - MIN), "b left: c is the slowest");
    let states = g.det.partitions();
    assert!(states.iter().any(|s| s.name == "b" && s.closed && !s.active));
    g.det.close_partition(c, &mut out);
    g.det.close_partition(a, &mut out);
    assert_eq!(g.wm(), Some(NOW + 600_000 - MIN), "all closed: the newest");
}

#[test]
fn future_event_times_move_no_watermark() {
    let mut f = Feed::new(cfg());
    let a = f.p("a");
    f.at(a, NOW, &dl("x", 0, "a0"));
    assert_eq!(f.wm(), Some(NOW - MIN));
    // A wrong clock: an hour ahead of processing time.
    f.at(a, NOW, &dl("y", 3600, "bad"));
    assert_eq!(f.wm(), Some(NOW - MIN));
    assert_eq!(f.det.take_future_partitions(), vec!["a".to_string()]);
    f.at(a, NOW, &dl("y", 3601, "bad2"));
    assert!(f.det.take_future_partitions().is_empty(), "reported once per partition");
    assert_eq!(f.det.stats().future_events, 2);
    // The events after it are not late.
    f.at(a, NOW, &dl("u", 10, "u1"));
    f.at(a, NOW, &dl("u", 20, "u2"));
    f.at(a, NOW, &dl("u", 30, "u3"));
    assert_eq!(f.late(), 0);
    assert_eq!(f.corr().iter().filter(|c| c.group[0].1 == "u").count(), 2);
    // Within the bound it counts as usual.
    f.at(a, NOW + 3_000_000, &dl("z", 3000, "ok"));
    assert_eq!(f.wm(), Some(NOW + 3_000_000 - MIN));
    // Without a bound (replay), the wrong time moves it.
    let mut g = Feed::new(DetectorConfig { max_future_skew_ms: None, ..cfg() });
    let a = g.p("a");
    g.at(a, NOW, &dl("y", 3600, "bad"));
    assert_eq!(g.wm(), Some(NOW + 3_600_000 - MIN));
}

#[test]
fn a_hold_keeps_the_watermark_until_processing_time_passes_it() {
    let mut f = Feed::new(cfg());
    let a = f.p("a");
    f.at(a, P, &dl("x", 0, "a0"));
    f.det.hold_watermark_until(P + MIN);
    f.at(a, P + 1000, &dl("x", 1200, "a1"));
    assert_eq!(f.wm(), Some(NOW - MIN), "held");
    f.at(a, P + 2000, &dl("u", 1, "old"));
    assert_eq!(f.late(), 0, "what comes back meanwhile is not late");
    let mut out = Vec::new();
    f.det.advance(P + MIN, &mut out);
    assert_eq!(f.wm(), Some(NOW + 1_200_000 - MIN));
}

#[test]
fn snapshot_restore_keeps_per_partition_state() {
    let mut f = Feed::new(cfg());
    let (a, b) = (f.p("shard-a"), f.p("shard-b"));
    f.at(b, P, &dl("u", 0, "b0"));
    f.at(a, P, &dl("v", 1800, "a0"));
    f.at(b, P, &dl("u", 10, "b1"));
    let snap = f.det.snapshot();
    assert!(String::from_utf8_lossy(&snap).contains("\"version\":3"));

    let mut g = Feed::new(cfg());
    assert_eq!(g.det.restore(&snap).unwrap(), None);
    assert_eq!(g.wm(), f.wm());
    let names: Vec<String> = g.det.partitions().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["shard-a", "shard-b"]);
    // After the restart shard a resumes far ahead; b still holds the watermark.
    let (a, b) = (g.p("shard-a"), g.p("shard-b"));
    g.at(a, P + 5000, &dl("v", 3600, "a1"));
    assert_eq!(g.wm(), Some(NOW + 10_000 - MIN));
    g.at(b, P + 5000, &dl("u", 20, "b2"));
    assert_eq!(g.late(), 0);
    assert_eq!(g.corr().len(), 2, "event_count and value_count of u");
    // b's redelivered event (already counted before the snapshot) adds nothing.
    g.at(b, P + 5000, &dl("u", 10, "b1"));
    assert_eq!(g.det.stats().duplicate_events, 1);

    // A restored partition that never comes back holds only until it idles.
    let mut h = Feed::new(cfg());
    h.det.restore(&snap).unwrap();
    let a = h.p("shard-a");
    h.at(a, P + 1000, &dl("v", 3600, "a1"));
    assert_eq!(h.wm(), Some(NOW + 10_000 - MIN));
    let mut out = Vec::new();
    h.det.advance(P + 1000 + 10 * MIN, &mut out);
    assert_eq!(h.wm(), Some(NOW + 3_600_000 - MIN), "b idle since the restart");
}

#[test]
fn a_version_2_snapshot_restores_with_a_note() {
    let mut f = Feed::new(cfg());
    let text = r#"{"version":2,"rules":["corr-bulk","corr-layers","corr-then"],"groups":[[],[],[]],"max_time":1700000600000,
        "stats":{"keys":0,"evictions":0,"late_dropped":0,"missing_group_key":0,"suppressed":0,"expired_suppressions":0,
        "correlation_alerts":0,"correlation_updates":0,"watermark_ms":null}}"#;
    let note = f.det.restore(text.as_bytes()).unwrap();
    assert!(note.is_some_and(|n| n.contains("version 2")));
    assert_eq!(f.wm(), Some(NOW + 600_000 - MIN), "the old watermark is the floor");
    assert!(f.det.restore(br#"{"version":1}"#).is_err());
}

#[test]
fn an_event_delivered_three_times_counts_once() {
    let mut f = Feed::new(cfg());
    let a = f.p("a");
    let once = [dl("u", 0, "e1"), dl("u", 5, "e2")];
    for _ in 0..3 {
        for e in &once {
            f.at(a, P, e);
        }
    }
    assert!(f.corr().is_empty(), "{:?}", f.corr());
    assert_eq!(f.det.stats().duplicate_events, 4);
    // A third distinct event completes both windows.
    f.at(a, P, &dl("u", 10, "e3"));
    let c = f.corr();
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c.iter().all(|c| c.count == 3));
    // The temporal rule counts distinct events too: a fresh "other" fires it.
    f.at(a, P, &ev("Other", "u", 20, "o2", ""));
    assert_eq!(f.corr().len(), 3);
}

#[test]
fn the_event_id_filter_is_bounded() {
    let mut f = Feed::new(DetectorConfig { max_event_ids: 2, ..cfg() });
    let a = f.p("a");
    for id in ["e1", "e2", "e3"] {
        f.at(a, P, &dl("u", 0, id));
    }
    assert_eq!(f.det.stats().event_id_evictions, 1);
    // Off: every delivery counts (as before this filter).
    let mut g = Feed::new(DetectorConfig { max_event_ids: 0, ..cfg() });
    let a = g.p("a");
    for _ in 0..3 {
        g.at(a, P, &dl("u", 0, "same"));
    }
    assert_eq!(g.corr().len(), 1);
}

#[test]
fn late_drops_are_counted_against_their_partition() {
    let mut f = Feed::new(cfg());
    let (a, b) = (f.p("a"), f.p("b"));
    f.at(a, P, &dl("u", 600, "a0"));
    f.at(b, P, &dl("v", 600, "b0"));
    // 5 minutes behind b's own newest event, beyond the 1 minute lateness.
    f.at(b, P, &dl("v", 300, "b1"));
    assert_eq!(f.late(), 3, "each of the three correlations of the rule drops it");
    let parts = f.det.partitions();
    let late: Vec<(&str, u64)> = parts.iter().map(|p| (p.name.as_str(), p.late_dropped)).collect();
    assert_eq!(late, [("a", 0), ("b", 3)]);
    let only_late: Vec<(&str, u64)> = f.det.late_drops().collect();
    assert_eq!(only_late, [("b", 3)], "partitions without late drops are left out");
}

/// Screening an event elsewhere and giving the detector only the time of
/// one that matched nothing has exactly the effect of evaluating it.
#[test]
fn screened_unmatched_events_act_as_evaluated_ones() {
    let events: Vec<(usize, String)> = (0..200)
        .map(|i| {
            let json = match i % 5 {
                0 => dl(&format!("u{}", i % 3), i * 7, &format!("d{i}")),
                1 => ev("Other", &format!("u{}", i % 3), i * 7 + 2, &format!("o{i}"), ""),
                _ => ev("Unrelated", "x", i * 7 - 90, &format!("n{i}"), ""),
            };
            ((i % 2) as usize, json)
        })
        .collect();
    let mut full = Feed::new(cfg());
    let mut screened = Feed::new(cfg());
    let set = set();
    let mut scratch = set.scratch();
    let mut matches = Vec::new();
    let parts = |f: &mut Feed| [f.p("a"), f.p("b")];
    let (pf, ps) = (parts(&mut full), parts(&mut screened));
    let mut unmatched = 0;
    for (p, json) in &events {
        full.at(pf[*p], P, json);
        let s = Detector::screen(&set, EventClass::CloudTrail, json, &mut scratch, &mut matches).unwrap();
        if s.matched {
            screened.at(ps[*p], P, json);
        } else {
            unmatched += 1;
            screened.det.process_unmatched(ps[*p], s.event_time_ms, P, &mut screened.out);
        }
    }
    assert_eq!(unmatched, 120);
    assert!(!full.corr().is_empty());
    assert_eq!(format!("{:?}", full.out), format!("{:?}", screened.out));
    assert_eq!(full.det.snapshot(), screened.det.snapshot());
}

/// (rule, group, count, window start and end, dedup key, update) of an alert.
type AlertKey = (usize, Vec<(String, String)>, u64, i64, i64, String, bool);

/// Every correlation alert's [`AlertKey`], sorted.
fn alerts(c: &[CorrelationAlert]) -> Vec<AlertKey> {
    let mut v: Vec<_> = c
        .iter()
        .map(|a| {
            (a.rule, a.group.clone(), a.count, a.window_start_ms, a.window_end_ms, a.dedup_key.clone(), a.is_update)
        })
        .collect();
    v.sort();
    v
}

/// Two Kinesis shards merge into one: the child's engine restores both
/// parents' snapshots and decides their windows as one engine that read
/// everything would.
#[test]
fn a_merge_child_restores_both_parents_windows() {
    // u's downloads are on shard a, v's on shard b (keyed by principal).
    let before_a = [dl("u", 0, "a0"), dl("u", 5, "a1"), ev("Other", "x", 6, "a2", "x")];
    let before_b = [dl("v", 1, "b0"), dl("v", 7, "b1"), dl("w", 8, "b2")];
    // (x and w: one shard each, as with the principal as partition key.)
    let after = [dl("u", 20, "c0"), dl("v", 21, "c1"), dl("w", 22, "c2"), ev("Other", "w", 23, "c3", "y")];

    // One engine reading everything (a replay).
    let mut one = Feed::new(cfg());
    let (a, b) = (one.p("shard-a"), one.p("shard-b"));
    for (x, y) in before_a.iter().zip(&before_b) {
        one.at(a, P, x);
        one.at(b, P, y);
    }
    let mut out = Vec::new();
    one.det.close_partition(a, &mut out);
    one.det.close_partition(b, &mut out);
    let c = one.p("shard-c");
    for e in &after {
        one.at(c, P, e);
    }
    one.det.flush(&mut one.out);
    let want = alerts(&one.corr());
    assert!(want.iter().any(|w| w.1[0].1 == "u") && want.iter().any(|w| w.1[0].1 == "v"), "{want:?}");

    // Each parent on its own engine, to SHARD_END; the child restores both.
    let parent = |name: &str, evs: &[String]| {
        let mut f = Feed::new(cfg());
        let p = f.p(name);
        for e in evs {
            f.at(p, P, e);
        }
        let mut out = Vec::new();
        f.det.close_partition(p, &mut out);
        assert!(f.corr().is_empty());
        f.det.snapshot()
    };
    let (sa, sb) = (parent("shard-a", &before_a), parent("shard-b", &before_b));
    let child = |snaps: &[&[u8]]| {
        let mut f = Feed::new(cfg());
        assert_eq!(f.det.restore_merged(snaps).unwrap(), None);
        let c = f.p("shard-c");
        for e in &after {
            f.at(c, P, e);
        }
        f.det.flush(&mut f.out);
        (alerts(&f.corr()), f.det.stats())
    };
    let (got, stats) = child(&[&sa, &sb]);
    assert_eq!(got, want);
    assert_eq!(stats.late_dropped, 0);
    // One parent only (the state before merges were restored): v's and w's windows are lost.
    let (one_parent, _) = child(&[&sa]);
    assert_ne!(one_parent, want);
    assert!(!one_parent.iter().any(|w| w.1[0].1 == "v"), "{one_parent:?}");
    // No snapshot: nothing restored; the same as a fresh engine.
    let mut f = Feed::new(cfg());
    assert_eq!(f.det.restore_merged(&[]).unwrap(), None);
    assert_eq!(f.det.stats().keys, 0);
}

/// A group in both parents (both children of an earlier split inherited it):
/// the copy that saw an event last wins, so its count is not doubled.
#[test]
fn a_group_in_both_merged_snapshots_is_taken_from_the_newer() {
    let mut base = Feed::new(cfg());
    let p = base.p("shard-0");
    base.at(p, P, &dl("u", 0, "x0"));
    let grand = base.det.snapshot();
    // Split: both children start from the grandparent's state; u went on in child 1.
    let child = |name: &str, evs: &[String]| {
        let mut f = Feed::new(cfg());
        f.det.restore(&grand).unwrap();
        let p = f.p(name);
        for e in evs {
            f.at(p, P, e);
        }
        f.det.snapshot()
    };
    let s1 = child("shard-1", &[dl("u", 3, "x1")]);
    let s2 = child("shard-2", &[dl("v", 4, "y1")]);
    for order in [[&s1[..], &s2[..]], [&s2[..], &s1[..]]] {
        let mut f = Feed::new(cfg());
        f.det.restore_merged(&order).unwrap();
        let p = f.p("shard-3");
        // u: 2 counted before (x0, x1), this is the 3rd: event_count fires once.
        f.at(p, P, &dl("u", 6, "x2"));
        let c = f.corr();
        let bulk: Vec<_> = c.iter().filter(|a| a.rule == 0).collect();
        assert_eq!(bulk.len(), 1, "{c:?}");
        assert_eq!(bulk[0].count, 3);
    }
    // Snapshots of other rules are refused.
    let mut f = Feed::new(cfg());
    let other = s1.clone();
    let text = String::from_utf8(other).unwrap().replace("corr-bulk", "corr-else");
    assert!(f.det.restore_merged(&[&s1, text.as_bytes()]).is_err());
}
