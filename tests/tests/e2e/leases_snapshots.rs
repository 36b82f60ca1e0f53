//! Shard window snapshots in S3 (issue 19): with a snapshot bucket, states
//! over `leases::INLINE_WITH_BUCKET` (lease writes are billed on the whole
//! item) go to the checkpoint store's snapshot bucket — without one, states
//! up to `leases::MAX_INLINE` stay in the item and larger ones are a clear
//! commit error. The lease item keeps the object key and its SHA-256, and the write is
//! fenced by the lease counter — a stale owner can neither replace the
//! reference nor the object a newer checkpoint names. Against moto's
//! DynamoDB and S3, with a real detector state of 40,000 principals'
//! windows (over 350 KB compressed). Bounded: a few rounds and one failover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trailwatch_processor::sources::kinesis::leases::{
    LeaseCoordinator, SnapshotBucket, INLINE_WITH_BUCKET, MAX_INLINE,
};
use trailwatch_processor::state::leased::{pack, unpack, LeasedStore};
use trailwatch_processor::state::{Committed, StateError, StateStore};
use trailwatch_rules::{CompileOptions, Detector, DetectorConfig, EventClass, RuleFile, RuleSet};
use trailwatch_tests::Server;

const FAILOVER: Duration = Duration::from_secs(3);
const BUCKET: &str = "tw-state";
const PREFIX: &str = "tw/";
const SHARD: &str = "shardId-000000000000";
const KEY: &str = "src/shardId-000000000000";

const RULES: &str = r#"
title: layer download
id: base-download
name: layer_download
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: bulk downloads
id: corr-bulk
correlation:
  type: event_count
  rules: [layer_download]
  group-by: [userIdentity.arn]
  timespan: 1h
  condition: {gte: 1000}
"#;

