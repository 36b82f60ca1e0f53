//! `trailwatch-loadtest leases`: the shard-lease protocol of
//! `coordination = "leases"` (issue 19) at org scale, against a real DynamoDB
//! endpoint (moto here; AWS works too).
//!
//! N workers — each the very `LeaseCoordinator` `trailwatch run` uses, with a
//! renewal round every third of the failover time and a checkpoint of every
//! held shard (with a window snapshot of the given size) every commit
//! interval — share S shard leases. Every DynamoDB request is counted by an
//! SDK interceptor and classified (renew, checkpoint, take, release, scan,
//! create). The phases:
//!
//! 1. one worker takes all S leases;
//! 2. the other N−1 join: time until every worker holds its share (a scale
//!    out, e.g. for a backlog);
//! 3. steady state for `measure`: lease operations per second by kind, and
//!    the DynamoDB on-demand cost per day computed from them and the measured
//!    item sizes (window state in the item, or in S3 past 350 KB);
//! 4. one worker is killed (no release): time until its shards are held by
//!    the others (failover);
//! 5. one worker shuts down gracefully (release): handover time.
//!
//! The time to drain a backlog is computed, not measured (the emulators and a
//! 2-core machine cannot stand in for 64 shards and 8 tasks): from the
//! measured scale-out time, Kinesis's read limit per shard (2 MB/s) and a
//! per-instance throughput given as an input; the report states the formula.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::scan::ScanInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;
use trailwatch_processor::sources::kinesis::leases::{
    LeaseCoordinator, SnapshotBucket, INLINE_WITH_BUCKET, MAX_INLINE,
};

/// On-demand prices, us-east-1, after the November 2024 reduction (check
/// them before relying on the cost): per million write / read request units.
pub const WRU_USD_PER_M: f64 = 0.625;
pub const RRU_USD_PER_M: f64 = 0.125;
/// S3 Standard PUT, per 1,000 requests.
pub const S3_PUT_USD_PER_K: f64 = 0.005;
/// Kinesis GetRecords: at most 2 MB/s read per shard.
pub const KINESIS_READ_BYTES_PER_SHARD: f64 = 2.0 * 1024.0 * 1024.0;

#[derive(Debug, Clone)]
pub struct LeaseSimOptions {
    pub endpoint_url: String,
    pub region: String,
    pub table: String,
    pub shards: usize,
    pub instances: usize,
    pub failover: Duration,
    pub commit_interval: Duration,
    pub measure: Duration,
    /// Packed window snapshot per shard, written with each checkpoint.
    pub snapshot_bytes: usize,
    /// Keep states in this S3 bucket (created at the same endpoint), as
    /// `checkpoints.snapshot_bucket` does; None: in the lease items.
    pub snapshot_bucket: Option<String>,
    /// Accounts of the org (for the report; the rate is what counts).
    pub accounts: usize,
    /// Org events per second (arrival rate).
    pub rate: f64,
    /// End-to-end events per second one instance processes (an input).
    pub instance_eps: f64,
    /// Average record size on the stream.
    pub record_bytes: f64,
    /// Backlog to drain, in hours of arrivals.
    pub backlog_hours: f64,
}

#[derive(Debug, Serialize)]
pub struct LeaseSimReport {
    pub shards: usize,
    pub instances: usize,
    pub accounts: usize,
    pub failover_time_s: f64,
    pub commit_interval_s: f64,
    pub snapshot_bytes: usize,
    /// Where the states were kept in this run: "s3" or "item".
    pub snapshot_store: String,
    /// Phase 1: one worker holds all leases.
    pub first_worker_all_leases_s: f64,
    /// Phase 2: the others joined and every worker holds its share.
    pub scale_out_balanced_s: f64,
    pub shares_after_scale_out: Vec<usize>,
    /// Phase 3: DynamoDB requests per second by kind, and in all.
    pub ops_per_s: BTreeMap<String, f64>,
    pub lease_ops_per_s: f64,
    /// Sizes measured from the table: a lease item without snapshot, the table.
    pub item_bytes_without_snapshot: usize,
    pub cost: CostModel,
    /// Phase 4: a worker killed; its leases held by others after this long.
    pub killed_worker_leases: usize,
    pub failover_s: f64,
    /// Phase 5: a worker released its leases; held by others after this long.
    pub released_worker_leases: usize,
    pub handover_s: f64,
    pub drain: DrainModel,
}

