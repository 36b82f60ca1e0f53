//! `first_seen` (our new-terms extension): silent learning, forgetting after
//! `history`, out-of-order events, the memory bound, snapshots taken in the
//! middle of learning, and the compile errors.

mod support;

use std::sync::Arc;

use support::correlations as corr;
use trailwatch_rules::{CompileOptions, CorrelationAlert, Detector, DetectorConfig, EventClass, RuleFile, RuleSet};

const DAY: i64 = 86_400;

const RULES: &str = r#"
title: layer download
id: base-download
name: layer_download
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: new principal x repository
id: fs-pull
level: low
correlation:
  type: first_seen
  rules: [layer_download]
  group-by: [userIdentity.arn, requestParameters.repositoryName]
  history: 14d
  learning: 2d
"#;

fn set(text: &str) -> Arc<RuleSet> {
    support::load("fs.yml", text, &CompileOptions::default())
}

/// A layer download by `who` from `repo`, `secs` after 2023-11-14T22:13:20Z.
fn pull(who: &str, repo: &str, secs: i64, id: &str) -> String {
    format!(
        r#"{{"eventName":"GetDownloadUrlForLayer","eventID":"{id}","eventTime":"{}","userIdentity":{{"arn":"{who}"}},"requestParameters":{{"repositoryName":"{repo}"}}}}"#,
        support::event_time(secs)
    )
}

/// The correlation alerts of `events`, flushed at the end.
fn run(det: &mut Detector, events: &[String]) -> Vec<CorrelationAlert> {
    let mut out = support::process(det, events);
    det.flush(&mut out);
    corr(&out)
}

fn groups(alerts: &[CorrelationAlert]) -> Vec<Vec<String>> {
    alerts.iter().map(|a| a.group.iter().map(|(_, v)| v.clone()).collect()).collect()
}

#[test]
fn nothing_fires_while_learning_then_only_new_combinations() {
    let s = set(RULES);
    let mut det = Detector::new(Arc::clone(&s), DetectorConfig::default());
    let mut evs = Vec::new();
    // Learning: 2 days of event time from the first event the rule sees,
    // with many combinations that are all new to it.
    for i in 0..40 {
        evs.push(pull(&format!("node-{}", i % 5), &format!("repo-{}", i % 8), i * 3600, &format!("l{i}")));
    }
    // The last second of learning is still learning.
    evs.push(pull("alice", "secret", 2 * DAY - 1, "edge"));
    let during = run(&mut det, &evs);
    assert!(during.is_empty(), "learning is silent: {during:?}");
    assert_eq!(det.stats().baseline_learning_rules, 1);

    let after = vec![
        pull("node-1", "repo-1", 2 * DAY + 10, "a1"), // learned
        pull("alice", "secret", 2 * DAY + 20, "a2"),  // learned at the edge
        pull("bob", "repo-1", 2 * DAY + 30, "a3"),    // new principal
        pull("node-1", "repo-9", 2 * DAY + 40, "a4"), // known principal, new repository
        pull("bob", "repo-1", 2 * DAY + 50, "a5"),    // bob x repo-1 is now known
    ];
    let got = run(&mut det, &after);
    assert_eq!(groups(&got), vec![vec!["bob", "repo-1"], vec!["node-1", "repo-9"]]);
    assert_eq!(got[0].sample_event_ids, vec!["a3"]);
    assert_eq!(got[0].count, 1);
    assert_eq!(got[0].window_start_ms, (1_700_000_000 + 2 * DAY + 30) * 1000);
    assert!(!got[0].is_update);
    assert_eq!(
        got[0].group.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["userIdentity.arn", "requestParameters.repositoryName"]
    );
    let st = det.stats();
    assert_eq!(st.baseline_learning_rules, 0);
    assert_eq!(st.correlation_alerts, 2);
    assert_eq!(st.baseline_entries, 5 * 8 + 1 + 2, "every distinct combination is remembered once");
}

#[test]
fn learning_starts_at_the_first_event_the_rule_sees() {
    let s = set(RULES);
    let mut det = Detector::new(Arc::clone(&s), DetectorConfig::default());
    // Events no first_seen rule reads do not start its learning.
    let other = r#"{"eventName":"ListUsers","eventTime":"2023-11-14T22:13:20Z"}"#.to_string();
    let mut evs = vec![other];
    evs.push(pull("a", "r", 3 * DAY, "1"));
    evs.push(pull("b", "r", 4 * DAY, "2")); // 1 day into learning
    evs.push(pull("c", "r", 5 * DAY, "3")); // learning is [3d, 5d): this one is after it
    let got = run(&mut det, &evs);
    assert_eq!(groups(&got), vec![vec!["c", "r"]], "learning is [first, first + 2d)");
}

