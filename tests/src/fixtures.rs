//! What the end-to-end scenarios share, so that each test file reads as its
//! scenarios: rules, CloudTrail events and their envelopes, emulator set-up
//! (Kinesis streams, SQS queues), the service run until a condition plus one
//! commit, and reading the findings back.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_sqs::types::QueueAttributeName;
use trailwatch_processor::config::Config;
use trailwatch_processor::decode::DecodeOptions;
use trailwatch_processor::findings::FindingContext;
use trailwatch_processor::replay::{ReplayFormat, ReplayOptions};
use trailwatch_processor::service::{self, RunOptions, RunSummary};
use trailwatch_rules::{DetectorConfig, RuleFile, RuleSet};

/// The id of [`MARKER_RULE`].
pub const MARKER_RULE_ID: &str = "6f1d1b0e-0000-4000-8000-0000000000a1";

/// A detection of every `TwMarker` call ([`marker_event`]).
pub const MARKER_RULE: &str = r#"
title: Test marker call
id: 6f1d1b0e-0000-4000-8000-0000000000a1
level: high
tags: [nist_csf.de.cm-1]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: TwMarker}
    condition: sel
"#;

/// Two rules as one text: `denied` (every AccessDenied, informational) and
/// a high correlation `id` over it, grouped by `group_by`, within `timespan`
/// when the count meets `condition`.
#[macro_export]
macro_rules! denied_correlation {
    ($denied_id:literal, $id:literal, $group_by:literal, $timespan:literal, $condition:literal) => {
        concat!(
            r#"
title: denied
id: "#,
            $denied_id,
            r#"
name: denied
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
---
title: Repeated AccessDenied
id: "#,
            $id,
            r#"
level: high
tags: [nist_csf.de.cm-1]
correlation:
    type: event_count
    rules: [denied]
    group-by: ["#,
            $group_by,
            r#"]
    timespan: "#,
            $timespan,
            r#"
    condition: {"#,
            $condition,
            "}\n"
        )
    };
}

/// More than 3 AccessDenied of one principal within 10 minutes
/// ([`denied_event`]).
pub const REPEATED_DENIED_RULES: &str = denied_correlation!(
    "6f1d1b0e-0000-4000-8000-000000000001",
    "6f1d1b0e-0000-4000-8000-000000000002",
    "userIdentity.arn",
    "10m",
    "gt: 3"
);

/// The id of [`DENIED_BURST_RULES`]' correlation.
pub const DENIED_BURST_RULE_ID: &str = "6f1d1b0e-0000-4000-8000-0000000000b2";

/// A burst: 3 or more AccessDenied of one principal within 60 s.
pub const DENIED_BURST_RULES: &str = denied_correlation!(
    "6f1d1b0e-0000-4000-8000-0000000000b1",
    "6f1d1b0e-0000-4000-8000-0000000000b2",
    "userIdentity.arn",
    "60s",
    "gte: 3"
);

/// The findings of [`REPEATED_DENIED_RULES`] over [`denied_event`]s 0..3 (one
/// a minute), a restart, then 3..5: one, as the 4th denial completes the
/// window that the first run opened.
pub fn assert_window_completed_across_restart(f: &[serde_json::Value]) {
    assert_eq!(f.len(), 1, "the 4th denial completes the window started before the restart: {f:?}");
    assert_eq!(f[0]["GeneratorId"], "6f1d1b0e-0000-4000-8000-000000000002");
    assert_eq!(f[0]["ProductFields"]["trailwatch/Count"], "4");
    assert_eq!(f[0]["FirstObservedAt"], "2026-11-01T10:00:00Z");
}

/// The `eventID` of test event `i`.
pub fn event_id(i: u32) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The sorted event ids of `range` (as [`finding_event_ids`] lists them).
pub fn event_ids(range: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = range.iter().map(|i| event_id(*i)).collect();
    v.sort();
    v
}

/// A CloudTrail record of a `TwMarker` call by user `u<i>` (matched by [`MARKER_RULE`]).
pub fn marker_event(i: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:00:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"TwMarker","awsRegion":"us-east-1","eventID":"{id}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u{i}","accountId":"111122223333"}}}}"#,
        s = i % 60,
        id = event_id(i),
    )
}

/// An AccessDenied `ListUsers` of mallory at 10:`minute` (counted by [`REPEATED_DENIED_RULES`]).
pub fn denied_event(i: u32, minute: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:{minute:02}:00Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","awsRegion":"us-east-1","errorCode":"AccessDenied","eventID":"{id}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/mallory","accountId":"111122223333"}}}}"#,
        id = event_id(i),
    )
}

