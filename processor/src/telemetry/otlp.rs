//! The OTLP/HTTP exporter: a thread of its own (with a one-thread tokio
//! runtime, so exporting never competes with the pipeline's runtime and
//! outlives it for the final flush) that takes finished spans from the
//! layer's queue, batches them (`trace_batch_size`, or whatever waited
//! `trace_export_interval`) and POSTs `ExportTraceServiceRequest`s to the
//! collector.
//!
//! Retries follow the OTLP specification: 429, 502, 503 and 504 and
//! connection failures or timeouts are retried with exponential backoff
//! (1 s, ×1.5, at most 5 s, jittered; `Retry-After` honoured), at most 5
//! attempts; any other answer drops the batch. A 200 may still report
//! rejected spans (partial success): they are counted and logged. At
//! shutdown the queue is closed and drained, retries included, until the
//! deadline; what is left then is counted as dropped.
//!
//! HTTP: the hyper client the AWS SDK already builds (hyper-util's legacy
//! client, rustls with ring and the system roots for https), HTTP/1.1.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::{Compression, ExportSettings};
use super::layer::{SpanRecord, Value};
use super::proto::{self, Preamble};

const MAX_ATTEMPTS: u32 = 5;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A longer Retry-After is cut to this (the batch is dropped after 5 tries anyway).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Response bodies read at most (a partial success or an error status).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

enum Client {
    Http(LegacyClient<HttpConnector, Full<Bytes>>),
    Https(LegacyClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl Client {
    fn new(url: &hyper::Uri) -> std::io::Result<Client> {
        let builder = LegacyClient::builder(TokioExecutor::new());
        if url.scheme_str() == Some("https") {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
                .https_only()
                .enable_http1()
                .build();
            Ok(Client::Https(builder.build(https)))
        } else {
            Ok(Client::Http(builder.build(HttpConnector::new())))
        }
    }

    async fn send(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(hyper::StatusCode, Option<Duration>, Bytes), String> {
        let resp = match self {
            Client::Http(c) => c.request(req).await,
            Client::Https(c) => c.request(req).await,
        }
        .map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((status, retry_after, body))
    }
}

/// `error: cause: cause` (hyper's top-level error alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// What happened to the spans of one export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Accepted by the collector.
    pub sent: u64,
    /// Accepted in a request but rejected by the collector (partial success).
    pub rejected: u64,
    /// Given up on: a permanent error or every attempt failed.
    pub failed: u64,
    /// Still waiting at the shutdown deadline.
    pub dropped: u64,
}

enum Attempt {
    Done(proto::PartialSuccess),
    Retry { reason: &'static str, after: Option<Duration>, why: String },
    Fail(String),
}

struct Exporter {
    client: Client,
    settings: ExportSettings,
    preamble: Preamble,
    stop: watch::Receiver<Option<Instant>>,
    report: ExportReport,
    /// The last export failed: further failures log at debug until one works.
    failing: bool,
}

/// Owns the exporter thread; [`ExporterHandle::shutdown`] flushes it.
pub struct ExporterHandle {
    stop: watch::Sender<Option<Instant>>,
    done: std::sync::mpsc::Receiver<ExportReport>,
}

/// Starts the exporter thread reading `queue`.
pub fn start(settings: ExportSettings, queue: mpsc::Receiver<SpanRecord>) -> std::io::Result<ExporterHandle> {
    let client = Client::new(&settings.url)?;
    let resource: Vec<(String, Value)> =
        settings.resource.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))).collect();
    let preamble = Preamble::new(&resource, "trailwatch", env!("CARGO_PKG_VERSION"));
    let (stop_tx, stop_rx) = watch::channel(None);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(super::layer::mark_exporter_thread)
        .build()?;
    std::thread::Builder::new().name("trailwatch-otlp".into()).spawn(move || {
        super::layer::mark_exporter_thread();
        let exporter =
            Exporter { client, settings, preamble, stop: stop_rx, report: ExportReport::default(), failing: false };
        let report = rt.block_on(exporter.run(queue));
        let _ = done_tx.send(report);
    })?;
    Ok(ExporterHandle { stop: stop_tx, done: done_rx })
}

