//! Logs and traces (metrics live in [`crate::metrics`]).
//!
//! - [`config`]: `[telemetry]` and how it combines with the `OTEL_*`
//!   environment variables into [`ExportSettings`];
//! - `layer`: a `tracing_subscriber` layer that records the spans its filter
//!   enables (ids, parent, times, fields, events, error status) into a
//!   bounded queue, dropping and counting when it is full;
//! - `otlp`: the exporter thread: batches from the queue, OTLP/HTTP POSTs
//!   with retries, the flush at shutdown;
//! - `proto`: the hand-written protobuf encoding of the OTLP trace messages.
//!
//! ```text
//! tracing spans ──▶ OtlpLayer ──try_send──▶ queue (bounded) ──▶ exporter thread ──POST──▶ <endpoint>/v1/traces
//! ```
//!
//! The pipeline's spans: `source_batch` (a source reading and decoding one
//! batch) is the root of a batch's trace; `detector_batch` (rules over it)
//! and `sink_send` (its findings to one sink) join it across the channels
//! between stages with [`context_of`] and [`set_parent`]; `commit` (with
//! its `sink_flush` children) is a trace of its own per commit.

pub mod config;
mod layer;
mod otlp;
mod proto;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use config::{Compression, ExportSettings, LogFormat, SettingsError, TelemetryConfig, TraceIdFormat};
pub use otlp::ExportReport;

/// Where a span sits in its trace: enough to parent work done elsewhere
/// (another thread, after a channel) under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// The trace context of `span`; None when traces are not exported (or
/// the span is disabled).
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let s = registry.span(id)?;
        let ext = s.extensions();
        ext.get::<layer::SpanState>().map(|st| st.ctx)
    })
    .flatten()
}

/// Makes `span` a child of `parent` (same trace, same sampling decision).
/// Call it right after creating the span, before it has children.
pub fn set_parent(span: &tracing::Span, parent: Option<TraceContext>) {
    let Some(p) = parent else { return };
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else { return };
        let Some(s) = registry.span(id) else { return };
        let mut ext = s.extensions_mut();
        if let Some(st) = ext.get_mut::<layer::SpanState>() {
            st.ctx.trace_id = p.trace_id;
            st.ctx.sampled = p.sampled;
            st.parent = Some(p.span_id);
        }
    });
}

/// Sets `span`'s status to error with `message` (an ERROR event inside a
/// span does the same; this is for failures logged at a lower level).
pub fn mark_error(span: &tracing::Span, message: &str) {
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else { return };
        let Some(s) = registry.span(id) else { return };
        let mut ext = s.extensions_mut();
        if let Some(st) = ext.get_mut::<layer::SpanState>() {
            st.set_error(message);
        }
    });
}

/// Logs only, to stderr (commands other than `run`); `RUST_LOG` wins over
/// the `--log-level` default.
pub fn init_logging(level: &str, format: LogFormat) {
    let _ = tracing_subscriber::registry().with(log_layer(level, format)).try_init();
}

fn log_layer(level: &str, format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
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
    #[error("cannot start the OTLP exporter: {0}")]
    Start(std::io::Error),
    #[error("a tracing subscriber is already installed in this process: spans could not be exported")]
    AlreadyInstalled,
}

/// Logs, plus trace export when configured; [`Telemetry::shutdown`]
/// flushes the traces at exit.
pub struct Telemetry {
    exporter: Option<otlp::ExporterHandle>,
}

impl Telemetry {
    /// Installs the process-wide subscriber: logs as `[telemetry]` says,
    /// and the OTLP layer when an endpoint is configured (`env` looks up
    /// `OTEL_*` variables; see [`config`] for the order).
    pub fn init(
        cfg: &TelemetryConfig,
        log_level: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Telemetry, TelemetryError> {
        let Some(settings) = ExportSettings::resolve(cfg, env)? else {
            init_logging(log_level, cfg.log_format);
            return Ok(Telemetry { exporter: None });
        };
        let url = settings.url.clone();
        let filter = EnvFilter::builder()
            .parse(&settings.filter)
            .map_err(|e| SettingsError::Config { key: "trace_filter".into(), reason: e.to_string() })?;
        let (tx, rx) = tokio::sync::mpsc::channel(settings.queue_size);
        let sampler = layer::Sampler::ratio(settings.sample_ratio);
        let id_format = settings.id_format;
        let exporter = otlp::start(settings, rx).map_err(TelemetryError::Start)?;
        tracing_subscriber::registry()
            .with(log_layer(log_level, cfg.log_format))
            .with(layer::OtlpLayer::new(tx, sampler, id_format).with_filter(filter))
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        tracing::info!(%url, "exporting traces over OTLP/HTTP");
        Ok(Telemetry { exporter: Some(exporter) })
    }

    pub fn exports_traces(&self) -> bool {
        self.exporter.is_some()
    }

    /// Exports every finished span by `deadline` and stops the exporter.
    pub fn shutdown(self, deadline: std::time::Instant) -> Option<ExportReport> {
        self.exporter.and_then(|e| e.shutdown(deadline))
    }
}
