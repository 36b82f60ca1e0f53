use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::timetext::duration_text;

/// Security Lake takes a custom source's objects at most every 5 minutes and
/// at least once a day.
pub const MIN_ROLL_AGE: Duration = Duration::from_secs(5 * 60);
pub const MAX_ROLL_AGE: Duration = Duration::from_secs(24 * 3600);

/// `type = "security-lake"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityLakeSinkConfig {
    /// The Security Lake bucket of the region (`aws-security-data-lake-<region>-<id>`).
    pub bucket: String,
    /// The custom source's name, as registered (CreateCustomLogSource).
    pub source_name: String,
    /// Key prefix of the source's objects; default `ext/<source_name>`.
    pub prefix: Option<String>,
    /// The role Security Lake created for the custom source; assumed for the
    /// uploads (default: the service's own credentials).
    pub role_arn: Option<String>,
    /// External id the custom source's role requires.
    pub external_id: Option<String>,
    /// A partition's file is rolled (encoded and uploaded) once its findings
    /// take this many bytes as OCSF JSON…
    pub roll_bytes: u64,
    /// …or once its oldest finding has waited this long (5m to 1d).
    #[serde(with = "duration_text")]
    pub roll_age: Duration,
    /// Staged findings and files not yet uploaded (default: state_dir/security-lake/<sink>).
    pub staging_dir: Option<PathBuf>,
    /// Partition region for findings whose event has none (default: the sink's region).
    pub default_region: Option<String>,
    /// Region and endpoint of the S3 client (default: `[aws]`).
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl Default for SecurityLakeSinkConfig {
    fn default() -> Self {
        SecurityLakeSinkConfig {
            bucket: String::new(),
            source_name: String::new(),
            prefix: None,
            role_arn: None,
            external_id: None,
            roll_bytes: 64 << 20,
            roll_age: Duration::from_secs(15 * 60),
            staging_dir: None,
            default_region: None,
            region: None,
            endpoint_url: None,
        }
    }
}

impl SecurityLakeSinkConfig {
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        let at = format!("sinks.{name}");
        if self.bucket.is_empty() {
            problems.push(format!("{at}.bucket is required (the Security Lake bucket)"));
        }
        if self.source_name.is_empty() && self.prefix.is_none() {
            problems.push(format!("{at}.source_name is required (the custom source's name)"));
        }
        if !(MIN_ROLL_AGE..=MAX_ROLL_AGE).contains(&self.roll_age) {
            problems.push(format!(
                "{at}.roll_age must be between 5m and 1d (Security Lake takes a source's objects at most every \
                 5 minutes and at least daily)"
            ));
        }
        if !(1 << 20..=1 << 30).contains(&self.roll_bytes) {
            problems.push(format!("{at}.roll_bytes must be between 1 MiB and 1 GiB"));
        }
        if self.external_id.is_some() && self.role_arn.is_none() {
            problems.push(format!("{at}.external_id needs role_arn"));
        }
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.starts_with('/') || p.ends_with('/') {
                problems.push(format!("{at}.prefix must be a key prefix without leading or trailing '/'"));
            }
        }
    }

    /// The key prefix of the source's objects.
    pub fn key_prefix(&self) -> String {
        self.prefix.clone().unwrap_or_else(|| format!("ext/{}", self.source_name))
    }
}
