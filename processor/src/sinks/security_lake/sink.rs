use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::sts::AssumeRoleProvider;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{parquet, SecurityLakeSinkConfig};
use crate::findings::ocsf;
use crate::findings::Finding;
use crate::sinks::{Sink, SinkContext, SinkError};

/// How often the uploader retries staged files after a failed upload.
const RETRY_EVERY: Duration = Duration::from_secs(30);

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
}

/// OCSF Detection Findings as Parquet objects in a Security Lake custom
/// source's partitions (see the module docs for the commit protocol).
pub struct SecurityLakeSink {
    shared: Arc<Shared>,
    cfg: SecurityLakeSinkConfig,
    default_region: String,
    journals: HashMap<PartKey, Journal>,
    pending: HashMap<PartKey, (Vec<u8>, usize)>,
    seq: u64,
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
            cfg: cfg.clone(),
            default_region,
            journals: HashMap::new(),
            pending: HashMap::new(),
            seq: 0,
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
        (clean(&region), clean(account), event_day(parquet::row_time(row)))
    }

    /// Appends the pending rows to their journals and syncs them.
    async fn stage(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut work = Vec::with_capacity(pending.len());
        for (key, (buf, rows)) in pending {
            let j = self.journals.entry(key.clone()).or_insert_with(|| {
                self.seq += 1;
                let created_ms = now_ms();
                let file = format!(
                    "open_{}_{}_{}_{created_ms}-{}-{:08x}.ndjson",
                    key.0,
                    key.1,
                    key.2,
                    self.seq,
                    rand::random::<u32>()
                );
                Journal { path: self.shared.dir.join(file), created_ms, bytes: 0 }
            });
            j.bytes += buf.len() as u64;
            work.push((j.path.clone(), buf, rows));
        }
        let dir = self.shared.dir.clone();
        let staged = tokio::task::spawn_blocking(move || -> Result<usize, SinkError> {
            let mut rows_total = 0;
            let mut created = false;
            for (path, buf, rows) in work {
                created |= !path.exists();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err(format!("cannot open {}", path.display())))?;
                f.write_all(&buf).map_err(io_err(format!("cannot write {}", path.display())))?;
                f.sync_data().map_err(io_err(format!("cannot sync {}", path.display())))?;
                rows_total += rows;
            }
            if created {
                sync_dir(&dir).map_err(io_err(format!("cannot sync {}", dir.display())))?;
            }
            Ok(rows_total)
        })
        .await
        .map_err(|e| SinkError::Unavailable(format!("staging task failed: {e}")))??;
        let m = crate::metrics::get();
        m.sink_findings.with_label_values(&[&self.shared.name, "spooled"]).inc_by(staged as u64);
        Ok(())
    }

    /// Hands the journals that are big or old enough to the uploader
    /// (`all`: every journal, at the end of the run).
    fn roll(&mut self, all: bool) {
        let now = now_ms();
        let age_ms = self.cfg.roll_age.as_millis() as i64;
        let due: Vec<PartKey> = self
            .journals
            .iter()
            .filter(|(_, j)| all || j.bytes >= self.cfg.roll_bytes || now - j.created_ms >= age_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let (Some(j), Some(tx)) = (self.journals.remove(&k), &self.roll_tx) {
                let _ = tx.send(j.path);
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

/// Rolls the journals it is handed into Parquet files and uploads every
/// finished file in the staging directory; retries failed uploads.
async fn upload_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    upload_ready(&shared).await;
    loop {
        let next = tokio::time::timeout(RETRY_EVERY, rx.recv()).await;
        let closed = matches!(next, Ok(None));
        let mut batch = Vec::new();
        if let Ok(Some(p)) = next {
            batch.push(p);
        }
        while let Ok(p) = rx.try_recv() {
            batch.push(p);
        }
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
        upload_ready(&shared).await;
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
async fn upload_ready(shared: &Shared) {
    let mut ready: Vec<(String, PathBuf)> = match std::fs::read_dir(&shared.dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| n.starts_with("ready_") && n.ends_with(".parquet"))
            .collect(),
        Err(e) => {
            tracing::error!(sink = %shared.name, "cannot read {}: {e}", shared.dir.display());
            return;
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
                shared.healthy.store(true, Ordering::Relaxed);
                tracing::info!(sink = %shared.name, key, rows, bytes, "Parquet file uploaded to Security Lake");
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(sink = %shared.name, file = %path.display(), "cannot remove uploaded file: {e}");
                }
            }
            Err(e) => {
                m.security_lake_upload_errors.with_label_values(&[&shared.name]).inc();
                shared.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(sink = %shared.name, key, "upload failed, the file stays staged and is retried: {}",
                    crate::aws::error_text(&e));
                return;
            }
        }
    }
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
}
