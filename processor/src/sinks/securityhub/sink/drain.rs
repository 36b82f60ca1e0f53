//! The per-route spool queues (what cannot be delivered yet waits on disk,
//! one queue per route) and the background drainer that empties them,
//! parking routes that keep failing.

use super::*;

/// One route's spool queue: its own segment files, so a route that keeps
/// failing holds back only its own findings, never another route's.
pub(super) struct Queue {
    pub(super) key: RouteKey,
    /// Only used inside `spawn_blocking` (every write is fsynced).
    pub(super) spool: Arc<Mutex<Spool>>,
    pub(super) st: Mutex<QueueState>,
}

#[derive(Default)]
pub(super) struct QueueState {
    /// Mirror of the spool's depth, readable without waiting for file work.
    pub(super) findings: u64,
    pub(super) bytes: u64,
    /// Consecutive failed attempts (any kind); the route is parked until
    /// `parked_until`, doubling from PARK_BASE up to `park_max`.
    pub(super) failures: u32,
    pub(super) parked_until: Option<Instant>,
    /// Consecutive attempts refused for good (not transient, not invalid input).
    pub(super) refusals: u32,
}

/// A route's spool directory: `<spool_dir>/<account>_<region>`, with
/// anything but letters, digits and `-` replaced.
pub(super) fn queue_dir(root: &Path, key: &RouteKey) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    };
    let account = if key.0.is_empty() { "none".to_string() } else { clean(&key.0) };
    let region = key.1.as_deref().map_or_else(|| "default".to_string(), clean);
    root.join(format!("{account}_{region}"))
}

/// Opens every route's spool under `root` (their route is read from their
/// findings) and moves findings an older version spooled directly in `root`
/// (one queue for every route) into their routes' queues.
pub(super) fn open_queues(root: &Path) -> std::io::Result<HashMap<RouteKey, Spool>> {
    std::fs::create_dir_all(root)?;
    let mut out: HashMap<RouteKey, Spool> = HashMap::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let spool = Spool::open(&entry.path(), u64::MAX)?;
        let key = match spool.oldest() {
            Ok(Some((_, lines))) => {
                lines.first().and_then(|l| serde_json::from_str(l).ok()).map(|v| convert::route_of(&v))
            }
            _ => None,
        };
        match key {
            Some(key) => {
                out.insert(key, spool);
            }
            None if spool.is_empty() => {
                // An empty queue of an earlier run: reopened when its route comes back.
                let _ = std::fs::remove_dir(entry.path());
            }
            None => tracing::warn!(dir = %entry.path().display(), "spool queue with unreadable findings left alone"),
        }
    }
    let mut legacy = Spool::open(root, u64::MAX)?;
    while let Some((seq, lines)) = legacy.oldest().map_err(std::io::Error::other)? {
        let mut groups: HashMap<RouteKey, Vec<String>> = HashMap::new();
        for line in lines {
            let key = serde_json::from_str(&line).map(|v| convert::route_of(&v)).unwrap_or_default();
            groups.entry(key).or_default().push(line);
        }
        for (key, lines) in groups {
            let spool = match out.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Spool::open(&queue_dir(root, &key), u64::MAX)?)
                }
            };
            spool.append(&lines).map_err(std::io::Error::other)?;
        }
        legacy.remove(seq).map_err(std::io::Error::other)?;
    }
    Ok(out)
}

/// How long a route that failed `failures` times in a row waits.
pub(super) fn park_for(failures: u32, max: Duration) -> Duration {
    PARK_BASE.saturating_mul(1u32.checked_shl(failures.saturating_sub(1).min(30)).unwrap_or(u32::MAX)).min(max)
}

impl Shared {
    pub(super) fn queue_list(&self) -> Vec<Arc<Queue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Findings and bytes in every route's spool.
    pub(super) fn spool_depth(&self) -> (u64, u64) {
        self.queue_list().iter().fold((0, 0), |(f, b), q| {
            let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            (f + st.findings, b + st.bytes)
        })
    }

