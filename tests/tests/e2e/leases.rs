//! The shard lease protocol (`sources::kinesis::leases`) against moto's
//! DynamoDB: several workers in one process share 8 leases evenly, take over
//! a dead worker's leases within the failover time, hand leases over at once
//! on release, balance by stealing when a worker joins, never let a lost
//! lease's checkpoint move, and lease children only after their parents.
//! Every scenario is bounded by a deadline and stops by itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trailwatch_processor::sources::kinesis::leases::{LeaseCoordinator, LeaseError};
use trailwatch_tests::Server;

const FAILOVER: Duration = Duration::from_secs(3);

async fn create_table(server: &Server, table: &str) -> aws_sdk_dynamodb::Client {
    let ddb = aws_sdk_dynamodb::Client::new(&server.sdk_config().await);
    trailwatch_tests::fixtures::create_lease_table(&ddb, table).await;
    ddb
}

fn shards(n: usize) -> Vec<(String, Vec<String>)> {
    (0..n).map(|i| (format!("shardId-{i:012}"), Vec::new())).collect()
}

/// A worker: a coordinator and the task running its rounds (abort = SIGKILL).
struct Worker {
    coord: Arc<LeaseCoordinator>,
    task: tokio::task::JoinHandle<()>,
}

fn start(ddb: &aws_sdk_dynamodb::Client, table: &str, name: &str) -> Worker {
    let coord = Arc::new(LeaseCoordinator::new(ddb.clone(), table, name, &format!("{table}-{name}"), FAILOVER));
    let c = Arc::clone(&coord);
    let task = tokio::spawn(async move {
        loop {
            if let Err(e) = c.round().await {
                eprintln!("worker {}: round failed: {e}", c.worker());
            }
            tokio::time::sleep(c.renew_interval()).await;
        }
    });
    Worker { coord, task }
}

/// Owner → number of leases, from the table.
async fn owners(observer: &LeaseCoordinator) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in observer.list().await.unwrap() {
        if !l.is_finished() {
            *out.entry(l.owner.unwrap_or_else(|| "<free>".into())).or_insert(0) += 1;
        }
    }
    out
}

