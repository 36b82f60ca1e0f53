//! Findings into Amazon Security Lake as a custom source: OCSF Detection
//! Finding (class 2004, the `findings::ocsf` mapping) rows in Parquet files,
//! one per partition `<prefix>/region=<region>/accountId=<account>/eventDay=<YYYYMMDD>/`,
//! rows sorted by `time`, uploaded to S3 (optionally as the source's role).
//!
//! Commit protocol: `send` buffers rows per partition; `flush` appends them
//! to the partition's journal in the staging directory and syncs it, so a
//! commit waits until its findings are durably staged. A journal is rolled
//! into a Parquet file (synced, then renamed into place) once it reaches
//! `roll_bytes` or `roll_age`, and the uploader task puts finished files to
//! S3, deleting each after its upload; failed uploads stay staged and are
//! retried. After a crash, the next start rolls the journals it finds and
//! uploads the finished files: nothing committed is lost. An object key is
//! fixed when its file is staged, so a retried upload overwrites, never
//! duplicates. A correlation update is a new row with activity Update
//! (same `finding_info.uid`).

mod config;
#[cfg(feature = "security-lake")]
pub mod parquet;
#[cfg(feature = "security-lake")]
mod sink;

pub use config::{SecurityLakeSinkConfig, MAX_ROLL_AGE, MIN_ROLL_AGE};
#[cfg(feature = "security-lake")]
pub use sink::SecurityLakeSink;
