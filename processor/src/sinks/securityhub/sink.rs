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

/// One client, rate limiter and concurrency limit per account and region.
struct Route {
    client: aws_sdk_securityhub::Client,
    limiter: TokenBucket,
    permits: Semaphore,
}

/// One route's spool queue: its own segment files, so a route that keeps
/// failing holds back only its own findings, never another route's.
struct Queue {
    key: RouteKey,
    /// Only used inside `spawn_blocking` (every write is fsynced).
    spool: Arc<Mutex<Spool>>,
    st: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Mirror of the spool's depth, readable without waiting for file work.
    findings: u64,
    bytes: u64,
    /// Consecutive failed attempts (any kind); the route is parked until
    /// `parked_until`, doubling from PARK_BASE up to `park_max`.
    failures: u32,
    parked_until: Option<Instant>,
    /// Consecutive attempts refused for good (not transient, not invalid input).
    refusals: u32,
}

/// How a BatchImportFindings call failed.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Throttling, 5xx, timeouts, connection errors: try again later.
    Transient,
    /// InvalidInputException: one finding of the batch is bad.
    Invalid,
    /// Access denied, failed AssumeRole, unknown region, …: a set-up problem
    /// that retrying will not fix soon.
    Refused,
}

fn failure_of(e: &SdkError<BatchImportFindingsError, HttpResponse>) -> Failure {
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Failure::Transient,
        // Credentials (AssumeRole) are resolved before the request is sent:
        // their errors are dispatch failures that are neither I/O nor timeouts.
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Failure::Transient,
        SdkError::ServiceError(_) if e.code() == Some("InvalidInputException") => Failure::Invalid,
        SdkError::ServiceError(_) if crate::aws::is_retryable(e) => Failure::Transient,
        _ => Failure::Refused,
    }
}

/// What [`Shared::deliver`] could not deliver, and why.
#[derive(Default)]
struct Delivery {
    left: Vec<Item>,
    /// Set when the route refused the call (not transient): the reason.
    refused: Option<String>,
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

/// A route's spool directory: `<spool_dir>/<account>_<region>`, with
/// anything but letters, digits and `-` replaced.
fn queue_dir(root: &Path, key: &RouteKey) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    };
    let account = if key.0.is_empty() { "none".to_string() } else { clean(&key.0) };
    let region = key.1.as_deref().map_or_else(|| "default".to_string(), clean);
    root.join(format!("{account}_{region}"))
}

/// Opens every route's spool under `root` (their route is read from their
/// findings) and moves findings an older version spooled directly in `root`
/// (one queue for every route) into their routes' queues.
fn open_queues(root: &Path) -> std::io::Result<HashMap<RouteKey, Spool>> {
    std::fs::create_dir_all(root)?;
    let mut out: HashMap<RouteKey, Spool> = HashMap::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let spool = Spool::open(&entry.path(), u64::MAX)?;
        let key = match spool.oldest() {
            Ok(Some((_, lines))) => {
                lines.first().and_then(|l| serde_json::from_str(l).ok()).map(|v| convert::route_of(&v))
            }
            _ => None,
        };
        match key {
            Some(key) => {
                out.insert(key, spool);
            }
            None if spool.is_empty() => {
                // An empty queue of an earlier run: reopened when its route comes back.
                let _ = std::fs::remove_dir(entry.path());
            }
            None => tracing::warn!(dir = %entry.path().display(), "spool queue with unreadable findings left alone"),
        }
    }
    let mut legacy = Spool::open(root, u64::MAX)?;
    while let Some((seq, lines)) = legacy.oldest().map_err(std::io::Error::other)? {
        let mut groups: HashMap<RouteKey, Vec<String>> = HashMap::new();
        for line in lines {
            let key = serde_json::from_str(&line).map(|v| convert::route_of(&v)).unwrap_or_default();
            groups.entry(key).or_default().push(line);
        }
        for (key, lines) in groups {
            let spool = match out.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Spool::open(&queue_dir(root, &key), u64::MAX)?)
                }
            };
            spool.append(&lines).map_err(std::io::Error::other)?;
        }
        legacy.remove(seq).map_err(std::io::Error::other)?;
    }
    Ok(out)
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
        let drainer = tokio::spawn(drain_loop(shared.clone()));
        Ok(SecurityHubSink {
            shared,
            pending: HashMap::new(),
            oldest_pending: None,
            tasks: JoinSet::new(),
            stuck: Vec::new(),
            drainer,
        })
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

