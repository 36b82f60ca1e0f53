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

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use trailwatch_tests::chaos::{jsonl_findings, Trailwatch};
use trailwatch_tests::{Server, MOTO_ACCOUNT};

const STREAM: &str = "org-events";
const REKEY_STREAM: &str = "trailwatch-rekey";
const TABLE: &str = "trailwatch-leases";
const REKEY_TABLE: &str = "trailwatch-rekey-leases";

/// A marker detection on every event (to see every record read), and two
/// correlations over the same `denied` matches that do not follow the
/// principal: one per source IP, one per account.
const RULES: &str = r#"
title: Test marker call
id: 6f1d1b0e-0000-4000-8000-0000000000d1
level: high
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: TwMarker}
    condition: sel
---
title: denied (base)
id: 6f1d1b0e-0000-4000-8000-0000000000d2
name: denied
level: informational
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
---
title: Repeated AccessDenied from one source IP
id: 6f1d1b0e-0000-4000-8000-0000000000d3
level: high
correlation:
    type: event_count
    rules: [denied]
    group-by: [sourceIPAddress]
    timespan: 2m
    condition: {gte: 5}
---
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

/// Correlation finding Id → its highest count (updates grow it).
fn correlation_counts(files: &[PathBuf]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let id = v["Id"].as_str().unwrap_or_default().to_string();
            if let Some(n) = v["ProductFields"]["trailwatch/Count"].as_str() {
                let n: u64 = n.parse().unwrap();
                let e = out.entry(id).or_insert(0);
                *e = (*e).max(n);
            }
        }
    }
    out
}

