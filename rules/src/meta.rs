//! Rule metadata: everything about a rule that is not its detection logic.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Sigma `level`, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Sigma specification's `status` values.
pub const STATUSES: [&str; 5] = ["stable", "test", "experimental", "deprecated", "unsupported"];

/// Which loaded rules report what they find (`[rules] min_level`, `status`,
/// `disabled`): what a SOC pointing at a public rule repository keeps from
/// it. A rule left out still runs when a correlation uses it (it feeds the
/// correlation, as a `generate: false` base rule does) but reports nothing
/// itself; a correlation left out reports nothing either.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSelect {
    /// Rules below this level report nothing (None: every level).
    pub min_level: Option<Level>,
    /// The `status` values that report (e.g. `stable`, `test`); empty: any.
    /// A rule that declares no status is not filtered by it.
    pub status: Vec<String>,
    /// Rule ids that report nothing.
    pub disabled: std::collections::BTreeSet<String>,
}

/// Why [`RuleSelect`] leaves a rule out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeftOut {
    Level,
    Status,
    Disabled,
}

impl RuleSelect {
    /// Why the rule of `meta` reports nothing; None: it reports.
    pub fn left_out(&self, meta: &RuleMeta) -> Option<LeftOut> {
        if self.disabled.contains(&meta.id) {
            return Some(LeftOut::Disabled);
        }
        if self.min_level.is_some_and(|min| meta.level < min) {
            return Some(LeftOut::Level);
        }
        match &meta.status {
            Some(st) if !self.status.is_empty() && !self.status.iter().any(|a| a.eq_ignore_ascii_case(st)) => {
                Some(LeftOut::Status)
            }
            _ => None,
        }
    }
}

/// Metadata of a detection or correlation rule, kept verbatim from the YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Sigma `id` (a UUID in SigmaHQ rules). Rules without one get a stable id
    /// derived from title, name, logsource and detection so findings stay deterministic.
    pub id: String,
    /// Sigma `name` (used by correlation rules to reference this rule).
    pub name: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub level: Level,
    pub status: Option<String>,
    pub author: Option<String>,
    pub date: Option<String>,
    pub modified: Option<String>,
    pub tags: Vec<String>,
    pub references: Vec<String>,
    pub falsepositives: Vec<String>,
    /// Every top-level key the Sigma schema does not define (e.g. our
    /// `remediation` and `nist_csf`), converted to JSON values.
    pub custom: BTreeMap<String, serde_json::Value>,
    /// The `finding:` title/description templates (also kept in `custom`),
    /// checked at load.
    #[serde(default)]
    pub finding: Option<crate::template::FindingText>,
    /// Where the rule came from (file path or `builtin:<name>`) and the line of
    /// its YAML document, for error messages and `rules list`.
    pub source: String,
    pub line: usize,
}

impl RuleMeta {
    /// NIST CSF subcategories the rule supports: tags `nist_csf.<fn>.<cat>-<n>`
    /// (e.g. `nist_csf.de.cm-7` → `DE.CM-7`) plus a custom `nist_csf` list.
    pub fn nist_csf(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for tag in &self.tags {
            if let Some(rest) = tag.strip_prefix("nist_csf.") {
                out.push(rest.to_ascii_uppercase());
            }
        }
        if let Some(v) = self.custom.get("nist_csf") {
            match v {
                serde_json::Value::String(s) => out.push(s.to_ascii_uppercase()),
                serde_json::Value::Array(items) => {
                    for item in items {
                        if let Some(s) = item.as_str() {
                            out.push(s.to_ascii_uppercase());
                        }
                    }
                }
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// MITRE ATT&CK technique ids from `attack.tNNNN[.NNN]` tags.
    pub fn attack_techniques(&self) -> Vec<String> {
        self.attack_tags().filter(|t| is_attack_id(t, 't')).map(|t| t.to_ascii_uppercase()).collect()
    }

    /// ATT&CK tactics from `attack.<tactic-name>` tags (e.g. `defense-evasion`).
    pub fn attack_tactics(&self) -> Vec<String> {
        self.attack_tags()
            .filter(|t| !is_attack_id(t, 't') && !is_attack_id(t, 'g') && !is_attack_id(t, 's'))
            .map(str::to_string)
            .collect()
    }

    fn attack_tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().filter_map(|t| t.strip_prefix("attack."))
    }

    /// Remediation text and optional URL from the custom `remediation` field
    /// (a string, or a map with `text` and `url`).
    pub fn remediation(&self) -> Option<(String, Option<String>)> {
        match self.custom.get("remediation")? {
            serde_json::Value::String(s) => Some((s.trim().to_string(), None)),
            serde_json::Value::Object(m) => {
                let text = m.get("text")?.as_str()?.trim().to_string();
                let url = m.get("url").and_then(|u| u.as_str()).map(str::to_string);
                Some((text, url))
            }
            _ => None,
        }
    }
}

/// `t1078`, `t1078.004`, `g0016`, `s0002`: an ATT&CK object id with the given prefix.
fn is_attack_id(tag: &str, prefix: char) -> bool {
    let mut chars = tag.chars();
    chars.next() == Some(prefix) && chars.next().is_some_and(|c| c.is_ascii_digit())
}
