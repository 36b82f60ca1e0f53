//! The sink itself: batching per route, pacing, flush and close. Routing
//! and delivery (BatchImportFindings with retries) are in [`delivery`], the
//! per-route spool queues and their background drainer in [`drain`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_sdk_securityhub::operation::batch_import_findings::{BatchImportFindingsError, BatchImportFindingsOutput};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::convert;
use super::limiter::TokenBucket;
use super::spool::{Spool, SpoolError};
use super::SecurityHubSinkConfig;
use crate::backoff::Backoff;
use crate::findings::Finding;
use crate::findings::{validate_serialized, ReportTo};
use crate::sinks::dead_letter::DeadLetter;
use crate::sinks::dead_letter::DeadLetterWriter;
use crate::sinks::{observe_delivered, Sink, SinkContext, SinkError};

mod delivery;
mod drain;
#[cfg(test)]
mod tests;

use delivery::*;
use drain::*;

const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
/// First wait of a parked route; it doubles with every failure up to `park_max`.
const PARK_BASE: Duration = Duration::from_millis(500);
/// How often the drainer looks at the spools when nothing wakes it.
const DRAIN_IDLE: Duration = Duration::from_secs(30);
/// Retries of one spooled batch per drain attempt: the route itself is parked between attempts.
const DRAIN_RETRIES: u32 = 1;

/// Account and region a finding is imported into.
type RouteKey = (String, Option<String>);

/// One finding on its way: the ASFF JSON line (what is sent and spooled) and,
/// for fresh findings, the finding itself (for latency metrics).
#[derive(Clone)]
struct Item {
    id: String,
    line: String,
    finding: Option<Arc<Finding>>,
}

struct Metrics {
    sent: IntCounter,
    spooled: IntCounter,
    failed: IntCounter,
    retry_throttled: IntCounter,
    retry_error: IntCounter,
    retry_finding: IntCounter,
    duration: Histogram,
    batch_size: Histogram,
    spool_bytes: IntGauge,
    spool_findings: IntGauge,
    parked: IntGauge,
}

impl Metrics {
    fn new(name: &str) -> Metrics {
        let mm = crate::metrics::get();
        Metrics {
            sent: mm.sink_findings.with_label_values(&[name, "sent"]),
            spooled: mm.sink_findings.with_label_values(&[name, "spooled"]),
            failed: mm.sink_findings.with_label_values(&[name, "failed"]),
            retry_throttled: mm.sink_retries.with_label_values(&[name, "throttled"]),
            retry_error: mm.sink_retries.with_label_values(&[name, "error"]),
            retry_finding: mm.sink_retries.with_label_values(&[name, "failed_finding"]),
            duration: mm.sink_request_duration.with_label_values(&[name]),
            batch_size: mm.sink_batch_size.with_label_values(&[name]),
            spool_bytes: mm.sink_spool_bytes.with_label_values(&[name]),
            spool_findings: mm.sink_spool_findings.with_label_values(&[name]),
            parked: mm.securityhub_routes_parked.with_label_values(&[name]),
        }
    }
}

struct Shared {
    name: String,
    cfg: SecurityHubSinkConfig,
    base: SdkConfig,
    assume_roles: bool,
    routes: tokio::sync::Mutex<HashMap<RouteKey, Arc<Route>>>,
    spool_dir: PathBuf,
    queues: Mutex<HashMap<RouteKey, Arc<Queue>>>,
    dead: Arc<Mutex<DeadLetterWriter>>,
    failing: AtomicBool,
    drain: Notify,
    m: Metrics,
}

/// Findings that could be neither delivered nor spooled (the spool is full).
struct Stuck(RouteKey, Vec<Item>);

pub struct SecurityHubSink {
    shared: Arc<Shared>,
    pending: HashMap<RouteKey, Vec<Item>>,
    oldest_pending: Option<Instant>,
    tasks: JoinSet<Result<(), Stuck>>,
    stuck: Vec<Stuck>,
    drainer: tokio::task::JoinHandle<()>,
}

