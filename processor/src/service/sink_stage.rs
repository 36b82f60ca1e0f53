//! The sink stage: hands findings to every sink, writes dead letters, and
//! carries out commits in order: flush every sink (delivered or spooled),
//! sync the dead-letter file, write checkpoints + window state, then tell the
//! sources (SQS deletes). A failing sink or store is retried with backoff
//! until it recovers or the shutdown deadline cancels `hard_stop`; input
//! whose commit never happened is simply read again after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CommitRequest, Output};
use crate::backoff::Backoff;
use crate::health::Health;
use crate::metrics;
use crate::pipeline::batch::AckStatus;
use crate::sinks::dead_letter::DeadLetterWriter;
use crate::sinks::Sink;
use crate::state::{Committed, StateError, StateStore};

pub(crate) struct SinkStage {
    pub rx: mpsc::Receiver<Output>,
    pub sinks: Vec<(String, Box<dyn Sink>)>,
    /// Puts re-keyed matches on the re-keyed stream (`crate::rekey`).
    pub rekey: Option<crate::rekey::Publisher>,
    pub dead_letter: Option<DeadLetterWriter>,
    pub store: Option<Box<dyn StateStore>>,
    pub committed: Committed,
    pub health: Arc<Health>,
    /// Cancelled when the shutdown deadline passes: stop retrying.
    pub hard_stop: CancellationToken,
    pub commits: Option<tokio::sync::watch::Sender<u64>>,
    /// Progress reports for liveness: busy while handling a message (each
    /// retry attempt is progress), idle while waiting for the next.
    pub beat: crate::health::StageBeat,
}

/// What the sink stage did.
#[derive(Debug, Default, Clone)]
pub struct SinkStats {
    pub findings: u64,
    pub dead_letters: u64,
    pub commits: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("stopped at the shutdown deadline with uncommitted input (it will be read again)")]
    Deadline,
    #[error("cannot write the dead-letter file {path}: {error}")]
    DeadLetter { path: String, error: std::io::Error },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Between retries of a sink or the checkpoint store: equal jitter, so a
/// failing dependency is never hammered.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

impl SinkStage {
    pub async fn run(mut self) -> Result<SinkStats, StageError> {
        let mut stats = SinkStats::default();
        let depth = metrics::get().pipeline_queue_depth.with_label_values(&["sinks"]);
        while let Some(msg) = self.rx.recv().await {
            self.beat.busy();
            depth.set(self.rx.len() as i64);
            match msg {
                Output::Batch { findings, dead_letters, requests, trace, rekey } => {
                    if !rekey.is_empty() {
                        if let Some(p) = &mut self.rekey {
                            p.push(rekey);
                        }
                        self.put_rekey(false).await?;
                    }
                    if !dead_letters.is_empty() {
                        stats.dead_letters += dead_letters.len() as u64;
                        self.write_dead_letters(dead_letters).await?;
                    }
                    if !findings.is_empty() {
                        crate::panics::test_point("sink");
                        self.send(&findings, trace).await?;
                        stats.findings += findings.len() as u64;
                    }
                    if !requests.is_empty() {
                        // Queued by the sinks that act on them; run at the next commit's flush.
                        for (name, sink) in &mut self.sinks {
                            if let Err(e) = sink.requests(&requests).await {
                                tracing::error!(sink = %name, "response requests not taken: {e}");
                            }
                        }
                    }
                }
                Output::Commit(req) => {
                    self.commit(req).await?;
                    stats.commits += 1;
                    if let Some(w) = &self.commits {
                        w.send_replace(stats.commits);
                    }
                }
            }
            self.beat.idle();
        }
        for (name, sink) in &mut self.sinks {
            if let Err(e) = sink.close().await {
                tracing::error!(sink = %name, "closing the sink failed: {e}");
            }
        }
        Ok(stats)
    }

    /// Appends dead letters on the blocking pool (file I/O stays off the
    /// runtime's threads).
    async fn write_dead_letters(
        &mut self,
        letters: Vec<crate::sinks::dead_letter::DeadLetter>,
    ) -> Result<(), StageError> {
        self.with_dead_letter(move |w| letters.iter().try_for_each(|d| w.write(d))).await
    }