fn config(dir: &Path, n: usize, moto: &Server, kinesalite: &Server, rules: &Path) -> PathBuf {
    let inst = dir.join(format!("i{n}"));
    std::fs::create_dir_all(&inst).unwrap();
    let text = format!(
        r#"[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[rules]
builtin = false
discover_org = false
paths = ["{rules}"]

[findings]
report_to = "central"
central_account = "{MOTO_ACCOUNT}"
region = "us-east-1"

[service]
state_dir = "{state}"
commit_interval = "300ms"
shutdown_timeout = "20s"

[sources.org]
type = "kinesis"
stream_name = "{STREAM}"
endpoint_url = "{kinesalite}"
poll_interval = "200ms"
max_idle_poll_interval = "400ms"
shard_discovery_interval = "2s"
coordination = "leases"
lease_table = "{TABLE}"
failover_time = "3s"

[sources.rekeyed]
type = "kinesis"
stream_name = "{REKEY_STREAM}"
endpoint_url = "{kinesalite}"
poll_interval = "200ms"
max_idle_poll_interval = "400ms"
shard_discovery_interval = "2s"
coordination = "leases"
lease_table = "{REKEY_TABLE}"
failover_time = "3s"

[rekey]
source = "rekeyed"
# Longer than a takeover (failover_time 3s, a lease round, the re-read):
# the matches of a taken-over shard are counted in event-time order too.
reorder = "15s"

[checkpoints]
store = "file"

[sinks.out]
type = "asff-jsonl"
path = "{out}"

[metrics]
enabled = false
"#,
        moto = moto.endpoint,
        kinesalite = kinesalite.endpoint,
        rules = rules.display(),
        state = inst.join("state").display(),
        out = inst.join("findings.ndjson").display(),
    );
    let path = inst.join("trailwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(cfg: &Path, n: usize) -> Trailwatch {
    trailwatch_tests::aws_env();
    let log = cfg.parent().unwrap().join(format!("run-{n}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = std::process::Command::new(trailwatch_tests::trailwatch_bin())
        .arg("run")
        .arg("--config")
        .arg(cfg)
        .env("TRAILWATCH_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("trailwatch run starts");
    Trailwatch::new(child, log)
}

async fn put(client: &aws_sdk_kinesis::Client, range: std::ops::Range<u32>) {
    let ids: Vec<u32> = range.collect();
    for chunk in ids.chunks(250) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(event(*i)))
                    // The deployment's key: the principal.
                    .partition_key(principal(*i))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client.put_records().stream_name(STREAM).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

async fn lease_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    ddb.create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("leaseKey").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
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

fn union(dirs: &[PathBuf]) -> BTreeSet<String> {
    dirs.iter().flat_map(|d| jsonl_findings(&d.join("findings.ndjson")).distinct()).collect()
}

fn marker(f: &BTreeSet<String>) -> usize {
    f.iter().filter(|id| id.contains("0000000000d1")).count()
}

/// The single-instance replay of events 0..n: (distinct finding Ids, correlation counts).
fn replay(dir: &Path, cfg: &Path, n: u32) -> (BTreeSet<String>, BTreeMap<String, u64>) {
    let events = dir.join("events.ndjson");
    std::fs::write(&events, (0..n).map(event).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let out = dir.join("expected.ndjson");
    let o = std::process::Command::new(trailwatch_tests::trailwatch_bin())
        .arg("replay")
        .arg("--config")
        .arg(cfg)
        .args(["--no-progress", "--now", "2026-11-02T00:00:00Z", "--output"])
        .arg(&out)
        .arg(&events)
        .env("TRAILWATCH_LOG", "warn")
        .output()
        .expect("trailwatch replay runs");
    assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
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
    let moto = Server::moto().unwrap();
    let kinesalite = Server::kinesalite().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    lease_table(&ddb, TABLE).await;
    lease_table(&ddb, REKEY_TABLE).await;
    let kin = aws_sdk_kinesis::Client::new(&kinesalite.sdk_config().await);
    kin.create_stream().stream_name(STREAM).shard_count(8).send().await.unwrap();
    kin.create_stream().stream_name(REKEY_STREAM).shard_count(4).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cfgs: Vec<PathBuf> = (0..2).map(|n| config(dir.path(), n, &moto, &kinesalite, &rules)).collect();
    let dirs: Vec<PathBuf> = cfgs.iter().map(|c| c.parent().unwrap().to_path_buf()).collect();
    let files: Vec<PathBuf> = dirs.iter().map(|d| d.join("findings.ndjson")).collect();
    let (want_ids, want) = replay(dir.path(), &cfgs[0], 1200);
    let by_rule = |m: &BTreeMap<String, u64>, r: &str| m.keys().filter(|id| id.contains(r)).count();
    assert!(
        by_rule(&want, "0000000000d3") > 0 && by_rule(&want, "0000000000d4") > 0,
        "both correlations fire: {want:?}"
    );

    let (mut a, mut b) = (start(&cfgs[0], 0), start(&cfgs[1], 1));
    let deadline = Instant::now() + Duration::from_secs(60);
    while shares(&ddb, TABLE).await != [4, 4] || shares(&ddb, REKEY_TABLE).await != [2, 2] {
        assert!(Instant::now() < deadline, "no even share of both streams after 60 s");
        for p in [&mut a, &mut b] {
            p.assert_running();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    put(&kin, 0..600).await;
    wait_marker(&dirs, 600, &mut [&mut a, &mut b]).await;
    // Let commits follow, so the one killed has checkpoints on both streams.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(checkpointed(&ddb, REKEY_TABLE).await > 0, "no re-keyed shard was read");
    let mut survivors: Vec<&mut Trailwatch> = if kill {
        b.kill9();
        vec![&mut a]
    } else {
        vec![&mut a, &mut b]
    };
    put(&kin, 600..1200).await;
    wait_marker(&dirs, 1200, &mut survivors).await;
    let t = wait_counts(&files, &want, &mut survivors).await;
    println!("correlation counts settled {t:?} after every event was read");
    for p in survivors.iter_mut() {
        let status = p.terminate(Duration::from_secs(25)).expect("exits within the grace time");
        assert!(status.success(), "exit status {status}");
    }
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
    let (total, distinct) = rekeyed_records(&kin).await;
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
