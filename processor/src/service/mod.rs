//! `trailwatch run`: the long-running service.
//!
//! ```text
//! sources (tasks)  --Input-->  detector stage (thread)  --Output-->  sink stage (task)  --> sinks
//!   decode units                 rules, windows, ASFF                  flush, commit, ack
//! ```
//!
//! Both channels are bounded: a slow sink slows the rules, which slow the
//! sources. Commits follow the order of the stream: see `design.md` for why a
//! Kinesis checkpoint or an SQS delete never runs ahead of the findings and
//! the window state of the events before it.

mod detector;
mod late;
mod sink_stage;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trailwatch_rules::RuleSet;

use crate::config::Config;
use crate::evaluate::{EvalStats, Evaluator};
use crate::findings::Finding;
use crate::health::Health;
use crate::pipeline::batch::AckStatus;
use crate::pipeline::Input;
use crate::sinks::dead_letter::DeadLetter;
use crate::sinks::dead_letter::DeadLetterWriter;
use crate::sources::{BatchSender, SourceContext, SourceError};
use crate::state::Committed;
pub use sink_stage::SinkStats;

/// Out of the detector stage, in stream order.
pub(crate) enum Output {
    Batch {
        findings: Vec<Arc<Finding>>,
        dead_letters: Vec<DeadLetter>,
        /// Security Hub custom actions asking for responses.
        requests: Vec<Arc<crate::findings::request::ResponseRequest>>,
        /// The `detector_batch` span's trace (None for windows closed by time).
        trace: Option<crate::telemetry::TraceContext>,
        /// Rule matches for the re-keyed stream (`crate::rekey`): put before
        /// the next commit's positions are written.
        rekey: Vec<crate::rekey::Record>,
    },
    Commit(CommitRequest),
}

/// Everything before this marker is to be made durable, then acknowledged.
pub(crate) struct CommitRequest {
    /// Positions that moved since the last commit.
    pub positions: BTreeMap<String, String>,
    pub acks: Vec<oneshot::Sender<AckStatus>>,
    /// The window snapshot; None when the windows did not change.
    pub windows: Option<Vec<u8>>,
    /// Leased shards' window snapshots, by position key (those whose windows
    /// changed).
    pub shard_windows: BTreeMap<String, Vec<u8>>,
    pub last: bool,
}

/// What the config file cannot say: hooks for embedders and tests, and the
/// org updates (they recompile the rule files the caller chose). Windows,
/// suppressions, findings and decoding all come from the `Config` given to
/// [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Fixed processing time (reproducible replays); None = the clock.
    pub now: Option<OffsetDateTime>,
    /// Overrides `service.dead_letter`; truncated instead of appended.
    pub dead_letter: Option<PathBuf>,
    /// Called with the bound metrics address once the endpoint listens.
    pub on_listen: Option<fn(SocketAddr)>,
    /// Told the number of commits made so far, after each one (for
    /// embedders and tests that wait for input to be durable).
    pub commits: Option<tokio::sync::watch::Sender<u64>>,
    /// Keeps `%org_accounts%`/`%org_id%` current when the config leaves them
    /// unset (see [`crate::org`]); None = fixed.
    pub org: Option<OrgUpdates>,
}

/// How the service keeps the org context current.
#[derive(Clone)]
pub struct OrgUpdates {
    /// The same rule files compiled with other org values.
    pub recompile: crate::org::Recompile,
    pub mode: OrgMode,
}

impl std::fmt::Debug for OrgUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgUpdates").field("mode", &self.mode).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum OrgMode {
    /// Ask AWS Organizations again every `refresh`; `current` is what the
    /// rules were compiled with.
    Organizations { aws: crate::aws::AwsConfig, refresh: Duration, current: crate::org::OrgValues },
    /// Add every new `recipientAccountId` of the input (no Organizations access).
    Derived { known: std::collections::BTreeSet<String>, org_id: Option<String> },
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub eval: EvalStats,
    pub sinks: SinkStats,
    pub elapsed: Duration,
    pub metrics_addr: Option<SocketAddr>,
}

