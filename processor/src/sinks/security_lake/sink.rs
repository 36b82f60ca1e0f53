use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::sts::AssumeRoleProvider;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{parquet, SecurityLakeSinkConfig};
use crate::backoff::Backoff;
use crate::evaluate::Finding;
use crate::findings::ocsf;
use crate::sinks::{Sink, SinkContext, SinkError};

/// Between retries of staged files after a failed upload: from 1 s (a
/// blip) growing to 30 s (an outage), so recovery is quick but S3 is not
/// hammered.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// How often the uploader looks for journals that reached `roll_age`: a
/// quiet partition is rolled on time even when no commit comes.
const AGE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A partition: region, account, event day (YYYYMMDD).
type PartKey = (String, String, String);

/// A partition's journal: the OCSF rows of its next file, appended and
/// synced at each commit (what makes a commit durable before the upload).
struct Journal {
    path: PathBuf,
    created_ms: i64,
    bytes: u64,
}

struct Shared {
    name: String,
    dir: PathBuf,
    bucket: String,
    prefix: String,
    client: aws_sdk_s3::Client,
    healthy: AtomicBool,
    /// /readyz, set by the uploader as uploads fail and recover (also
    /// between commits, when the sink stage does not ask).
    health: Arc<crate::health::Health>,
    roll_bytes: u64,
    roll_age_ms: i64,
    /// The open journals, by partition: appended to by the sink's commits,
    /// taken by a roll (the sink's, or the uploader's age check).
    journals: Mutex<HashMap<PartKey, Journal>>,
    seq: AtomicU64,
}

impl Shared {
    fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
        self.health.set_sink(&self.name, ok);
    }

    fn new_journal(&self, key: &PartKey) -> Journal {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let created_ms = now_ms();
        let file =
            format!("open_{}_{}_{}_{created_ms}-{seq}-{:08x}.ndjson", key.0, key.1, key.2, rand::random::<u32>());
        Journal { path: self.dir.join(file), created_ms, bytes: 0 }
    }

    /// Takes the journals due for a roll (`all`: every one) out of the map.
    fn take_due(journals: &mut HashMap<PartKey, Journal>, roll_age_ms: i64, all: bool) -> Vec<PathBuf> {
        let now = now_ms();
        let due: Vec<PartKey> =
            journals.iter().filter(|(_, j)| all || now - j.created_ms >= roll_age_ms).map(|(k, _)| k.clone()).collect();
        due.into_iter().filter_map(|k| journals.remove(&k)).map(|j| j.path).collect()
    }

    /// Appends each partition's rows to its journal and syncs it. A journal
    /// that reaches `roll_bytes` is closed at a row boundary and a new one
    /// started, so a big commit still makes files of about `roll_bytes`.
    /// Returns the rows staged and the journals closed (to be rolled).
    fn append(&self, pending: HashMap<PartKey, (Vec<u8>, usize)>) -> Result<(usize, Vec<PathBuf>), SinkError> {
        // Held while writing: a roll never takes a journal half-appended.
        let mut journals = self.journals.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = Vec::new();
        let mut created = false;
        let mut total = 0;
        for (key, (buf, rows)) in pending {
            total += rows;
            let mut rest: &[u8] = &buf;
            while !rest.is_empty() {
                let j = journals.entry(key.clone()).or_insert_with(|| self.new_journal(&key));
                let take = rows_fitting(rest, self.roll_bytes.saturating_sub(j.bytes), j.bytes == 0);
                if take > 0 {
                    created |= j.bytes == 0;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&j.path)
                        .map_err(io_err(format!("cannot open {}", j.path.display())))?;
                    f.write_all(&rest[..take]).map_err(io_err(format!("cannot write {}", j.path.display())))?;
                    f.sync_data().map_err(io_err(format!("cannot sync {}", j.path.display())))?;
                    j.bytes += take as u64;
                    rest = &rest[take..];
                }
                if j.bytes >= self.roll_bytes || take == 0 {
                    closed.extend(journals.remove(&key).map(|j| j.path));
                }
            }
        }
        if created {
            sync_dir(&self.dir).map_err(io_err(format!("cannot sync {}", self.dir.display())))?;
        }
        Ok((total, closed))
    }
}

