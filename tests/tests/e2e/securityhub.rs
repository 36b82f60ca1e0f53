//! The Security Hub sink end to end against moto: file source → rules →
//! BatchImportFindings. Findings arrive, a second run upserts instead of
//! duplicating, more than 100 findings are split into several calls, and an
//! outage spools findings to disk (the checkpoint still advances) that are
//! delivered once Security Hub is back.
//!
//! moto validates almost nothing and never rejects a finding, so the
//! rejected-finding path (FailedFindings → dead letter) is tested in the
//! sink's unit tests against a fake endpoint answering real response shapes.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use trailwatch_processor::config::Config;
use trailwatch_processor::service::{self, RunOptions, RunSummary};
use trailwatch_processor::{metrics, ruleset};
use trailwatch_rules::RuleFile;
use trailwatch_tests::fixtures::{file_source_toml, service_toml};
use trailwatch_tests::{aws_env, Server, MOTO_ACCOUNT};

const RULE: &str = r#"
title: every denial
id: 6f1d1b0e-0000-4000-8000-00000000005e
level: medium
tags: [attack.discovery, nist_csf.de.cm-1]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
"#;

fn event(i: u32) -> String {
    event_in(i, MOTO_ACCOUNT)
}

fn event_in(i: u32, account: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:{m:02}:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","awsRegion":"us-east-1","errorCode":"AccessDenied","sourceIPAddress":"192.0.2.7","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"{account}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{account}:user/u{i}","accountId":"{account}"}}}}"#,
        m = (i / 60) % 60,
        s = i % 60,
    )
}

