//! The SQS source against a real SQS and S3 emulator (moto): EventBridge,
//! SNS-wrapped and raw bodies come out as findings and their messages are
//! deleted once committed; S3 notifications of CloudTrail log files are
//! fetched and decoded (digest files skipped); a poison message goes to the
//! queue's dead-letter queue through its redrive policy while the rest flows.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use trailwatch_processor::config::Config;
use trailwatch_processor::service::{self, RunOptions, RunSummary};
use trailwatch_processor::{decode::DecodeOptions, findings::FindingContext, ruleset};
use trailwatch_rules::{DetectorConfig, RuleFile};
use trailwatch_tests::Server;

const RULES: &str = r#"
title: Test marker call
id: 6f1d1b0e-0000-4000-8000-0000000000b1
level: high
tags: [nist_csf.de.cm-1]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: TwMarker}
    condition: sel
"#;

fn record(i: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:00:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"TwMarker","awsRegion":"us-east-1","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u{i}","accountId":"111122223333"}}}}"#,
        s = i % 60
    )
}

fn eventbridge(i: u32) -> String {
    format!(
        r#"{{"version":"0","id":"eb-{i}","detail-type":"AWS API Call via CloudTrail","source":"aws.iam","account":"111122223333","time":"2026-11-01T10:00:00Z","region":"us-east-1","resources":[],"detail":{}}}"#,
        record(i)
    )
}

fn sns(message: &str) -> String {
    format!(
        r#"{{"Type":"Notification","MessageId":"m-1","TopicArn":"arn:aws:sns:us-east-1:111122223333:t","Message":{}}}"#,
        serde_json::json!(message)
    )
}

fn s3_notification(bucket: &str, key: &str) -> String {
    format!(
        r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","size":100}}}}}}]}}"#
    )
}

fn log_file(ids: &[u32]) -> Vec<u8> {
    let records: Vec<String> = ids.iter().map(|i| record(*i)).collect();
    let doc = format!(r#"{{"Records":[{}]}}"#, records.join(","));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(doc.as_bytes()).unwrap();
    gz.finish().unwrap()
}

async fn queue(client: &aws_sdk_sqs::Client, name: &str, attrs: &[(QueueAttributeName, String)]) -> String {
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(k.clone(), v);
    }
    req.send().await.unwrap().queue_url.unwrap()
}

async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let a = out.attributes().unwrap();
    let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(QueueAttributeName::ApproximateNumberOfMessages) + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

fn config(server: &Server, dir: &Path, url: &str) -> Config {
    let text = format!(
        r#"
        {aws}
        [service]
        state_dir = "{state}"
        commit_interval = "200ms"
        [sources.queue]
        type = "sqs"
        queue_url = "{url}"
        receivers = 2
        wait_time = "1s"
        [sinks.out]
        type = "asff-jsonl"
        path = "{out}"
        [metrics]
        enabled = false
        "#,
        aws = server.aws_section(),
        state = dir.join("state").display(),
        out = findings_path(dir).display(),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

fn findings_path(dir: &Path) -> PathBuf {
    dir.join("findings.ndjson")
}

fn finding_events(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(findings_path(dir))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["ProductFields"]["trailwatch/EventIds"].as_str().unwrap().to_string()
        })
        .collect();
    v.sort();
    v
}

fn ids(range: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = range.iter().map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    v.sort();
    v
}

type Until = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the service until `until` resolves and one more commit followed, then shuts it down.
async fn run_until(cfg: Config, until: Until) -> RunSummary {
    trailwatch_tests::aws_env();
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
        org: None,
    };
    let shutdown = async move {
        let _ = tokio::time::timeout(Duration::from_secs(40), until).await;
        let seen = *rx.borrow();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|n| *n > seen)).await;
    };
    tokio::time::timeout(Duration::from_secs(60), service::run(cfg, Arc::new(set), opts, shutdown))
        .await
        .expect("the run ends")
        .expect("the run succeeds")
}

