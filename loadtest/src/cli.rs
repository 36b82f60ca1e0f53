//! Command line: `generate`, `run`, `scenarios`, `leases`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::dataset;
use crate::generate::GenOptions;
use crate::org::OrgOptions;
use crate::output::{FileOptions, Format};
use crate::runner::live::{LiveTarget, Via};
use crate::runner::{self, replay::ReplayTarget, Limits, Order, RunOptions, Target};
use crate::scenarios::{self, Scenario};
use crate::util;

#[derive(Debug, Parser)]
#[command(
    name = "trailwatch-loadtest",
    version,
    about = "Synthetic org traffic with ground truth, and a benchmark runner for trailwatch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a dataset: events in the chosen formats, truth.json, trailwatch.toml.
    Generate(GenerateArgs),
    /// Generate (or take) a dataset, replay it through trailwatch, report speed and quality.
    Run(RunArgs),
    /// List the injected scenarios (attacks and look-alikes).
    Scenarios {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Simulate shard leases (`coordination = "leases"`) of N instances on S shards against
    /// DynamoDB: lease operations/s, DynamoDB cost/day, scale-out, failover and drain time.
    Leases(LeasesArgs),
}

#[derive(Debug, Args)]
pub struct LeasesArgs {
    /// DynamoDB endpoint (e.g. moto's http://127.0.0.1:PORT).
    #[arg(long)]
    pub endpoint_url: String,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Lease table to create (must not exist).
    #[arg(long, default_value = "trailwatch-leases-sim")]
    pub table: String,
    #[arg(long, default_value_t = 64)]
    pub shards: usize,
    #[arg(long, default_value_t = 8)]
    pub instances: usize,
    /// failover_time of the Kinesis source.
    #[arg(long, default_value = "30s")]
    pub failover: String,
    /// service.commit_interval: every held shard is checkpointed this often.
    #[arg(long, default_value = "10s")]
    pub commit_interval: String,
    /// How long to count operations in the steady state.
    #[arg(long, default_value = "60s")]
    pub measure: String,
    /// Packed window state per shard written with each checkpoint (0: none).
    #[arg(long, default_value_t = 32 * 1024)]
    pub snapshot_bytes: usize,
    /// Keep window states over 512 bytes in this S3 bucket at the same endpoint (created), as
    /// `checkpoints.snapshot_bucket` does; default: in the lease items.
    #[arg(long)]
    pub snapshot_bucket: Option<String>,
    /// Accounts in the org (sets the default --rate).
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Org events per second (default: 1.75 per account, the generator's 35/s for 20 accounts).
    #[arg(long)]
    pub rate: Option<f64>,
    /// End-to-end events per second of one instance, for the drain time (an input, not measured here).
    #[arg(long, default_value_t = 30_000.0)]
    pub instance_eps: f64,
    /// Average record size on the stream (the generator's realistic day: 1,410 bytes).
    #[arg(long, default_value_t = 1410.0)]
    pub record_bytes: f64,
    /// Backlog to drain, in hours of arrivals.
    #[arg(long, default_value_t = 1.0)]
    pub backlog_hours: f64,
    /// Write the JSON report here too.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Seed: the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Accounts in the org (management, security, log archive, shared services, then workloads).
    #[arg(long, default_value_t = 20)]
    pub accounts: usize,
    /// Regions workloads run in, the first being primary (global services log in us-east-1).
    #[arg(long, value_delimiter = ',', default_value = "us-east-1,eu-west-1")]
    pub regions: Vec<String>,
    /// Organization id (default: derived from the seed).
    #[arg(long)]
    pub org_id: Option<String>,
    /// How the org names its machine roles and which container runtimes pull
    /// (names the pack's defaults were not written for).
    #[arg(long, value_enum, default_value = "default")]
    pub org_variant: crate::org::Variant,
    /// Start of event time (RFC 3339).
    #[arg(long, default_value = "2026-11-02T00:00:00Z")]
    pub start: String,
    /// Length of event time: 90s, 15m, 6h, 1d.
    #[arg(long, default_value = "24h")]
    pub duration: String,
    /// Benign events per second of event time (35/s is about 3 million a day).
    #[arg(long, default_value_t = 35.0)]
    pub rate: f64,
    /// Attack scenarios: all, none, or a comma-separated list of names (see `scenarios`).
    #[arg(long, default_value = "all")]
    pub scenarios: String,
    /// Benign look-alikes: all, none, or a comma-separated list of names.
    #[arg(long, default_value = "all")]
    pub lookalikes: String,
    /// Instances of each selected scenario and look-alike.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// gzip level (0-9) of compressed files.
    #[arg(long, default_value_t = 1)]
    pub gzip_level: u32,
    /// Also gzip the NDJSON formats (ndjson, eventbridge).
    #[arg(long)]
    pub gzip: bool,
    /// CloudTrail files under AWSLogs/<org id>/<account>/ (an organization trail).
    #[arg(long)]
    pub org_trail: bool,
    /// Records inside each CloudTrail file in a seeded random order, as CloudTrail writes them.
    #[arg(long)]
    pub shuffle_records: bool,
    /// Refuse rate x duration above this many events.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_events: u64,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub gen: GenArgs,
    /// Dataset directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Output formats, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cloudtrail")]
    pub format: Vec<Format>,
    /// Replace a dataset already in --out.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub gen: GenArgs,
    /// Use this existing dataset instead of generating one.
    #[arg(long, conflicts_with = "out")]
    pub dataset: Option<PathBuf>,
    /// Where to generate the dataset.
    #[arg(long, short, default_value = "target/loadtest/dataset")]
    pub out: PathBuf,
    /// Replace a dataset already in --out.
    #[arg(long)]
    pub force: bool,
    /// The format trailwatch reads.
    #[arg(long, value_enum, default_value = "cloudtrail")]
    pub format: Format,
    /// File order: by delivery time across accounts (like a live feed) or path order.
    #[arg(long, value_enum, default_value = "time")]
    pub order: Order,
    /// trailwatch binary (default: target/release/trailwatch, next to this binary, or on PATH).
    #[arg(long, env = "TRAILWATCH_BIN")]
    pub trailwatch: Option<PathBuf>,
    /// trailwatch configuration (default: the dataset's trailwatch.toml describing the org).
    #[arg(long, conflicts_with = "no_org_config")]
    pub config: Option<PathBuf>,
    /// Run trailwatch with its defaults instead of the dataset's org configuration.
    #[arg(long)]
    pub no_org_config: bool,
    /// Also replay with no configuration at all and report that quality next
    /// to the org configuration's (replay only).
    #[arg(long, conflicts_with = "no_org_config")]
    pub compare_no_config: bool,
    /// Kill trailwatch after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
    /// JSON report path (default: <dataset>/run/report.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Skip looking up the raw events of example false positives.
    #[arg(long)]
    pub no_examples: bool,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Run `trailwatch run` live on a Kinesis stream or an SQS queue this tool creates and feeds,
    /// instead of `trailwatch replay` (needs --endpoint-url or AWS credentials; reads the ndjson
    /// format for Kinesis and the eventbridge format for SQS).
    #[arg(long, value_enum)]
    pub live: Option<Via>,
    /// AWS endpoint for --live (e.g. kinesalite's or moto's http://127.0.0.1:PORT).
    #[arg(long, requires = "live")]
    pub endpoint_url: Option<String>,
    /// AWS region for --live.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Shards of the Kinesis stream for --live.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Events per second sent at most for --live (default: as fast as the endpoint takes them).
    #[arg(long)]
    pub send_rate: Option<f64>,
    /// Batches in flight for --live.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Extra arguments for `trailwatch replay` (after --).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

/// Parses `all`, `none` or a list of names from `pool`.
pub fn select(spec: &str, pool: &'static [Scenario], what: &str) -> anyhow::Result<Vec<&'static Scenario>> {
    match spec.trim() {
        "all" => Ok(pool.iter().collect()),
        "none" | "" => Ok(Vec::new()),
        list => {
            let mut out = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match pool.iter().find(|s| s.name == name) {
                    Some(s) => out.push(s),
                    None => {
                        let known: Vec<&str> = pool.iter().map(|s| s.name).collect();
                        bail!("unknown {what} `{name}`; known: {}", known.join(", "));
                    }
                }
            }
            Ok(out)
        }
    }
}

impl GenArgs {
    pub fn options(&self) -> anyhow::Result<(GenOptions, FileOptions)> {
        let start = util::parse_rfc3339(&self.start)
            .with_context(|| format!("--start `{}` is not an RFC 3339 time", self.start))?;
        let duration = util::parse_duration(&self.duration)
            .with_context(|| format!("--duration `{}` is not a duration like 90s, 15m, 6h or 1d", self.duration))?;
        if self.gzip_level > 9 {
            bail!("--gzip-level must be 0-9, got {}", self.gzip_level);
        }
        let opts = GenOptions {
            seed: self.seed,
            org: OrgOptions {
                accounts: self.accounts,
                regions: self.regions.clone(),
                org_id: self.org_id.clone(),
                variant: self.org_variant,
            },
            start,
            duration,
            rate: self.rate,
            attacks: select(&self.scenarios, scenarios::ATTACKS, "scenario")?,
            lookalikes: select(&self.lookalikes, scenarios::LOOKALIKES, "look-alike")?,
            repeat: self.repeat,
            max_events: self.max_events,
        };
        opts.validate()?;
        Ok((
            opts,
            FileOptions {
                gzip_level: self.gzip_level,
                gzip_ndjson: self.gzip,
                org_trail: self.org_trail,
                shuffle_records: self.shuffle_records,
            },
        ))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Generate(a) => generate_cmd(a),
        Command::Run(a) => run_cmd(a),
        Command::Scenarios { json } => scenarios_cmd(json),
        Command::Leases(a) => leases_cmd(a),
    }
}

fn leases_cmd(a: LeasesArgs) -> anyhow::Result<i32> {
    let dur = |flag: &str, v: &str| {
        util::parse_duration(v)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .with_context(|| format!("--{flag} `{v}` is not a duration like 10s or 2m"))
    };
    let o = crate::leases::LeaseSimOptions {
        endpoint_url: a.endpoint_url,
        region: a.region,
        table: a.table,
        shards: a.shards,
        instances: a.instances,
        failover: dur("failover", &a.failover)?,
        commit_interval: dur("commit-interval", &a.commit_interval)?,
        measure: dur("measure", &a.measure)?,
        snapshot_bytes: a.snapshot_bytes,
        snapshot_bucket: a.snapshot_bucket,
        accounts: a.accounts,
        rate: a.rate.unwrap_or(a.accounts as f64 * 1.75),
        instance_eps: a.instance_eps,
        record_bytes: a.record_bytes,
        backlog_hours: a.backlog_hours,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = rt.block_on(crate::leases::simulate(&o))?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.report {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{json}");
    Ok(0)
}

fn progress(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

fn generate_cmd(a: GenerateArgs) -> anyhow::Result<i32> {
    let (opts, fopts) = a.gen.options()?;
    let mut formats = a.format.clone();
    formats.sort();
    formats.dedup();
    let (truth, took) = dataset::write(&opts, &a.out, &formats, fopts, a.force, progress(a.no_progress))?;
    let secs = took.as_secs_f64().max(1e-9);
    println!(
        "generated {} events ({} CloudTrail, {} EventBridge) in {:.2}s ({:.0} events/s); {} attack scenarios, {} look-alikes",
        truth.generator.events,
        truth.generator.events_cloudtrail,
        truth.generator.events_eventbridge,
        secs,
        truth.generator.events as f64 / secs,
        truth.scenarios.len(),
        truth.lookalikes.len()
    );
    for o in &truth.generator.outputs {
        println!("  {:<12} {} files, {:.1} MiB in {}", o.format, o.files, o.bytes as f64 / 1048576.0, o.dir.display());
    }
    println!("  truth: {}", a.out.join(dataset::TRUTH_FILE).display());
    Ok(0)
}

fn run_cmd(mut a: RunArgs) -> anyhow::Result<i32> {
    if let Some(via) = a.live {
        a.format = via.format();
        if !a.extra.is_empty() {
            bail!("arguments after -- are for `trailwatch replay`; --live runs `trailwatch run`");
        }
    }
    let binary = runner::replay::find_trailwatch(a.trailwatch.as_deref())?;
    let show = progress(a.no_progress);
    let (dir, generated_in) = match &a.dataset {
        Some(d) => (d.clone(), None),
        None => {
            let (opts, fopts) = a.gen.options()?;
            let (truth, took) = dataset::write(&opts, &a.out, &[a.format], fopts, a.force, show)?;
            eprintln!(
                "generated {} events in {:.2}s into {}",
                truth.generator.events,
                took.as_secs_f64(),
                a.out.display()
            );
            (a.out.clone(), Some(took))
        }
    };
    let config = if a.no_org_config {
        None
    } else {
        match &a.config {
            Some(c) => Some(c.clone()),
            None => Some(dir.join(dataset::CONFIG_FILE)).filter(|p| p.is_file()),
        }
    };
    let mut target: Box<dyn Target> = match a.live {
        None => Box::new(ReplayTarget { binary, config, extra_args: a.extra.clone() }),
        Some(via) => {
            let Some(endpoint) = a.endpoint_url.clone() else {
                bail!("--live needs --endpoint-url (the loadtest creates and deletes a stream or queue there)");
            };
            // Local emulators take any credentials; give the SDK (here and in the child) dummies
            // rather than letting it probe the instance metadata service.
            let local = endpoint.contains("://127.0.0.1") || endpoint.contains("://localhost");
            if local && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                std::env::set_var("AWS_ACCESS_KEY_ID", "test");
                std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
                std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            }
            Box::new(LiveTarget {
                binary,
                config,
                via,
                endpoint,
                region: a.region.clone(),
                shards: a.shards,
                send_rate: a.send_rate,
                senders: a.senders,
            })
        }
    };
    let opts = RunOptions {
        dataset: dir.clone(),
        format: a.format,
        order: a.order,
        limits: Limits { max_time: Duration::from_secs(a.max_seconds) },
        progress: show,
        examples: !a.no_examples,
        generated_in,
    };
    let mut report = runner::run(&opts, target.as_mut())?;
    if a.compare_no_config {
        if a.live.is_some() {
            bail!("--compare-no-config compares replays; drop --live");
        }
        let binary = runner::replay::find_trailwatch(a.trailwatch.as_deref())?;
        let mut bare = ReplayTarget { binary, config: None, extra_args: a.extra.clone() };
        let again = RunOptions { generated_in: None, ..opts.clone() };
        report.no_config = Some(runner::run(&again, &mut bare)?.quality);
    }
    let path = a.report.clone().unwrap_or_else(|| dir.join("run").join("report.json"));
    let text = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    print!("{}", report.summary());
    println!("report: {}", path.display());
    if !report.completed() {
        eprintln!("trailwatch output:\n{}", report.trailwatch.summary);
        return Ok(1);
    }
    Ok(0)
}

fn scenarios_cmd(json: bool) -> anyhow::Result<i32> {
    let rows: Vec<(&str, &Scenario)> = scenarios::ATTACKS
        .iter()
        .map(|s| ("attack", s))
        .chain(scenarios::LOOKALIKES.iter().map(|s| ("look-alike", s)))
        .collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(kind, s)| serde_json::json!({"name": s.name, "kind": kind, "theme": s.theme, "summary": s.summary}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (kind, s) in rows {
            println!("{:<10} {:<38} {:<32} {}", kind, s.name, s.theme, s.summary);
        }
    }
    Ok(0)
}
