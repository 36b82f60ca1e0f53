//! Rule tests kept next to the rules, in the rule's own YAML document:
//!
//! ```yaml
//! tests:
//!   - name: scan-on-push turned off
//!     match: true               # expected outcome (default true)
//!     event:                    # the event as YAML (or `event_json: '{...}'`)
//!       eventSource: ecr.amazonaws.com
//!       eventName: PutImageScanningConfiguration
//!       requestParameters: {imageScanningConfiguration: {scanOnPush: false}}
//!   - name: turned on is fine
//!     match: false
//!     class: cloudtrail         # optional: cloudtrail | ecr | inspector2 | eventbridge
//!     event: {...}
//! ```
//!
//! The class defaults to the first class the rule's logsource selects. Each
//! test runs through the whole rule set (JSON extraction and rule index
//! included) and checks whether *this* rule matched.

use serde_yaml::Value;

use crate::engine::RuleSet;
use crate::logsource::EventClass;

/// One test case of one rule.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub expect_match: bool,
    pub class: EventClass,
    pub event_json: String,
}

/// The outcome of one test case.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub rule_id: String,
    pub rule_title: String,
    pub source: String,
    pub line: usize,
    pub case: String,
    pub passed: bool,
    pub message: String,
}

/// Parses the `tests:` value of a rule. Errors name the case.
pub fn parse_cases(tests: &Value, default_class: EventClass) -> Result<Vec<TestCase>, String> {
    let Value::Sequence(items) = tests else {
        return Err("`tests` must be a list".into());
    };
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let Value::Mapping(m) = it else {
            return Err(format!("test #{} must be a mapping", i + 1));
        };
        let name = m.get("name").and_then(Value::as_str).map_or_else(|| format!("#{}", i + 1), str::to_string);
        let expect_match = match m.get("match") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("test `{name}`: `match` must be true or false")),
        };
        let class = match m.get("class").and_then(Value::as_str) {
            None => default_class,
            Some(c) => EventClass::ALL
                .into_iter()
                .find(|k| k.service() == c)
                .ok_or_else(|| format!("test `{name}`: unknown class `{c}`"))?,
        };
        let event_json = match (m.get("event"), m.get("event_json")) {
            (Some(ev), None) => serde_json::to_string(ev).map_err(|e| format!("test `{name}`: event: {e}"))?,
            (None, Some(Value::String(s))) => s.clone(),
            _ => return Err(format!("test `{name}` needs exactly one of `event` or `event_json`")),
        };
        out.push(TestCase { name, expect_match, class, event_json });
    }
    Ok(out)
}

/// Runs the tests of every detection rule in `set` that has some.
pub fn run_detection_tests(set: &RuleSet) -> Vec<TestOutcome> {
    let mut outcomes = Vec::new();
    let mut scratch = set.scratch();
    for (idx, rule) in set.rules().iter().enumerate() {
        let Some(tests) = &rule.tests else { continue };
        let default_class = EventClass::ALL.into_iter().find(|c| rule.sees(*c)).unwrap_or(EventClass::CloudTrail);
        let base = |case: &str, passed: bool, message: String| TestOutcome {
            rule_id: rule.meta.id.clone(),
            rule_title: rule.meta.title.clone(),
            source: rule.meta.source.clone(),
            line: rule.meta.line,
            case: case.to_string(),
            passed,
            message,
        };
        let cases = match parse_cases(tests, default_class) {
            Ok(c) => c,
            Err(e) => {
                outcomes.push(base("(tests)", false, e));
                continue;
            }
        };
        for case in cases {
            let mut out = Vec::new();
            let outcome = match set.eval(case.class, &case.event_json, &mut scratch, &mut out) {
                Err(e) => base(&case.name, false, format!("event is not valid JSON: {e}")),
                Ok(_) => {
                    let matched = out.contains(&(idx as u32));
                    if matched == case.expect_match {
                        base(&case.name, true, String::new())
                    } else if case.expect_match {
                        base(&case.name, false, "expected a match, got none".into())
                    } else {
                        base(&case.name, false, "expected no match, but the rule matched".into())
                    }
                }
            };
            outcomes.push(outcome);
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CompileOptions, RuleFile};

    #[test]
    fn runs_cases_and_reports_failures() {
        let text = r#"
title: scan on push off
id: t1
logsource: {product: aws, service: cloudtrail}
detection:
  sel:
    eventName: PutImageScanningConfiguration
    requestParameters.imageScanningConfiguration.scanOnPush: false
  condition: sel
tests:
  - name: off
    event: {eventName: PutImageScanningConfiguration, requestParameters: {imageScanningConfiguration: {scanOnPush: false}}}
  - name: on
    match: false
    event_json: '{"eventName":"PutImageScanningConfiguration","requestParameters":{"imageScanningConfiguration":{"scanOnPush":true}}}'
  - name: wrong expectation
    match: true
    event: {eventName: Other}
"#;
        let (set, _) =
            RuleSet::load(&[RuleFile { name: "r.yml".into(), text: text.into() }], &CompileOptions::default()).unwrap();
        let out = run_detection_tests(&set);
        assert_eq!(out.len(), 3);
        assert!(out[0].passed && out[1].passed);
        assert!(!out[2].passed);
        assert!(out[2].message.contains("expected a match"));
    }
}
