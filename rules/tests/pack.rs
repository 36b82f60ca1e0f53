//! The built-in rule pack: loads cleanly with its placeholder defaults, every
//! rule carries complete metadata and tests, and every test passes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trailwatch_rules::{testing, CompileOptions, RuleFile, RuleSet};

fn pack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pack")
}

fn load() -> Arc<RuleSet> {
    let mut files = Vec::new();
    let mut stack = vec![pack_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yml") {
                files.push(RuleFile { name: p.display().to_string(), text: std::fs::read_to_string(&p).unwrap() });
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct Default {
        values: Vec<String>,
        #[serde(default)]
        test_values: Vec<String>,
        assumes: String,
    }
    let text = std::fs::read_to_string(pack_dir().join("placeholders.json")).unwrap();
    let defaults: BTreeMap<String, Default> = serde_json::from_str(&text).unwrap();
    let mut opts = CompileOptions::default();
    for (k, v) in defaults {
        assert!(!v.assumes.trim().is_empty(), "placeholder {k} must say what its default assumes");
        // An empty default (an org's account list) needs the example org the
        // pack's tests run with, as `trailwatch rules test` does.
        let values = if v.values.is_empty() { v.test_values } else { v.values };
        assert!(!values.is_empty(), "placeholder {k} has neither default values nor test_values");
        opts.placeholders.insert(k, values);
    }
    let (set, warnings) = RuleSet::load(&files, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    Arc::new(set)
}

#[test]
fn every_pack_test_passes() {
    let set = load();
    let outcomes = testing::run_all_tests(&set);
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("{} {} :: {}: {}", o.rule_id, o.rule_title, o.case, o.message))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(outcomes.len() >= 20);
}

#[test]
fn every_reported_rule_has_metadata_and_tests_both_ways() {
    let set = load();
    let mut ids = BTreeSet::new();
    let mut check = |m: &trailwatch_rules::RuleMeta, tests: &Option<serde_norway::Value>, reported: bool| {
        assert!(ids.insert(m.id.clone()), "duplicate id {}", m.id);
        if !reported {
            return;
        }
        assert!(m.description.as_deref().is_some_and(|d| !d.trim().is_empty()), "{}: description", m.title);
        assert!(m.remediation().is_some(), "{}: remediation", m.title);
        assert!(!m.nist_csf().is_empty(), "{}: NIST CSF subcategory", m.title);
        let cases = tests.as_ref().and_then(|t| t.as_sequence()).unwrap_or_else(|| panic!("{}: no tests", m.title));
        let negative = cases
            .iter()
            .filter(|c| {
                c.get("match").and_then(|v| v.as_bool()) == Some(false)
                    || c.get("expect").and_then(|v| v.as_u64()) == Some(0)
            })
            .count();
        let positive = cases.len() - negative;
        assert!(positive >= 1 && negative >= 1, "{}: needs positive and negative tests", m.title);
    };
    for (i, r) in set.rules().iter().enumerate() {
        check(&r.meta, &r.tests, set.emits(i as u32));
    }
    for (i, c) in set.correlations().iter().enumerate() {
        check(&c.meta, &c.tests, set.correlation_emits(i));
    }
}

/// Issue 18: every reported rule names who did what to what in its finding
/// title, and the title renders without a `?` on the rule's own positive
/// test events (the events the rule is written for carry every field it
/// names).
#[test]
fn every_reported_rule_has_a_title_template_that_renders_on_its_tests() {
    let set = load();
    let mut without = Vec::new();
    for (i, r) in set.rules().iter().enumerate() {
        if set.emits(i as u32) && r.meta.finding.as_ref().and_then(|f| f.title.as_ref()).is_none() {
            without.push(format!("{} ({})", r.meta.title, r.meta.source));
        }
    }
    for (i, c) in set.correlations().iter().enumerate() {
        if set.correlation_emits(i) && c.meta.finding.as_ref().and_then(|f| f.title.as_ref()).is_none() {
            without.push(format!("{} ({})", c.meta.title, c.meta.source));
        }
    }
    assert!(without.is_empty(), "reported rules without `finding.title`:\n{}", without.join("\n"));
    let outcomes = testing::run_all_tests(&set);
    let rendered = outcomes.iter().filter(|o| o.title.is_some()).count();
    // The justified exception: the CloudTrail envelope. Many test events
    // give only the fields the detection reads; every real record carries
    // userIdentity, recipientAccountId, awsRegion and sourceIPAddress (the
    // loadtest's realistic day checks the rendered titles on full records).
    // Everything a template names beyond that must be in the test events.
    const ENVELOPE: &[&str] = &["{principal}", "{account}", "{region}", "{sourceIPAddress}", "{userAgent}"];
    // Cases whose event has no such resource at all: the account-wide S3
    // Block Public Access setting names no bucket (renders `bucket ?`).
    const NO_RESOURCE: &[(&str, &str)] =
        &[("S3 Bucket Opened To The Public", "account-level block public access deleted")];
    let gaps: Vec<String> = outcomes
        .iter()
        .filter(|o| !NO_RESOURCE.contains(&(o.rule_title.as_str(), o.case.as_str())))
        .filter(|o| o.title_missing.iter().any(|m| !ENVELOPE.contains(&m.as_str())))
        .map(|o| {
            format!("{} :: {}: {:?} in `{}`", o.rule_title, o.case, o.title_missing, o.title.as_deref().unwrap_or(""))
        })
        .collect();
    assert!(gaps.is_empty(), "titles with `?` on their own positive tests:\n{}", gaps.join("\n"));
    assert!(rendered >= 64, "only {rendered} positive cases rendered a title");
}
