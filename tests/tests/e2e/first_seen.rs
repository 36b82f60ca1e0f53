//! first_seen through the real pipelines: `replay` and the live service
//! (`run` with a file source and the file state store) give the same
//! findings for the same events, also when the service is stopped and
//! restarted in the middle of the learning period.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use trailwatch_processor::config::Config;
use trailwatch_processor::replay::replay;
use trailwatch_processor::ruleset;
use trailwatch_processor::service::{self, RunOptions};
use trailwatch_rules::{RuleFile, RuleSet};
use trailwatch_tests::fixtures::replay_options;

const RULES: &str = r#"
title: image pull
id: 7f3e0c1a-0000-4000-8000-000000000001
name: pull
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventSource: ecr.amazonaws.com, eventName: BatchGetImage}
    condition: sel
---
title: New principal x repository
id: 7f3e0c1a-0000-4000-8000-000000000002
level: low
tags: [nist_csf.de.ae-1]
correlation:
    type: first_seen
    rules: [pull]
    group-by: [userIdentity.arn, requestParameters.repositoryName]
    history: 2h
    learning: 1h
"#;

/// Event `i`: one pull a minute over 4 hours; 5 principals x 4 repositories
/// while learning, then now and then a new pair (and old pairs forgotten
/// after two hours without a pull).
fn event(i: u32) -> String {
    let (h, m) = (i / 60, i % 60);
    let who = if i < 60 { i % 5 } else { (i * 7) % 9 };
    let repo = if i < 60 { i % 4 } else { (i / 13) % 6 };
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T{:02}:{m:02}:00Z","eventSource":"ecr.amazonaws.com","eventName":"BatchGetImage","awsRegion":"us-east-1","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"111122223333","sourceIPAddress":"10.0.0.{who}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u{who}","accountId":"111122223333"}},"requestParameters":{{"repositoryName":"repo-{repo}"}}}}"#,
        10 + h
    )
}

fn write(path: &Path, range: std::ops::Range<u32>) {
    trailwatch_tests::fixtures::write_lines(path, range.map(event));
}

fn set() -> RuleSet {
    ruleset::compile(&[RuleFile { name: "fs.yml".into(), text: RULES.into() }], &Default::default()).unwrap().0
}

/// (rule id, finding id) of every finding in an ASFF JSON lines text.
fn ids(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["GeneratorId"].as_str().unwrap().to_string(), v["Id"].as_str().unwrap().to_string())
        })
        .collect()
}

fn replayed(inputs: Vec<std::path::PathBuf>) -> BTreeSet<(String, String)> {
    let opts = replay_options(inputs);
    let mut out = Vec::new();
    replay(Arc::new(set()), &opts, &mut out).unwrap();
    ids(&String::from_utf8(out).unwrap())
}

fn config(dir: &Path, input: &Path, out: &Path) -> Config {
    trailwatch_tests::fixtures::config(&trailwatch_tests::fixtures::file_run_toml(&dir.join("state"), input, out, true))
}

async fn live(cfg: Config) -> service::RunSummary {
    let opts = RunOptions::default();
    tokio::time::timeout(Duration::from_secs(60), service::run(cfg, Arc::new(set()), opts, std::future::pending()))
        .await
        .expect("the run ends")
        .expect("the run succeeds")
}

#[tokio::test]
async fn replay_and_live_give_the_same_first_seen_findings() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.ndjson");
    write(&all, 0..240);
    let from_replay = replayed(vec![all.clone()]);
    assert!(from_replay.len() >= 5, "new pairs after learning are reported: {from_replay:?}");
    let out = dir.path().join("live.ndjson");
    let s = live(config(dir.path(), &all, &out)).await;
    assert_eq!(s.eval.events, 240);
    let from_live = ids(&std::fs::read_to_string(&out).unwrap_or_default());
    assert_eq!(from_live, from_replay);
}

#[tokio::test]
async fn a_restart_in_the_middle_of_learning_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.ndjson"), dir.path().join("second.ndjson"));
    // 30 minutes into the 1-hour learning period, then the rest.
    write(&first, 0..30);
    write(&second, 30..240);
    let from_replay = replayed(vec![first.clone(), second.clone()]);
    let (o1, o2) = (dir.path().join("o1.ndjson"), dir.path().join("o2.ndjson"));
    live(config(dir.path(), &first, &o1)).await;
    assert!(std::fs::read_to_string(&o1).unwrap_or_default().trim().is_empty(), "learning is silent");
    assert!(dir.path().join("state/state.json").exists());
    live(config(dir.path(), &second, &o2)).await;
    let from_live = ids(&std::fs::read_to_string(&o2).unwrap_or_default());
    assert_eq!(from_live, from_replay, "the second run continued the learning, it did not restart it");
    // Without the state, the second half alone learns from scratch: other findings.
    assert_ne!(replayed(vec![second]), from_replay);
}
