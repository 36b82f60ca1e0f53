//! The Security Hub sink: BatchImportFindings, batched, rate-limited,
//! retried, spooled to disk when Security Hub is unreachable.

mod config;
mod sink;

pub use config::SecurityHubSinkConfig;
pub use sink::SecurityHubSink;
