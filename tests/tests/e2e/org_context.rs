//! Org context discovered, never required: the outside-account rules of the
//! built-in pack find their scenarios with no configuration at all, in
//! `replay` (accounts derived from the input's recipientAccountId) and in
//! `run` (AWS Organizations, here moto's; and the derived fallback when
//! Organizations is not in use).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use trailwatch_processor::cli::{replay_rules, run_rules, RuleArgs};
use trailwatch_processor::config::Config;
use trailwatch_processor::replay::replay;
use trailwatch_processor::service::{self, OrgMode, RunOptions};
use trailwatch_tests::fixtures::{file_run_toml, replay_options};
use trailwatch_tests::Server;

const POLICY_OUTSIDE: &str = "ae005d5b-9a6c-49da-b492-daa719ab6492";
const REPLICATION_OUTSIDE: &str = "f54ecc10-178e-45d4-9800-9ec67feaf3ed";
const CALL_FROM_OUTSIDE: &str = "ad04df26-7858-4e54-a972-ee021a355618";
const OUTSIDER: &str = "999988887777";

fn record(i: u32, recipient: &str, name: &str, caller_account: &str, params: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:{i:02}:00Z","eventSource":"{src}","eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"10.0.0.{i}","userAgent":"aws-cli/2.18.5","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"{recipient}","userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::{caller_account}:assumed-role/deployer/s","accountId":"{caller_account}","principalId":"AROAEXAMPLE:s"}},"requestParameters":{params}}}"#,
        src = if name == "AssumeRole" { "sts.amazonaws.com" } else { "ecr.amazonaws.com" },
    )
}

/// Two org accounts (the second one logs only at the end), a replication to
/// it (benign), a repository policy granting an outside account and a call
/// from that account (both attacks).
fn events(a: &str, b: &str) -> String {
    let repl = format!(
        r#"{{"replicationConfiguration":{{"rules":[{{"destinations":[{{"region":"us-west-2","registryId":"{b}"}}]}}]}}}}"#
    );
    let policy = format!(
        r#"{{"repositoryName":"shop/web","policyText":"{{\"Statement\":[{{\"Effect\":\"Allow\",\"Principal\":{{\"AWS\":\"arn:aws:iam::{OUTSIDER}:root\"}},\"Action\":\"ecr:BatchGetImage\"}}]}}"}}"#
    );
    [
        record(1, a, "DescribeRepositories", a, "{}"),
        record(2, a, "PutReplicationConfiguration", a, &repl),
        record(3, a, "SetRepositoryPolicy", a, &policy),
        record(4, a, "AssumeRole", OUTSIDER, r#"{"roleArn":"arn:aws:iam::111122223333:role/deployer"}"#),
        record(5, b, "DescribeRepositories", b, "{}"),
    ]
    .join("\n")
        + "\n"
}

fn rule_ids(findings: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> =
        findings.iter().map(|f| f["ProductFields"]["trailwatch/RuleId"].as_str().unwrap_or("").to_string()).collect();
    v.sort();
    v
}

fn parse_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn replay_derives_the_org_from_the_input() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("trail.ndjson");
    std::fs::write(&input, events("111122223333", "444455556666"))?;
    let (set, note) = replay_rules(&Config::default(), &RuleArgs::default(), std::slice::from_ref(&input))?;
    let note = note.expect("the summary says what was derived");
    assert!(note.contains("2 accounts: 111122223333, 444455556666"), "{note}");
    let opts = replay_options(vec![input]);
    let mut out = Vec::new();
    replay(Arc::new(set), &opts, &mut out)?;
    let ids = rule_ids(&parse_lines(std::str::from_utf8(&out)?));
    // Both attacks; the replication to 444455556666 (which logs only after
    // it) is within the org thanks to the pre-pass.
    assert!(ids.iter().any(|i| i == POLICY_OUTSIDE), "{ids:?}");
    assert!(ids.iter().any(|i| i == CALL_FROM_OUTSIDE), "{ids:?}");
    assert!(!ids.iter().any(|i| i == REPLICATION_OUTSIDE), "{ids:?}");

    // Explicit config wins: with org_accounts set to the first account only,
    // the replication to the second is outside.
    let cfg: Config = toml::from_str("[rules.placeholders]\norg_accounts = [\"111122223333\"]\n")?;
    let (set, note) = replay_rules(&cfg, &RuleArgs::default(), &opts.inputs)?;
    assert!(note.is_none(), "nothing derived when configured");
    let mut out = Vec::new();
    replay(Arc::new(set), &opts, &mut out)?;
    assert!(rule_ids(&parse_lines(std::str::from_utf8(&out)?)).iter().any(|i| i == REPLICATION_OUTSIDE));
    Ok(())
}

