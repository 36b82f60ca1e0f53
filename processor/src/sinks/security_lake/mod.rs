//! Findings into Amazon Security Lake as a custom source: OCSF Detection
//! Finding (class 2004, the `findings::ocsf` mapping) rows in Parquet files,
//! one per partition `<prefix>/region=<region>/accountId=<account>/eventDay=<YYYYMMDD>/`,
//! rows sorted by `time`, uploaded to S3 (optionally as the source's role).
//!
//! Commit protocol: `send` buffers rows per partition; `flush` appends them
//! to the partition's journal in the staging directory and syncs it, so a
//! commit waits until its findings are durably staged. A journal is rolled
//! into a Parquet file (synced, then renamed into place) once it reaches
//! `roll_bytes` (closed at a row boundary, a big commit continuing in a new
//! journal) or `roll_age` (checked at each commit and every second by the
//! uploader, so a quiet partition is not held back), and the uploader task
//! puts finished files to S3, deleting each after its upload; failed uploads
//! stay staged and are retried with backoff (1 s to 30 s), the sink not
//! ready meanwhile. After a crash, the next start rolls the journals it finds and
//! uploads the finished files: nothing committed is lost. An object key is
//! fixed when its file is staged, so a retried upload overwrites, never
//! duplicates. A correlation update is a new row with activity Update
//! (same `finding_info.uid`).
//!
//! `eventDay` is the UTC day of the row's OCSF `time`, the time of the
//! finding event (created or updated: ASFF UpdatedAt), not of the
//! CloudTrail events that triggered it, which are in
//! `finding_info.first_seen_time` / `last_seen_time`. Why: OCSF defines a
//! finding's `time` as the finding's creation/update time and Security Lake
//! partitions a source by its records' event time, so `eventDay` and `time`
//! must agree for Athena's partition pruning (`eventDay`) and exact filters
//! (`time`) to select the same rows; a finding made today about events
//! delivered late (CloudTrail's delivery delay, a long correlation window,
//! a backfill) lands in today's partition, where an incremental reader of
//! the lake looks for new data, instead of being written into a day that
//! readers have already processed. Each file therefore holds rows of one
//! day and is sorted by `time`.

mod config;
#[cfg(feature = "security-lake")]
pub mod parquet;
#[cfg(feature = "security-lake")]
mod sink;

pub use config::{SecurityLakeSinkConfig, MAX_ROLL_AGE, MIN_ROLL_AGE};
#[cfg(feature = "security-lake")]
pub use sink::SecurityLakeSink;
