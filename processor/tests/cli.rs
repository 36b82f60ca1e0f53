//! The `trailwatch` binary end to end: replay, rule commands, bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use trailwatch_tests::shared_or_skip;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trailwatch"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run trailwatch")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const NOW: &str = "2026-01-01T00:00:00Z";

#[test]
fn replay_emits_valid_deterministic_findings() {
    let rules = shared_or_skip!().join("sigma/rules");
    let input = shared_or_skip!().join("samples/stratus-detonations");
    let go = || {
        run(bin().args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--rules"]).arg(&rules).arg(&input))
    };
    let a = go();
    assert!(a.status.success(), "{}", text(&a.stderr));
    let lines: Vec<serde_json::Value> =
        text(&a.stdout).lines().map(|l| serde_json::from_str(l).expect("each line is one JSON finding")).collect();
    assert!(lines.len() >= 5, "expected findings, got {}", lines.len());
    for f in &lines {
        assert_eq!(f["SchemaVersion"], "2018-10-08");
        assert!(f["Id"].as_str().unwrap().starts_with("trailwatch/"));
        assert!(f["GeneratorId"].is_string());
        assert!(!f["Resources"].as_array().unwrap().is_empty());
    }
    let summary = text(&a.stderr);
    assert!(summary.contains("0 bad records"), "{summary}");
    assert!(summary.contains("matches per rule"), "{summary}");
    // Same input, same output: ids and content are deterministic.
    let b = go();
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn replay_output_dash_is_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("stop.ndjson");
    std::fs::write(&input, r#"{"eventVersion":"1.08","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","eventTime":"2024-01-01T00:00:00Z","eventID":"e1","awsRegion":"us-east-1","recipientAccountId":"111111111111","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/bob","accountId":"111111111111"},"sourceIPAddress":"198.51.100.7","requestParameters":{"name":"t"}}"#).unwrap();
    let out =
        run(bin().current_dir(dir.path()).args(["replay", "--no-progress", "--now", NOW, "--output", "-"]).arg(&input));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("-").exists(), "no file named -");
    let first: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().expect("a finding on stdout")).unwrap();
    assert!(first["Id"].as_str().unwrap().starts_with("trailwatch/"));
}

#[test]
fn malformed_records_are_counted_dead_lettered_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.ndjson");
    let good = r#"{"eventVersion":"1.08","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","eventTime":"2024-01-01T00:00:00Z","eventID":"e1","awsRegion":"us-east-1","recipientAccountId":"111111111111","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/bob","accountId":"111111111111"},"sourceIPAddress":"198.51.100.7","requestParameters":{"name":"t"}}"#;
    let bad = r#"{"eventVersion":"1.08","eventName":"StopLogging","requestParameters":{"name":"t"]}"#;
    std::fs::write(&input, format!("{good}\n{bad}\nnot json at all\n{}\n", good.replace("\"e1\"", "\"e2\""))).unwrap();
    let dlq = dir.path().join("dead.ndjson");
    let out = run(bin()
        .args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--rules"])
        .arg(shared_or_skip!().join("sigma/rules"))
        .arg("--dead-letter")
        .arg(&dlq)
        .arg(&input));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("2 bad records"), "{stderr}");
    assert!(stderr.contains("line 2"), "position of the bad record is logged: {stderr}");
    let findings = text(&out.stdout);
    assert_eq!(findings.lines().count(), 2, "both good records still produce findings");
    let dead: Vec<serde_json::Value> =
        std::fs::read_to_string(&dlq).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["line"], 2);
    assert_eq!(dead[1]["line"], 3);
}

#[test]
fn gzip_log_file_and_stdin_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |id: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventSource":"cloudtrail.amazonaws.com","eventName":"DeleteTrail","eventTime":"2024-01-01T00:00:00Z","eventID":"{id}","awsRegion":"eu-west-1","recipientAccountId":"222222222222","userIdentity":{{"type":"Root","arn":"arn:aws:iam::222222222222:root","accountId":"222222222222"}},"sourceIPAddress":"203.0.113.1","requestParameters":{{"name":"t"}}}}"#
        )
    };
    let log = format!(r#"{{"Records":[{},{}]}}"#, rec("a"), rec("b"));
    let gz = dir.path().join("111_CloudTrail_eu-west-1_x.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(log.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let rules = shared_or_skip!().join("sigma/rules");
    let out = run(bin().args(["replay", "--no-builtin", "--now", NOW, "--rules"]).arg(&rules).arg(&gz));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let from_file = text(&out.stdout);
    assert!(from_file.lines().count() >= 2, "{from_file}");

    let mut child = bin()
        .args(["replay", "--no-builtin", "--now", NOW, "--rules"])
        .arg(&rules)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(log.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), from_file, "stdin and file give the same findings");
}

