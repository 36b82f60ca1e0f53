//! Sigma filters (Sigma Filters specification 2.0): a `filter` document
//! adds its searches and condition, with `and`, to each detection rule it
//! names by id or name, so a deployment tunes rules it did not write.

use trailwatch_rules::{CompileOptions, EventClass, RuleFile, RuleSet};

const RULES: &str = r#"
title: access key created
id: key-created
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: CreateAccessKey}
    condition: sel
---
title: trail stopped
id: trail-stopped
name: trail_stopped
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: StopLogging}
    by_user: {userIdentity.type: IAMUser}
    condition: all of them
---
title: user deleted
id: user-deleted
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: DeleteUser}
    condition: sel
"#;

const FILTERS: &str = r#"
title: the break-glass automation is expected
id: mf-break-glass
logsource: {product: aws}
filter:
    rules:
        - key-created        # by id
        - trail_stopped      # by name
    automation:
        userIdentity.arn|endswith: ':user/break-glass'
    maintenance:
        sourceIPAddress: 10.0.0.1
    condition: not 1 of them
"#;

fn files(extra: &str) -> Vec<RuleFile> {
    vec![
        RuleFile { name: "rules.yml".into(), text: RULES.into() },
        RuleFile { name: "filters/mf_break_glass.yml".into(), text: extra.into() },
    ]
}

fn ev(name: &str, arn: &str, ip: &str) -> String {
    format!(r#"{{"eventName":"{name}","sourceIPAddress":"{ip}","userIdentity":{{"type":"IAMUser","arn":"{arn}"}}}}"#)
}

/// The ids of the rules that match `json`, by the index and without it
/// (both must agree: a filter only narrows what the index selects).
fn matching(set: &RuleSet, json: &str) -> Vec<String> {
    let (mut out, mut all) = (Vec::new(), Vec::new());
    set.eval(EventClass::CloudTrail, json, &mut set.scratch(), &mut out).unwrap();
    set.eval_unfiltered(EventClass::CloudTrail, json, &mut set.scratch(), &mut all).unwrap();
    assert_eq!(out, all, "the index and the full scan disagree on {json}");
    out.iter().map(|r| set.rule(*r).meta.id.clone()).collect()
}

#[test]
fn a_filter_narrows_the_rules_it_names_by_id_or_name_and_no_other() {
    let (set, warnings) = RuleSet::load(&files(FILTERS), &CompileOptions::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let alice = "arn:aws:iam::111122223333:user/alice";
    let glass = "arn:aws:iam::111122223333:user/break-glass";
    assert_eq!(matching(&set, &ev("CreateAccessKey", alice, "198.51.100.1")), ["key-created"]);
    assert!(matching(&set, &ev("CreateAccessKey", glass, "198.51.100.1")).is_empty());
    assert!(matching(&set, &ev("CreateAccessKey", alice, "10.0.0.1")).is_empty());
    // The rule's own `all of them` still means its two searches only.
    assert_eq!(matching(&set, &ev("StopLogging", alice, "198.51.100.1")), ["trail-stopped"]);
    assert!(matching(&set, &ev("StopLogging", glass, "198.51.100.1")).is_empty());
    // Not named: untouched.
    assert_eq!(matching(&set, &ev("DeleteUser", glass, "10.0.0.1")), ["user-deleted"]);

    let rule = |id: &str| set.rules().iter().find(|r| r.meta.id == id).unwrap();
    assert_eq!(rule("key-created").filters, ["mf-break-glass"]);
    assert_eq!(rule("key-created").condition_text, "(sel) and (not 1 of them)");
    assert_eq!(rule("key-created").search_names, ["sel", "mf-break-glass/automation", "mf-break-glass/maintenance"]);
    assert!(rule("user-deleted").filters.is_empty());
}

#[test]
fn filters_that_name_nothing_or_another_logsource_are_said_and_change_nothing() {
    let text = r#"
title: names a rule nobody loaded
id: mf-typo
logsource: {product: aws}
filter:
    rules: [key-craeted]
    sel: {sourceIPAddress: 10.0.0.1}
    condition: not sel
---
title: for Windows process creation
id: mf-windows
logsource: {product: windows, category: process_creation}
filter:
    rules: [user-deleted]
    sel: {User: admin}
    condition: not sel
"#;
    let (set, warnings) = RuleSet::load(&files(text), &CompileOptions::default()).unwrap();
    let said: Vec<(usize, &str)> = warnings.iter().map(|w| (w.line, w.message.as_str())).collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(said[0].0, 12);
    assert!(
        said[0].1.starts_with("filter `mf-windows` is not applied to rule `user-deleted` (rules.yml:")
            && said[0].1.ends_with("the filter's logsource product is `windows`, the rule's `aws`"),
        "{}",
        said[0].1
    );
    assert_eq!(said[1], (6, "filter `mf-typo` names no loaded detection rule (key-craeted): it changes nothing"));
    assert!(set.rules().iter().all(|r| r.filters.is_empty()));
    assert_eq!(matching(&set, &ev("DeleteUser", "arn:x", "10.0.0.1")), ["user-deleted"]);

    // A correlation named: said as such.
    let corr = r#"
title: many deletions
id: many-deletions
correlation: {type: event_count, rules: [user-deleted], group-by: [userIdentity.arn], timespan: 1h, condition: {gte: 3}}
---
title: names the correlation
id: mf-corr
logsource: {product: aws}
filter:
    rules: [many-deletions]
    sel: {sourceIPAddress: 10.0.0.1}
    condition: not sel
"#;
    let (_, warnings) = RuleSet::load(&files(corr), &CompileOptions::default()).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].message,
        "filter `mf-corr` names `many-deletions`, a correlation (a filter applies to the detection rules a correlation \
         counts): it changes nothing"
    );
}