#[derive(Debug, Serialize)]
pub struct CostModel {
    pub prices: String,
    /// Window states in the lease items (each write is billed on the item size).
    pub inline_usd_per_day: Option<f64>,
    pub inline_wru_per_day: Option<f64>,
    pub inline_rru_per_day: Option<f64>,
    /// Window states in S3 (items stay small; one PUT per checkpoint).
    pub s3_usd_per_day: f64,
    pub s3_wru_per_day: f64,
    pub s3_rru_per_day: f64,
    pub s3_puts_per_day: f64,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct DrainModel {
    pub rate_events_per_s: f64,
    pub backlog_events: f64,
    pub instance_eps_assumed: f64,
    pub kinesis_read_limit_events_per_s: f64,
    pub processing_limit_events_per_s: f64,
    pub drain_throughput_events_per_s: f64,
    pub drain_s: f64,
    pub formula: String,
}

/// Counts DynamoDB requests by lease operation.
#[derive(Debug, Default, Clone)]
struct CountOps(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl CountOps {
    fn take(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.0.lock().expect("counter lock"))
    }
}

/// The kind of a lease UpdateItem, from its update expression
/// (`sources/kinesis/leases.rs`).
fn classify(update: &str) -> &'static str {
    if update.contains("checkpoint = :cp") {
        "checkpoint"
    } else if update.contains("REMOVE leaseOwner") {
        "release"
    } else if update.contains("leaseOwner = :me") {
        "take"
    } else {
        "renew"
    }
}

impl Intercept for CountOps {
    fn name(&self) -> &'static str {
        "CountLeaseOps"
    }

    fn read_before_execution(
        &self,
        ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = ctx.input();
        let kind = if let Some(u) = input.downcast_ref::<UpdateItemInput>() {
            classify(u.update_expression().unwrap_or_default())
        } else if input.downcast_ref::<ScanInput>().is_some() {
            "scan"
        } else if input.downcast_ref::<PutItemInput>().is_some() {
            "create"
        } else {
            "other"
        };
        *self.0.lock().expect("counter lock").entry(kind).or_default() += 1;
        Ok(())
    }
}

/// One simulated `trailwatch run`: renewal rounds and checkpoints.
struct Worker {
    coord: Arc<LeaseCoordinator>,
    task: tokio::task::JoinHandle<()>,
    /// Ends the loop between two operations (a graceful stop).
    stop: Arc<tokio::sync::Notify>,
}

fn start_worker(
    ddb: &aws_sdk_dynamodb::Client,
    bucket: Option<&SnapshotBucket>,
    o: &LeaseSimOptions,
    name: &str,
    snapshot: Arc<Vec<u8>>,
) -> Worker {
    let coord = LeaseCoordinator::new(ddb.clone(), &o.table, name, "sim", o.failover);
    let coord = Arc::new(match bucket {
        Some(b) => coord.with_bucket(b.clone()),
        None => coord,
    });
    let c = Arc::clone(&coord);
    let commit = o.commit_interval;
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut round = tokio::time::interval(c.renew_interval());
        let mut checkpoint = tokio::time::interval(commit);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        loop {
            tokio::select! {
                _ = stopped.notified() => break,
                _ = round.tick() => {
                    if let Err(e) = c.round().await {
                        eprintln!("worker {}: lease round failed: {e}", c.worker());
                    }
                }
                _ = checkpoint.tick() => {
                    for shard in c.held().await {
                        seq += 1;
                        let snap = (!snapshot.is_empty()).then_some(snapshot.as_slice());
                        // Lost between the listing and the write: the next round notices.
                        let _ = c.checkpoint(&shard, &format!("{seq:056}"), snap).await;
                    }
                }
            }
        }
    });
    Worker { coord, task, stop }
}

