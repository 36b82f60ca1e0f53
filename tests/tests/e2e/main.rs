//! The end-to-end tests that need no process-wide state of their own, in one
//! test binary: each links the whole service and the AWS SDK, and one binary
//! instead of sixteen keeps the build's disk and link time small. Tests that
//! set environment variables, install global telemetry or assert on the
//! process-wide metrics registry (service, observability, security_lake,
//! otlp*, responses) keep their own binaries.

mod crash;
mod dynamodb;
mod emulators;
mod faults;
mod first_seen;
mod kinesis;
mod leases;
mod leases_run;
mod leases_snapshots;
mod org_context;
mod rekey_run;
mod replay_archive;
mod replay_pipeline;
mod securityhub;
mod sqs;

/// The multi-process scenarios share a 2-core machine. The lease and re-key
/// runs (three `trailwatch run` processes and two emulators, with takeover
/// timings) take it alone (`write`); the kill -9 and fault runs may pair with
/// each other (`read`), as they did in binaries of their own.
pub static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