/// Waits until the table's owners are `want` (sorted counts, by owner), or panics at the deadline.
async fn wait_for(observer: &LeaseCoordinator, want: &[(&str, usize)], within: Duration) -> Duration {
    let start = Instant::now();
    let want: BTreeMap<String, usize> = want.iter().map(|(o, n)| (o.to_string(), *n)).collect();
    loop {
        let got = owners(observer).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "after {within:?} the owners are {got:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The held lists of the workers agree with the table: every lease held by exactly one.
async fn assert_views_agree(observer: &LeaseCoordinator, workers: &[&Worker]) {
    let table: BTreeMap<String, Option<String>> =
        observer.list().await.unwrap().into_iter().map(|l| (l.key, l.owner)).collect();
    for w in workers {
        for k in w.coord.held().await {
            assert_eq!(
                table[&k].as_deref(),
                Some(w.coord.worker()),
                "{k} is held by {} in memory only",
                w.coord.worker()
            );
        }
    }
}

fn counts(a: usize, b: usize, c: usize) -> [usize; 3] {
    let mut v = [a, b, c];
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_eight_shards_and_fail_over() {
    let server = Server::moto().unwrap();
    let ddb = create_table(&server, "leases-a").await;
    let observer = LeaseCoordinator::new(ddb.clone(), "leases-a", "observer", "leases-observer", FAILOVER);
    assert_eq!(observer.ensure_leases(&shards(8), "TRIM_HORIZON").await.unwrap(), 8);
    // A second discovery creates nothing (conditional put).
    assert_eq!(observer.ensure_leases(&shards(8), "TRIM_HORIZON").await.unwrap(), 0);

    let (a, b, c) = (start(&ddb, "leases-a", "a"), start(&ddb, "leases-a", "b"), start(&ddb, "leases-a", "c"));
    // Even: 3, 3, 2 (which worker gets 2 depends on who came first).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = owners(&observer).await;
        let n = |w: &str| o.get(w).copied().unwrap_or(0);
        if counts(n("a"), n("b"), n("c")) == [2, 3, 3] {
            break;
        }
        assert!(Instant::now() < deadline, "no even share after 30 s: {o:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Stable: a few more rounds change nothing (no stealing at 3/3/2).
    let before = owners(&observer).await;
    tokio::time::sleep(FAILOVER).await;
    assert_eq!(owners(&observer).await, before, "leases moved although the share was even");
    assert_views_agree(&observer, &[&a, &b, &c]).await;
    println!("even share: {before:?}");

    // SIGKILL c: no release, its leases expire after the failover time.
    c.task.abort();
    let c_held = c.coord.held().await;
    let killed = Instant::now();
    let took = wait_for(&observer, &[("a", 4), ("b", 4)], FAILOVER * 4).await;
    let failover = killed.elapsed();
    println!("failover of {} leases: {failover:?} (waited {took:?}; failover_time {FAILOVER:?})", c_held.len());
    // Not before the failover time (c might have renewed just before it died),
    // and within failover time + one round + slack for the table reads.
    assert!(failover >= FAILOVER - Duration::from_millis(500), "taken over before expiry: {failover:?}");
    assert!(failover <= FAILOVER * 2 + Duration::from_secs(2), "takeover took {failover:?}");
    assert_views_agree(&observer, &[&a, &b]).await;

    // The dead worker's checkpoint is fenced off: it cannot move any of its old shards.
    let shard = &c_held[0];
    let before = observer.list().await.unwrap().into_iter().find(|l| l.key == *shard).unwrap();
    let e = c.coord.checkpoint(shard, "49999999999999999999999999999999999999999999999999999999", None).await;
    assert!(matches!(e, Err(LeaseError::Lost(_))), "{e:?}");
    let after = observer.list().await.unwrap().into_iter().find(|l| l.key == *shard).unwrap();
    assert_eq!(before.checkpoint, after.checkpoint);
    // The new owner's checkpoint goes through, with its window snapshot.
    let owner = if a.coord.held().await.contains(shard) { &a } else { &b };
    owner
        .coord
        .checkpoint(shard, "49000000000000000000000000000000000000000000000000000001", Some(&b"snap"[..]))
        .await
        .unwrap();
    let l = observer.list().await.unwrap().into_iter().find(|l| l.key == *shard).unwrap();
    assert_eq!(l.checkpoint.as_deref(), Some("49000000000000000000000000000000000000000000000000000001"));
    assert_eq!(l.window_snapshot.as_deref(), Some(&b"snap"[..]));
    assert_eq!(l.owner_switches, 0, "a checkpoint resets ownerSwitchesSinceCheckpoint");

    // Graceful release: b's leases go to a at its next round, well before the failover time.
    b.task.abort();
    b.coord.release_all().await.unwrap();
    let released = Instant::now();
    wait_for(&observer, &[("a", 8)], FAILOVER * 2).await;
    let handover = released.elapsed();
    println!("handover after release: {handover:?}");
    assert!(handover < FAILOVER, "released leases waited for expiry: {handover:?}");
    a.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_worker_steals_toward_an_even_share_and_children_wait_for_parents() {
    let server = Server::moto().unwrap();
    let ddb = create_table(&server, "leases-b").await;
    let observer = LeaseCoordinator::new(ddb.clone(), "leases-b", "observer", "leases-observer", FAILOVER);
    observer.ensure_leases(&shards(8), "TRIM_HORIZON").await.unwrap();

    // Scale 1 → 3: a holds all 8, then b and c join and steal one per round.
    let a = start(&ddb, "leases-b", "a");
    wait_for(&observer, &[("a", 8)], Duration::from_secs(20)).await;
    let (b, c) = (start(&ddb, "leases-b", "b"), start(&ddb, "leases-b", "c"));
    let joined = Instant::now();
    let deadline = joined + Duration::from_secs(60);
    loop {
        let o = owners(&observer).await;
        let n = |w: &str| o.get(w).copied().unwrap_or(0);
        if counts(n("a"), n("b"), n("c")) == [2, 3, 3] {
            break;
        }
        assert!(Instant::now() < deadline, "no even share 60 s after scaling out: {o:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("1 -> 3 balanced in {:?}", joined.elapsed());
    // Lost leases were noticed by a (its renewals failed) and it no longer believes it holds them.
    tokio::time::sleep(a.coord.renew_interval() * 2).await;
    assert_views_agree(&observer, &[&a, &b, &c]).await;

    // Scale 3 → 1: b and c shut down gracefully.
    for w in [&b, &c] {
        w.task.abort();
        w.coord.release_all().await.unwrap();
    }
    let shrunk = Instant::now();
    wait_for(&observer, &[("a", 8)], FAILOVER * 2).await;
    println!("3 -> 1 in {:?}", shrunk.elapsed());

    // Reshard: shard 0 splits into 8 and 9. The children are leased only
    // after the parent's checkpoint is SHARD_END.
    let parent = shards(1)[0].0.clone();
    let children: Vec<(String, Vec<String>)> =
        (8..10).map(|i| (format!("shardId-{i:012}"), vec![parent.clone()])).collect();
    observer.ensure_leases(&children, "TRIM_HORIZON").await.unwrap();
    tokio::time::sleep(a.coord.renew_interval() * 3).await;
    let held = a.coord.held().await;
    assert!(
        !held.iter().any(|k| children.iter().any(|(c, _)| c == k)),
        "a child was leased before its parent ended: {held:?}"
    );
    assert!(held.contains(&parent));
    a.coord.checkpoint(&parent, "SHARD_END", None).await.unwrap();
    let deadline = Instant::now() + FAILOVER * 3;
    loop {
        let held = a.coord.held().await;
        if children.iter().all(|(c, _)| held.contains(c)) {
            break;
        }
        assert!(Instant::now() < deadline, "children not leased after the parent ended: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.task.abort();
    let m = trailwatch_processor::metrics::get();
    let stolen = m.kinesis_lease_transitions.with_label_values(&["leases-b-b", "stolen"]).get()
        + m.kinesis_lease_transitions.with_label_values(&["leases-b-c", "stolen"]).get();
    let lost = m.kinesis_lease_transitions.with_label_values(&["leases-b-a", "lost"]).get();
    assert!(stolen >= 5 && lost >= 5, "stolen {stolen}, lost {lost}");
}

/// A renewal the worker sent but never saw answered (the SDK retried one that
/// had landed, its round was stopped, the answer timed out) moves the table's
/// counter past the one the worker holds. The next renewal must keep the lease
/// (it is still this worker's), and a release must give it back at once:
/// otherwise the next owner waits for the failover time (seen as a flaky
/// handover before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_landed_but_unanswered_neither_loses_nor_strands_the_lease() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let server = Server::moto().unwrap();
    let ddb = create_table(&server, "leases-c").await;
    let observer = LeaseCoordinator::new(ddb.clone(), "leases-c", "observer", "leases-observer", FAILOVER);
    observer.ensure_leases(&shards(2), "TRIM_HORIZON").await.unwrap();
    let b = LeaseCoordinator::new(ddb.clone(), "leases-c", "b", "leases-c-b", FAILOVER);
    b.round().await.unwrap();
    assert_eq!(b.held().await.len(), 2);
    // The renewal that landed without b learning of it: counter + 1, still b's.
    let unanswered = || async {
        for key in b.held().await {
            ddb.update_item()
                .table_name("leases-c")
                .key("leaseKey", AttributeValue::S(key))
                .update_expression("SET leaseCounter = leaseCounter + :one")
                .condition_expression("leaseOwner = :b")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":b", AttributeValue::S("b".into()))
                .send()
                .await
                .unwrap();
        }
    };
    let counters =
        || async { observer.list().await.unwrap().into_iter().map(|l| (l.key, l.counter)).collect::<BTreeMap<_, _>>() };
    unanswered().await;
    assert!(b.renew().await.unwrap().is_empty(), "a lease still b's was given up");
    assert_eq!(b.held().await.len(), 2);
    // The table's counter was adopted: the next renewal goes through.
    let before = counters().await;
    assert!(b.renew().await.unwrap().is_empty());
    let after = counters().await;
    assert!(before.iter().all(|(k, c)| after[k] == c + 1), "{before:?} -> {after:?}");
    // A checkpoint after an unanswered write goes through too (on the table's
    // counter) instead of stopping the shard's reader as if the lease were lost.
    unanswered().await;
    let shard = b.held().await[0].clone();
    let position = "49000000000000000000000000000000000000000000000000000002";
    b.checkpoint(&shard, position, Some(&b"snap"[..])).await.unwrap();
    let l = observer.list().await.unwrap().into_iter().find(|l| l.key == shard).unwrap();
    assert_eq!((l.owner.as_deref(), l.checkpoint.as_deref()), (Some("b"), Some(position)));
    assert_eq!(l.window_snapshot.as_deref(), Some(&b"snap"[..]));
    assert_eq!(b.held().await.len(), 2);
    assert!(b.renew().await.unwrap().is_empty());

    unanswered().await;
    b.release_all().await.unwrap();
    assert_eq!(owners(&observer).await, BTreeMap::from([("<free>".to_string(), 2)]), "released leases still owned");
    // Another worker takes them at its first round, not after the failover time.
    let a = LeaseCoordinator::new(ddb.clone(), "leases-c", "a", "leases-c-a", FAILOVER);
    a.round().await.unwrap();
    assert_eq!(owners(&observer).await, BTreeMap::from([("a".to_string(), 2)]));
    // b's renewal now finds them another's: lost, and nothing is written.
    assert!(b.held().await.is_empty());
    assert!(b.renew().await.unwrap().is_empty());
    assert_eq!(owners(&observer).await, BTreeMap::from([("a".to_string(), 2)]));
    // A lease taken from under a worker is still reported lost by its renewal.
    let held_by_a = a.held().await;
    for key in &held_by_a {
        ddb.update_item()
            .table_name("leases-c")
            .key("leaseKey", AttributeValue::S(key.clone()))
            .update_expression("SET leaseOwner = :c, leaseCounter = leaseCounter + :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":c", AttributeValue::S("c".into()))
            .send()
            .await
            .unwrap();
    }
    // Its checkpoint is refused before the renewal notices (fenced by the owner).
    let e = a.checkpoint(&held_by_a[0], "49000000000000000000000000000000000000000000000000000003", None).await;
    assert!(matches!(e, Err(LeaseError::Lost(_))), "{e:?}");
    let l = observer.list().await.unwrap().into_iter().find(|l| l.key == held_by_a[0]).unwrap();
    assert_eq!(l.checkpoint.as_deref(), Some(position));
    let mut lost = a.renew().await.unwrap();
    lost.sort();
    assert_eq!(lost, held_by_a[1..]);
    assert!(a.held().await.is_empty());
}
