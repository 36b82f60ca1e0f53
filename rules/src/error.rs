//! Errors and warnings a rule author sees: always with file, line and reason.

use std::fmt;

/// A rule that cannot be loaded or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct RuleError {
    pub file: String,
    /// 1-based line in `file` (the offending key where known, else the
    /// start of the rule's YAML document).
    pub line: usize,
    pub reason: String,
}

impl RuleError {
    pub fn new(file: impl Into<String>, line: usize, reason: impl Into<String>) -> Self {
        RuleError { file: file.into(), line, reason: reason.into() }
    }
}

/// Something that loads but deserves the author's attention (a rule for a
/// log source trailwatch never sees, a placeholder with no values, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleWarning {
    pub file: String,
    pub line: usize,
    pub message: String,
    /// For a rule whose log source trailwatch never reads: that source
    /// (`product windows`, `service okta`), so a load of a whole rule
    /// repository can say it in one line instead of one per rule.
    pub unread_source: Option<String>,
}

impl fmt::Display for RuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file, self.line, self.message)
    }
}

/// Several rule errors from one load, shown one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
