//! The service pipeline without AWS: file source → rules and windows → JSON
//! lines sink, with the file state store. Window state committed by one run
//! is restored by the next, so a burst split across a restart still fires.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use trailwatch_processor::config::Config;
use trailwatch_processor::service::{self, RunOptions, RunSummary};
use trailwatch_processor::{decode::DecodeOptions, findings::FindingContext, ruleset};
use trailwatch_rules::{DetectorConfig, RuleFile};

const RULES: &str = r#"
title: console denied
id: 6f1d1b0e-0000-4000-8000-000000000001
name: denied
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
---
title: Repeated AccessDenied
id: 6f1d1b0e-0000-4000-8000-000000000002
level: high
tags: [nist_csf.de.cm-1]
correlation:
    type: event_count
    rules: [denied]
    group-by: [userIdentity.arn]
    timespan: 10m
    condition: {gt: 3}
"#;

fn event(i: u32, minute: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:{minute:02}:00Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","awsRegion":"us-east-1","errorCode":"AccessDenied","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/mallory","accountId":"111122223333"}}}}"#
    )
}

fn write_events(path: &Path, range: std::ops::Range<u32>) {
    let text: Vec<String> = range.map(|i| event(i, i)).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

fn config(dir: &Path, input: &Path) -> Config {
    let text = format!(
        r#"
        [service]
        state_dir = "{state}"
        commit_interval = "100ms"
        [sources.files]
        type = "file"
        paths = ["{input}"]
        exit_when_done = false
        [sinks.out]
        type = "asff-jsonl"
        path = "{out}"
        [metrics]
        enabled = false
        "#,
        state = dir.join("state").display(),
        input = input.display(),
        out = dir.join("findings.ndjson").display(),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// Runs until the first commit after the input was read, then shuts down.
async fn run_once(cfg: Config) -> RunSummary {
    let (set, _) = ruleset::compile(
        &[RuleFile { name: "test.yml".into(), text: RULES.into() }],
        &trailwatch_rules::CompileOptions::default(),
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let opts = RunOptions {
        detector: DetectorConfig::default(),
        findings: FindingContext::default(),
        now: None,
        dead_letter: None,
        decode: DecodeOptions::default(),
        on_listen: None,
        commits: Some(tx),
    };
    let shutdown = async move {
        let _ = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|n| *n >= 1)).await;
    };
    tokio::time::timeout(Duration::from_secs(60), service::run(cfg, Arc::new(set), opts, shutdown))
        .await
        .expect("the run ends")
        .expect("the run succeeds")
}

fn findings(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("findings.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn windows_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.ndjson");
    let second = dir.path().join("second.ndjson");
    write_events(&first, 0..3);
    write_events(&second, 3..5);

    let s1 = run_once(config(dir.path(), &first)).await;
    assert_eq!(s1.eval.events, 3);
    assert!(findings(dir.path()).is_empty(), "3 denials are not more than 3");
    assert!(dir.path().join("state/state.json").exists());

    let s2 = run_once(config(dir.path(), &second)).await;
    assert_eq!(s2.eval.events, 2);
    let f = findings(dir.path());
    assert_eq!(f.len(), 1, "the 4th denial completes the window started before the restart: {f:?}");
    assert_eq!(f[0]["GeneratorId"], "6f1d1b0e-0000-4000-8000-000000000002");
    assert_eq!(f[0]["ProductFields"]["trailwatch/Count"], "4");
    assert_eq!(f[0]["FirstObservedAt"], "2026-11-01T10:00:00Z");
}

#[tokio::test]
async fn without_the_state_the_second_half_alone_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second.ndjson");
    write_events(&second, 3..5);
    run_once(config(dir.path(), &second)).await;
    assert!(findings(dir.path()).is_empty());
}

#[tokio::test]
async fn bad_records_go_to_the_dead_letter_file_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.ndjson");
    std::fs::write(&input, format!("{}\n{{not json\n{}\n", event(0, 0), event(1, 1))).unwrap();
    let s = run_once(config(dir.path(), &input)).await;
    assert_eq!(s.eval.events, 2);
    assert_eq!(s.eval.bad_records, 1);
    let dead = std::fs::read_to_string(dir.path().join("state/dead-letter.ndjson")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(rec["line"], 2);
    assert_eq!(rec["kind"], "json");
}
