//! The re-keying stage end to end (`[rekey]`, issue 19 item 3): two
//! `trailwatch run` processes share an 8-shard principal-keyed kinesalite
//! stream and a 4-shard re-keyed stream through two lease tables in moto's
//! DynamoDB. Correlations grouped by source IP and by account (not by the
//! partition key) run on the re-keyed stream; their finding Ids and counts
//! equal a single-instance `trailwatch replay` of the same events, also when
//! one instance is SIGKILLed in the middle (its shards of both streams are
//! taken over; re-published matches are not counted twice). Bounded: every
//! wait has a deadline, the processes are killed on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trailwatch_tests::chaos::{jsonl_findings, Trailwatch};
use trailwatch_tests::fixtures::{MARKER_RULE, MARKER_RULE_ID};
use trailwatch_tests::instances::{self, correlation_counts, start, stop_all, union, Rig};

const STREAM: &str = "org-events";
const REKEY_STREAM: &str = "trailwatch-rekey";
const TABLE: &str = "trailwatch-leases";
const REKEY_TABLE: &str = "trailwatch-rekey-leases";

/// With the fixtures' marker detection on every event (to see every record
/// read): two correlations over the same `denied` matches that do not
/// follow the principal, one per source IP ([`BY_IP`]), one per account.
const BY_IP: &str = trailwatch_tests::denied_correlation!(
    "6f1d1b0e-0000-4000-8000-0000000000d2",
    "6f1d1b0e-0000-4000-8000-0000000000d3",
    "sourceIPAddress",
    "2m",
    "gte: 5"
);
const BY_ACCOUNT: &str = r#"
title: Many AccessDenied in one account
id: 6f1d1b0e-0000-4000-8000-0000000000d4
level: high
correlation:
    type: event_count
    rules: [denied]
    group-by: [recipientAccountId]
    timespan: 1m
    condition: {gte: 30}
"#;

/// A correlation that follows the principal (the partition key of a
/// principal stream), for the queue scenario: there no key is followed.
const BY_PRINCIPAL: &str = r#"
title: Many AccessDenied for one principal
id: 6f1d1b0e-0000-4000-8000-0000000000d5
level: high
correlation:
    type: event_count
    rules: [denied]
    group-by: [userIdentity.arn]
    timespan: 2m
    condition: {gte: 3}
"#;

/// The re-keying stage over the second stream.
const REKEY: &str = r#"[rekey]
source = "rekeyed"
# Longer than a takeover (failover_time 3s, a lease round, the re-read):
# the matches of a taken-over shard are counted in event-time order too.
reorder = "15s"
"#;

const ACCOUNTS: [&str; 3] = ["111122223333", "444455556666", "777788889999"];

/// 10 events a second, 97 principals over 3 accounts and 13 source IPs.
fn event(i: u32) -> String {
    let account = ACCOUNTS[(i % 3) as usize];
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T{h:02}:{m:02}:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"TwMarker","awsRegion":"us-east-1","errorCode":"AccessDenied","sourceIPAddress":"198.51.100.{ip}","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"{account}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{account}:user/u{u}","accountId":"{account}"}}}}"#,
        h = 10 + i / 36000,
        m = i / 600 % 60,
        s = i / 10 % 60,
        ip = i % 13,
        u = i % 97,
    )
}

fn principal(i: u32) -> String {
    let account = ACCOUNTS[(i % 3) as usize];
    format!("arn:aws:iam::{account}:user/u{}", i % 97)
}

/// Events `range` into the principal-keyed stream, keyed by principal (as deployed).
async fn put(client: &aws_sdk_kinesis::Client, range: std::ops::Range<u32>) {
    instances::put(client, STREAM, range, event, principal).await;
}

/// Lease owners → leases held, per table (free leases left out), sorted.
async fn shares(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let items = ddb.scan().table_name(table).consistent_read(true).send().await.unwrap();
    for item in items.items() {
        if let Some(o) = item.get("leaseOwner").and_then(|v| v.as_s().ok()) {
            *out.entry(o.clone()).or_insert(0) += 1;
        }
    }
    let mut v: Vec<usize> = out.into_values().collect();
    v.sort();
    v
}

