//! What trailwatch adds around the OpenTelemetry SDK's span pipeline: the
//! counters of `trailwatch_otlp_*` and the [`super::ExportReport`], and the
//! runtime and HTTP client the exporter runs on. Batching, retries,
//! encoding and the `OTEL_*` variables stay the SDK's.
//!
//! ```text
//! tracing span ─▶ tracing-opentelemetry ─▶ CountingProcessor ─▶ BatchSpanProcessor ─▶ CountingExporter ─▶ otlp SpanExporter
//!                                          (queue_full drops)   (SDK thread, batches)  (own tokio runtime)   (HTTP: HyperClient; or tonic)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::ExportReport;

/// Spans in each state, shared by the processor, the exporter and the client.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Handed to the SDK's queue and not yet to the exporter.
    queued: AtomicUsize,
    /// In the export under way.
    exporting: AtomicUsize,
    /// Spans the collector refused in the last accepted request (OTLP partial success).
    rejected_last: AtomicU64,
    sent: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Set at the shutdown deadline: what finishes later is not counted twice.
    closed: AtomicBool,
    /// The last export failed: further failures log at debug until one works.
    failing: AtomicBool,
}

impl Counts {
    /// The totals; at the shutdown deadline, what is still waiting or
    /// still being exported counts as dropped.
    pub(super) fn close(&self, in_time: bool) -> ExportReport {
        if !self.closed.swap(true, Ordering::SeqCst) && !in_time {
            let left = (self.queued.load(Ordering::SeqCst) + self.exporting.load(Ordering::SeqCst)) as u64;
            self.dropped.fetch_add(left, Ordering::SeqCst);
            crate::metrics::get().otlp_spans_dropped.with_label_values(&["shutdown"]).inc_by(left);
        }
        ExportReport {
            sent: self.sent.load(Ordering::SeqCst),
            rejected: self.rejected.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            dropped: self.dropped.load(Ordering::SeqCst),
        }
    }
}

