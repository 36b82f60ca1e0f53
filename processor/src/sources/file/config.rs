use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `type = "file"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileSourceConfig {
    /// Files, directories (walked recursively) or "-" for stdin.
    pub paths: Vec<PathBuf>,
    /// Stop the service once every file is read (false: keep serving
    /// metrics and the other sources until shut down).
    pub exit_when_done: bool,
    /// Events per batch handed to the rules.
    pub batch_events: usize,
}

impl Default for FileSourceConfig {
    fn default() -> Self {
        FileSourceConfig { paths: Vec::new(), exit_when_done: true, batch_events: 2048 }
    }
}

impl FileSourceConfig {
    pub fn validate(&self, name: &str, problems: &mut Vec<String>) {
        if self.paths.is_empty() {
            problems.push(format!("sources.{name}.paths is empty"));
        }
        if self.batch_events == 0 {
            problems.push(format!("sources.{name}.batch_events must be at least 1"));
        }
    }
}
