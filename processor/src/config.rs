//! Typed configuration: one TOML file, every value overridable by environment
//! variables, validated at start-up before anything connects.
//!
//! Layers, later wins: built-in defaults → the TOML file → environment
//! variables `TRAILWATCH__<SECTION>__<KEY>` (double underscores separate
//! levels, e.g. `TRAILWATCH__WINDOWS__ALLOWED_LATENESS=20m`; values are TOML
//! literals, or plain strings when they do not parse as TOML).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use crate::aws::AwsConfig;
// Kept here as well: the config's own fields and the CLI name them this way.
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
pub use crate::state::{CheckpointsConfig, StoreKind};
pub use crate::telemetry::config::{LogFormat, TelemetryConfig};
pub use crate::timetext::{duration_text, duration_text_opt, parse_time};
pub use trailwatch_rules::TimeMode;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rules: RulesConfig,
    pub windows: WindowsConfig,
    /// Allowlist entries applied to every rule's matches (no rule edits).
    pub suppressions: Vec<SuppressionConfig>,
    pub findings: FindingsConfig,
    /// Overrides of the AWS SDK's region/endpoint/profile chain.
    pub aws: AwsConfig,
    /// The long-running service (`trailwatch run`).
    pub service: ServiceConfig,
    /// Inputs, by name (`[sources.<name>]`, each with a `type`).
    pub sources: BTreeMap<String, SourceConfig>,
    /// With `coordination = "leases"`: the stream that correlations not
    /// grouped by the partition key run on (`crate::rekey`).
    pub rekey: crate::rekey::RekeyConfig,
    /// Where checkpoints and window state are committed.
    pub checkpoints: CheckpointsConfig,
    /// Outputs, by name (`[sinks.<name>]`, each with a `type`); none = ASFF JSON lines on stdout.
    pub sinks: BTreeMap<String, SinkConfig>,
    pub metrics: MetricsConfig,
    /// Logs and trace export (OTLP).
    pub telemetry: TelemetryConfig,
    /// Limits on hostile input (gzip bombs, huge values, deep wrappers).
    pub decode: DecodeConfig,
    /// How responses run: the member-account role, safety limits, notification channels.
    pub respond: crate::respond::RespondConfig,
    /// Actions on findings (`[[responses]]`); none: trailwatch only detects.
    pub responses: Vec<crate::respond::ResponseRule>,
}

/// `[decode]`: limits per unit of input (a file, a Kinesis record, an SQS
/// body, an S3 object), enforced while decompressing and reading, so that
/// memory stays bounded whatever arrives. A unit over a limit is counted,
/// logged and dead-lettered (kind `too_large` / `nesting`); the stream goes on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Bytes one gzip unit may decompress to; for plain (uncompressed)
    /// input, the largest single value (NDJSON line or document).
    pub max_decompressed_bytes: u64,
    /// How deep SNS → CloudWatch Logs → array wrappers may nest.
    pub max_nesting: u8,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        let d = crate::decode::DecodeOptions::default();
        DecodeConfig { max_decompressed_bytes: d.max_decompressed_bytes, max_nesting: d.max_nesting }
    }
}

impl DecodeConfig {
    pub fn options(&self) -> crate::decode::DecodeOptions {
        crate::decode::DecodeOptions {
            max_decompressed_bytes: self.max_decompressed_bytes,
            max_nesting: self.max_nesting,
        }
    }

    fn validate(&self, problems: &mut Vec<String>) {
        // Below a KiB no real log file fits; above 4 GiB one unit could take the task down.
        if !(1024..=(4u64 << 30)).contains(&self.max_decompressed_bytes) {
            problems.push(format!(
                "decode.max_decompressed_bytes = {} must be between 1024 and 4294967296",
                self.max_decompressed_bytes
            ));
        }
        if !(1..=16).contains(&self.max_nesting) {
            problems.push(format!("decode.max_nesting = {} must be between 1 and 16", self.max_nesting));
        }
    }
}

