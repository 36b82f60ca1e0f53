//! Logs, traces, and the optional OTLP export of the metrics (which live in
//! [`crate::metrics`]).
//!
//! Traces are the OpenTelemetry project's own pipeline: `tracing` spans go
//! through `tracing-opentelemetry` into the `opentelemetry_sdk` tracer
//! (sampler, batch processor, X-Ray ids from `opentelemetry-aws`) and out
//! through `opentelemetry-otlp` (OTLP/HTTP protobuf or gRPC), which also
//! reads the `OTEL_*` variables. trailwatch keeps only:
//!
//! - [`config`]: the `[telemetry]` keys, and whether and over which
//!   transport traces and metrics are exported;
//! - `export`: the counters (`trailwatch_otlp_*`, [`ExportReport`]) and the
//!   tokio runtime the exporter runs on;
//! - `otlp_metrics`: the Prometheus registry bridged to the SDK's meter
//!   provider and OTLP metric exporter (`telemetry.otlp_metrics`, off by default).
//!
//! The pipeline's spans: `source_batch` (a source reading and decoding one
//! batch) is the root of a batch's trace; `detector_batch` (rules over it)
//! and `sink_send` (its findings to one sink) join it across the channels
//! between stages with [`context_of`] and [`set_parent`]; `commit` (with
//! its `sink_flush` children) is a trace of its own per commit.

pub mod config;
mod export;
mod otlp_metrics;

use std::sync::Arc;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use config::{Compression, ExportPlan, LogFormat, Protocol, SettingsError, Signal, TelemetryConfig, TraceIdFormat};

/// Where a span sits in its trace: enough to parent work done elsewhere
/// (another thread, after a channel) under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

/// The trace context of `span`; None when traces are not exported (or
/// the span is disabled).
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceContext { trace_id: sc.trace_id(), span_id: sc.span_id(), flags: sc.trace_flags() })
}

/// Makes `span` a child of `parent` (same trace, same sampling decision).
/// Call it right after creating the span, before it is entered.
pub fn set_parent(span: &tracing::Span, parent: Option<TraceContext>) {
    let Some(p) = parent else { return };
    // Not remote: the parent is in this process, across a channel.
    let sc = SpanContext::new(p.trace_id, p.span_id, p.flags, false, TraceState::NONE);
    // Err only when traces are off or the span has started: nothing to join then.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
}

/// Sets `span`'s status to error with `message` (an ERROR event inside a
/// span does the same; this is for failures logged at a lower level).
pub fn mark_error(span: &tracing::Span, message: &str) {
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
}

/// Logs only, to stderr (commands other than `run`); `RUST_LOG` wins over
/// the `--log-level` default.
pub fn init_logging(level: &str, format: LogFormat) {
    let _ = tracing_subscriber::registry().with(log_layer(level, format)).try_init();
}

/// A log or trace filter. tracing-subscriber's directive parser panics on
/// some non-ASCII input (it slices inside a character; the config fuzz
/// target found it): filters are targets and levels, so anything not ASCII
/// is refused before it gets there.
pub fn parse_filter(s: &str) -> Result<EnvFilter, String> {
    if !s.is_ascii() {
        return Err("only ASCII is allowed (targets, spans and levels)".to_string());
    }
    EnvFilter::builder().parse(s).map_err(|e| e.to_string())
}

fn log_layer(level: &str, format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok().and_then(|v| parse_filter(&v).ok());
    let filter = from_env.or_else(|| parse_filter(level).ok()).unwrap_or_else(|| EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    // Per-layer filter: the log level must not decide which spans are exported.
    match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("telemetry.trace_filter: {0}")]
    Filter(String),
    #[error("cannot start the OTLP exporter: {0}")]
    Start(String),
    #[error("a tracing subscriber is already installed in this process: spans could not be exported")]
    AlreadyInstalled,
}

/// What happened to the spans of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Accepted by the collector.
    pub sent: u64,
    /// Accepted in a request but rejected by the collector (OTLP partial
    /// success: over HTTP from the response, over gRPC from the exporter's
    /// own event).
    pub rejected: u64,
    /// In an export that failed (a permanent error, or retries ran out).
    pub failed: u64,
    /// Dropped on a full queue, or still waiting at the shutdown deadline.
    pub dropped: u64,
}

struct Export {
    provider: SdkTracerProvider,
    counts: Arc<export::Counts>,
}

