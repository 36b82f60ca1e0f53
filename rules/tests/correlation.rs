//! Correlation rules over event time: window edges, disorder, lateness,
//! caps, ordering, aliases, chains, generate, dedup, suppression, restore.

mod support;

use std::sync::Arc;

use support::{correlations as corr, process as run};
use trailwatch_rules::{Alert, CompileOptions, Detector, DetectorConfig, EventClass, RuleFile, RuleSet, Suppression};

const BASE: &str = r#"
title: layer download
id: base-download
name: layer_download
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: denied
id: base-denied
name: denied
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {errorCode: AccessDenied}
  condition: sel
---
title: stop logging
id: base-stop
name: stop_logging
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: StopLogging}
  condition: sel
---
title: delete trail
id: base-delete
name: delete_trail
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: DeleteTrail}
  condition: sel
"#;

fn set(extra: &str) -> Arc<RuleSet> {
    let text = format!("{BASE}---\n{extra}");
    support::load(
        "c.yml",
        &text,
        &CompileOptions { extra_fields: vec!["sourceIPAddress".into()], ..CompileOptions::default() },
    )
}

fn ev(name: &str, who: &str, secs: i64, id: &str) -> String {
    ev_with(name, who, secs, id, "")
}

fn ev_with(name: &str, who: &str, secs: i64, id: &str, extra: &str) -> String {
    let time = support::event_time(secs);
    format!(r#"{{"eventName":"{name}","eventID":"{id}","eventTime":"{time}","userIdentity":{{"arn":"{who}"}}{extra}}}"#)
}

const COUNT3: &str = r#"
title: bulk downloads
id: corr-bulk
level: high
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 60s
  condition: {gte: 3}
"#;

/// Fewer than 3 downloads of one principal in 60 s (fires when the window closes).
const FEW_DOWNLOADS: &str = r#"
title: few downloads
id: corr-few
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 60s
  condition: {lt: 3}
"#;

#[test]
fn event_count_window_edges() {
    let s = set(COUNT3);
    // Exactly at the timespan: t=0, 30, 60 → one window [0, 60] holds 3.
    let mut d = Detector::new(s.clone(), DetectorConfig::default());
    let out = run(
        &mut d,
        &[
            ev("GetDownloadUrlForLayer", "a", 0, "1"),
            ev("GetDownloadUrlForLayer", "a", 30, "2"),
            ev("GetDownloadUrlForLayer", "a", 60, "3"),
        ],
    );
    let c = corr(&out);
    assert_eq!(c.len(), 1, "{out:?}");
    assert_eq!(c[0].count, 3);
    assert_eq!(c[0].window_end_ms - c[0].window_start_ms, 60_000);
    assert_eq!(c[0].group, vec![("userIdentity.arn".to_string(), "a".to_string())]);
    assert_eq!(c[0].sample_event_ids, vec!["1", "2", "3"]);
    // One second past: t=0, 30, 61 → no window of 60 s holds 3.
    let mut d = Detector::new(s.clone(), DetectorConfig::default());
    let out = run(
        &mut d,
        &[
            ev("GetDownloadUrlForLayer", "a", 0, "1"),
            ev("GetDownloadUrlForLayer", "a", 30, "2"),
            ev("GetDownloadUrlForLayer", "a", 61, "3"),
        ],
    );
    assert!(corr(&out).is_empty());
    // Other principals do not add up; base rules are hidden (generate: false).
    let mut d = Detector::new(s, DetectorConfig::default());
    let out = run(
        &mut d,
        &[
            ev("GetDownloadUrlForLayer", "a", 0, "1"),
            ev("GetDownloadUrlForLayer", "b", 1, "2"),
            ev("GetDownloadUrlForLayer", "a", 2, "3"),
        ],
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn fires_once_per_burst_not_per_event() {
    let mut d = Detector::new(set(COUNT3), DetectorConfig::default());
    let evs: Vec<String> = (0..10).map(|i| ev("GetDownloadUrlForLayer", "a", i, &i.to_string())).collect();
    let c = corr(&run(&mut d, &evs));
    // 10 events, threshold 3: windows of 3 events each fire, the repeats are
    // updates of the same finding (same dedup key) with a growing count.
    assert_eq!(c.iter().filter(|a| !a.is_update).count(), 1);
    assert!(c.iter().all(|a| a.dedup_key == c[0].dedup_key));
    assert_eq!(c.last().unwrap().count, 9);
}

#[test]
fn out_of_order_burst_fires_by_event_time() {
    // The burst arrives shuffled and interleaved with older events, as
    // CloudTrail files do; arrival order would miss it.
    let mut d = Detector::new(set(COUNT3), DetectorConfig::default());
    let out = run(
        &mut d,
        &[
            ev("GetDownloadUrlForLayer", "a", 100, "x1"),
            ev("GetDownloadUrlForLayer", "a", 10, "x2"),
            ev("GetDownloadUrlForLayer", "a", 300, "x3"),
            ev("GetDownloadUrlForLayer", "a", 40, "x4"),
            ev("GetDownloadUrlForLayer", "a", 250, "x5"),
            ev("GetDownloadUrlForLayer", "a", 30, "x6"),
        ],
    );
    let c = corr(&out);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].window_start_ms % 1000, 0);
    assert_eq!((c[0].window_end_ms - c[0].window_start_ms) / 1000, 30, "window [10, 40]");
}

#[test]
fn late_events_are_dropped_and_counted() {
    let cfg = DetectorConfig { allowed_lateness_ms: 60_000, ..DetectorConfig::default() };
    let mut d = Detector::new(set(COUNT3), cfg);
    let out = run(
        &mut d,
        &[
            ev("GetDownloadUrlForLayer", "a", 1000, "1"),
            // Older than the watermark (1000 - 60): dropped.
            ev("GetDownloadUrlForLayer", "b", 100, "2"),
            ev("GetDownloadUrlForLayer", "b", 101, "3"),
            ev("GetDownloadUrlForLayer", "b", 102, "4"),
        ],
    );
    assert!(corr(&out).is_empty());
    assert_eq!(d.stats().late_dropped, 3);
}

#[test]
fn value_count_distinct_apis_denied() {
    let rule = r#"
title: enumeration
id: corr-enum
correlation:
  type: value_count
  rules: [denied]
  group-by: [userIdentity.arn]
  timespan: 10m
  condition: {gte: 3, field: eventName}
"#;
    let mut d = Detector::new(set(rule), DetectorConfig::default());
    let denied = |n: &str, s, id: &str| ev_with(n, "mallory", s, id, r#","errorCode":"AccessDenied""#);
    let out = run(&mut d, &[denied("ListUsers", 0, "1"), denied("ListUsers", 1, "2"), denied("ListRoles", 2, "3")]);
    assert!(corr(&out).is_empty(), "2 distinct APIs only");
    let out = run(&mut d, &[denied("LISTROLES", 3, "4"), denied("GetSecretValue", 4, "5")]);
    let c = corr(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].count, 3);
}

#[test]
fn temporal_ordered_and_unordered() {
    let ordered = r#"
title: stop then delete
id: corr-seq
correlation:
  type: temporal_ordered
  rules: [stop_logging, delete_trail]
  group-by: [userIdentity.arn]
  timespan: 5m
"#;
    let mut d = Detector::new(set(ordered), DetectorConfig::default());
    assert!(
        corr(&run(&mut d, &[ev("DeleteTrail", "a", 0, "1"), ev("StopLogging", "a", 10, "2")])).is_empty(),
        "wrong order"
    );
    let mut d = Detector::new(set(ordered), DetectorConfig::default());
    assert!(
        corr(&run(&mut d, &[ev("StopLogging", "a", 10, "1"), ev("DeleteTrail", "a", 10, "2")])).is_empty(),
        "ties are not ordered"
    );
    let mut d = Detector::new(set(ordered), DetectorConfig::default());
    let c = corr(&run(&mut d, &[ev("StopLogging", "a", 0, "1"), ev("DeleteTrail", "a", 60, "2")]));
    assert_eq!(c.len(), 1);
    // Arrival order does not matter, event time does.
    let mut d = Detector::new(set(ordered), DetectorConfig::default());
    assert_eq!(corr(&run(&mut d, &[ev("DeleteTrail", "a", 60, "2"), ev("StopLogging", "a", 0, "1")])).len(), 1);
    let unordered = ordered.replace("temporal_ordered", "temporal").replace("corr-seq", "corr-any");
    let mut d = Detector::new(set(&unordered), DetectorConfig::default());
    assert_eq!(corr(&run(&mut d, &[ev("DeleteTrail", "a", 0, "1"), ev("StopLogging", "a", 10, "2")])).len(), 1);
    let mut d = Detector::new(set(&unordered), DetectorConfig::default());
    assert!(
        corr(&run(&mut d, &[ev("DeleteTrail", "a", 0, "1"), ev("StopLogging", "a", 400, "2")])).is_empty(),
        "too far apart"
    );
}

#[test]
fn aliases_join_different_fields() {
    let rule = r#"
title: same ip
id: corr-alias
correlation:
  type: temporal
  rules: [stop_logging, delete_trail]
  group-by: [ip]
  timespan: 5m
  aliases:
    ip:
      stop_logging: sourceIPAddress
      delete_trail: requestParameters.callerIp
"#;
    let mut d = Detector::new(set(rule), DetectorConfig::default());
    let out = run(
        &mut d,
        &[
            ev_with("StopLogging", "a", 0, "1", r#","sourceIPAddress":"198.51.100.1""#),
            ev_with("DeleteTrail", "b", 5, "2", r#","requestParameters":{"callerIp":"198.51.100.1"}"#),
        ],
    );
    let c = corr(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].group, vec![("ip".to_string(), "198.51.100.1".to_string())]);
}

#[test]
fn chained_correlations_and_generate() {
    let rule = r#"
title: bulk downloads
id: corr-bulk
name: bulk
generate: true
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 60s
  condition: {gte: 2}
---
title: bulk then stop
id: corr-chain
correlation:
  type: temporal_ordered
  rules: [bulk, stop_logging]
  group-by: [userIdentity.arn]
  timespan: 10m
"#;
    let mut d = Detector::new(set(rule), DetectorConfig::default());
    let out = run(
        &mut d,
        &[
            ev("GetDownloadUrlForLayer", "a", 0, "1"),
            ev("GetDownloadUrlForLayer", "a", 1, "2"),
            ev("StopLogging", "a", 120, "3"),
        ],
    );
    // generate: true → the base detections are reported too.
    let dets = out.iter().filter(|a| matches!(a, Alert::Detection { .. })).count();
    assert_eq!(dets, 2, "{out:?}");
    let c = corr(&out);
    let ids: Vec<&str> = c.iter().map(|a| d.rule_set().correlations()[a.rule].meta.id.as_str()).collect();
    // The inner correlation feeds the outer; only the outer is reported.
    assert_eq!(ids, vec!["corr-chain"], "{c:?}");
}

#[test]
fn lt_conditions_close_with_the_watermark_or_at_flush() {
    let cfg = DetectorConfig { allowed_lateness_ms: 10_000, ..DetectorConfig::default() };
    let mut d = Detector::new(set(FEW_DOWNLOADS), cfg);
    let out = run(&mut d, &[ev("GetDownloadUrlForLayer", "a", 0, "1"), ev("GetDownloadUrlForLayer", "a", 10, "2")]);
    assert!(corr(&out).is_empty(), "window still open");
    // An event far later moves the watermark past [0, 60].
    let out = run(&mut d, &[ev("GetDownloadUrlForLayer", "b", 200, "3")]);
    let c = corr(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].count, 2);
    let mut rest = Vec::new();
    d.flush(&mut rest);
    assert_eq!(corr(&rest).len(), 1, "b's window is decided at end of input");
}

#[test]
fn key_cap_evicts_and_counts() {
    let cfg = DetectorConfig { max_keys: 100, ..DetectorConfig::default() };
    let mut d = Detector::new(set(COUNT3), cfg);
    let evs: Vec<String> =
        (0..1000).map(|i| ev("GetDownloadUrlForLayer", &format!("p{i}"), i, &i.to_string())).collect();
    run(&mut d, &evs);
    let st = d.stats();
    assert!(st.keys <= 100, "{st:?}");
    assert!(st.evictions >= 900, "{st:?}");
}

#[test]
fn suppressions_with_expiry() {
    let now = 1_800_000_000_000i64;
    let cfg = DetectorConfig {
        suppressions: vec![
            Suppression {
                field: "sourceIPAddress".into(),
                cidrs: vec!["10.0.0.0/8".parse_cidr()],
                ..Default::default()
            },
            Suppression {
                field: "sourceIPAddress".into(),
                values: vec!["203.0.113.5".into()],
                expires_ms: Some(now - 1),
                ..Default::default()
            },
        ],
        ..DetectorConfig::default()
    };
    let mut d = Detector::new(set(""), cfg);
    let mut scratch = d.rule_set().scratch();
    let mut out = Vec::new();
    d.process(
        EventClass::CloudTrail,
        &ev_with("StopLogging", "a", 0, "1", r#","sourceIPAddress":"10.1.2.3""#),
        now,
        &mut scratch,
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty(), "allowlisted network");
    d.process(
        EventClass::CloudTrail,
        &ev_with("StopLogging", "a", 0, "2", r#","sourceIPAddress":"203.0.113.5""#),
        now,
        &mut scratch,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 1, "expired entry no longer applies");
    assert_eq!(d.stats().suppressed, 1);
    assert!(d.inert_suppressions().is_empty());
}

trait ParseCidr {
    fn parse_cidr(&self) -> trailwatch_rules::matcher::Cidr;
}
impl ParseCidr for &str {
    fn parse_cidr(&self) -> trailwatch_rules::matcher::Cidr {
        trailwatch_rules::matcher::Cidr::parse(self).unwrap()
    }
}

/// The snapshot tests' detector: 2 minutes of allowed lateness.
fn lateness_2m() -> DetectorConfig {
    DetectorConfig { allowed_lateness_ms: 120_000, ..DetectorConfig::default() }
}

/// One uninterrupted detector of `s` over `events`, flushed, and its alerts.
fn run_flushed(s: &Arc<RuleSet>, events: &[String]) -> (Detector, Vec<Alert>) {
    let mut full = Detector::new(s.clone(), lateness_2m());
    let mut expected = run(&mut full, events);
    full.flush(&mut expected);
    (full, expected)
}

/// Cut `events` at every position: a detector snapshotted at the cut and
/// restored into a fresh one raises `expected`, as the uninterrupted run did.
fn assert_every_cut_restores(s: &Arc<RuleSet>, events: &[String], expected: &[Alert]) {
    for cut in 0..=events.len() {
        let mut a = Detector::new(s.clone(), lateness_2m());
        let mut got = run(&mut a, &events[..cut]);
        let snap = a.snapshot();
        let mut b = Detector::new(s.clone(), lateness_2m());
        b.restore(&snap).unwrap();
        got.extend(run(&mut b, &events[cut..]));
        b.flush(&mut got);
        assert_eq!(got, expected, "cut at {cut}");
    }
}

#[test]
fn snapshot_restore_at_every_cut_matches_an_uninterrupted_run() {
    let rules = format!(
        "{COUNT3}---\n{}",
        r#"
title: stop then delete
id: corr-seq
correlation:
  type: temporal_ordered
  rules: [stop_logging, delete_trail]
  group-by: [userIdentity.arn]
  timespan: 5m
---
title: few downloads
id: corr-few
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 60s
  condition: {lte: 1}
"#
    );
    let s = set(&rules);
    let mut events = Vec::new();
    for i in 0..40i64 {
        let who = ["a", "b", "c"][(i % 3) as usize];
        let t = (i * 37) % 200 + i * 5; // shuffled times
        events.push(ev("GetDownloadUrlForLayer", who, t, &format!("d{i}")));
        if i % 7 == 0 {
            events.push(ev("StopLogging", who, t, &format!("s{i}")));
            events.push(ev("DeleteTrail", who, t + 30, &format!("t{i}")));
        }
    }
    let (_, expected) = run_flushed(&s, &events);
    assert!(corr(&expected).len() >= 3, "the stream must fire some windows: {expected:?}");
    assert_every_cut_restores(&s, &events, &expected);
}

#[test]
fn uuid_ids_millisecond_times_and_value_hashes_survive_snapshots() {
    let rules = r#"
title: many downloads
id: corr-many
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 10m
  condition: {gte: 12}
---
title: enumeration
id: corr-enum
correlation:
  type: value_count
  rules: [denied]
  group-by: [userIdentity.arn]
  timespan: 10m
  condition: {gte: 4, field: eventName}
---"#;
    let s = set(&format!("{rules}{FEW_DOWNLOADS}"));
    let uuid = |i: i64| format!("{:08x}-0000-4000-8000-{:012x}", i * 7919, i);
    let mut events = Vec::new();
    for i in 0..60i64 {
        let who = ["arn:aws:iam::1:user/a", "arn:aws:iam::1:user/b"][(i % 2) as usize];
        let t = (i * 13) % 90 + i * 4;
        // Upper-case UUIDs and other ids are kept as text, canonical UUIDs packed.
        let id = match i % 5 {
            0 => uuid(i).to_uppercase(),
            1 => format!("id-{i}"),
            _ => uuid(i),
        };
        let mut e = ev("GetDownloadUrlForLayer", who, t, &id);
        if i % 4 == 1 {
            // A millisecond time: the group's times switch encoding.
            e = e.replace("Z\"", ".250Z\"");
        }
        events.push(e);
        if i % 3 == 0 {
            let api = ["ListUsers", "ListRoles", "GetSecretValue", "ListKeys", "DescribeTrails"][(i % 5) as usize];
            events.push(ev_with(api, who, t + 1, &uuid(1000 + i), r#","errorCode":"AccessDenied""#));
        }
    }
    let (full, expected) = run_flushed(&s, &events);
    let c = corr(&expected);
    let by = |id: &str| c.iter().filter(|a| full.rule_set().correlations()[a.rule].meta.id == id).count();
    assert!(by("corr-many") >= 2 && by("corr-enum") >= 1 && by("corr-few") >= 1, "{c:?}");
    let many = c.iter().find(|a| full.rule_set().correlations()[a.rule].meta.id == "corr-many").unwrap();
    assert_eq!(many.sample_event_ids.len(), 10, "first five and last five: {many:?}");
    assert!(many.sample_event_ids.iter().all(|id| events.iter().any(|e| e.contains(&format!("\"eventID\":\"{id}\"")))));
    assert_every_cut_restores(&s, &events, &expected);
}

#[test]
fn snapshot_of_other_rules_is_refused() {
    let a = Detector::new(set(COUNT3), DetectorConfig::default());
    let mut b = Detector::new(set(""), DetectorConfig::default());
    assert!(b.restore(&a.snapshot()).unwrap_err().to_string().contains("other correlation rules"));
    assert!(b.restore(b"{\"version\": 99}").unwrap_err().to_string().contains("version 99"));
    assert!(b.restore(b"garbage").is_err());
}

#[test]
fn correlation_errors_name_file_line_and_reason() {
    for (body, want) in [
        (
            "correlation:\n  type: event_count\n  rules: [nope]\n  timespan: 5m\n  condition: {gte: 2}\n",
            "`nope`, which is not loaded",
        ),
        (
            "correlation:\n  type: event_count\n  rules: [denied]\n  timespan: 5 parsecs\n  condition: {gte: 2}\n",
            "unknown unit",
        ),
        (
            "correlation:\n  type: value_count\n  rules: [denied]\n  timespan: 5m\n  condition: {gte: 2}\n",
            "condition.field",
        ),
        (
            "correlation:\n  type: value_sum\n  rules: [denied]\n  timespan: 5m\n  condition: {gte: 2}\n",
            "not supported",
        ),
        ("correlation:\n  type: event_count\n  rules: [denied]\n  timespan: 5m\n", "needs a `condition`"),
    ] {
        let text = format!("{BASE}---\ntitle: bad\nid: bad\n{body}");
        let err = RuleSet::load(&[RuleFile { name: "c.yml".into(), text: text.clone() }], &CompileOptions::default())
            .unwrap_err();
        let e = &err.0[0];
        assert!(e.reason.contains(want), "{e}");
        let doc_start = text.lines().position(|l| l == "title: bad").unwrap() + 1;
        assert!(e.line >= doc_start, "line {} should point into the bad document (from {doc_start})", e.line);
    }
}

#[test]
fn value_count_counts_every_value_an_event_carries() {
    let rule = r#"
title: deletes
id: base-deletes
name: deletes
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: BatchDeleteImage}
  condition: sel
---
title: mass deletion
id: corr-mass
correlation:
  type: value_count
  rules: [deletes]
  group-by: [userIdentity.arn]
  timespan: 10m
  condition: {gte: 5, field: requestParameters.imageIds.imageDigest}
"#;
    let del = |secs, id: &str, digests: &[&str]| {
        let ids: Vec<String> = digests.iter().map(|d| format!(r#"{{"imageDigest":"{d}"}}"#)).collect();
        ev_with(
            "BatchDeleteImage",
            "mallory",
            secs,
            id,
            &format!(r#","requestParameters":{{"imageIds":[{}]}}"#, ids.join(",")),
        )
    };
    let mut d = Detector::new(set(rule), DetectorConfig::default());
    // Three distinct digests in one call, one repeated: 3, not 1 and not 4.
    let out = run(&mut d, &[del(0, "1", &["a", "b", "c", "a"])]);
    assert!(corr(&out).is_empty());
    let out = run(&mut d, &[del(30, "2", &["c", "D"])]);
    assert!(corr(&out).is_empty(), "4 distinct so far");
    let out = run(&mut d, &[del(60, "3", &["e", "f"])]);
    let c = corr(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].count, 5);
    // Each event id is sampled once, not once per value.
    assert_eq!(c[0].sample_event_ids, vec!["1", "2", "3"]);
}

/// A Sigma v1 aggregation: read as an event_count correlation (rules/src/parse/aggregation.rs).
const V1_COUNT: &str = r#"
title: Many listings
id: v1-listing
level: medium
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventName|startswith: List
    timeframe: 10m
    condition: selection | count() by userIdentity.arn > 2
"#;

/// The correlations fired (rule id, count); a detection alert fails the test
/// (the matches of a count rule never alert alone).
fn v1_fired(text: &str, events: &[String]) -> Vec<(String, u64)> {
    let s = support::load("v1.yml", text, &CompileOptions::default());
    let mut d = Detector::new(s.clone(), DetectorConfig::default());
    run(&mut d, events)
        .iter()
        .map(|a| match a {
            Alert::Correlation(c) => (s.correlations()[c.rule].meta.id.clone(), c.count),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_v1_count_rule_fires_as_its_correlation_and_its_matches_stay_quiet() {
    let evs: Vec<String> = (0..3).map(|i| ev("ListBuckets", "arn:a", i * 60, &format!("e{i}"))).collect();
    // `> 2`: the third listing within 10 minutes, under the rule's own id.
    assert_eq!(v1_fired(V1_COUNT, &evs), [("v1-listing".to_string(), 3)]);
    // Two by one principal and one by another: no group reaches 3.
    let mut other = evs.clone();
    other[2] = ev("ListBuckets", "arn:b", 120, "e2");
    assert!(v1_fired(V1_COUNT, &other).is_empty());
    // Out of the timeframe: the first is 11 minutes before the third.
    let mut late = evs.clone();
    late[2] = ev("ListBuckets", "arn:a", 660, "e2");
    assert!(v1_fired(V1_COUNT, &late).is_empty());
}

#[test]
fn a_v1_count_of_a_field_counts_distinct_values_and_no_timeframe_is_said() {
    let text =
        V1_COUNT.replace("    timeframe: 10m\n", "").replace("count() by userIdentity.arn > 2", "count(eventName) > 1");
    let evs = [ev("ListA", "x", 0, "1"), ev("ListA", "y", 1, "2"), ev("ListB", "z", 2, "3")];
    assert_eq!(v1_fired(&text, &evs), [("v1-listing".to_string(), 2)]);
    let file = RuleFile { name: "v1.yml".into(), text };
    let (_, warnings) = RuleSet::load(&[file], &CompileOptions::default()).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].line, 9, "{warnings:?}");
    assert!(warnings[0].message.contains("without `timeframe` counts over 1h"), "{warnings:?}");
}

/// A v1 aggregation refused as a whole (here its id repeats an earlier rule's,
/// as with an old and a new copy of one rule) must not leave its searches
/// behind as a rule that alerts on every match: only the aggregate reported.
#[test]
fn a_refused_v1_aggregation_leaves_no_rule_that_alerts_on_its_matches() {
    let first = "title: Earlier rule\nid: v1-listing\nlogsource: {product: aws, service: cloudtrail}\n\
                 detection:\n    sel:\n        eventName: Nothing\n    condition: sel\n";
    let files = [
        RuleFile { name: "a.yml".into(), text: first.into() },
        RuleFile { name: "b.yml".into(), text: V1_COUNT.into() },
    ];
    let (s, _, errors) = RuleSet::load_skipping(&files, &CompileOptions::default());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].file.as_str(), errors[0].line), ("b.yml", 3), "{errors:?}");
    assert!(errors[0].reason.contains("duplicate rule id `v1-listing`"), "{errors:?}");
    assert!(s.correlations().is_empty());
    let evs: Vec<String> = (0..5).map(|i| ev("ListBuckets", "arn:a", i * 60, &format!("e{i}"))).collect();
    let mut d = Detector::new(Arc::new(s), DetectorConfig::default());
    assert!(run(&mut d, &evs).is_empty(), "the aggregation's searches alerted alone");
}

/// A Sigma 2 correlation that is refused (here a bad timespan) still keeps
/// the rules it silenced (`generate: false`, the default) quiet, and says so:
/// a SOC whose brute-force correlation fails to load must not get every
/// failed login as a finding. With `generate: true` they report as before.
#[test]
fn a_refused_correlation_keeps_the_rules_it_silenced_quiet() {
    let text = |generate: &str| {
        format!(
            "title: a listing\nid: one-list\nlogsource: {{product: aws, service: cloudtrail}}\n\
             detection:\n    sel:\n        eventName|startswith: List\n    condition: sel\n---\n\
             title: many listings\nid: many-lists\ncorrelation:\n    type: event_count\n    rules: [one-list]\n\
             {generate}    timespan: 10 minutes\n    condition: {{gte: 3}}\n"
        )
    };
    let evs: Vec<String> = (0..3).map(|i| ev("ListBuckets", "arn:a", i * 60, &format!("e{i}"))).collect();
    for (generate, alerts) in [("", 0), ("    generate: false\n", 0), ("    generate: true\n", 3)] {
        let files = [RuleFile { name: "c.yml".into(), text: text(generate) }];
        let (s, warnings, errors) = RuleSet::load_skipping(&files, &CompileOptions::default());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].reason.contains("timespan"), "{errors:?}");
        let said = warnings.iter().any(|w| w.message.contains("still report nothing alone: `one-list`"));
        assert_eq!(said, alerts == 0, "{generate:?}: {warnings:?}");
        let mut d = Detector::new(Arc::new(s), DetectorConfig::default());
        assert_eq!(run(&mut d, &evs).len(), alerts, "{generate:?}");
    }
}

/// `[rules] min_level`, `status` and `disabled` (a SOC keeping part of a
/// public repository): a rule left out reports nothing, but still feeds the
/// correlation that uses it; a correlation left out reports nothing.
const SELECTED: &str = r#"
title: one listing (hunting)
id: sel-list
status: experimental
level: low
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventName|startswith: List
    condition: selection
---
title: one deletion
id: sel-delete
level: high
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventName|startswith: Delete
    condition: selection
---
title: many listings
id: sel-many
status: test
level: high
correlation:
    type: event_count
    rules: [sel-list]
    group-by: [userIdentity.arn]
    timespan: 10m
    condition: {gte: 3}
    generate: true
"#;

/// What reports under `select`: per rule id, its detection alerts, or its
/// correlation's count.
fn selected(select: trailwatch_rules::RuleSelect) -> Vec<(String, u64)> {
    let opts = CompileOptions { select, ..Default::default() };
    let s = support::load("sel.yml", SELECTED, &opts);
    let mut evs: Vec<String> = (0..3).map(|i| ev("ListBuckets", "arn:a", i * 60, &format!("l{i}"))).collect();
    evs.push(ev("DeleteBucket", "arn:a", 200, "d"));
    let mut d = Detector::new(s.clone(), DetectorConfig::default());
    let mut out = std::collections::BTreeMap::<String, u64>::new();
    for a in run(&mut d, &evs) {
        match a {
            Alert::Correlation(c) => *out.entry(s.correlations()[c.rule].meta.id.clone()).or_default() += c.count,
            Alert::Detection { rule, .. } => *out.entry(s.rule(rule).meta.id.clone()).or_default() += 1,
        }
    }
    out.into_iter().collect()
}

#[test]
fn rules_left_out_by_level_status_or_id_report_nothing_but_still_feed_correlations() {
    use trailwatch_rules::{Level, RuleSelect};
    let s = |v: &[(&str, u64)]| v.iter().map(|(i, n)| (i.to_string(), *n)).collect::<Vec<_>>();
    // Everything (generate: true: the listings report too).
    assert_eq!(selected(RuleSelect::default()), s(&[("sel-delete", 1), ("sel-list", 3), ("sel-many", 3)]));
    // Below medium: the listings are quiet, the correlation over them still fires.
    let medium = RuleSelect { min_level: Some(Level::Medium), ..Default::default() };
    assert_eq!(selected(medium), s(&[("sel-delete", 1), ("sel-many", 3)]));
    // Only stable/test: the experimental listing rule is quiet; the deletion has no status and reports.
    let tested = RuleSelect { status: vec!["stable".into(), "TEST".into()], ..Default::default() };
    assert_eq!(selected(tested), s(&[("sel-delete", 1), ("sel-many", 3)]));
    // A disabled correlation reports nothing; its base rule still does (generate: true).
    let off = RuleSelect { disabled: ["sel-many".to_string()].into(), ..Default::default() };
    assert_eq!(selected(off), s(&[("sel-delete", 1), ("sel-list", 3)]));
    // What was left out, and why.
    let opts = CompileOptions {
        select: RuleSelect {
            min_level: Some(Level::High),
            disabled: ["sel-many".to_string()].into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let set = support::load("sel.yml", SELECTED, &opts);
    let mut left: Vec<(&str, trailwatch_rules::LeftOut)> = set.left_out().into_iter().map(|(i, _, w)| (i, w)).collect();
    left.sort();
    use trailwatch_rules::LeftOut::{Disabled, Level as Lvl};
    assert_eq!(left, [("sel-list", Lvl), ("sel-many", Disabled)]);
}

/// A correlation chain is bounded (an alert feeds the next link by a call):
/// 16 links load; a 17th is refused with its file and line, and in a
/// skipping load the links below it still run.
#[test]
fn correlation_chains_are_bounded() {
    let base = "title: base\nid: base\nname: base\nlogsource: {product: aws, service: cloudtrail}\n\
                detection:\n    sel: {eventName: StopLogging}\n    condition: sel\n";
    let chain = |n: usize| {
        let mut text = base.to_string();
        for i in 1..=n {
            let prev = if i == 1 { "base".to_string() } else { format!("c{}", i - 1) };
            text.push_str(&format!(
                "---\ntitle: link {i}\nid: c{i}\nname: c{i}\ncorrelation:\n    type: event_count\n    rules: [{prev}]\n    \
                 group-by: [userIdentity.arn]\n    timespan: 1h\n    condition: {{gte: 1}}\n"
            ));
        }
        vec![RuleFile { name: "chain.yml".into(), text }]
    };
    let (set, _) = RuleSet::load(&chain(trailwatch_rules::engine::MAX_CHAIN), &CompileOptions::default()).unwrap();
    assert_eq!(set.correlations().len(), 16);
    let err = RuleSet::load(&chain(17), &CompileOptions::default()).unwrap_err().to_string();
    assert!(err.contains("chain.yml:"), "{err}");
    assert!(err.contains("correlations chained more than 16 deep (this one is link 17)"), "{err}");
    let (set, _, errors) = RuleSet::load_skipping(&chain(17), &CompileOptions::default());
    assert_eq!((set.correlations().len(), errors.len()), (16, 1));
}