/// `[service]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Local state: checkpoints and window snapshots (file store), the
    /// Security Hub spool, the dead-letter file.
    pub state_dir: PathBuf,
    /// How often checkpoints and window state are committed. Input is
    /// acknowledged (SQS delete, Kinesis checkpoint) only at a commit.
    #[serde(with = "duration_text")]
    pub commit_interval: Duration,
    /// Deadline for a graceful shutdown (SIGTERM/SIGINT): stop reading,
    /// drain, flush sinks, commit. ECS waits 30 s by default before SIGKILL.
    #[serde(with = "duration_text")]
    pub shutdown_timeout: Duration,
    /// Batches waiting between sources and rules, and between rules and sinks.
    pub channel_capacity: usize,
    /// Records that cannot be decoded or evaluated (default: state_dir/dead-letter.ndjson).
    pub dead_letter: Option<PathBuf>,
    /// A source partition (Kinesis shard reader, SQS receiver) that completed
    /// no poll within this many of its poll intervals (idle backoff included)
    /// is stalled: /readyz fails naming it.
    pub source_stall_polls: u32,
    /// ... but never sooner than this (one slow AWS call is not a stall).
    #[serde(with = "duration_text")]
    pub source_stall_min: Duration,
    /// A stage (detector, sinks) busy with one batch for longer than this
    /// without progress is stuck: /healthz fails.
    #[serde(with = "duration_text")]
    pub stage_stall_timeout: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            state_dir: PathBuf::from("trailwatch-state"),
            commit_interval: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(25),
            channel_capacity: 16,
            dead_letter: None,
            source_stall_polls: 10,
            source_stall_min: Duration::from_secs(30),
            stage_stall_timeout: Duration::from_secs(300),
        }
    }
}

impl ServiceConfig {
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter.clone().unwrap_or_else(|| self.state_dir.join("dead-letter.ndjson"))
    }
}

/// The `[service]` defaults (here, not in health: the config knows its parts).
impl Default for crate::health::StallPolicy {
    fn default() -> Self {
        Self::from(&ServiceConfig::default())
    }
}

impl From<&ServiceConfig> for crate::health::StallPolicy {
    fn from(s: &ServiceConfig) -> Self {
        crate::health::StallPolicy {
            source_polls: s.source_stall_polls,
            source_min: s.source_stall_min,
            stage_timeout: s.stage_stall_timeout,
        }
    }
}

/// `[metrics]`: the HTTP endpoint for /metrics, /healthz and /readyz.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Listen address; 127.0.0.1 by default (0.0.0.0:9464 in the container).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: "127.0.0.1:9464".to_string() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directories (walked recursively) or files of Sigma rules, besides the pack.
    pub paths: Vec<PathBuf>,
    /// Load the built-in rule pack.
    pub builtin: bool,
    /// Values of `%placeholder%` names used with `|expand` (org accounts,
    /// trusted CIDRs, approved registries, ...). Override the pack defaults.
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Rule field name → event field path (e.g. `src_ip = "sourceIPAddress"`).
    pub field_mappings: BTreeMap<String, String>,
    /// `run`: fill `org_id`/`org_accounts` from AWS Organizations when the
    /// placeholders above leave them unset (else they are derived from the
    /// input's `recipientAccountId`s).
    pub discover_org: bool,
    /// `run`: how often AWS Organizations is asked again.
    #[serde(with = "duration_text")]
    pub org_refresh: Duration,
    /// Fail the run when any rule fails to compile (otherwise that rule is
    /// reported and skipped, and the rest run). `rules validate` is always strict.
    pub strict: bool,
    /// Compiled size limit of one `|re` regular expression, in bytes.
    pub regex_size_limit: usize,
    /// Rules below this level report nothing (they still feed correlations
    /// that use them). Unset: every level.
    pub min_level: Option<trailwatch_rules::Level>,
    /// The Sigma `status` values that report (stable, test, experimental,
    /// deprecated, unsupported); empty: any. Rules without a status report.
    pub status: Vec<String>,
    /// Rule (or correlation) ids that report nothing.
    pub disabled: Vec<String>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        let mut field_mappings = BTreeMap::new();
        // Generic Sigma taxonomy names that SigmaHQ cloud rules use.
        field_mappings.insert("src_ip".to_string(), "sourceIPAddress".to_string());
        RulesConfig {
            paths: Vec::new(),
            builtin: true,
            placeholders: BTreeMap::new(),
            field_mappings,
            discover_org: true,
            org_refresh: Duration::from_secs(3600),
            strict: false,
            regex_size_limit: trailwatch_rules::DEFAULT_REGEX_SIZE_LIMIT,
            min_level: None,
            status: Vec::new(),
            disabled: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    pub time_mode: TimeMode,
    /// How late (behind the newest event time seen) an event may arrive and
    /// still count. CloudTrail delivers files ~5 min late with a longer tail.
    #[serde(with = "duration_text")]
    pub allowed_lateness: Duration,
    /// Global cap on correlation group keys held; the oldest are evicted.
    pub max_keys: usize,
    /// Within this period a repeat of the same correlation and group key
    /// updates the existing finding instead of creating a new one.
    #[serde(with = "duration_text")]
    pub dedup_period: Duration,
    /// A partition (Kinesis shard, account+region of a queue) without events
    /// for this long stops holding the watermark back; `0s`: never.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Event times further than this ahead of the clock move no watermark
    /// (counted, logged once per partition); `0s`: no bound. `run` only.
    #[serde(with = "duration_text")]
    pub max_future_skew: Duration,
    /// Event ids remembered so that a redelivered event counts once in the
    /// windows (about 40 bytes each; the oldest are forgotten over it); 0: off.
    pub max_event_ids: usize,
    /// Cap on combinations remembered by `first_seen` rules (all together);
    /// the least recently seen tenth is forgotten when it is reached.
    pub max_baseline_entries: usize,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            time_mode: TimeMode::EventTime,
            allowed_lateness: Duration::from_secs(15 * 60),
            max_keys: 1_000_000,
            dedup_period: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(10 * 60),
            max_future_skew: Duration::from_secs(5 * 60),
            max_event_ids: 1_000_000,
            max_baseline_entries: 1_000_000,
        }
    }
}

