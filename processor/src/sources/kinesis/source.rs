use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::leases::LeaseCoordinator;

use super::{KinesisSourceConfig, StartPosition};
use crate::aws::{self, AwsConfig};
use crate::pipeline::batch::{Adopt, Checkpoint, EventBatch, Partitions, SourceBatch};
use crate::sources::{batch_span, finish_batch, Source, SourceContext, SourceError};

/// The position recorded for a shard read to its end (closed by a reshard).
pub const SHARD_END: &str = "SHARD_END";

pub struct KinesisSource {
    cfg: KinesisSourceConfig,
    client: Client,
    /// For logs and origins: the stream name, else its ARN.
    stream: String,
}

impl KinesisSource {
    pub async fn build(_name: &str, cfg: &KinesisSourceConfig, aws_cfg: &AwsConfig) -> Result<Self, SourceError> {
        let sdk = aws::sdk_config(&aws_cfg.with_overrides(cfg.region.as_ref(), cfg.endpoint_url.as_ref())).await;
        let stream = cfg.stream_name.clone().or_else(|| cfg.stream_arn.clone()).unwrap_or_default();
        Ok(KinesisSource { cfg: cfg.clone(), client: Client::new(&sdk), stream })
    }
}

/// Where a reader starts.
struct Start {
    /// After this sequence number (a checkpoint).
    after: Option<String>,
    /// A child of a shard we read: from its beginning.
    has_parent: bool,
    /// The lease's tenure, when leased.
    gen: Option<u64>,
}

/// What a shard reader tells the coordinator.
enum ReaderEvent {
    /// The shard is closed and every record of it was sent.
    Finished(String),
    /// The reader hit an error it cannot get past.
    Failed(String, SourceError),
}

/// The shard readers of a source, in either coordination mode: their tasks,
/// the shard each reads (to name it if it dies) and the channel they report on.
struct Readers {
    tasks: tokio::task::JoinSet<()>,
    shards: std::collections::HashMap<tokio::task::Id, String>,
    tx: mpsc::Sender<ReaderEvent>,
    rx: mpsc::Receiver<ReaderEvent>,
}