#[test]
fn a_broken_filter_is_reported_with_file_and_line_and_left_out() {
    let broken = r#"
title: refers to a search it lacks
id: mf-broken
logsource: {product: aws}
filter:
    rules: [key-created]
    sel: {sourceIPAddress: 10.0.0.1}
    condition: not selection
"#;
    let err = RuleSet::load(&files(broken), &CompileOptions::default()).unwrap_err().to_string();
    assert!(err.contains("filters/mf_break_glass.yml:8:"), "{err}");
    assert!(err.contains("condition `not selection`"), "{err}");
    // Skipping: the filter is left out, every rule loads as written.
    let (set, _, errors) = RuleSet::load_skipping(&files(broken), &CompileOptions::default());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(set.rules().len(), 3);
    assert_eq!(matching(&set, &ev("CreateAccessKey", "arn:x", "10.0.0.1")), ["key-created"]);

    for (text, line, reason) in [
        (
            "title: t\nlogsource: {product: aws}\nfilter:\n    sel: {a: b}\n    condition: not sel\n",
            3,
            "`filter.rules` must list the ids or names of the rules the filter applies to",
        ),
        (
            "title: t\nlogsource: {product: aws}\nfilter:\n    rules: []\n    condition: x\n",
            4,
            "`filter.rules` is empty",
        ),
        (
            "title: t\nlogsource: {product: aws}\nfilter:\n    rules: [key-created]\n    sel: {a: b}\n",
            3,
            "filter has no `condition`",
        ),
        (
            "title: t\nfilter:\n    rules: [key-created]\n    sel: {a: b}\n    condition: sel\n",
            1,
            "missing `logsource`",
        ),
    ] {
        let err = RuleSet::load(&files(text), &CompileOptions::default()).unwrap_err().to_string();
        assert!(err.contains(&format!("filters/mf_break_glass.yml:{line}: {reason}")), "{err}");
    }
}

#[test]
fn two_filters_on_one_rule_both_apply() {
    let two = format!(
        "{FILTERS}---\n{}",
        r#"
title: the scanner's keys
id: mf-scanner
logsource: {product: aws, service: cloudtrail}
filter:
    rules: key-created
    sel: {userIdentity.arn|contains: scanner}
    condition: not sel
"#
    );
    let (set, _) = RuleSet::load(&files(&two), &CompileOptions::default()).unwrap();
    let r = set.rules().iter().find(|r| r.meta.id == "key-created").unwrap();
    assert_eq!(r.filters, ["mf-break-glass", "mf-scanner"]);
    assert!(matching(&set, &ev("CreateAccessKey", "arn:aws:iam::1:user/scanner", "198.51.100.1")).is_empty());
    assert_eq!(matching(&set, &ev("CreateAccessKey", "arn:aws:iam::1:user/bob", "198.51.100.1")), ["key-created"]);
}

/// A Sigma v1 aggregation (`| count() > n`) is filtered by its own id: the
/// filter applies to the searches it counts (its `<id>/match` rule).
#[test]
fn a_v1_aggregation_is_filtered_by_its_id() {
    let agg = r#"
title: many keys
id: many-keys
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: CreateAccessKey}
    timeframe: 10m
    condition: sel | count() by userIdentity.arn > 2
---
title: not the rotation job
id: mf-rotation
logsource: {product: aws, service: cloudtrail}
filter:
    rules: [many-keys]
    job: {userIdentity.arn|endswith: '/key-rotation'}
    condition: not job
"#;
    let (set, warnings) = RuleSet::load(&files(agg), &CompileOptions::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let base = set.rules().iter().find(|r| r.meta.id == "many-keys/match").unwrap();
    assert_eq!(base.filters, ["mf-rotation"]);
    assert!(set.rules().iter().find(|r| r.meta.id == "key-created").unwrap().filters.is_empty());
    let ids = matching(&set, &ev("CreateAccessKey", "arn:aws:iam::1:user/key-rotation", "198.51.100.1"));
    assert_eq!(ids, ["key-created"], "the aggregation's searches no longer match the job");
}
