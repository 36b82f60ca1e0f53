//! trailwatch-processor: the service and CLI around the Sigma engine.
//!
//! Data flow of `trailwatch run` ([`service`]): [`sources`] (files, Kinesis,
//! SQS) read and [`decode`] input into batches → the detector stage
//! ([`evaluate`]: `trailwatch_rules` rules and correlation windows → ASFF
//! [`findings`]; bad records → `sinks::dead_letter`) → the sink stage ([`sinks`]: Security Hub, JSON lines),
//! which commits checkpoints and window state to a [`state`] store only after
//! the sinks accepted everything before them. [`metrics`], [`health`] and
//! [`http`] make it observable; [`aws`] builds SDK clients; [`config`] is the
//! typed configuration.
//!
//! `trailwatch replay` ([`replay`]) runs the same [`evaluate`] core
//! synchronously over archives. [`ruleset`] loads rule directories and the
//! built-in pack, with compile options derived from the [`config`]; [`cli`] holds the commands; [`telemetry`] sets up logging and
//! exports traces over OTLP.
pub mod aws;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod decode;
pub mod evaluate;
pub mod findings;
pub mod fuzz_targets;
pub mod health;
pub mod http;
pub mod metrics;
pub mod org;
pub mod panics;
pub mod pipeline;
pub mod rekey;
pub mod replay;
pub mod respond;
pub mod ruleset;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_support;
pub mod timetext;
pub mod tune;