#[test]
fn rules_validate_reports_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "title: bad\nlogsource:\n  product: aws\ndetection:\n  sel:\n    eventName|containz: x\n  condition: sel\n",
    )
    .unwrap();
    let out = run(bin().args(["rules", "validate"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yml:6: unknown modifier `containz`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let ok = run(bin().args(["rules", "validate"]).arg(shared_or_skip!().join("sigma/rules")));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("57 rules"), "{}", text(&ok.stdout));
}

#[test]
fn rules_for_sources_never_read_are_said_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |product: &str, n: usize| {
        format!(
            "title: r{n}\nid: {product}-{n}\nlogsource:\n  product: {product}\ndetection:\n  sel:\n    a: {n}\n  condition: sel\n"
        )
    };
    for n in 0..7 {
        std::fs::write(dir.path().join(format!("w{n}.yml")), rule("windows", n)).unwrap();
    }
    std::fs::write(dir.path().join("l.yml"), rule("linux", 0)).unwrap();
    std::fs::write(dir.path().join("aws.yml"), rule("aws", 0)).unwrap();
    // A warning that is not about the log source is still said per rule.
    std::fs::write(
        dir.path().join("ph.yml"),
        "title: p\nid: p\nlogsource: {product: aws}\ndetection:\n  sel: {a|expand: '%nothing%'}\n  condition: sel\n",
    )
    .unwrap();
    let out = run(bin().args(["rules", "validate"]).arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines.iter().any(|l| l.contains("ph.yml:5: warning: placeholder `%nothing%`")), "{err}");
    assert!(
        lines.iter().any(|l| l.starts_with(
            "warning: 8 rules are for log sources trailwatch does not read (product windows: 7, product linux: 1)"
        )),
        "{err}"
    );
}

