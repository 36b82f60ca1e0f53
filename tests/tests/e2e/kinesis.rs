//! The Kinesis source against a real Kinesis emulator (kinesalite): records
//! in every envelope come out as findings, a malformed record goes to the
//! dead letter, a restart resumes from the checkpoint without repeating or
//! losing findings, and a resharded stream is read parents first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use trailwatch_processor::config::Config;
use trailwatch_processor::service::RunSummary;
use trailwatch_tests::fixtures::{
    create_stream, cwl_payload, event_ids, eventbridge, finding_event_ids, jsonl_out_toml, marker_event as record,
    put_records as put, read_jsonl, rules, run_until, service_toml, until_findings, DENIED_BURST_RULES,
    DENIED_BURST_RULE_ID, MARKER_RULE, MARKER_RULE_ID,
};
use trailwatch_tests::Server;

/// A CloudWatch Logs subscription payload carrying `ids` as log events.
fn cwl(ids: &[u32]) -> Vec<u8> {
    let events: Vec<(u64, String)> = ids.iter().map(|i| (u64::from(*i), record(*i))).collect();
    cwl_payload(&events)
}

fn config(server: &Server, dir: &Path, stream: &str) -> Config {
    trailwatch_tests::fixtures::config(&format!(
        r#"
        {aws}
        {service}
        [sources.stream]
        type = "kinesis"
        stream_name = "{stream}"
        poll_interval = "200ms"
        max_idle_poll_interval = "400ms"
        shard_discovery_interval = "1s"
        {out}
        "#,
        aws = server.aws_section(),
        service = service_toml(&dir.join("state"), "200ms"),
        out = jsonl_out_toml(&findings_path(dir)),
    ))
}

fn findings_path(dir: &Path) -> PathBuf {
    dir.join("findings.ndjson")
}

fn finding_events(dir: &Path) -> Vec<String> {
    finding_event_ids(&findings_path(dir))
}

/// Runs the service until `want` findings are in the file and a commit
/// followed them, then shuts it down (as SIGTERM would).
async fn run_to(cfg: Config, dir: &Path, want: usize) -> RunSummary {
    run_until(cfg, rules(MARKER_RULE), until_findings(&findings_path(dir), want)).await
}

#[tokio::test]
async fn envelopes_dead_letters_and_restart_without_repeats() {
    let server = Server::kinesalite().unwrap();
    let client = aws_sdk_kinesis::Client::new(&server.sdk_config().await);
    create_stream(&client, "events", 2).await;
    put(
        &client,
        "events",
        vec![
            record(1).into_bytes(),
            eventbridge(2).into_bytes(),
            cwl(&[3, 4]),
            b"{not json".to_vec(),
            record(5).into_bytes(),
        ],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let s1 = run_to(config(&server, dir.path(), "events"), dir.path(), 5).await;
    let mut ids = finding_events(dir.path());
    ids.sort();
    let want = event_ids(&[1, 2, 3, 4, 5]);
    assert_eq!(ids, want, "every envelope gives its finding");
    assert_eq!(s1.eval.events, 5);
    let dead = std::fs::read_to_string(dir.path().join("state/dead-letter.ndjson")).unwrap();
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("kinesis:events/shardId-"), "the dead letter names the record: {dead}");

    // More records while it is down; the restart resumes after the checkpoint.
    put(&client, "events", vec![record(6).into_bytes(), record(7).into_bytes()]).await;
    let s2 = run_to(config(&server, dir.path(), "events"), dir.path(), 7).await;
    assert_eq!(s2.eval.events, 2, "only the new records are read again");
    let mut ids = finding_events(dir.path());
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((n, ids.len()), (7, 7), "no finding lost or repeated: {ids:?}");
}

#[tokio::test]
async fn a_split_shard_is_read_parent_first() {
    let server = Server::kinesalite().unwrap();
    let client = aws_sdk_kinesis::Client::new(&server.sdk_config().await);
    create_stream(&client, "resharded", 1).await;
    put(&client, "resharded", (10..14).map(|i| record(i).into_bytes()).collect()).await;
    // Split the only shard in two (at the middle of the hash key range).
    let shards = client.list_shards().stream_name("resharded").send().await.unwrap();
    let parent = shards.shards()[0].shard_id().to_string();
    client
        .split_shard()
        .stream_name("resharded")
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let d = client.describe_stream_summary().stream_name("resharded").send().await.unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(&client, "resharded", (20..26).map(|i| record(i).into_bytes()).collect()).await;

    let dir = tempfile::tempdir().unwrap();
    let s = run_to(config(&server, dir.path(), "resharded"), dir.path(), 10).await;
    assert_eq!(s.eval.events, 10);
    let ids = finding_events(dir.path());
    assert_eq!(ids.len(), 10);
    // The parent's records (10..14) come before any child's (20..26).
    let pos = |i: u32| ids.iter().position(|x| x.ends_with(&format!("{i:012}"))).unwrap();
    let last_parent = (10..14).map(pos).max().unwrap();
    let first_child = (20..26).map(pos).min().unwrap();
    assert!(last_parent < first_child, "parent first: {ids:?}");
    // The closed parent is committed as read to its end.
    let state = std::fs::read_to_string(dir.path().join("state/state.json")).unwrap();
    assert!(state.contains("SHARD_END"), "{state}");
}