impl RunSummary {
    pub fn text(&self) -> String {
        let e = &self.eval;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "{} events in {:.2}s ({:.0} events/s); {} bad records; {} skipped; {} findings; {} commits\n",
            e.events,
            secs,
            e.events as f64 / secs,
            e.bad_records,
            e.skipped,
            self.sinks.findings,
            self.sinks.commits,
        );
        s.push_str(&e.summary_details());
        s
    }
}

/// How the sink stage task ended.
/// How long start-up keeps retrying a state store that fails transiently
/// (a network blip, throttling) before it gives up: long enough for a
/// restarted endpoint, short enough that a dead one fails the task.
const LOAD_PATIENCE: Duration = Duration::from_secs(120);

/// Loads the last commit, retrying transient failures with backoff for up
/// to [`LOAD_PATIENCE`]; a permanent failure (bad state, access denied)
/// fails at once.
async fn load_state(s: &dyn crate::state::StateStore) -> anyhow::Result<Option<Committed>> {
    let until = Instant::now() + LOAD_PATIENCE;
    let backoff = crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut attempt = 0u32;
    loop {
        match s.load().await {
            Ok(c) => return Ok(c),
            Err(e) if e.is_retryable() && Instant::now() < until => {
                let wait = backoff.equal_jitter(attempt);
                tracing::warn!(attempt, ?wait, "cannot load state from the {} yet, retrying: {e}", s.describe());
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot load state from the {} (after {} attempts)",
                    s.describe(),
                    attempt + 1
                )))
            }
        }
    }
}

type SinkOutcome = Result<Result<SinkStats, sink_stage::StageError>, tokio::task::JoinError>;