/// One allowlist entry: matches of `rules` (all rules when empty) whose event
/// has `field` equal to one of `values` (case-insensitive) or inside one of
/// `cidrs` are suppressed until `expires`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    pub field: String,
    pub values: Vec<String>,
    pub cidrs: Vec<String>,
    pub rules: Vec<String>,
    /// RFC 3339; after it the entry no longer applies.
    pub expires: Option<String>,
    /// Why (kept for audit; shown by `trailwatch rules list --suppressions`).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FindingsConfig {
    /// `event-account`: each finding belongs to the account the event came
    /// from; `central`: all findings are reported under `central_account`.
    pub report_to: ReportToConfig,
    pub central_account: Option<String>,
    /// The region findings are imported into (their ProductArn and
    /// `Region`): the one the import role allows. A finding of an event from
    /// another region is routed here, not refused; the event's region stays
    /// in its resources and in ProductFields `trailwatch/EventRegion`.
    pub region: String,
    /// Event regions whose findings are imported in their own region instead
    /// (the import role must allow each); empty: every finding goes to `region`.
    pub import_regions: Vec<String>,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig {
            report_to: ReportToConfig::EventAccount,
            central_account: None,
            region: "us-east-1".to_string(),
            import_regions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReportToConfig {
    #[default]
    EventAccount,
    Central,
}

impl Config {
    /// The detector's settings: `[windows]` and `[[suppressions]]`.
    pub fn detector_config(&self) -> anyhow::Result<trailwatch_rules::DetectorConfig> {
        let mut suppressions = Vec::new();
        for s in &self.suppressions {
            let mut cidrs = Vec::new();
            for c in &s.cidrs {
                cidrs.push(
                    trailwatch_rules::matcher::Cidr::parse(c)
                        .map_err(|e| anyhow::anyhow!("suppression on {}: {e}", s.field))?,
                );
            }
            suppressions.push(trailwatch_rules::Suppression {
                field: s.field.clone(),
                values: s.values.clone(),
                cidrs,
                rule_ids: s.rules.clone(),
                expires_ms: s.expires.as_deref().and_then(parse_time),
            });
        }
        let w = &self.windows;
        Ok(trailwatch_rules::DetectorConfig {
            time_mode: w.time_mode,
            allowed_lateness_ms: w.allowed_lateness.as_millis() as i64,
            max_keys: w.max_keys,
            dedup_period_ms: w.dedup_period.as_millis() as i64,
            suppressions,
            idle_timeout_ms: Some(w.idle_timeout.as_millis() as i64).filter(|t| *t > 0),
            max_future_skew_ms: Some(w.max_future_skew.as_millis() as i64).filter(|t| *t > 0),
            max_event_ids: w.max_event_ids,
            max_baseline_entries: w.max_baseline_entries,
        })
    }

    /// How findings are built: `[findings]`.
    pub fn finding_context(&self) -> crate::findings::FindingContext {
        use crate::findings::{FindingContext, ReportTo};
        let f = &self.findings;
        FindingContext {
            product_region: f.region.clone(),
            import_regions: f.import_regions.clone(),
            report_to: match f.report_to {
                ReportToConfig::Central => ReportTo::Central { account: f.central_account.clone().unwrap_or_default() },
                ReportToConfig::EventAccount => ReportTo::EventAccount,
            },
            ..FindingContext::default()
        }
    }

    /// Defaults, then `path` (if any), then environment overrides; validated.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_or(path, None)
    }

    /// Like [`Config::load`], with `fallback` (TOML text) used when there is
    /// neither a file nor `TRAILWATCH_CONFIG_TOML`.
    pub fn load_or(path: Option<&Path>, fallback: Option<&str>) -> anyhow::Result<Config> {
        let inline = std::env::var(INLINE_ENV).ok().filter(|t| !t.trim().is_empty());
        let inline = inline.or_else(|| fallback.map(str::to_string));
        let mut doc: toml::Table = match (path, inline) {
            (Some(p), _) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
                text.parse::<toml::Table>()
                    .map_err(|e| anyhow::anyhow!("{}: {}", p.display(), one_line(&e.to_string())))?
            }
            (None, Some(text)) => text
                .parse::<toml::Table>()
                .map_err(|e| anyhow::anyhow!("{INLINE_ENV}: {}", one_line(&e.to_string())))?,
            (None, None) => toml::Table::new(),
        };
        apply_env(&mut doc, std::env::vars())?;
        let cfg: Config = toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!(
                "{}: {}",
                path.map_or("configuration".to_string(), |p| p.display().to_string()),
                one_line(&e.to_string())
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses, types and validates TOML text alone (no file, no
    /// environment overrides): what the config fuzz target exercises.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        let doc =
            text.parse::<toml::Table>().map_err(|e| anyhow::anyhow!("configuration: {}", one_line(&e.to_string())))?;
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("configuration: {}", one_line(&e.to_string())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that need no I/O; every problem is named.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.rules.org_refresh < Duration::from_secs(60) {
            problems.push("rules.org_refresh must be at least 1m (AWS Organizations is rate-limited)".to_string());
        }
        if self.findings.report_to == ReportToConfig::Central {
            match &self.findings.central_account {
                Some(a) if is_account(a) => {}
                Some(a) => problems.push(format!("findings.central_account `{a}` is not a 12-digit account id")),
                None => problems.push("findings.report_to = \"central\" needs findings.central_account".to_string()),
            }
        }
        if self.windows.max_keys == 0 {
            problems.push("windows.max_keys must be at least 1".to_string());
        }
        if self.windows.max_baseline_entries == 0 {
            problems.push("windows.max_baseline_entries must be at least 1".to_string());
        }
        for st in &self.rules.status {
            if !trailwatch_rules::STATUSES.iter().any(|k| k.eq_ignore_ascii_case(st)) {
                problems.push(format!(
                    "rules.status: `{st}` is not a Sigma status ({})",
                    trailwatch_rules::STATUSES.join(", ")
                ));
            }
        }
        if self.rules.regex_size_limit < 1024 {
            problems.push("rules.regex_size_limit must be at least 1024 bytes".to_string());
        }
        for (i, s) in self.suppressions.iter().enumerate() {
            let at = format!("suppressions[{i}]");
            if s.field.trim().is_empty() {
                problems.push(format!("{at}.field is empty"));
            }
            if s.values.is_empty() && s.cidrs.is_empty() {
                problems.push(format!("{at} needs values or cidrs"));
            }
            for c in &s.cidrs {
                if trailwatch_rules::matcher::Cidr::parse(c).is_err() {
                    problems.push(format!("{at}.cidrs: `{c}` is not a CIDR network"));
                }
            }
            if let Some(e) = &s.expires {
                if parse_time(e).is_none() {
                    problems.push(format!("{at}.expires: `{e}` is not an RFC 3339 time"));
                }
            }
        }
        for (name, values) in &self.rules.placeholders {
            if name.contains('%') {
                problems.push(format!("rules.placeholders: write `{}` without the % signs", name));
            }
            if values.iter().any(|v| v.is_empty()) {
                problems.push(format!("rules.placeholders.{name} has an empty value"));
            }
        }
        for (name, src) in &self.sources {
            check_name("sources", name, &mut problems);
            src.validate(name, &mut problems);
        }
        let leased = self.sources.values().any(|s| {
            matches!(s, crate::sources::SourceConfig::Kinesis(k) if k.coordination == crate::sources::kinesis::Coordination::Leases)
        });
        // A lease table holds one stream's shards: items are keyed by the bare
        // shard id and a worker balances over every item of the table.
        let mut tables: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, src) in &self.sources {
            let SourceConfig::Kinesis(k) = src else { continue };
            if k.coordination != crate::sources::kinesis::Coordination::Leases {
                continue;
            }
            if let Some(t) = k.lease_table.as_deref().filter(|t| !t.trim().is_empty()) {
                if let Some(other) = tables.insert(t, name) {
                    problems.push(format!(
                        "sources.{other} and sources.{name} share lease_table `{t}`: a lease table holds the shards \
                         of one stream (keyed by shard id); give each leased source its own"
                    ));
                }
            }
        }
        self.rekey.validate(&self.sources, &mut problems);
        if leased && self.checkpoints.store == StoreKind::Dynamodb {
            problems.push(
                "checkpoints.store = \"dynamodb\" lets one instance own every checkpoint; with coordination = \"leases\" \
                 the shard checkpoints live in the lease table: use store = \"file\" or \"none\""
                    .to_string(),
            );
        }
        for (name, sink) in &self.sinks {
            check_name("sinks", name, &mut problems);
            sink.validate(name, &mut problems);
        }
        if self.service.commit_interval.is_zero() {
            problems.push("service.commit_interval must be above 0".to_string());
        }
        if self.service.source_stall_polls == 0 {
            problems.push("service.source_stall_polls must be at least 1".to_string());
        }
        if self.service.stage_stall_timeout.is_zero() {
            problems.push("service.stage_stall_timeout must be above 0".to_string());
        }
        if self.service.channel_capacity == 0 {
            problems.push("service.channel_capacity must be at least 1".to_string());
        }
        if self.checkpoints.store == StoreKind::Dynamodb {
            if self.checkpoints.table.as_deref().is_none_or(|t| t.trim().is_empty()) {
                problems.push("checkpoints.store = \"dynamodb\" needs checkpoints.table".to_string());
            }
            if self.checkpoints.snapshot_bucket.as_deref().is_none_or(|t| t.trim().is_empty()) {
                problems.push(
                    "checkpoints.store = \"dynamodb\" needs checkpoints.snapshot_bucket (window state goes to S3)"
                        .to_string(),
                );
            }
        }
        if self.metrics.enabled && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!("metrics.listen `{}` is not an address like 127.0.0.1:9464", self.metrics.listen));
        }
        self.telemetry.validate(&mut problems);
        self.decode.validate(&mut problems);
        crate::respond::config::validate(&self.respond, &self.responses, &mut problems);
        if !problems.is_empty() {
            bail!("invalid configuration:\n  {}", problems.join("\n  "));
        }
        Ok(())
    }
}