/// Waits (60 s at most) until each lease table is shared as given.
async fn wait_even(ddb: &aws_sdk_dynamodb::Client, want: &[(&str, &[usize])], procs: &mut [&mut Trailwatch]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut even = true;
        for (table, share) in want {
            even &= shares(ddb, table).await == *share;
        }
        if even {
            return;
        }
        assert!(Instant::now() < deadline, "no even share of {want:?} after 60 s");
        for p in procs.iter_mut() {
            p.assert_running();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Checkpoints of a lease table that moved past the start (records read).
async fn checkpointed(ddb: &aws_sdk_dynamodb::Client, table: &str) -> usize {
    let items = ddb.scan().table_name(table).consistent_read(true).send().await.unwrap();
    items
        .items()
        .iter()
        .filter(|i| {
            i.get("checkpoint").and_then(|v| v.as_s().ok()).is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// Records on the re-keyed stream: (all, distinct match ids).
async fn rekeyed_records(kin: &aws_sdk_kinesis::Client) -> (usize, usize) {
    let mut total = 0;
    let mut ids = BTreeSet::new();
    let shards = kin.list_shards().stream_name(REKEY_STREAM).send().await.unwrap();
    for sh in shards.shards() {
        let mut it = kin
            .get_shard_iterator()
            .stream_name(REKEY_STREAM)
            .shard_id(sh.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        while let Some(i) = it {
            let out = kin.get_records().shard_iterator(i).send().await.unwrap();
            for r in out.records() {
                let v: serde_json::Value = serde_json::from_slice(r.data().as_ref()).unwrap();
                total += 1;
                ids.insert(v["trailwatchRekey"]["match"].as_str().unwrap().to_string());
            }
            if out.records().is_empty() || out.millis_behind_latest() == Some(0) && out.records().len() < 100 {
                break;
            }
            it = out.next_shard_iterator().map(str::to_string);
        }
    }
    (total, ids.len())
}

fn marker(f: &BTreeSet<String>) -> usize {
    f.iter().filter(|id| id.contains(MARKER_RULE_ID)).count()
}

/// The single-instance replay of events 0..n: (distinct finding Ids, correlation counts).
fn replay(dir: &Path, cfg: &Path, n: u32) -> (BTreeSet<String>, BTreeMap<String, u64>) {
    let out = instances::replay_expected(dir, cfg, (0..n).map(event));
    (jsonl_findings(&out).distinct(), correlation_counts(std::slice::from_ref(&out)))
}

async fn wait_marker(dirs: &[PathBuf], n: usize, procs: &mut [&mut Trailwatch]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while marker(&union(dirs)) < n {
        assert!(Instant::now() < deadline, "{} of {n} events read", marker(&union(dirs)));
        for p in procs.iter_mut() {
            p.assert_running();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the correlation counts reach `want` (or 90 s pass); they
/// are compared by the caller after the processes stopped.
async fn wait_counts(files: &[PathBuf], want: &BTreeMap<String, u64>, procs: &mut [&mut Trailwatch]) -> Duration {
    let start = Instant::now();
    while correlation_counts(files) != *want && start.elapsed() < Duration::from_secs(90) {
        for p in procs.iter_mut() {
            p.assert_running();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    start.elapsed()
}

async fn scenario(kill: bool) {
    let _one = crate::MACHINE.write().await;
    let rig = Rig::new(
        &format!("{MARKER_RULE}---{BY_IP}---{BY_ACCOUNT}"),
        &[TABLE, REKEY_TABLE],
        &[(STREAM, 8), (REKEY_STREAM, 4)],
    )
    .await;
    let sections = format!(
        "{}\n{}\n{REKEY}",
        rig.lease_source("org", STREAM, TABLE),
        rig.lease_source("rekeyed", REKEY_STREAM, REKEY_TABLE)
    );
    let cfgs: Vec<PathBuf> = (0..2).map(|n| rig.config(n, &sections)).collect();
    let Rig { dir, ddb, kin, .. } = &rig;
    let dirs: Vec<PathBuf> = cfgs.iter().map(|c| c.parent().unwrap().to_path_buf()).collect();
    let files: Vec<PathBuf> = dirs.iter().map(|d| d.join("findings.ndjson")).collect();
    let (want_ids, want) = replay(dir.path(), &cfgs[0], 1200);
    let by_rule = |m: &BTreeMap<String, u64>, r: &str| m.keys().filter(|id| id.contains(r)).count();
    assert!(
        by_rule(&want, "0000000000d3") > 0 && by_rule(&want, "0000000000d4") > 0,
        "both correlations fire: {want:?}"
    );

    let (mut a, mut b) = (start(&cfgs[0], 0), start(&cfgs[1], 1));
    wait_even(ddb, &[(TABLE, &[4, 4]), (REKEY_TABLE, &[2, 2])], &mut [&mut a, &mut b]).await;

    put(kin, 0..600).await;
    wait_marker(&dirs, 600, &mut [&mut a, &mut b]).await;
    // Let commits follow, so the one killed has checkpoints on both streams.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(checkpointed(ddb, REKEY_TABLE).await > 0, "no re-keyed shard was read");
    let mut survivors: Vec<&mut Trailwatch> = if kill {
        b.kill9();
        vec![&mut a]
    } else {
        vec![&mut a, &mut b]
    };
    put(kin, 600..1200).await;
    wait_marker(&dirs, 1200, &mut survivors).await;
    let t = wait_counts(&files, &want, &mut survivors).await;
    println!("correlation counts settled {t:?} after every event was read");
    stop_all(&mut survivors);
    let got = correlation_counts(&files);
    println!(
        "correlation findings {} (replay {}), counts {} (replay {})",
        got.len(),
        want.len(),
        got.values().sum::<u64>(),
        want.values().sum::<u64>()
    );
    for (n, d) in dirs.iter().enumerate() {
        let log = std::fs::read_to_string(d.join(format!("run-{n}.log"))).unwrap_or_default();
        let adopted = log.lines().filter(|l| l.contains("re-keyed shard window state adopted")).count();
        let dead = log.lines().filter(|l| l.contains("re-keyed record not evaluated")).count();
        println!("instance {n}: {adopted} re-keyed shards adopted, {dead} re-keyed records dead-lettered");
        assert_eq!(dead, 0, "instance {n} dead-lettered re-keyed records");
    }
    // Every (event, correlation) match reached the re-keyed stream; a
    // takeover's re-read may have put some twice (counted once above).
    let (total, distinct) = rekeyed_records(kin).await;
    println!("re-keyed stream: {total} records, {distinct} distinct matches ({} put again)", total - distinct);
    assert_eq!(distinct, 2 * 1200, "one match per event and correlation");
    assert_eq!(got, want, "re-keyed correlation findings or counts differ from a single replay");
    assert_eq!(union(&dirs), want_ids, "finding Ids differ from a single replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_correlations_grouped_by_ip_and_account_as_one_replay() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_in_the_middle_loses_and_double_counts_nothing() {
    scenario(true).await;
}

/// An SQS queue instead of a principal stream (a queue-fed deployment scaled
/// out): each of two instances receives any message, so no correlation
/// follows a key, and every one of them, the principal's too, runs on the
/// re-keyed stream. Counts and Ids equal a single replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_queue_run_every_correlation_as_one_replay() {
    use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
    let _one = crate::MACHINE.write().await;
    let rig = Rig::new(
        &format!("{MARKER_RULE}---{BY_IP}---{BY_ACCOUNT}---{BY_PRINCIPAL}"),
        &[REKEY_TABLE],
        &[(REKEY_STREAM, 4)],
    )
    .await;
    let sqs = aws_sdk_sqs::Client::new(&rig.moto.sdk_config().await);
    let url = trailwatch_tests::fixtures::create_queue(
        &sqs,
        "trail-events",
        &[(QueueAttributeName::VisibilityTimeout, "30".to_string())],
    )
    .await;
    let sections = format!(
        "[sources.queue]\ntype = \"sqs\"\nqueue_url = \"{url}\"\nreceivers = 2\nwait_time = \"1s\"\n\n{}\n{REKEY}",
        rig.lease_source("rekeyed", REKEY_STREAM, REKEY_TABLE)
    );
    let cfgs: Vec<PathBuf> = (0..2).map(|n| rig.config(n, &sections)).collect();
    let Rig { dir, ddb, kin, .. } = &rig;
    let dirs: Vec<PathBuf> = cfgs.iter().map(|c| c.parent().unwrap().to_path_buf()).collect();
    let files: Vec<PathBuf> = dirs.iter().map(|d| d.join("findings.ndjson")).collect();
    let n = 1200;
    let (want_ids, want) = replay(dir.path(), &cfgs[0], n);
    let by_rule = |m: &BTreeMap<String, u64>, r: &str| m.keys().filter(|id| id.contains(r)).count();
    for r in ["0000000000d3", "0000000000d4", "0000000000d5"] {
        assert!(by_rule(&want, r) > 0, "correlation {r} fires in the replay: {want:?}");
    }

    let (mut a, mut b) = (start(&cfgs[0], 0), start(&cfgs[1], 1));
    wait_even(ddb, &[(REKEY_TABLE, &[2, 2])], &mut [&mut a, &mut b]).await;
    let ids: Vec<u32> = (0..n).collect();
    for chunk in ids.chunks(10) {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .map(|i| {
                SendMessageBatchRequestEntry::builder().id(format!("m{i}")).message_body(event(*i)).build().unwrap()
            })
            .collect();
        let out = sqs.send_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
    wait_marker(&dirs, n as usize, &mut [&mut a, &mut b]).await;
    let t = wait_counts(&files, &want, &mut [&mut a, &mut b]).await;
    println!("correlation counts settled {t:?} after every event was read");
    stop_all(&mut [&mut a, &mut b]);
    // Both instances received messages (else this shows nothing about sharing).
    for (i, d) in dirs.iter().enumerate() {
        let marked = marker(&jsonl_findings(&d.join("findings.ndjson")).distinct());
        assert!(marked > 0, "instance {i} received no message");
        println!("instance {i}: {marked} events");
    }
    let got = correlation_counts(&files);
    let (total, distinct) = rekeyed_records(kin).await;
    println!("re-keyed stream: {total} records, {distinct} distinct matches");
    assert_eq!(distinct, 3 * n as usize, "one match per event and correlation, the principal's too");
    assert_eq!(got, want, "correlation findings or counts differ from a single replay");
    assert_eq!(union(&dirs), want_ids, "finding Ids differ from a single replay");
}