/// Runs the service described by `cfg` (validated: [`Config::load`]) with
/// the rules in `set`, until every (finite) source is done or `shutdown`
/// resolves, then shuts down in order within `service.shutdown_timeout`.
pub async fn run(
    cfg: Config,
    set: Arc<RuleSet>,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<RunSummary> {
    // The whole service is one large future (every stage's state machine):
    // on the heap, so whoever awaits it (`block_on` on a 2 MiB test thread,
    // a debug build) does not need a large stack.
    Box::pin(run_service(cfg, set, opts, shutdown)).await
}

async fn run_service(
    cfg: Config,
    set: Arc<RuleSet>,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let m = crate::metrics::get();
    m.up.set(1);
    let health = Arc::new(Health::new());
    health.set_policy(crate::health::StallPolicy::from(&cfg.service));
    let stop_http = CancellationToken::new();

    let metrics_addr = if cfg.metrics.enabled {
        let addr: SocketAddr =
            cfg.metrics.listen.parse().with_context(|| format!("metrics.listen `{}`", cfg.metrics.listen))?;
        let (bound, _task) = crate::http::serve(addr, Arc::clone(&health), stop_http.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
        tracing::info!("metrics on http://{bound}/metrics");
        if let Some(f) = opts.on_listen {
            f(bound);
        }
        Some(bound)
    } else {
        None
    };

    // State first: it says where every source resumes.
    let store = crate::state::build(&cfg.checkpoints, &cfg.service.state_dir, &cfg.aws).await?;
    // Leased Kinesis sources checkpoint into their lease table.
    let mut leases = std::collections::BTreeMap::new();
    for (name, sc) in &cfg.sources {
        if let crate::sources::SourceConfig::Kinesis(k) = sc {
            if k.coordination == crate::sources::kinesis::Coordination::Leases {
                let cp = &cfg.checkpoints;
                let snapshots = cp.snapshot_bucket.as_deref().filter(|b| !b.trim().is_empty()).map(|bucket| {
                    let reach = cfg.aws.with_overrides(cp.region.as_ref(), cp.endpoint_url.as_ref());
                    (bucket, cp.snapshot_prefix.as_str(), reach)
                });
                let c =
                    crate::sources::kinesis::leases::LeaseCoordinator::for_source(name, k, &cfg.aws, snapshots).await;
                leases.insert(name.clone(), Arc::new(c));
            }
        }
    }
    // Correlations off the partition key run on the re-keyed stream, or are refused.
    let rekey = match rekey_plan(&cfg, &set)? {
        Some((plan, sets, split)) => {
            tracing::info!(
                source = %plan.source,
                correlations = split.len(),
                "re-keyed correlations (their matches go to the re-keyed stream): {}",
                split.iter().map(|i| describe_correlation(&set, *i)).collect::<Vec<_>>().join("; ")
            );
            Some((Arc::new(plan), sets))
        }
        None => None,
    };
    let store: Option<Box<dyn crate::state::StateStore>> = if leases.is_empty() {
        store
    } else {
        Some(Box::new(crate::state::leased::LeasedStore { inner: store, leases: leases.clone() }))
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let committed = match &store {
        Some(s) => {
            let c = tokio::select! {
                c = load_state(s.as_ref()) => c?,
                // Nothing was read yet, so nothing can be lost: a clean stop.
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested before the state was loaded from the {}: nothing read, stopping", s.describe());
                    stop_http.cancel();
                    return Ok(RunSummary::default());
                }
            };
            if let Some(c) = &c {
                tracing::info!(commit = c.commit, positions = c.positions.len(), "resuming from the {}", s.describe());
            }
            c.unwrap_or_default()
        }
        None => Committed::default(),
    };

    let findings = cfg.finding_context();
    let (main_set, rekey) = match rekey {
        Some((plan, sets)) => (Arc::new(sets.main), Some((plan, sets.rekeyed))),
        None => (Arc::clone(&set), None),
    };
    let det_cfg = cfg.detector_config()?;
    let mut eval = Evaluator::new(main_set, det_cfg.clone(), findings.clone());
    if let Some(w) = &committed.windows {
        match eval.detector().restore(w) {
            Ok(None) => {}
            Ok(Some(note)) => tracing::warn!("{note}"),
            Err(e) => tracing::warn!("window state not restored, windows start empty: {e}"),
        }
    }

    let mut sinks = Vec::new();
    let sink_cfgs: Vec<(String, crate::sinks::SinkConfig)> = if cfg.sinks.is_empty() {
        vec![("stdout".to_string(), crate::sinks::SinkConfig::AsffJsonl(Default::default()))]
    } else {
        cfg.sinks.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    for (name, sc) in &sink_cfgs {
        let ctx = crate::sinks::SinkContext {
            name,
            aws: &cfg.aws,
            findings: &findings,
            state_dir: &cfg.service.state_dir,
            health: Arc::clone(&health),
        };
        let sink = crate::sinks::build(sc, &ctx).await.with_context(|| format!("sink {name} ({})", sc.kind()))?;
        health.set_sink(name, true);
        sinks.push((name.clone(), sink));
    }
    if !cfg.responses.is_empty() {
        // Last: it acts after the sinks before it have the findings (Security Hub for the write-back).
        let tags = crate::respond::rule_tags(&set);
        let responder = crate::respond::Responder::build(
            &cfg.respond,
            &cfg.responses,
            tags,
            &cfg.aws,
            Some(&cfg.service.state_dir),
        )
        .await
        .context("responses")?;
        let mut responder = responder;
        responder.set_org(respond_org(&cfg.rules, opts.org.as_ref()));
        let sink = crate::respond::RespondSink::new(responder, &cfg.respond);
        health.set_sink("responses", true);
        sinks.push(("responses".to_string(), Box::new(sink) as Box<dyn crate::sinks::Sink>));
    }
    let dead_letter = match &opts.dead_letter {
        Some(p) => DeadLetterWriter::new(p, true),
        None => DeadLetterWriter::new(&cfg.service.dead_letter_path(), false),
    };

    let cap = cfg.service.channel_capacity;
    let (in_tx, in_rx) = mpsc::channel::<Input>(cap);
    let (out_tx, out_rx) = mpsc::channel::<Output>(cap);
    let hard_stop = CancellationToken::new();
    let all_finite = !cfg.sources.is_empty() && cfg.sources.values().all(|s| s.is_finite());

    // Re-keyed matches go to the stream the rekey source reads.
    let publisher = match (&rekey, cfg.rekey.source.as_ref().and_then(|n| cfg.sources.get(n))) {
        (Some(_), Some(crate::sources::SourceConfig::Kinesis(k))) => {
            health.set_sink("rekey", true);
            Some(crate::rekey::Publisher::build(k, &cfg.aws).await)
        }
        _ => None,
    };
    let sink_stage = sink_stage::SinkStage {
        rekey: publisher,
        rx: out_rx,
        sinks,
        dead_letter: Some(dead_letter),
        store,
        committed: committed.clone(),
        health: Arc::clone(&health),
        hard_stop: hard_stop.clone(),
        commits: opts.commits.clone(),
        beat: health.stage("sinks"),
    };
    let mut sink_task = tokio::spawn(sink_stage.run());

    let snapshots = cfg.checkpoints.store != crate::config::StoreKind::None && !set.correlations().is_empty();
    let det = detector::DetectorStage {
        eval,
        rx: in_rx,
        tx: out_tx,
        commit_interval: cfg.service.commit_interval,
        now: opts.now,
        flush_at_end: all_finite,
        snapshots,
        beat: health.stage("detector"),
        leased: leases.keys().cloned().collect(),
        rekey: rekey.map(|(plan, sets)| {
            crate::rekey::RekeyStage::new(plan, sets, det_cfg.clone(), findings.clone(), cfg.rekey.reorder)
        }),
        shards: Default::default(),
        late: late::LatePublisher::new(
            crate::metrics::get().window_partition_late_events.clone(),
            late::NAMED_PER_SOURCE,
        ),
        derive: match &opts.org {
            Some(OrgUpdates { recompile, mode: OrgMode::Derived { known, org_id } }) => Some(detector::Derive {
                known: known.clone(),
                org_id: org_id.clone(),
                recompile: Arc::clone(recompile),
            }),
            _ => None,
        },
    };
    let mut det_task = tokio::task::spawn_blocking(move || det.run());

    // Ticks keep time moving and let an idle pipeline publish and commit.
    let stop_ticks = CancellationToken::new();
    {
        let tx = in_tx.clone();
        let stop = stop_ticks.clone();
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {
                        let _ = tx.try_send(Input::Tick);
                        // Stalls show in metrics and logs even without probes.
                        health.publish();
                    }
                }
            }
        });
    }

    // AWS Organizations asked again now and then: a changed org recompiles
    // the rules off the detector thread and swaps them in between batches.
    if let Some(OrgUpdates { recompile, mode: OrgMode::Organizations { aws, refresh, current } }) = &opts.org {
        let (tx, stop, recompile, aws, refresh) =
            (in_tx.clone(), stop_ticks.clone(), Arc::clone(recompile), aws.clone(), *refresh);
        let mut current = current.clone();
        tokio::spawn(async move {
            let sdk = crate::aws::sdk_config(&aws).await;
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let found = match crate::org::discover(&sdk).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!("org context not refreshed, keeping the last one: {e}");
                        continue;
                    }
                };
                let next = current.merged(&found);
                if next == current {
                    continue;
                }
                let rc = Arc::clone(&recompile);
                let values = next.clone();
                match tokio::task::spawn_blocking(move || rc(&values)).await {
                    Ok(Ok(set)) => {
                        tracing::info!(
                            accounts = next.accounts.len(),
                            org_id = next.org_id.as_deref().unwrap_or(""),
                            "org context changed (AWS Organizations): rules recompiled"
                        );
                        current = next;
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tx.send(Input::Rules(Arc::new(set))) => {}
                        }
                    }
                    Ok(Err(e)) => tracing::error!("rules not recompiled for the new org context: {e:#}"),
                    Err(e) => tracing::error!("rule recompilation panicked: {e}"),
                }
            }
        });
    }

    let stop_sources = CancellationToken::new();
    let mut sources: JoinSet<(String, Result<(), SourceError>)> = JoinSet::new();
    for (name, sc) in &cfg.sources {
        health.add_source(name);
        let src = crate::sources::build(name, sc, &cfg.aws).await.with_context(|| format!("source {name}"))?;
        let ctx = SourceContext {
            name: Arc::from(name.as_str()),
            out: BatchSender::new(in_tx.clone()),
            shutdown: stop_sources.clone(),
            checkpoints: committed.positions_of(name),
            health: Arc::clone(&health),
            decode: cfg.decode.options(),
            leases: leases.get(name).cloned(),
        };
        let name = name.clone();
        sources.spawn(async move { (name, src.run(ctx).await) });
    }
    // Only sources and the ticker hold senders now: when they are gone the
    // detector sees the end of its input.
    drop(in_tx);
    health.set_started();

    let mut failure: Option<anyhow::Error> = None;
    // A stage that ends before the shutdown (a panic without the fail-fast
    // hook, a sink stage that failed for good) stops the service: never a
    // process that serves /metrics while nothing flows.
    let mut det_done: Option<Result<EvalStats, tokio::task::JoinError>> = None;
    let mut sink_done: Option<SinkOutcome> = None;
    let mut finite_left = sources.len();
    // With every source finished but not all of them finite (a file source
    // with exit_when_done = false), the service stays up until shut down.
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutdown requested: stopping the sources");
                break;
            }
            r = &mut det_task, if det_done.is_none() => {
                let why = match &r {
                    Ok(_) => "the detector stage stopped before the shutdown".to_string(),
                    Err(e) => format!("the detector stage died: {e}"),
                };
                tracing::error!("{why}: stopping");
                health.set_stage_dead("detector", &why);
                failure = Some(anyhow::anyhow!("{why}"));
                det_done = Some(r);
                break;
            }
            r = &mut sink_task, if sink_done.is_none() => {
                let why = match &r {
                    Ok(Ok(_)) => "the sink stage stopped before the shutdown".to_string(),
                    Ok(Err(e)) => format!("the sink stage failed: {e}"),
                    Err(e) => format!("the sink stage died: {e}"),
                };
                tracing::error!("{why}: stopping");
                health.set_stage_dead("sinks", &why);
                // A sink stage error is returned as the run's error below.
                if !matches!(r, Ok(Err(_))) {
                    failure = Some(anyhow::anyhow!("{why}"));
                }
                sink_done = Some(r);
                break;
            }
            done = sources.join_next(), if !sources.is_empty() => match done {
                None => {}
                Some(Ok((name, Ok(())))) => {
                    tracing::info!(source = %name, "source finished");
                    finite_left -= 1;
                    if finite_left == 0 && all_finite {
                        break;
                    }
                }
                Some(Ok((name, Err(e)))) => {
                    tracing::error!(source = %name, "source failed: {e}");
                    failure = Some(anyhow::anyhow!("source {name}: {e}"));
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(anyhow::anyhow!("a source task panicked: {e}"));
                    break;
                }
            },
        }
    }

    // Shutdown, in order: stop reading → drain the rules → flush sinks and
    // commit (the detector's final commit marker) → exit; all within the deadline.
    health.set_shutting_down();
    let deadline = tokio::time::Instant::now() + cfg.service.shutdown_timeout;
    stop_sources.cancel();
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, sources.join_next()).await {
        if let Ok((name, Err(e))) = done {
            tracing::error!(source = %name, "source failed while stopping: {e}");
            failure.get_or_insert_with(|| anyhow::anyhow!("source {name}: {e}"));
        }
    }
    if !sources.is_empty() {
        tracing::warn!("{} source(s) did not stop before the deadline", sources.len());
        sources.abort_all();
    }
    stop_ticks.cancel();

    let rest = async {
        let eval = match det_done {
            Some(r) => r,
            None => det_task.await,
        };
        let eval = eval.map_err(|e| anyhow::anyhow!("the detector stage panicked: {e}"))?;
        let sinks = match sink_done {
            Some(r) => r,
            None => sink_task.await,
        };
        let sinks = sinks.map_err(|e| anyhow::anyhow!("the sink stage panicked: {e}"))?;
        anyhow::Ok((eval, sinks))
    };
    let (eval, sinks) = match tokio::time::timeout_at(deadline, rest).await {
        Ok(r) => r?,
        Err(_) => {
            hard_stop.cancel();
            stop_http.cancel();
            anyhow::bail!(
                "shutdown did not finish within {:?}; uncommitted input will be read again",
                cfg.service.shutdown_timeout
            );
        }
    };
    // The final commit is written: hand the leases over at once instead of
    // after the failover time.
    if sinks.is_ok() {
        for (name, c) in &leases {
            match c.release_all().await {
                Ok(()) => tracing::info!(source = %name, "shard leases released"),
                Err(e) => tracing::warn!(source = %name, "shard leases not released (they expire instead): {e}"),
            }
        }
    }
    stop_http.cancel();
    m.up.set(0);
    let sinks = sinks.context("the sink stage failed")?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(RunSummary { eval, sinks, elapsed: started.elapsed(), metrics_addr })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The organization the responder may rely on: `[rules.placeholders]` or AWS
