//! Splitting a rule set by correlation (`RuleSet::with_correlations`) for
//! the service's re-keying stage, and reading what the last event matched.

use std::sync::Arc;

use trailwatch_rules::{Alert, CompileOptions, Detector, DetectorConfig, EventClass, RuleFile, RuleSet};

const RULES: &str = r#"
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
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: StopLogging}
  condition: sel
---
title: denied by principal
id: corr-principal
name: by_principal
correlation:
  type: event_count
  rules: [denied]
  group-by: [userIdentity.arn]
  timespan: 10m
  condition: {gte: 3}
---
title: denied from one IP
id: corr-ip
correlation:
  type: event_count
  rules: [denied]
  group-by: [sourceIPAddress]
  timespan: 10m
  condition: {gte: 3}
---
title: chain
id: corr-chain
correlation:
  type: temporal
  rules: [by_principal, denied]
  group-by: [userIdentity.arn]
  timespan: 10m
"#;

fn full() -> RuleSet {
    RuleSet::load(&[RuleFile { name: "s.yml".into(), text: RULES.into() }], &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn ev(i: u32, who: &str, ip: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:00:{i:02}Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","errorCode":"AccessDenied","eventID":"id-{i}","sourceIPAddress":"{ip}","userIdentity":{{"arn":"{who}"}}}}"#
    )
}

fn index(set: &RuleSet, id: &str) -> usize {
    set.correlations().iter().position(|c| c.meta.id == id).unwrap()
}

#[test]
fn the_principal_side_keeps_base_rules_quiet_and_the_rekeyed_side_reports_only_its_correlation() {
    let full = full();
    let ip = index(&full, "corr-ip");
    let keep: Vec<usize> = (0..full.correlations().len()).filter(|&i| i != ip).collect();
    let main = full.with_correlations(&keep, true).unwrap();
    let ids: Vec<&str> = main.correlations().iter().map(|c| c.meta.id.as_str()).collect();
    assert_eq!(ids, ["corr-principal", "corr-chain"]);
    // `denied` feeds only generate: false correlations in the full set: still quiet.
    let denied = main.rules().iter().position(|r| r.meta.id == "base-denied").unwrap() as u32;
    let stop = main.rules().iter().position(|r| r.meta.id == "base-stop").unwrap() as u32;
    assert!(!main.emits(denied));
    assert!(main.emits(stop));
    // Detection rules keep their indices (a rule index means the same rule
    // on both sides); the chain's reference to `corr-principal` was renumbered.
    assert_eq!(main.rules().len(), full.rules().len());
    let chain = &main.correlations()[1];
    assert!(matches!(chain.rules[0], trailwatch_rules::window::RuleRef::Correlation(0)));

    let only = Arc::new(full.with_correlations(&[ip], false).unwrap());
    assert_eq!(only.correlations().len(), 1);
    assert!(!only.emits(stop), "the re-keyed side reports no detections");
    let mut det = Detector::new(Arc::clone(&only), DetectorConfig::default());
    let mut scratch = only.scratch();
    let mut alerts = Vec::new();
    // Three principals, one IP: only the IP correlation can fire here.
    for i in 0..3 {
        let e = ev(i, &format!("arn:aws:iam::1:user/u{i}"), "198.51.100.7");
        det.process(EventClass::CloudTrail, &e, 0, &mut scratch, &mut alerts).unwrap();
        assert_eq!(det.last_matches(), [denied]);
        let c = &only.correlations()[0];
        assert_eq!(only.read_fields(&e, &scratch, &c.group_fields[0]), Some(vec!["198.51.100.7"]));
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let Alert::Correlation(a) = &alerts[0] else { panic!("{alerts:?}") };
    assert_eq!((a.count, a.group.clone()), (3, vec![("sourceIPAddress".to_string(), "198.51.100.7".to_string())]));

    // A missing field reads as None.
    let e = r#"{"eventVersion":"1.08","eventName":"StopLogging","eventID":"x"}"#;
    det.process(EventClass::CloudTrail, e, 0, &mut scratch, &mut alerts).unwrap();
    assert_eq!(det.last_matches(), [stop]);
    assert_eq!(only.read_fields(e, &scratch, &only.correlations()[0].group_fields[0]), None);
}

#[test]
fn a_correlation_cannot_lose_one_it_uses() {
    let full = full();
    let principal = index(&full, "corr-principal");
    let chain = index(&full, "corr-chain");
    let e = full.with_correlations(&[chain], false).unwrap_err();
    assert!(e.contains("corr-chain") && e.contains("corr-principal"), "{e}");
    assert!(full.with_correlations(&[principal, chain], true).is_ok());
    assert!(full.with_correlations(&[99], true).is_err());
}
