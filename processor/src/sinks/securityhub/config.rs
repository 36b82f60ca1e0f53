use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::timetext::duration_text;

/// `type = "securityhub"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHubSinkConfig {
    /// Findings per BatchImportFindings call (at most 100).
    pub batch_size: usize,
    /// Longest a finding waits for its batch to fill.
    #[serde(with = "duration_text")]
    pub batch_timeout: Duration,
    /// Requests per second per account and region (Security Hub allows 10/s, burst 30).
    pub requests_per_second: f64,
    pub burst: u32,
    /// Calls in flight at once per account and region.
    pub concurrency: usize,
    /// Retries of a throttled or failed call before the findings are spooled.
    pub max_retries: u32,
    /// Attempts a route (account and region) may be refused in a row (access
    /// denied, failed AssumeRole, …: neither transient nor invalid input)
    /// before its findings are dead-lettered with the reason instead of spooled.
    pub max_refused_attempts: u32,
    /// Longest a failing route is parked between attempts (doubling from 500 ms).
    #[serde(with = "duration_text")]
    pub park_max: Duration,
    /// Whether `spool_dir` outlives the process *and* its host (a local disk,
    /// EFS): then spooled findings count as accepted and checkpoints move on.
    /// `false` (e.g. container scratch storage): a commit waits until the
    /// spooled findings are delivered, so a lost spool loses nothing.
    pub spool_durable: bool,
    /// With `findings.report_to = "event-account"`: the role assumed in each
    /// member account to import its findings (`arn:aws:iam::<account>:role/<name>`).
    pub member_role_name: Option<String>,
    /// External id the member roles require, if any.
    pub external_id: Option<String>,
    /// On-disk spool for findings Security Hub could not take (default: state_dir/spool/<sink>).
    pub spool_dir: Option<PathBuf>,
    /// Spool size limit; beyond it the sink stops accepting (backpressure).
    pub spool_max_bytes: u64,
    /// Findings Security Hub rejects as invalid go here (default: state_dir/securityhub-rejected.ndjson).
    pub dead_letter: Option<PathBuf>,
    /// Region and endpoint (default: `[aws]`; the region of the finding's ProductArn wins).
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl Default for SecurityHubSinkConfig {
    fn default() -> Self {
        SecurityHubSinkConfig {
            batch_size: 100,
            batch_timeout: Duration::from_secs(1),
            requests_per_second: 10.0,
            burst: 30,
            concurrency: 4,
            max_retries: 8,
            max_refused_attempts: 10,
            park_max: Duration::from_secs(300),
            spool_durable: true,
            member_role_name: None,
            external_id: None,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            dead_letter: None,
            region: None,
            endpoint_url: None,
        }
    }
}

impl SecurityHubSinkConfig {
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        let at = format!("sinks.{name}");
        if !(1..=100).contains(&self.batch_size) {
            problems.push(format!("{at}.batch_size must be between 1 and 100"));
        }
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 10.0) {
            problems.push(format!("{at}.requests_per_second must be above 0 and at most 10 (Security Hub's limit)"));
        }
        if self.max_refused_attempts == 0 {
            problems.push(format!("{at}.max_refused_attempts must be at least 1"));
        }
        if self.park_max.is_zero() {
            problems.push(format!("{at}.park_max must be above 0"));
        }
        if self.concurrency == 0 {
            problems.push(format!("{at}.concurrency must be at least 1"));
        }
    }
}