fn until_findings(dir: &Path, n: usize) -> Until {
    let dir = dir.to_path_buf();
    Box::pin(async move {
        while finding_events(&dir).len() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test]
async fn bodies_become_findings_and_messages_are_deleted_after_commit() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = queue(&sqs, "events", &[]).await;
    for body in [eventbridge(1), sns(&eventbridge(2)), record(3), sns(&record(4))] {
        sqs.send_message().queue_url(&url).message_body(body).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let s = run_until(config(&server, dir.path(), &url), until_findings(dir.path(), 4)).await;
    assert_eq!(finding_events(dir.path()), ids(&[1, 2, 3, 4]));
    assert_eq!(s.eval.events, 4);
    // Committed, so deleted: nothing visible or in flight.
    assert_eq!(depth(&sqs, &url).await, 0);
}

#[tokio::test]
async fn s3_notified_log_files_are_read_and_digests_skipped() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    s3.create_bucket().bucket("org-trail").send().await.unwrap();
    let key1 = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/01/111122223333_CloudTrail_us-east-1_20261101T1000Z_a.json.gz";
    let key2 = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/01/111122223333_CloudTrail_us-east-1_20261101T1005Z_b.json.gz";
    for (key, body) in [(key1, log_file(&[10, 11, 12])), (key2, log_file(&[13]))] {
        s3.put_object().bucket("org-trail").key(key).body(body.into()).send().await.unwrap();
    }
    let url = queue(&sqs, "notifications", &[]).await;
    let digest =
        "AWSLogs/o-abc/111122223333/CloudTrail-Digest/us-east-1/2026/11/01/x_CloudTrail-Digest_us-east-1.json.gz";
    let created = format!(
        r#"{{"version":"0","id":"s3-1","detail-type":"Object Created","source":"aws.s3","account":"111122223333","time":"2026-11-01T10:06:00Z","region":"us-east-1","resources":[],"detail":{{"bucket":{{"name":"org-trail"}},"object":{{"key":"{key2}","size":100}}}}}}"#
    );
    for body in [s3_notification("org-trail", key1), sns(&s3_notification("org-trail", digest)), created] {
        sqs.send_message().queue_url(&url).message_body(body).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let s = run_until(config(&server, dir.path(), &url), until_findings(dir.path(), 4)).await;
    assert_eq!(finding_events(dir.path()), ids(&[10, 11, 12, 13]));
    assert_eq!(s.eval.events, 4);
    // The digest notification was skipped, not fetched (it does not exist) and not poison: deleted too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(depth(&sqs, &url).await, 0);
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_queue_and_the_rest_flows() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = queue(&sqs, "events-dlq", &[]).await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#);
    let url = queue(
        &sqs,
        "events",
        &[(QueueAttributeName::RedrivePolicy, redrive), (QueueAttributeName::VisibilityTimeout, "1".into())],
    )
    .await;
    sqs.send_message().queue_url(&url).message_body("this is not an event {").send().await.unwrap();
    // An S3 notification for an object that does not exist is poison too.
    sqs.send_message()
        .queue_url(&url)
        .message_body(s3_notification("no-such-bucket", "AWSLogs/x.json.gz"))
        .send()
        .await
        .unwrap();
    for i in 20..23 {
        sqs.send_message().queue_url(&url).message_body(eventbridge(i)).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (sqs2, dlq2, path) = (sqs.clone(), dlq.clone(), dir.path().to_path_buf());
    let until: Until = Box::pin(async move {
        while finding_events(&path).len() < 3 || depth(&sqs2, &dlq2).await < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let s = run_until(config(&server, dir.path(), &url), until).await;
    assert_eq!(finding_events(dir.path()), ids(&[20, 21, 22]));
    assert_eq!(s.eval.events, 3);
    assert_eq!(depth(&sqs, &dlq).await, 2, "both poison messages were redriven");
    assert_eq!(depth(&sqs, &url).await, 0);
}
