//! Entry points for fuzzing the engine with hostile input: the cargo-fuzz
//! targets in `fuzz/` call these, and the test suite replays the committed
//! corpus and every crash found through them (processor/tests/fuzz_corpus.rs).
//! Each takes arbitrary bytes; a panic inside is the bug being hunted.

use std::sync::OnceLock;

use crate::{condition, CompileOptions, EventClass, RuleFile, RuleSet};

/// Rules whose paths cover what the scanner must handle: wildcard segments,
/// keyword search over every string, regex, numbers, and a few pack rules
/// (with a correlation).
fn rules() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut files = vec![RuleFile { name: "fuzz.yml".into(), text: WILDCARD_RULE.into() }];
        for (name, text) in [
            ("cloudtrail_logging_stopped.yml", include_str!("../pack/tampering/cloudtrail_logging_stopped.yml")),
            ("console_login_without_mfa.yml", include_str!("../pack/identity/console_login_without_mfa.yml")),
            ("access_denied_enumeration.yml", include_str!("../pack/identity/access_denied_enumeration.yml")),
            ("ecs_privileged_task_definition.yml", include_str!("../pack/ecs/ecs_privileged_task_definition.yml")),
        ] {
            // A pack rule that needs org placeholders is left out, not fatal.
            let one = [RuleFile { name: name.into(), text: text.into() }];
            if RuleSet::load(&one, &CompileOptions::default()).is_ok() {
                files.extend(one);
            }
        }
        RuleSet::load(&files, &CompileOptions::default()).expect("the fuzz rules compile").0
    })
}

const WILDCARD_RULE: &str = r#"
title: fuzz wildcard and keywords
id: 6f1f2a52-0000-4000-8000-00000000f022
logsource: {product: aws, service: cloudtrail}
detection:
  wild:
    requestParameters.policyDocument.Statement.*.Condition.*.aws:PrincipalOrgID|contains: o-
    userIdentity.sessionContext.sessionIssuer.userName|re: '^(?i)adm'
  keys:
    - 'DeleteTrail'
    - '*é*'
  nums:
    responseElements.count|gt: 3
  condition: wild or keys or nums
level: low
"#;

/// One event text through the JSON scanner (`json.rs`) and the matchers.
pub fn eval_event(class: EventClass, text: &str) {
    let set = rules();
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    if let Ok(ev) = set.eval(class, text, &mut scratch, &mut out) {
        let _ = (set.event_id(&ev), set.event_time(&ev));
    }
}

/// Arbitrary bytes as an event of every class.
pub fn json_scan(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for class in EventClass::ALL {
        eval_event(class, &text);
    }
}

/// Arbitrary text as a Sigma rule file (YAML parse and compile); a rule that
/// compiles is run over a sample event.
pub fn sigma_rule(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let files = [RuleFile { name: "fuzz.yml".into(), text }];
    if let Ok((set, _)) = RuleSet::load(&files, &CompileOptions::default()) {
        let mut scratch = set.scratch();
        let mut out = Vec::new();
        for class in EventClass::ALL {
            let _ = set.eval(class, SAMPLE_EVENT, &mut scratch, &mut out);
        }
    }
}

/// Arbitrary text as a Sigma condition over a few search identifiers; one
/// that parses is evaluated under two assignments.
pub fn condition_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let names: Vec<String> = ["selection", "sel_a", "sel_b", "filter", "keywords"].map(String::from).into();
    if let Ok(c) = condition::parse(&text, &names) {
        let _ = c.eval(&mut |i| i % 2 == 0);
        let _ = c.eval(&mut |_| true);
    }
}

const SAMPLE_EVENT: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/bob","accountId":"111111111111","userName":"bob"},"eventTime":"2024-01-01T00:00:00Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","requestParameters":{"name":"trail","tags":["a","é"],"count":4},"responseElements":null,"eventID":"e1","recipientAccountId":"111111111111"}"#;