fn route_key(account: &str, product_arn: &str) -> RouteKey {
    let region = product_arn.split(':').nth(3).filter(|r| !r.is_empty()).map(str::to_string);
    (account.to_string(), region)
}

/// How each finding of a BatchImportFindings answer fared.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    /// Indexes into the batch.
    delivered: Vec<usize>,
    /// Failed transiently: send again.
    retry: Vec<usize>,
    /// Failed for good: index, error code, message.
    rejected: Vec<(usize, String, String)>,
}

/// Per-finding error codes worth another try; anything else (invalid
/// input, access denied for that ProductArn/account) is permanent.
fn transient_code(code: &str) -> bool {
    crate::aws::is_throttling_code(code)
        || matches!(code, "InternalException" | "InternalServerError" | "ServiceUnavailableException")
}

fn classify(ids: &[&str], out: &BatchImportFindingsOutput) -> Answer {
    let mut failed: HashMap<&str, (&str, &str)> = HashMap::new();
    for e in out.failed_findings() {
        if let Some(id) = e.id() {
            failed.insert(id, (e.error_code().unwrap_or("Unknown"), e.error_message().unwrap_or("")));
        }
    }
    let mut a = Answer::default();
    for (i, id) in ids.iter().enumerate() {
        match failed.get(id) {
            None => a.delivered.push(i),
            Some((code, _)) if transient_code(code) => a.retry.push(i),
            Some((code, msg)) => a.rejected.push((i, code.to_string(), msg.to_string())),
        }
    }
    a
}