/// Logs, plus trace and metrics export when configured;
/// [`Telemetry::shutdown`] flushes them at exit.
pub struct Telemetry {
    export: Option<Export>,
    metrics: Option<otlp_metrics::MetricsExport>,
    /// The exporters' runtime (either export on).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Installs the process-wide subscriber: logs as `[telemetry]` says,
    /// and the OpenTelemetry layer when an endpoint is configured.
    pub fn init(cfg: &TelemetryConfig, log_level: &str) -> Result<Telemetry, TelemetryError> {
        let env = |k: &str| std::env::var(k).ok();
        let traces = ExportPlan::resolve(cfg, &env)?;
        let metrics = ExportPlan::resolve_metrics(cfg, &env)?;
        if traces.is_none() && metrics.is_none() {
            init_logging(log_level, cfg.log_format);
            return Ok(Telemetry { export: None, metrics: None, runtime: None });
        }
        // Its own runtime: tonic and hyper need tokio, the SDK's batch and
        // reader threads have none, and `run` starts its runtime later.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trailwatch-otlp")
            .enable_all()
            .build()
            .map_err(|e| start_error(&e))?;
        let resource = resource(cfg);
        let metrics = match metrics {
            None => None,
            Some(plan) => {
                let exporter = {
                    let _in_runtime = runtime.enter();
                    otlp_metric_exporter(cfg, &plan)?
                };
                let families = &crate::metrics::get().families;
                let export = otlp_metrics::start(
                    families,
                    exporter,
                    runtime.handle().clone(),
                    cfg.metrics_export_interval,
                    resource.clone(),
                );
                Some((export, plan.target))
            }
        };
        let Some(plan) = traces else {
            init_logging(log_level, cfg.log_format);
            let (metrics, target) = metrics.expect("one of them is on");
            tracing::info!(%target, "exporting metrics");
            return Ok(Telemetry { export: None, metrics: Some(metrics), runtime: Some(runtime) });
        };
        let filter = parse_filter(&cfg.trace_filter).map_err(TelemetryError::Filter)?;
        let counts = Arc::new(export::Counts::default());
        let exporter = {
            let _in_runtime = runtime.enter();
            otlp_exporter(cfg, &plan)?
        };
        let exporter = export::CountingExporter {
            inner: Arc::new(exporter),
            runtime: runtime.handle().clone(),
            counts: Arc::clone(&counts),
        };
        let mut batch = BatchConfigBuilder::default().with_max_queue_size(cfg.trace_queue_size.get());
        if let Some(n) = cfg.trace_batch_size {
            batch = batch.with_max_export_batch_size(n.get());
        }
        if let Some(d) = cfg.trace_export_interval {
            batch = batch.with_scheduled_delay(d);
        }
        let processor = export::CountingProcessor {
            inner: BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build(),
            counts: Arc::clone(&counts),
            capacity: cfg.trace_queue_size.get(),
            dropped_full: crate::metrics::get().otlp_spans_dropped.with_label_values(&["queue_full"]),
        };
        let mut provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource);
        if let Some(ratio) = cfg.trace_sample_ratio {
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
        }
        if cfg.trace_id_format == TraceIdFormat::Xray {
            provider = provider.with_id_generator(opentelemetry_aws::trace::XrayIdGenerator::default());
        }
        let provider = provider.build();
        let scope = InstrumentationScope::builder("trailwatch").with_version(env!("CARGO_PKG_VERSION")).build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer_with_scope(scope))
            .with_threads(false)
            .with_filter(filter);
        let exporter_events = export::ExporterEvents { counts: Arc::clone(&counts) }
            .with_filter(tracing_subscriber::filter::filter_fn(export::ExporterEvents::wanted));
        tracing_subscriber::registry()
            .with(log_layer(log_level, cfg.log_format))
            .with(layer)
            .with(exporter_events)
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        tracing::info!(target = %plan.target, "exporting traces");
        let metrics = metrics.map(|(m, target)| {
            tracing::info!(%target, "exporting metrics");
            m
        });
        Ok(Telemetry { export: Some(Export { provider, counts }), metrics, runtime: Some(runtime) })
    }

    pub fn exports_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    pub fn exports_traces(&self) -> bool {
        self.export.is_some()
    }

    /// Exports every finished span by `deadline` and stops the exporter;
    /// what is left then is counted as dropped. Call it outside async code
    /// (it blocks), e.g. in `spawn_blocking`.
    pub fn shutdown(self, deadline: std::time::Instant) -> ExportReport {
        let mut report = ExportReport::default();
        if let Some(e) = self.export {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let in_time = e.provider.shutdown_with_timeout(left).is_ok();
            report = e.counts.close(in_time);
            if report.dropped > 0 {
                tracing::warn!(dropped = report.dropped, "OTLP: spans dropped (queue full, or the shutdown deadline)");
            }
        }
        // After the traces: the last export has the final span counts. The
        // SDK exports once more at shutdown and waits 5s at most for it.
        if let Some(m) = self.metrics {
            if let Err(e) = m.provider.shutdown() {
                tracing::warn!("OTLP metrics: the final export did not complete: {e}");
            }
        }
        if let Some(rt) = self.runtime {
            rt.shutdown_background();
        }
        report
    }
}

fn otlp_exporter(cfg: &TelemetryConfig, plan: &ExportPlan) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let b = opentelemetry_otlp::SpanExporter::builder();
    match plan.protocol {
        Protocol::HttpProtobuf => http_exporter(b.with_http(), cfg, plan)?.build(),
        Protocol::Grpc => grpc_exporter(b.with_tonic(), cfg, plan).build(),
    }
    .map_err(|e| start_error(&e))
}

