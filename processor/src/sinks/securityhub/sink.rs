use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_sdk_securityhub::operation::batch_import_findings::BatchImportFindingsOutput;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use prometheus::{Histogram, IntCounter};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::convert;
use super::limiter::{backoff, TokenBucket};
use super::spool::{Spool, SpoolError};
use super::SecurityHubSinkConfig;
use crate::evaluate::{DeadLetter, Finding};
use crate::findings::{validate_serialized, ReportTo};
use crate::sinks::dead_letter::DeadLetterWriter;
use crate::sinks::{observe_delivered, Sink, SinkContext, SinkError};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How often the drainer looks at the spool at most / at least while Security Hub keeps failing.
const DRAIN_MIN: Duration = Duration::from_millis(500);
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Retries of one spooled batch per drain attempt: the drainer itself backs off.
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

struct Metrics {
    sent: IntCounter,
    spooled: IntCounter,
    failed: IntCounter,
    retry_throttled: IntCounter,
    retry_error: IntCounter,
    retry_finding: IntCounter,
    duration: Histogram,
    batch_size: Histogram,
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
        }
    }
}

struct Shared {
    name: String,
    cfg: SecurityHubSinkConfig,
    base: SdkConfig,
    assume_roles: bool,
    routes: tokio::sync::Mutex<HashMap<RouteKey, Arc<Route>>>,
    spool: Mutex<Spool>,
    dead: Mutex<DeadLetterWriter>,
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
        let mm = crate::metrics::get();
        let spool = Spool::open(&spool_dir, cfg.spool_max_bytes)
            .map_err(|error| SinkError::Io {
                context: format!("cannot open the spool {}", spool_dir.display()),
                error,
            })?
            .with_gauges(
                mm.sink_spool_bytes.with_label_values(&[ctx.name]),
                mm.sink_spool_findings.with_label_values(&[ctx.name]),
            );
        if !spool.is_empty() {
            tracing::info!(
                sink = ctx.name,
                findings = spool.findings(),
                bytes = spool.bytes(),
                "findings spooled by an earlier run will be sent first"
            );
        }
        let dead_path: PathBuf =
            cfg.dead_letter.clone().unwrap_or_else(|| ctx.state_dir.join("securityhub-rejected.ndjson"));
        let name = ctx.name.to_string();
        let m = Metrics::new(&name);
        let shared = Arc::new(Shared {
            name,
            cfg: cfg.clone(),
            base,
            assume_roles,
            routes: tokio::sync::Mutex::new(HashMap::new()),
            spool: Mutex::new(spool),
            dead: Mutex::new(DeadLetterWriter::new(&dead_path, false)),
            failing: AtomicBool::new(false),
            drain: Notify::new(),
            m,
        });
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