impl Readers {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel::<ReaderEvent>(64);
        Readers { tasks: tokio::task::JoinSet::new(), shards: Default::default(), tx, rx }
    }

    /// Starts a reader of `shard` that stops at `stop`.
    fn spawn(
        &mut self,
        me: &Arc<KinesisSource>,
        ctx: &Arc<SourceContext>,
        shard: String,
        start: Start,
        stop: CancellationToken,
    ) {
        let (me, ctx, tx) = (Arc::clone(me), Arc::clone(ctx), self.tx.clone());
        let id = shard.clone();
        let handle = self.tasks.spawn(async move {
            let _ = match me.read_shard(&ctx, &id, start, &stop).await {
                Ok(true) => tx.send(ReaderEvent::Finished(id)).await,
                Ok(false) => Ok(()),
                Err(e) => tx.send(ReaderEvent::Failed(id, e)).await,
            };
        });
        self.shards.insert(handle.id(), shard);
    }

    /// The next shard read to its end (`Ok(None)`: no reader can report any
    /// more). A reader that fails, or dies without a word (a panic, with no
    /// fail-fast hook installed), must not leave its shard unread: every
    /// reader is stopped and the source fails. Cancel-safe.
    async fn next_finished(&mut self, ctx: &SourceContext) -> Result<Option<String>, SourceError> {
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ReaderEvent::Finished(id)) => {
                        tracing::info!(source = %ctx.name, shard = %id, "shard closed and fully read");
                        return Ok(Some(id));
                    }
                    Some(ReaderEvent::Failed(id, e)) => {
                        tracing::error!(source = %ctx.name, shard = %id, error = %e, "shard reader failed");
                        ctx.health.set_source(&ctx.name, false);
                        self.tasks.abort_all();
                        return Err(e);
                    }
                    None => return Ok(None),
                },
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => match done {
                    Ok((tid, ())) => {
                        self.shards.remove(&tid);
                    }
                    Err(e) => {
                        let shard = self.shards.remove(&e.id()).unwrap_or_default();
                        tracing::error!(source = %ctx.name, shard = %shard, "shard reader died: {e}");
                        ctx.health.set_source(&ctx.name, false);
                        self.tasks.abort_all();
                        return Err(SourceError::Fatal(format!("the reader of shard {shard} died: {e}")));
                    }
                },
            }
        }
    }

    /// Waits for every reader (they stop at the cancellation) so that their
    /// last batches are sent.
    async fn join_all(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[async_trait]
impl Source for KinesisSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let me = Arc::new(*self);
        if let Some(coord) = ctx.leases.clone() {
            return me.run_leased(Arc::new(ctx), coord).await;
        }
        let ctx = Arc::new(ctx);
        // Shards already read to their end in an earlier run.
        let mut finished: BTreeSet<String> =
            ctx.checkpoints.iter().filter(|(_, p)| p.as_str() == SHARD_END).map(|(s, _)| s.clone()).collect();
        let mut started: BTreeSet<String> = BTreeSet::new();
        let mut readers = Readers::new();
        let mut last_listing: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let due = last_listing.is_none_or(|t| t.elapsed() >= me.cfg.shard_discovery_interval);
            if due {
                match me.list_shards().await {
                    Ok(shards) => {
                        failures = 0;
                        last_listing = Some(Instant::now());
                        ctx.health.set_source(&ctx.name, true);
                        let known: BTreeSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
                        let mut to_start = Vec::new();
                        for s in &shards {
                            let id = s.shard_id().to_string();
                            if started.contains(&id) || finished.contains(&id) {
                                continue;
                            }
                            // Parents first: a child waits until every parent
                            // that still exists has been read to its end, so
                            // the records of a key stay in order.
                            let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()];
                            let waiting = parents.iter().flatten().any(|p| known.contains(p) && !finished.contains(*p));
                            if waiting {
                                continue;
                            }
                            let has_parent = parents.iter().flatten().any(|p| known.contains(p));
                            to_start.push((id, has_parent));
                        }
                        // Each shard has its own watermark: registered before
                        // any of them delivers, every shard holds the combined
                        // one back until it has records, idles or is closed.
                        if !to_start.is_empty() {
                            let open = to_start.iter().map(|(id, _)| shard_partition(&ctx.name, id)).collect();
                            let open = Partitions { open, ..Partitions::default() };
                            let batch = SourceBatch::partitions_only(&ctx.name, now_ms(), open);
                            if !ctx.out.send(batch).await {
                                break;
                            }
                        }
                        for (id, has_parent) in to_start {
                            started.insert(id.clone());
                            let after = ctx.checkpoints.get(&id).cloned();
                            let start = Start { after, has_parent, gen: None };
                            readers.spawn(&me, &ctx, id, start, ctx.shutdown.clone());
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        crate::metrics::get().source_errors.with_label_values(&[&ctx.name, "list_shards"]).inc();
                        tracing::warn!(source = %ctx.name, stream = %me.stream, error = %e, "cannot list shards");
                        if let SourceError::Fatal(_) = e {
                            ctx.health.set_source(&ctx.name, false);
                            return Err(e);
                        }
                        if failures >= 3 {
                            ctx.health.set_source(&ctx.name, false);
                        }
                        last_listing = Some(Instant::now() - me.cfg.shard_discovery_interval + backoff(failures));
                    }
                }
            }
            let wait = last_listing
                .map(|t| me.cfg.shard_discovery_interval.saturating_sub(t.elapsed()))
                .unwrap_or_default()
                .max(Duration::from_millis(50));
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                done = readers.next_finished(&ctx) => match done? {
                    Some(id) => {
                        finished.insert(id);
                        // Its children may start now.
                        last_listing = None;
                    }
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
        readers.join_all().await;
        Ok(())
    }
}

