//! Sources: where events come from. Each source runs as its own task, decodes
//! its input into [`EventBatch`]es and sends them, in order per partition,
//! through a bounded channel (a full channel slows it down: backpressure).
//! A batch carries its checkpoint and/or an acknowledgement channel; the
//! pipeline commits them only once every finding from the batch is accepted
//! by the sinks and the window state that counted it is durable.
//!
//! One folder per source: `file` (local files and stdin, the embedded
//! default), `kinesis`, `sqs`.

pub mod file;
pub mod kinesis;
pub mod sqs;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decode::DecodeOptions;
use crate::health::Health;
use crate::pipeline::batch::{EventBatch, SourceBatch};
use crate::pipeline::Input;

pub use file::FileSourceConfig;
pub use kinesis::KinesisSourceConfig;
pub use sqs::SqsSourceConfig;

/// `[sources.<name>]`: one entry per source, by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SourceConfig {
    File(FileSourceConfig),
    Kinesis(KinesisSourceConfig),
    Sqs(SqsSourceConfig),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Kinesis(_) => "kinesis",
            SourceConfig::Sqs(_) => "sqs",
        }
    }

    /// Checks that need no I/O; problems are pushed with the source's name.
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        match self {
            SourceConfig::File(c) => c.validate(name, problems),
            SourceConfig::Kinesis(c) => c.validate(name, problems),
            SourceConfig::Sqs(c) => c.validate(name, problems),
        }
    }

    /// Does the input end by itself (files), or run until shut down?
    pub fn is_finite(&self) -> bool {
        match self {
            SourceConfig::File(c) => c.exit_when_done,
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{operation} failed: {message}")]
    Aws { operation: &'static str, message: String },
    #[error("{0}")]
    Config(String),
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
    /// Another instance owns this input, or the stream is gone: stop the service.
    #[error("{0}")]
    Fatal(String),
}

/// What a running source gets from the service.
pub struct SourceContext {
    /// The configured name (`[sources.<name>]`), a metric label.
    pub name: Arc<str>,
    pub out: BatchSender,
    /// Cancelled at shutdown: stop reading, return.
    pub shutdown: CancellationToken,
    /// Committed positions of this source from the last run, by partition.
    pub checkpoints: BTreeMap<String, String>,
    pub health: Arc<Health>,
    pub decode: DecodeOptions,
    /// A Kinesis source's lease coordinator (`coordination = "leases"`).
    pub leases: Option<Arc<crate::sources::kinesis::leases::LeaseCoordinator>>,
}

/// Sends batches to the detector stage.
#[derive(Clone)]
pub struct BatchSender {
    tx: mpsc::Sender<Input>,
}

impl BatchSender {
    pub(crate) fn new(tx: mpsc::Sender<Input>) -> Self {
        BatchSender { tx }
    }

    /// Sends a batch, waiting while the pipeline is full. Returns false when
    /// the pipeline has stopped (the batch is not processed).
    pub async fn send(&self, batch: SourceBatch) -> bool {
        self.tx.send(Input::Batch(Box::new(batch))).await.is_ok()
    }

    /// For sources that read in a blocking thread.
    pub fn blocking_send(&self, batch: SourceBatch) -> bool {
        self.tx.blocking_send(Input::Batch(Box::new(batch))).is_ok()
    }
}

/// A source of events.
#[async_trait]
pub trait Source: Send {
    /// Reads until the input ends (finite sources) or `ctx.shutdown` is
    /// cancelled. Batches already sent are processed even after it returns.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}

/// Builds the source of a config entry (connects AWS clients; no reads yet).
pub async fn build(
    name: &str,
    cfg: &SourceConfig,
    aws: &crate::aws::AwsConfig,
) -> Result<Box<dyn Source>, SourceError> {
    Ok(match cfg {
        SourceConfig::File(c) => Box::new(file::FileSource::new(c.clone())),
        SourceConfig::Kinesis(c) => Box::new(kinesis::KinesisSource::build(name, c, aws).await?),
        SourceConfig::Sqs(c) => Box::new(sqs::SqsSource::build(name, c, aws).await?),
    })
}

/// The span of one batch being read and decoded: the root of the batch's
/// trace (created once per batch, never per event). Waiting for input (a
/// long poll, an idle shard) is not in it: it starts when there is input.
pub fn batch_span(source: &str, shard: &str) -> tracing::Span {
    use tracing::field::Empty;
    let span =
        tracing::info_span!("source_batch", source, shard = Empty, records = Empty, events = Empty, bytes = Empty);
    if !shard.is_empty() {
        span.record("shard", shard);
    }
    span
}

/// Counts a batch in the source metrics, records its size on its span and
/// closes the span; returns the trace context the batch carries on.
pub fn finish_batch(
    span: tracing::Span,
    source: &str,
    shard: &str,
    units: u64,
    batch: &EventBatch,
) -> Option<crate::telemetry::TraceContext> {
    count_batch(source, shard, units, batch);
    // i64: tracing-opentelemetry records unsigned fields as text.
    span.record("records", units as i64);
    span.record("events", batch.len() as i64);
    span.record("bytes", batch.input_bytes as i64);
    crate::telemetry::context_of(&span)
}

/// Counts a batch in the source metrics (records = input units).
pub fn count_batch(source: &str, shard: &str, units: u64, batch: &EventBatch) {
    let m = crate::metrics::get();
    m.source_records.with_label_values(&[source, shard]).inc_by(units);
    m.source_bytes.with_label_values(&[source, shard]).inc_by(batch.input_bytes);
    m.source_events.with_label_values(&[source, shard]).inc_by(batch.len() as u64);
    for (reason, n) in &batch.skipped {
        m.source_skipped.with_label_values(&[source, reason]).inc_by(*n);
    }
}