/// [`marker_event`] `i` as EventBridge delivers it.
pub fn eventbridge(i: u32) -> String {
    eventbridge_of(&marker_event(i), &format!("eb-{i}"))
}

/// A CloudTrail `record` as EventBridge delivers it, with envelope `id`
/// (account, region and time taken from the record, as EventBridge does).
pub fn eventbridge_of(record: &str, id: &str) -> String {
    let r: serde_json::Value = serde_json::from_str(record).unwrap();
    let service = r["eventSource"].as_str().unwrap_or_default().split('.').next().unwrap_or_default();
    serde_json::json!({
        "version": "0", "id": id, "detail-type": "AWS API Call via CloudTrail", "source": format!("aws.{service}"),
        "account": r["recipientAccountId"], "time": r["eventTime"], "region": r["awsRegion"],
        "resources": [], "detail": r,
    })
    .to_string()
}

/// `message` as an SNS notification (an SQS body from a topic without raw delivery).
pub fn sns(message: &str) -> String {
    format!(
        r#"{{"Type":"Notification","MessageId":"m-1","TopicArn":"arn:aws:sns:us-east-1:111122223333:t","Message":{}}}"#,
        serde_json::json!(message)
    )
}

/// `bytes`, gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A gzip CloudTrail log file (`{"Records":[...]}`) of `records`.
pub fn log_file_of(records: &[String]) -> Vec<u8> {
    gzip(format!(r#"{{"Records":[{}]}}"#, records.join(",")).as_bytes())
}

/// A CloudWatch Logs subscription payload (gzip JSON, the shape CloudTrail
/// reaches Kinesis in) carrying `(id, message)` log events.
pub fn cwl_payload(events: &[(u64, String)]) -> Vec<u8> {
    let events: Vec<String> = events
        .iter()
        .map(|(i, m)| format!(r#"{{"id":"{i}","timestamp":1793527200000,"message":{}}}"#, serde_json::json!(m)))
        .collect();
    let doc = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"111122223333","logGroup":"aws-cloudtrail","logStream":"111122223333_CloudTrail_us-east-1","subscriptionFilters":["tw"],"logEvents":[{}]}}"#,
        events.join(",")
    );
    gzip(doc.as_bytes())
}

/// An S3 event notification of object `key` created in `bucket`.
pub fn s3_notification(bucket: &str, key: &str) -> String {
    format!(
        r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","size":100}}}}}}]}}"#
    )
}

/// Writes `lines`, one a line, to `path`.
pub fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let text: Vec<String> = lines.into_iter().collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

/// `text` (one or more rules) compiled with the default options.
pub fn rules(text: &str) -> Arc<RuleSet> {
    let (set, _) = trailwatch_processor::ruleset::compile(
        &[RuleFile { name: "test.yml".into(), text: text.into() }],
        &trailwatch_rules::CompileOptions::default(),
    )
    .unwrap();
    Arc::new(set)
}

/// Options of a replay of `inputs` to ASFF findings: default decoding,
/// finding context and detector, no dead letters or progress, and a fixed
/// processing time (day 20 000 after the epoch, 2024-10-04).
pub fn replay_options(inputs: Vec<PathBuf>) -> ReplayOptions {
    ReplayOptions {
        inputs,
        dead_letter: None,
        progress: false,
        decode: DecodeOptions::default(),
        findings: FindingContext::default(),
        now: time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
        detector: DetectorConfig::default(),
        format: ReplayFormat::Asff,
        archive: Default::default(),
    }
}

/// A configuration from TOML `text`, validated as `trailwatch run` does.
pub fn config(text: &str) -> Config {
    Config::from_toml_str(text).unwrap()
}

/// The TOML of a run from the JSON lines file `input` to the ASFF JSON lines
/// file `out`, with its state in `state` (committed every 100 ms), metrics
/// off; sections of a scenario's own go after it.
pub fn file_run_toml(state: &Path, input: &Path, out: &Path, exit_when_done: bool) -> String {
    service_toml(state, "100ms") + &file_source_toml(input, exit_when_done) + &jsonl_out_toml(out)
}

/// `[findings]` reported to moto's account as the central one.
pub fn central_findings_toml() -> String {
    format!(
        "[findings]\nreport_to = \"central\"\ncentral_account = \"{}\"\nregion = \"us-east-1\"\n",
        crate::MOTO_ACCOUNT
    )
}

/// `[service]` with its state in `state`, committed every `commit_interval`
/// (a scenario's own service keys may follow).
pub fn service_toml(state: &Path, commit_interval: &str) -> String {
    format!("[service]\nstate_dir = \"{}\"\ncommit_interval = \"{commit_interval}\"\n", state.display())
}

/// The file source `files` reading `input` (its own keys may follow).
pub fn file_source_toml(input: &Path, exit_when_done: bool) -> String {
    format!("[sources.files]\ntype = \"file\"\npaths = [\"{}\"]\nexit_when_done = {exit_when_done}\n", input.display())
}

/// The sink `out` writing ASFF JSON lines to `out`, and no metrics endpoint:
/// how most test configurations end.
pub fn jsonl_out_toml(out: &Path) -> String {
    format!("[sinks.out]\ntype = \"asff-jsonl\"\npath = \"{}\"\n[metrics]\nenabled = false\n", out.display())
}

/// The JSON lines of `path` (none when it does not exist yet).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The event ids of the ASFF findings in the JSON lines file `path`, in file order.
pub fn finding_event_ids(path: &Path) -> Vec<String> {
    read_jsonl(path).iter().map(|v| v["ProductFields"]["trailwatch/EventIds"].as_str().unwrap().to_string()).collect()
}

/// Resolves once `path` holds at least `n` findings.
pub fn until_findings(path: &Path, n: usize) -> impl Future<Output = ()> + Send + 'static {
    let path = path.to_path_buf();
    async move {
        while finding_event_ids(&path).len() < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the service with `rules` until `until` resolves (90 s at the most)
/// and one more commit followed (so what produced the findings is
/// checkpointed), then shuts it down as SIGTERM would.
pub async fn run_until(
    cfg: Config,
    rules: Arc<RuleSet>,
    until: impl Future<Output = ()> + Send + 'static,
) -> RunSummary {
    crate::aws_env();
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let opts = RunOptions { commits: Some(tx), ..Default::default() };
    let shutdown = async move {
        let _ = tokio::time::timeout(Duration::from_secs(90), until).await;
        let seen = *rx.borrow();
        let _ = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|n| *n > seen)).await;
    };
    tokio::time::timeout(Duration::from_secs(120), service::run(cfg, rules, opts, shutdown))
        .await
        .expect("the run ends")
        .expect("the run succeeds")
}

