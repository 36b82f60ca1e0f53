//! The Kinesis Data Streams source: one reader per shard, checkpoints per
//! shard, resharding handled (parents finish before children).
//!
//! A coordinator lists the shards (ListShards, paginated) at start and every
//! `shard_discovery_interval`, and starts a reader for each shard whose
//! parents (if still in the stream) have been read to their end. A reader
//! resumes after its committed sequence number (AFTER_SEQUENCE_NUMBER), or
//! starts at the configured position; a child of a shard we read starts at
//! TRIM_HORIZON. Each GetRecords response is one batch whose checkpoint is its
//! last sequence number; a closed shard read to its end is committed as
//! `SHARD_END`. Polling stays under the 5 GetRecords/s per shard limit
//! (`poll_interval` ≥ 200 ms), doubles up to `max_idle_poll_interval` while a
//! shard is idle, and backs off with jitter on throttling; an expired iterator
//! is replaced from the last position. Records may be raw events, EventBridge
//! events or gzip CloudWatch Logs subscription batches (the shared decoders).
//!
//! IAM: `kinesis:ListShards`, `kinesis:GetShardIterator`, `kinesis:GetRecords`
//! on the stream (and `kms:Decrypt` on its key when it is encrypted with a
//! customer-managed key).
//!
//! With `coordination = "leases"` ([`leases`]) several instances share the
//! stream: each renews, takes and balances shard leases in a DynamoDB table
//! every third of `failover_time`, reads only the shards it holds (a child
//! once its parents' leases are at `SHARD_END`), checkpoints into the lease
//! (`state/leased.rs`) with the shard's window state, and is ready once a
//! lease round succeeded (not ready after three failed rounds). IAM on the
//! lease table: `dynamodb:Scan`, `dynamodb:GetItem`, `dynamodb:PutItem`, `dynamodb:UpdateItem`.

mod config;
pub mod leases;
mod source;

pub use config::{Coordination, KinesisSourceConfig, StartPosition};
pub use source::KinesisSource;
