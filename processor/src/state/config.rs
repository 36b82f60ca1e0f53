//! `[checkpoints]`: where positions and window state are kept.

use serde::{Deserialize, Serialize};

/// Which checkpoint store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A file in `service.state_dir` (one instance).
    #[default]
    File,
    /// A DynamoDB table, window snapshots in S3 (deployments).
    Dynamodb,
    /// Nothing is kept (replays, demos): a restart reads from the start position.
    None,
}

/// `[checkpoints]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointsConfig {
    pub store: StoreKind,
    /// DynamoDB table (partition key `pk`, string).
    pub table: Option<String>,
    /// S3 bucket and prefix for window-state snapshots (dynamodb store).
    pub snapshot_bucket: Option<String>,
    pub snapshot_prefix: String,
    /// Names this deployment's items, so several can share a table.
    pub key_prefix: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl Default for CheckpointsConfig {
    fn default() -> Self {
        CheckpointsConfig {
            store: StoreKind::File,
            table: None,
            snapshot_bucket: None,
            snapshot_prefix: "trailwatch/".to_string(),
            key_prefix: "trailwatch".to_string(),
            region: None,
            endpoint_url: None,
        }
    }
}