impl ExporterHandle {
    /// Exports every span finished so far (retrying as usual) and stops,
    /// by `deadline`. Returns the totals, or None if the thread did not
    /// finish in time.
    pub fn shutdown(self, deadline: std::time::Instant) -> Option<ExportReport> {
        let _ = self.stop.send(Some(Instant::from_std(deadline)));
        // A little past the deadline: the thread counts what it drops first.
        let wait = deadline.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(200);
        self.done.recv_timeout(wait).ok()
    }
}

impl Exporter {
    fn deadline(&self) -> Option<Instant> {
        *self.stop.borrow()
    }

    async fn run(mut self, mut queue: mpsc::Receiver<SpanRecord>) -> ExportReport {
        let batch = self.settings.batch_size;
        let mut buf: Vec<SpanRecord> = Vec::with_capacity(batch);
        let mut next = Instant::now() + self.settings.export_interval;
        while self.deadline().is_none() {
            let room = batch - buf.len();
            tokio::select! {
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // The handle is gone without a shutdown: flush and stop.
                        break;
                    }
                }
                n = queue.recv_many(&mut buf, room) => {
                    if n == 0 {
                        break;
                    }
                    if buf.len() >= batch {
                        let spans = std::mem::replace(&mut buf, Vec::with_capacity(batch));
                        self.export(spans).await;
                        next = Instant::now() + self.settings.export_interval;
                    }
                }
                _ = tokio::time::sleep_until(next) => {
                    if !buf.is_empty() {
                        let spans = std::mem::replace(&mut buf, Vec::with_capacity(batch));
                        self.export(spans).await;
                    }
                    next = Instant::now() + self.settings.export_interval;
                }
            }
        }
        // Shutdown: nothing new gets in (a span closing now is counted as
        // dropped by the layer); everything already queued goes out.
        queue.close();
        while let Ok(s) = queue.try_recv() {
            buf.push(s);
        }
        let total = buf.len();
        while !buf.is_empty() {
            let rest = buf.split_off(buf.len().min(batch));
            let spans = std::mem::replace(&mut buf, rest);
            self.export(spans).await;
        }
        let r = self.report;
        if r.dropped > 0 {
            tracing::warn!(dropped = r.dropped, "OTLP: spans not exported before the shutdown deadline");
        }
        tracing::debug!(spans = total, "OTLP exporter flushed and stopped");
        r
    }

    /// One batch: encode, send, retry; counts the outcome.
    async fn export(&mut self, spans: Vec<SpanRecord>) {
        let n = spans.len() as u64;
        let m = crate::metrics::get();
        let mut body = proto::encode_request(&self.preamble, &spans);
        drop(spans);
        if self.settings.compression == Compression::Gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
            if gz.write_all(&body).is_ok() {
                if let Ok(z) = gz.finish() {
                    body = z;
                }
            }
        }
        let body = Bytes::from(body);
        let mut backoff = BACKOFF_START;
        let mut attempt = 1;
        loop {
            let timeout = match self.deadline() {
                Some(d) => self.settings.timeout.min(d.saturating_duration_since(Instant::now())),
                None => self.settings.timeout,
            };
            if timeout.is_zero() {
                return self.drop_at_deadline(n);
            }
            let outcome = match tokio::time::timeout(timeout, self.attempt(body.clone())).await {
                Ok(a) => a,
                Err(_) => {
                    Attempt::Retry { reason: "timeout", after: None, why: format!("no answer within {timeout:?}") }
                }
            };
            match outcome {
                Attempt::Done(ps) => {
                    let rejected = (ps.rejected_spans.max(0) as u64).min(n);
                    self.report.sent += n - rejected;
                    self.report.rejected += rejected;
                    m.otlp_spans_exported.with_label_values(&["sent"]).inc_by(n - rejected);
                    if rejected > 0 || !ps.error_message.is_empty() {
                        m.otlp_spans_exported.with_label_values(&["rejected"]).inc_by(rejected);
                        tracing::warn!(rejected, "OTLP collector rejected spans: {}", ps.error_message);
                    }
                    if self.failing {
                        self.failing = false;
                        tracing::info!("OTLP export works again");
                    }
                    return;
                }
                Attempt::Fail(why) => {
                    self.report.failed += n;
                    m.otlp_spans_exported.with_label_values(&["failed"]).inc_by(n);
                    self.log_failure(&format!("OTLP export failed, {n} spans dropped: {why}"));
                    return;
                }
                Attempt::Retry { reason, after, why } => {
                    if attempt >= MAX_ATTEMPTS {
                        self.report.failed += n;
                        m.otlp_spans_exported.with_label_values(&["failed"]).inc_by(n);
                        self.log_failure(&format!("OTLP export failed {attempt} times, {n} spans dropped: {why}"));
                        return;
                    }
                    let wait = after.unwrap_or_else(|| backoff.mul_f64(rand::random_range(0.8..1.2)));
                    backoff = backoff.mul_f64(1.5).min(BACKOFF_MAX);
                    attempt += 1;
                    m.otlp_export_retries.with_label_values(&[reason]).inc();
                    self.log_failure(&format!("OTLP export failed, retrying in {wait:?}: {why}"));
                    let until = Instant::now() + wait;
                    if self.deadline().is_some_and(|d| until >= d) {
                        return self.drop_at_deadline(n);
                    }
                    // A shutdown during the wait moves the deadline in: look again.
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = self.stop.changed() => {
                            if self.deadline().is_some_and(|d| until >= d) {
                                return self.drop_at_deadline(n);
                            }
                            tokio::time::sleep_until(until).await;
                        }
                    }
                }
            }
        }
    }

    fn drop_at_deadline(&mut self, n: u64) {
        self.report.dropped += n;
        crate::metrics::get().otlp_spans_dropped.with_label_values(&["shutdown"]).inc_by(n);
    }

    fn log_failure(&mut self, msg: &str) {
        if self.failing {
            tracing::debug!("{msg}");
        } else {
            self.failing = true;
            tracing::warn!("{msg} (further failures are logged at debug level until an export works)");
        }
    }

    async fn attempt(&self, body: Bytes) -> Attempt {
        let mut req = hyper::Request::post(self.settings.url.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, concat!("trailwatch/", env!("CARGO_PKG_VERSION")));
        if self.settings.compression == Compression::Gzip {
            req = req.header(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        for (k, v) in &self.settings.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Attempt::Fail(format!("cannot build the request: {e}")),
        };
        let (status, after, body) = match self.client.send(req).await {
            Ok(r) => r,
            Err(why) => return Attempt::Retry { reason: "network", after: None, why },
        };
        if status.is_success() {
            // Not protobuf (an empty or JSON body): nothing was rejected.
            return Attempt::Done(proto::decode_response(&body).unwrap_or_default());
        }
        let detail = proto::decode_status_message(&body)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string());
        let why = format!("{} from {}: {detail}", status, self.settings.url);
        match status.as_u16() {
            429 => Attempt::Retry { reason: "throttled", after, why },
            502..=504 => Attempt::Retry { reason: "unavailable", after, why },
            _ => Attempt::Fail(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::config::TelemetryConfig;
    use crate::telemetry::layer::Status;

    fn settings(url: &str, timeout: Duration) -> ExportSettings {
        let cfg =
            TelemetryConfig { otlp_endpoint: Some(url.into()), otlp_timeout: Some(timeout), ..Default::default() };
        ExportSettings::resolve(&cfg, &|_| None).unwrap().unwrap()
    }

    fn record() -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "s",
            start_ns: 1,
            end_ns: 2,
            attributes: vec![],
            dropped_attributes: 0,
            events: vec![],
            dropped_events: 0,
            status: Status::Unset,
        }
    }

    /// A collector that accepts connections and never answers: every
    /// attempt times out, the batch is retried, and the shutdown deadline
    /// bounds the whole flush.
    #[test]
    fn a_silent_collector_cannot_hold_the_shutdown_past_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming().take(3).flatten() {
                held.push(c);
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        let (tx, rx) = mpsc::channel(8);
        for _ in 0..3 {
            tx.try_send(record()).unwrap();
        }
        let retries = crate::metrics::get().otlp_export_retries.with_label_values(&["timeout"]);
        let before = retries.get();
        let h = start(settings(&format!("http://{addr}"), Duration::from_millis(300)), rx).unwrap();
        let started = std::time::Instant::now();
        let report = h.shutdown(started + Duration::from_millis(1500)).expect("the exporter stops in time");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1800), "{took:?}");
        assert_eq!(report, ExportReport { dropped: 3, ..Default::default() }, "{report:?}");
        assert!(retries.get() > before, "timeouts are retried");
        drop(hold);
    }
}