impl KinesisSource {
    /// `coordination = "leases"`: creates a lease per shard at each listing,
    /// and every renewal interval renews, balances and reads exactly the
    /// shards it holds (a reader per lease, cancelled when the lease is lost).
    async fn run_leased(
        self: Arc<Self>,
        ctx: Arc<SourceContext>,
        coord: Arc<LeaseCoordinator>,
    ) -> Result<(), SourceError> {
        let me = self;
        let m = crate::metrics::get();
        let initial = match me.cfg.start_position {
            StartPosition::TrimHorizon => "TRIM_HORIZON",
            StartPosition::Latest => "LATEST",
            StartPosition::AtTimestamp => "AT_TIMESTAMP",
        };
        let mut readers = Readers::new();
        let mut running: std::collections::HashMap<String, CancellationToken> = Default::default();
        let mut last_listing: Option<Instant> = None;
        let mut next_round = Instant::now();
        let mut failures = 0u32;
        tracing::info!(source = %ctx.name, worker = %coord.worker(), "sharing the stream through shard leases");
        loop {
            if last_listing.is_none_or(|t| t.elapsed() >= me.cfg.shard_discovery_interval) {
                match me.list_shards().await {
                    Ok(shards) => {
                        last_listing = Some(Instant::now());
                        let known: BTreeSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
                        let (mut roots, mut children) = (Vec::new(), Vec::new());
                        for s in &shards {
                            let parents: Vec<String> = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                                .into_iter()
                                .flatten()
                                .filter(|p| known.contains(p))
                                .map(str::to_string)
                                .collect();
                            // A child of a shard we read starts at its beginning.
                            if parents.is_empty() {
                                roots.push((s.shard_id().to_string(), parents));
                            } else {
                                children.push((s.shard_id().to_string(), parents));
                            }
                        }
                        let created = async {
                            Ok::<_, super::leases::LeaseError>(
                                coord.ensure_leases(&roots, initial).await?
                                    + coord.ensure_leases(&children, "TRIM_HORIZON").await?,
                            )
                        };
                        match created.await {
                            Ok(n) if n > 0 => tracing::info!(source = %ctx.name, created = n, "shard leases created"),
                            Ok(_) => {}
                            Err(e) => {
                                m.source_errors.with_label_values(&[&ctx.name, "lease"]).inc();
                                tracing::warn!(source = %ctx.name, error = %e, "cannot create shard leases");
                            }
                        }
                    }
                    Err(e @ SourceError::Fatal(_)) => {
                        ctx.health.set_source(&ctx.name, false);
                        return Err(e);
                    }
                    Err(e) => {
                        m.source_errors.with_label_values(&[&ctx.name, "list_shards"]).inc();
                        tracing::warn!(source = %ctx.name, stream = %me.stream, error = %e, "cannot list shards");
                        last_listing = Some(Instant::now() - me.cfg.shard_discovery_interval + backoff(1));
                    }
                }
            }
            if Instant::now() >= next_round {
                next_round = Instant::now() + coord.renew_interval();
                match coord.round().await {
                    Ok(out) => {
                        failures = 0;
                        ctx.health.set_source(&ctx.name, true);
                        // A lost shard's window state goes (the new owner has it from
                        // the checkpoint); an acquired one's is restored from its lease.
                        let mut drop = Vec::new();
                        for shard in &out.lost {
                            if let Some(stop) = running.remove(shard) {
                                stop.cancel();
                            }
                            drop.push(shard_partition(&ctx.name, shard));
                        }
                        let mut adopt = Vec::new();
                        let mut starts = Vec::new();
                        for super::leases::Acquired { lease, gen, snapshots } in out.acquired {
                            if lease.is_finished() {
                                continue;
                            }
                            if let Some(old) = running.remove(&lease.key) {
                                old.cancel();
                            }
                            let after = lease
                                .checkpoint
                                .clone()
                                .filter(|c| !matches!(c.as_str(), "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP"));
                            let start = Start { after, has_parent: !lease.parents.is_empty(), gen: Some(gen) };
                            adopt.push(Adopt {
                                key: shard_partition(&ctx.name, &lease.key),
                                gen,
                                snapshots: snapshots.into_iter().map(Arc::new).collect(),
                            });
                            starts.push((lease.key, start));
                        }
                        if !drop.is_empty() || !adopt.is_empty() {
                            let moved = Partitions { adopt, drop, ..Partitions::default() };
                            let batch = SourceBatch::partitions_only(&ctx.name, now_ms(), moved);
                            if !ctx.out.send(batch).await {
                                break;
                            }
                        }
                        for (id, start) in starts {
                            let stop = ctx.shutdown.child_token();
                            running.insert(id.clone(), stop.clone());
                            readers.spawn(&me, &ctx, id, start, stop);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        m.source_errors.with_label_values(&[&ctx.name, "lease"]).inc();
                        tracing::warn!(source = %ctx.name, error = %e, "lease round failed");
                        if failures >= 3 {
                            ctx.health.set_source(&ctx.name, false);
                        }
                    }
                }
            }
            let listing_due =
                last_listing.map(|t| me.cfg.shard_discovery_interval.saturating_sub(t.elapsed())).unwrap_or_default();
            let wait =
                listing_due.min(next_round.saturating_duration_since(Instant::now())).max(Duration::from_millis(50));
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                done = readers.next_finished(&ctx) => match done? {
                    Some(id) => {
                        running.remove(&id);
                    }
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // The leases are released by the service after the final commit.
        readers.join_all().await;
        Ok(())
    }

    fn stream_args<T>(&self, b: T, name: fn(T, String) -> T, arn: fn(T, String) -> T) -> T {
        match (&self.cfg.stream_name, &self.cfg.stream_arn) {
            (_, Some(a)) => arn(b, a.clone()),
            (Some(n), None) => name(b, n.clone()),
            (None, None) => b,
        }
    }

    /// Every shard of the stream (open and closed ones still in retention).
    async fn list_shards(&self) -> Result<Vec<Shard>, SourceError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self.client.list_shards();
            // With a NextToken the stream must not be named again.
            let req = match &token {
                Some(t) => req.next_token(t),
                None => self.stream_args(req, |b, v| b.stream_name(v), |b, v| b.stream_arn(v)),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| fatal_if_not_found(&e, "ListShards", || format!("stream {}", self.stream)))?;
            out.extend(resp.shards().iter().cloned());
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// An iterator for `shard`: after `after` if given, else at the configured start.
    async fn iterator(&self, shard: &str, after: Option<&str>, has_parent: bool) -> Result<String, SourceError> {
        let req = self.stream_args(
            self.client.get_shard_iterator().shard_id(shard),
            |b, v| b.stream_name(v),
            |b, v| b.stream_arn(v),
        );
        let req = match after {
            Some(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
            // A child of a shard we read starts at its beginning, whatever the start position.
            None if has_parent => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            None => match self.cfg.start_position {
                StartPosition::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
                StartPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
                StartPosition::AtTimestamp => {
                    let t =
                        self.cfg.start_timestamp.as_deref().and_then(crate::timetext::parse_time).ok_or_else(|| {
                            SourceError::Config("start_position = \"at-timestamp\" needs start_timestamp".into())
                        })?;
                    let secs = t as f64 / 1e3;
                    req.shard_iterator_type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_secs_f64(secs))
                }
            },
        };
        let resp = req
            .send()
            .await
            .map_err(|e| fatal_if_not_found(&e, "GetShardIterator", || format!("shard {shard} of {}", self.stream)))?;
        resp.shard_iterator().map(str::to_string).ok_or_else(|| SourceError::Aws {
            operation: "GetShardIterator",
            message: format!("no iterator returned for {shard}"),
        })
    }

    /// Reads one shard until it closes (Ok(true)) or `stop` (shutdown, or its
    /// lease lost: Ok(false)).
    async fn read_shard(
        &self,
        ctx: &SourceContext,
        shard: &str,
        start: Start,
        stop: &CancellationToken,
    ) -> Result<bool, SourceError> {
        let m = crate::metrics::get();
        let behind = m.kinesis_behind_latest.with_label_values(&[&ctx.name, shard]);
        let Start { after, has_parent, gen } = start;
        // A leased shard's positions carry the lease's tenure (state/leased.rs).
        let position = |seq: &str| match gen {
            Some(g) => format!("{g}:{seq}"),
            None => seq.to_string(),
        };
        let mut last_seq: Option<String> = after;
        let mut iterator: Option<String> = None;
        let mut idle = self.cfg.poll_interval;
        let mut failures = 0u32;
        // Readiness watches this reader: a poll must complete within its budget.
        let beat = ctx.health.partition(&ctx.name, shard, self.cfg.poll_interval);
        tracing::info!(source = %ctx.name, shard, after = ?last_seq, "reading shard");
        let partition = shard_partition(&ctx.name, shard);
        loop {
            if stop.is_cancelled() {
                return Ok(false);
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match self.iterator(shard, last_seq.as_deref(), has_parent).await {
                    Ok(it) => {
                        failures = 0;
                        it
                    }
                    Err(e @ (SourceError::Fatal(_) | SourceError::Config(_))) => return Err(e),
                    Err(e) => {
                        failures += 1;
                        m.source_errors.with_label_values(&[&ctx.name, "get_shard_iterator"]).inc();
                        tracing::warn!(source = %ctx.name, shard, error = %e, "retrying");
                        if sleep_or_stop(stop, backoff(failures)).await {
                            return Ok(false);
                        }
                        continue;
                    }
                },
            };
            let mut resp = match self.client.get_records().shard_iterator(&it).limit(self.cfg.max_records).send().await
            {
                Ok(r) => {
                    failures = 0;
                    crate::panics::test_point("kinesis-reader");
                    r
                }
                Err(e) => {
                    let code = e.code().unwrap_or_default().to_string();
                    let kind = match code.as_str() {
                        // Iterators live 5 minutes: get a new one from the last position.
                        "ExpiredIteratorException" => "expired_iterator",
                        "ProvisionedThroughputExceededException" => "throttled",
                        "ResourceNotFoundException" => {
                            return Err(SourceError::Fatal(format!(
                                "shard {shard} of {} is gone: {}",
                                self.stream,
                                aws::error_text(&e)
                            )))
                        }
                        _ => "get_records",
                    };
                    m.source_errors.with_label_values(&[&ctx.name, kind]).inc();
                    if kind == "expired_iterator" {
                        continue;
                    }
                    failures += 1;
                    iterator = if kind == "throttled" { Some(it) } else { None };
                    tracing::warn!(source = %ctx.name, shard, error = %aws::error_text(&e), "GetRecords failed; backing off");
                    if sleep_or_stop(stop, backoff(failures)).await {
                        return Ok(false);
                    }
                    continue;
                }
            };
            if let Some(ms) = resp.millis_behind_latest() {
                behind.set(ms as f64 / 1000.0);
            }
            let behind_ms = resp.millis_behind_latest().unwrap_or(0);
            let records = std::mem::take(&mut resp.records);
            let next = resp.next_shard_iterator.take();
            let got_records = !records.is_empty();
            if got_records {
                let now = now_ms();
                let span = batch_span(&ctx.name, shard);
                let units = records.len() as u64;
                let seq = records[records.len() - 1].sequence_number().to_string();
                // Gunzip and parse on the decode pool, not on the runtime's threads.
                let (stream, shard_id, opts) = (self.stream.clone(), shard.to_string(), ctx.decode.clone());
                let decode_span = span.clone();
                let decoded = beat
                    .busy(crate::pipeline::blocking::decode(move || {
                        let mut batch = EventBatch::new(Some(now));
                        decode_span.in_scope(|| {
                            for r in records {
                                let origin = format!("kinesis:{stream}/{shard_id}/{}", r.sequence_number());
                                batch.push_unit(&r.data.into_inner(), origin, &opts);
                            }
                        });
                        batch
                    }))
                    .await;
                let batch = decoded.map_err(|e| SourceError::Fatal(format!("shard {shard}: {e}")))?;
                let trace = finish_batch(span, &ctx.name, shard, units, &batch);
                let sent = beat
                    .busy(ctx.out.send(SourceBatch {
                        source: Arc::clone(&ctx.name),
                        events: batch,
                        checkpoint: Some(Checkpoint { partition: shard.to_string(), position: position(&seq) }),
                        ack: None,
                        trace,
                        partitions: Partitions { default: Some(Arc::clone(&partition)), ..Partitions::default() },
                    }))
                    .await;
                if !sent {
                    return Ok(false);
                }
                last_seq = Some(seq);
            }
            match next {
                None => {
                    // Closed by a reshard and read to the end: record it, so a
                    // restart neither re-reads it nor holds its children back.
                    let sent = beat
                        .busy(ctx.out.send(SourceBatch {
                            source: Arc::clone(&ctx.name),
                            events: EventBatch::new(Some(now_ms())),
                            checkpoint: Some(Checkpoint {
                                partition: shard.to_string(),
                                position: position(SHARD_END),
                            }),
                            ack: None,
                            trace: None,
                            // A closed shard no longer holds the watermark back.
                            partitions: Partitions { close: vec![Arc::clone(&partition)], ..Partitions::default() },
                        }))
                        .await;
                    behind.set(0.0);
                    return Ok(sent);
                }
                Some(n) => iterator = Some(n),
            }
            // 5 GetRecords/s per shard: never faster than poll_interval; an
            // idle shard backs off, one that is behind polls again at once.
            let wait = if !got_records && behind_ms == 0 {
                let w = idle;
                idle = (idle * 2).min(self.cfg.max_idle_poll_interval);
                w
            } else {
                idle = self.cfg.poll_interval;
                self.cfg.poll_interval
            };
            beat.polled(wait);
            if sleep_or_stop(stop, wait).await {
                return Ok(false);
            }
        }
    }
}

/// The watermark partition of a shard.
fn shard_partition(source: &str, shard: &str) -> Arc<str> {
    Arc::from(format!("{source}/{shard}"))
}

/// Sleeps, or returns true when `stop` fires.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// After `failures` failed calls in a row: 100 ms doubling to 10 s, equal jitter.
fn backoff(failures: u32) -> Duration {
    crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).equal_jitter(failures)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A missing stream or shard ends the source (no retry brings it back);
/// any other error of `operation` is retried.
fn fatal_if_not_found<E>(
    e: &aws_sdk_kinesis::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    operation: &'static str,
    what: impl FnOnce() -> String,
) -> SourceError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let message = aws::error_text(e);
    if e.code() == Some("ResourceNotFoundException") {
        SourceError::Fatal(format!("{} not found: {message}", what()))
    } else {
        SourceError::Aws { operation, message }
    }
}