/// Organizations at start-up; accounts derived from the input are not proof
/// that an account is outside (an org account may not have been seen yet).
fn respond_org(rules: &crate::config::RulesConfig, org: Option<&OrgUpdates>) -> crate::respond::actions::OrgContext {
    let mut out = crate::respond::actions::OrgContext::default();
    if let Some(OrgUpdates { mode: OrgMode::Organizations { current, .. }, .. }) = org {
        out.org_id = current.org_id.clone();
        out.accounts = current.accounts.clone();
    }
    if let Some(id) = rules.placeholders.get(crate::org::ORG_ID).and_then(|v| v.first()) {
        out.org_id = Some(id.clone());
    }
    if let Some(a) = rules.placeholders.get(crate::org::ACCOUNTS).filter(|a| !a.is_empty()) {
        out.accounts = a.iter().cloned().collect();
    }
    out
}

/// Each leased shard keeps its own windows: a correlation must group by the
/// stream's partition key, or its windows would split across shards. Those
/// that do not run on the re-keyed stream (`crate::rekey`) when `[rekey]
/// source` names one, and are refused otherwise. No I/O: `trailwatch config`
/// checks a configuration with it exactly as `run` will. Returns the plan,
/// the rule sets of both sides and the re-keyed correlations (indices).
pub fn rekey_plan(
    cfg: &Config,
    set: &Arc<RuleSet>,
) -> anyhow::Result<Option<(crate::rekey::Plan, crate::rekey::Sets, Vec<usize>)>> {
    let leased: std::collections::BTreeSet<&str> = cfg
        .sources
        .iter()
        .filter(|(_, s)| {
            matches!(s, crate::sources::SourceConfig::Kinesis(k)
                if k.coordination == crate::sources::kinesis::Coordination::Leases)
        })
        .map(|(n, _)| n.as_str())
        .collect();
    let rekey_source = cfg.rekey.source.clone().filter(|_| !leased.is_empty());
    let keys: Vec<&str> = cfg
        .sources
        .iter()
        .filter(|(n, _)| leased.contains(n.as_str()) && rekey_source.as_ref() != Some(*n))
        .filter_map(|(_, s)| match s {
            crate::sources::SourceConfig::Kinesis(k) => Some(k.partition_key.as_str()),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Sources read without leases next to leased ones (SQS queues, files):
    // every instance reads any of their events, so no correlation follows a
    // key there, and windows kept on the instance would be split across
    // instances. Then every correlation runs on the re-keyed stream.
    let unleased: Vec<&str> = cfg
        .sources
        .keys()
        .map(String::as_str)
        .filter(|n| !leased.contains(n) && rekey_source.as_deref() != Some(*n))
        .collect();
    let split = if !leased.is_empty() && !unleased.is_empty() {
        (0..set.correlations().len()).collect()
    } else {
        crate::rekey::Plan::needing(set, &keys)
    };
    if split.is_empty() && rekey_source.is_none() {
        return Ok(None);
    }
    match &rekey_source {
        None if !leased.is_empty() && !unleased.is_empty() => anyhow::bail!(
            "coordination = \"leases\" with sources read without leases ({}): every instance reads any of their \
             events, so their correlations need a re-keyed stream ([rekey] source); these would be split across \
             instances: {}",
            unleased.join(", "),
            split.iter().map(|i| describe_correlation(set, *i)).collect::<Vec<_>>().join("; ")
        ),
        None if !leased.is_empty() => anyhow::bail!(
            "coordination = \"leases\" keeps each shard's windows on the instance that holds it, so every \
             correlation must group by the partition key ({}), or run on a re-keyed stream ([rekey] source); \
             these do not: {}",
            keys.join(", "),
            split.iter().map(|i| describe_correlation(set, *i)).collect::<Vec<_>>().join("; ")
        ),
        None => Ok(None),
        Some(source) => {
            let (plan, sets) = crate::rekey::Plan::new(source, Arc::clone(set), &split)
                .map_err(|e| anyhow::anyhow!("[rekey]: {e}"))?;
            Ok(Some((plan, sets, split)))
        }
    }
}

fn describe_correlation(set: &RuleSet, i: usize) -> String {
    let c = &set.correlations()[i];
    format!("{} ({}; group-by {})", c.meta.title, c.meta.id, c.group_by.join(", "))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::state::{StateError, StateStore};

    /// Fails `fails` times with `error`, then loads commit 7.
    struct Flaky {
        fails: u32,
        retryable: bool,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl StateStore for Flaky {
        async fn load(&self) -> Result<Option<Committed>, StateError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fails {
                return Err(StateError::Aws {
                    operation: "s3 GetObject",
                    message: "connection closed before message completed".into(),
                    retryable: self.retryable,
                });
            }
            Ok(Some(Committed { commit: 7, ..Committed::default() }))
        }
        async fn commit(&self, _: &Committed, _: &[String]) -> Result<(), StateError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "flaky store".into()
        }
    }

    /// Leases keep each shard's windows apart: a correlation grouped by
    /// anything but the partition key is refused by name without `[rekey]`,
    /// and the chain rules that `[rekey]` cannot split are refused too.
    #[tokio::test]
    async fn leases_refuse_correlations_off_the_partition_key_without_a_rekeyed_stream() {
        let rules = r#"
title: denied
id: r-denied
name: denied
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {errorCode: AccessDenied}
  condition: sel
---
title: denied from one IP
id: c-ip
name: by_ip
correlation:
  type: event_count
  rules: [denied]
  group-by: [sourceIPAddress]
  timespan: 10m
  condition: {gte: 3}
"#;
        let (set, _) = crate::ruleset::compile(
            &[trailwatch_rules::RuleFile { name: "r.yml".into(), text: rules.into() }],
            &Default::default(),
        )
        .unwrap();
        let set = Arc::new(set);
        let text = r#"
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:9"
[checkpoints]
store = "none"
[metrics]
enabled = false
[sources.org]
type = "kinesis"
stream_name = "s"
coordination = "leases"
lease_table = "t"
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let e = run(cfg.clone(), Arc::clone(&set), RunOptions::default(), std::future::pending()).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("denied from one IP (c-ip; group-by sourceIPAddress)") && e.contains("[rekey]"), "{e}");

        // With a re-keyed stream, a chain from a kept correlation into a re-keyed one is refused.
        let chained = format!(
            "{rules}---\ntitle: principal then ip\nid: c-chain\ncorrelation:\n  type: temporal\n  rules: [by_ip, denied]\n  group-by: [userIdentity.arn]\n  timespan: 10m\n"
        );
        let (set, _) = crate::ruleset::compile(
            &[trailwatch_rules::RuleFile { name: "r.yml".into(), text: chained }],
            &Default::default(),
        )
        .unwrap();
        let text = format!(
            "{text}[sources.rekeyed]\ntype = \"kinesis\"\nstream_name = \"r\"\ncoordination = \"leases\"\nlease_table = \"rt\"\n[rekey]\nsource = \"rekeyed\"\n"
        );
        let cfg: Config = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        let e = run(cfg, Arc::new(set), RunOptions::default(), std::future::pending()).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("[rekey]") && e.contains("c-chain") && e.contains("c-ip"), "{e}");
    }

    #[tokio::test]
    async fn a_transient_load_failure_is_retried() {
        let s = Flaky { fails: 3, retryable: true, calls: AtomicU32::new(0) };
        let c = load_state(&s).await.expect("loads after retries");
        assert_eq!(c.map(|c| c.commit), Some(7));
        assert_eq!(s.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_permanent_load_failure_fails_at_once() {
        let s = Flaky { fails: 1, retryable: false, calls: AtomicU32::new(0) };
        let e = load_state(&s).await.expect_err("permanent");
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);
        assert!(format!("{e:#}").contains("cannot load state from the flaky store (after 1 attempts)"), "{e:#}");
    }
}
