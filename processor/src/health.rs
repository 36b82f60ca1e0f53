//! Liveness and readiness, shared by the components and served on /healthz
//! and /readyz (see `service/design.md`):
//!
//! - **ready** = started, not shutting down, every source connected, every
//!   sink healthy, and every source partition (Kinesis shard reader, SQS
//!   receiver) making progress: one that completed no poll within its stall
//!   budget (`service.source_stall_polls` × its poll interval, at least
//!   `service.source_stall_min`) is stalled, and named in the reason. Time a
//!   partition spends waiting on the pipeline (backpressure) or decoding does
//!   not count: the stages are watched by liveness.
//! - **live** = no pipeline stage (detector, sinks) is gone, and none has
//!   been busy with one piece of work for `service.stage_stall_timeout`
//!   without progress. Waiting for input or for the next stage is not busy.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When partitions and stages count as stalled.
#[derive(Debug, Clone, Copy)]
pub struct StallPolicy {
    pub source_polls: u32,
    pub source_min: Duration,
    pub stage_timeout: Duration,
}

#[derive(Debug)]
struct PartitionState {
    last_poll: Instant,
    budget: Duration,
    /// Waiting on the pipeline or decoding since then: not the reader's stall.
    busy_since: Option<Instant>,
    stalled: bool,
}

#[derive(Debug, Default)]
struct StageState {
    busy_since: Option<Instant>,
    dead: Option<String>,
    stalled: bool,
}