/// Bytes of whole rows (newline-terminated) at the start of `buf` that fit
/// in `room`; at least one row when `first` (an empty journal takes any row).
fn rows_fitting(buf: &[u8], room: u64, first: bool) -> usize {
    let mut end = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            if (i + 1) as u64 > room {
                if end == 0 && first {
                    return i + 1;
                }
                break;
            }
            end = i + 1;
        }
    }
    if end == 0 && first {
        buf.len()
    } else {
        end
    }
}

/// OCSF Detection Findings as Parquet objects in a Security Lake custom
/// source's partitions (see the module docs for the commit protocol).
pub struct SecurityLakeSink {
    shared: Arc<Shared>,
    default_region: String,
    pending: HashMap<PartKey, (Vec<u8>, usize)>,
    roll_tx: Option<mpsc::UnboundedSender<PathBuf>>,
    uploader: Option<JoinHandle<()>>,
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> SinkError {
    move |error| SinkError::Io { context, error }
}

/// Keeps partition values to characters that are safe in S3 keys and in
/// our staging file names (`_` separates the parts there).
fn clean(s: &str) -> String {
    let c: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    if c.is_empty() {
        "unknown".into()
    } else {
        c
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// YYYYMMDD (UTC) of an epoch-ms time.
fn event_day(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl SecurityLakeSink {
    pub async fn build(cfg: &SecurityLakeSinkConfig, ctx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let aws = ctx.aws.with_overrides(cfg.region.as_ref(), cfg.endpoint_url.as_ref());
        let base = crate::aws::sdk_config(&aws).await;
        let mut b = aws_sdk_s3::config::Builder::from(&base).force_path_style(aws.endpoint_url.is_some());
        if let Some(arn) = &cfg.role_arn {
            // The custom source's role; the client's identity cache refreshes it.
            let mut p = AssumeRoleProvider::builder(arn).session_name("trailwatch-security-lake").configure(&base);
            if let Some(x) = &cfg.external_id {
                p = p.external_id(x);
            }
            b = b.credentials_provider(p.build().await);
        }
        let default_region = cfg
            .default_region
            .clone()
            .or_else(|| base.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".to_string());
        let dir = cfg.staging_dir.clone().unwrap_or_else(|| ctx.state_dir.join("security-lake").join(ctx.name));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let shared = Arc::new(Shared {
            name: ctx.name.to_string(),
            dir: dir.clone(),
            bucket: cfg.bucket.clone(),
            prefix: cfg.key_prefix(),
            client: aws_sdk_s3::Client::from_conf(b.build()),
            healthy: AtomicBool::new(true),
            health: Arc::clone(&ctx.health),
            roll_bytes: cfg.roll_bytes,
            roll_age_ms: cfg.roll_age.as_millis() as i64,
            journals: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
        });
        // What an earlier run left: journals are rolled now (their findings
        // were committed), half-written files are dropped (their journal is
        // still there), finished files are uploaded first.
        let mut leftover = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(format!("cannot read {}", dir.display())))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("open_") && name.ends_with(".ndjson") {
                leftover.push(e.path());
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if !leftover.is_empty() {
            tracing::info!(
                sink = ctx.name,
                files = leftover.len(),
                "findings staged by an earlier run will be uploaded"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for p in leftover {
            let _ = tx.send(p);
        }
        let uploader = tokio::spawn(upload_loop(shared.clone(), rx));
        Ok(SecurityLakeSink {
            shared,
            default_region,
            pending: HashMap::new(),
            roll_tx: Some(tx),
            uploader: Some(uploader),
        })
    }

    fn partition(&self, f: &Finding, row: &Value) -> PartKey {
        let a = &f.asff;
        // The event's region (ASFF Region is where the finding is imported).
        let region = a
            .product_fields
            .get("trailwatch/EventRegion")
            .or(a.region.as_ref())
            .cloned()
            .unwrap_or_else(|| self.default_region.clone());
        let account = row.pointer("/cloud/account/uid").and_then(Value::as_str).unwrap_or(&a.aws_account_id);
        // The finding's time, not its events' (see the module docs for why).
        (clean(&region), clean(account), event_day(parquet::row_time(row)))
    }

    /// Appends the pending rows to their journals and syncs them; hands
    /// the journals that filled up to the uploader.
    async fn stage(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let shared = self.shared.clone();
        let (staged, closed) = tokio::task::spawn_blocking(move || shared.append(pending))
            .await
            .map_err(|e| SinkError::Unavailable(format!("staging task failed: {e}")))??;
        self.send_to_uploader(closed);
        let m = crate::metrics::get();
        m.sink_findings.with_label_values(&[&self.shared.name, "spooled"]).inc_by(staged as u64);
        Ok(())
    }

    /// Hands the journals that are old enough to the uploader (`all`:
    /// every journal, at the end of the run).
    fn roll(&mut self, all: bool) {
        let due = {
            let mut journals = self.shared.journals.lock().unwrap_or_else(|e| e.into_inner());
            Shared::take_due(&mut journals, self.shared.roll_age_ms, all)
        };
        self.send_to_uploader(due);
    }

    fn send_to_uploader(&self, journals: Vec<PathBuf>) {
        if let Some(tx) = &self.roll_tx {
            for p in journals {
                let _ = tx.send(p);
            }
        }
    }
}

#[async_trait]
impl Sink for SecurityLakeSink {
    async fn send(&mut self, findings: &[Arc<Finding>]) -> Result<(), SinkError> {
        for f in findings {
            let row = ocsf::to_ocsf(&f.asff, f.is_update);
            let key = self.partition(f, &row);
            let (buf, rows) = self.pending.entry(key).or_default();
            serde_json::to_writer(&mut *buf, &row).expect("a JSON value serialises");
            buf.push(b'\n');
            *rows += 1;
        }
        Ok(())
    }

    /// Returns once every finding sent is in a synced journal: staged
    /// durably in the state directory, uploaded later by the uploader.
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.stage().await?;
        self.roll(false);
        Ok(())
    }

    /// Rolls every journal and waits for the uploads; what cannot be
    /// uploaded now stays staged for the next run.
    async fn close(&mut self) -> Result<(), SinkError> {
        self.stage().await?;
        self.roll(true);
        self.roll_tx = None;
        if let Some(h) = self.uploader.take() {
            let _ = h.await;
        }
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }
}

/// Rolls the journals it is handed, and those that reached `roll_age`,
/// into Parquet files and uploads every finished file in the staging
/// directory; retries failed uploads with backoff.
async fn upload_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    let mut failures = 0u32;
    let mut retry_at = (!upload_ready(&shared).await).then(|| Instant::now() + RETRY.equal_jitter(0));
    if retry_at.is_some() {
        failures = 1;
    }
    loop {
        let next = tokio::time::timeout(AGE_CHECK_EVERY, rx.recv()).await;
        let closed = matches!(next, Ok(None));
        let mut batch = Vec::new();
        if let Ok(Some(p)) = next {
            batch.push(p);
        }
        while let Ok(p) = rx.try_recv() {
            batch.push(p);
        }
        // Quiet partitions: no commit comes to roll them. try_lock: a
        // commit appending now holds the lock; the next tick sees them.
        {
            let journals = match shared.journals.try_lock() {
                Ok(j) => Some(j),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut journals) = journals {
                batch.extend(Shared::take_due(&mut journals, shared.roll_age_ms, false));
            }
        }
        let new_files = !batch.is_empty();
        for journal in batch {
            let s = shared.clone();
            let j = journal.clone();
            match tokio::task::spawn_blocking(move || encode(&s.dir, &j)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(sink = %shared.name, journal = %journal.display(), "cannot encode Parquet: {e}")
                }
                Err(e) => tracing::error!(sink = %shared.name, "encoding task failed: {e}"),
            }
        }
        let retry_due = retry_at.is_some_and(|t| Instant::now() >= t);
        if new_files || retry_due || closed {
            if upload_ready(&shared).await {
                failures = 0;
                retry_at = None;
            } else {
                retry_at = Some(Instant::now() + RETRY.equal_jitter(failures));
                failures = failures.saturating_add(1);
            }
        }
        if closed {
            return;
        }
    }
}

/// A journal → `ready_<region>_<account>_<day>_<rows>_<object>.parquet`
/// (synced, then renamed), then the journal is removed.
fn encode(dir: &Path, journal: &Path) -> Result<(), String> {
    let name = journal.file_name().and_then(|n| n.to_str()).ok_or("bad journal name")?;
    let stem = name.strip_prefix("open_").and_then(|n| n.strip_suffix(".ndjson")).ok_or("bad journal name")?;
    let parts: Vec<&str> = stem.splitn(4, '_').collect();
    let [region, account, day, object] = parts[..] else { return Err(format!("bad journal name {name}")) };
    let file = std::fs::File::open(journal).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => rows.push(v),
            // Only a write torn by a crash, never committed: its findings
            // are evaluated again after the restart.
            Err(e) => tracing::warn!(journal = %journal.display(), line = n + 1, "skipping a torn staged row: {e}"),
        }
    }
    if !rows.is_empty() {
        let count = rows.len();
        let ready = dir.join(format!("ready_{region}_{account}_{day}_{count}_trailwatch-{object}.parquet"));
        let tmp = ready.with_extension("parquet.tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
        parquet::write(&mut out, rows).map_err(|e| e.to_string())?;
        let f = out.into_inner().map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &ready).map_err(|e| e.to_string())?;
    }
    std::fs::remove_file(journal).map_err(|e| e.to_string())?;
    sync_dir(dir).map_err(|e| e.to_string())
}

/// Uploads the finished files, oldest first; stops at the first failure.
/// Returns false when an upload failed (the file stays staged).
async fn upload_ready(shared: &Shared) -> bool {
    let mut ready: Vec<(String, PathBuf)> = match std::fs::read_dir(&shared.dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| n.starts_with("ready_") && n.ends_with(".parquet"))
            .collect(),
        Err(e) => {
            tracing::error!(sink = %shared.name, "cannot read {}: {e}", shared.dir.display());
            return false;
        }
    };
    ready.sort();
    let m = crate::metrics::get();
    for (name, path) in ready {
        let stem = &name["ready_".len()..name.len() - ".parquet".len()];
        let parts: Vec<&str> = stem.splitn(5, '_').collect();
        let [region, account, day, rows, object] = parts[..] else {
            tracing::error!(sink = %shared.name, file = %name, "unexpected staged file name, left alone");
            continue;
        };
        let key = format!("{}/region={region}/accountId={account}/eventDay={day}/{object}.parquet", shared.prefix);
        let body = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(sink = %shared.name, file = %path.display(), "cannot read staged file: {e}");
                continue;
            }
        };
        let bytes = body.len() as u64;
        let started = std::time::Instant::now();
        let put = shared
            .client
            .put_object()
            .bucket(&shared.bucket)
            .key(&key)
            .content_type("application/vnd.apache.parquet")
            .body(body.into())
            .send()
            .await;
        m.sink_request_duration.with_label_values(&[&shared.name]).observe(started.elapsed().as_secs_f64());
        match put {
            Ok(_) => {
                let rows: u64 = rows.parse().unwrap_or(0);
                m.security_lake_files.with_label_values(&[&shared.name]).inc();
                m.security_lake_rows.with_label_values(&[&shared.name]).inc_by(rows);
                m.security_lake_bytes.with_label_values(&[&shared.name]).inc_by(bytes);
                m.sink_findings.with_label_values(&[&shared.name, "sent"]).inc_by(rows);
                shared.set_healthy(true);
                tracing::info!(sink = %shared.name, key, rows, bytes, "Parquet file uploaded to Security Lake");
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(sink = %shared.name, file = %path.display(), "cannot remove uploaded file: {e}");
                }
            }
            Err(e) => {
                m.security_lake_upload_errors.with_label_values(&[&shared.name]).inc();
                shared.set_healthy(false);
                tracing::warn!(sink = %shared.name, key, "upload failed, the file stays staged and is retried: {}",
                    crate::aws::error_text(&e));
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_key_safe() {
        assert_eq!(clean("eu-west-1"), "eu-west-1");
        assert_eq!(clean("12_3/4"), "12-3-4");
        assert_eq!(clean(""), "unknown");
        assert_eq!(event_day(1_767_225_600_000), "20260101");
    }

    #[test]
    fn a_journal_takes_whole_rows_up_to_its_room() {
        let buf = b"aaaa\nbbbb\ncc\n";
        assert_eq!(rows_fitting(buf, 100, false), buf.len());
        assert_eq!(rows_fitting(buf, 10, false), 10);
        assert_eq!(rows_fitting(buf, 9, false), 5);
        assert_eq!(rows_fitting(buf, 4, false), 0, "no room for a whole row: roll first");
        assert_eq!(rows_fitting(buf, 4, true), 5, "an empty journal takes an oversized row");
        assert_eq!(rows_fitting(buf, 0, true), 5);
    }
}