/// Shards held per worker (open leases only), from the table.
async fn owners(observer: &LeaseCoordinator) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in observer.list().await? {
        out.entry(l.owner.unwrap_or_else(|| "<free>".into())).or_default().push(l.key);
    }
    Ok(out)
}

async fn wait_until<F>(observer: &LeaseCoordinator, within: Duration, what: &str, mut done: F) -> anyhow::Result<f64>
where
    F: FnMut(&BTreeMap<String, Vec<String>>) -> bool,
{
    let start = Instant::now();
    loop {
        let o = owners(observer).await?;
        if done(&o) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > within {
            let counts: BTreeMap<&String, usize> = o.iter().map(|(k, v)| (k, v.len())).collect();
            anyhow::bail!("{what}: not done after {within:?} (owners {counts:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// DynamoDB's item size: attribute names plus values (numbers as their digits).
fn item_size(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    A::S(s) | A::N(s) => s.len(),
                    A::B(b) => b.as_ref().len(),
                    A::Ss(l) => l.iter().map(String::len).sum(),
                    _ => 8,
                }
        })
        .sum()
}

pub async fn simulate(o: &LeaseSimOptions) -> anyhow::Result<LeaseSimReport> {
    anyhow::ensure!(o.instances >= 2 && o.shards >= o.instances, "need at least 2 instances and a shard each");
    // The SDK set up exactly as trailwatch does it.
    let aws = trailwatch_processor::aws::AwsConfig {
        region: Some(o.region.clone()),
        endpoint_url: Some(o.endpoint_url.clone()),
        ..Default::default()
    };
    let sdk = trailwatch_processor::aws::sdk_config(&aws).await;
    let counter = CountOps::default();
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(counter.clone()).build();
    let ddb = aws_sdk_dynamodb::Client::from_conf(conf);
    let created = ddb
        .create_table()
        .table_name(&o.table)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("leaseKey").attribute_type(ScalarAttributeType::S).build()?,
        )
        .key_schema(KeySchemaElement::builder().attribute_name("leaseKey").key_type(KeyType::Hash).build()?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    created.with_context(|| format!("creating lease table {} at {}", o.table, o.endpoint_url))?;
    let bucket = match &o.snapshot_bucket {
        Some(name) => {
            let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build();
            let s3 = aws_sdk_s3::Client::from_conf(conf);
            s3.create_bucket().bucket(name).send().await.with_context(|| format!("creating bucket {name}"))?;
            Some(SnapshotBucket { s3, bucket: name.clone(), prefix: "trailwatch/".into() })
        }
        None => None,
    };
    let observer = LeaseCoordinator::new(ddb.clone(), &o.table, "observer", "sim-observer", o.failover);
    let shards: Vec<(String, Vec<String>)> = (0..o.shards).map(|i| (format!("shardId-{i:012}"), Vec::new())).collect();
    observer.ensure_leases(&shards, "TRIM_HORIZON").await?;
    // Pseudo-random bytes: a packed (gzip) snapshot does not compress further.
    let snapshot: Arc<Vec<u8>> =
        Arc::new((0..o.snapshot_bytes as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect());
    let patience = o.failover * 20 + Duration::from_secs(60);

    // 1. One worker takes everything.
    let mut workers = vec![start_worker(&ddb, bucket.as_ref(), o, "w0", Arc::clone(&snapshot))];
    let first =
        wait_until(&observer, patience, "first worker", |ow| ow.get("w0").map_or(0, Vec::len) == o.shards).await?;
    eprintln!("leases: w0 holds all {} leases after {first:.1} s", o.shards);

    // 2. Scale out to N.
    for i in 1..o.instances {
        workers.push(start_worker(&ddb, bucket.as_ref(), o, &format!("w{i}"), Arc::clone(&snapshot)));
    }
    let share = o.shards.div_ceil(o.instances);
    let floor = o.shards / o.instances;
    let balanced = wait_until(&observer, patience, "scale-out", |ow| {
        !ow.contains_key("<free>")
            && ow.len() == o.instances
            && ow.values().all(|v| v.len() >= floor && v.len() <= share)
    })
    .await?;
    let mut shares: Vec<usize> = owners(&observer).await?.values().map(Vec::len).collect();
    shares.sort();
    eprintln!("leases: {} workers balanced {shares:?} after {balanced:.1} s", o.instances);

    // 3. Steady state.
    counter.take();
    let t0 = Instant::now();
    tokio::time::sleep(o.measure).await;
    let counts = counter.take();
    let secs = t0.elapsed().as_secs_f64();
    let ops_per_s: BTreeMap<String, f64> = counts.iter().map(|(k, v)| (k.to_string(), *v as f64 / secs)).collect();
    let lease_ops_per_s: f64 = ops_per_s.values().sum();
    eprintln!("leases: steady state over {secs:.0} s: {ops_per_s:?}");

    // Item sizes, from the table.
    let scan = ddb.scan().table_name(&o.table).consistent_read(true).send().await?;
    let sizes: Vec<usize> = scan.items().iter().map(item_size).collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let in_s3 = bucket.is_some() && o.snapshot_bytes > INLINE_WITH_BUCKET;
    // The item without its state (in S3 mode: with the key and digest).
    let without = if in_s3 { largest } else { largest.saturating_sub(o.snapshot_bytes) }.max(100);
    let cost = cost_model(o, &ops_per_s, without, largest);

    // 4. Failover: the last worker is killed (no release).
    let victim = workers.pop().expect("workers");
    let victim_name = victim.coord.worker().to_string();
    let victim_leases = owners(&observer).await?.get(&victim_name).cloned().unwrap_or_default();
    victim.task.abort();
    let failover =
        wait_until(&observer, patience, "failover", |ow| !ow.contains_key(&victim_name) && !ow.contains_key("<free>"))
            .await?;
    eprintln!("leases: {} leases of a killed worker taken over after {failover:.1} s", victim_leases.len());

    // 5. Graceful shutdown: release.
    let leaving = workers.pop().expect("workers");
    let leaving_name = leaving.coord.worker().to_string();
    // As `trailwatch run` on SIGTERM: no more rounds or checkpoints, then release.
    leaving.stop.notify_one();
    leaving.task.await.ok();
    let released = leaving.coord.held().await.len();
    leaving.coord.release_all().await?;
    let handover =
        wait_until(&observer, patience, "handover", |ow| !ow.contains_key(&leaving_name) && !ow.contains_key("<free>"))
            .await?;
    eprintln!("leases: {released} released leases taken over after {handover:.1} s");
    for w in workers {
        w.task.abort();
    }

    let drain = drain_model(o, balanced);
    Ok(LeaseSimReport {
        shards: o.shards,
        instances: o.instances,
        accounts: o.accounts,
        failover_time_s: o.failover.as_secs_f64(),
        commit_interval_s: o.commit_interval.as_secs_f64(),
        snapshot_bytes: o.snapshot_bytes,
        snapshot_store: if in_s3 { "s3" } else { "item" }.into(),
        first_worker_all_leases_s: first,
        scale_out_balanced_s: balanced,
        shares_after_scale_out: shares,
        ops_per_s,
        lease_ops_per_s,
        item_bytes_without_snapshot: without,
        cost,
        killed_worker_leases: victim_leases.len(),
        failover_s: failover,
        released_worker_leases: released,
        handover_s: handover,
        drain,
    })
}

/// Daily DynamoDB cost from the measured request rates: an UpdateItem is
/// billed on the larger of the item before and after (1 WRU per KB), a
/// strongly consistent Scan on the bytes it reads (1 RRU per 4 KB, pages of
/// at most 1 MB). `small` is an item without its state, `largest` the largest
/// item measured (for the scan pages of this run); both storages are
/// evaluated from the same request counts (the protocol does not change).
fn cost_model(o: &LeaseSimOptions, ops: &BTreeMap<String, f64>, small: usize, largest: usize) -> CostModel {
    let day = 86_400.0;
    let get = |k: &str| ops.get(k).copied().unwrap_or(0.0);
    let writes = get("renew") + get("checkpoint") + get("take") + get("release") + get("create");
    let pages = ((o.shards * largest) as f64 / (1024.0 * 1024.0)).ceil().max(1.0);
    let scan_rounds = get("scan") / pages;
    let wru = |item: usize| (item as f64 / 1024.0).ceil().max(1.0);
    let rru_round = |item: usize| ((item * o.shards) as f64 / 4096.0).ceil().max(1.0);
    let usd = |w: f64, r: f64| w / 1e6 * WRU_USD_PER_M + r / 1e6 * RRU_USD_PER_M;
    // In S3 mode the item carries the key and digest (~170 bytes) instead.
    let s3_item = if largest == small { small } else { small + 170 };
    let s3_w = writes * wru(s3_item) * day;
    let s3_r = scan_rounds * rru_round(s3_item) * day;
    let s3_puts = if o.snapshot_bytes > 0 { get("checkpoint") * day } else { 0.0 };
    let inline = (o.snapshot_bytes <= MAX_INLINE).then(|| {
        let big = small + o.snapshot_bytes;
        (writes * wru(big) * day, scan_rounds * rru_round(big) * day)
    });
    CostModel {
        prices: format!(
            "on-demand us-east-1: ${WRU_USD_PER_M}/M write units, ${RRU_USD_PER_M}/M read units; S3 PUT ${S3_PUT_USD_PER_K}/1k"
        ),
        inline_usd_per_day: inline.map(|(w, r)| usd(w, r)),
        inline_wru_per_day: inline.map(|(w, _)| w),
        inline_rru_per_day: inline.map(|(_, r)| r),
        s3_usd_per_day: usd(s3_w, s3_r) + s3_puts / 1000.0 * S3_PUT_USD_PER_K,
        s3_wru_per_day: s3_w,
        s3_rru_per_day: s3_r,
        s3_puts_per_day: s3_puts,
        note: "every lease write (renewals too) is billed on the whole item, window state included, and every \
               scan reads every item: states in the item multiply both"
            .into(),
    }
}

fn drain_model(o: &LeaseSimOptions, scale_out_s: f64) -> DrainModel {
    let kinesis = o.shards as f64 * KINESIS_READ_BYTES_PER_SHARD / o.record_bytes;
    let processing = o.instances as f64 * o.instance_eps;
    let throughput = kinesis.min(processing);
    let backlog = o.rate * o.backlog_hours * 3600.0;
    let net = throughput - o.rate;
    let drain_s = if net > 0.0 { scale_out_s + backlog / net } else { f64::INFINITY };
    DrainModel {
        rate_events_per_s: o.rate,
        backlog_events: backlog,
        instance_eps_assumed: o.instance_eps,
        kinesis_read_limit_events_per_s: kinesis,
        processing_limit_events_per_s: processing,
        drain_throughput_events_per_s: throughput,
        drain_s,
        formula:
            "scale_out_balanced_s + backlog / (min(shards × 2 MiB/s ÷ record_bytes, instances × instance_eps) − rate)"
                .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_expressions_are_classified_like_the_coordinator_writes_them() {
        assert_eq!(classify("SET leaseCounter = :next"), "renew");
        assert_eq!(classify("SET leaseOwner = :me, leaseCounter = :next, ownerSwitchesSinceCheckpoint = :sw"), "take");
        assert_eq!(classify("SET leaseCounter = :next REMOVE leaseOwner"), "release");
        assert_eq!(classify("SET leaseCounter = :next, checkpoint = :cp, windowSnapshot = :ws"), "checkpoint");
    }
}