#[derive(Debug, Default)]
pub struct Health {
    started: AtomicBool,
    shutting_down: AtomicBool,
    sources: Mutex<BTreeMap<String, bool>>,
    sinks: Mutex<BTreeMap<String, bool>>,
    policy: Mutex<StallPolicy>,
    /// (source, partition) → progress.
    partitions: Mutex<BTreeMap<(String, String), PartitionState>>,
    stages: Mutex<BTreeMap<String, StageState>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Health {
    pub fn new() -> Self {
        Health::default()
    }

    pub fn set_policy(&self, p: StallPolicy) {
        *lock(&self.policy) = p;
    }

    /// Registers a source as not yet connected.
    pub fn add_source(&self, name: &str) {
        lock(&self.sources).insert(name.to_string(), false);
    }

    pub fn set_source(&self, name: &str, ok: bool) {
        lock(&self.sources).insert(name.to_string(), ok);
        self.publish();
    }

    pub fn set_sink(&self, name: &str, ok: bool) {
        lock(&self.sinks).insert(name.to_string(), ok);
        self.publish();
    }

    pub fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.publish();
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.publish();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Registers a partition reader; its first poll is due within
    /// `interval` × the policy. Unregistered when the handle drops.
    pub fn partition(self: &Arc<Self>, source: &str, partition: &str, interval: Duration) -> PartitionBeat {
        let budget = self.budget(interval);
        let key = (source.to_string(), partition.to_string());
        lock(&self.partitions).insert(
            key.clone(),
            PartitionState { last_poll: Instant::now(), budget, busy_since: None, stalled: false },
        );
        PartitionBeat { health: Arc::clone(self), key }
    }

    fn budget(&self, interval: Duration) -> Duration {
        let p = *lock(&self.policy);
        (interval.max(Duration::from_millis(1)) * p.source_polls).max(p.source_min)
    }

    /// Registers a pipeline stage (idle).
    pub fn stage(self: &Arc<Self>, name: &str) -> StageBeat {
        lock(&self.stages).insert(name.to_string(), StageState::default());
        StageBeat { health: Arc::clone(self), name: name.to_string() }
    }

    /// A stage ended or failed before the shutdown: the process is not live.
    pub fn set_stage_dead(&self, name: &str, why: &str) {
        lock(&self.stages).entry(name.to_string()).or_default().dead = Some(why.to_string());
        crate::metrics::get().pipeline_stage_stalled.with_label_values(&[name]).set(1);
        self.publish();
    }

    /// Why the service is not ready (empty when it is).
    pub fn not_ready(&self) -> Vec<String> {
        self.refresh();
        let mut why = Vec::new();
        if !self.started.load(Ordering::SeqCst) {
            why.push("starting".to_string());
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            why.push("shutting down".to_string());
        }
        for (n, ok) in lock(&self.sources).iter() {
            if !ok {
                why.push(format!("source {n} not connected"));
            }
        }
        for (n, ok) in lock(&self.sinks).iter() {
            if !ok {
                why.push(format!("sink {n} failing"));
            }
        }
        let now = Instant::now();
        for ((s, p), st) in lock(&self.partitions).iter() {
            if st.stalled {
                let idle = now.saturating_duration_since(st.last_poll).as_secs();
                why.push(format!(
                    "source {s} partition {p} stalled: no poll completed for {idle}s (budget {}s)",
                    st.budget.as_secs()
                ));
            }
        }
        why
    }

    /// Why the process is not live (empty when it is): a stage gone or stuck.
    pub fn not_live(&self) -> Vec<String> {
        self.refresh();
        let now = Instant::now();
        let mut why = Vec::new();
        for (n, st) in lock(&self.stages).iter() {
            if let Some(d) = &st.dead {
                why.push(format!("stage {n} is gone: {d}"));
            } else if st.stalled {
                let busy = st.busy_since.map(|t| now.saturating_duration_since(t).as_secs()).unwrap_or(0);
                why.push(format!("stage {n} stuck: busy without progress for {busy}s"));
            }
        }
        why
    }

    /// Re-evaluates stalls (called on every probe, scrape and service tick):
    /// updates the stall gauges and logs transitions.
    pub fn refresh(&self) {
        let now = Instant::now();
        let m = crate::metrics::get();
        let stage_timeout = lock(&self.policy).stage_timeout;
        for ((s, p), st) in lock(&self.partitions).iter_mut() {
            let stalled = st.busy_since.is_none() && now.saturating_duration_since(st.last_poll) > st.budget;
            if stalled != st.stalled {
                st.stalled = stalled;
                m.source_partition_stalled.with_label_values(&[s, p]).set(i64::from(stalled));
                if stalled {
                    tracing::warn!(source = %s, partition = %p, budget = ?st.budget, "source partition stalled: no poll completed within its budget");
                } else {
                    tracing::info!(source = %s, partition = %p, "source partition polling again");
                }
            }
        }
        for (n, st) in lock(&self.stages).iter_mut() {
            if st.dead.is_some() {
                continue;
            }
            let stalled = st.busy_since.is_some_and(|t| now.saturating_duration_since(t) > stage_timeout);
            if stalled != st.stalled {
                st.stalled = stalled;
                m.pipeline_stage_stalled.with_label_values(&[n]).set(i64::from(stalled));
                if stalled {
                    tracing::error!(stage = %n, timeout = ?stage_timeout, "pipeline stage stuck: busy without progress");
                } else {
                    tracing::info!(stage = %n, "pipeline stage progressing again");
                }
            }
        }
    }

    /// Refreshes stalls and the `trailwatch_ready` gauge.
    pub fn publish(&self) {
        crate::metrics::get().ready.set(i64::from(self.not_ready().is_empty()));
    }
}

/// A partition reader's progress reports; unregisters on drop (a closed
/// shard, a stopped receiver).
pub struct PartitionBeat {
    health: Arc<Health>,
    key: (String, String),
}

impl PartitionBeat {
    /// A poll completed; the next is due within `next_interval` (× the policy).
    pub fn polled(&self, next_interval: Duration) {
        let budget = self.health.budget(next_interval);
        if let Some(st) = lock(&self.health.partitions).get_mut(&self.key) {
            st.last_poll = Instant::now();
            st.budget = budget;
        }
    }