#[test]
fn a_rule_that_does_not_compile_is_skipped_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "title: bad\nid: bad-1\nlogsource:\n  product: aws\ndetection:\n  sel:\n    eventName|containz: x\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("good.yml"),
        "title: trail stopped\nid: good-1\nlogsource:\n  product: aws\n  service: cloudtrail\ndetection:\n  sel:\n    eventName: StopLogging\n  condition: sel\n",
    )
    .unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let replay = |strict: bool| {
        let mut c = bin();
        c.args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--rules"]).arg(dir.path()).arg(&input);
        if strict {
            c.arg("--strict");
        }
        run(&mut c)
    };
    let out = replay(false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yml:7: warning: rule skipped: unknown modifier `containz`"), "{err}");
    let findings: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(findings.len(), 1, "the good rule still runs: {findings:?}");
    assert_eq!(findings[0]["Title"], "trail stopped");
    // --strict (or [rules] strict = true) fails instead, naming the rule.
    let out = replay(true);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bad.yml:7: unknown modifier"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

/// A Sigma filter next to the rules (Sigma Filters specification): the rule
/// it names stops reporting what the filter excludes; `rules validate`
/// checks it and fails on a broken one with file and line.
#[test]
fn sigma_filters_tune_the_rules_they_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trail.yml"),
        "title: trail stopped\nid: trail-1\nlogsource:\n  product: aws\n  service: cloudtrail\n\
         detection:\n  sel:\n    eventName: StopLogging\n  condition: sel\n",
    )
    .unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let replay = || {
        let out = run(bin()
            .args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--rules"])
            .arg(dir.path())
            .arg(&input));
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout).lines().count(), text(&out.stderr))
    };
    let (before, _) = replay();
    assert_eq!(before, 1);
    let filter = "title: the demo operator's address\nid: mf-demo\nlogsource:\n  product: aws\nfilter:\n  \
                  rules: [trail-1]\n  known:\n    sourceIPAddress: 198.51.100.23\n  condition: not known\n";
    std::fs::write(dir.path().join("mf_demo.yml"), filter).unwrap();
    let out = run(bin().args(["rules", "validate"]).arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (after, err) = replay();
    assert_eq!(after, 0, "{err}");
    assert!(err.contains("1 Sigma filter narrows 1 rule"), "{err}");
    // A broken filter: validate fails naming it; a run says so and runs the rule unfiltered.
    std::fs::write(dir.path().join("mf_demo.yml"), filter.replace("not known", "not unknown")).unwrap();
    let out = run(bin().args(["rules", "validate"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("mf_demo.yml:9: condition `not unknown`"), "{}", text(&out.stderr));
    let (n, err) = replay();
    assert_eq!(n, 1);
    assert!(err.contains("mf_demo.yml:9: warning: rule skipped"), "{err}");

    // README's example filter loads and narrows the pack rule it names (the pack is loaded by `replay`).
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let after = &readme[readme.find("Sigma filters (the Sigma Filters specification").unwrap()..];
    let block = after.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    let readme_dir = tempfile::tempdir().unwrap();
    std::fs::write(readme_dir.path().join("mf_break_glass.yml"), block).unwrap();
    let out = run(bin().args(["replay", "--no-progress", "--now", NOW, "--rules"]).arg(readme_dir.path()).arg(&input));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1 Sigma filter narrows 1 rule"), "{}", text(&out.stderr));
}

#[test]
fn rules_left_out_by_min_level_status_or_id_report_nothing_and_are_said_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |id: &str, level: &str, status: &str| {
        format!(
            "title: {id}\nid: {id}\n{status}level: {level}\nlogsource:\n  product: aws\n  service: cloudtrail\n\
             detection:\n  sel:\n    eventName: StopLogging\n  condition: sel\n"
        )
    };
    std::fs::write(dir.path().join("low.yml"), rule("low-1", "low", "")).unwrap();
    std::fs::write(dir.path().join("exp.yml"), rule("exp-1", "high", "status: experimental\n")).unwrap();
    std::fs::write(dir.path().join("off.yml"), rule("off-1", "high", "")).unwrap();
    std::fs::write(dir.path().join("kept.yml"), rule("kept-1", "high", "status: test\n")).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[rules]\nmin_level = \"medium\"\nstatus = [\"stable\", \"test\"]\ndisabled = [\"off-1\", \"typo-1\"]\n",
    )
    .unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let out = run(bin()
        .args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--config"])
        .arg(&config)
        .arg("--rules")
        .arg(dir.path())
        .arg(&input));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "3 rules report nothing ([rules] below min_level medium: 1, status not stable/test: 1, disabled: 1)"
        ),
        "{err}"
    );
    assert!(err.contains("warning: [rules] disabled lists `typo-1`, which no loaded rule has"), "{err}");
    let titles: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, ["kept-1"], "only the selected rule reports");
    // The same from the command line, over an empty config: --min-level, --status, --disable.
    let flags = |extra: &[&str]| {
        let mut c = bin();
        c.args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--rules"]).arg(dir.path()).args(extra);
        let out = run(c.arg(&input));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut t: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Title"].as_str().unwrap().to_string())
            .collect();
        t.sort();
        (t, text(&out.stderr))
    };
    let (all, _) = flags(&[]);
    assert_eq!(all, ["exp-1", "kept-1", "low-1", "off-1"]);
    let (t, err) = flags(&["--min-level", "medium", "--status", "stable,test", "--disable", "off-1"]);
    assert_eq!(t, ["kept-1"], "{err}");
    assert!(err.contains("3 rules report nothing"), "{err}");
    let (t, _) = flags(&["--min-level", "HIGH", "--disable", "kept-1"]);
    assert_eq!(t, ["exp-1", "off-1"]);
    let out = run(bin().args(["replay", "--no-builtin", "--min-level", "loud"]).arg(&input));
    assert!(
        !out.status.success() && text(&out.stderr).contains("expected informational, low"),
        "{}",
        text(&out.stderr)
    );
    // A status Sigma does not define is a configuration error.
    std::fs::write(&config, "[rules]\nstatus = [\"tested\"]\n").unwrap();
    let out = run(bin().args(["replay", "--no-builtin", "--config"]).arg(&config).arg(&input));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("rules.status: `tested` is not a Sigma status"), "{}", text(&out.stderr));
    let out = run(bin().args(["replay", "--no-builtin", "--status", "tested"]).arg(&input));
    assert!(text(&out.stderr).contains("rules.status: `tested` is not a Sigma status"), "{}", text(&out.stderr));
}

#[test]
fn rules_test_runs_cases_and_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yml"),
        r#"title: delete trail
id: 5f0b6a1e-0000-4000-8000-000000000001
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: DeleteTrail}
  condition: sel
tests:
  - name: delete
    event: {eventName: DeleteTrail}
  - name: other
    match: false
    event: {eventName: DescribeTrails}
  - name: wrong
    match: false
    event: {eventName: DeleteTrail}