fn detector() -> Detector {
    let set = RuleSet::load(&[RuleFile { name: "r.yml".into(), text: RULES.into() }], &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .0;
    Detector::new(Arc::new(set), DetectorConfig::default())
}

/// The window state of `n` principals (one download each, ids pseudo-random
/// so the state does not compress away), as JSON.
fn window_state(n: u64, salt: u64) -> Vec<u8> {
    let mut det = detector();
    let mut scratch = det.rule_set().scratch();
    let p = det.partition(KEY);
    let mut out = Vec::new();
    let mut rng = trailwatch_tests::Rng::new(salt);
    for i in 0..n {
        let json = format!(
            r#"{{"eventName":"GetDownloadUrlForLayer","eventID":"{:016x}{:016x}","eventTime":"2026-12-06T06:{:02}:{:02}Z","userIdentity":{{"arn":"arn:aws:iam::{:012}:role/r{i}"}}}}"#,
            rng.next_u64(),
            rng.next_u64(),
            (i * 3599 / n) / 60,
            (i * 3599 / n) % 60,
            rng.range(0, 999_999_999_999),
        );
        det.process_in(p, EventClass::CloudTrail, &json, 1_796_540_000_000, &mut scratch, &mut out).unwrap();
    }
    assert_eq!(det.stats().keys, n, "{:?}", det.stats());
    det.snapshot()
}

async fn setup(server: &Server, table: &str) -> (aws_sdk_dynamodb::Client, aws_sdk_s3::Client) {
    let sdk = server.sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    trailwatch_tests::fixtures::create_lease_table(&ddb, table).await;
    let s3 = trailwatch_tests::chaos::s3_client(&sdk);
    let _ = s3.create_bucket().bucket(BUCKET).send().await;
    (ddb, s3)
}

fn coordinator(
    ddb: &aws_sdk_dynamodb::Client,
    s3: Option<&aws_sdk_s3::Client>,
    table: &str,
    who: &str,
) -> Arc<LeaseCoordinator> {
    let c = LeaseCoordinator::new(ddb.clone(), table, who, "src", FAILOVER);
    Arc::new(match s3 {
        Some(s3) => c.with_bucket(SnapshotBucket { s3: s3.clone(), bucket: BUCKET.into(), prefix: PREFIX.into() }),
        None => c,
    })
}

fn store(c: &Arc<LeaseCoordinator>) -> LeasedStore {
    LeasedStore { inner: None, leases: BTreeMap::from([("src".to_string(), Arc::clone(c))]) }
}

fn commit(gen: u64, seq: u64, json: &[u8]) -> Committed {
    Committed {
        commit: seq,
        positions: BTreeMap::from([(KEY.to_string(), format!("{gen}:{seq:056}"))]),
        shard_windows: BTreeMap::from([(KEY.to_string(), json.to_vec())]),
        ..Committed::default()
    }
}

async fn objects(s3: &aws_sdk_s3::Client) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(BUCKET).prefix(PREFIX).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

async fn object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let o = s3.get_object().bucket(BUCKET).key(key).send().await.unwrap();
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_window_states_go_to_s3_fenced_and_move_with_the_lease() {
    let server = Server::moto().unwrap();
    let (ddb, s3) = setup(&server, "leases-s3").await;
    let a = coordinator(&ddb, Some(&s3), "leases-s3", "a");
    let b = coordinator(&ddb, Some(&s3), "leases-s3", "b");
    let observer = coordinator(&ddb, Some(&s3), "leases-s3", "observer");
    a.ensure_leases(&[(SHARD.to_string(), vec![])], "TRIM_HORIZON").await.unwrap();
    let out = a.round().await.unwrap();
    assert_eq!(out.acquired.len(), 1);
    assert!(out.acquired[0].snapshots.is_empty(), "a new lease has no window state");

    // A real window state too large for the item.
    let big = window_state(40_000, 1);
    let packed = pack(&big).unwrap();
    println!("window state: {} bytes JSON, {} packed (inline limit {MAX_INLINE})", big.len(), packed.len());
    assert!(packed.len() > MAX_INLINE);
    store(&a).commit(&commit(1, 1, &big), &[KEY.to_string()]).await.unwrap();
    let lease = observer.list().await.unwrap().remove(0);
    let r = lease.snapshot_ref.clone().expect("the lease names its S3 snapshot");
    assert!(lease.window_snapshot.is_none());
    assert!(r.key.starts_with("tw/leases/src/shardId-000000000000/"), "{}", r.key);
    assert_eq!(objects(&s3).await, vec![r.key.clone()]);
    assert_eq!(object(&s3, &r.key).await, packed);

    // a stops renewing (SIGKILL): b takes the lease after the failover time
    // and gets the state from S3, digest checked.
    let killed = Instant::now();
    let got = loop {
        let out = b.round().await.unwrap();
        if let Some(acq) = out.acquired.into_iter().next() {
            break acq;
        }
        assert!(killed.elapsed() < FAILOVER * 4, "b did not take the expired lease");
        tokio::time::sleep(b.renew_interval()).await;
    };
    assert_eq!(got.snapshots.len(), 1);
    let restored = unpack(&got.snapshots[0]).unwrap();
    assert_eq!(restored, big, "the new owner restores exactly the committed state");
    let mut det = detector();
    det.restore(&restored).unwrap();
    assert_eq!(det.stats().keys, 40_000);

    // b commits a newer large state; a (stale, still believing it holds the
    // lease) commits after it: refused by the counter, its upload removed,
    // b's reference and object untouched.
    let big2 = window_state(40_000, 2);
    store(&b).commit(&commit(1, 2, &big2), &[KEY.to_string()]).await.unwrap();
    let r2 = observer.list().await.unwrap().remove(0).snapshot_ref.expect("b's snapshot in S3");
    assert_ne!(r2.key, r.key);
    assert_eq!(objects(&s3).await, vec![r2.key.clone()], "b's checkpoint replaced a's object");
    let stale = window_state(40_000, 3);
    store(&a).commit(&commit(1, 3, &stale), &[KEY.to_string()]).await.unwrap();
    let lease = observer.list().await.unwrap().remove(0);
    assert_eq!(lease.owner.as_deref(), Some("b"));
    assert_eq!(lease.snapshot_ref.as_ref(), Some(&r2));
    assert_eq!(lease.checkpoint.as_deref(), Some(format!("{:056}", 2).as_str()));
    assert_eq!(objects(&s3).await, vec![r2.key.clone()], "the stale owner's upload is gone");
    assert_eq!(unpack(&object(&s3, &r2.key).await).unwrap(), big2);

    // An object that does not match the digest is refused, not restored.
    let good = object(&s3, &r2.key).await;
    s3.put_object()
        .bucket(BUCKET)
        .key(&r2.key)
        .body(aws_sdk_s3::primitives::ByteStream::from(pack(b"{}").unwrap()))
        .send()
        .await
        .unwrap();
    let e = observer.snapshot_of(&lease).await.unwrap_err().to_string();
    assert!(e.contains("digest"), "{e}");
    s3.put_object()
        .bucket(BUCKET)
        .key(&r2.key)
        .body(aws_sdk_s3::primitives::ByteStream::from(good))
        .send()
        .await
        .unwrap();

    // A state that fits goes back into the item; the S3 object is removed.
    // With a bucket only tiny states stay in the item (every lease write is
    // billed on the whole item); a medium one goes to S3 too.
    let medium = window_state(100, 6);
    assert!(pack(&medium).unwrap().len() > INLINE_WITH_BUCKET);
    store(&b).commit(&commit(1, 4, &medium), &[KEY.to_string()]).await.unwrap();
    let r3 = observer.list().await.unwrap().remove(0).snapshot_ref.expect("a medium state in S3");
    assert_eq!(objects(&s3).await, vec![r3.key.clone()]);
    let small = window_state(1, 4);
    assert!(pack(&small).unwrap().len() <= INLINE_WITH_BUCKET, "{}", pack(&small).unwrap().len());
    store(&b).commit(&commit(1, 5, &small), &[KEY.to_string()]).await.unwrap();
    let lease = observer.list().await.unwrap().remove(0);
    assert!(lease.snapshot_ref.is_none());
    assert_eq!(unpack(lease.window_snapshot.as_deref().unwrap()).unwrap(), small);
    assert!(objects(&s3).await.is_empty(), "{:?}", objects(&s3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bucket_a_large_state_is_a_clear_commit_error() {
    let server = Server::moto().unwrap();
    let (ddb, _) = setup(&server, "leases-nob").await;
    let a = coordinator(&ddb, None, "leases-nob", "a");
    a.ensure_leases(&[(SHARD.to_string(), vec![])], "TRIM_HORIZON").await.unwrap();
    assert_eq!(a.round().await.unwrap().acquired.len(), 1);
    let e = store(&a).commit(&commit(1, 1, &window_state(40_000, 5)), &[KEY.to_string()]).await.unwrap_err();
    assert!(matches!(e, StateError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("checkpoints.snapshot_bucket"), "{e}");
    let lease = a.list().await.unwrap().remove(0);
    assert_eq!(lease.checkpoint.as_deref(), Some("TRIM_HORIZON"), "nothing was committed");
}
