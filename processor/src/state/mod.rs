//! Where commits go: the checkpoint of every source partition and the
//! window state, written together so that a restart resumes exactly where
//! the last commit left off (see `service/design.md`).
//!
//! - `file`: one directory, one instance (the default);
//! - `dynamodb`: a DynamoDB table with conditional writes (a checkpoint
//!   never moves backwards, even with two instances), window snapshots in S3.

mod config;
pub mod dynamodb;
pub mod file;
pub mod leased;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use config::{CheckpointsConfig, StoreKind};

/// What one commit makes durable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// Commit counter (grows by one per commit).
    pub commit: u64,
    /// `<source>/<partition>` → position (e.g. a Kinesis sequence number).
    pub positions: BTreeMap<String, String>,
    /// The detector's window snapshot (JSON), when there are correlations.
    pub windows: Option<Vec<u8>>,
    /// Leased shards' window snapshots (JSON), by position key, taken at
    /// this commit (stored with the lease's checkpoint, `state/leased.rs`).
    pub shard_windows: BTreeMap<String, Vec<u8>>,
}

impl Committed {
    /// The positions of one source, by partition.
    pub fn positions_of(&self, source: &str) -> BTreeMap<String, String> {
        let prefix = format!("{source}/");
        self.positions.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|p| (p.to_string(), v.clone()))).collect()
    }

    pub fn key(source: &str, partition: &str) -> String {
        format!("{source}/{partition}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
    #[error("state is not valid: {0}")]
    Invalid(String),
    #[error("{operation} failed: {message}")]
    Aws { operation: &'static str, message: String, retryable: bool },
    /// Another instance committed a later position: this one must stop.
    #[error("checkpoint conflict: {0}")]
    Conflict(String),
}

impl StateError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StateError::Io { .. } => true,
            StateError::Aws { retryable, .. } => *retryable,
            StateError::Invalid(_) | StateError::Conflict(_) => false,
        }
    }
}

#[async_trait]
pub trait StateStore: Send + Sync {
    /// The last commit, if any.
    async fn load(&self) -> Result<Option<Committed>, StateError>;
    /// Makes `c` durable. `changed` lists the position keys that moved since
    /// the previous commit (stores that write per key use it).
    async fn commit(&self, c: &Committed, changed: &[String]) -> Result<(), StateError>;
    /// For logs: where the state lives.
    fn describe(&self) -> String;
}

/// Builds the store the config asks for (None: nothing is kept).
/// `state_dir` holds the file store (`service.state_dir`).
pub async fn build(
    cfg: &CheckpointsConfig,
    state_dir: &std::path::Path,
    aws: &crate::aws::AwsConfig,
) -> Result<Option<Box<dyn StateStore>>, StateError> {
    Ok(match cfg.store {
        StoreKind::None => None,
        StoreKind::File => Some(Box::new(file::FileStore::open(state_dir)?)),
        StoreKind::Dynamodb => Some(Box::new(dynamodb::DynamoStore::build(cfg, aws).await?)),
    })
}