/// Runs blocking file work (fsyncs) off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl SecurityHubSink {
    pub async fn build(cfg: &SecurityHubSinkConfig, ctx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let mut aws = ctx.aws.with_overrides(cfg.region.as_ref(), cfg.endpoint_url.as_ref());
        // The sink retries itself (backoff, jitter, spool); SDK retries would hide throttling.
        aws.max_attempts = Some(1);
        let base = crate::aws::sdk_config(&aws).await;
        let assume_roles = matches!(ctx.findings.report_to, ReportTo::EventAccount) && cfg.member_role_name.is_some();
        if matches!(ctx.findings.report_to, ReportTo::EventAccount) && cfg.member_role_name.is_none() {
            tracing::info!(
                sink = ctx.name,
                "findings are imported with the service's own credentials: Security Hub accepts only findings of \
                 that account (set member_role_name, or findings.report_to = \"central\", for an organization)"
            );
        }
        let spool_dir = cfg.spool_dir.clone().unwrap_or_else(|| ctx.state_dir.join("spool").join(ctx.name));
        let dead_path: PathBuf =
            cfg.dead_letter.clone().unwrap_or_else(|| ctx.state_dir.join("securityhub-rejected.ndjson"));
        let shared = Shared::open(ctx.name, cfg.clone(), base, assume_roles, spool_dir, &dead_path).await?;
        let (findings, bytes) = shared.spool_depth();
        if findings > 0 {
            tracing::info!(sink = ctx.name, findings, bytes, "findings spooled by an earlier run will be sent first");
        }
        Ok(SecurityHubSink::on(shared))
    }

    /// A sink over `shared`, its spool drainer started.
    fn on(shared: Arc<Shared>) -> SecurityHubSink {
        let drainer = tokio::spawn(drain_loop(shared.clone()));
        SecurityHubSink {
            shared,
            pending: HashMap::new(),
            oldest_pending: None,
            tasks: JoinSet::new(),
            stuck: Vec::new(),
            drainer,
        }
    }

    /// Sends a full or timed-out batch in a task: to Security Hub, or
    /// behind older findings of the same route in its spool while that route
    /// has some waiting or is parked. Other routes are not affected.
    fn dispatch(&mut self, key: RouteKey, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            if shared.must_queue(&key) {
                let r = shared.spool_items(key, items, None).await;
                shared.drain.notify_one();
                return r;
            }
            // Boxed: keeps the task small (the SDK call futures are large in debug builds).
            let d = Box::pin(shared.deliver(&key, items, shared.cfg.max_retries)).await;
            if d.left.is_empty() {
                Ok(())
            } else {
                let r = shared.spool_items(key, d.left, Some(d.refused)).await;
                shared.drain.notify_one();
                r
            }
        });
    }

    fn dispatch_all(&mut self) {
        let pending: Vec<(RouteKey, Vec<Item>)> = self.pending.drain().collect();
        for (key, items) in pending {
            self.dispatch(key, items);
        }
        self.oldest_pending = None;
    }

    /// Buffers one finding; dispatches its batch when full.
    fn push(&mut self, key: RouteKey, item: Item) {
        let batch_size = self.shared.cfg.batch_size.clamp(1, 100);
        let buf = self.pending.entry(key.clone()).or_default();
        buf.push(item);
        if buf.len() >= batch_size {
            let items = std::mem::take(buf);
            self.dispatch(key, items);
        }
        self.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// Sends timed-out batches and bounds the work in flight: the rate
    /// limiters and permits pace the tasks; this bounds the waiting batches.
    async fn pace(&mut self) -> Result<(), SinkError> {
        if self.oldest_pending.is_some_and(|t| t.elapsed() >= self.shared.cfg.batch_timeout) {
            self.dispatch_all();
        }
        while let Some(r) = self.tasks.try_join_next() {
            self.reaped(r)?;
        }
        let max_tasks = self.shared.cfg.concurrency.max(1) * 4;
        while self.tasks.len() >= max_tasks {
            if let Some(r) = self.tasks.join_next().await {
                self.reaped(r)?;
            }
        }
        Ok(())
    }

    /// Findings already written as ASFF JSON, one object per line (what
    /// `trailwatch replay --to-securityhub` produces); they were validated
    /// when they were built. Same batching, pacing, retries and spool as `send`.
    pub async fn send_json_lines(&mut self, lines: Vec<String>) -> Result<(), SinkError> {
        self.unstick().await?;
        for line in lines {
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.shared.reject("?", "Unreadable", &format!("not a JSON finding: {e}"), &line);
                    continue;
                }
            };
            let id = v.get("Id").and_then(|x| x.as_str()).unwrap_or_default().to_string();
            self.push(convert::route_of(&v), Item { id, line, finding: None });
        }
        self.pace().await
    }

    /// Findings delivered, dead-lettered and spooled by this sink so far (this process).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.shared.m.sent.get(), self.shared.m.failed.get(), self.shared.m.spooled.get())
    }

    fn reaped(&mut self, r: Result<Result<(), Stuck>, tokio::task::JoinError>) -> Result<(), SinkError> {
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(s)) => {
                self.stuck.push(s);
                Ok(())
            }
            Err(e) => Err(SinkError::Unavailable(format!("a securityhub delivery task failed: {e}"))),
        }
    }

    /// Tries again to spool what the full spool refused; Err while some is still stuck.
    async fn unstick(&mut self) -> Result<(), SinkError> {
        let stuck = std::mem::take(&mut self.stuck);
        for Stuck(key, items) in stuck {
            if let Err(s) = self.shared.spool_items(key, items, None).await {
                self.stuck.push(s);
            }
        }
        self.shared.drain.notify_one();
        if self.stuck.is_empty() {
            Ok(())
        } else {
            let n: usize = self.stuck.iter().map(|s| s.1.len()).sum();
            Err(SinkError::Unavailable(format!(
                "{n} findings can be neither delivered to Security Hub nor spooled (the spool is full)"
            )))
        }
    }
}

