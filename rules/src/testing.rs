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
//!
//! A case that expects a match may also give `title:`, the finding title the
//! rule's `finding.title` template must render for it (exactly); every
//! outcome carries the rendered title and the placeholders that rendered as
//! `?`.
//!
//! A correlation rule's cases give a sequence of events, fed in order to a
//! fresh detector (then flushed), and either `match: true|false` or
//! `expect: N`, the number of new (non-update) alerts of this correlation:
//!
//! ```yaml
//! tests:
//!   - name: 3 downloads in a minute
//!     expect: 1
//!     events:
//!       - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:00:00Z', userIdentity: {arn: a}}
//!       - ...
//! ```
//!
//! A `first_seen` rule's case may give `learn:`, events fed before `events`
//! that must raise nothing (its learning period starts at the first of
//! them); only alerts of `events` are counted. Put `events` after the
//! rule's `learning` period in event time:
//!
//! ```yaml
//! tests:
//!   - name: a repository alice never pulled from
//!     expect: 1
//!     learn:
//!       - {eventName: BatchGetImage, eventTime: '2026-11-01T00:00:00Z', ...}
//!     events:
//!       - {eventName: BatchGetImage, eventTime: '2026-11-09T00:00:00Z', ...}
//! ```

use serde_norway::Value;

use std::sync::Arc;

use crate::detect::{Alert, Detector, DetectorConfig};
use crate::engine::RuleSet;
use crate::logsource::EventClass;
use crate::template;

/// One test case of one rule.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub expect_match: bool,
    pub class: EventClass,
    pub event_json: String,
    /// The rendered finding title this case expects.
    pub title: Option<String>,
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
    /// The finding title the rule's template rendered for this case (a
    /// positive case of a rule with `finding.title`).
    pub title: Option<String>,
    /// Placeholders of that title that rendered as `?`.
    pub title_missing: Vec<String>,
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
        let title = match m.get("title") {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(format!("test `{name}`: `title` must be a string")),
        };
        out.push(TestCase { name, expect_match, class, event_json, title });
    }
    Ok(out)
}

/// Runs the tests of every detection and correlation rule that has some.
pub fn run_all_tests(set: &Arc<RuleSet>) -> Vec<TestOutcome> {
    let mut out = run_detection_tests(set);
    out.extend(run_correlation_tests(set));
    out
}