"#,
    )
    .unwrap();
    let out = run(bin().args(["rules", "test"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.contains("2 passed, 1 failed"), "{s}");
    assert!(s.contains("FAIL") && s.contains("wrong"), "{s}");
}

#[test]
fn usage_errors_are_one_line_not_panics() {
    let out = run(bin().args(["replay", "--no-builtin", "--rules", "/nonexistent/rules", "x"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("/nonexistent/rules"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn readme_demo_runs_on_the_builtin_pack() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let out = run(bin().args(["replay", "--now", NOW]).arg(&examples));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let findings: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The rule's own title (the finding's Title says who did what to what).
    let mut titles: Vec<&str> =
        findings.iter().map(|f| f["ProductFields"]["trailwatch/RuleTitle"].as_str().unwrap()).collect();
    titles.sort();
    // Each injected attack of the demo raises its rule; the benign traffic nothing.
    assert_eq!(
        titles,
        vec![
            "CloudTrail Logging Stopped Or Trail Deleted",
            "ECR Image Scan Found Critical Or High Vulnerabilities",
            "ECR Repository Or Registry Policy Grants Public Access",
            "ECR Scan On Push Disabled"
        ]
    );
    let scan = findings.iter().find(|f| f["Title"].as_str().unwrap().starts_with("ECR scan found")).unwrap();
    assert_eq!(scan["Severity"]["Label"], "CRITICAL");
    assert!(scan["Compliance"]["RelatedRequirements"].as_array().unwrap().iter().any(|r| r == "NIST CSF DE.CM-8"));
}

fn download(i: u32, secs: u32, who: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventSource":"ecr.amazonaws.com","eventName":"GetDownloadUrlForLayer","eventTime":"2026-03-01T10:{:02}:{:02}Z","eventID":"ev-{i}","awsRegion":"eu-west-1","recipientAccountId":"111122223333","sourceIPAddress":"198.51.100.9","userIdentity":{{"type":"IAMUser","arn":"{who}","accountId":"111122223333"}},"requestParameters":{{"repositoryName":"shop/web","layerDigest":"sha256:{i:064x}"}}}}"#,
        secs / 60,
        secs % 60
    )
}

const BULK_RULES: &str = r#"title: layer download
id: t-download
name: layer_download
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: Bulk layer downloads
id: t-bulk
level: high
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 5m
  condition: {gte: 20}
"#;

#[test]
fn replay_runs_correlations_across_shuffled_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/bulk.yml"), BULK_RULES).unwrap();
    // A burst of 30 downloads in 3 minutes, split across two files out of
    // order (as CloudTrail delivers them), plus a slow puller that stays quiet.
    let mut a = String::new();
    let mut b = String::new();
    for i in 0..30u32 {
        let line = download(i, 60 + i * 6, "arn:aws:iam::111122223333:user/mallory");
        if i % 2 == 0 {
            a = format!("{line}\n{a}");
        } else {
            b.push_str(&line);
            b.push('\n');
        }
    }
    for i in 0..30u32 {
        b.push_str(&download(100 + i, i * 60, "arn:aws:iam::111122223333:user/slow"));
        b.push('\n');
    }
    std::fs::write(dir.path().join("a.ndjson"), a).unwrap();
    std::fs::write(dir.path().join("b.ndjson"), b).unwrap();
    let go = || {
        run(bin()
            .args(["replay", "--no-builtin", "--now", NOW, "--rules"])
            .arg(dir.path().join("rules"))
            .arg(dir.path().join("a.ndjson"))
            .arg(dir.path().join("b.ndjson")))
    };
    let out = go();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let findings: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!findings.is_empty(), "{}", text(&out.stderr));
    assert!(findings.iter().all(|f| f["GeneratorId"] == "t-bulk"), "base rule is hidden: {findings:?}");
    let first = &findings[0];
    assert_eq!(
        first["ProductFields"]["trailwatch/GroupKey"],
        "userIdentity.arn=arn:aws:iam::111122223333:user/mallory"
    );
    assert_eq!(first["ProductFields"]["trailwatch/Count"], "20");
    assert!(first["Resources"].as_array().unwrap().iter().any(|r| r["Type"] == "AwsIamUser"));
    // Repeats of the same burst update the same finding.
    assert!(findings.iter().all(|f| f["Id"] == first["Id"]));
    assert_eq!(go().stdout, out.stdout, "deterministic");
}

/// Two CloudTrail log files named as CloudTrail names them, given newest
/// first: the burst of `replay_runs_correlations_across_shuffled_files`.
fn burst_archive(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/bulk.yml"), BULK_RULES).unwrap();
    let arch = dir.join("AWSLogs/111122223333/CloudTrail/eu-west-1/2026/03/01");
    std::fs::create_dir_all(&arch).unwrap();
    let mut first = Vec::new();
    let mut second = Vec::new();
    for i in 0..30u32 {
        let ev = download(i, 60 + i * 6, "arn:aws:iam::111122223333:user/mallory");
        // Unsorted inside a file, as CloudTrail writes them.
        if i < 15 {
            first.insert(0, ev);
        } else {
            second.insert(0, ev);
        }
    }
    for (name, recs) in [("20260301T1005Z_b", &second), ("20260301T1002Z_a", &first)] {
        let body = format!("{{\"Records\":[{}]}}", recs.join(","));
        std::fs::write(arch.join(format!("111122223333_CloudTrail_eu-west-1_{name}.json")), body).unwrap();
    }
    dir.join("AWSLogs")
}

#[test]
fn replay_expectations_exit_code_stderr_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let archive = burst_archive(dir.path());
    let go = |expect: &str| {
        let file = dir.path().join("expect.toml");
        std::fs::write(&file, expect).unwrap();
        let junit = dir.path().join("junit.xml");
        let _ = std::fs::remove_file(&junit);
        let out = run(bin()
            .args(["replay", "--no-builtin", "--no-progress", "--now", NOW, "--rules"])
            .arg(dir.path().join("rules"))
            .arg("--expect")
            .arg(&file)
            .arg("--junit")
            .arg(&junit)
            .arg(&archive));
        let xml = std::fs::read_to_string(&junit).unwrap_or_default();
        (out, xml)
    };
    // Met: the burst fires once; the hidden base rule (not listed) never reports.
    let (out, xml) = go("unlisted = \"zero\"\n[[expect]]\nrule = \"t-bulk\"\nat_least = 1\nat_most = 1\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("expect ok    t-bulk  (Bulk layer downloads): 1 matches, wanted at least 1 and at most 1"),
        "{err}"
    );
    assert!(err.contains("expect ok    t-download  (layer download): 0 matches, wanted 0 (not listed)"), "{err}");
    assert!(err.contains(", 0 late events dropped"), "{err}");
    assert!(err.contains("plan: 2 files named by time in 1 account/region partitions"), "{err}");
    let cases = junit_cases(&xml);
    assert_eq!(
        cases,
        [("t-bulk (Bulk layer downloads)".to_string(), None), ("t-download (layer download)".to_string(), None)]
    );
    // Not met: exit 2, one line per rule, the failure in the JUnit file.
    let (out, xml) = go("[[expect]]\nrule = \"t-bulk\"\nexactly = 0\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("expect ")).collect();
    assert_eq!(lines, ["expect FAIL  t-bulk  (Bulk layer downloads): 1 matches, wanted exactly 0"], "{err}");
    assert!(err.contains("expectations: 0 met, 1 not met"), "{err}");
    let cases = junit_cases(&xml);
    assert_eq!(cases, [("t-bulk (Bulk layer downloads)".to_string(), Some("1 matches, wanted exactly 0".to_string()))]);
    // A rule that is not loaded is an error before anything runs.
    let (out, _) = go("[[expect]]\nrule = \"no-such-rule\"\nat_least = 1\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("rule `no-such-rule`: no such rule is loaded"), "{}", text(&out.stderr));
}

/// (testcase name, failure message) of a JUnit file, read with an XML tokenizer.
fn junit_cases(xml: &str) -> Vec<(String, Option<String>)> {
    use xmlparser::Token;
    let mut cases = Vec::new();
    let mut element = String::new();
    let mut declared = Vec::new();
    for t in xmlparser::Tokenizer::from(xml) {
        match t.expect("well-formed XML") {
            Token::ElementStart { local, .. } => element = local.to_string(),
            Token::Attribute { local, value, .. } => match (element.as_str(), local.as_str()) {
                ("testcase", "name") => cases.push((unescape(value.as_str()), None)),
                ("failure", "message") => {
                    cases.last_mut().expect("failure inside a testcase").1 = Some(unescape(value.as_str()))
                }
                ("testsuite", "tests") => declared.push(value.as_str().parse::<usize>().unwrap()),
                _ => {}
            },
            _ => {}
        }
    }
    assert_eq!(declared, [cases.len()], "one testsuite counting its testcases: {xml}");
    cases
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[test]
fn config_suppressions_and_windows_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/bulk.yml"), BULK_RULES).unwrap();
    let mut input = String::new();
    for i in 0..30u32 {
        input.push_str(&download(i, i * 6, "arn:aws:iam::111122223333:user/mallory"));
        input.push('\n');
    }
    std::fs::write(dir.path().join("in.ndjson"), &input).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[rules]\nbuiltin = false\n[[suppressions]]\nfield = \"userIdentity.arn\"\nvalues = [\"arn:aws:iam::111122223333:user/mallory\"]\nreason = \"red team\"\n",
    )
    .unwrap();
    let out = run(bin()
        .args(["replay", "--now", NOW, "--config"])
        .arg(&cfg)
        .arg("--rules")
        .arg(dir.path().join("rules"))
        .arg(dir.path().join("in.ndjson")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "suppressed principal raises nothing");
    assert!(text(&out.stderr).contains("30 matches suppressed"), "{}", text(&out.stderr));
    std::fs::write(&cfg, "[windows]\nallowed_lateness = \"soon\"\n").unwrap();
    let out = run(bin().args(["replay", "--config"]).arg(&cfg).arg(dir.path().join("in.ndjson")));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("allowed_lateness"), "{}", text(&out.stderr));
}

#[test]
fn run_with_the_embedded_default_matches_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // No config: the embedded default reads examples/events (relative to the
    // working directory); metrics off so parallel tests do not share a port.
    let run_out = run(bin().current_dir(&root).env("TRAILWATCH__METRICS__ENABLED", "false").arg("run"));
    assert!(run_out.status.success(), "{}", text(&run_out.stderr));
    let replay_out = run(bin().current_dir(&root).args(["replay", "--no-progress", "examples/events"]));
    assert!(replay_out.status.success(), "{}", text(&replay_out.stderr));
    let ids = |out: &Output| {
        let mut v: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one finding per line")["Id"].to_string())
            .collect();
        v.sort();
        v
    };
    let from_run = ids(&run_out);
    assert!(!from_run.is_empty());
    assert_eq!(from_run, ids(&replay_out), "the service and replay evaluate alike");
    assert!(text(&run_out.stderr).contains("41 events"), "{}", text(&run_out.stderr));
}

