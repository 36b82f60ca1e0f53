//! Shard leases in DynamoDB, after the Kinesis Client Library's lease model,
//! so that several instances can share one stream (issue 19; the design and
//! what is still missing are in `service/design.md`, "Scale-out through shard
//! leases").
//!
//! One item per shard, partition key `leaseKey` (the shard id), with the
//! KCL's attribute names: `leaseOwner`, `leaseCounter` (the fencing token:
//! +1 on every write), `checkpoint`, `checkpointSubSequenceNumber`,
//! `ownerSwitchesSinceCheckpoint`, `parentShardIds`; plus the shard's window
//! state, written with the checkpoint: `windowSnapshot` (B, gzip JSON) when it
//! fits the item, else `windowSnapshotKey` + `windowSnapshotDigest` (an object
//! in the checkpoint store's snapshot bucket and its SHA-256).
//!
//! Every write is conditional on the `leaseCounter` this worker last saw (and,
//! for its own leases, on `leaseOwner` being itself), so a worker that lost a
//! lease can neither renew it nor move its checkpoint.
//!
//! Expiry needs no clock shared between hosts: a worker notes the local
//! instant at which it first saw each lease's counter; a lease whose counter
//! has not moved for `failover_time`, or that has no owner, is expired.
//!
//! IAM: `dynamodb:Scan`, `dynamodb:GetItem`, `dynamodb:PutItem`, `dynamodb:UpdateItem` on the table;
//! with a snapshot bucket `s3:PutObject`, `s3:GetObject` and (optional, old
//! snapshots are deleted best effort) `s3:DeleteObject` under
//! `<snapshot_prefix>leases/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::source::SHARD_END;
use crate::aws;

/// A failed lease operation.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease is no longer this worker's (taken by another, or released).
    #[error("lease of {0} lost")]
    Lost(String),
    #[error("{operation} failed: {message}")]
    Aws { operation: &'static str, message: String, retryable: bool },
    #[error("lease table {table}: {message}")]
    Invalid { table: String, message: String },
}

/// One shard's lease, as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: Option<String>,
    pub counter: u64,
    pub checkpoint: Option<String>,
    pub owner_switches: u64,
    pub parents: Vec<String>,
    /// The shard's window state at `checkpoint` (gzip JSON, `state/leased.rs`),
    /// when stored in the item.
    pub window_snapshot: Option<Vec<u8>>,
    /// Where the window state is when it did not fit the item.
    pub snapshot_ref: Option<SnapshotRef>,
}

/// A window snapshot kept in S3: the object key and the SHA-256 (hex) of its
/// bytes, checked when it is read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub key: String,
    pub digest: String,
}

/// Without a snapshot bucket, window snapshots (packed) up to this size are
/// kept in the lease item (DynamoDB items are at most 400 KB; the rest of the
/// item is small); larger ones cannot be committed.
pub const MAX_INLINE: usize = 350 * 1024;

/// With a snapshot bucket, only snapshots up to this size stay in the item,
/// so the item stays under 1 KB: DynamoDB bills every write to an item (each
/// renewal too) per KB of the whole item and every Scan per 4 KB read, so a
/// state in the item multiplies the cost of the whole protocol
/// (`trailwatch-loadtest leases`: $36 a day for 64 shards with 32 KB states
/// inline, $3.6 in S3).
pub const INLINE_WITH_BUCKET: usize = 512;

/// The bucket for snapshots over [`MAX_INLINE`]: the checkpoint store's
/// `snapshot_bucket`, objects under `<prefix>leases/<source>/<shard>/`.
#[derive(Clone)]
pub struct SnapshotBucket {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
}

impl Lease {
    pub fn is_finished(&self) -> bool {
        self.checkpoint.as_deref() == Some(SHARD_END)
    }

    fn has_snapshot(&self) -> bool {
        self.window_snapshot.is_some() || self.snapshot_ref.is_some()
    }

    /// Not read yet: the checkpoint is still the initial position.
    fn unread(&self) -> bool {
        self.checkpoint.as_deref().is_none_or(|c| matches!(c, "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP"))
    }
}

/// A lease this worker just took or stole.
#[derive(Debug)]
pub struct Acquired {
    pub lease: Lease,
    /// The tenure (see [`LeaseCoordinator::generation`]).
    pub gen: u64,
    /// The window snapshots (packed) to restore before reading: the lease's
    /// own; or, for a child shard not read yet, its parents' at their
    /// `SHARD_END` (one for a split, two for a merge: their union).
    pub snapshots: Vec<Vec<u8>>,
}