/// Runs the service with `rules` until its first commit after start (a file
/// source has been read by then), then shuts it down.
pub async fn run_once(cfg: Config, rules: Arc<RuleSet>) -> RunSummary {
    run_until(cfg, rules, std::future::ready(())).await
}

/// Creates a Kinesis stream of `shards` shards and waits until it is active.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, stream: &str, shards: i32) {
    client.create_stream().stream_name(stream).shard_count(shards).send().await.unwrap();
    wait_stream_active(client, stream).await;
}

/// Waits until `stream` is active (after its creation or a reshard).
pub async fn wait_stream_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    for _ in 0..100 {
        let d = client.describe_stream_summary().stream_name(stream).send().await.unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {stream} not active");
}

/// Creates the shard lease table `table` (hash key `leaseKey`, as
/// `coordination = "leases"` expects it).
pub async fn create_lease_table(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    create_table(ddb, table, "leaseKey").await;
}

/// Creates the on-demand DynamoDB table `table` keyed by the string `hash_key`.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, table: &str, hash_key: &str) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let key = AttributeDefinition::builder().attribute_name(hash_key).attribute_type(ScalarAttributeType::S);
    ddb.create_table()
        .table_name(table)
        .attribute_definitions(key.build().unwrap())
        .key_schema(KeySchemaElement::builder().attribute_name(hash_key).key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

/// Puts `items` into `stream` in one call, each under its own partition key.
pub async fn put_records(client: &aws_sdk_kinesis::Client, stream: &str, items: Vec<Vec<u8>>) {
    let entries: Vec<PutRecordsRequestEntry> = items
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            PutRecordsRequestEntry::builder().data(Blob::new(data)).partition_key(format!("k{i}")).build().unwrap()
        })
        .collect();
    let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
}

/// Creates SQS queue `name` with `attrs`; its URL.
pub async fn create_queue(client: &aws_sdk_sqs::Client, name: &str, attrs: &[(QueueAttributeName, String)]) -> String {
    let mut req = client.create_queue().queue_name(name);
    for (k, v) in attrs {
        req = req.attributes(k.clone(), v);
    }
    req.send().await.unwrap().queue_url.unwrap()
}

/// Messages in the queue at `url`, visible or in flight.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> u64 {
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
