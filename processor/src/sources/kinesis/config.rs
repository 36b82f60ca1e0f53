use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::timetext::duration_text;

/// Where to start reading a shard that has no checkpoint yet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StartPosition {
    /// The oldest record kept by the stream.
    #[default]
    TrimHorizon,
    /// Only records put after the reader starts.
    Latest,
    /// Records from `start_timestamp` on.
    AtTimestamp,
}

/// How instances share the stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Coordination {
    /// One instance reads every shard (a second one is fenced out by the
    /// checkpoint store).
    #[default]
    Single,
    /// Shard leases in DynamoDB (`lease_table`): instances share the shards
    /// and take over a dead one's after `failover_time`. Checkpoints live in
    /// the lease items, with each shard's window state.
    Leases,
}

/// `type = "kinesis"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KinesisSourceConfig {
    /// Stream name (or give `stream_arn`).
    pub stream_name: Option<String>,
    pub stream_arn: Option<String>,
    /// For shards without a checkpoint.
    pub start_position: StartPosition,
    /// RFC 3339, with `start_position = "at-timestamp"`.
    pub start_timestamp: Option<String>,
    /// GetRecords Limit (at most 10000).
    pub max_records: i32,
    /// Wait between GetRecords calls of a shard that returned records (the
    /// service allows 5 calls/s per shard, shared by all consumers).
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// Longest wait between polls of an idle shard (the wait doubles from
    /// poll_interval while a shard returns nothing).
    #[serde(with = "duration_text")]
    pub max_idle_poll_interval: Duration,
    /// How often to look for new shards (resharding).
    #[serde(with = "duration_text")]
    pub shard_discovery_interval: Duration,
    /// Region and endpoint for this stream (default: `[aws]`).
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// `single` (default) or `leases`.
    pub coordination: Coordination,
    /// With `coordination = "leases"`: the DynamoDB lease table (partition
    /// key `leaseKey`, string), reached through `[aws]`.
    pub lease_table: Option<String>,
    /// With leases: how long a lease whose owner stopped renewing it is kept
    /// before another instance takes it over (renewals every third of it).
    #[serde(with = "duration_text")]
    pub failover_time: Duration,
    /// With leases: the event field the stream's partition key is made of.
    /// Each shard keeps its own windows, so every correlation must group by
    /// it (a window is never split across instances); others are refused.
    pub partition_key: String,
}

impl Default for KinesisSourceConfig {
    fn default() -> Self {
        KinesisSourceConfig {
            stream_name: None,
            stream_arn: None,
            start_position: StartPosition::TrimHorizon,
            start_timestamp: None,
            max_records: 10_000,
            poll_interval: Duration::from_millis(250),
            max_idle_poll_interval: Duration::from_secs(2),
            shard_discovery_interval: Duration::from_secs(30),
            region: None,
            endpoint_url: None,
            coordination: Coordination::Single,
            lease_table: None,
            failover_time: Duration::from_secs(30),
            partition_key: "userIdentity.arn".to_string(),
        }
    }
}

impl KinesisSourceConfig {
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        let at = format!("sources.{name}");
        if self.stream_name.is_none() && self.stream_arn.is_none() {
            problems.push(format!("{at} needs stream_name or stream_arn"));
        }
        if !(1..=10_000).contains(&self.max_records) {
            problems.push(format!("{at}.max_records must be between 1 and 10000"));
        }
        if self.poll_interval < Duration::from_millis(200) {
            problems.push(format!("{at}.poll_interval below 200ms exceeds the 5 GetRecords/s per shard limit"));
        }
        if self.max_idle_poll_interval < self.poll_interval {
            problems.push(format!("{at}.max_idle_poll_interval must be at least poll_interval"));
        }
        if self.coordination == Coordination::Leases {
            if self.lease_table.as_deref().is_none_or(|t| t.trim().is_empty()) {
                problems.push(format!("{at}: coordination = \"leases\" needs lease_table"));
            }
            if self.partition_key.trim().is_empty() {
                problems.push(format!("{at}.partition_key must name an event field"));
            }
            if !(Duration::from_secs(3)..=Duration::from_secs(600)).contains(&self.failover_time) {
                problems.push(format!("{at}.failover_time must be between 3s and 10m"));
            }
        }
        match (self.start_position, &self.start_timestamp) {
            (StartPosition::AtTimestamp, None) => {
                problems.push(format!("{at}: start_position = \"at-timestamp\" needs start_timestamp"))
            }
            (_, Some(t)) if crate::timetext::parse_time(t).is_none() => {
                problems.push(format!("{at}.start_timestamp `{t}` is not an RFC 3339 time"))
            }
            _ => {}
        }
    }
}
