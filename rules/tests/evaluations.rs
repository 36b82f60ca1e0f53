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