#[test]
fn combinations_are_forgotten_after_history() {
    let text = RULES.replace("history: 14d", "history: 3d").replace("learning: 2d", "learning: 1h");
    let s = set(&text);
    let mut det = Detector::new(Arc::clone(&s), DetectorConfig::default());
    let evs = vec![
        pull("alice", "web", 0, "1"),               // learned
        pull("alice", "web", DAY, "2"),             // seen again: last seen = 1d
        pull("alice", "web", DAY + 3 * DAY, "3"),   // exactly history after: still known
        pull("bob", "web", DAY, "4"),               // new (after learning)
        pull("bob", "web", DAY + 3 * DAY + 1, "5"), // 3d + 1s after: forgotten → new again
        pull("alice", "web", 8 * DAY, "6"),         // last seen at 4d, 4d before: forgotten → new
    ];
    let got = run(&mut det, &evs);
    let ids: Vec<&str> = got.iter().map(|a| a.sample_event_ids[0].as_str()).collect();
    assert_eq!(ids, ["4", "5", "6"]);
    // The repeat is a new finding (another dedup bucket), not an update.
    assert_ne!(got[0].dedup_key, got[1].dedup_key);
}

#[test]
fn an_event_older_than_what_was_seen_is_not_new() {
    let text = RULES.replace("learning: 2d", "learning: 1h");
    let s = set(&text);
    let mut det = Detector::new(Arc::clone(&s), DetectorConfig::default());
    let evs = vec![
        pull("x", "seed", 0, "0"),
        pull("bob", "web", 2 * DAY, "late-arriving-first"),
        pull("bob", "web", 2 * DAY - 600, "earlier-time"),
    ];
    let got = run(&mut det, &evs);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sample_event_ids, vec!["late-arriving-first"]);
}

/// A stream crossing the end of learning, cut at every position: snapshot,
/// restore into a fresh detector, resume → the alerts of an uninterrupted run.
#[test]
fn snapshot_restore_in_the_middle_of_learning_matches_an_uninterrupted_run() {
    let s = set(RULES);
    let mut evs = Vec::new();
    for i in 0..60i64 {
        // 6 principals x 5 repositories over 4 days; learning ends at day 2.
        let who = format!("p{}", (i * 7) % 6);
        let repo = format!("r{}", (i * 3) % 5 + i / 30);
        evs.push(pull(&who, &repo, i * 5400, &format!("e{i}")));
    }
    let whole = run(&mut Detector::new(Arc::clone(&s), DetectorConfig::default()), &evs);
    // After learning (from event 32 on) only repository r5 is new to each principal.
    assert_eq!(whole.len(), 6, "{whole:?}");
    assert!(whole.iter().all(|a| a.group[1].1 == "r5"));
    for cut in 0..=evs.len() {
        let mut a = Detector::new(Arc::clone(&s), DetectorConfig::default());
        let mut first = run_no_flush(&mut a, &evs[..cut]);
        let snap = a.snapshot();
        let mut b = Detector::new(Arc::clone(&s), DetectorConfig::default());
        b.restore(&snap).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        first.extend(run(&mut b, &evs[cut..]));
        assert_eq!(first, whole, "cut at {cut}");
    }
    // Restored mid-learning, the detector still learns: the learning start
    // came with the snapshot, it did not restart at the next event.
    let mut a = Detector::new(Arc::clone(&s), DetectorConfig::default());
    run_no_flush(&mut a, &evs[..3]);
    let snap: serde_json::Value = serde_json::from_slice(&a.snapshot()).unwrap();
    assert_eq!(snap["baselines"][0]["start"], serde_json::json!(1_700_000_000_000i64));
}

fn run_no_flush(det: &mut Detector, events: &[String]) -> Vec<CorrelationAlert> {
    corr(&support::process(det, events))
}

#[test]
fn memory_is_bounded_oldest_evicted_and_counted() {
    let text = RULES.replace("learning: 2d", "learning: 1d");
    let s = set(&text);
    let cfg = DetectorConfig { max_baseline_entries: 100, ..DetectorConfig::default() };
    let mut det = Detector::new(Arc::clone(&s), cfg);
    // 150 combinations while learning, one a minute: the oldest go.
    let evs: Vec<String> = (0..150).map(|i| pull(&format!("p{i}"), "r", i * 60, &format!("e{i}"))).collect();
    assert!(run(&mut det, &evs).is_empty());
    let st = det.stats();
    assert!(st.baseline_entries <= 100, "{st:?}");
    assert!(st.baseline_evictions >= 50, "{st:?}");
    assert_eq!(st.baseline_entries + st.baseline_evictions, 150);
    // After learning: the newest combination is remembered, the oldest was
    // forgotten early and is reported again (the cost of the bound).
    let got = run(&mut det, &[pull("p149", "r", DAY + 10, "n1"), pull("p0", "r", DAY + 20, "o1")]);
    assert_eq!(groups(&got), vec![vec!["p0", "r"]]);
    // Evictions survive a snapshot (they are stats).
    let mut b = Detector::new(Arc::clone(&s), cfg_cap(100));
    b.restore(&det.snapshot()).unwrap();
    assert_eq!(b.stats().baseline_evictions, det.stats().baseline_evictions);
}