fn otlp_metric_exporter(
    cfg: &TelemetryConfig,
    plan: &ExportPlan,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    let b = opentelemetry_otlp::MetricExporter::builder();
    match plan.protocol {
        Protocol::HttpProtobuf => http_exporter(b.with_http(), cfg, plan)?.build(),
        Protocol::Grpc => grpc_exporter(b.with_tonic(), cfg, plan).build(),
    }
    .map_err(|e| start_error(&e))
}

fn start_error(e: &dyn std::fmt::Display) -> TelemetryError {
    TelemetryError::Start(e.to_string())
}

/// An OTLP/HTTP exporter builder (traces or metrics) set up from the config:
/// the SDK's hyper client on the hyper + rustls (ring, system roots) stack
/// the AWS SDK uses (one TLS stack in the binary), headers, then what gRPC
/// shares ([`export_config`]).
fn http_exporter<B>(b: B, cfg: &TelemetryConfig, plan: &ExportPlan) -> Result<B, TelemetryError>
where
    B: opentelemetry_otlp::WithExportConfig + opentelemetry_otlp::WithHttpConfig,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| start_error(&e))?
        .https_or_http()
        .enable_http1()
        .build();
    // The client enforces the timeout on each request, as the SDK expects.
    let timeout = cfg.otlp_timeout.unwrap_or(std::time::Duration::from_secs(10));
    let client = opentelemetry_http::hyper::HyperClient::new(https, timeout, None);
    // Under the exporter's own key, `User-Agent`: the builder keeps headers
    // by their text, so another spelling would race with its default
    // (whichever a hash map yields last) instead of replacing it.
    let mut headers = std::collections::HashMap::from([(
        "User-Agent".to_string(),
        concat!("trailwatch/", env!("CARGO_PKG_VERSION")).to_string(),
    )]);
    for (k, v) in &cfg.otlp_headers {
        let k = if k.eq_ignore_ascii_case("user-agent") { "User-Agent".to_string() } else { k.clone() };
        headers.insert(k, v.clone());
    }
    let b = b.with_http_client(client).with_headers(headers);
    let b = export_config(b, cfg, plan);
    Ok(match gzip(cfg) {
        Some(c) => b.with_compression(c),
        None => b,
    })
}

/// An OTLP/gRPC exporter builder (traces or metrics) set up from the config.
fn grpc_exporter<B>(b: B, cfg: &TelemetryConfig, plan: &ExportPlan) -> B
where
    B: opentelemetry_otlp::WithExportConfig + opentelemetry_otlp::WithTonicConfig,
{
    let b = export_config(b.with_metadata(metadata(cfg)), cfg, plan);
    match gzip(cfg) {
        Some(c) => b.with_compression(c),
        None => b,
    }
}

/// Endpoint and timeout, where the config sets them (else the SDK's
/// `OTEL_*` variables and defaults apply).
fn export_config<B: opentelemetry_otlp::WithExportConfig>(mut b: B, cfg: &TelemetryConfig, plan: &ExportPlan) -> B {
    if let Some(e) = &plan.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(t) = cfg.otlp_timeout {
        b = b.with_timeout(t);
    }
    b
}

/// `none` cannot be forced over the variable: the exporter has no such value.
fn gzip(cfg: &TelemetryConfig) -> Option<opentelemetry_otlp::Compression> {
    (cfg.otlp_compression == Some(Compression::Gzip)).then_some(opentelemetry_otlp::Compression::Gzip)
}

/// `otlp_headers` as gRPC metadata.
fn metadata(cfg: &TelemetryConfig) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (k, v) in &cfg.otlp_headers {
        // Checked at start-up (validate); gRPC metadata keys are lower case.
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes());
        if let (Ok(key), Ok(value)) = (key, v.parse()) {
            metadata.insert(key, value);
        }
    }
    metadata
}

/// The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
/// telemetry.sdk.*) with trailwatch's defaults under it and the config's
/// keys over it.
fn resource(cfg: &TelemetryConfig) -> Resource {
    let detected = Resource::builder().build();
    let has = |k: &'static str| detected.get(&opentelemetry::Key::from_static_str(k)).is_some();
    let mut defaults = Vec::new();
    if !has("service.version") {
        defaults.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !has("service.instance.id") {
        defaults.push(KeyValue::new("service.instance.id", instance_id()));
    }
    let env_name = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|v| v.to_string())
        .filter(|n| !n.starts_with("unknown_service"));
    let name = cfg.service_name.clone().or(env_name).unwrap_or_else(|| "trailwatch".to_string());
    Resource::builder()
        .with_attributes(defaults)
        .with_attributes(cfg.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .with_service_name(name)
        .build()
}

/// A per-process id, as OpenTelemetry recommends: a random UUID (v4).
fn instance_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
