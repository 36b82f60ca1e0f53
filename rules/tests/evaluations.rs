//! Per-rule evaluation counts (`Scratch::drain_evaluations`): a rule counts
//! once per event it was tried on after the rule index, whether it matched
//! or not; rules the index skips do not count.

use std::collections::BTreeMap;

use trailwatch_rules::{CompileOptions, EventClass, RuleFile, RuleSet};

const RULES: &str = r#"
title: indexed on StopLogging
id: indexed
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: StopLogging}
    condition: sel
---
title: not indexed (pins no field, tried on every CloudTrail event)
id: always
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode|startswith: AccessDenied}
    condition: sel
---
title: indexed on another field it pins (errorCode)
id: by_error
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
---
title: ECR events only
id: ecr
logsource: {product: aws, service: ecr}
detection:
    sel: {detail-type: ECR Image Scan}
    condition: sel
"#;

fn drained(set: &RuleSet, scratch: &mut trailwatch_rules::Scratch) -> BTreeMap<String, u64> {
    let mut got = BTreeMap::new();
    scratch.drain_evaluations(|rule, n| {
        got.insert(set.rule(rule).meta.id.clone(), n);
    });
    got
}

#[test]
fn evaluations_count_rules_tried_after_the_index_and_reset_when_drained() {
    let files = [RuleFile { name: "r.yml".into(), text: RULES.into() }];
    let (set, _) = RuleSet::load(&files, &CompileOptions::default()).unwrap();
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let events = [
        r#"{"eventName":"StopLogging"}"#,
        r#"{"eventName":"StopLogging","errorCode":"AccessDenied"}"#,
        r#"{"eventName":"ListUsers","errorCode":"AccessDenied"}"#,
        r#"{"eventName":"ListUsers"}"#,
    ];
    for e in events {
        set.eval(EventClass::CloudTrail, e, &mut scratch, &mut out).unwrap();
    }
    // 3 of the 4 events matched something; evaluation counts every try.
    assert_eq!(out.len(), 6, "{out:?}");
    let got = drained(&set, &mut scratch);
    let want: BTreeMap<String, u64> =
        [("indexed".to_string(), 2), ("always".to_string(), 4), ("by_error".to_string(), 2)].into_iter().collect();
    assert_eq!(got, want, "the ECR rule never sees a CloudTrail event");

    assert!(drained(&set, &mut scratch).is_empty(), "drained counts start again from zero");
    set.eval(EventClass::Ecr, r#"{"detail-type":"ECR Image Scan"}"#, &mut scratch, &mut out).unwrap();
    assert_eq!(drained(&set, &mut scratch), [("ecr".to_string(), 1)].into_iter().collect());
}

/// Rules `[rules] disabled` (or min_level, status) leaves out report nothing;
/// when no correlation uses them they are not tried at all: a repository's
/// noisy hunting rules cost nothing once left out.
#[test]
fn rules_left_out_and_used_by_no_correlation_are_never_tried() {
    let files = [RuleFile { name: "r.yml".into(), text: RULES.into() }];
    let select = trailwatch_rules::RuleSelect {
        disabled: ["always".to_string(), "by_error".to_string()].into(),
        ..Default::default()
    };
    let (set, _) = RuleSet::load(&files, &CompileOptions { select, ..Default::default() }).unwrap();
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let mut unfiltered = Vec::new();
    for e in [r#"{"eventName":"StopLogging","errorCode":"AccessDenied"}"#, r#"{"eventName":"ListUsers"}"#] {
        set.eval(EventClass::CloudTrail, e, &mut scratch, &mut out).unwrap();
        set.eval_unfiltered(EventClass::CloudTrail, e, &mut set.scratch(), &mut unfiltered).unwrap();
    }
    // Without the selection the first event would match all three.
    assert_eq!(out.iter().map(|r| set.rule(*r).meta.id.as_str()).collect::<Vec<_>>(), ["indexed"]);
    assert_eq!(unfiltered, out, "the unindexed path skips them too");
    let got = drained(&set, &mut scratch);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["indexed"], "{got:?}");
}