    /// Runs `f` on the dead-letter writer in a blocking thread.
    async fn with_dead_letter(
        &mut self,
        f: impl FnOnce(&mut DeadLetterWriter) -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), StageError> {
        let Some(mut w) = self.dead_letter.take() else { return Ok(()) };
        let path = w.path().display().to_string();
        let (w, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut w);
            (w, r)
        })
        .await
        .map_err(|e| StageError::DeadLetter { path: path.clone(), error: std::io::Error::other(e.to_string()) })?;
        self.dead_letter = Some(w);
        r.map_err(|error| StageError::DeadLetter { path, error })
    }

    async fn send(
        &mut self,
        findings: &[Arc<crate::findings::Finding>],
        trace: Option<crate::telemetry::TraceContext>,
    ) -> Result<(), StageError> {
        for (name, sink) in &mut self.sinks {
            let mut failures = 0u32;
            let mut attempt = 1u32;
            loop {
                // One span per attempt, in the trace of the batch the findings came from.
                // i64: tracing-opentelemetry records unsigned fields as text.
                let span = tracing::info_span!(
                    "sink_send",
                    sink = %name,
                    findings = findings.len() as i64,
                    attempt = i64::from(attempt)
                );
                crate::telemetry::set_parent(&span, trace);
                attempt += 1;
                self.beat.busy();
                match tracing::Instrument::instrument(sink.send(findings), span.clone()).await {
                    Ok(()) => {
                        self.health.set_sink(name, true);
                        break;
                    }
                    Err(e) => {
                        self.health.set_sink(name, false);
                        crate::telemetry::mark_error(&span, &e.to_string());
                        let backoff = RETRY.equal_jitter(failures);
                        failures += 1;
                        tracing::warn!(sink = %name, "sink cannot take findings, retrying in {backoff:?}: {e}");
                        metrics::get().sink_retries.with_label_values(&[name, "send"]).inc();
                        if !wait(&self.hard_stop, backoff).await {
                            return Err(StageError::Deadline);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts queued re-keyed matches: full PutRecords calls only, or (`all`,
    /// at a commit) until none is left. Refused records are put again with
    /// backoff until the shutdown deadline.
    async fn put_rekey(&mut self, all: bool) -> Result<(), StageError> {
        let Some(p) = &mut self.rekey else { return Ok(()) };
        let mut failures = 0u32;
        while p.pending() > 0 && (all || p.full()) {
            self.beat.busy();
            match p.put_once().await {
                Ok(()) => {
                    failures = 0;
                    self.health.set_sink("rekey", true);
                }
                Err(e) => {
                    self.health.set_sink("rekey", false);
                    let backoff = RETRY.equal_jitter(failures);
                    failures += 1;
                    tracing::warn!(stream = %p.describe(), "re-keyed matches not all put, retrying in {backoff:?}: {e}");
                    metrics::get().sink_retries.with_label_values(&["rekey", "send"]).inc();
                    if !wait(&self.hard_stop, backoff).await {
                        metrics::get().checkpoint_commits.with_label_values(&["abandoned"]).inc();
                        return Err(StageError::Deadline);
                    }
                }
            }
        }
        Ok(())
    }

    async fn commit(&mut self, req: CommitRequest) -> Result<(), StageError> {
        // A trace of its own: it makes durable the work of many batches.
        let span = tracing::info_span!(
            "commit",
            commit = (self.committed.commit + 1) as i64,
            positions = req.positions.len() as i64,
            last = req.last
        );
        let r = tracing::Instrument::instrument(self.commit_inner(req), span.clone()).await;
        if let Err(e) = &r {
            crate::telemetry::mark_error(&span, &e.to_string());
        }
        r
    }

    async fn commit_inner(&mut self, req: CommitRequest) -> Result<(), StageError> {
        let started = Instant::now();
        let m = metrics::get();
        // 1. Everything before the marker is delivered or spooled, and the
        // re-keyed matches are on their stream.
        self.put_rekey(true).await?;
        for (name, sink) in &mut self.sinks {
            let mut failures = 0u32;
            loop {
                self.beat.busy();
                match tracing::Instrument::instrument(sink.flush(), tracing::info_span!("sink_flush", sink = %name))
                    .await
                {
                    Ok(()) => {
                        self.health.set_sink(name, sink.healthy());
                        break;
                    }
                    Err(e) => {
                        self.health.set_sink(name, false);
                        let backoff = RETRY.equal_jitter(failures);
                        failures += 1;
                        tracing::warn!(sink = %name, "sink flush failed, retrying in {backoff:?}: {e}");
                        m.sink_retries.with_label_values(&[name, "flush"]).inc();
                        if !wait(&self.hard_stop, backoff).await {
                            m.checkpoint_commits.with_label_values(&["abandoned"]).inc();
                            return Err(StageError::Deadline);
                        }
                    }
                }
            }
        }
        self.with_dead_letter(|w| w.sync()).await?;
        // 2. Checkpoints and window state, together.
        let changed: Vec<String> = req.positions.keys().cloned().collect();
        let mut next = self.committed.clone();
        next.commit += 1;
        next.positions.extend(req.positions);
        if let Some(w) = req.windows {
            next.windows = Some(w);
        }
        next.shard_windows = req.shard_windows;
        if let Some(store) = &self.store {
            let mut failures = 0u32;
            loop {
                self.beat.busy();
                match store.commit(&next, &changed).await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() => {
                        let backoff = RETRY.equal_jitter(failures);
                        failures += 1;
                        tracing::warn!("commit to the {} failed, retrying in {backoff:?}: {e}", store.describe());
                        m.checkpoint_commits.with_label_values(&["retried"]).inc();
                        if !wait(&self.hard_stop, backoff).await {
                            m.checkpoint_commits.with_label_values(&["abandoned"]).inc();
                            return Err(StageError::Deadline);
                        }
                    }
                    Err(e) => {
                        m.checkpoint_commits.with_label_values(&["failed"]).inc();
                        return Err(e.into());
                    }
                }
            }
        }
        self.committed = next;
        // 3. The input can go.
        for ack in req.acks {
            let _ = ack.send(AckStatus::Committed);
        }
        m.checkpoint_commits.with_label_values(&["ok"]).inc();
        m.checkpoint_last_success.set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
        m.checkpoint_commit_duration.observe(started.elapsed().as_secs_f64());
        if req.last {
            tracing::info!(commit = self.committed.commit, "final commit written");
        }
        Ok(())
    }
}

/// Sleeps for `d`; false when `stop` fired first.
async fn wait(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