/// What one balancing round decided (see [`plan`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Free or expired leases to take.
    pub take: Vec<String>,
    /// A lease to steal from the most loaded worker, for balance.
    pub steal: Option<String>,
    /// The share this worker aims at.
    pub target: usize,
}

/// What a [`LeaseCoordinator::round`] changed.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    /// Leases now held that were not before (taken or stolen).
    pub acquired: Vec<Acquired>,
    /// Leases held before that another worker has now.
    pub lost: Vec<String>,
    /// The share this worker aims at; `held >= target` or nothing to take.
    pub target: usize,
    pub held: usize,
}

/// The KCL's balancing rule for one worker, pure. `expired(l)` says whether
/// another worker's lease is expired (or free).
///
/// Only leases that can be worked count: not finished (`SHARD_END`), and
/// whose parents (those still in the table) are finished, so children are
/// leased only after their parents. Target = ⌈workable / live workers⌉, live
/// workers being the owners of unexpired workable leases plus `me`. Below
/// target, take expired or free leases; with none, steal one from the most
/// loaded worker if it is over the target, or if `me` needs more than one (no
/// ping-pong when the share is uneven by one).
pub fn plan(leases: &[Lease], me: &str, expired: &dyn Fn(&Lease) -> bool) -> Plan {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let workable: Vec<&Lease> = leases
        .iter()
        .filter(|l| !l.is_finished())
        .filter(|l| l.parents.iter().all(|p| by_key.get(p.as_str()).is_none_or(|pl| pl.is_finished())))
        .collect();
    if workable.is_empty() {
        return Plan::default();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    counts.insert(me, 0);
    for l in &workable {
        match l.owner.as_deref() {
            Some(o) if o == me => *counts.entry(me).or_default() += 1,
            Some(o) if !expired(l) => *counts.entry(o).or_default() += 1,
            _ => {}
        }
    }
    let target = workable.len().div_ceil(counts.len());
    let mine = counts[me];
    let mut plan = Plan { target, ..Plan::default() };
    let needed = target.saturating_sub(mine);
    if needed == 0 {
        return plan;
    }
    let mut available: Vec<&Lease> = workable
        .iter()
        .copied()
        .filter(|l| l.owner.as_deref() != Some(me) && (l.owner.is_none() || expired(l)))
        .collect();
    if !available.is_empty() {
        // Random order: workers starting together do not all race for the same lease.
        use rand::seq::SliceRandom;
        available.shuffle(&mut rand::rng());
        plan.take = available.into_iter().take(needed).map(|l| l.key.clone()).collect();
        return plan;
    }
    let Some((&busiest, &most)) =
        counts.iter().filter(|(w, _)| **w != me).max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
    else {
        return plan;
    };
    if most >= target && (most > target || needed > 1) {
        let theirs: Vec<&Lease> = workable.iter().copied().filter(|l| l.owner.as_deref() == Some(busiest)).collect();
        let pick = rand::random_range(0..theirs.len());
        plan.steal = Some(theirs[pick].key.clone());
    }
    plan
}

/// One worker's view of the lease table.
pub struct LeaseCoordinator {
    ddb: Client,
    table: String,
    worker: String,
    /// The source name, for metrics and logs.
    source: String,
    failover: Duration,
    /// Every lease's counter as last seen, and since when (local time).
    seen: Mutex<HashMap<String, (u64, Instant)>>,
    /// Leases held: key → the counter this worker last wrote. Writes to held
    /// leases (renew, checkpoint, release) take this lock, so they are serial
    /// and each one knows the counter the previous one left.
    held: tokio::sync::Mutex<BTreeMap<String, u64>>,
    /// How many times each lease was acquired by this worker: a reader's
    /// positions carry it, so a checkpoint of an earlier tenure is told apart.
    acquisitions: Mutex<HashMap<String, u64>>,
    /// Where snapshots too large for an item go (None: such a commit fails).
    bucket: Option<SnapshotBucket>,
    /// Larger packed snapshots go to the bucket.
    inline_max: usize,
    /// Held lease → the S3 key of its current snapshot, deleted once a newer
    /// one is committed.
    refs: Mutex<HashMap<String, String>>,
}

fn aws_error<E>(
    operation: &'static str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> LeaseError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    LeaseError::Aws { operation, message: aws::error_text(&e), retryable: aws::is_retryable(&e) }
}

fn is_condition_failed<E: ProvideErrorMetadata>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn num(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl LeaseCoordinator {
    pub fn new(ddb: Client, table: &str, worker: &str, source: &str, failover: Duration) -> Self {
        LeaseCoordinator {
            ddb,
            table: table.to_string(),
            worker: worker.to_string(),
            source: source.to_string(),
            failover,
            seen: Mutex::new(HashMap::new()),
            held: tokio::sync::Mutex::new(BTreeMap::new()),
            acquisitions: Mutex::new(HashMap::new()),
            bucket: None,
            inline_max: MAX_INLINE,
            refs: Mutex::new(HashMap::new()),
        }
    }

    /// Snapshots over [`INLINE_WITH_BUCKET`] go to this bucket.
    pub fn with_bucket(mut self, bucket: SnapshotBucket) -> Self {
        self.bucket = Some(bucket);
        self.inline_max = INLINE_WITH_BUCKET;
        self
    }

    /// The largest packed snapshot kept in the lease item.
    pub fn inline_max(&self) -> usize {
        self.inline_max
    }

    /// For `[sources.<name>]` with `coordination = "leases"`: the table is
    /// reached through `[aws]`; the worker id is random per process. Large
    /// snapshots go to `snapshots` when set: the bucket, the key prefix and
    /// how the bucket is reached (`checkpoints.snapshot_*`, like the
    /// checkpoint store).
    pub async fn for_source(
        name: &str,
        cfg: &super::KinesisSourceConfig,
        aws_cfg: &aws::AwsConfig,
        snapshots: Option<(&str, &str, aws::AwsConfig)>,
    ) -> Self {
        let sdk = aws::sdk_config(aws_cfg).await;
        let worker = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let c = LeaseCoordinator::new(
            Client::new(&sdk),
            cfg.lease_table.as_deref().unwrap_or_default(),
            &worker,
            name,
            cfg.failover_time,
        );
        match snapshots {
            Some((bucket, prefix, merged)) => {
                let sdk = aws::sdk_config(&merged).await;
                // Emulators and custom endpoints rarely serve virtual-hosted buckets.
                let conf =
                    aws_sdk_s3::config::Builder::from(&sdk).force_path_style(merged.endpoint_url.is_some()).build();
                c.with_bucket(SnapshotBucket {
                    s3: aws_sdk_s3::Client::from_conf(conf),
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                })
            }
            None => c,
        }
    }

    /// The current tenure of a held lease (None when not held).
    pub async fn generation(&self, shard: &str) -> Option<u64> {
        let held = self.held.lock().await;
        if !held.contains_key(shard) {
            return None;
        }
        self.acquisitions.lock().expect("acquisitions lock").get(shard).copied()
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// How often to renew and balance: a third of the failover time, so two
    /// renewals may fail (a slow request, throttling) before a lease expires.
    pub fn renew_interval(&self) -> Duration {
        self.failover / 3
    }

    /// The leases held, by shard.
    pub async fn held(&self) -> Vec<String> {
        self.held.lock().await.keys().cloned().collect()
    }

    /// Creates a lease for each shard that has none: `(shard, parents)`,
    /// `initial` the checkpoint before the first record (`TRIM_HORIZON`,
    /// `LATEST`, `AT_TIMESTAMP`). Returns how many were created.
    pub async fn ensure_leases(&self, shards: &[(String, Vec<String>)], initial: &str) -> Result<usize, LeaseError> {
        let mut created = 0;
        for (shard, parents) in shards {
            let mut req = self
                .ddb
                .put_item()
                .table_name(&self.table)
                .item("leaseKey", AttributeValue::S(shard.clone()))
                .item("leaseCounter", num(0))
                .item("checkpoint", AttributeValue::S(initial.to_string()))
                .item("checkpointSubSequenceNumber", num(0))
                .item("ownerSwitchesSinceCheckpoint", num(0))
                .condition_expression("attribute_not_exists(leaseKey)");
            if !parents.is_empty() {
                req = req.item("parentShardIds", AttributeValue::Ss(parents.clone()));
            }
            match req.send().await {
                Ok(_) => created += 1,
                Err(e) if is_condition_failed(&e) => {}
                Err(e) => return Err(aws_error("dynamodb PutItem", e)),
            }
        }
        Ok(created)
    }

    /// Every lease in the table (a consistent Scan), noting when each
    /// counter was first seen.
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let resp = self
                .ddb
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| aws_error("dynamodb Scan", e))?;
            for item in resp.items() {
                out.push(self.parse(item)?);
            }
            match resp.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("seen lock");
        seen.retain(|k, _| out.iter().any(|l| l.key == *k));
        for l in &out {
            match seen.get(&l.key) {
                Some((c, _)) if *c == l.counter => {}
                _ => {
                    seen.insert(l.key.clone(), (l.counter, now));
                }
            }
        }
        Ok(out)
    }

    /// The lease's counter when the table says this worker owns it (a
    /// consistent read); None when another owns it, it is free, or the read
    /// fails (then the lease is treated as lost, the safe side).
    async fn owned_counter(&self, key: &str) -> Option<u64> {
        let resp = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .ok()?;
        let l = self.parse(resp.item()?).ok()?;
        (l.owner.as_deref() == Some(self.worker.as_str())).then_some(l.counter)
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        let s = |n: &str| item.get(n).and_then(|v| v.as_s().ok()).cloned();
        let n = |n: &str| item.get(n).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        let key = s("leaseKey").ok_or_else(|| LeaseError::Invalid {
            table: self.table.clone(),
            message: "an item has no leaseKey".into(),
        })?;
        let counter = n("leaseCounter").ok_or_else(|| LeaseError::Invalid {
            table: self.table.clone(),
            message: format!("lease {key} has no numeric leaseCounter"),
        })?;
        let parents = match item.get("parentShardIds") {
            Some(AttributeValue::Ss(p)) => p.clone(),
            Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            _ => Vec::new(),
        };
        Ok(Lease {
            key,
            owner: s("leaseOwner"),
            counter,
            checkpoint: s("checkpoint"),
            owner_switches: n("ownerSwitchesSinceCheckpoint").unwrap_or(0),
            parents,
            window_snapshot: item.get("windowSnapshot").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()),
            snapshot_ref: match (s("windowSnapshotKey"), s("windowSnapshotDigest")) {
                (Some(key), Some(digest)) => Some(SnapshotRef { key, digest }),
                _ => None,
            },
        })
    }

    /// Another worker's lease is expired when free, or when its counter has
    /// not moved for the failover time (as seen by this worker's clock).
    fn is_expired(&self, l: &Lease, now: Instant) -> bool {
        if l.owner.is_none() {
            return true;
        }
        let seen = self.seen.lock().expect("seen lock");
        seen.get(&l.key).is_some_and(|(c, at)| *c == l.counter && now.duration_since(*at) >= self.failover)
    }

    /// Renews every held lease; returns the ones lost.
    pub async fn renew(&self) -> Result<Vec<String>, LeaseError> {
        let mut held = self.held.lock().await;
        let mut lost = Vec::new();
        let mut first_error = None;
        for (key, counter) in held.iter_mut() {
            let r = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .key("leaseKey", AttributeValue::S(key.clone()))
                .update_expression("SET leaseCounter = :next")
                .condition_expression("leaseCounter = :c AND leaseOwner = :me")
                .expression_attribute_values(":c", num(*counter))
                .expression_attribute_values(":next", num(*counter + 1))
                .expression_attribute_values(":me", AttributeValue::S(self.worker.clone()))
                .send()
                .await;
            match r {
                Ok(_) => *counter += 1,
                Err(e) if is_condition_failed(&e) => match self.owned_counter(key).await {
                    // Still this worker's: an earlier write of its own moved the
                    // counter without its answer arriving (the SDK retried a
                    // renewal that had landed, or a round was cut off). Adopt
                    // the table's counter instead of dropping a lease nobody took.
                    Some(c) => *counter = c,
                    None => lost.push(key.clone()),
                },
                // A failed renewal is retried at the next round; the lease
                // expires only if renewals keep failing for the failover time.
                Err(e) => {
                    tracing::warn!(source = %self.source, shard = %key, error = %aws::error_text(&e), "lease renewal failed");
                    first_error.get_or_insert(aws_error("dynamodb UpdateItem", e));
                }
            }
        }
        for k in &lost {
            held.remove(k);
            self.note_lost(k);
        }
        self.update_gauge(held.len());
        match (first_error, lost.is_empty()) {
            // Lost leases must reach the caller even when another renewal failed.
            (Some(e), true) => Err(e),
            _ => Ok(lost),
        }
    }

    fn note_lost(&self, key: &str) {
        let m = crate::metrics::get();
        m.kinesis_lease_transitions.with_label_values(&[&self.source, "lost"]).inc();
        m.kinesis_lease_owned.with_label_values(&[&self.source, key]).set(0);
        tracing::warn!(source = %self.source, shard = %key, worker = %self.worker, "shard lease lost");
    }

    fn update_gauge(&self, n: usize) {
        crate::metrics::get().kinesis_leases_held.with_label_values(&[&self.source]).set(n as i64);
    }

    /// Takes one lease whose counter is still `seen` (free, expired, or
    /// stolen). Returns the lease as now held, or None if another worker
    /// wrote it first.
    async fn take(&self, l: &Lease, kind: &str) -> Result<Option<Lease>, LeaseError> {
        let switch = l.owner.as_deref() != Some(self.worker.as_str());
        let r = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", AttributeValue::S(l.key.clone()))
            .update_expression("SET leaseOwner = :me, leaseCounter = :next, ownerSwitchesSinceCheckpoint = :sw")
            .condition_expression("leaseCounter = :c")
            .expression_attribute_values(":c", num(l.counter))
            .expression_attribute_values(":next", num(l.counter + 1))
            .expression_attribute_values(":sw", num(l.owner_switches + u64::from(switch)))
            .expression_attribute_values(":me", AttributeValue::S(self.worker.clone()))
            .send()
            .await;
        match r {
            Ok(_) => {
                let m = crate::metrics::get();
                m.kinesis_lease_transitions.with_label_values(&[&self.source, kind]).inc();
                m.kinesis_lease_owned.with_label_values(&[&self.source, &l.key]).set(1);
                tracing::info!(source = %self.source, shard = %l.key, from = ?l.owner, worker = %self.worker, kind, "shard lease acquired");
                Ok(Some(Lease {
                    owner: Some(self.worker.clone()),
                    counter: l.counter + 1,
                    owner_switches: l.owner_switches + u64::from(switch),
                    ..l.clone()
                }))
            }
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(aws_error("dynamodb UpdateItem", e)),
        }
    }

    /// The window snapshots a new owner restores: the lease's own; for a
    /// child shard not read yet, its parents' at their `SHARD_END` (a
    /// principal's key moves to one child of a split, and the two parents of
    /// a merge hand over disjoint keys: the child restores their union).
    async fn snapshots_for(&self, l: &Lease, by_key: &HashMap<&str, &Lease>) -> Result<Vec<Vec<u8>>, LeaseError> {
        if l.has_snapshot() || !l.unread() {
            return Ok(self.snapshot_of(l).await?.into_iter().collect());
        }
        let mut out = Vec::new();
        for p in &l.parents {
            if let Some(pl) = by_key.get(p.as_str()) {
                out.extend(self.snapshot_of(pl).await?);
            }
        }
        if l.parents.len() > 1 {
            tracing::info!(source = %self.source, shard = %l.key, parents = ?l.parents, restored = out.len(), "merged shard: windows of both parents restored");
        }
        Ok(out)
    }

    /// One lease's window snapshot, from the item or from S3 (digest checked).
    pub async fn snapshot_of(&self, l: &Lease) -> Result<Option<Vec<u8>>, LeaseError> {
        if let Some(b) = &l.window_snapshot {
            return Ok(Some(b.clone()));
        }
        let Some(r) = &l.snapshot_ref else { return Ok(None) };
        let Some(b) = &self.bucket else {
            return Err(LeaseError::Invalid {
                table: self.table.clone(),
                message: format!(
                    "lease {} keeps its window state in S3 ({}) but checkpoints.snapshot_bucket is not set",
                    l.key, r.key
                ),
            });
        };
        let obj = b.s3.get_object().bucket(&b.bucket).key(&r.key).send().await.map_err(|e| LeaseError::Aws {
            operation: "s3 GetObject",
            message: aws::error_text(&e),
            retryable: true,
        })?;
        let bytes = obj
            .body
            .collect()
            .await
            .map_err(|e| LeaseError::Aws {
                operation: "s3 GetObject",
                message: format!("s3://{}/{}: {e}", b.bucket, r.key),
                retryable: true,
            })?
            .into_bytes()
            .to_vec();
        let digest = hex_sha256(&bytes);
        if digest != r.digest {
            return Err(LeaseError::Invalid {
                table: self.table.clone(),
                message: format!(
                    "window snapshot s3://{}/{} of lease {} has digest {digest}, the lease names {}",
                    b.bucket, r.key, l.key, r.digest
                ),
            });
        }
        Ok(Some(bytes))
    }

    /// Uploads a snapshot too large for the item, under a key no other write
    /// uses: this worker's id and the counter its checkpoint will set (each
    /// counter value is written by one successful update only, so a stale
    /// owner's upload never replaces the object a newer checkpoint names).
    async fn upload(&self, shard: &str, next: u64, bytes: &[u8]) -> Result<SnapshotRef, LeaseError> {
        let Some(b) = &self.bucket else {
            return Err(LeaseError::Invalid {
                table: self.table.clone(),
                message: format!(
                    "the window state of {shard} is {} bytes compressed, over the {MAX_INLINE} that fit a lease \
                     item; set checkpoints.snapshot_bucket to keep larger states in S3",
                    bytes.len()
                ),
            });
        };
        let key = format!("{}leases/{}/{shard}/{next:020}-{}.json.gz", b.prefix, self.source, self.worker);
        b.s3.put_object()
            .bucket(&b.bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| LeaseError::Aws {
                operation: "s3 PutObject",
                message: aws::error_text(&e),
                retryable: true,
            })?;
        Ok(SnapshotRef { key, digest: hex_sha256(bytes) })
    }

    /// Best effort (`s3:DeleteObject` is optional): a snapshot no lease names.
    async fn delete_object(&self, key: &str) {
        let Some(b) = &self.bucket else { return };
        if let Err(e) = b.s3.delete_object().bucket(&b.bucket).key(key).send().await {
            tracing::debug!(source = %self.source, key, error = %aws::error_text(&e), "old window snapshot not deleted");
        }
    }

    /// One round: renew, read the table, take or steal toward an even share.
    pub async fn round(&self) -> Result<RoundOutcome, LeaseError> {
        let lost = self.renew().await?;
        let leases = self.list().await?;
        let mut held = self.held.lock().await;
        // A lease this worker holds that the table gives to another (or to
        // nobody) was lost between renewals.
        let mut lost = lost;
        for l in &leases {
            if held.contains_key(&l.key) && l.owner.as_deref() != Some(self.worker.as_str()) {
                held.remove(&l.key);
                self.note_lost(&l.key);
                lost.push(l.key.clone());
            }
        }
        let now = Instant::now();
        let p = plan(&leases, &self.worker, &|l| self.is_expired(l, now));
        let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
        let mut acquired = Vec::new();
        let todo = p.take.iter().map(|k| (k, "taken")).chain(p.steal.iter().map(|k| (k, "stolen")));
        for (key, kind) in todo {
            let Some(l) = by_key.get(key.as_str()) else { continue };
            // Read the window state before taking: the take is conditional on
            // the counter this state belongs to (every checkpoint moves it), so
            // a lease is only ever held with its state in hand. A state that
            // cannot be read leaves the lease for the next round.
            let snapshots = match self.snapshots_for(l, &by_key).await {
                Ok(s) => s,
                Err(e) => {
                    crate::metrics::get().source_errors.with_label_values(&[&self.source, "lease"]).inc();
                    tracing::warn!(source = %self.source, shard = %l.key, error = %e, "window state of a lease not readable; not taken this round");
                    continue;
                }
            };
            if let Some(now_held) = self.take(l, kind).await? {
                held.insert(now_held.key.clone(), now_held.counter);
                let gen = {
                    let mut a = self.acquisitions.lock().expect("acquisitions lock");
                    let g = a.entry(now_held.key.clone()).or_insert(0);
                    *g += 1;
                    *g
                };
                let mut refs = self.refs.lock().expect("refs lock");
                match &now_held.snapshot_ref {
                    Some(r) => refs.insert(now_held.key.clone(), r.key.clone()),
                    None => refs.remove(&now_held.key),
                };
                acquired.push(Acquired { lease: now_held, gen, snapshots });
            }
        }
        self.update_gauge(held.len());
        Ok(RoundOutcome { acquired, lost, target: p.target, held: held.len() })
    }

    /// Moves a held lease's checkpoint and its window snapshot (packed): in
    /// the item up to [`INLINE_WITH_BUCKET`] with a bucket ([`MAX_INLINE`]
    /// without), else in S3 with the key and digest in the item. Fenced: fails with [`LeaseError::Lost`] if the lease is no longer
    /// this worker's.
    pub async fn checkpoint(&self, shard: &str, position: &str, snapshot: Option<&[u8]>) -> Result<(), LeaseError> {
        let mut held = self.held.lock().await;
        let Some(mut counter) = held.get(shard).copied() else { return Err(LeaseError::Lost(shard.to_string())) };
        let uploaded = match snapshot {
            Some(b) if b.len() > self.inline_max => Some(self.upload(shard, counter + 1, b).await?),
            _ => None,
        };
        const BASE: &str = "SET leaseCounter = :next, checkpoint = :cp, checkpointSubSequenceNumber = :zero, \
                            ownerSwitchesSinceCheckpoint = :zero";
        let mut reread = false;
        let result = loop {
            let mut req = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .key("leaseKey", AttributeValue::S(shard.to_string()))
                .condition_expression("leaseCounter = :c AND leaseOwner = :me")
                .expression_attribute_values(":c", num(counter))
                .expression_attribute_values(":next", num(counter + 1))
                .expression_attribute_values(":me", AttributeValue::S(self.worker.clone()))
                .expression_attribute_values(":cp", AttributeValue::S(position.to_string()))
                .expression_attribute_values(":zero", num(0));
            req = match (snapshot, &uploaded) {
                (Some(_), Some(r)) => req
                    .update_expression(format!(
                        "{BASE}, windowSnapshotKey = :wk, windowSnapshotDigest = :wd REMOVE windowSnapshot"
                    ))
                    .expression_attribute_values(":wk", AttributeValue::S(r.key.clone()))
                    .expression_attribute_values(":wd", AttributeValue::S(r.digest.clone())),
                (Some(k), None) => req
                    .update_expression(format!(
                        "{BASE}, windowSnapshot = :ws REMOVE windowSnapshotKey, windowSnapshotDigest"
                    ))
                    .expression_attribute_values(":ws", AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(k))),
                (None, _) => req.update_expression(BASE),
            };
            match req.send().await {
                // The counter moved, yet the lease may still be this worker's (a
                // write of its own landed unanswered: a renewal, or this very
                // checkpoint retried by the SDK). Then write again on the table's
                // counter, once; the same position written twice is the same.
                Err(e) if is_condition_failed(&e) && !reread => {
                    reread = true;
                    match self.owned_counter(shard).await {
                        Some(c) => counter = c,
                        None => break Err(e),
                    }
                }
                r => break r,
            }
        };
        match result {
            Ok(_) => {
                held.insert(shard.to_string(), counter + 1);
                drop(held);
                if snapshot.is_some() {
                    let old = {
                        let mut refs = self.refs.lock().expect("refs lock");
                        match &uploaded {
                            Some(r) => refs.insert(shard.to_string(), r.key.clone()),
                            None => refs.remove(shard),
                        }
                    };
                    if let Some(old) = old.filter(|o| uploaded.as_ref().is_none_or(|r| r.key != *o)) {
                        self.delete_object(&old).await;
                    }
                }
                // Read to its end: nothing more to renew (a finished lease is
                // never taken again; its children become workable).
                if position == SHARD_END {
                    self.release(shard).await?;
                }
                Ok(())
            }
            Err(e) if is_condition_failed(&e) => {
                held.remove(shard);
                self.note_lost(shard);
                self.update_gauge(held.len());
                drop(held);
                // Named by no lease (the update did not happen).
                if let Some(r) = &uploaded {
                    self.delete_object(&r.key).await;
                }
                Err(LeaseError::Lost(shard.to_string()))
            }
            // The update may have happened (a lost reply): the object stays.
            Err(e) => Err(aws_error("dynamodb UpdateItem", e)),
        }
    }

    /// Gives up one held lease (after its final checkpoint): another worker
    /// takes it at its next round instead of after the failover time.
    pub async fn release(&self, shard: &str) -> Result<(), LeaseError> {
        let mut held = self.held.lock().await;
        if held.remove(shard).is_none() {
            return Ok(());
        }
        let r = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", AttributeValue::S(shard.to_string()))
            // On the owner alone, not the counter: a renewal cut off after it
            // was sent (a stopped round, a timeout) may have moved the counter
            // past the one held here, and the lease is still this worker's to
            // give back. Raising the counter fences any such write still on its way.
            .update_expression("SET leaseCounter = leaseCounter + :one REMOVE leaseOwner")
            .condition_expression("leaseOwner = :me")
            .expression_attribute_values(":one", num(1))
            .expression_attribute_values(":me", AttributeValue::S(self.worker.clone()))
            .send()
            .await;
        self.update_gauge(held.len());
        let m = crate::metrics::get();
        m.kinesis_lease_owned.with_label_values(&[&self.source, shard]).set(0);
        match r {
            Ok(_) => {
                m.kinesis_lease_transitions.with_label_values(&[&self.source, "released"]).inc();
                Ok(())
            }
            // Already someone else's: nothing to give back.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(aws_error("dynamodb UpdateItem", e)),
        }
    }

    /// Releases every held lease (graceful shutdown, after the final commit).
    pub async fn release_all(&self) -> Result<(), LeaseError> {
        let keys: BTreeSet<String> = self.held.lock().await.keys().cloned().collect();
        let mut first = None;
        for k in keys {
            if let Err(e) = self.release(&k).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(key: &str, owner: Option<&str>) -> Lease {
        Lease {
            key: key.into(),
            owner: owner.map(str::to_string),
            counter: 1,
            checkpoint: Some("TRIM_HORIZON".into()),
            owner_switches: 0,
            parents: vec![],
            window_snapshot: None,
            snapshot_ref: None,
        }
    }

    fn leases(owners: &[Option<&str>]) -> Vec<Lease> {
        owners.iter().enumerate().map(|(i, o)| lease(&format!("s{i}"), *o)).collect()
    }

    #[test]
    fn a_new_worker_takes_free_leases_up_to_its_share() {
        let ls = leases(&[None; 8]);
        let p = plan(&ls, "a", &|l| l.owner.is_none());
        assert_eq!((p.target, p.take.len(), p.steal), (8, 8, None));
        // With two live others, the share of 8 is 3.
        let mut ls = leases(&[Some("b"), Some("c"), None, None, None, None, None, None]);
        ls[0].owner = Some("b".into());
        let p = plan(&ls, "a", &|l| l.owner.is_none());
        assert_eq!((p.target, p.take.len()), (3, 3));
    }

    #[test]
    fn expired_leases_are_taken_and_their_owner_no_longer_counts() {
        let ls =
            leases(&[Some("a"), Some("a"), Some("a"), Some("dead"), Some("dead"), Some("dead"), Some("b"), Some("b")]);
        let p = plan(&ls, "a", &|l| l.owner.as_deref() == Some("dead"));
        // Live workers a and b: share 4; a holds 3 and takes one dead lease.
        assert_eq!(p.target, 4);
        assert_eq!(p.take.len(), 1);
        assert!(ls.iter().any(|l| l.key == p.take[0] && l.owner.as_deref() == Some("dead")));
    }

    #[test]
    fn steals_only_when_unbalanced() {
        // 3,3,2 is balanced: the worker with 2 steals nothing.
        let ls = leases(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("b"), Some("c"), Some("c"), Some("c")]);
        assert_eq!(plan(&ls, "a", &|_| false), Plan { target: 3, ..Plan::default() });
        // A new worker beside one holding all 8: share 4, one steal per round.
        let ls = leases(&[Some("b"); 8]);
        let p = plan(&ls, "a", &|_| false);
        assert_eq!((p.target, p.take.len()), (4, 0));
        assert!(p.steal.is_some());
        // 4,4 and a third worker with 0 needs 3 (> 1): it steals though nobody is over target.
        let ls = leases(&[Some("b"), Some("b"), Some("b"), Some("b"), Some("c"), Some("c"), Some("c"), Some("c")]);
        let p = plan(&ls, "a", &|_| false);
        assert_eq!(p.target, 3);
        assert!(p.steal.is_some());
        // A worker at its share takes nothing.
        let ls = leases(&[Some("a"), Some("a"), Some("a"), Some("a"), Some("b"), Some("b"), Some("b"), Some("b")]);
        assert_eq!(plan(&ls, "a", &|_| false), Plan { target: 4, ..Plan::default() });
    }

    #[test]
    fn children_wait_for_their_parents_to_finish() {
        let mut parent = lease("p", Some("b"));
        let mut child = lease("c", None);
        child.parents = vec!["p".into()];
        let p = plan(&[parent.clone(), child.clone()], "a", &|l| l.owner.is_none());
        assert!(p.take.is_empty(), "{p:?}");
        parent.checkpoint = Some(SHARD_END.into());
        let p = plan(&[parent.clone(), child.clone()], "a", &|l| l.owner.is_none());
        assert_eq!(p.take, vec!["c".to_string()]);
        // A parent no longer in the table (trimmed) does not hold its child back.
        let p = plan(&[child], "a", &|l| l.owner.is_none());
        assert_eq!(p.take, vec!["c".to_string()]);
    }
}
