//! Command-line interface: argument types and the commands behind them.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;
use trailwatch_rules::testing;
use trailwatch_rules::{CompileOptions, EventClass, RuleSet};

use crate::config::Config;
use crate::findings::{FindingContext, ReportTo};
use crate::replay::{self, ReplayOptions};
use crate::ruleset;
use trailwatch_rules::DetectorConfig;

#[derive(Debug, Parser)]
#[command(
    name = "trailwatch",
    version,
    about = "Sigma detections over CloudTrail and ECR events, findings to Security Hub"
)]
pub struct Cli {
    /// Log level filter (e.g. info, debug, trailwatch=debug); also RUST_LOG.
    #[arg(long, global = true, default_value = "warn", env = "TRAILWATCH_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: sources (Kinesis, SQS, files) → rules → sinks (Security
    /// Hub, files), with checkpoints, metrics and graceful shutdown. Without a
    /// config, runs the embedded default (the demo events, findings on stdout).
    Run(RunArgs),
    /// Replay archived events (files, directories, - for stdin, or an
    /// s3://bucket/prefix/ archive) through the rules, in event-time order.
    Replay(Box<ReplayArgs>),
    /// Replay INPUT... and report per rule how often it fires and who is behind
    /// it, then print a TOML snippet (placeholder values, suppressions with
    /// `expires` and `reason`) that would quiet the recurring sources. Applies nothing.
    Tune(TuneArgs),
    /// Exit 0 when a running trailwatch answers 200 on its health endpoint
    /// (for container health checks; no curl needed).
    Healthcheck {
        /// The URL to check.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Validate, list or test rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check a configuration (file, TRAILWATCH_CONFIG_TOML, TRAILWATCH__* overrides)
    /// without connecting to anything, and print it with every default filled in,
    /// then where each rule pack placeholder comes from.
    Config {
        /// Configuration file (default: TRAILWATCH_CONFIG, else the embedded default of `run`).
        #[arg(long, value_name = "FILE", env = "TRAILWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Also ask AWS Organizations for the org placeholders the config leaves
        /// unset, as `run` would (the one command here that connects to AWS).
        #[arg(long)]
        discover: bool,
    },
}

#[derive(Debug, Default, Args)]
pub struct RuleArgs {
    /// Configuration file (TOML; see trailwatch.example.toml). Environment
    /// variables TRAILWATCH__SECTION__KEY override it.
    #[arg(long, value_name = "FILE", env = "TRAILWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// A directory (walked recursively) or file of Sigma rules; repeatable.
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Do not load the built-in rule pack.
    #[arg(long)]
    pub no_builtin: bool,
    /// Fail when any rule fails to compile (by default that rule is reported
    /// with file, line and reason, and skipped).
    #[arg(long)]
    pub strict: bool,
    /// Rules below this level report nothing (over `[rules] min_level`):
    /// informational, low, medium, high, critical.
    #[arg(long, value_name = "LEVEL", value_parser = level_arg)]
    pub min_level: Option<trailwatch_rules::Level>,
    /// Only rules of these Sigma statuses report (over `[rules] status`;
    /// repeatable or comma-separated, e.g. `stable,test`).
    #[arg(long, value_name = "STATUS", value_delimiter = ',')]
    pub status: Vec<String>,
    /// A rule id that reports nothing (added to `[rules] disabled`); repeatable.
    #[arg(long, value_name = "RULE_ID")]
    pub disable: Vec<String>,
}

fn level_arg(s: &str) -> Result<trailwatch_rules::Level, String> {
    trailwatch_rules::Level::parse(s).ok_or_else(|| "expected informational, low, medium, high or critical".to_string())
}

impl RuleArgs {
    /// Loads the configuration (or `fallback`) with these flags over it.
    fn config(&self, fallback: Option<&str>) -> anyhow::Result<Config> {
        let mut cfg = Config::load_or(self.config.as_deref(), fallback)?;
        if self.min_level.is_none() && self.status.is_empty() && self.disable.is_empty() {
            return Ok(cfg);
        }
        cfg.rules.min_level = self.min_level.or(cfg.rules.min_level);
        if !self.status.is_empty() {
            cfg.rules.status = self.status.clone();
        }
        cfg.rules.disabled.extend(self.disable.iter().cloned());
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Write findings here (one JSON line each, see --format) instead of stdout (`-`: stdout).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// What to write per match: `asff` findings, `ocsf` (the same findings as
    /// OCSF Detection Findings, class 2004), or `matches`: one short JSON
    /// line per match (rule_id, rule_title, level, event_id, event_time;
    /// correlations with count, window and group), without building
    /// findings, for backtesting rules over archives.
    #[arg(long, value_enum, default_value_t = ReplayFormatArg::Asff)]
    pub format: ReplayFormatArg,
    /// Write records that could not be decoded or evaluated here (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// UpdatedAt of the findings (RFC 3339); default: now. Fix it for reproducible output.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Report findings under this central account instead of each event's own account.
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub central_account: Option<String>,
    /// Region for ProductArn when an event carries none (default from config).
    #[arg(long)]
    pub region: Option<String>,
    /// Also import the findings into Security Hub, with `[aws]` and the config's
    /// securityhub sink settings (findings then go to --output or
    /// state_dir/replay-findings.ndjson, not stdout).
    #[arg(long)]
    pub to_securityhub: bool,
    /// Only events at or after this time (RFC 3339, or a date: 2026-11-02).
    /// Files named in the CloudTrail layout delivered before it are not read.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events before this time (RFC 3339, or a date: midnight UTC).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only these accounts (files in the CloudTrail layout), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ACCOUNT_ID")]
    pub accounts: Vec<String>,
    /// Only these regions (files in the CloudTrail layout), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub regions: Vec<String>,
    /// How long before the time in its name a CloudTrail file's events may
    /// be: events are held this long to merge accounts and regions in time order.
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    pub lookahead: String,
    /// Threads that fetch, decompress, decode files and run the detection rules on their events (default: one per core; 4 per core for s3://).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Backtest expectations (TOML: per rule id at_least / at_most / exactly;
    /// `unlisted = "ignore" | "zero"`). Exit 2 when one is not met.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Write the expectations as JUnit XML (one testcase each); needs --expect.
    #[arg(long, value_name = "FILE", requires = "expect")]
    pub junit: Option<PathBuf>,
    /// Show what the config's `[[responses]]` would have done for these
    /// findings: a table per action on stdout (every response evaluated as
    /// dry-run, whatever its mode; nothing is changed). Findings then go to
    /// --output only.
    #[arg(long, value_enum, value_name = "MODE")]
    pub responses: Option<ResponsesArg>,
    /// Inputs: files, directories (recursively), - for stdin, or
    /// s3://bucket/prefix/ (an archive in the CloudTrail layout). Plain or gzip.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// `--since` / `--until`: RFC 3339, or a date at midnight UTC.
fn parse_bound(flag: &str, s: &str) -> anyhow::Result<i64> {
    crate::config::parse_time(s)
        .or_else(|| crate::config::parse_time(&format!("{s}T00:00:00Z")))
        .with_context(|| format!("{flag} `{s}` is not an RFC 3339 time or a date like 2026-11-02"))
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Entries shown in each top list per rule.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// A principal is recurring for a rule with at least this many findings...
    #[arg(long, default_value_t = 5)]
    pub min_findings: u64,
    /// ...spread over at least this many distinct hours of event time.
    #[arg(long, default_value_t = 3)]
    pub min_hours: usize,
    /// `expires` of the proposed suppressions: this many days after --now.
    #[arg(long, default_value_t = 30)]
    pub expires_in_days: i64,
    /// Reference time (RFC 3339) for `expires`; default: now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Write the TOML snippet here too (it is always printed on stdout).
    #[arg(long, value_name = "FILE")]
    pub snippet: Option<PathBuf>,
    /// Inputs, as for replay: files or directories (read twice, so not stdin).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Serve /metrics, /healthz and /readyz here instead of `metrics.listen`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check that rule files load; errors name file, line and reason.
    Validate {
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// List rules (built-in pack and --rules).
    List {
        #[command(flatten)]
        rules: RuleArgs,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Run the test cases kept in the rules' `tests:` sections.
    Test {
        /// Rule directories; with none, the built-in pack.
        #[arg(value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResponsesArg {
    /// Plan every response, change nothing.
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormatArg {
    Asff,
    Ocsf,
    Matches,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListFormat {
    Text,
    Markdown,
    Json,
}

/// Config, rule set and warnings for the rule arguments of a command.
fn load_rules(args: &RuleArgs) -> anyhow::Result<(Config, RuleSet, Vec<trailwatch_rules::RuleWarning>)> {
    let cfg = args.config(None)?;
    let (set, warnings) = rules_for(&cfg, args)?;
    Ok((cfg, set, warnings))
}

/// The rule set of a config plus the command line's rule arguments.
fn rules_for(cfg: &Config, args: &RuleArgs) -> anyhow::Result<(RuleSet, Vec<trailwatch_rules::RuleWarning>)> {
    rules_with_org(cfg, args, &crate::org::OrgValues::default())
}

/// Same, with discovered or derived org values where the config leaves the
/// org placeholders unset (explicit config always wins).
fn rules_with_org(
    cfg: &Config,
    args: &RuleArgs,
    org: &crate::org::OrgValues,
) -> anyhow::Result<(RuleSet, Vec<trailwatch_rules::RuleWarning>)> {
    let (files, opts) = rule_inputs(cfg, args, org)?;
    if cfg.rules.builtin && !args.no_builtin {
        let empty = ruleset::empty_pack_placeholders(&opts)?;
        if !empty.is_empty() {
            // A warning: a deployment without its org context misses whole themes.
            tracing::warn!(
                placeholders = %empty.join(", "),
                "built-in pack: org context not configured, discovered or derived; items that need these placeholders match nothing until they are known; rules/pack/placeholders.json says what each default assumes"
            );
        }
    }
    compile_rules(&files, &opts, cfg.rules.strict || args.strict)
}

/// Rule files and compile options (the org values filled in where unset).
fn rule_inputs(
    cfg: &Config,
    args: &RuleArgs,
    org: &crate::org::OrgValues,
) -> anyhow::Result<(Vec<trailwatch_rules::RuleFile>, CompileOptions)> {
    let builtin = cfg.rules.builtin && !args.no_builtin;
    let mut opts = ruleset::compile_options(cfg, builtin)?;
    opts.placeholders.extend(org.placeholders(&crate::org::unset(&cfg.rules)));
    let mut dirs = cfg.rules.paths.clone();
    dirs.extend(args.rules.iter().cloned());
    let mut files = if builtin { ruleset::builtin_files() } else { Vec::new() };
    files.extend(ruleset::files_in(&dirs)?);
    Ok((files, opts))
}

/// Compiles strictly, or (the default) leaving out rules that fail to
/// compile: reported and counted, the rest run.
fn compile_rules(
    files: &[trailwatch_rules::RuleFile],
    opts: &CompileOptions,
    strict: bool,
) -> anyhow::Result<(RuleSet, Vec<trailwatch_rules::RuleWarning>)> {
    if strict {
        return ruleset::compile(files, opts);
    }
    let (set, mut warnings, skipped) = RuleSet::load_skipping(files, opts);
    crate::metrics::get().rules_skipped.set(skipped.len() as i64);
    for e in &skipped {
        tracing::error!(file = %e.file, line = e.line, reason = %e.reason, "rule skipped: it does not compile");
        warnings.push(trailwatch_rules::RuleWarning {
            file: e.file.clone(),
            line: e.line,
            message: format!("rule skipped: {}", e.reason),
            unread_source: None,
        });
    }
    if !skipped.is_empty() {
        tracing::warn!(
            skipped = skipped.len(),
            loaded = set.rules().len() + set.correlations().len(),
            "some rules were skipped; the rest run (use --strict or [rules] strict = true to fail instead)"
        );
    }
    Ok((set, warnings))
}

/// Where each org placeholder's values come from, for `trailwatch config`
/// and the start-up log.
fn org_origins(cfg: &Config, org: &crate::org::OrgValues, found: crate::org::Origin) -> Vec<(String, String)> {
    use crate::org::{Origin, ACCOUNTS, ORG_ID};
    let unset = crate::org::unset(&cfg.rules);
    let mut rows = Vec::new();
    let pack = ruleset::pack_placeholders().unwrap_or_default();
    for name in pack.keys() {
        let origin = if cfg.rules.placeholders.get(name).is_some_and(|v| !v.is_empty()) {
            Origin::Config.as_str().to_string()
        } else if unset.contains(&name.as_str())
            && ((name == ACCOUNTS && !org.accounts.is_empty()) || (name == ORG_ID && org.org_id.is_some()))
        {
            found.as_str().to_string()
        } else if name == ACCOUNTS || name == ORG_ID {
            format!(
                "{} (unset; `run` asks AWS Organizations{}, else derives it from the input; `replay` derives it)",
                Origin::Default.as_str(),
                if cfg.rules.discover_org { "" } else { " only with rules.discover_org" }
            )
        } else {
            Origin::Default.as_str().to_string()
        };
        rows.push((name.clone(), origin));
    }
    rows
}

/// Compile options for commands that take rule directories only.
fn plain_options(builtin: bool) -> anyhow::Result<CompileOptions> {
    ruleset::compile_options(&Config::default(), builtin)
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Run(a) = cli.command {
        return run_cmd(a, &cli.log_level);
    }
    crate::telemetry::init_logging(&cli.log_level, crate::config::LogFormat::Text);
    match cli.command {
        Command::Run(_) => unreachable!("handled above"),
        Command::Healthcheck { url, timeout } => {
            match crate::http::check(&url, std::time::Duration::from_secs(timeout)) {
                Ok(body) => {
                    println!("{body}");
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    Ok(1)
                }
            }
        }
        Command::Replay(a) => replay_cmd(*a),
        Command::Tune(a) => tune_cmd(a),
        Command::Config { config, discover } => {
            let fallback = config.is_none().then_some(crate::config::EMBEDDED_DEFAULT);
            let cfg = Config::load_or(config.as_deref(), fallback)?;
            // The rules must load too: placeholders, paths and mappings are config.
            let (set, warnings) = rules_for(&cfg, &RuleArgs::default())?;
            print_warnings(&warnings);
            // Leases: a correlation off the partition key needs `[rekey]`; refused here as `run` would.
            let set = Arc::new(set);
            let rekeyed = crate::service::rekey_plan(&cfg, &set)?.map_or(0, |(_, _, split)| split.len());
            // Trace export also depends on OTEL_* variables: resolve them as `run` would.
            let traces = crate::telemetry::ExportPlan::resolve(&cfg.telemetry, &|k| std::env::var(k).ok())?;
            let otlp_metrics =
                crate::telemetry::ExportPlan::resolve_metrics(&cfg.telemetry, &|k| std::env::var(k).ok())?;
            // Header values are credentials (a collector's token): not printed.
            let mut shown = cfg.clone();
            shown.telemetry.otlp_headers.values_mut().for_each(|v| *v = "<redacted>".to_string());
            print!("{}", toml::to_string(&shown).context("cannot print the configuration")?);
            // Where each pack placeholder comes from (config / organizations / derived / default).
            let mut org = crate::org::OrgValues::default();
            let mut found = crate::org::Origin::Default;
            if discover && cfg.rules.builtin && !crate::org::unset(&cfg.rules).is_empty() {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                match rt.block_on(async { crate::org::discover(&crate::aws::sdk_config(&cfg.aws).await).await }) {
                    Ok(d) => {
                        org = org.merged(&d);
                        found = crate::org::Origin::Organizations;
                    }
                    Err(e) => eprintln!("warning: {e}"),
                }
            }
            println!("\n# Where each rule pack placeholder comes from:");
            for (name, origin) in org_origins(&cfg, &org, found) {
                println!("# {name}: {origin}");
            }
            eprintln!(
                "configuration ok: {} source(s), {} sink(s), {} rules, {} correlations{}; {}{}",
                cfg.sources.len(),
                cfg.sinks.len().max(1),
                set.rules().len(),
                set.correlations().len(),
                if rekeyed > 0 { format!(" ({rekeyed} re-keyed)") } else { String::new() },
                match &traces {
                    Some(t) => format!("traces exported over {}", t.target),
                    None => "traces not exported".to_string(),
                },
                match &otlp_metrics {
                    Some(m) => format!("; metrics exported over {}", m.target),
                    None => String::new(),
                }
            );
            Ok(0)
        }
        Command::Rules(RulesCommand::Validate { dirs }) => validate_cmd(&dirs),
        Command::Rules(RulesCommand::List { rules, format }) => list_cmd(&rules, format),
        Command::Rules(RulesCommand::Test { dirs }) => test_cmd(&dirs),
    }
}

/// Rule warnings on stderr, one a line, except rules for log sources
/// trailwatch never reads: a whole SigmaHQ checkout holds thousands (Windows,
/// Linux, ...), said in one line (each at debug level).
fn print_warnings(w: &[trailwatch_rules::RuleWarning]) {
    let mut unread: std::collections::BTreeMap<&str, usize> = Default::default();
    for w in w {
        match &w.unread_source {
            Some(source) => {
                tracing::debug!("{w}");
                *unread.entry(source.as_str()).or_default() += 1;
            }
            None => eprintln!("{w}"),
        }
    }
    if let Some(line) = unread_summary(&unread) {
        eprintln!("{line}");
    }
}

/// The rule warnings of `run` and `replay`, then what `[rules] min_level`,
/// `status` and `disabled` left out, in one line, and any disabled id no
/// rule has (a typo would otherwise silently disable nothing).
fn print_loaded(set: &RuleSet, w: &[trailwatch_rules::RuleWarning], cfg: &Config) {
    print_warnings(w);
    if let Some(line) = filter_summary(set) {
        eprintln!("{line}");
    }
    let left = set.left_out();
    if let Some(line) = selection_summary(&left, cfg) {
        eprintln!("{line}");
    }
    // A disabled id that matched a rule is among those left out as disabled.
    for id in &cfg.rules.disabled {
        if !left.iter().any(|(l, _, why)| l == id && *why == trailwatch_rules::LeftOut::Disabled) {
            eprintln!("warning: [rules] disabled lists `{id}`, which no loaded rule has");
        }
    }
}

/// One line for the Sigma filters applied: how many, to how many rules
/// (each rule and its filters at debug level).
fn filter_summary(set: &RuleSet) -> Option<String> {
    let filtered: Vec<_> = set.rules().iter().filter(|r| !r.filters.is_empty()).collect();
    if filtered.is_empty() {
        return None;
    }
    let mut filters: Vec<&str> = filtered.iter().flat_map(|r| r.filters.iter().map(String::as_str)).collect();
    filters.sort_unstable();
    filters.dedup();
    for r in &filtered {
        tracing::debug!(rule = %r.meta.id, filters = %r.filters.join(", "), condition = %r.condition_text, "Sigma filters applied");
    }
    Some(format!(
        "{} Sigma filter{} narrow{} {} rule{} (--log-level debug lists each)",
        filters.len(),
        if filters.len() == 1 { "" } else { "s" },
        if filters.len() == 1 { "s" } else { "" },
        filtered.len(),
        if filtered.len() == 1 { "" } else { "s" }
    ))
}

fn selection_summary(left: &[(&str, &str, trailwatch_rules::LeftOut)], cfg: &Config) -> Option<String> {
    use trailwatch_rules::LeftOut;
    if left.is_empty() {
        return None;
    }
    for (id, title, why) in left {
        tracing::debug!(rule = %id, %title, ?why, "left out by [rules] min_level/status/disabled: reports nothing");
    }
    let n = |k: LeftOut| left.iter().filter(|(_, _, w)| *w == k).count();
    let mut parts = Vec::new();
    if let Some(min) = cfg.rules.min_level {
        parts.push(format!("below min_level {min}: {}", n(LeftOut::Level)));
    }
    if !cfg.rules.status.is_empty() {
        parts.push(format!("status not {}: {}", cfg.rules.status.join("/"), n(LeftOut::Status)));
    }
    if !cfg.rules.disabled.is_empty() {
        parts.push(format!("disabled: {}", n(LeftOut::Disabled)));
    }
    Some(format!(
        "{} rules report nothing ([rules] {}); a correlation that uses one still counts its matches \
         (--log-level debug lists each)",
        left.len(),
        parts.join(", ")
    ))
}

/// One line for the rules whose log source trailwatch never reads, most common source first.
fn unread_summary(unread: &std::collections::BTreeMap<&str, usize>) -> Option<String> {
    let total: usize = unread.values().sum();
    if total == 0 {
        return None;
    }
    let mut by = unread.iter().collect::<Vec<_>>();
    by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown = by.iter().take(6).map(|(s, n)| format!("{s}: {n}")).collect::<Vec<_>>().join(", ");
    let more = if by.len() > 6 { format!(", {} more sources", by.len() - 6) } else { String::new() };
    let rules = if total == 1 { "rule is" } else { "rules are" };
    Some(format!(
        "warning: {total} {rules} for log sources trailwatch does not read ({shown}{more}): loaded, never evaluated, \
         no cost per event (--log-level debug lists each)"
    ))
}

fn run_cmd(a: RunArgs, log_level: &str) -> anyhow::Result<i32> {
    let embedded = a.rules.config.is_none();
    let fallback = embedded.then_some(crate::config::EMBEDDED_DEFAULT);
    let mut cfg = a.rules.config(fallback)?;
    if let Some(l) = a.metrics_listen {
        cfg.metrics.enabled = true;
        cfg.metrics.listen = l;
        cfg.validate()?;
    }
    // Before anything runs: a bad OTEL_* variable stops start-up too.
    let telemetry = crate::telemetry::Telemetry::init(&cfg.telemetry, log_level)?;
    // Fail fast: a panic outside the per-record guards ends the process
    // (exit 70) instead of leaving a task dead behind a healthy endpoint.
    crate::panics::install_fatal_hook();
    if embedded
        && std::env::var_os(crate::config::INLINE_ENV).is_none()
        && !std::path::Path::new("examples/events").exists()
    {
        anyhow::bail!(
            "without --config, `trailwatch run` reads the demo events in ./examples/events: run it from the \
             repository root, or give --config FILE (see trailwatch.example.toml)"
        );
    }
    if cfg.sources.is_empty() {
        anyhow::bail!("no sources configured: add a [sources.<name>] section (see trailwatch.example.toml)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("trailwatch").build()?;
    let (set, org_updates) = rt.block_on(run_rules(&cfg, &a.rules))?;
    if set.rules().is_empty() {
        anyhow::bail!("no rules to run: give --rules DIR or drop --no-builtin");
    }
    let opts = crate::service::RunOptions { org: org_updates, ..Default::default() };
    // The trace flush shares the shutdown deadline, counted from the signal
    // (or from the end of the run when the input ended by itself).
    let shutdown_timeout = cfg.service.shutdown_timeout;
    let signalled = Arc::new(std::sync::OnceLock::new());
    let signal = {
        let signalled = Arc::clone(&signalled);
        async move {
            crate::service::shutdown_signal().await;
            let _ = signalled.set(std::time::Instant::now());
        }
    };
    let result = rt.block_on(crate::service::run(cfg, Arc::new(set), opts, signal));
    let from = signalled.get().copied().unwrap_or_else(std::time::Instant::now);
    if telemetry.exports_traces() {
        let r = telemetry.shutdown(from + shutdown_timeout);
        tracing::debug!(sent = r.sent, rejected = r.rejected, failed = r.failed, dropped = r.dropped, "spans exported");
    }
    let summary = result?;
    eprint!("{}", summary.text());
    Ok(0)
}

/// `replay`'s rules, with `%org_accounts%` (when the config leaves it unset)
/// derived from the input: a cheap pre-pass over the files collects every
/// recipientAccountId (an org trail carries every member), so the
/// outside-account rules know the whole org from the first record on. Also
/// returns the line the summary prints about it.
pub fn replay_rules(
    cfg: &Config,
    args: &RuleArgs,
    inputs: &[std::path::PathBuf],
) -> anyhow::Result<(RuleSet, Option<String>)> {
    let mut org = crate::org::OrgValues::default();
    let mut note = None;
    let builtin = cfg.rules.builtin && !args.no_builtin;
    if builtin && crate::org::unset(&cfg.rules).contains(&crate::org::ACCOUNTS) {
        let files = crate::sources::file::expand_inputs(inputs).map_err(anyhow::Error::msg)?;
        let t = std::time::Instant::now();
        org.accounts = crate::org::scan_recipient_accounts(&files).context("cannot scan the input for account ids")?;
        let ids: Vec<&str> = org.accounts.iter().map(String::as_str).take(10).collect();
        note = Some(format!(
            "org_accounts derived from the input (recipientAccountId; {:.2}s pre-pass): {} account{}{}{}{}\n",
            t.elapsed().as_secs_f64(),
            org.accounts.len(),
            if org.accounts.len() == 1 { "" } else { "s" },
            if ids.is_empty() { String::new() } else { format!(": {}", ids.join(", ")) },
            if org.accounts.len() > ids.len() { ", ..." } else { "" },
            if files.iter().any(|f| f.as_os_str() == "-") { " (stdin is not pre-scanned)" } else { "" },
        ));
    }
    let (set, warnings) = rules_with_org(cfg, args, &org)?;
    print_loaded(&set, &warnings, cfg);
    Ok((set, note))
}

/// `run`'s rules, with the org context the config leaves unset from AWS
/// Organizations (refreshed later), or else derived from the input as it
/// arrives; access denied is a warning, not a failure.
pub async fn run_rules(cfg: &Config, args: &RuleArgs) -> anyhow::Result<(RuleSet, Option<crate::service::OrgUpdates>)> {
    use crate::org::{OrgValues, Origin};
    use crate::service::{OrgMode, OrgUpdates};
    let unset = crate::org::unset(&cfg.rules);
    if !cfg.rules.builtin || args.no_builtin || unset.is_empty() {
        let (set, warnings) = rules_for(cfg, args)?;
        print_loaded(&set, &warnings, cfg);
        return Ok((set, None));
    }
    let mut org = OrgValues::default();
    let mut mode = None;
    if cfg.rules.discover_org {
        match crate::org::discover(&crate::aws::sdk_config(&cfg.aws).await).await {
            Ok(d) => {
                org = org.merged(&d);
                tracing::info!(
                    accounts = org.accounts.len(),
                    org_id = %d.org_id,
                    "org context from AWS Organizations (refreshed every {:?})",
                    cfg.rules.org_refresh
                );
                mode = Some(OrgMode::Organizations {
                    aws: cfg.aws.clone(),
                    refresh: cfg.rules.org_refresh,
                    current: org.clone(),
                });
            }
            Err(e) => tracing::warn!(
                "{e}; org_accounts is derived from the input instead (every CloudTrail recipientAccountId); \
                 grant organizations:DescribeOrganization and organizations:ListAccounts (management account or \
                 delegated administrator) or set [rules.placeholders] org_accounts"
            ),
        }
    }
    let mode = mode.unwrap_or(OrgMode::Derived { known: Default::default(), org_id: None });
    let origin = if matches!(mode, OrgMode::Organizations { .. }) { Origin::Organizations } else { Origin::Derived };
    for (name, from) in org_origins(cfg, &org, origin) {
        if name == crate::org::ACCOUNTS || name == crate::org::ORG_ID {
            tracing::info!(placeholder = %name, from = %from, "org context");
        }
    }
    let (files, base) = rule_inputs(cfg, args, &OrgValues::default())?;
    let (set, warnings) = rules_with_org(cfg, args, &org)?;
    print_loaded(&set, &warnings, cfg);
    let cfg_rules = cfg.rules.clone();
    let strict = cfg.rules.strict || args.strict;
    let recompile: crate::org::Recompile = Arc::new(move |v: &OrgValues| {
        let mut opts = base.clone();
        opts.placeholders.extend(v.placeholders(&crate::org::unset(&cfg_rules)));
        Ok(compile_rules(&files, &opts, strict)?.0)
    });
    Ok((set, Some(OrgUpdates { recompile, mode })))
}

/// Where findings are reported, from config and command-line overrides.
/// `[findings]` with `replay`'s `--central-account` / `--region` on top.
fn finding_context(cfg: &Config, central_account: Option<String>, region: Option<String>) -> FindingContext {
    let mut ctx = cfg.finding_context();
    if let Some(account) = central_account {
        ctx.report_to = ReportTo::Central { account };
    }
    if let Some(r) = region {
        ctx.product_region = r;
    }
    ctx
}

fn replay_cmd(a: ReplayArgs) -> anyhow::Result<i32> {
    let cfg = a.rules.config(None)?;
    let (set, derived_note) = replay_rules(&cfg, &a.rules, &a.inputs)?;

    if set.rules().is_empty() {
        anyhow::bail!("no rules to run: give --rules DIR or drop --no-builtin");
    }
    if a.responses.is_some() && a.format == ReplayFormatArg::Matches {
        anyhow::bail!("--responses acts on findings: it cannot be combined with --format matches");
    }
    if a.responses.is_some() && cfg.responses.is_empty() {
        anyhow::bail!("--responses: the config has no [[responses]] (give --config with some)");
    }
    if a.to_securityhub && a.format != ReplayFormatArg::Asff {
        anyhow::bail!("--to-securityhub imports ASFF findings: it cannot be combined with --format ocsf or matches");
    }
    let now = match &a.now {
        Some(t) => OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--now `{t}` is not an RFC 3339 time"))?,
        None => OffsetDateTime::now_utc(),
    };
    let since_ms = a.since.as_deref().map(|s| parse_bound("--since", s)).transpose()?;
    let until_ms = a.until.as_deref().map(|s| parse_bound("--until", s)).transpose()?;
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if s >= u {
            anyhow::bail!("--since must be before --until");
        }
    }
    let lookahead =
        crate::config::duration_text::parse(&a.lookahead).map_err(|e| anyhow::anyhow!("--lookahead: {e}"))?;
    let expectations = match &a.expect {
        Some(p) => Some(replay::expect::Expectations::load(p, &set)?),
        None => None,
    };
    let archive = replay::ArchiveOptions {
        filter: replay::plan::Filter {
            since_ms,
            until_ms,
            accounts: a.accounts.clone(),
            regions: a.regions.clone(),
            lookahead_ms: lookahead.as_millis() as i64,
        },
        threads: a.threads,
        aws: cfg.aws.clone(),
    };
    let opts = ReplayOptions {
        archive,
        inputs: a.inputs,
        dead_letter: a.dead_letter,
        progress: !a.no_progress && io::stderr().is_terminal(),
        decode: cfg.decode.options(),
        findings: finding_context(&cfg, a.central_account, a.region),
        now,
        // An archive is read long after it was written: no future bound.
        detector: DetectorConfig { max_future_skew_ms: None, ..cfg.detector_config()? },
        format: match a.format {
            ReplayFormatArg::Asff => replay::ReplayFormat::Asff,
            ReplayFormatArg::Ocsf => replay::ReplayFormat::Ocsf,
            ReplayFormatArg::Matches => replay::ReplayFormat::Matches,
        },
    };
    // `-` is standard output, by convention.
    let stdout_dash = a.output.as_deref().is_some_and(|p| p == Path::new("-"));
    if stdout_dash && a.responses.is_some() {
        anyhow::bail!("--responses prints its table on stdout: give --output a file, not -");
    }
    // With --responses the table takes stdout; findings go to --output or a scratch file.
    let scratch = (a.responses.is_some() && a.output.is_none() && !a.to_securityhub)
        .then(|| std::env::temp_dir().join(format!("trailwatch-replay-{}.ndjson", std::process::id())));
    let output = match (&a.output, a.to_securityhub) {
        (_, true) if stdout_dash => anyhow::bail!("--to-securityhub needs a file for --output, not -"),
        (None, true) => Some(cfg.service.state_dir.join("replay-findings.ndjson")),
        _ if stdout_dash => None,
        (o, _) => o.clone().or_else(|| scratch.clone()),
    };
    if let Some(dir) = output.as_ref().and_then(|p| p.parent()).filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let set = Arc::new(set);
    let stats = match &output {
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
            let mut w = io::BufWriter::new(f);
            replay::replay(Arc::clone(&set), &opts, &mut w)?
        }
        None => {
            let stdout = io::stdout();
            let mut w = io::BufWriter::new(stdout.lock());
            replay::replay(Arc::clone(&set), &opts, &mut w)?
        }
    };
    eprint!("{}", stats.summary());
    if let Some(n) = &derived_note {
        eprint!("{n}");
    }
    let mut code = 0;
    if let Some(e) = &expectations {
        let outcomes = e.check(&set, &stats.eval.matches);
        for o in &outcomes {
            eprintln!("{}", o.line());
        }
        let failed = outcomes.iter().filter(|o| !o.passed).count();
        eprintln!("expectations: {} met, {failed} not met", outcomes.len() - failed);
        if let Some(j) = &a.junit {
            std::fs::write(j, replay::expect::junit(&outcomes, stats.elapsed.as_secs_f64()))
                .with_context(|| format!("cannot write {}", j.display()))?;
        }
        if failed > 0 {
            code = 2;
        }
    }
    if a.responses.is_some() {
        let path = output.as_ref().expect("set above with --responses");
        let table = responses_dry_run(&cfg, &set, path);
        if let Some(s) = &scratch {
            let _ = std::fs::remove_file(s);
        }
        print!("{}", table?);
    }
    if a.to_securityhub {
        let path = output.expect("set above with --to-securityhub");
        import_to_securityhub(&cfg, &opts.findings, &path)?;
    }
    Ok(code)
}

fn tune_cmd(a: TuneArgs) -> anyhow::Result<i32> {
    let (cfg, set, warnings) = load_rules(&a.rules)?;
    print_warnings(&warnings);
    if set.rules().is_empty() {
        anyhow::bail!("no rules to run: give --rules DIR or drop --no-builtin");
    }
    let now = match &a.now {
        Some(t) => OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--now `{t}` is not an RFC 3339 time"))?,
        None => OffsetDateTime::now_utc(),
    };
    let builtin = cfg.rules.builtin && !a.rules.no_builtin;
    let mut files = if builtin { ruleset::builtin_files() } else { Vec::new() };
    let mut dirs = cfg.rules.paths.clone();
    dirs.extend(a.rules.rules.iter().cloned());
    if !dirs.is_empty() {
        files.extend(ruleset::files_in(&dirs)?);
    }
    let opts = crate::tune::TuneOptions {
        replay: ReplayOptions {
            inputs: a.inputs,
            dead_letter: None,
            progress: false,
            decode: cfg.decode.options(),
            findings: finding_context(&cfg, None, None),
            now,
            detector: cfg.detector_config()?,
            format: replay::ReplayFormat::Asff,
            archive: replay::ArchiveOptions::default(),
        },
        files,
        placeholders: ruleset::compile_options(&cfg, builtin)?.placeholders,
        top: a.top,
        min_findings: a.min_findings,
        min_hours: a.min_hours,
        expires: now + time::Duration::days(a.expires_in_days),
    };
    let (report, stats) = crate::tune::tune(Arc::new(set), &opts)?;
    eprint!("{}", stats.summary());
    let snippet = report.snippet();
    let out = io::stdout();
    let mut out = out.lock();
    write!(out, "{}", report.text().lines().map(|l| format!("# {l}\n")).collect::<String>())?;
    writeln!(out)?;
    write!(out, "{snippet}")?;
    if let Some(p) = &a.snippet {
        std::fs::write(p, &snippet).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(0)
}

/// `replay --responses dry-run`: every response planned over the replayed
/// findings, with the rate limits and cap on the findings' own time.
fn responses_dry_run(cfg: &Config, set: &RuleSet, path: &std::path::Path) -> anyhow::Result<String> {
    use crate::respond::{self, FindingView, Mode, Responder, ResponseRule};
    // Every response as dry-run: this shows what enforce would do, and changes nothing.
    let rules: Vec<ResponseRule> =
        cfg.responses.iter().map(|r| ResponseRule { mode: Mode::DryRun, ..r.clone() }).collect();
    let mut responder = Responder::offline(&cfg.respond, &rules, respond::rule_tags(set));
    let modes: std::collections::HashMap<String, Mode> = cfg
        .responses
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone().unwrap_or_else(|| format!("responses[{i}]")), r.mode))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = std::time::Instant::now();
    let mut t0: Option<i64> = None;
    let mut records = Vec::new();
    for line in io::BufRead::lines(io::BufReader::new(file)) {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let Some(view) = FindingView::from_asff(&v) else { continue };
        let t = crate::config::parse_time(&view.last_seen).unwrap_or(0);
        let start = *t0.get_or_insert(t);
        let now = base + std::time::Duration::from_millis((t - start).max(0) as u64);
        for mut r in rt.block_on(responder.handle(&view, now)) {
            // Shown with the mode the config gives it.
            r.mode = modes.get(&r.response).copied().unwrap_or(r.mode);
            records.push(r);
        }
    }
    Ok(respond::dry_run_table(&records))
}

/// `replay --to-securityhub`: the replayed findings through the Security Hub sink.
fn import_to_securityhub(cfg: &Config, findings: &FindingContext, path: &std::path::Path) -> anyhow::Result<()> {
    use crate::sinks::{securityhub::SecurityHubSink, Sink, SinkConfig};
    let (name, sh) = cfg
        .sinks
        .iter()
        .find_map(|(n, s)| match s {
            SinkConfig::Securityhub(c) => Some((n.clone(), c.clone())),
            _ => None,
        })
        .unwrap_or_else(|| ("securityhub".to_string(), Default::default()));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("trailwatch").build()?;
    rt.block_on(async {
        let ctx = crate::sinks::SinkContext {
            name: &name,
            aws: &cfg.aws,
            findings,
            state_dir: &cfg.service.state_dir,
            health: Arc::new(crate::health::Health::new()),
        };
        let mut sink = SecurityHubSink::build(&sh, &ctx).await?;
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut chunk = Vec::with_capacity(1000);
        for line in io::BufRead::lines(io::BufReader::new(file)) {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if !line.trim().is_empty() {
                chunk.push(line);
            }
            if chunk.len() == 1000 {
                sink.send_json_lines(std::mem::take(&mut chunk)).await?;
            }
        }
        sink.send_json_lines(chunk).await?;
        sink.close().await?;
        let (sent, failed, spooled) = sink.counts();
        eprintln!(
            "security hub: {sent} findings imported, {failed} rejected, {spooled} spooled for the next `trailwatch run` (sink {name})"
        );
        anyhow::Ok(())
    })
}

fn validate_cmd(dirs: &[PathBuf]) -> anyhow::Result<i32> {
    let files = ruleset::files_in(dirs)?;
    let (set, warnings) = ruleset::compile(&files, &plain_options(true)?)?;
    print_warnings(&warnings);
    if let Some(line) = filter_summary(&set) {
        eprintln!("{line}");
    }
    println!(
        "{} rule{} in {} file{}: ok",
        set.rules().len(),
        if set.rules().len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
    Ok(0)
}

fn services(r: &trailwatch_rules::DetectionRule) -> String {
    EventClass::ALL.iter().filter(|c| r.sees(**c)).map(|c| c.service()).collect::<Vec<_>>().join(",")
}

fn list_cmd(args: &RuleArgs, format: ListFormat) -> anyhow::Result<i32> {
    let (_, set, _) = load_rules(args)?;
    // One row per rule: detections, then correlations (which see the alerts
    // of the rules they name).
    struct Row<'a> {
        meta: &'a trailwatch_rules::RuleMeta,
        sees: String,
        condition: String,
    }
    let mut rows: Vec<Row<'_>> = set
        .rules()
        .iter()
        .map(|r| Row { meta: &r.meta, sees: services(r), condition: r.condition_text.clone() })
        .collect();
    for c in set.correlations() {
        rows.push(Row {
            meta: &c.meta,
            sees: format!("correlation ({:?}, {}s)", c.kind, c.timespan_ms / 1000).to_lowercase(),
            condition: format!("{:?} by {}", c.condition, c.group_by.join(", ")),
        });
    }
    let out = io::stdout();
    let mut out = out.lock();
    for r in &rows {
        let m = r.meta;
        match format {
            ListFormat::Text => writeln!(
                out,
                "{:<38} {:<13} {:<24} {}  [{}]",
                m.id,
                m.level.as_str(),
                r.sees,
                m.title,
                m.nist_csf().join(", ")
            )?,
            ListFormat::Markdown => {
                if std::ptr::eq(r, &rows[0]) {
                    writeln!(out, "| id | title | level | sees | NIST CSF |")?;
                    writeln!(out, "|---|---|---|---|---|")?;
                }
                writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} |",
                    m.id,
                    m.title.replace('|', "\\|"),
                    m.level.as_str(),
                    r.sees,
                    m.nist_csf().join(", ")
                )?
            }
            ListFormat::Json => {
                let v = serde_json::json!({
                    "id": m.id,
                    "title": m.title,
                    "level": m.level.as_str(),
                    "status": m.status,
                    "sees": r.sees,
                    "tags": m.tags,
                    "nist_csf": m.nist_csf(),
                    "source": format!("{}:{}", m.source, m.line),
                    "condition": r.condition,
                });
                writeln!(out, "{v}")?;
            }
        }
    }
    Ok(0)
}

fn test_cmd(dirs: &[PathBuf]) -> anyhow::Result<i32> {
    // The pack's tests run with the pack's placeholder defaults, and its
    // example org where a default is empty (placeholders.json `test_values`).
    let files = if dirs.is_empty() { ruleset::builtin_files() } else { ruleset::files_in(dirs)? };
    let (set, warnings) = ruleset::compile(&files, &ruleset::test_options()?)?;
    print_warnings(&warnings);
    let set = Arc::new(set);
    let outcomes = testing::run_all_tests(&set);
    let mut failed = 0;
    for o in &outcomes {
        if o.passed {
            println!("ok    {}  {} :: {}", o.rule_id, o.rule_title, o.case);
        } else {
            failed += 1;
            println!("FAIL  {}  {} :: {}  ({}:{}): {}", o.rule_id, o.rule_title, o.case, o.source, o.line, o.message);
        }
    }
    // Base rules that only feed correlations are tested through them.
    let mut untested: Vec<&str> = set
        .rules()
        .iter()
        .enumerate()
        .filter(|(i, r)| r.tests.is_none() && set.detection_consumers(*i as u32).is_empty())
        .map(|(_, r)| r.meta.id.as_str())
        .collect();
    untested.extend(set.correlations().iter().filter(|c| c.tests.is_none()).map(|c| c.meta.id.as_str()));
    if !untested.is_empty() {
        println!("{} rule(s) without tests: {}", untested.len(), untested.join(", "));
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    Ok(if failed == 0 { 0 } else { 1 })
}