#[test]
fn an_unreachable_otlp_collector_neither_blocks_the_run_nor_its_exit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let started = std::time::Instant::now();
    let out = run(bin()
        .current_dir(&root)
        .env("TRAILWATCH__METRICS__ENABLED", "false")
        .env("TRAILWATCH__SERVICE__SHUTDOWN_TIMEOUT", "2s")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))
        .arg("run"));
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("41 events"), "{err}");
    assert!(text(&out.stdout).lines().count() > 0, "findings are written as usual");
    assert!(err.contains("OTLP export failed"), "the failure is logged: {err}");
    assert!(took < std::time::Duration::from_secs(20), "the flush keeps to the shutdown deadline: {took:?}");
}

#[test]
fn bad_otel_variables_stop_run_before_it_starts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = run(bin()
        .current_dir(&root)
        .env("TRAILWATCH__METRICS__ENABLED", "false")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .arg("run"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("`http/json` is not supported"), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn run_reports_config_errors_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[sources.k]\ntype = \"kinesis\"\n[sinks.s]\ntype = \"securityhub\"\nbatch_size = 500\n")
        .unwrap();
    let out = run(bin().args(["run", "--config"]).arg(&cfg));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("sources.k needs stream_name or stream_arn"), "{err}");
    assert!(err.contains("sinks.s.batch_size"), "{err}");
}

