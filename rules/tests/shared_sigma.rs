//! Every public SigmaHQ AWS rule in ../shared must load, and the stratus
//! detonation samples must trigger the rules written for them.

use std::path::{Path, PathBuf};

use trailwatch_rules::{CompileOptions, EventClass, RuleFile, RuleSet};

/// `../shared` (public SigmaHQ rules and samples: there in CI, not in a user's
/// clone), or `None` after one line naming the test and what it skipped.
fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if p.join("sigma/rules").is_dir() {
        return Some(p);
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    // Straight to stderr: the harness captures `eprintln!` of passing tests.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "skipped {test}: needs the public SigmaHQ rules and samples in ../shared, not next to the repository\n"
        )
        .as_bytes(),
    );
    None
}

macro_rules! shared {
    () => {
        match shared_dir() {
            Some(p) => p,
            None => return,
        }
    };
}

fn yaml_files(dir: &Path) -> Vec<RuleFile> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                out.push(RuleFile { name: p.display().to_string(), text: std::fs::read_to_string(&p).unwrap() });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn every_shared_sigma_rule_loads_without_errors() {
    let files = yaml_files(&shared!().join("sigma/rules"));
    assert_eq!(files.len(), 57, "expected the 57 SigmaHQ AWS rules");
    let (set, warnings) = RuleSet::load(&files, &CompileOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.rules().len(), 57);
    assert!(warnings.is_empty(), "{warnings:?}");
    // Every rule sees CloudTrail events.
    assert!(set.rules().iter().all(|r| r.sees(EventClass::CloudTrail)));
}

#[test]
fn placeholder_rule_loads_and_expands() {
    let files = yaml_files(&shared!().join("sigma/rules-placeholder"));
    // Unset placeholders load, with a warning naming them.
    let (_, warnings) = RuleSet::load(&files, &CompileOptions::default()).unwrap();
    assert!(warnings.iter().any(|w| w.message.contains("%Legitimate_Countries%")), "{warnings:?}");

    let mut opts = CompileOptions::default();
    opts.placeholders.insert("Legitimate_IP_Ranges".into(), vec!["10.1.2.3".into()]);
    opts.placeholders.insert("Legitimate_Countries".into(), vec!["FR".into()]);
    opts.field_mappings.insert("src_ip".into(), "sourceIPAddress".into());
    let (set, warnings) = RuleSet::load(&files, &opts).unwrap();
    assert!(warnings.is_empty());
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let ok =
        r#"{"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Success"},"sourceIPAddress":"10.1.2.3"}"#;
    set.eval(EventClass::CloudTrail, ok, &mut scratch, &mut out).unwrap();
    assert!(out.is_empty(), "login from a legitimate IP must be filtered");
    let bad =
        r#"{"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Success"},"sourceIPAddress":"203.0.113.9"}"#;
    set.eval(EventClass::CloudTrail, bad, &mut scratch, &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn legacy_aggregation_rules_load_as_correlations_or_fail_with_file_line_and_reason() {
    let files = yaml_files(&shared!().join("sigma/unsupported"));
    assert_eq!(files.len(), 8);
    let mut loaded = Vec::new();
    for f in &files {
        match RuleSet::load(std::slice::from_ref(f), &CompileOptions::default()) {
            // `| count()`: one correlation under the rule's own id, over its selection.
            Ok((set, _)) => {
                let [c] = set.correlations() else { panic!("{}: {:?}", f.name, set.correlations()) };
                assert!(f.text.contains(&format!("id: {}", c.meta.id)), "{}", f.name);
                assert!(f.text.contains("| count()"), "{}", f.name);
                loaded.push(c.meta.id.clone());
            }
            // `near`, and a `timeframe` with no aggregation: refused, said where and why.
            Err(err) => {
                let e = &err.0[0];
                assert_eq!(e.file, f.name);
                let line = f.text.lines().nth(e.line - 1).unwrap_or("");
                assert!(line.contains("condition") || line.contains("timeframe"), "{e} points at `{line}`");
                assert!(e.reason.contains("correlation rule") || e.reason.contains("aggregation"), "{e}");
            }
        }
    }
    assert_eq!(loaded.len(), 6, "{loaded:?}");
}

#[test]
fn stratus_detonations_trigger_the_matching_sigma_rules() {
    let root = shared!();
    let (set, _) = RuleSet::load(&yaml_files(&root.join("sigma/rules")), &CompileOptions::default()).unwrap();
    let mut scratch = set.scratch();
    // Detonation file → title fragment of a SigmaHQ rule that must fire on it.
    let expect = [
        ("aws.defense-evasion.cloudtrail-stop.jsonl", "AWS CloudTrail Important Change"),
        ("aws.defense-evasion.cloudtrail-delete.jsonl", "AWS CloudTrail Important Change"),
        ("aws.defense-evasion.vpc-remove-flow-logs.jsonl", "Flow Logs Deleted"),
        ("aws.initial-access.console-login-without-mfa.jsonl", "Without MFA"),
        ("aws.persistence.iam-backdoor-user.jsonl", "Backdoor Users Keys"),
    ];
    for (file, title) in expect {
        let text = std::fs::read_to_string(root.join("samples/stratus-detonations").join(file)).unwrap();
        let mut titles = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut out = Vec::new();
            set.eval(EventClass::CloudTrail, line, &mut scratch, &mut out).unwrap();
            titles.extend(out.iter().map(|i| set.rule(*i).meta.title.clone()));
        }
        assert!(titles.iter().any(|t| t.contains(title)), "{file}: expected `{title}`, got {titles:?}");
    }
}

#[test]
fn index_agrees_with_trying_every_rule() {
    // The eventName index must never change results: compare with a brute
    // force evaluation of every rule over every sample event.
    let root = shared!();
    let (set, _) = RuleSet::load(&yaml_files(&root.join("sigma/rules")), &CompileOptions::default()).unwrap();
    let mut scratch = set.scratch();
    let mut n = 0;
    for e in std::fs::read_dir(root.join("samples/stratus-detonations")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut indexed = Vec::new();
            let ev = set.eval(EventClass::CloudTrail, line, &mut scratch, &mut indexed).unwrap();
            let mut brute: Vec<u32> = (0..set.rules().len() as u32).filter(|i| set.rule(*i).matches(&ev)).collect();
            indexed.sort();
            brute.sort();
            assert_eq!(indexed, brute, "{line}");
            n += 1;
        }
    }
    assert!(n >= 300, "only {n} sample events");
}
