use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::timetext::{duration_text, duration_text_opt};

/// `type = "sqs"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqsSourceConfig {
    pub queue_url: String,
    /// Concurrent ReceiveMessage loops.
    pub receivers: usize,
    /// Messages per ReceiveMessage (1 to 10).
    pub max_messages: i32,
    /// Long-poll wait (0 to 20 s).
    #[serde(with = "duration_text")]
    pub wait_time: Duration,
    /// Visibility timeout asked for on receive (default: the queue's own);
    /// extended while a message's batch is still in flight.
    #[serde(with = "duration_text_opt")]
    pub visibility_timeout: Option<Duration>,
    /// Largest S3 object (CloudTrail log file) read for a notification.
    pub max_object_bytes: u64,
    /// Region and endpoint for this queue and its S3 objects (default: `[aws]`).
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl Default for SqsSourceConfig {
    fn default() -> Self {
        SqsSourceConfig {
            queue_url: String::new(),
            receivers: 4,
            max_messages: 10,
            wait_time: Duration::from_secs(20),
            visibility_timeout: None,
            max_object_bytes: 512 << 20,
            region: None,
            endpoint_url: None,
        }
    }
}

impl SqsSourceConfig {
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        let at = format!("sources.{name}");
        if self.queue_url.trim().is_empty() {
            problems.push(format!("{at}.queue_url is empty"));
        }
        if self.receivers == 0 {
            problems.push(format!("{at}.receivers must be at least 1"));
        }
        if !(1..=10).contains(&self.max_messages) {
            problems.push(format!("{at}.max_messages must be between 1 and 10"));
        }
        if self.wait_time > Duration::from_secs(20) {
            problems.push(format!("{at}.wait_time is at most 20s"));
        }
        if let Some(v) = self.visibility_timeout {
            if v > Duration::from_secs(12 * 3600) {
                problems.push(format!("{at}.visibility_timeout is at most 12h"));
            }
        }
    }
}
