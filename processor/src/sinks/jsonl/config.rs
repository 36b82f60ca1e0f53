use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `type = "asff-jsonl"` or `type = "ocsf-jsonl"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlSinkConfig {
    /// A file (appended to) or "-" for stdout.
    pub path: PathBuf,
    /// Start the file afresh instead of appending.
    pub truncate: bool,
}

impl Default for JsonlSinkConfig {
    fn default() -> Self {
        JsonlSinkConfig { path: PathBuf::from("-"), truncate: false }
    }
}

impl JsonlSinkConfig {
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        if self.path.as_os_str().is_empty() {
            problems.push(format!("sinks.{name}.path is empty (use \"-\" for stdout)"));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonlFormat {
    Asff,
    Ocsf,
}