#[async_trait]
impl Sink for SecurityHubSink {
    async fn send(&mut self, findings: &[Arc<Finding>]) -> Result<(), SinkError> {
        // Push back (before taking anything) while findings are stuck.
        self.unstick().await?;
        for f in findings {
            let line = f.json.clone();
            if let Err(v) = validate_serialized(&f.asff, line.len()) {
                let reason: Vec<String> = v.iter().map(ToString::to_string).collect();
                self.shared.reject(&f.asff.id, "InvalidFinding", &reason.join("; "), &line);
                continue;
            }
            let key = route_key(&f.asff.aws_account_id, &f.asff.product_arn);
            self.push(key, Item { id: f.asff.id.clone(), line, finding: Some(f.clone()) });
        }
        self.pace().await
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.dispatch_all();
        while let Some(r) = self.tasks.join_next().await {
            self.reaped(r)?;
        }
        self.unstick().await?;
        let dead = self.shared.dead.clone();
        blocking(move || {
            let mut dead = dead.lock().unwrap_or_else(|p| p.into_inner());
            dead.sync().map_err(|error| SinkError::Io {
                context: format!("cannot write the dead-letter file {}", dead.path().display()),
                error,
            })
        })
        .await?;
        // A spool that does not outlive the task must not let checkpoints
        // move past its findings: hold the commit until they are delivered.
        let (findings, _) = self.shared.spool_depth();
        if !self.shared.cfg.spool_durable && findings > 0 {
            self.shared.drain.notify_one();
            return Err(SinkError::Unavailable(format!(
                "{findings} findings wait in a spool that is not durable (spool_durable = false); \
                 the commit waits until Security Hub takes them"
            )));
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let r = self.flush().await;
        self.drainer.abort();
        r
    }

    fn healthy(&self) -> bool {
        !self.shared.failing.load(Ordering::Relaxed)
    }
}

impl Drop for SecurityHubSink {
    fn drop(&mut self) {
        self.drainer.abort();
    }
}

impl Shared {
    async fn open(
        name: &str,
        cfg: SecurityHubSinkConfig,
        base: SdkConfig,
        assume_roles: bool,
        spool_dir: PathBuf,
        dead_path: &Path,
    ) -> Result<Arc<Shared>, SinkError> {
        let root = spool_dir.clone();
        let spools = blocking(move || open_queues(&root)).await.map_err(|error| SinkError::Io {
            context: format!("cannot open the spool {}", spool_dir.display()),
            error,
        })?;
        let queues = spools
            .into_iter()
            .map(|(key, spool)| {
                let st = QueueState { findings: spool.findings(), bytes: spool.bytes(), ..Default::default() };
                let q = Queue { key: key.clone(), spool: Arc::new(Mutex::new(spool)), st: Mutex::new(st) };
                (key, Arc::new(q))
            })
            .collect();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            cfg,
            base,
            assume_roles,
            routes: tokio::sync::Mutex::new(HashMap::new()),
            spool_dir,
            queues: Mutex::new(queues),
            dead: Arc::new(Mutex::new(DeadLetterWriter::new(dead_path, false))),
            failing: AtomicBool::new(false),
            drain: Notify::new(),
            m: Metrics::new(name),
        });
        shared.publish();
        Ok(shared)
    }

    /// Spool gauges, parked routes and health from the queues' state.
    fn publish(&self) {
        let (mut findings, mut bytes, mut parked) = (0u64, 0u64, 0i64);
        for q in self.queue_list() {
            let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            findings += st.findings;
            bytes += st.bytes;
            // Parked: failing, with findings waiting for it.
            if st.failures > 0 && st.findings > 0 {
                parked += 1;
            }
        }
        self.m.spool_findings.set(findings as i64);
        self.m.spool_bytes.set(bytes as i64);
        self.m.parked.set(parked);
        self.failing.store(parked > 0, Ordering::Relaxed);
    }

    /// A finding Security Hub will never take: logged, counted, dead-lettered.
    fn reject(&self, id: &str, code: &str, reason: &str, line: &str) {
        tracing::warn!(sink = %self.name, finding = id, "finding rejected ({code}): {reason}");
        self.dead_letter("securityhub_rejected", format!("{id}: {code}: {reason}"), line);
    }

    /// Counts and writes one dead letter (buffered; synced at the next flush
    /// or drained segment, off the runtime's threads).
    fn dead_letter(&self, kind: &'static str, error: String, line: &str) {
        self.m.failed.inc();
        let d = DeadLetter {
            origin: format!("sink:{}", self.name),
            position: Default::default(),
            kind,
            error,
            raw: Some(line.to_string()),
        };
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = dead.write(&d) {
            tracing::error!(sink = %self.name, "cannot write the dead-letter file {}: {e}", dead.path().display());
        }
    }

    async fn sync_dead(&self) {
        let dead = self.dead.clone();
        let r = blocking(move || dead.lock().unwrap_or_else(|p| p.into_inner()).sync()).await;
        if let Err(e) = r {
            tracing::error!(sink = %self.name, "cannot sync the dead-letter file: {e}");
        }
    }
}