fn write_events(path: &Path, n: u32) {
    let text: Vec<String> = (0..n).map(event).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

/// A config with one file source and the securityhub sink `sink` pointed at `server`.
fn config(server: &Server, dir: &Path, input: &Path, sink: &str, exit_when_done: bool) -> Config {
    config_with(server, dir, input, sink, exit_when_done, "")
}

fn config_with(server: &Server, dir: &Path, input: &Path, sink: &str, exit_when_done: bool, extra: &str) -> Config {
    let text = format!(
        r#"
        {aws}
        {service}
        {source}
        batch_events = 500
        [sinks.{sink}]
        type = "securityhub"
        max_retries = 1
        batch_timeout = "50ms"
        {extra}
        [metrics]
        enabled = false
        "#,
        aws = server.aws_section(),
        service = service_toml(&dir.join("state"), "100ms"),
        source = file_source_toml(input, exit_when_done),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// `[findings]` of `cfg` decide the ASFF account and regions.
async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> RunSummary {
    let (set, _) = ruleset::compile(
        &[RuleFile { name: "sh.yml".into(), text: RULE.into() }],
        &trailwatch_rules::CompileOptions::default(),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(120), service::run(cfg, Arc::new(set), RunOptions::default(), shutdown))
        .await
        .expect("the run ends")
        .expect("the run succeeds")
}

/// Every finding moto holds, by Id (moto ignores filters; pages of 100).
async fn findings_in(server: &Server) -> Vec<serde_json::Value> {
    findings_with(&server.sdk_config().await).await
}

async fn findings_with(sdk: &aws_config::SdkConfig) -> Vec<serde_json::Value> {
    let client = aws_sdk_securityhub::Client::new(sdk);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let r = client.get_findings().max_results(100).set_next_token(token.clone()).send().await.unwrap();
        for f in r.findings() {
            out.push(serde_json::json!({
                "Id": f.id(),
                "AwsAccountId": f.aws_account_id(),
                "ProductArn": f.product_arn(),
                "Title": f.title(),
                "Severity": f.severity().and_then(|s| s.label()).map(|l| l.as_str().to_string()),
                "Types": f.types(),
                "Resources": f.resources().iter().map(|r| format!("{}:{}", r.r#type().unwrap_or(""), r.id().unwrap_or(""))).collect::<Vec<_>>(),
            }));
        }
        token = r.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a["Id"].as_str().cmp(&b["Id"].as_str()));
    out
}

fn ids(f: &[serde_json::Value]) -> Vec<String> {
    f.iter().map(|v| v["Id"].as_str().unwrap().to_string()).collect()
}

/// Findings in a sink's spool (one queue directory per route).
fn spooled(dir: &Path, sink: &str) -> usize {
    spooled_route(dir, sink)
}

#[tokio::test]
async fn findings_arrive_and_a_second_run_upserts_them() {
    aws_env();
    let server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 5);

    let s = run(config(&server, dir.path(), &input, "sh_arrive", true), std::future::pending()).await;
    assert_eq!(s.eval.events, 5);
    assert_eq!(s.sinks.findings, 5);
    let first = findings_in(&server).await;
    assert_eq!(first.len(), 5, "{first:?}");
    let f = &first[0];
    assert_eq!(f["AwsAccountId"], MOTO_ACCOUNT);
    assert_eq!(f["ProductArn"], format!("arn:aws:securityhub:us-east-1:{MOTO_ACCOUNT}:product/{MOTO_ACCOUNT}/default"));
    assert_eq!(f["Severity"], "MEDIUM");
    assert_eq!(f["Types"][0], "TTPs/Discovery");
    let sent = metrics::get().sink_findings.with_label_values(&["sh_arrive", "sent"]).get();
    assert_eq!(sent, 5);

    // The same input again, from scratch (no checkpoint): same Ids, no duplicates.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    run(config(&server, dir.path(), &input, "sh_arrive", true), std::future::pending()).await;
    let second = findings_in(&server).await;
    assert_eq!(second.len(), 5);
    assert_eq!(ids(&first), ids(&second));
    assert_eq!(metrics::get().sink_findings.with_label_values(&["sh_arrive", "sent"]).get(), 10);
}

#[tokio::test]
async fn more_than_100_findings_go_in_several_calls() {
    aws_env();
    let server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 250);

    run(config(&server, dir.path(), &input, "sh_split", true), std::future::pending()).await;
    assert_eq!(findings_in(&server).await.len(), 250);
    let sizes = metrics::get().sink_batch_size.with_label_values(&["sh_split"]);
    assert!(sizes.get_sample_count() >= 3, "250 findings need at least 3 calls: {}", sizes.get_sample_count());
    assert_eq!(sizes.get_sample_sum() as u64, 250, "every finding sent once");
    let calls = metrics::get().sink_request_duration.with_label_values(&["sh_split"]).get_sample_count();
    assert_eq!(calls, sizes.get_sample_count());
    // No call above 100: the histogram's le="100" bucket holds every observation.
    let text = metrics::get().render();
    let bucket = |le: &str| -> Option<u64> {
        let key = format!("trailwatch_sink_batch_size_bucket{{sink=\"sh_split\",le=\"{le}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|n| n.trim().parse().ok())
    };
    assert_eq!(bucket("100"), Some(sizes.get_sample_count()), "a call carried more than 100 findings:\n{text}");
}

#[tokio::test]
async fn an_outage_spools_findings_and_they_arrive_after_it() {
    aws_env();
    let mut server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 120);
    server.stop();

    // Security Hub is down: the findings are spooled and the run still commits.
    let s = run(config(&server, dir.path(), &input, "sh_outage", true), std::future::pending()).await;
    assert_eq!(s.sinks.findings, 120);
    assert!(s.sinks.commits >= 1);
    assert_eq!(spooled(dir.path(), "sh_outage"), 120, "every finding is in the spool");
    // The file source keeps no positions, but a commit (which waits for every
    // sink's flush) was written: spooled counts as durable.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/state.json")).unwrap()).unwrap();
    assert!(state["commit"].as_u64() >= Some(1), "committed once the findings were spooled: {state}");
    let m = metrics::get();
    assert_eq!(m.sink_spool_findings.with_label_values(&["sh_outage"]).get(), 120);
    assert!(m.sink_spool_bytes.with_label_values(&["sh_outage"]).get() > 0);
    assert_eq!(m.sink_findings.with_label_values(&["sh_outage", "sent"]).get(), 0);

    // Back up: a restarted service (nothing new to read) drains the spool.
    server.restart().unwrap();
    let sdk = server.sdk_config().await;
    // Polled in its own task: reading findings back (the SDK's deserialiser)
    // nested inside the service's future overflows the 2 MiB test stack in debug builds.
    let done = tokio::spawn(async move {
        let client = aws_sdk_securityhub::Client::new(&sdk);
        for _ in 0..300 {
            let mut n = 0;
            let mut token: Option<String> = None;
            loop {
                let Ok(r) = client.get_findings().max_results(100).set_next_token(token.clone()).send().await else {
                    break;
                };
                n += r.findings().len();
                token = r.next_token().filter(|t| !t.is_empty()).map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            if n >= 120 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let shutdown = async move {
        let _ = done.await;
    };
    // The file source keeps no positions: give the second run no new input.
    let empty = dir.path().join("none.ndjson");
    std::fs::write(&empty, "").unwrap();
    let s = run(config(&server, dir.path(), &empty, "sh_outage", false), shutdown).await;
    assert_eq!(s.eval.events, 0);
    let found = findings_in(&server).await;
    assert_eq!(found.len(), 120, "nothing lost");
    assert_eq!(spooled(dir.path(), "sh_outage"), 0, "the spool is empty again");
    assert_eq!(m.sink_spool_findings.with_label_values(&["sh_outage"]).get(), 0);
    assert_eq!(m.sink_findings.with_label_values(&["sh_outage", "sent"]).get(), 120);
}

/// Event-account mode: the sink assumes the member role in the event's
/// account and imports there (moto keeps findings per account).
#[tokio::test]
async fn findings_are_imported_in_the_event_account_through_the_member_role() {
    aws_env();
    let server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    let member = "111122223333";
    std::fs::write(&input, format!("{}\n{}\n", event_in(0, member), event_in(1, member))).unwrap();
    let cfg =
        config_with(&server, dir.path(), &input, "sh_member", true, "member_role_name = \"TrailwatchFindingsImport\"");
    run(cfg, std::future::pending()).await;
    assert_eq!(metrics::get().sink_findings.with_label_values(&["sh_member", "sent"]).get(), 2);
    assert!(findings_in(&server).await.is_empty(), "nothing under the central (own) account");

    let own = server.sdk_config().await;
    let role =
        aws_config::sts::AssumeRoleProvider::builder(format!("arn:aws:iam::{member}:role/TrailwatchFindingsImport"))
            .session_name("test")
            .configure(&own)
            .build()
            .await;
    let in_member = own
        .to_builder()
        .credentials_provider(aws_sdk_securityhub::config::SharedCredentialsProvider::new(role))
        .build();
    let found = findings_with(&in_member).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0]["AwsAccountId"], member);
    assert_eq!(found[0]["ProductArn"], format!("arn:aws:securityhub:us-east-1:{member}:product/{member}/default"));
}

/// Central mode: findings of any account are imported under the central one.
#[tokio::test]
async fn central_mode_imports_every_account_under_the_central_one() {
    aws_env();
    let server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, format!("{}\n{}\n", event_in(0, "111122223333"), event_in(1, "444455556666"))).unwrap();
    let mut cfg = config(&server, dir.path(), &input, "sh_central", true);
    cfg.findings.report_to = trailwatch_processor::config::ReportToConfig::Central;
    cfg.findings.central_account = Some(MOTO_ACCOUNT.into());
    cfg.validate().unwrap();
    run(cfg, std::future::pending()).await;
    let found = findings_in(&server).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|f| f["AwsAccountId"] == MOTO_ACCOUNT));
    // The affected accounts stay in Resources (each finding names its own).
    for account in ["111122223333", "444455556666"] {
        let is_account =
            |r: &serde_json::Value| r.as_str().is_some_and(|r| r.starts_with("AwsAccount:") && r.contains(account));
        let named = found.iter().filter(|f| f["Resources"].as_array().unwrap().iter().any(is_account)).count();
        assert_eq!(named, 1, "{account} is kept in one finding's Resources: {found:?}");
    }
}

/// `trailwatch replay --to-securityhub`: the replayed findings are imported
/// through the same sink, with `[aws]` from the config.
#[test]
fn replay_can_import_into_security_hub() {
    use clap::Parser;
    aws_env();
    let server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 3);
    let rules = dir.path().join("rule.yml");
    std::fs::write(&rules, RULE).unwrap();
    let cfg = dir.path().join("trailwatch.toml");
    let text = format!("{}\n[service]\nstate_dir = \"{}\"\n", server.aws_section(), dir.path().join("state").display());
    std::fs::write(&cfg, text).unwrap();
    let args = [
        "trailwatch".as_ref(),
        "replay".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        "--no-builtin".as_ref(),
        "--rules".as_ref(),
        rules.as_os_str(),
        "--no-progress".as_ref(),
        "--to-securityhub".as_ref(),
        input.as_os_str(),
    ];
    let cli = trailwatch_processor::cli::Cli::parse_from(args);
    assert_eq!(trailwatch_processor::cli::run(cli).unwrap(), 0);
    let written = std::fs::read_to_string(dir.path().join("state/replay-findings.ndjson")).unwrap();
    assert_eq!(written.lines().count(), 3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let found = rt.block_on(findings_in(&server));
    assert_eq!(found.len(), 3, "{found:?}");
}

fn event_from(i: u32, account: &str, region: &str) -> String {
    event_in(i, account).replace("\"awsRegion\":\"us-east-1\"", &format!("\"awsRegion\":\"{region}\""))
}

type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// An HTTP proxy in front of moto that refuses every call signed for the
/// region `refuse` (403 AccessDeniedException, as an import role answers for
/// a region it may not use) and forwards the rest; records each call's region.
/// moto itself accepts every finding, in every region.
async fn refusing_proxy(upstream: &str, refuse: &'static str) -> (String, Seen) {
    use tokio::io::AsyncWriteExt;
    use trailwatch_tests::http_wire::{read_message, signed_region};
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let seen = seen2.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(request) = read_message(&mut sock, &mut buf).await {
                    // The region is in the SigV4 credential scope: Credential=KEY/DATE/REGION/securityhub/...
                    let region = signed_region(&request.head);
                    seen.lock().unwrap().push(region.clone());
                    let response = if region == refuse {
                        let body =
                            r#"{"Message":"User is not authorized to perform: securityhub:BatchImportFindings"}"#;
                        format!(
                            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nx-amzn-errortype: AccessDeniedException\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .into_bytes()
                    } else {
                        let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else { return };
                        if up.write_all(&request.bytes).await.is_err() {
                            return;
                        }
                        let mut ubuf = Vec::new();
                        let Some(response) = read_message(&mut up, &mut ubuf).await else { return };
                        response.bytes
                    };
                    if sock.write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn findings_in_region(server: &Server, region: &str) -> Vec<aws_sdk_securityhub::types::AwsSecurityFinding> {
    let sdk = server.sdk_config().await.to_builder().region(aws_config::Region::new(region.to_string())).build();
    let client = aws_sdk_securityhub::Client::new(&sdk);
    let r = client.get_findings().max_results(100).send().await.unwrap();
    r.findings().to_vec()
}

/// Issue 15, the wedge: one route refused (AccessDenied for eu-west-1)
/// must not hold back another route's findings, end to end against moto.
#[tokio::test]
async fn healthy_findings_arrive_while_another_route_is_refused() {
    aws_env();
    let server = Server::moto().unwrap();
    let (proxy, regions) = refusing_proxy(&server.endpoint, "eu-west-1").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    let mut lines = vec![event_from(0, MOTO_ACCOUNT, "eu-west-1")];
    lines.extend((1..=4).map(|i| event_from(i, MOTO_ACCOUNT, "us-east-1")));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let extra = format!("endpoint_url = \"{proxy}\"\nmax_refused_attempts = 2\npark_max = \"100ms\"");
    let mut cfg = config_with(&server, dir.path(), &input, "sh_wedge", true, &extra);
    // eu-west-1 is (wrongly) allowed as an import region: its route is refused.
    cfg.findings.import_regions = vec!["eu-west-1".into()];
    cfg.validate().unwrap();
    let s = run(cfg, std::future::pending()).await;
    assert_eq!(s.sinks.findings, 5);
    let us = findings_in_region(&server, "us-east-1").await;
    assert_eq!(us.len(), 4, "the healthy route delivered everything: {us:?}");
    assert!(findings_in_region(&server, "eu-west-1").await.is_empty());
    assert!(regions.lock().unwrap().iter().any(|r| r == "eu-west-1"), "the refused route was tried");
    // The refused finding is kept: still spooled, or dead-lettered with the reason.
    let dead = std::fs::read_to_string(dir.path().join("state/securityhub-rejected.ndjson")).unwrap_or_default();
    let spooled_eu = spooled_route(dir.path(), "sh_wedge");
    assert_eq!(spooled_eu + dead.lines().count(), 1, "spooled {spooled_eu}, dead letters:\n{dead}");
    if let Some(l) = dead.lines().next() {
        assert!(l.contains("AccessDenied"), "{l}");
    }
}

/// Findings in every route queue (`<account>_<region>/`) of a sink's spool.
fn spooled_route(dir: &Path, sink: &str) -> usize {
    let root = dir.join("state/spool").join(sink);
    let Ok(rd) = std::fs::read_dir(&root) else { return 0 };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().filter_map(Result::ok))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum()
}

/// Issue 15, the region: with `findings.region = us-east-1` a finding of an
/// eu-west-1 event is imported in us-east-1 (where the import role may
/// import) and keeps the event's region visible.
#[tokio::test]
async fn a_finding_from_another_region_is_imported_in_the_findings_region() {
    aws_env();
    let server = Server::moto().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, event_from(0, MOTO_ACCOUNT, "eu-west-1") + "\n").unwrap();
    let mut cfg = config(&server, dir.path(), &input, "sh_region", true);
    cfg.findings.region = "us-east-1".into();
    cfg.validate().unwrap();
    run(cfg, std::future::pending()).await;
    assert!(findings_in_region(&server, "eu-west-1").await.is_empty(), "nothing imported in the event's region");
    let found = findings_in_region(&server, "us-east-1").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(
        f.product_arn(),
        Some(format!("arn:aws:securityhub:us-east-1:{MOTO_ACCOUNT}:product/{MOTO_ACCOUNT}/default").as_str())
    );
    assert_eq!(f.product_fields().unwrap().get("trailwatch/EventRegion").map(String::as_str), Some("eu-west-1"));
    assert!(f.resources().iter().any(|r| r.region() == Some("eu-west-1")), "{:?}", f.resources());
}