fn run_config(dir: &Path, moto: &Server, input: &Path) -> Config {
    let text = format!(
        r#"
        {aws}
        [checkpoints]
        store = "none"
        {run}
        "#,
        aws = moto.aws_section(),
        run = file_run_toml(&dir.join("state"), input, &dir.join("findings.ndjson"), true),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

async fn run_service(cfg: Config) -> Vec<serde_json::Value> {
    let out = cfg.service.state_dir.parent().unwrap().join("findings.ndjson");
    let (set, org) = run_rules(&cfg, &RuleArgs::default()).await.expect("rules");
    let opts = RunOptions { org, ..Default::default() };
    tokio::time::timeout(Duration::from_secs(60), service::run(cfg, Arc::new(set), opts, std::future::pending::<()>()))
        .await
        .expect("the run ends")
        .expect("the run succeeds");
    parse_lines(&std::fs::read_to_string(out).unwrap_or_default())
}

#[tokio::test]
async fn run_discovers_the_org_from_organizations_or_derives_it() -> anyhow::Result<()> {
    let moto = Server::moto()?;
    let sdk = moto.sdk_config().await;
    let orgs = aws_sdk_organizations::Client::new(&sdk);

    // No organization yet: Organizations answers "not in use", a warning; the
    // accounts are derived from the input as it arrives.
    {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("trail.ndjson");
        std::fs::write(&input, events("111122223333", "444455556666"))?;
        let cfg = run_config(dir.path(), &moto, &input);
        let (_, org) = run_rules(&cfg, &RuleArgs::default()).await?;
        assert!(matches!(org.map(|o| o.mode), Some(OrgMode::Derived { .. })));
        let ids = rule_ids(&run_service(cfg).await);
        assert!(ids.iter().any(|i| i == POLICY_OUTSIDE), "{ids:?}");
        assert!(ids.iter().any(|i| i == CALL_FROM_OUTSIDE), "{ids:?}");
    }

    // An organization with a member that never logs: Organizations knows it,
    // so replicating to it is not outside; the outside account still is.
    orgs.create_organization().send().await?;
    let created = orgs.create_account().email("member@example.com").account_name("member").send().await?;
    let member = created
        .create_account_status()
        .and_then(|s| s.account_id())
        .map(str::to_string)
        .expect("moto creates the account at once");
    let management = orgs
        .describe_organization()
        .send()
        .await?
        .organization()
        .and_then(|o| o.master_account_id())
        .map(str::to_string)
        .expect("management account");
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("trail.ndjson");
    // Only the management account logs here; the member appears only as a
    // replication destination.
    std::fs::write(&input, events(&management, &management))?;
    let text = std::fs::read_to_string(&input)?
        .replace(&format!(r#""registryId":"{management}""#), &format!(r#""registryId":"{member}""#));
    std::fs::write(&input, text)?;
    let cfg = run_config(dir.path(), &moto, &input);
    let (_, org) = run_rules(&cfg, &RuleArgs::default()).await?;
    match org.map(|o| o.mode) {
        Some(OrgMode::Organizations { current, .. }) => {
            assert!(current.accounts.contains(&member) && current.accounts.contains(&management), "{current:?}");
            assert!(current.org_id.as_deref().is_some_and(|id| id.starts_with("o-")), "{current:?}");
        }
        other => panic!("expected the org from AWS Organizations, got {other:?}"),
    }
    let ids = rule_ids(&run_service(cfg).await);
    assert!(ids.iter().any(|i| i == POLICY_OUTSIDE), "{ids:?}");
    assert!(ids.iter().any(|i| i == CALL_FROM_OUTSIDE), "{ids:?}");
    assert!(!ids.iter().any(|i| i == REPLICATION_OUTSIDE), "the member is in the org: {ids:?}");

    // Explicit config wins over Organizations.
    let mut cfg = run_config(dir.path(), &moto, &input);
    cfg.rules.placeholders.insert("org_accounts".into(), vec![management.clone()]);
    let (_, org) = run_rules(&cfg, &RuleArgs::default()).await?;
    assert!(org.is_none() || matches!(org.map(|o| o.mode), Some(OrgMode::Organizations { .. })));
    let ids = rule_ids(&run_service(cfg).await);
    assert!(ids.iter().any(|i| i == REPLICATION_OUTSIDE), "configured org_accounts leaves the member out: {ids:?}");
    Ok(())
}