/// Runs the tests of every correlation rule in `set` that has some.
pub fn run_correlation_tests(set: &Arc<RuleSet>) -> Vec<TestOutcome> {
    let mut outcomes = Vec::new();
    for (ci, c) in set.correlations().iter().enumerate() {
        let Some(tests) = &c.tests else { continue };
        let base = |case: &str, passed: bool, message: String| TestOutcome {
            rule_id: c.meta.id.clone(),
            rule_title: c.meta.title.clone(),
            source: c.meta.source.clone(),
            line: c.meta.line,
            case: case.to_string(),
            passed,
            message,
            title: None,
            title_missing: Vec::new(),
        };
        let Value::Sequence(items) = tests else {
            outcomes.push(base("(tests)", false, "`tests` must be a list".into()));
            continue;
        };
        for (i, it) in items.iter().enumerate() {
            let name = it.get("name").and_then(Value::as_str).map_or_else(|| format!("#{}", i + 1), str::to_string);
            let Some(Value::Sequence(events)) = it.get("events") else {
                outcomes.push(base(&name, false, "a correlation test needs `events:` (a list of events)".into()));
                continue;
            };
            let expect = match (it.get("expect").and_then(Value::as_u64), it.get("match").and_then(Value::as_bool)) {
                (Some(n), _) => n,
                (None, Some(true)) | (None, None) => u64::MAX,
                (None, Some(false)) => 0,
            };
            let class = match it.get("class").and_then(Value::as_str) {
                None => EventClass::CloudTrail,
                Some(cl) => match EventClass::ALL.into_iter().find(|k| k.service() == cl) {
                    Some(k) => k,
                    None => {
                        outcomes.push(base(&name, false, format!("unknown class `{cl}`")));
                        continue;
                    }
                },
            };
            let learn = match it.get("learn") {
                None => &[][..],
                Some(Value::Sequence(l)) => &l[..],
                Some(_) => {
                    outcomes.push(base(&name, false, "`learn:` must be a list of events".into()));
                    continue;
                }
            };
            let cfg = DetectorConfig { allowed_lateness_ms: i64::MAX / 4, ..DetectorConfig::default() };
            let mut det = Detector::new(Arc::clone(set), cfg);
            let mut scratch = set.scratch();
            let mut alerts = Vec::new();
            let mut error = None;
            let fired_of = |alerts: &[Alert]| {
                alerts.iter().filter(|a| matches!(a, Alert::Correlation(x) if x.rule == ci && !x.is_update)).count()
                    as u64
            };
            let mut learned = 0;
            for (i, ev) in learn.iter().chain(events).enumerate() {
                if i == learn.len() {
                    learned = fired_of(&alerts);
                    alerts.clear();
                }
                let json = match ev {
                    Value::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                };
                if let Err(e) = det.process(class, &json, 0, &mut scratch, &mut alerts) {
                    error = Some(format!("event is not valid JSON: {e}"));
                    break;
                }
            }
            if events.is_empty() {
                learned = fired_of(&alerts);
                alerts.clear();
            }
            det.flush(&mut alerts);
            let fired = fired_of(&alerts);
            let first = alerts.iter().find_map(|a| match a {
                Alert::Correlation(x) if x.rule == ci && !x.is_update => Some(x),
                _ => None,
            });
            let template = c.meta.finding.as_ref().and_then(|f| f.title.as_ref());
            let rendered = match (template, first) {
                (Some(t), Some(x)) => {
                    // As the service builds it: the group, plus the account
                    // and region of the event that completed the window.
                    let mut doc = template::group_document(&x.group);
                    let last = events.last().and_then(|e| serde_json::to_value(e).ok()).unwrap_or_default();
                    for k in ["recipientAccountId", "awsRegion", "account", "region"] {
                        if let Some(v) = last.get(k) {
                            doc.entry(k.to_string()).or_insert_with(|| v.clone());
                        }
                    }
                    let doc = serde_json::Value::Object(doc);
                    let corr = template::Correlation { group: &x.group, count: x.count, timespan_ms: c.timespan_ms };
                    let mut missing = Vec::new();
                    let title = t.render_checked(&doc, Some(&corr), &mut |p| missing.push(p.to_string()));
                    Some((title, missing))
                }
                _ => None,
            };
            let want_title = it.get("title").and_then(Value::as_str);
            let mut outcome = match error {
                Some(e) => base(&name, false, e),
                None if learned > 0 => base(
                    &name,
                    false,
                    format!("the `learn:` events raised {learned} alert(s): learning must be silent"),
                ),
                None if expect == u64::MAX && fired > 0 => base(&name, true, String::new()),
                None if expect == fired => base(&name, true, String::new()),
                None if expect == u64::MAX => base(&name, false, "expected the correlation to fire, it did not".into()),
                None => base(&name, false, format!("expected {expect} alert(s), got {fired}")),
            };
            check_title(&mut outcome, want_title, rendered);
            outcomes.push(outcome);
        }
    }
    outcomes
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
            title: None,
            title_missing: Vec::new(),
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
            let mut rendered = None;
            let mut outcome = match set.eval(case.class, &case.event_json, &mut scratch, &mut out) {
                Err(e) => base(&case.name, false, format!("event is not valid JSON: {e}")),
                Ok(_) => {
                    let matched = out.contains(&(idx as u32));
                    let template = rule.meta.finding.as_ref().and_then(|f| f.title.as_ref());
                    if let (true, Some(t)) = (matched, template) {
                        let ev: serde_json::Value = serde_json::from_str(&case.event_json).unwrap_or_default();
                        let mut missing = Vec::new();
                        let title = t.render_checked(&ev, None, &mut |p| missing.push(p.to_string()));
                        rendered = Some((title, missing));
                    }
                    if matched == case.expect_match {
                        base(&case.name, true, String::new())
                    } else if case.expect_match {
                        base(&case.name, false, "expected a match, got none".into())
                    } else {
                        base(&case.name, false, "expected no match, but the rule matched".into())
                    }
                }
            };
            check_title(&mut outcome, case.title.as_deref(), rendered);
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// Records the rendered title and fails a passed case whose `title:` differs.
fn check_title(outcome: &mut TestOutcome, want: Option<&str>, rendered: Option<(String, Vec<String>)>) {
    if let Some((title, missing)) = rendered {
        outcome.title = Some(title);
        outcome.title_missing = missing;
    }
    let (Some(want), true) = (want, outcome.passed) else { return };
    match &outcome.title {
        Some(got) if got == want => {}
        Some(got) => {
            outcome.passed = false;
            outcome.message = format!("finding title `{got}`, expected `{want}`");
        }
        None => {
            outcome.passed = false;
            outcome.message = "the case gives `title:` but the rule has no `finding.title` (or did not fire)".into();
        }
    }
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
finding:
  title: '{principal} turned scan on push off for {requestParameters.repositoryName}'
tests:
  - name: off
    title: 'bob turned scan on push off for ?'
    event: {eventName: PutImageScanningConfiguration, userIdentity: {type: IAMUser, arn: 'arn:aws:iam::1:user/bob'}, requestParameters: {imageScanningConfiguration: {scanOnPush: false}}}
  - name: wrong title
    title: 'someone else'
    event: {eventName: PutImageScanningConfiguration, requestParameters: {repositoryName: web, imageScanningConfiguration: {scanOnPush: false}}}
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
        assert_eq!(out.len(), 4);
        assert!(out[0].passed && out[2].passed, "{out:?}");
        assert_eq!(out[0].title_missing, ["{requestParameters.repositoryName}"]);
        assert!(!out[1].passed);
        assert_eq!(out[1].title.as_deref(), Some("? turned scan on push off for web"));
        assert!(out[1].message.contains("expected `someone else`"), "{}", out[1].message);
        assert!(!out[3].passed);
        assert!(out[3].message.contains("expected a match"));
    }

    #[test]
    fn correlation_cases() {
        let text = r#"
title: download
id: d
name: download
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: bulk
id: b
correlation:
  type: event_count
  rules: [download]
  group-by: [userIdentity.arn]
  timespan: 1m
  condition: {gte: 2}
finding:
  title: '{userIdentity.arn} downloaded {count} layers in {window} in {account}'
tests:
  - name: two in a minute
    expect: 1
    title: 'a downloaded 2 layers in 1m in 111122223333'
    events:
      - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:00:00Z', userIdentity: {arn: a}}
      - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:00:30Z', userIdentity: {arn: a}, recipientAccountId: '111122223333'}
  - name: too slow
    match: false
    events:
      - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:00:00Z', userIdentity: {arn: a}}
      - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:02:00Z', userIdentity: {arn: a}}
  - name: wrong
    expect: 2
    events:
      - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:00:00Z', userIdentity: {arn: a}}
      - {eventName: GetDownloadUrlForLayer, eventTime: '2026-01-01T00:00:01Z', userIdentity: {arn: a}}
"#;
        let (set, _) =
            RuleSet::load(&[RuleFile { name: "r.yml".into(), text: text.into() }], &CompileOptions::default()).unwrap();
        let out = run_all_tests(&std::sync::Arc::new(set));
        assert_eq!(out.len(), 3);
        assert!(out[0].passed && out[1].passed, "{out:?}");
        assert!(!out[2].passed && out[2].message.contains("expected 2"), "{out:?}");
    }

    #[test]
    fn first_seen_cases_learn_first() {
        let text = r#"
title: pull
id: p
name: pull
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: BatchGetImage}
  condition: sel
---
title: new repo for a principal
id: n
correlation:
  type: first_seen
  rules: [pull]
  group-by: [userIdentity.arn, requestParameters.repositoryName]
  history: 14d
  learning: 7d
tests:
  - name: new repository after learning
    expect: 1
    learn:
      - {eventName: BatchGetImage, eventTime: '2026-11-01T00:00:00Z', userIdentity: {arn: a}, requestParameters: {repositoryName: web}}
    events:
      - {eventName: BatchGetImage, eventTime: '2026-11-09T00:00:00Z', userIdentity: {arn: a}, requestParameters: {repositoryName: web}}
      - {eventName: BatchGetImage, eventTime: '2026-11-09T00:00:01Z', userIdentity: {arn: a}, requestParameters: {repositoryName: db}}
  - name: learning events that would fire are a failed case
    expect: 0
    learn:
      - {eventName: BatchGetImage, eventTime: '2026-11-01T00:00:00Z', userIdentity: {arn: a}, requestParameters: {repositoryName: web}}
      - {eventName: BatchGetImage, eventTime: '2026-11-09T00:00:00Z', userIdentity: {arn: a}, requestParameters: {repositoryName: db}}
    events:
      - {eventName: BatchGetImage, eventTime: '2026-11-09T00:00:01Z', userIdentity: {arn: a}, requestParameters: {repositoryName: db}}
"#;
        let (set, _) =
            RuleSet::load(&[RuleFile { name: "r.yml".into(), text: text.into() }], &CompileOptions::default()).unwrap();
        let out = run_all_tests(&std::sync::Arc::new(set));
        assert_eq!(out.len(), 2);
        assert!(out[0].passed, "{out:?}");
        assert!(!out[1].passed && out[1].message.contains("learning must be silent"), "{out:?}");
    }
}