/// The SDK's batch processor, with the queue bound checked in front of it:
/// the SDK drops spans on a full queue too, but keeps that count private.
/// `queued` never exceeds the SDK queue's capacity, so the SDK itself
/// never drops and every drop is counted here.
#[derive(Debug)]
pub(super) struct CountingProcessor {
    pub(super) inner: BatchSpanProcessor,
    pub(super) counts: Arc<Counts>,
    pub(super) capacity: usize,
    pub(super) dropped_full: prometheus::IntCounter,
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.counts.queued.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.counts.queued.fetch_sub(1, Ordering::SeqCst);
            self.counts.dropped.fetch_add(1, Ordering::SeqCst);
            self.dropped_full.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, run on trailwatch's exporter runtime (tonic and
/// hyper need tokio; the SDK's batch thread has none), with the outcome
/// of every batch counted.
#[derive(Debug)]
pub(super) struct CountingExporter {
    pub(super) inner: Arc<opentelemetry_otlp::SpanExporter>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) counts: Arc<Counts>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let c = &self.counts;
        c.queued.fetch_sub(n, Ordering::SeqCst);
        c.exporting.store(n, Ordering::SeqCst);
        let inner = Arc::clone(&self.inner);
        let result = match self.runtime.spawn(async move { inner.export(batch).await }).await {
            Ok(r) => r,
            Err(e) => Err(OTelSdkError::InternalFailure(format!("the exporter runtime stopped: {e}"))),
        };
        c.exporting.store(0, Ordering::SeqCst);
        if c.closed.load(Ordering::SeqCst) {
            return result;
        }
        let m = crate::metrics::get();
        let n = n as u64;
        match &result {
            Ok(()) => {
                let rejected = c.rejected_last.swap(0, Ordering::SeqCst).min(n);
                c.sent.fetch_add(n - rejected, Ordering::SeqCst);
                c.rejected.fetch_add(rejected, Ordering::SeqCst);
                m.otlp_spans_exported.with_label_values(&["sent"]).inc_by(n - rejected);
                m.otlp_spans_exported.with_label_values(&["rejected"]).inc_by(rejected);
                if rejected > 0 {
                    tracing::warn!(rejected, "the OTLP collector rejected spans");
                }
                if c.failing.swap(false, Ordering::SeqCst) {
                    tracing::info!("OTLP export works again");
                }
            }
            Err(e) => {
                c.failed.fetch_add(n, Ordering::SeqCst);
                m.otlp_spans_exported.with_label_values(&["failed"]).inc_by(n);
                if c.failing.swap(true, Ordering::SeqCst) {
                    tracing::debug!("OTLP export failed, {n} spans dropped: {e}");
                } else {
                    tracing::warn!(
                        "OTLP export failed, {n} spans dropped: {e} (further failures are logged at debug level \
                         until an export works)"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, when the provider is built: nothing else holds the Arc yet.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Largest response body read (the SDK's own clients use the same bound).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The OTLP/HTTP client: the hyper + rustls (ring, system roots) stack the
/// AWS SDK client uses, so there is one TLS stack in the binary. Also
/// counts what the SDK's retry loop does not report (retryable failures,
/// rejected spans).
#[derive(Debug)]
pub(super) struct HyperClient {
    client: hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    counts: Arc<Counts>,
}

impl HyperClient {
    pub(super) fn new(timeout: Duration, counts: Arc<Counts>) -> std::io::Result<HyperClient> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(HyperClient { client, timeout, counts })
    }

    fn retry(reason: &str) {
        crate::metrics::get().otlp_export_retries.with_label_values(&[reason]).inc();
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            hyper::header::USER_AGENT,
            hyper::header::HeaderValue::from_static(concat!("trailwatch/", env!("CARGO_PKG_VERSION"))),
        );
        let req = hyper::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(Response::from_parts(parts, body.to_bytes()))
        };
        let resp = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                Self::retry("timeout");
                return Err(format!("no answer within {:?}", self.timeout).into());
            }
            Ok(Err(why)) => {
                Self::retry("network");
                return Err(why.into());
            }
            Ok(Ok(r)) => r,
        };
        match resp.status().as_u16() {
            429 => Self::retry("throttled"),
            502..=504 => Self::retry("unavailable"),
            200..=299 => {
                use prost::Message;
                let decoded = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
                    resp.body().clone(),
                );
                let rejected = decoded.ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_spans.max(0));
                self.counts.rejected_last.store(rejected as u64, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(resp)
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

/// What the gRPC exporter reports only in its internal log events
/// (`opentelemetry-otlp`'s `otel_*!` macros, emitted through `tracing`):
/// the collector's partial success (rejected spans) and each retry. Over
/// HTTP, [`HyperClient`] sees the responses itself. The event names are the
/// exporter's (0.33); tests/tests/otlp_grpc.rs pins them.
pub(super) struct GrpcEvents {
    pub(super) counts: Arc<Counts>,
}

/// The fields of one exporter event that matter here.
#[derive(Default)]
struct EventFields {
    operation: String,
    rejected_spans: i64,
}

impl tracing::field::Visit for EventFields {
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "rejected_spans" {
            self.rejected_spans = value;
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "operation" {
            self.operation = value.to_string();
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl GrpcEvents {
    /// Only the exporter's own events reach the layer.
    pub(super) fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && meta.target() == "opentelemetry-otlp"
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GrpcEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let name = event.metadata().name();
        let mut f = EventFields::default();
        event.record(&mut f);
        match name {
            "TonicTracesClient.PartialSuccess" => {
                self.counts.rejected_last.store(f.rejected_spans.max(0) as u64, Ordering::SeqCst);
            }
            // The retry loop names the call; the HTTP ones are counted by HyperClient.
            "Export.InProgress.Retrying" if f.operation.starts_with("Tonic") => HyperClient::retry("grpc_retryable"),
            "Export.InProgress.Throttled" if f.operation.starts_with("Tonic") => HyperClient::retry("throttled"),
            _ => {}
        }
    }
}