/// A correlation left out is fed nothing, and neither is a correlation only
/// it used; their base rules (quiet: `generate: false`) are then not tried
/// either. A base rule another live correlation uses still is.
#[test]
fn correlations_left_out_and_what_only_they_use_are_never_fed() {
    let chain = r#"
title: many errors
id: errs
name: errs
correlation: {type: event_count, rules: [by_error], group-by: [userIdentity.arn], timespan: 10m, condition: {gte: 2}}
---
title: errors then stop
id: errs-then-stop
correlation: {type: temporal, rules: [errs, indexed], group-by: [userIdentity.arn], timespan: 1h}
---
title: many stops
id: stops
correlation: {type: event_count, rules: [indexed], group-by: [userIdentity.arn], timespan: 10m, condition: {gte: 2}}
"#;
    let files = [RuleFile { name: "r.yml".into(), text: format!("{RULES}---{chain}") }];
    let load = |disabled: &[&str]| {
        let select = trailwatch_rules::RuleSelect {
            disabled: disabled.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        RuleSet::load(&files, &CompileOptions { select, ..Default::default() }).unwrap().0
    };
    let id = |set: &RuleSet, i: usize| set.correlations()[i].meta.id.clone();
    let fed = |set: &RuleSet, rule: &str| -> Vec<String> {
        let r = set.rules().iter().position(|r| r.meta.id == rule).unwrap() as u32;
        set.detection_consumers(r).iter().map(|&(ci, _)| id(set, ci)).collect()
    };
    let tried = |set: &RuleSet| {
        let mut scratch = set.scratch();
        let e = r#"{"eventName":"StopLogging","errorCode":"AccessDenied"}"#;
        set.eval(EventClass::CloudTrail, e, &mut scratch, &mut Vec::new()).unwrap();
        drained(set, &mut scratch).into_keys().collect::<Vec<_>>()
    };

    let all = load(&[]);
    assert_eq!(fed(&all, "by_error"), ["errs"]);
    assert_eq!(fed(&all, "indexed"), ["errs-then-stop", "stops"]);
    assert_eq!(all.correlation_consumers(0).iter().map(|&(c, _)| id(&all, c)).collect::<Vec<_>>(), ["errs-then-stop"]);
    assert_eq!(tried(&all), ["always", "by_error", "indexed"]);

    // The outer correlation off: the inner one only fed it, so it is fed
    // nothing, nor is its base rule tried; `indexed` still feeds `stops`.
    let off = load(&["errs-then-stop"]);
    assert!(fed(&off, "by_error").is_empty());
    assert_eq!(fed(&off, "indexed"), ["stops"]);
    assert!(off.correlation_consumers(0).is_empty());
    assert_eq!(tried(&off), ["always", "indexed"]);

    // Only the inner one off: the outer still needs it, so it is still fed
    // (and reports nothing itself).
    let inner_off = load(&["errs"]);
    assert_eq!(fed(&inner_off, "by_error"), ["errs"]);
    assert!(!inner_off.correlation_emits(0));
    assert_eq!(tried(&inner_off), ["always", "by_error", "indexed"]);

    // Every correlation off: their quiet base rules are not tried at all.
    assert_eq!(tried(&load(&["errs-then-stop", "stops"])), ["always"]);
}

/// A rule repository as SOC teams point the detector at it: thousands of
/// public-style rules for every log source (process creation with regexes,
/// registry, Linux, Azure, Okta, ...), a few of them for AWS.
fn repository(n: usize) -> Vec<RuleFile> {
    let sources = [
        "product: windows, category: process_creation",
        "product: windows, category: registry_set",
        "product: windows, service: security",
        "product: linux, category: process_creation",
        "product: linux, service: auditd",
        "product: macos, category: file_event",
        "product: azure, service: activitylogs",
        "product: gcp, service: gcp.audit",
        "product: okta, service: okta",
        "product: m365, service: audit",
        "category: proxy",
        "category: dns",
    ];
    (0..n)
        .map(|i| {
            let detection = match i % 4 {
                0 => format!("sel: {{Image|endswith: '\\tool{i}.exe', CommandLine|contains|all: [' -a', ' -b{i}']}}"),
                // The Unicode class that once went past the regex size limit.
                1 => format!("sel: {{CommandLine|re: '-k{i}\\s\\w{{1,64}}(?:\\s?(?:-p|-s))?'}}"),
                2 => format!("sel: {{CommandLine|windash|contains: ' -enc{i} '}}"),
                _ => format!("sel: {{TargetObject|contains: '\\Run{i}', Details|base64offset|contains: 'x{i}'}}"),
            };
            let text = format!(
                "title: rule {i}\nid: public-{i}\nlogsource: {{{}}}\ndetection:\n    {detection}\n    condition: sel\n",
                sources[i % sources.len()]
            );
            RuleFile { name: format!("public/{i}.yml"), text }
        })
        .collect()
}

/// Rules in the repository (debug builds compile 300 Unicode `\w{1,64}` regexes slowly).
const N: usize = 1_200;

#[test]
fn a_repository_of_rules_for_other_log_sources_loads_and_costs_nothing_per_event() {
    let mut files = repository(N);
    // A proxy rule's keyword that CloudTrail text holds: it must not fire on CloudTrail.
    files.push(RuleFile {
        name: "proxy.yml".into(),
        text: "title: proxy\nid: proxy\nlogsource: {category: proxy}\ndetection:\n    keywords: [StopLogging]\n    condition: keywords\n".into(),
    });
    let aws = RuleFile { name: "aws.yml".into(), text: RULES.into() };
    files.push(aws.clone());
    let (set, warnings) = RuleSet::load(&files, &CompileOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.rules().len(), N + 5, "every rule compiles");
    // Each of the others is said once, as not read (a category without `product: aws` too).
    assert_eq!(warnings.len(), N + 1, "{:?}", &warnings[..3]);
    assert!(
        warnings.iter().all(|w| w.unread_source.is_some()),
        "{:?}",
        warnings.iter().find(|w| w.unread_source.is_none())
    );

    let (alone, _) = RuleSet::load(std::slice::from_ref(&aws), &CompileOptions::default()).unwrap();
    let events = [
        r#"{"eventName":"StopLogging","CommandLine":"x -k1 abc -p","Image":"c:\\tool0.exe"}"#,
        r#"{"eventName":"ListUsers","errorCode":"AccessDenied","CommandLine":" -enc2 "}"#,
        r#"{"eventName":"ListUsers","TargetObject":"HKLM\\Run3"}"#,
    ];
    let ids = |set: &RuleSet, class: EventClass| {
        let mut scratch = set.scratch();
        let mut out = Vec::new();
        for e in events {
            set.eval(class, e, &mut scratch, &mut out).unwrap();
        }
        let matched: Vec<String> = out.iter().map(|r| set.rule(*r).meta.id.clone()).collect();
        (matched, drained(set, &mut scratch), set.unindexed_rules(class))
    };
    for class in [EventClass::CloudTrail, EventClass::Ecr] {
        // Same matches, same rules tried, same rules outside the index: the
        // others are in no class and are never looked at.
        assert_eq!(ids(&set, class), ids(&alone, class), "{class:?}");
    }
}
