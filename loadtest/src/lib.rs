//! trailwatch-loadtest: a synthetic AWS organisation's traffic with injected
//! attacks and a ground truth, and a runner that measures trailwatch on it.
//!
//! Data flow of `generate`: [`org`] builds the org from the seed →
//! [`scenarios`] injects attacks and look-alikes at seeded times →
//! [`traffic`] emits benign activity slice by slice (5 minutes of event
//! time), [`record`] renders CloudTrail records and EventBridge events with
//! the [`json`] writer → [`generate`] merges each slice in time order →
//! [`output`] formats write it (CloudTrail log files, NDJSON, EventBridge,
//! CloudWatch Logs payloads) → [`truth`] and [`dataset`] write
//! `truth.json` and `trailwatch.toml`.
//!
//! `run`: [`runner`] replays a dataset through the `trailwatch` binary,
//! measures wall and CPU time and peak RSS, and scores the findings
//! against the truth. [`cli`] holds the commands; [`util`] ids and times.
//!
//! `leases`: [`leases`] runs the shard-lease protocol of `coordination =
//! "leases"` at org scale against DynamoDB and reports its operations, cost,
//! failover and scale-out times.
pub mod agents;
pub mod cli;
pub mod dataset;
pub mod generate;
pub mod json;
pub mod leases;
pub mod org;
pub mod output;
pub mod record;
pub mod runner;
pub mod scenarios;
pub mod traffic;
pub mod truth;
pub mod util;