/// How long a route that failed `failures` times in a row waits.
fn park_for(failures: u32, max: Duration) -> Duration {
    PARK_BASE.saturating_mul(1u32.checked_shl(failures.saturating_sub(1).min(30)).unwrap_or(u32::MAX)).min(max)
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

    fn queue_list(&self) -> Vec<Arc<Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Findings and bytes in every route's spool.
    fn spool_depth(&self) -> (u64, u64) {
        self.queue_list().iter().fold((0, 0), |(f, b), q| {
            let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            (f + st.findings, b + st.bytes)
        })
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

    /// Whether a fresh batch of `key` must wait in its route's spool: older
    /// findings of that route wait there, or the route is parked.
    fn must_queue(&self, key: &RouteKey) -> bool {
        let q = self.queues.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned();
        q.is_some_and(|q| {
            let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            st.findings > 0 || st.parked_until.is_some_and(|t| t > Instant::now())
        })
    }

    async fn queue(&self, key: &RouteKey) -> std::io::Result<Arc<Queue>> {
        if let Some(q) = self.queues.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(q.clone());
        }
        let dir = queue_dir(&self.spool_dir, key);
        let spool = blocking(move || Spool::open(&dir, u64::MAX)).await?;
        let st = QueueState { findings: spool.findings(), bytes: spool.bytes(), ..Default::default() };
        let q = Arc::new(Queue { key: key.clone(), spool: Arc::new(Mutex::new(spool)), st: Mutex::new(st) });
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        Ok(queues.entry(key.clone()).or_insert(q).clone())
    }

    /// A failed attempt of `q`'s route: park it; `refused` counts towards dead-lettering.
    /// Returns the refusals in a row.
    fn failed(&self, q: &Queue, refused: bool) -> u32 {
        let refusals = {
            let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            st.failures = st.failures.saturating_add(1);
            st.parked_until = Some(Instant::now() + park_for(st.failures, self.cfg.park_max));
            st.refusals = if refused { st.refusals.saturating_add(1) } else { 0 };
            st.refusals
        };
        self.publish();
        refusals
    }

    fn succeeded(&self, q: &Queue) {
        {
            let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            st.failures = 0;
            st.refusals = 0;
            st.parked_until = None;
        }
        self.publish();
    }

    /// Writes `items` as a new segment of their route's spool (off the
    /// runtime's threads). `attempt` is the failed attempt that left them
    /// (its refusal reason, if refused), None when they only queue behind
    /// older findings. A route refused `max_refused_attempts` times in a row
    /// dead-letters them instead.
    async fn spool_items(&self, key: RouteKey, items: Vec<Item>, attempt: Option<Option<String>>) -> Result<(), Stuck> {
        let q = match self.queue(&key).await {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(sink = %self.name, "cannot open the spool of {key:?}: {e}");
                return Err(Stuck(key, items));
            }
        };
        if let Some(refused) = attempt {
            let refusals = self.failed(&q, refused.is_some());
            if let Some(reason) = refused {
                if refusals >= self.cfg.max_refused_attempts {
                    self.dead_letter_refused(&key, &items, &reason, refusals);
                    return Ok(());
                }
            }
        }
        let size: u64 = items.iter().map(|i| i.line.len() as u64 + 1).sum();
        let (_, total) = self.spool_depth();
        let route_empty = q.st.lock().unwrap_or_else(|p| p.into_inner()).findings == 0;
        // One segment may always go into an empty route queue, so a batch
        // larger than the limit cannot wedge the route forever.
        if !route_empty && total + size > self.cfg.spool_max_bytes {
            tracing::warn!(
                sink = %self.name,
                "{}",
                SpoolError::Full {
                    dir: self.spool_dir.display().to_string(),
                    bytes: total,
                    max: self.cfg.spool_max_bytes
                }
            );
            return Err(Stuck(key, items));
        }
        let lines: Vec<String> = items.iter().map(|i| i.line.clone()).collect();
        let spool = q.spool.clone();
        let r = blocking(move || {
            let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
            s.append(&lines).map(|_| (s.findings(), s.bytes()))
        })
        .await;
        match r {
            Ok((findings, bytes)) => {
                {
                    let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                    st.findings = findings;
                    st.bytes = bytes;
                }
                self.publish();
                self.m.spooled.inc_by(items.len() as u64);
                tracing::warn!(
                    sink = %self.name, account = %key.0, region = ?key.1, findings = items.len(),
                    "Security Hub did not take the findings of this route: spooled"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(sink = %self.name, "{e}");
                Err(Stuck(key, items))
            }
        }
    }

    fn dead_letter_refused(&self, key: &RouteKey, items: &[Item], reason: &str, refusals: u32) {
        tracing::error!(
            sink = %self.name, account = %key.0, region = ?key.1, findings = items.len(),
            "route refused {refusals} times in a row: findings dead-lettered ({reason})"
        );
        for i in items {
            self.dead_letter(
                "securityhub_refused",
                format!(
                    "{}: {reason} (route {}/{} refused {refusals} times in a row)",
                    i.id,
                    key.0,
                    key.1.as_deref().unwrap_or("-")
                ),
                &i.line,
            );
        }
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

    async fn route(&self, key: &RouteKey) -> Arc<Route> {
        let mut routes = self.routes.lock().await;
        if let Some(r) = routes.get(key) {
            return r.clone();
        }
        let mut b = aws_sdk_securityhub::config::Builder::from(&self.base);
        if let Some(region) = &key.1 {
            b = b.region(Region::new(region.clone()));
        }
        if self.assume_roles {
            let role = self.cfg.member_role_name.as_deref().unwrap_or_default();
            let arn = format!("arn:aws:iam::{}:role/{role}", key.0);
            let mut p = AssumeRoleProvider::builder(arn).session_name("trailwatch-securityhub").configure(&self.base);
            if let Some(x) = &self.cfg.external_id {
                p = p.external_id(x);
            }
            // The client's identity cache keeps the credentials and refreshes them before they expire.
            b = b.credentials_provider(p.build().await);
        }
        let route = Arc::new(Route {
            client: aws_sdk_securityhub::Client::from_conf(b.build()),
            limiter: TokenBucket::new(self.cfg.requests_per_second, self.cfg.burst),
            permits: Semaphore::new(self.cfg.concurrency.max(1)),
        });
        routes.insert(key.clone(), route.clone());
        route
    }

    /// Delivers `items` (at most one batch) with retries; returns what is
    /// still undelivered (to be spooled) and, if the route refused the call,
    /// why. Rejected findings are dead-lettered.
    async fn deliver(&self, key: &RouteKey, items: Vec<Item>, max_retries: u32) -> Delivery {
        let route = self.route(key).await;
        let mut work = vec![items];
        let mut out = Delivery::default();
        while let Some(mut batch) = work.pop() {
            let mut attempt = 0;
            loop {
                let findings = batch
                    .iter()
                    .map(|i| convert::to_sdk(&serde_json::from_str(&i.line).unwrap_or_default()))
                    .collect::<Vec<_>>();
                let result = {
                    let _permit = route.permits.acquire().await.expect("never closed");
                    route.limiter.acquire().await;
                    let t = Instant::now();
                    self.m.batch_size.observe(batch.len() as f64);
                    let r = route.client.batch_import_findings().set_findings(Some(findings)).send().await;
                    self.m.duration.observe(t.elapsed().as_secs_f64());
                    r
                };
                match result {
                    Ok(out) => {
                        let ids: Vec<&str> = batch.iter().map(|i| i.id.as_str()).collect();
                        let a = classify(&ids, &out);
                        self.m.sent.inc_by(a.delivered.len() as u64);
                        let done: Vec<Arc<Finding>> =
                            a.delivered.iter().filter_map(|&i| batch[i].finding.clone()).collect();
                        observe_delivered(&done);
                        for (i, code, msg) in &a.rejected {
                            self.reject(&batch[*i].id, code, msg, &batch[*i].line);
                        }
                        if a.retry.is_empty() {
                            break;
                        }
                        self.m.retry_finding.inc_by(a.retry.len() as u64);
                        batch = a.retry.iter().map(|&i| batch[i].clone()).collect();
                    }
                    Err(e) => match failure_of(&e) {
                        Failure::Transient => {
                            let throttled = e.code().is_some_and(crate::aws::is_throttling_code)
                                || e.raw_response().is_some_and(|r| r.status().as_u16() == 429);
                            if throttled {
                                self.m.retry_throttled.inc();
                            } else {
                                self.m.retry_error.inc();
                            }
                            tracing::debug!(sink = %self.name, attempt, "BatchImportFindings failed: {}", crate::aws::error_text(&e));
                        }
                        Failure::Invalid => {
                            // One bad finding fails the whole call: halve until it is found.
                            if batch.len() > 1 {
                                let second = batch.split_off(batch.len() / 2);
                                work.push(second);
                                work.push(batch);
                            } else {
                                let msg = e.message().unwrap_or("invalid input").to_string();
                                self.reject(&batch[0].id, "InvalidInputException", &msg, &batch[0].line);
                            }
                            break;
                        }
                        Failure::Refused => {
                            // Access denied, failed AssumeRole, unknown region, …: a set-up
                            // problem, not the findings' fault. Retrying now will not help:
                            // the route is parked and, if it stays refused, dead-lettered.
                            let reason = crate::aws::error_text(&e);
                            tracing::error!(
                                sink = %self.name, account = %key.0, region = ?key.1,
                                "BatchImportFindings refused: {reason}"
                            );
                            out.left.extend(batch);
                            for rest in work.drain(..) {
                                out.left.extend(rest);
                            }
                            out.refused = Some(reason);
                            break;
                        }
                    },
                }
                attempt += 1;
                if attempt > max_retries {
                    out.left.extend(batch);
                    break;
                }
                tokio::time::sleep(RETRY.full_jitter(attempt - 1)).await;
            }
        }
        out
    }

    /// Sends `q`'s spooled segments, oldest first, until the spool is empty
    /// or the route fails (then it is parked). A route refused
    /// `max_refused_attempts` times in a row dead-letters each segment after
    /// one more try.
    async fn drain_queue(&self, q: &Queue) {
        loop {
            let spool = q.spool.clone();
            let oldest = blocking(move || spool.lock().unwrap_or_else(|p| p.into_inner()).oldest()).await;
            let (seq, lines) = match oldest {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(sink = %self.name, "{e}");
                    self.failed(q, false);
                    return;
                }
            };
            let mut items = Vec::with_capacity(lines.len());
            for line in lines {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        let id = v.get("Id").and_then(|x| x.as_str()).unwrap_or_default().to_string();
                        items.push(Item { id, line, finding: None });
                    }
                    Err(e) => self.reject("?", "Unreadable", &format!("spooled line is not JSON: {e}"), &line),
                }
            }
            let batch_size = self.cfg.batch_size.clamp(1, 100);
            let mut left: Vec<Item> = Vec::new();
            let mut refused = None;
            let mut chunks = items.chunks(batch_size);
            for chunk in chunks.by_ref() {
                let d = Box::pin(self.deliver(&q.key, chunk.to_vec(), DRAIN_RETRIES)).await;
                if !d.left.is_empty() {
                    left = d.left;
                    refused = d.refused;
                    break;
                }
            }
            if !left.is_empty() {
                left.extend(chunks.flatten().cloned());
                let refusals = self.failed(q, refused.is_some());
                match refused {
                    Some(reason) if refusals >= self.cfg.max_refused_attempts => {
                        self.dead_letter_refused(&q.key, &left, &reason, refusals);
                    }
                    _ => return,
                }
            } else {
                self.succeeded(q);
            }
            // Delivered or dead-lettered: the dead letters are on disk before the segment goes.
            self.sync_dead().await;
            let spool = q.spool.clone();
            let removed = blocking(move || {
                let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
                s.remove(seq).map(|()| (s.findings(), s.bytes()))
            })
            .await;
            match removed {
                Ok((findings, bytes)) => {
                    let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                    st.findings = findings;
                    st.bytes = bytes;
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, "{e}");
                    return;
                }
            }
            self.publish();
        }
    }

    /// Drains every route that has spooled findings and is not parked, each
    /// in its own task; returns when all of them are done or parked.
    async fn drain_ready(self: &Arc<Self>) {
        let now = Instant::now();
        let ready: Vec<Arc<Queue>> = self
            .queue_list()
            .into_iter()
            .filter(|q| {
                let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                st.findings > 0 && st.parked_until.is_none_or(|t| t <= now)
            })
            .collect();
        let mut set = JoinSet::new();
        for q in ready {
            let me = self.clone();
            set.spawn(async move { Box::pin(me.drain_queue(&q)).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// When the drainer should look again: the end of the earliest parking of
    /// a route with spooled findings.
    fn next_drain(&self) -> Duration {
        let now = Instant::now();
        self.queue_list()
            .iter()
            .filter_map(|q| {
                let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                (st.findings > 0).then(|| st.parked_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now)))
            })
            .min()
            .unwrap_or(DRAIN_IDLE)
    }
}

/// Drains the spools in the background, each route oldest segment first,
/// parking routes that keep failing. Runs even when no input arrives.
async fn drain_loop(shared: Arc<Shared>) {
    loop {
        let wait = shared.next_drain();
        if !wait.is_zero() {
            tokio::select! {
                _ = shared.drain.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        shared.drain_ready().await;
        // A route whose spool could not even be read is parked too: no busy loop.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_securityhub::config::{Credentials, SharedCredentialsProvider};
    use aws_sdk_securityhub::types::ImportFindingsError;
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Requests = Arc<Mutex<Vec<Vec<String>>>>;
    type Regions = Arc<Mutex<Vec<String>>>;

    /// A fake Security Hub endpoint: answers request n with `script[n]`
    /// (status, error type, body) and records the Ids each request carried.
    async fn fake(script: Vec<(u16, &'static str, &'static str)>) -> (String, Requests) {
        let (endpoint, seen, _) = fake_full(script, None).await;
        (endpoint, seen)
    }

    /// A fake that accepts everything except calls signed for `refuse`
    /// (answered 403 AccessDeniedException, as for a region the import role
    /// may not use); also records each call's region.
    async fn fake_refusing(refuse: Option<&'static str>) -> (String, Requests, Regions) {
        fake_full(vec![OK; 1000], refuse).await
    }

    async fn fake_full(
        script: Vec<(u16, &'static str, &'static str)>,
        refuse: Option<&'static str>,
    ) -> (String, Requests, Regions) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen: Requests = Arc::default();
        let seen2 = seen.clone();
        let regions: Regions = Arc::default();
        let regions2 = regions.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let script = script.clone();
                let seen = seen2.clone();
                let regions = regions2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            let mut chunk = [0u8; 8192];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 8192];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: serde_json::Value =
                            serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
                        buf.drain(..head_end + len);
                        let ids: Vec<String> = body["Findings"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|f| f["Id"].as_str().map(str::to_string))
                            .collect();
                        seen.lock().unwrap().push(ids);
                        // The region is in the SigV4 credential scope: Credential=KEY/DATE/REGION/securityhub/...
                        let region = head
                            .lines()
                            .find_map(|l| l.strip_prefix("authorization:"))
                            .and_then(|a| a.split("credential=").nth(1))
                            .and_then(|c| c.split('/').nth(2))
                            .unwrap_or_default()
                            .to_string();
                        regions.lock().unwrap().push(region.clone());
                        let (status, kind, text) = if refuse == Some(region.as_str()) {
                            (
                                403,
                                "AccessDeniedException",
                                r#"{"Message":"not authorized to perform securityhub:BatchImportFindings in this region"}"#,
                            )
                        } else {
                            script.lock().unwrap().pop_front().unwrap_or((500, "", "{}"))
                        };
                        let mut resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                            text.len()
                        );
                        if !kind.is_empty() {
                            resp.push_str(&format!("x-amzn-errortype: {kind}\r\n"));
                        }
                        resp.push_str("\r\n");
                        resp.push_str(text);
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), seen, regions)
    }

    const OK: (u16, &str, &str) = (200, "", r#"{"FailedCount":0,"SuccessCount":1,"FailedFindings":[]}"#);
    const DOWN: (u16, &str, &str) = (503, "ServiceUnavailableException", r#"{"message":"down"}"#);
    const INVALID: (u16, &str, &str) = (400, "InvalidInputException", r#"{"Message":"invalid finding"}"#);

    async fn shared_for(endpoint: &str, dir: &std::path::Path, name: &str, max_retries: u32) -> Arc<Shared> {
        let cfg = SecurityHubSinkConfig { max_retries, ..Default::default() };
        shared_with(endpoint, dir, name, cfg).await
    }

    async fn shared_with(endpoint: &str, dir: &std::path::Path, name: &str, cfg: SecurityHubSinkConfig) -> Arc<Shared> {
        let aws = crate::aws::AwsConfig {
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint.into()),
            max_attempts: Some(1),
            ..Default::default()
        };
        let base = crate::aws::sdk_config(&aws)
            .await
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("k", "s", None, None, "test")))
            .build();
        Shared::open(name, cfg, base, false, dir.join("spool"), &dir.join("rejected.ndjson")).await.unwrap()
    }

    fn items(ids: &[&str]) -> Vec<Item> {
        ids.iter()
            .map(|id| Item {
                id: id.to_string(),
                line: serde_json::json!({"Id": id, "AwsAccountId": "111122223333",
                    "ProductArn": "arn:aws:securityhub:us-east-1:111122223333:product/111122223333/default",
                    "Resources": [{"Type": "Other", "Id": "x"}]})
                .to_string(),
                finding: None,
            })
            .collect()
    }

    fn key() -> RouteKey {
        ("111122223333".into(), Some("us-east-1".into()))
    }

    fn rejected(dir: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("rejected.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn failed_findings_are_retried_or_dead_lettered_without_holding_the_rest() {
        let partial = r#"{"FailedCount":2,"SuccessCount":1,"FailedFindings":[
            {"Id":"b","ErrorCode":"ThrottlingException","ErrorMessage":"slow down"},
            {"Id":"c","ErrorCode":"InvalidInput","ErrorMessage":"Finding size exceeded 240 KB"}]}"#;
        let (endpoint, seen) = fake(vec![DOWN, (200, "", partial), OK]).await;
        let dir = tempfile::tempdir().unwrap();
        let sh = shared_for(&endpoint, dir.path(), "unit_partial", 3).await;
        let left = sh.deliver(&key(), items(&["a", "b", "c"]), 3).await.left;
        assert!(left.is_empty(), "everything delivered or dead-lettered");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, [vec!["a", "b", "c"], vec!["a", "b", "c"], vec!["b"]], "503 retried whole, then only b");
        sh.dead.lock().unwrap().sync().unwrap();
        let dead = rejected(dir.path());
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0]["kind"], "securityhub_rejected");
        assert!(dead[0]["error"].as_str().unwrap().starts_with("c: InvalidInput: Finding size exceeded"), "{dead:?}");
        assert!(dead[0]["raw"].as_str().unwrap().contains("\"Id\":\"c\""));
        assert_eq!(sh.m.sent.get(), 2);
        assert_eq!(sh.m.failed.get(), 1);
        assert_eq!(sh.m.retry_error.get(), 1);
        assert_eq!(sh.m.retry_finding.get(), 1);
        assert_eq!(sh.m.batch_size.get_sample_count(), 3);
    }

    #[tokio::test]
    async fn a_call_refused_as_invalid_is_halved_until_the_bad_finding_is_found() {
        let (endpoint, seen) = fake(vec![INVALID, OK, INVALID, OK, INVALID]).await;
        let dir = tempfile::tempdir().unwrap();
        let sh = shared_for(&endpoint, dir.path(), "unit_bisect", 3).await;
        let left = sh.deliver(&key(), items(&["a", "b", "c", "d"]), 3).await.left;
        assert!(left.is_empty());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, [vec!["a", "b", "c", "d"], vec!["a", "b"], vec!["c", "d"], vec!["c"], vec!["d"]]);
        sh.dead.lock().unwrap().sync().unwrap();
        let dead = rejected(dir.path());
        assert_eq!(dead.len(), 1);
        assert!(dead[0]["error"].as_str().unwrap().starts_with("d: InvalidInputException"), "{dead:?}");
        assert_eq!(sh.m.sent.get(), 3);
    }

    #[tokio::test]
    async fn an_unreachable_service_leaves_the_batch_for_the_spool_after_the_retries() {
        let (endpoint, seen) = fake(vec![DOWN, DOWN, DOWN]).await;
        let dir = tempfile::tempdir().unwrap();
        let sh = shared_for(&endpoint, dir.path(), "unit_down", 1).await;
        let d = sh.deliver(&key(), items(&["a", "b"]), 1).await;
        assert_eq!(d.left.len(), 2, "nothing dropped");
        assert!(d.refused.is_none(), "a 503 is transient, not a refusal");
        assert_eq!(seen.lock().unwrap().len(), 2, "one try and one retry");
        assert!(sh.spool_items(key(), d.left, Some(None)).await.is_ok());
        assert_eq!(sh.spool_depth().0, 2);
        assert!(sh.failing.load(Ordering::Relaxed), "the route is parked");
        assert_eq!(sh.m.parked.get(), 1);
        // Back up: the drainer's step delivers the spooled segment and deletes it.
        let (endpoint, _) = fake(vec![OK]).await;
        let sh2 = shared_for(&endpoint, dir.path(), "unit_down_after", 1).await;
        assert_eq!(sh2.spool_depth().0, 2, "the spool survived (reopened)");
        sh2.drain_ready().await;
        assert_eq!(sh2.spool_depth().0, 0);
        assert_eq!(sh2.m.sent.get(), 2);
        assert_eq!(sh2.m.parked.get(), 0);
    }

    fn line(id: &str, region: &str) -> Vec<String> {
        vec![serde_json::json!({"Id": id, "AwsAccountId": "111122223333",
            "ProductArn": format!("arn:aws:securityhub:{region}:111122223333:product/111122223333/default"),
            "Resources": [{"Type": "Other", "Id": "x"}]})
        .to_string()]
    }

    fn sink_on(shared: Arc<Shared>) -> SecurityHubSink {
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

    /// Waits (bounded) until `done` holds.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gave up waiting: {what}");
    }

    /// The wedge of issue 15: one eu-west-1 finding refused (AccessDenied),
    /// then 4 healthy us-east-1 findings. Before per-route queues they were
    /// spooled behind the refused one and never sent.
    #[tokio::test]
    async fn a_refused_route_neither_blocks_the_others_nor_is_retried_forever() {
        let (endpoint, seen, regions) = fake_refusing(Some("eu-west-1")).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = SecurityHubSinkConfig {
            max_retries: 1,
            max_refused_attempts: 3,
            park_max: Duration::from_millis(200),
            ..Default::default()
        };
        let sh = shared_with(&endpoint, dir.path(), "unit_wedge", cfg).await;
        let mut sink = sink_on(sh.clone());
        sink.send_json_lines(line("eu-1", "eu-west-1")).await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(sh.spool_depth().0, 1, "the refused finding is spooled, not lost");
        assert_eq!(sh.m.parked.get(), 1, "its route is parked");
        let us: Vec<String> = (1..=4).flat_map(|i| line(&format!("us-{i}"), "us-east-1")).collect();
        sink.send_json_lines(us).await.unwrap();
        sink.flush().await.unwrap();
        let sent_us = || {
            let seen = seen.lock().unwrap();
            let regions = regions.lock().unwrap();
            seen.iter().zip(regions.iter()).filter(|(_, r)| *r == "us-east-1").map(|(ids, _)| ids.len()).sum::<usize>()
        };
        assert_eq!(sent_us(), 4, "the healthy route's findings went out at once, not behind the refused one");
        assert_eq!(sh.m.sent.get(), 4);
        // The refused route is retried a bounded number of times, then dead-lettered with the reason.
        until("the refused finding is dead-lettered", || rejected(dir.path()).len() == 1).await;
        until("the spool is empty", || sh.spool_depth().0 == 0).await;
        let eu_calls = regions.lock().unwrap().iter().filter(|r| *r == "eu-west-1").count();
        assert_eq!(eu_calls, 3, "max_refused_attempts calls, no more");
        let dead = rejected(dir.path());
        assert_eq!(dead[0]["kind"], "securityhub_refused");
        let why = dead[0]["error"].as_str().unwrap();
        assert!(why.starts_with("eu-1: ") && why.contains("AccessDenied") && why.contains("3 times"), "{why}");
        assert!(dead[0]["raw"].as_str().unwrap().contains("\"Id\":\"eu-1\""));
        assert_eq!(sh.m.failed.get(), 1);
        assert_eq!(sh.m.parked.get(), 0, "nothing waits any more");
        // Another refusal after that: the route is still refused, so the finding
        // gets one more try and is dead-lettered, not spooled.
        sink.send_json_lines(line("eu-2", "eu-west-1")).await.unwrap();
        sink.flush().await.unwrap();
        until("eu-2 dead-lettered", || rejected(dir.path()).len() == 2).await;
        assert_eq!(regions.lock().unwrap().iter().filter(|r| *r == "eu-west-1").count(), 4);
        sink.close().await.unwrap();
    }

    /// With `spool_durable = false` a flush (and so the commit) fails while
    /// findings wait in the spool, and succeeds once they are delivered;
    /// with the default (durable) it succeeds as soon as they are spooled.
    #[tokio::test]
    async fn a_spool_that_is_not_durable_holds_the_commit_until_delivery() {
        for durable in [false, true] {
            let (endpoint, seen) = fake(vec![DOWN, DOWN, OK]).await;
            let dir = tempfile::tempdir().unwrap();
            let cfg = SecurityHubSinkConfig {
                max_retries: 1,
                spool_durable: durable,
                park_max: Duration::from_millis(100),
                ..Default::default()
            };
            let sh = shared_with(&endpoint, dir.path(), &format!("unit_durable_{durable}"), cfg).await;
            let mut sink = sink_on(sh.clone());
            sink.send_json_lines(line("a", "us-east-1")).await.unwrap();
            let first = sink.flush().await;
            if durable {
                assert!(first.is_ok(), "spooled counts as accepted on a durable spool: {first:?}");
            } else {
                let e = first.expect_err("spooled is not accepted on a spool that is not durable");
                assert!(e.to_string().contains("not durable"), "{e}");
            }
            until("delivered after the outage", || sh.m.sent.get() == 1).await;
            until("spool empty", || sh.spool_depth().0 == 0).await;
            sink.flush().await.expect("accepted once delivered");
            assert_eq!(seen.lock().unwrap().len(), 3);
            sink.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn findings_spooled_by_an_older_version_move_to_their_routes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        let mut old = Spool::open(&root, 1 << 20).unwrap();
        let mut mixed = line("a", "us-east-1");
        mixed.extend(line("b", "eu-west-1"));
        old.append(&mixed).unwrap();
        drop(old);
        let (endpoint, seen, regions) = fake_refusing(None).await;
        let sh = shared_for(&endpoint, dir.path(), "unit_legacy", 1).await;
        assert_eq!(sh.spool_depth().0, 2);
        assert_eq!(sh.queue_list().len(), 2, "one queue per route");
        sh.drain_ready().await;
        assert_eq!(sh.spool_depth().0, 0);
        let mut r = regions.lock().unwrap().clone();
        r.sort();
        assert_eq!(r, ["eu-west-1", "us-east-1"]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(std::fs::read_dir(&root).unwrap().filter_map(Result::ok).all(|e| e.file_type().unwrap().is_dir()));
    }

    #[test]
    fn parking_doubles_up_to_the_limit() {
        let max = Duration::from_secs(5);
        let waits: Vec<u128> = (1..=6).map(|f| park_for(f, max).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(park_for(1000, max), max);
    }

    fn answer(failed: &[(&str, &str)]) -> BatchImportFindingsOutput {
        let mut b = BatchImportFindingsOutput::builder()
            .failed_count(failed.len() as i32)
            .success_count(3 - failed.len() as i32);
        for (id, code) in failed {
            b = b.failed_findings(
                ImportFindingsError::builder()
                    .id(*id)
                    .error_code(*code)
                    .error_message(format!("{code} for {id}"))
                    .build(),
            );
        }
        b.build()
    }

    #[test]
    fn a_partial_failure_is_split_into_delivered_retried_and_rejected() {
        let ids = ["a", "b", "c"];
        let a = classify(&ids, &answer(&[("b", "ThrottlingException"), ("c", "InvalidInput")]));
        assert_eq!(a.delivered, [0]);
        assert_eq!(a.retry, [1]);
        assert_eq!(a.rejected, [(2, "InvalidInput".to_string(), "InvalidInput for c".to_string())]);
        let all = classify(&ids, &answer(&[]));
        assert_eq!(all.delivered, [0, 1, 2]);
        let internal = classify(&ids, &answer(&[("a", "InternalException"), ("c", "AccessDeniedException")]));
        assert_eq!(internal.retry, [0]);
        assert_eq!(internal.rejected.len(), 1);
    }

    #[test]
    fn findings_route_by_account_and_product_arn_region() {
        assert_eq!(
            route_key("111122223333", "arn:aws:securityhub:eu-west-1:111122223333:product/111122223333/default"),
            ("111122223333".to_string(), Some("eu-west-1".to_string()))
        );
        assert_eq!(route_key("1", "bad"), ("1".to_string(), None));
    }
}
