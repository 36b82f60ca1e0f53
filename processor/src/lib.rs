//! trailwatch-processor: the service and CLI around the Sigma engine.
//!
//! Data flow of `trailwatch replay`: [`replay`] walks inputs → [`decode`]
//! turns bytes into events (format detection, envelopes, positions) →
//! `trailwatch_rules::RuleSet` evaluates them → [`findings`] builds ASFF
//! findings → one JSON finding per line. [`ruleset`] loads rule directories
//! and the built-in pack; [`cli`] holds the commands; [`telemetry`] logging.
pub mod cli;
pub mod config;
pub mod decode;
pub mod findings;
pub mod replay;
pub mod ruleset;
pub mod telemetry;