fn cfg_cap(n: usize) -> DetectorConfig {
    DetectorConfig { max_baseline_entries: n, ..DetectorConfig::default() }
}

#[test]
fn old_combinations_are_pruned_from_memory() {
    let text = RULES.replace("history: 14d", "history: 1d").replace("learning: 2d", "learning: 1h");
    let s = set(&text);
    let mut det = Detector::new(Arc::clone(&s), DetectorConfig::default());
    let old: Vec<String> = (0..1000).map(|i| pull(&format!("p{i}"), "r", i, &format!("o{i}"))).collect();
    run(&mut det, &old);
    assert_eq!(det.stats().baseline_entries, 1000);
    // Five days later, enough events for a prune pass: the old ones go.
    let new: Vec<String> = (0..5000).map(|i| pull("q", "r", 5 * DAY + i, &format!("n{i}"))).collect();
    run(&mut det, &new);
    assert_eq!(det.stats().baseline_entries, 1);
    assert_eq!(det.stats().baseline_evictions, 0, "pruning by history is not eviction");
}

#[test]
fn processing_time_mode_uses_now() {
    let s = set(RULES);
    let cfg = DetectorConfig { time_mode: trailwatch_rules::TimeMode::ProcessingTime, ..DetectorConfig::default() };
    let mut det = Detector::new(Arc::clone(&s), cfg);
    let mut scratch = s.scratch();
    let mut out = Vec::new();
    // Event times say "learning is over"; the clock says it is not.
    det.process(EventClass::CloudTrail, &pull("a", "r", 0, "1"), 0, &mut scratch, &mut out).unwrap();
    det.process(EventClass::CloudTrail, &pull("b", "r", 9 * DAY, "2"), 1000, &mut scratch, &mut out).unwrap();
    assert!(corr(&out).is_empty());
    det.process(EventClass::CloudTrail, &pull("c", "r", 0, "3"), 3 * DAY * 1000, &mut scratch, &mut out).unwrap();
    assert_eq!(groups(&corr(&out)), vec![vec!["c", "r"]]);
}

#[test]
fn snapshots_without_baselines_still_restore() {
    // A snapshot of a rule set with no first_seen rule has no `baselines`
    // key; restoring it into the same rules works.
    let text = RULES.split("---").next().unwrap().to_string()
        + "---\ntitle: c\nid: c\ncorrelation: {type: event_count, rules: [layer_download], timespan: 1m, condition: {gte: 2}}\n";
    let s = set(&text);
    let det = Detector::new(Arc::clone(&s), DetectorConfig::default());
    let snap = det.snapshot();
    assert!(!String::from_utf8_lossy(&snap).contains("baselines"));
    Detector::new(s, DetectorConfig::default()).restore(&snap).unwrap();
}

#[test]
fn compile_errors_name_the_problem() {
    let err = |extra: &str| {
        let text = format!("{}---\n{extra}", RULES.split("---").next().unwrap());
        RuleSet::load(&[RuleFile { name: "e.yml".into(), text }], &CompileOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let base = "title: f\nid: f\ncorrelation:\n  type: first_seen\n  rules: [layer_download]\n";
    assert!(err(&format!("{base}  group-by: [a]\n")).contains("needs `history`"));
    assert!(err(&format!("{base}  history: 1d\n")).contains("needs `group-by`"));
    assert!(err(&format!("{base}  group-by: [a]\n  history: 1d\n  condition: {{gte: 1}}\n")).contains("no `condition`"));
    assert!(err(&format!("{base}  group-by: [a]\n  history: 1d\n  timespan: 1d\n")).contains("instead of `timespan`"));
    assert!(err(&format!("{base}  group-by: [a]\n  history: soon\n")).contains("history"));
    assert!(err(&format!("{base}  group-by: [a]\n  history: 1d\n  learning: 0d\n")).contains("learning"));
    let chained = format!(
        "{base}  group-by: [a]\n  history: 1d\n---\ntitle: g\nid: g\ncorrelation: {{type: event_count, rules: [f], timespan: 1m, condition: {{gte: 2}}}}\n"
    );
    assert!(err(&chained).contains("first_seen alerts cannot be correlated"), "{}", err(&chained));
    // The default learning period is the history.
    let ok = format!("{}---\n{base}  group-by: [a]\n  history: 3d\n", RULES.split("---").next().unwrap());
    let (s, _) = RuleSet::load(&[RuleFile { name: "o.yml".into(), text: ok }], &CompileOptions::default()).unwrap();
    let fs = s.correlations()[0].first_seen.unwrap();
    assert_eq!((fs.history_ms, fs.learning_ms), (3 * DAY * 1000, 3 * DAY * 1000));
}