#[test]
fn healthcheck_fails_clearly_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = run(bin().args(["healthcheck", "--url", &format!("http://127.0.0.1:{port}/healthz")]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unhealthy"), "{}", text(&out.stderr));
}

#[test]
fn config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[sources.q]\ntype = \"sqs\"\nqueue_url = \"http://127.0.0.1:1/q\"\n").unwrap();
    let out = run(bin()
        .args(["config", "--config"])
        .arg(&cfg)
        .env("TRAILWATCH__SERVICE__COMMIT_INTERVAL", "30s")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: toml::Table = text(&out.stdout).parse().expect("the effective config is TOML");
    assert_eq!(printed["sources"]["q"]["receivers"].as_integer(), Some(4), "defaults are filled in");
    assert_eq!(printed["service"]["commit_interval"].as_str(), Some("30s"), "env overrides apply");
    assert!(text(&out.stderr).contains("configuration ok"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("traces not exported"), "{}", text(&out.stderr));
    let otlp = run(bin()
        .args(["config", "--config"])
        .arg(&cfg)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        .env("TRAILWATCH__TELEMETRY__OTLP_HEADERS__AUTHORIZATION", "Bearer s3cret")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    assert!(
        text(&otlp.stderr).contains("traces exported over OTLP/HTTP to http://collector:4318/v1/traces"),
        "{}",
        text(&otlp.stderr)
    );
    let shown: toml::Table = text(&otlp.stdout).parse().unwrap();
    assert_eq!(
        shown["telemetry"]["otlp_headers"]["authorization"].as_str(),
        Some("<redacted>"),
        "no credentials printed"
    );
}

/// Every configuration the central CloudFormation stack can write to SSM
/// (deploy/render-config.py renders them all) is one trailwatch accepts.
#[test]
fn deploy_templates_render_configs_the_service_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The script needs cfn-lint, which scripts/lint-deploy installs into .venv/
    // (scripts/test runs it before the tests); a system python3 may have it too.
    let venv = root.join(".venv/bin/python");
    let python = if venv.exists() { venv } else { PathBuf::from("python3") };
    let out = Command::new(&python).arg(root.join("deploy/render-config.py")).arg("--print").output().expect("python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Its own status lines ("render-config: ... ok") are not part of the configs.
    let all: String =
        text(&out.stdout).lines().filter(|l| !l.starts_with("render-config:")).map(|l| format!("{l}\n")).collect();
    let configs: Vec<&str> = all.split("# --- ").filter(|c| !c.trim().is_empty()).collect();
    assert!(configs.len() >= 2, "rendered: {all}");
    let dir = tempfile::tempdir().unwrap();
    let (mut traced, mut refused) = (0, 0);
    for (i, c) in configs.iter().enumerate() {
        let (label, body) = c.split_once('\n').unwrap_or((c, ""));
        let p = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&p, body).unwrap();
        let r = run(bin().args(["config", "--config"]).arg(&p));
        // Leases without the re-keyed stream suit only rule sets whose correlations
        // all group by the principal: with the built-in pack it is refused, naming why.
        if label.contains("Leased=True") && label.contains("RekeyWanted=False") {
            assert!(!r.status.success(), "config {i} ({label}) accepted");
            assert!(text(&r.stderr).contains("[rekey] source"), "{label}: {}", text(&r.stderr));
            refused += 1;
            continue;
        }
        assert!(r.status.success(), "config {i} ({label}) rejected: {}", text(&r.stderr));
        // With EnableXRayTracing the service exports to the collector sidecar, in X-Ray's id format.
        let effective = text(&r.stdout);
        let exports = effective.contains("otlp_endpoint = \"http://127.0.0.1:4318\"");
        assert_eq!(exports, label.contains("EnableXRay=True"), "{label}:\n{effective}");
        if exports {
            assert!(effective.contains("trace_id_format = \"xray\""), "{label}:\n{effective}");
            assert!(
                text(&r.stderr).contains("traces exported over OTLP/HTTP to http://127.0.0.1:4318/v1/traces"),
                "{label}"
            );
            traced += 1;
        }
    }
    assert!(traced > 0, "no rendered variant enables tracing: {all}");
    assert!(refused > 0, "no rendered variant has leases without the re-keyed stream: {all}");
}

#[test]
fn readme_documents_the_pack_as_rules_list_prints_it() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let out = run(bin().args(["rules", "list", "--format", "markdown"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.lines().count() > 20, "{table}");
    assert!(
        readme.contains(&table),
        "README's pack table is stale: paste `trailwatch rules list --format markdown`:\n{table}"
    );
    let placeholders: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/pack/placeholders.json"))
            .unwrap(),
    )
    .unwrap();
    for (name, p) in placeholders.as_object().unwrap() {
        assert!(readme.contains(&format!("| `%{name}%` |")), "README's pack defaults table lacks %{name}%");
        assert!(!p["assumes"].as_str().unwrap_or("").is_empty(), "%{name}% must say what its default assumes");
    }
}

#[test]
fn every_stratus_technique_raises_a_pack_finding() {
    // Real CloudTrail records of 35 public attack-technique detonations, one
    // technique per file. The org is the detonation's own account (its
    // recipientAccountId): anything shared with another account is outside it.
    let dir = shared_or_skip!().join("samples/stratus-detonations");
    let cfg_dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut silent = Vec::new();
    for f in &files {
        let records = std::fs::read_to_string(f).unwrap();
        let account = records
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|e| e["recipientAccountId"].as_str().map(str::to_string))
            .expect("a recipientAccountId");
        let cfg = cfg_dir.path().join("org.toml");
        std::fs::write(&cfg, format!("[rules.placeholders]\norg_accounts = [\"{account}\"]\n")).unwrap();
        let out = run(bin().args(["replay", "--no-progress", "--now", NOW, "--config"]).arg(&cfg).arg(f));
        assert!(out.status.success(), "{}: {}", f.display(), text(&out.stderr));
        if out.stdout.is_empty() {
            silent.push(f.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    assert!(files.len() >= 35, "{} detonation files", files.len());
    assert!(silent.is_empty(), "techniques without a pack finding: {silent:?}");
}

fn ct_event(n: u32, name: &str, source: &str, who: &str, params: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventID":"5e1f0000-0000-4000-8000-00000000{n:04}","eventTime":"2026-11-30T12:00:{n:02}Z","eventSource":"{source}","eventName":"{name}","awsRegion":"us-east-1","recipientAccountId":"111122223333","sourceIPAddress":"198.51.100.4","userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/{who}","accountId":"111122223333"}},"requestParameters":{params}}}"#
    )
}

#[test]
fn replay_responses_dry_run_prints_a_table_per_action() {
    let dir = tempfile::tempdir().unwrap();
    let input = [
        ct_event(
            1,
            "PutImageScanningConfiguration",
            "ecr.amazonaws.com",
            "dev/alice",
            r#"{"repositoryName":"payments/api","imageScanningConfiguration":{"scanOnPush":false}}"#,
        ),
        ct_event(2, "StopLogging", "cloudtrail.amazonaws.com", "breakglass-ops/bob", r#"{"name":"org"}"#),
        ct_event(
            3,
            "PutImageScanningConfiguration",
            "ecr.amazonaws.com",
            "dev/alice",
            r#"{"repositoryName":"web","imageScanningConfiguration":{"scanOnPush":false}}"#,
        ),
    ]
    .join("\n");
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[respond]
protected_principals = ["breakglass*"]
[[responses]]
name = "drift"
rules = ["3b57fec2-09ae-4f5c-bc0f-ae0a72ac43c1", "12f63f48-5ff7-486a-a844-d2b7088e5336"]
actions = ["restore-config", "revoke-role-sessions"]
mode = "enforce"
"#,
    )
    .unwrap();
    let findings = dir.path().join("findings.ndjson");
    let out = run(bin()
        .args(["replay", "--no-progress", "--now", NOW, "--responses", "dry-run", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&findings)
        .arg(dir.path().join("in.ndjson")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("== revoke-role-sessions (3 findings: dry_run 2, skipped_protected 1) =="), "{table}");
    assert!(table.contains("== restore-config (3 findings: dry_run 3) =="), "{table}");
    assert!(table.contains("would restore-config: scan on push back on for ECR repository payments/api"), "{table}");
    assert!(table.contains("would restore-config: scan on push back on for ECR repository web"), "{table}");
    assert!(table.contains("would restore-config: logging restarted on trail org"), "{table}");
    assert!(table.contains("would revoke-role-sessions: arn:aws:iam::111122223333:role/dev"), "{table}");
    assert!(table.contains("is a protected principal"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("2026-11-30T12:00:01Z  111122223333  enforce")), "{table}");
    // Findings still go to --output.
    assert!(std::fs::read_to_string(&findings).unwrap().lines().count() >= 3);

    // Without [[responses]] it says so instead of printing an empty table.
    std::fs::write(&cfg, "").unwrap();
    let out = run(bin()
        .args(["replay", "--no-progress", "--now", NOW, "--responses", "dry-run", "--config"])
        .arg(&cfg)
        .arg(dir.path().join("in.ndjson")));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no [[responses]]"), "{}", text(&out.stderr));
}

/// `config` makes the leases/re-keying plan `run` makes: with leases, the
/// built-in pack's correlations that do not group by the partition key are
/// refused by name without `[rekey]`, and each of them is re-keyed with it.
#[test]
fn config_checks_the_leases_and_rekey_plan_as_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let leased =
        "[sources.org]\ntype = \"kinesis\"\nstream_name = \"s\"\ncoordination = \"leases\"\nlease_table = \"t\"\n";
    let cfg = dir.path().join("leases.toml");
    std::fs::write(&cfg, leased).unwrap();
    let out = run(bin().args(["config", "--config"]).arg(&cfg));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(err.contains("[rekey]") && err.contains("these do not:"), "{err}");
    assert!(err.contains("group-by sourceIPAddress)"), "password spraying is named: {err}");
    let refused = err.matches("; group-by ").count();

    std::fs::write(&cfg, format!("{leased}{}", rekeyed_tail())).unwrap();
    let out = run(bin().args(["config", "--config"]).arg(&cfg));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(refused > 0 && err.contains(&format!("correlations ({refused} re-keyed)")), "{refused}: {err}");

    // A queue next to the leased stream: any instance reads any of its events,
    // so no correlation follows a key there; every one of them is re-keyed.
    let queue = "[sources.trail_files]\ntype = \"sqs\"\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n";
    std::fs::write(&cfg, format!("{leased}{queue}")).unwrap();
    let out = run(bin().args(["config", "--config"]).arg(&cfg));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(err.contains("sources read without leases (trail_files)"), "{err}");
    let all = err.matches("; group-by ").count();
    assert!(all > refused, "every correlation is named ({all}), not only the {refused} off the key: {err}");
    std::fs::write(&cfg, format!("{leased}{queue}{}", rekeyed_tail())).unwrap();
    let out = run(bin().args(["config", "--config"]).arg(&cfg));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("correlations ({all} re-keyed)")), "{all}: {err}");
}

fn rekeyed_tail() -> String {
    "[sources.rekeyed]\ntype = \"kinesis\"\nstream_name = \"r\"\ncoordination = \"leases\"\nlease_table = \"rt\"\n\
     [rekey]\nsource = \"rekeyed\"\n"
        .to_string()
}