/// A denied call of user `k` at `secs` after 10:00:00.
fn denied(k: u32, secs: u32, n: u32) -> Vec<u8> {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T{h:02}:{m:02}:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","errorCode":"AccessDenied","awsRegion":"us-east-1","eventID":"00000000-0000-4000-9000-{n:012}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u{k}","accountId":"111122223333"}}}}"#,
        h = 10 + secs / 3600,
        m = (secs % 3600) / 60,
        s = secs % 60
    )
    .into_bytes()
}

/// 20 bursts of 3 denials, one every 3 minutes over an hour of event time:
/// two events of each go to shard A, the middle one to shard B. A's records
/// end with a marker call (its finding says A was read).
fn bursts() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for k in 0..20u32 {
        a.push(denied(k, k * 180, k * 3));
        b.push(denied(k, k * 180 + 10, k * 3 + 1));
        a.push(denied(k, k * 180 + 20, k * 3 + 2));
    }
    a.push(record(999).replace("T10:00:", "T11:00:").into_bytes());
    (a, b)
}

async fn put_to(client: &aws_sdk_kinesis::Client, stream: &str, hash_key: &str, items: Vec<Vec<u8>>) {
    let entries: Vec<PutRecordsRequestEntry> = items
        .into_iter()
        .map(|data| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(data))
                .partition_key("k")
                .explicit_hash_key(hash_key)
                .build()
                .unwrap()
        })
        .collect();
    let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
}

fn findings_of(dir: &Path, rule: &str) -> Vec<String> {
    let mut ids: Vec<String> = read_jsonl(&findings_path(dir))
        .into_iter()
        .filter(|v| v["GeneratorId"] == rule)
        .map(|v| v["Id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Runs the service on `stream`; once the marker's finding shows shard A was
/// read, `later` puts shard B's records; stops when 20 bursts fired (or
/// after a deadline) and a commit followed.
async fn run_bursts(
    server: &Server,
    dir: &Path,
    stream: &str,
    later: impl std::future::Future<Output = ()> + Send + 'static,
) -> RunSummary {
    let d = dir.to_path_buf();
    let until = async move {
        while findings_of(&d, MARKER_RULE_ID).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        later.await;
        while findings_of(&d, DENIED_BURST_RULE_ID).len() < 20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    run_until(config(server, dir, stream), rules(&format!("{DENIED_BURST_RULES}---{MARKER_RULE}")), until).await
}

/// One of two shards read long after the other (its records put only once
/// the other's are consumed, event times interleaved): the slow shard holds
/// the watermark back, so every correlation fires as on a single shard.
#[tokio::test]
async fn a_shard_read_much_later_fires_the_same_correlations_as_one_shard() {
    let server = Server::kinesalite().unwrap();
    let client = aws_sdk_kinesis::Client::new(&server.sdk_config().await);
    let (a, b) = bursts();

    // One shard, in event-time order.
    create_stream(&client, "one", 1).await;
    let mut all = Vec::new();
    for k in 0..20 {
        all.extend([a[2 * k].clone(), b[k].clone(), a[2 * k + 1].clone()]);
    }
    all.push(a[40].clone());
    put(&client, "one", all).await;
    let one = tempfile::tempdir().unwrap();
    run_bursts(&server, one.path(), "one", async {}).await;
    let want = findings_of(one.path(), DENIED_BURST_RULE_ID);
    assert_eq!(want.len(), 20, "one shard in time order: every burst fires");

    // Two shards: A first; B's records only after A's were all read.
    create_stream(&client, "two", 2).await;
    let shards = client.list_shards().stream_name("two").send().await.unwrap();
    let keys: Vec<String> =
        shards.shards().iter().map(|s| s.hash_key_range().unwrap().starting_hash_key().to_string()).collect();
    assert_eq!(keys.len(), 2);
    put_to(&client, "two", &keys[0], a).await;
    let two = tempfile::tempdir().unwrap();
    let (c2, key_b) = (client.clone(), keys[1].clone());
    let s = run_bursts(&server, two.path(), "two", async move { put_to(&c2, "two", &key_b, b).await }).await;
    let got = findings_of(two.path(), DENIED_BURST_RULE_ID);
    assert_eq!(got, want, "the same correlation findings (same Ids) as one shard");
    assert_eq!(s.eval.detector.late_dropped, 0);
}
