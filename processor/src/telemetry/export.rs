//! What trailwatch adds around the OpenTelemetry SDK's span pipeline: the
//! counters of `trailwatch_otlp_*` and the [`super::ExportReport`], and the
//! runtime the exporter runs on. Batching, retries, encoding, the HTTP
//! client and the `OTEL_*` variables stay the SDK's.
//!
//! ```text
//! tracing span ─▶ tracing-opentelemetry ─▶ CountingProcessor ─▶ BatchSpanProcessor ─▶ CountingExporter ─▶ otlp SpanExporter
//!                                          (queue_full drops)   (SDK thread, batches)  (own tokio runtime)   (HTTP: hyper; or tonic)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::ExportReport;

/// Spans in each state, shared by the processor, the exporter and the event layer.
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

/// What the OTLP exporter reports only in its internal log events
/// (`opentelemetry-otlp`'s `otel_*!` macros, emitted through `tracing`):
/// the collector's partial success (rejected spans) and each retry, over
/// HTTP and gRPC alike. The event names are the exporter's (0.33);
/// tests/tests/otlp.rs and otlp_grpc.rs pin them.
pub(super) struct ExporterEvents {
    pub(super) counts: Arc<Counts>,
}

/// The fields of one exporter event that matter here.
#[derive(Default)]
struct EventFields {
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

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl ExporterEvents {
    /// Only the exporter's own events reach the layer.
    pub(super) fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && meta.target() == "opentelemetry-otlp"
    }
}

fn retried(reason: &str) {
    crate::metrics::get().otlp_export_retries.with_label_values(&[reason]).inc();
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ExporterEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let name = event.metadata().name();
        let mut f = EventFields::default();
        event.record(&mut f);
        match name {
            "HttpTraceClient.PartialSuccess" | "TonicTracesClient.PartialSuccess" => {
                self.counts.rejected_last.store(f.rejected_spans.max(0) as u64, Ordering::SeqCst);
            }
            // Span and metric exports alike (`operation` names which).
            "Export.InProgress.Retrying" => retried("retryable"),
            "Export.InProgress.Throttled" => retried("throttled"),
            _ => {}
        }
    }
}
