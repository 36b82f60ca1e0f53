//! Sinks: where findings go. The sink stage hands each sink every finding
//! (`send`, which may buffer) and, at each commit, asks it to `flush`: when
//! flush returns Ok, everything sent before is delivered or durably spooled,
//! and the sources' checkpoints may move past it. Several sinks at once;
//! one folder per sink: `jsonl` (ASFF or OCSF JSON lines to a file or
//! stdout), `securityhub` (BatchImportFindings), `security_lake` (OCSF
//! Parquet in a Security Lake custom source).

pub mod dead_letter;
pub mod jsonl;
pub mod security_lake;
pub mod securityhub;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::findings::Finding;
use crate::findings::FindingContext;

pub use jsonl::{JsonlFormat, JsonlSinkConfig};
pub use security_lake::SecurityLakeSinkConfig;
pub use securityhub::SecurityHubSinkConfig;

/// `[sinks.<name>]`: one entry per sink, by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkConfig {
    /// ASFF findings, one JSON object per line.
    AsffJsonl(JsonlSinkConfig),
    /// OCSF Detection Findings (class 2004), one JSON object per line.
    OcsfJsonl(JsonlSinkConfig),
    Securityhub(SecurityHubSinkConfig),
    /// OCSF Detection Findings as Parquet in a Security Lake custom source.
    SecurityLake(SecurityLakeSinkConfig),
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::AsffJsonl(_) => "asff-jsonl",
            SinkConfig::OcsfJsonl(_) => "ocsf-jsonl",
            SinkConfig::Securityhub(_) => "securityhub",
            SinkConfig::SecurityLake(_) => "security-lake",
        }
    }

    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        match self {
            SinkConfig::AsffJsonl(c) | SinkConfig::OcsfJsonl(c) => c.validate(name, problems),
            SinkConfig::Securityhub(c) => c.validate(name, problems),
            SinkConfig::SecurityLake(c) => c.validate(name, problems),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
    /// Findings could be neither delivered nor spooled; try again later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
}

/// A destination for findings.
#[async_trait]
pub trait Sink: Send {
    /// Takes findings; may buffer them. Waits when the sink is saturated.
    async fn send(&mut self, findings: &[Arc<Finding>]) -> Result<(), SinkError>;
    /// Returns Ok once everything sent so far is delivered or spooled.
    async fn flush(&mut self) -> Result<(), SinkError>;
    /// Flushes and releases resources (end of the run).
    async fn close(&mut self) -> Result<(), SinkError> {
        self.flush().await
    }
    /// Takes analysts' response requests (Security Hub custom actions); only
    /// the responder acts on them.
    async fn requests(
        &mut self,
        _requests: &[Arc<crate::findings::request::ResponseRequest>],
    ) -> Result<(), SinkError> {
        Ok(())
    }
    /// For /readyz: false while the destination is failing.
    fn healthy(&self) -> bool {
        true
    }
}

/// Everything a sink may need to build itself.
pub struct SinkContext<'a> {
    pub name: &'a str,
    pub aws: &'a crate::aws::AwsConfig,
    pub findings: &'a FindingContext,
    pub state_dir: &'a std::path::Path,
    pub health: Arc<crate::health::Health>,
}

/// Builds the sink of a config entry.
pub async fn build(cfg: &SinkConfig, ctx: &SinkContext<'_>) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match cfg {
        SinkConfig::AsffJsonl(c) => Box::new(jsonl::JsonlSink::open(ctx.name, c, JsonlFormat::Asff).await?),
        SinkConfig::OcsfJsonl(c) => Box::new(jsonl::JsonlSink::open(ctx.name, c, JsonlFormat::Ocsf).await?),
        SinkConfig::Securityhub(c) => Box::new(securityhub::SecurityHubSink::build(c, ctx).await?),
        #[cfg(feature = "security-lake")]
        SinkConfig::SecurityLake(c) => Box::new(security_lake::SecurityLakeSink::build(c, ctx).await?),
        #[cfg(not(feature = "security-lake"))]
        SinkConfig::SecurityLake(_) => {
            return Err(SinkError::Config(
                "this trailwatch is built without the security-lake feature (cargo build --features security-lake)"
                    .into(),
            ))
        }
    })
}

/// Records end-to-end latency for findings a sink has delivered.
pub fn observe_delivered(findings: &[Arc<Finding>]) {
    let m = crate::metrics::get();
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    for f in findings {
        if let Some(t) = f.event_time_ms {
            m.event_to_finding.observe((now_ms - t).max(0) as f64 / 1000.0);
        }
        if let Some(t) = f.ingest_ms {
            m.ingest_to_finding.observe((now_ms - t).max(0) as f64 / 1000.0);
        }
    }
}