/// Component names become metric labels and env-override path segments.
fn check_name(section: &str, name: &str, problems: &mut Vec<String>) {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        problems.push(format!("{section}.{name}: names use lower-case letters, digits, - and _"));
    }
}

fn is_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

const ENV_PREFIX: &str = "TRAILWATCH__";
/// The configuration `trailwatch run` uses when given none.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");
/// The whole TOML text in one variable (e.g. from an SSM parameter in ECS).
pub const INLINE_ENV: &str = "TRAILWATCH_CONFIG_TOML";

/// Applies `TRAILWATCH__A__B=value` as `a.b = value`.
fn apply_env(doc: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<()> {
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("environment variable {k}: empty path segment");
        }
        let value = parse_env_value(&v);
        let mut table = &mut *doc;
        for seg in &path[..path.len() - 1] {
            let entry = table.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => bail!("environment variable {k}: `{seg}` is not a section"),
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

fn parse_env_value(v: &str) -> toml::Value {
    // `x = <v>` parses numbers, booleans, arrays and quoted strings.
    match format!("x = {v}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("x").unwrap_or_else(|| toml::Value::String(v.to_string())),
        Err(_) => toml::Value::String(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_round_trips_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trailwatch.example.toml");
        let cfg = Config::load(Some(&path)).unwrap();
        let text = toml::to_string(&cfg).unwrap();
        let again: Config = toml::from_str(&text).unwrap();
        assert_eq!(cfg, again);
        assert_eq!(cfg.windows.allowed_lateness, Duration::from_secs(15 * 60));
    }

    #[test]
    fn time_mode_config_values_are_the_engine_enum() {
        let parse = |v: &str| toml::from_str::<WindowsConfig>(&format!("time_mode = \"{v}\"\n")).map(|w| w.time_mode);
        assert_eq!(parse("event").unwrap(), TimeMode::EventTime);
        assert_eq!(parse("processing").unwrap(), TimeMode::ProcessingTime);
        assert!(parse("EventTime").is_err());
        assert!(parse("wall").unwrap_err().to_string().contains("processing"));
        let text = toml::to_string(&WindowsConfig { time_mode: TimeMode::ProcessingTime, ..WindowsConfig::default() })
            .unwrap();
        assert!(text.contains("time_mode = \"processing\""), "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[windows]\nallowed_latness = \"5m\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("allowed_latness"), "{e}");
        std::fs::write(&p, "[windows]\nallowed_lateness = \"5 parsecs\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("unknown unit"), "{e}");
        std::fs::write(&p, "[findings]\nreport_to = \"central\"\n[[suppressions]]\nfield = \"x\"\ncidrs = [\"10.0.0.0/99\"]\nexpires = \"soon\"\n").unwrap();
        let e = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("central_account"), "{e}");
        assert!(e.contains("not a CIDR"), "{e}");
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn every_source_and_sink_type_parses_and_typos_are_named() {
        let text = r#"
            [sources.k]
            type = "kinesis"
            stream_name = "s"
            [sources.q]
            type = "sqs"
            queue_url = "http://127.0.0.1:1/q"
            visibility_timeout = "90s"
            [sources.f]
            type = "file"
            paths = ["-"]
            [sinks.sh]
            type = "securityhub"
            member_role_name = "Import"
            [sinks.o]
            type = "ocsf-jsonl"
            path = "o.ndjson"
            [checkpoints]
            store = "dynamodb"
            table = "t"
            snapshot_bucket = "b"
        "#;
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.sources["k"].kind(), "kinesis");
        assert!(!cfg.sources["q"].is_finite() && cfg.sources["f"].is_finite());
        assert_eq!(cfg.sinks["o"].kind(), "ocsf-jsonl");
        let again: Config = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(cfg, again);
        let e = toml::from_str::<Config>("[sources.k]\ntype = \"kinesis\"\nstream_nam = \"s\"\n").unwrap_err();
        assert!(e.to_string().contains("stream_nam"), "{e}");
        let e = toml::from_str::<Config>("[sinks.x]\ntype = \"splunk\"\n").unwrap_err();
        assert!(e.to_string().contains("splunk"), "{e}");
        let bad: Config =
            toml::from_str("[sources.k]\ntype = \"kinesis\"\n[checkpoints]\nstore = \"dynamodb\"\n").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("stream_name") && e.contains("checkpoints.table"), "{e}");
    }

    #[test]
    fn two_leased_sources_may_not_share_a_lease_table() {
        let leased = |name: &str, stream: &str, table: &str| {
            format!(
                "[sources.{name}]\ntype = \"kinesis\"\nstream_name = \"{stream}\"\ncoordination = \"leases\"\nlease_table = \"{table}\"\n"
            )
        };
        let rekey = "[rekey]\nsource = \"rekeyed\"\n[checkpoints]\nstore = \"file\"\n";
        let shared: Config =
            toml::from_str(&format!("{}{}{rekey}", leased("org", "s", "t"), leased("rekeyed", "r", "t"))).unwrap();
        let e = shared.validate().unwrap_err().to_string();
        assert!(e.contains("sources.org and sources.rekeyed share lease_table `t`"), "{e}");
        let own: Config =
            toml::from_str(&format!("{}{}{rekey}", leased("org", "s", "t"), leased("rekeyed", "r", "rt"))).unwrap();
        own.validate().unwrap();
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let cfg: Config = toml::from_str(EMBEDDED_DEFAULT).unwrap();
        cfg.validate().unwrap();
        assert!(cfg.sources["demo"].is_finite());
    }

    #[test]
    fn environment_overrides_file_values() {
        let mut doc: toml::Table = "[windows]\nallowed_lateness = \"5m\"\n".parse().unwrap();
        let vars = vec![
            ("TRAILWATCH__WINDOWS__ALLOWED_LATENESS".to_string(), "20m".to_string()),
            ("TRAILWATCH__WINDOWS__MAX_KEYS".to_string(), "42".to_string()),
            ("TRAILWATCH__RULES__PLACEHOLDERS__ORG_ACCOUNTS".to_string(), "[\"111111111111\"]".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        apply_env(&mut doc, vars.into_iter()).unwrap();
        let cfg: Config = toml::Value::Table(doc).try_into().unwrap();
        assert_eq!(cfg.windows.allowed_lateness, Duration::from_secs(1200));
        assert_eq!(cfg.windows.max_keys, 42);
        assert_eq!(cfg.rules.placeholders["org_accounts"], vec!["111111111111"]);
    }
}