    /// Runs `f` (decoding, or waiting on a full pipeline) without counting
    /// its time against the reader; the budget restarts after it.
    pub async fn busy<F: Future>(&self, f: F) -> F::Output {
        self.set_busy(true);
        let r = f.await;
        self.set_busy(false);
        r
    }

    fn set_busy(&self, busy: bool) {
        if let Some(st) = lock(&self.health.partitions).get_mut(&self.key) {
            if busy {
                st.busy_since = Some(Instant::now());
            } else {
                st.busy_since = None;
                st.last_poll = Instant::now();
            }
        }
    }
}

impl Drop for PartitionBeat {
    fn drop(&mut self) {
        lock(&self.health.partitions).remove(&self.key);
        let (s, p) = (&self.key.0, &self.key.1);
        let _ = crate::metrics::get().source_partition_stalled.remove_label_values(&[s, p]);
    }
}

/// A pipeline stage's progress reports.
pub struct StageBeat {
    health: Arc<Health>,
    name: String,
}

impl StageBeat {
    /// Started a piece of work (or made progress in one: a retry attempt).
    pub fn busy(&self) {
        if let Some(st) = lock(&self.health.stages).get_mut(&self.name) {
            st.busy_since = Some(Instant::now());
        }
    }

    /// Waiting for input or for the next stage.
    pub fn idle(&self) {
        if let Some(st) = lock(&self.health.stages).get_mut(&self.name) {
            st.busy_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_everything_is_up() {
        let h = Health::new();
        h.add_source("k");
        h.set_sink("sh", true);
        assert!(!h.not_ready().is_empty());
        h.set_started();
        assert_eq!(h.not_ready(), vec!["source k not connected".to_string()]);
        h.set_source("k", true);
        assert!(h.not_ready().is_empty());
        h.set_sink("sh", false);
        assert_eq!(h.not_ready(), vec!["sink sh failing".to_string()]);
        h.set_sink("sh", true);
        h.set_shutting_down();
        assert_eq!(h.not_ready(), vec!["shutting down".to_string()]);
    }

    #[tokio::test]
    async fn a_partition_without_polls_stalls_readiness_but_not_while_busy() {
        let h = Arc::new(Health::new());
        h.set_policy(StallPolicy {
            source_polls: 2,
            source_min: Duration::from_millis(1),
            stage_timeout: Duration::from_millis(1),
        });
        h.set_started();
        let beat = h.partition("k", "shardId-000000000001", Duration::from_millis(10));
        beat.polled(Duration::from_millis(10));
        assert!(h.not_ready().is_empty());
        // Waiting downstream is not a stall, however long.
        beat.busy(tokio::time::sleep(Duration::from_millis(60))).await;
        assert!(h.not_ready().is_empty(), "{:?}", h.not_ready());
        std::thread::sleep(Duration::from_millis(60));
        let why = h.not_ready();
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("source k partition shardId-000000000001 stalled"), "{why:?}");
        beat.polled(Duration::from_millis(10));
        assert!(h.not_ready().is_empty());
        drop(beat);
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.not_ready().is_empty(), "a finished reader is no longer watched");
    }

    #[test]
    fn a_busy_stage_without_progress_is_not_live() {
        let h = Arc::new(Health::new());
        h.set_policy(StallPolicy {
            source_polls: 1,
            source_min: Duration::from_secs(1),
            stage_timeout: Duration::from_millis(30),
        });
        let det = h.stage("detector");
        det.busy();
        assert!(h.not_live().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        let why = h.not_live();
        assert!(why.len() == 1 && why[0].starts_with("stage detector stuck"), "{why:?}");
        det.idle();
        assert!(h.not_live().is_empty());
        // Idle for long is fine: nothing to do.
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.not_live().is_empty());
        h.set_stage_dead("sinks", "ended before the shutdown");
        assert_eq!(h.not_live(), vec!["stage sinks is gone: ended before the shutdown".to_string()]);
    }
}