    /// Sends a full or timed-out batch: straight to the spool while older
    /// findings wait there (oldest first), else to Security Hub in a task.
    fn dispatch(&mut self, key: RouteKey, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        if !self.shared.spool_is_empty() {
            if let Err(s) = self.shared.spool_items(key, items) {
                self.stuck.push(s);
            }
            self.shared.drain.notify_one();
            return;
        }
        let shared = self.shared.clone();
        self.tasks.spawn(async move {
            // Boxed: keeps the task small (the SDK call futures are large in debug builds).
            let left = Box::pin(shared.deliver(&key, items, shared.cfg.max_retries)).await;
            if left.is_empty() {
                Ok(())
            } else {
                shared.spool_items(key, left)
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
        self.unstick()?;
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
    fn unstick(&mut self) -> Result<(), SinkError> {
        let stuck = std::mem::take(&mut self.stuck);
        let mut last = None;
        for Stuck(key, items) in stuck {
            if let Err(s) = self.shared.spool_items(key, items) {
                self.stuck.push(s);
                last = Some(());
            }
        }
        self.shared.drain.notify_one();
        match last {
            None => Ok(()),
            Some(()) => {
                let n: usize = self.stuck.iter().map(|s| s.1.len()).sum();
                Err(SinkError::Unavailable(format!(
                    "{n} findings can be neither delivered to Security Hub nor spooled (the spool is full)"
                )))
            }
        }
    }
}

#[async_trait]
impl Sink for SecurityHubSink {
    async fn send(&mut self, findings: &[Arc<Finding>]) -> Result<(), SinkError> {
        // Push back (before taking anything) while findings are stuck.
        self.unstick()?;
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
        self.unstick()?;
        let mut dead = self.shared.dead.lock().unwrap_or_else(|p| p.into_inner());
        dead.sync().map_err(|error| SinkError::Io {
            context: format!("cannot write the dead-letter file {}", dead.path().display()),
            error,
        })
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

impl Shared {
    fn spool_is_empty(&self) -> bool {
        self.spool.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn spool_items(&self, key: RouteKey, items: Vec<Item>) -> Result<(), Stuck> {
        let lines: Vec<String> = items.iter().map(|i| i.line.clone()).collect();
        let r = self.spool.lock().unwrap_or_else(|p| p.into_inner()).append(&lines);
        match r {
            Ok(()) => {
                self.m.spooled.inc_by(items.len() as u64);
                tracing::warn!(sink = %self.name, findings = items.len(), "Security Hub unavailable: findings spooled");
                Ok(())
            }
            Err(e) => {
                match &e {
                    SpoolError::Full { .. } => tracing::warn!(sink = %self.name, "{e}"),
                    SpoolError::Io { .. } => tracing::error!(sink = %self.name, "{e}"),
                }
                Err(Stuck(key, items))
            }
        }
    }

    /// A finding Security Hub will never take: logged, counted, dead-lettered.
    fn reject(&self, id: &str, code: &str, reason: &str, line: &str) {
        tracing::warn!(sink = %self.name, finding = id, "finding rejected ({code}): {reason}");
        self.m.failed.inc();
        let d = DeadLetter {
            origin: format!("sink:{}", self.name),
            position: Default::default(),
            kind: "securityhub_rejected",
            error: format!("{id}: {code}: {reason}"),
            raw: Some(line.to_string()),
        };
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = dead.write(&d) {
            tracing::error!(sink = %self.name, "cannot write the dead-letter file {}: {e}", dead.path().display());
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
    /// still undelivered (to be spooled). Rejected findings are dead-lettered.
    async fn deliver(&self, key: &RouteKey, items: Vec<Item>, max_retries: u32) -> Vec<Item> {
        let route = self.route(key).await;
        let mut work = vec![items];
        let mut left = Vec::new();
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
                        self.failing.store(false, Ordering::Relaxed);
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
                    Err(e) if crate::aws::is_retryable(&e) => {
                        self.failing.store(true, Ordering::Relaxed);
                        let throttled = e.code().is_some_and(crate::aws::is_throttling_code)
                            || e.raw_response().is_some_and(|r| r.status().as_u16() == 429);
                        if throttled {
                            self.m.retry_throttled.inc();
                        } else {
                            self.m.retry_error.inc();
                        }
                        tracing::debug!(sink = %self.name, attempt, "BatchImportFindings failed: {}", crate::aws::error_text(&e));
                    }
                    Err(e) if e.code() == Some("InvalidInputException") => {
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
                    Err(e) => {
                        // Access denied, unknown account, …: a set-up problem, not the
                        // findings' fault. Keep them (spool) and say so loudly.
                        self.failing.store(true, Ordering::Relaxed);
                        tracing::error!(
                            sink = %self.name, account = %key.0,
                            "BatchImportFindings refused: {}; findings are spooled", crate::aws::error_text(&e)
                        );
                        left.extend(batch);
                        break;
                    }
                }
                attempt += 1;
                if attempt > max_retries {
                    left.extend(batch);
                    break;
                }
                tokio::time::sleep(backoff(attempt - 1, BACKOFF_BASE, BACKOFF_CAP)).await;
            }
        }
        left
    }

    /// Sends the oldest spooled segment; true when it is gone.
    async fn drain_one(&self) -> bool {
        let oldest = self.spool.lock().unwrap_or_else(|p| p.into_inner()).oldest();
        let (seq, lines) = match oldest {
            Ok(Some(x)) => x,
            Ok(None) => return true,
            Err(e) => {
                tracing::error!(sink = %self.name, "{e}");
                return false;
            }
        };
        let mut groups: HashMap<RouteKey, Vec<Item>> = HashMap::new();
        for line in lines {
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.reject("?", "Unreadable", &format!("spooled line is not JSON: {e}"), &line);
                    continue;
                }
            };
            let (account, region) = convert::route_of(&v);
            let id = v.get("Id").and_then(|x| x.as_str()).unwrap_or_default().to_string();
            groups.entry((account, region)).or_default().push(Item { id, line, finding: None });
        }
        let batch_size = self.cfg.batch_size.clamp(1, 100);
        for (key, items) in groups {
            for chunk in items.chunks(batch_size) {
                if !Box::pin(self.deliver(&key, chunk.to_vec(), DRAIN_RETRIES)).await.is_empty() {
                    return false;
                }
            }
        }
        let removed = self.spool.lock().unwrap_or_else(|p| p.into_inner()).remove(seq);
        if let Err(e) = removed {
            tracing::error!(sink = %self.name, "{e}");
            return false;
        }
        if let Err(e) = self.dead.lock().unwrap_or_else(|p| p.into_inner()).sync() {
            tracing::error!(sink = %self.name, "cannot sync the dead-letter file: {e}");
        }
        true
    }
}

/// Drains the spool in the background, oldest segment first, backing off
/// while Security Hub keeps failing. Runs even when no input arrives.
async fn drain_loop(shared: Arc<Shared>) {
    let mut wait = DRAIN_MIN;
    loop {
        tokio::select! {
            _ = shared.drain.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        while !shared.spool_is_empty() {
            if shared.drain_one().await {
                wait = DRAIN_MIN;
            } else {
                wait = (wait * 2).min(DRAIN_MAX);
                // Wait before the next try, but not for a notify (new findings spooled).
                tokio::time::sleep(wait).await;
                break;
            }
        }
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

    /// A fake Security Hub endpoint: answers request n with `script[n]`
    /// (status, error type, body) and records the Ids each request carried.
    async fn fake(script: Vec<(u16, &'static str, &'static str)>) -> (String, Requests) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen: Requests = Arc::default();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let script = script.clone();
                let seen = seen2.clone();
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
                        let (status, kind, text) = script.lock().unwrap().pop_front().unwrap_or((500, "", "{}"));
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
        (format!("http://{addr}"), seen)
    }

    const OK: (u16, &str, &str) = (200, "", r#"{"FailedCount":0,"SuccessCount":1,"FailedFindings":[]}"#);
    const DOWN: (u16, &str, &str) = (503, "ServiceUnavailableException", r#"{"message":"down"}"#);
    const INVALID: (u16, &str, &str) = (400, "InvalidInputException", r#"{"Message":"invalid finding"}"#);

    async fn shared_for(endpoint: &str, dir: &std::path::Path, name: &str, max_retries: u32) -> Arc<Shared> {
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
        let cfg = SecurityHubSinkConfig { max_retries, ..Default::default() };
        Arc::new(Shared {
            name: name.into(),
            cfg,
            base,
            assume_roles: false,
            routes: tokio::sync::Mutex::new(HashMap::new()),
            spool: Mutex::new(Spool::open(&dir.join("spool"), 1 << 20).unwrap()),
            dead: Mutex::new(DeadLetterWriter::new(&dir.join("rejected.ndjson"), false)),
            failing: AtomicBool::new(false),
            drain: Notify::new(),
            m: Metrics::new(name),
        })
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
        let left = sh.deliver(&key(), items(&["a", "b", "c"]), 3).await;
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
        let left = sh.deliver(&key(), items(&["a", "b", "c", "d"]), 3).await;
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
        let left = sh.deliver(&key(), items(&["a", "b"]), 1).await;
        assert_eq!(left.len(), 2, "nothing dropped");
        assert_eq!(seen.lock().unwrap().len(), 2, "one try and one retry");
        assert!(sh.failing.load(Ordering::Relaxed));
        assert!(sh.spool_items(key(), left).is_ok());
        assert_eq!(sh.spool.lock().unwrap().findings(), 2);
        // Back up: the drainer's step delivers the spooled segment and deletes it.
        let (endpoint, _) = fake(vec![OK]).await;
        let sh2 = shared_for(&endpoint, dir.path(), "unit_down_after", 1).await;
        assert_eq!(sh2.spool.lock().unwrap().findings(), 2, "the spool survived (reopened)");
        assert!(sh2.drain_one().await);
        assert!(sh2.spool_is_empty());
        assert_eq!(sh2.m.sent.get(), 2);
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
