//! `trailwatch tune` on a generated day of an org whose puller roles the
//! configuration does not know: the printed snippet, merged into the config
//! and replayed, removes the recurring findings it names and none of the
//! injected attacks (scored against the generator's ground truth).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use trailwatch_loadtest::runner::score::{parse_finding, score, Finding};
use trailwatch_loadtest::truth::Truth;

use trailwatch_tests::trailwatch_bin as trailwatch;

const NOW: &str = "2026-11-03T00:00:00Z";

fn replay(bin: &Path, config: &Path, input: &Path) -> Vec<Finding> {
    let out = Command::new(bin)
        .args(["replay", "--no-progress", "--now", NOW, "--config"])
        .arg(config)
        .arg(input)
        .output()
        .expect("trailwatch replay runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_finding(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// Merges `b` into `a`: tables key by key, arrays of tables appended.
fn merge(a: &mut toml::Value, b: toml::Value) {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(toml::Value::Array(x)) if k == "suppressions" => {
                        if let toml::Value::Array(y) = v {
                            x.extend(y);
                        }
                    }
                    Some(existing) if existing.is_table() => merge(existing, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

/// Whether a finding is about `principal` (a role ARN or a principal ARN).
fn about(f: &Finding, principal: &str) -> bool {
    let arn = f.context.get("aws/cloudtrail/UserIdentityArn").map(String::as_str).unwrap_or("");
    let group = f.context.get("trailwatch/GroupKey").map(String::as_str).unwrap_or("");
    let session_prefix = principal.split_once(":role/").map(|(head, role)| {
        format!("{}:assumed-role/{}/", head.replacen(":iam:", ":sts:", 1), role.rsplit('/').next().unwrap_or(""))
    });
    arn == principal
        || group.contains(principal)
        || session_prefix.as_deref().is_some_and(|p| arn.starts_with(p) || group.contains(p))
}

#[test]
fn the_printed_snippet_quiets_the_recurring_sources_and_no_attack() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gen = Command::new(env!("CARGO_BIN_EXE_trailwatch-loadtest"))
        .args(["generate", "--accounts", "5", "--duration", "6h", "--rate", "2", "--seed", "17", "--no-progress"])
        .arg("--out")
        .arg(&data)
        .output()
        .expect("trailwatch-loadtest generate runs");
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let truth = Truth::load(&data.join("truth.json")).unwrap();
    let input = data.join("cloudtrail");

    // The org's own config and one benign source the pack flags all day: a
    // backup job's IAM user reading a dozen distinct secrets every hour (the
    // mass secret read correlation). Machine pullers no longer need naming
    // (they are known by behaviour), so the generator's traffic alone leaves
    // nothing recurring to tune.
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(data.join("trailwatch.toml")).unwrap()).unwrap();
    let account = cfg["rules"]["placeholders"]["org_accounts"][0].as_str().unwrap().to_string();
    let backup = format!("arn:aws:iam::{account}:user/backup-tool");
    let mut lines = String::new();
    for hour in 0..6 {
        for i in 0..12 {
            lines.push_str(
                &serde_json::json!({
                    "eventVersion": "1.09",
                    "eventSource": "secretsmanager.amazonaws.com",
                    "eventName": "GetSecretValue",
                    "eventTime": format!("2026-11-02T{hour:02}:30:{i:02}Z"),
                    "eventID": format!("backup-{hour}-{i}"),
                    "awsRegion": "us-east-1",
                    "recipientAccountId": account,
                    "sourceIPAddress": "10.20.30.40",
                    "userAgent": "aws-sdk-go-v2/1.30.0",
                    "userIdentity": {"type": "IAMUser", "arn": backup, "accountId": account, "userName": "backup-tool"},
                    "requestParameters": {"secretId": format!("app-{i}")},
                })
                .to_string(),
            );
            lines.push('\n');
        }
    }
    std::fs::write(input.join("backup-job.ndjson"), lines).unwrap();
    let untuned = dir.path().join("untuned.toml");
    std::fs::write(&untuned, toml::to_string(&cfg).unwrap()).unwrap();

    let bin = trailwatch();
    let snippet_file = dir.path().join("snippet.toml");
    let out = Command::new(&bin)
        .args(["tune", "--now", NOW, "--config"])
        .arg(&untuned)
        .arg("--snippet")
        .arg(&snippet_file)
        .arg(&input)
        .output()
        .expect("trailwatch tune runs");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snippet = std::fs::read_to_string(&snippet_file).unwrap();
    assert!(printed.ends_with(&snippet), "stdout ends with the snippet");
    eprintln!("{printed}");

    // What it names: (rule id, principal) from the `# recurring:` lines.
    let mut named: Vec<(String, String)> = Vec::new();
    let mut rule = String::new();
    for l in printed.lines() {
        let t = l.trim_start_matches('#').trim();
        if let Some(rest) = t.strip_prefix("recurring: ") {
            let principal = rest.split(" (").next().unwrap().to_string();
            named.push((rule.clone(), principal));
        } else if t.ends_with(')') && t.contains("]  (") {
            rule = t.rsplit("(").next().unwrap().trim_end_matches(')').to_string();
        }
    }
    assert!(named.iter().any(|(_, p)| p == &backup), "the backup job recurs all day: {printed}");
    let snip: toml::Value = toml::from_str(&snippet).expect("the snippet is valid TOML");
    for key in snip.as_table().unwrap().keys() {
        assert!(["rules", "suppressions"].contains(&key.as_str()), "only placeholders and suppressions: {key}");
    }
    if let Some(s) = snip.get("suppressions").and_then(|v| v.as_array()) {
        for e in s {
            assert!(e.get("expires").is_some() && e.get("reason").is_some(), "{e}");
        }
    }

    let before = replay(&bin, &untuned, &input);
    let mut tuned_cfg = cfg.clone();
    merge(&mut tuned_cfg, snip);
    let tuned = dir.path().join("tuned.toml");
    std::fs::write(&tuned, toml::to_string(&tuned_cfg).unwrap()).unwrap();
    let after = replay(&bin, &tuned, &input);

    for (rule, principal) in &named {
        let n_before = before.iter().filter(|f| &f.rule_id == rule && about(f, principal)).count();
        let n_after = after.iter().filter(|f| &f.rule_id == rule && about(f, principal)).count();
        assert!(n_before >= 5, "{rule} / {principal}: named with {n_before} findings");
        assert_eq!(n_after, 0, "{rule} / {principal}: still {n_after} findings after tuning");
    }
    let (q0, q1) = (score(&truth, &before), score(&truth, &after));
    let detected = |q: &trailwatch_loadtest::runner::score::Quality| -> BTreeSet<String> {
        q.detected.iter().map(|s| s.id.clone()).collect()
    };
    assert_eq!(detected(&q1), detected(&q0), "tuning lost an injected attack");
    assert!(after.len() < before.len());
    eprintln!(
        "tune: {} findings before, {} after; precision {:?} -> {:?}; recall {:?} -> {:?}; true-positive findings {} -> {}",
        before.len(),
        after.len(),
        q0.precision,
        q1.precision,
        q0.recall,
        q1.recall,
        q0.true_positive_findings,
        q1.true_positive_findings
    );
}