    /// Whether a fresh batch of `key` must wait in its route's spool: older
    /// findings of that route wait there, or the route is parked.
    pub(super) fn must_queue(&self, key: &RouteKey) -> bool {
        let q = self.queues.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned();
        q.is_some_and(|q| {
            let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            st.findings > 0 || st.parked_until.is_some_and(|t| t > Instant::now())
        })
    }

    pub(super) async fn queue(&self, key: &RouteKey) -> std::io::Result<Arc<Queue>> {
        if let Some(q) = self.queues.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(q.clone());
        }
        let dir = queue_dir(&self.spool_dir, key);
        let spool = blocking(move || Spool::open(&dir, u64::MAX)).await?;
        let st = QueueState { findings: spool.findings(), bytes: spool.bytes(), ..Default::default() };
        let q = Arc::new(Queue { key: key.clone(), spool: Arc::new(Mutex::new(spool)), st: Mutex::new(st) });
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        Ok(queues.entry(key.clone()).or_insert(q).clone())
    }

    /// A failed attempt of `q`'s route: park it; `refused` counts towards dead-lettering.
    /// Returns the refusals in a row.
    pub(super) fn failed(&self, q: &Queue, refused: bool) -> u32 {
        let refusals = {
            let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            st.failures = st.failures.saturating_add(1);
            st.parked_until = Some(Instant::now() + park_for(st.failures, self.cfg.park_max));
            st.refusals = if refused { st.refusals.saturating_add(1) } else { 0 };
            st.refusals
        };
        self.publish();
        refusals
    }

    pub(super) fn succeeded(&self, q: &Queue) {
        {
            let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
            st.failures = 0;
            st.refusals = 0;
            st.parked_until = None;
        }
        self.publish();
    }

    /// Writes `items` as a new segment of their route's spool (off the
    /// runtime's threads). `attempt` is the failed attempt that left them
    /// (its refusal reason, if refused), None when they only queue behind
    /// older findings. A route refused `max_refused_attempts` times in a row
    /// dead-letters them instead.
    pub(super) async fn spool_items(
        &self,
        key: RouteKey,
        items: Vec<Item>,
        attempt: Option<Option<String>>,
    ) -> Result<(), Stuck> {
        let q = match self.queue(&key).await {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(sink = %self.name, "cannot open the spool of {key:?}: {e}");
                return Err(Stuck(key, items));
            }
        };
        if let Some(refused) = attempt {
            let refusals = self.failed(&q, refused.is_some());
            if let Some(reason) = refused {
                if refusals >= self.cfg.max_refused_attempts {
                    self.dead_letter_refused(&key, &items, &reason, refusals);
                    return Ok(());
                }
            }
        }
        let size: u64 = items.iter().map(|i| i.line.len() as u64 + 1).sum();
        let (_, total) = self.spool_depth();
        let route_empty = q.st.lock().unwrap_or_else(|p| p.into_inner()).findings == 0;
        // One segment may always go into an empty route queue, so a batch
        // larger than the limit cannot wedge the route forever.
        if !route_empty && total + size > self.cfg.spool_max_bytes {
            tracing::warn!(
                sink = %self.name,
                "{}",
                SpoolError::Full {
                    dir: self.spool_dir.display().to_string(),
                    bytes: total,
                    max: self.cfg.spool_max_bytes
                }
            );
            return Err(Stuck(key, items));
        }
        let lines: Vec<String> = items.iter().map(|i| i.line.clone()).collect();
        let spool = q.spool.clone();
        let r = blocking(move || {
            let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
            s.append(&lines).map(|_| (s.findings(), s.bytes()))
        })
        .await;
        match r {
            Ok((findings, bytes)) => {
                {
                    let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                    st.findings = findings;
                    st.bytes = bytes;
                }
                self.publish();
                self.m.spooled.inc_by(items.len() as u64);
                tracing::warn!(
                    sink = %self.name, account = %key.0, region = ?key.1, findings = items.len(),
                    "Security Hub did not take the findings of this route: spooled"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(sink = %self.name, "{e}");
                Err(Stuck(key, items))
            }
        }
    }

    pub(super) fn dead_letter_refused(&self, key: &RouteKey, items: &[Item], reason: &str, refusals: u32) {
        tracing::error!(
            sink = %self.name, account = %key.0, region = ?key.1, findings = items.len(),
            "route refused {refusals} times in a row: findings dead-lettered ({reason})"
        );
        for i in items {
            self.dead_letter(
                "securityhub_refused",
                format!(
                    "{}: {reason} (route {}/{} refused {refusals} times in a row)",
                    i.id,
                    key.0,
                    key.1.as_deref().unwrap_or("-")
                ),
                &i.line,
            );
        }
    }

    /// Sends `q`'s spooled segments, oldest first, until the spool is empty
    /// or the route fails (then it is parked). A route refused
    /// `max_refused_attempts` times in a row dead-letters each segment after
    /// one more try.
    pub(super) async fn drain_queue(&self, q: &Queue) {
        loop {
            let spool = q.spool.clone();
            let oldest = blocking(move || spool.lock().unwrap_or_else(|p| p.into_inner()).oldest()).await;
            let (seq, lines) = match oldest {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(sink = %self.name, "{e}");
                    self.failed(q, false);
                    return;
                }
            };
            let mut items = Vec::with_capacity(lines.len());
            for line in lines {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        let id = v.get("Id").and_then(|x| x.as_str()).unwrap_or_default().to_string();
                        items.push(Item { id, line, finding: None });
                    }
                    Err(e) => self.reject("?", "Unreadable", &format!("spooled line is not JSON: {e}"), &line),
                }
            }
            let batch_size = self.cfg.batch_size.clamp(1, 100);
            let mut left: Vec<Item> = Vec::new();
            let mut refused = None;
            let mut chunks = items.chunks(batch_size);
            for chunk in chunks.by_ref() {
                let d = Box::pin(self.deliver(&q.key, chunk.to_vec(), DRAIN_RETRIES)).await;
                if !d.left.is_empty() {
                    left = d.left;
                    refused = d.refused;
                    break;
                }
            }
            if !left.is_empty() {
                left.extend(chunks.flatten().cloned());
                let refusals = self.failed(q, refused.is_some());
                match refused {
                    Some(reason) if refusals >= self.cfg.max_refused_attempts => {
                        self.dead_letter_refused(&q.key, &left, &reason, refusals);
                    }
                    _ => return,
                }
            } else {
                self.succeeded(q);
            }
            // Delivered or dead-lettered: the dead letters are on disk before the segment goes.
            self.sync_dead().await;
            let spool = q.spool.clone();
            let removed = blocking(move || {
                let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
                s.remove(seq).map(|()| (s.findings(), s.bytes()))
            })
            .await;
            match removed {
                Ok((findings, bytes)) => {
                    let mut st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                    st.findings = findings;
                    st.bytes = bytes;
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, "{e}");
                    return;
                }
            }
            self.publish();
        }
    }

    /// Drains every route that has spooled findings and is not parked, each
    /// in its own task; returns when all of them are done or parked.
    pub(super) async fn drain_ready(self: &Arc<Self>) {
        let now = Instant::now();
        let ready: Vec<Arc<Queue>> = self
            .queue_list()
            .into_iter()
            .filter(|q| {
                let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                st.findings > 0 && st.parked_until.is_none_or(|t| t <= now)
            })
            .collect();
        let mut set = JoinSet::new();
        for q in ready {
            let me = self.clone();
            set.spawn(async move { Box::pin(me.drain_queue(&q)).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// When the drainer should look again: the end of the earliest parking of
    /// a route with spooled findings.
    pub(super) fn next_drain(&self) -> Duration {
        let now = Instant::now();
        self.queue_list()
            .iter()
            .filter_map(|q| {
                let st = q.st.lock().unwrap_or_else(|p| p.into_inner());
                (st.findings > 0).then(|| st.parked_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now)))
            })
            .min()
            .unwrap_or(DRAIN_IDLE)
    }
}

/// Drains the spools in the background, each route oldest segment first,
/// parking routes that keep failing. Runs even when no input arrives.
pub(super) async fn drain_loop(shared: Arc<Shared>) {
    loop {
        let wait = shared.next_drain();
        if !wait.is_zero() {
            tokio::select! {
                _ = shared.drain.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        shared.drain_ready().await;
        // A route whose spool could not even be read is parked too: no busy loop.
        tokio::task::yield_now().await;
    }
}
