//! The live target: `trailwatch run` consuming a Kinesis stream or an SQS
//! queue (on a local emulator, or any endpoint), fed by this tool. It
//! measures what replay cannot: end-to-end latency, from the moment an event
//! is acknowledged by the stream or queue to the moment its finding is
//! written.
//!
//! Kinesis gets the dataset's `ndjson` lines (one event per record, the
//! account id as partition key, PutRecords of up to 500); SQS gets its
//! `eventbridge` lines (one EventBridge event per message, as an EventBridge
//! rule targeting a queue delivers them; SendMessageBatch of 10). trailwatch
//! runs with a generated config (`<work>/live.toml`: the org context, the
//! source, a JSON-lines sink, a file checkpoint store, metrics on a free
//! loopback port, commits every second) and is stopped with SIGTERM once its
//! `/metrics` show every sent event read and the findings file has been quiet
//! for a moment. Throughput here is bounded by the emulator and the sender,
//! not by trailwatch; use the replay target for speed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{usage, Limits, Outcome, RunError, Target};

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Kinesis,
    Sqs,
}

impl Via {
    /// The dataset format sent through this way.
    pub fn format(self) -> crate::output::Format {
        match self {
            Via::Kinesis => crate::output::Format::Ndjson,
            Via::Sqs => crate::output::Format::Eventbridge,
        }
    }
}

/// End-to-end latency of the findings of a live run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// What is measured.
    pub from_to: String,
    /// Findings whose triggering event was sent by this run (others: events not found, e.g. a cut id list).
    pub findings_measured: u64,
    pub p50_seconds: f64,
    pub p90_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

impl Latency {
    fn from_samples(mut v: Vec<f64>) -> Option<Latency> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Some(Latency {
            from_to: "event accepted by the stream/queue -> finding line written".into(),
            findings_measured: v.len() as u64,
            p50_seconds: q(0.5),
            p90_seconds: q(0.9),
            p99_seconds: q(0.99),
            max_seconds: v[v.len() - 1],
        })
    }
}

/// How to run trailwatch live.
#[derive(Debug, Clone)]
pub struct LiveTarget {
    pub binary: PathBuf,
    /// The org context (a trailwatch config with `[rules.placeholders]`), if any.
    pub config: Option<PathBuf>,
    pub via: Via,
    /// The AWS endpoint (e.g. `http://127.0.0.1:4567` for kinesalite).
    pub endpoint: String,
    pub region: String,
    /// Shards of the stream created for the run.
    pub shards: u32,
    /// Events per second sent at most (None: as fast as the endpoint takes them).
    pub send_rate: Option<f64>,
    /// Concurrent senders.
    pub senders: usize,
}

/// What the sender and the watcher share.
struct Shared {
    /// Hash of an event id -> when the stream/queue acknowledged it.
    sent_at: Mutex<HashMap<u64, Instant>>,
    sent: AtomicU64,
    done_sending: AtomicBool,
    send_error: Mutex<Option<String>>,
}

impl Target for LiveTarget {
    fn name(&self) -> &'static str {
        match self.via {
            Via::Kinesis => "run-kinesis",
            Via::Sqs => "run-sqs",
        }
    }

    fn run(
        &mut self,
        inputs: &[PathBuf],
        _now: &str,
        work: &Path,
        limits: &Limits,
        progress: bool,
    ) -> Result<Outcome, RunError> {
        let files = super::input_files(inputs);
        if files.is_empty() {
            return Err(RunError::NoInput(format!("no input files under {:?}", inputs)));
        }
        let input_bytes: u64 = files.iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(RunError::io(work))?;
        let run_id = format!("trailwatch-loadtest-{}", std::process::id());
        let aws = trailwatch_processor::aws::AwsConfig {
            region: Some(self.region.clone()),
            endpoint_url: Some(self.endpoint.clone()),
            ..Default::default()
        };
        let sdk = rt.block_on(trailwatch_processor::aws::sdk_config(&aws));
        let source_section = rt.block_on(self.create(&sdk, &run_id)).map_err(RunError::NoInput)?;

        // trailwatch's config: the org context, then what this run needs.
        let findings = work.join("findings.ndjson");
        let _ = std::fs::remove_file(&findings);
        let state = work.join("live-state");
        let _ = std::fs::remove_dir_all(&state);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(RunError::io(work))?;
        let mut toml = match &self.config {
            Some(c) => std::fs::read_to_string(c).map_err(RunError::io(c))?,
            None => String::new(),
        };
        let _ = write!(
            toml,
            "\n# Added by trailwatch-loadtest for a live run.\n\
             [aws]\nregion = {region:?}\nendpoint_url = {endpoint:?}\n\n\
             [service]\nstate_dir = {state:?}\ncommit_interval = \"1s\"\n\n\
             {source_section}\n\
             [sinks.findings]\ntype = \"asff-jsonl\"\npath = {findings:?}\n\n\
             [checkpoints]\nstore = \"file\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            region = self.region,
            endpoint = self.endpoint,
            state = state.display().to_string(),
            findings = findings.display().to_string(),
        );
        let config_path = work.join("live.toml");
        std::fs::write(&config_path, &toml).map_err(RunError::io(&config_path))?;

        let stderr_path = work.join("trailwatch.stderr");
        let stderr = File::create(&stderr_path).map_err(RunError::io(&stderr_path))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run").arg("--config").arg(&config_path);
        let command: Vec<String> = std::iter::once(self.binary.display().to_string())
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let before = usage::children();
        let mut child = cmd.spawn().map_err(|source| RunError::Spawn { binary: self.binary.clone(), source })?;
        let pid = child.id();
        let started = Instant::now();
        let metrics: SocketAddr = ([127, 0, 0, 1], port).into();

        // Ready before sending, so latency is that of a running consumer.
        let mut peak = 0u64;
        loop {
            if http_get(metrics, "/readyz").map(|(code, _)| code == 200).unwrap_or(false) {
                break;
            }
            if let Some(st) = child.try_wait().map_err(RunError::io(&self.binary))? {
                let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(RunError::NoInput(format!("trailwatch exited at start ({st}): {text}")));
            }
            if started.elapsed() > Duration::from_secs(60) {
                stop(&mut child);
                return Err(RunError::NoInput("trailwatch was not ready within 60s".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let shared = Arc::new(Shared {
            sent_at: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            done_sending: AtomicBool::new(false),
            send_error: Mutex::new(None),
        });
        let sending = {
            let shared = Arc::clone(&shared);
            let me = self.clone();
            let sdk = sdk.clone();
            let run_id = run_id.clone();
            rt.spawn(async move {
                if let Err(e) = me.send_all(&sdk, &run_id, &files, &shared).await {
                    *shared.send_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
                shared.done_sending.store(true, Ordering::SeqCst);
            })
        };
        let first_send = Instant::now();

        let bar = if progress { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::hidden() };
        let mut tail = Tail { path: findings.clone(), offset: 0, partial: String::new() };
        let mut samples = Vec::new();
        let mut unmatched = 0u64;
        let mut events_read = 0u64;
        let mut last_finding = Instant::now();
        let mut processed_at: Option<Instant> = None;
        let mut killed_after = None;
        let mut quiet_since: Option<Instant> = None;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(RunError::io(&self.binary))? {
                break Some(st);
            }
            let s = usage::sample(pid);
            peak = peak.max(s.peak_rss_bytes);
            for line in tail.read_new() {
                last_finding = Instant::now();
                let arrived = Instant::now();
                let v: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let f = super::score::parse_finding(&v);
                let sent = shared.sent_at.lock().unwrap_or_else(|p| p.into_inner());
                match f.event_ids.iter().filter_map(|id| sent.get(&hash(id))).min() {
                    Some(t) => samples.push(arrived.saturating_duration_since(*t).as_secs_f64()),
                    None => unmatched += 1,
                }
            }
            if let Ok((200, body)) = http_get(metrics, "/metrics") {
                events_read = metric_sum(&body, "trailwatch_source_events_total")
                    + metric_sum(&body, "trailwatch_decode_errors_total");
            }
            let sent = shared.sent.load(Ordering::SeqCst);
            let done = shared.done_sending.load(Ordering::SeqCst);
            bar.set_message(format!(
                "sent {sent}, read {events_read}, findings {}, RSS {} MiB",
                samples.len() as u64 + unmatched,
                s.rss_bytes >> 20
            ));
            bar.tick();
            if done && events_read >= sent && processed_at.is_none() {
                processed_at = Some(Instant::now());
            }
            // Everything read; wait for the last commit to write the last findings.
            if processed_at.is_some() && last_finding.elapsed() > Duration::from_secs(3) {
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if q.elapsed() > Duration::from_secs(2) {
                    break None;
                }
            }
            if started.elapsed() > limits.max_time {
                killed_after = Some(started.elapsed().as_secs_f64());
                let _ = child.kill();
                break Some(child.wait().map_err(RunError::io(&self.binary))?);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let status = match status {
            Some(st) => st,
            None => {
                // Graceful stop: SIGTERM, then the deadline.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some(st) = child.try_wait().map_err(RunError::io(&self.binary))? {
                        break st;
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        break child.wait().map_err(RunError::io(&self.binary))?;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        // Findings written during shutdown.
        for line in tail.read_new() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let f = super::score::parse_finding(&v);
                let sent = shared.sent_at.lock().unwrap_or_else(|p| p.into_inner());
                match f.event_ids.iter().filter_map(|id| sent.get(&hash(id))).min() {
                    Some(t) => samples.push(Instant::now().saturating_duration_since(*t).as_secs_f64()),
                    None => unmatched += 1,
                }
            }
        }
        bar.finish_and_clear();
        sending.abort();
        let _ = rt.block_on(self.delete(&sdk, &run_id));
        let after = usage::children();
        let (peak_rss_bytes, peak_source) = if after.max_rss_bytes > before.max_rss_bytes {
            (after.max_rss_bytes.max(peak), "getrusage")
        } else {
            (peak, "proc-sampled")
        };
        let mut stderr_text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if let Some(e) = shared.send_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stderr_text.push_str(&format!("\nloadtest sender failed: {e}\n"));
        }
        if unmatched > 0 {
            stderr_text.push_str(&format!("\n{unmatched} findings carried no event id this run sent\n"));
        }
        let end = processed_at.unwrap_or_else(Instant::now);
        Ok(Outcome {
            command,
            exit_code: status.code(),
            killed_after_seconds: killed_after,
            wall: end.saturating_duration_since(first_send),
            cpu_user_seconds: (after.user_seconds - before.user_seconds).max(0.0),
            cpu_system_seconds: (after.system_seconds - before.system_seconds).max(0.0),
            peak_rss_bytes,
            peak_rss_source: peak_source,
            events_read: Some(events_read),
            stderr: stderr_text,
            findings,
            input_bytes,
            latency: Latency::from_samples(samples),
        })
    }
}

impl LiveTarget {
    /// Creates the stream or queue; returns trailwatch's `[sources.*]` section for it.
    async fn create(&self, sdk: &aws_config::SdkConfig, name: &str) -> Result<String, String> {
        match self.via {
            Via::Kinesis => {
                let k = aws_sdk_kinesis::Client::new(sdk);
                k.create_stream()
                    .stream_name(name)
                    .shard_count(self.shards.max(1) as i32)
                    .send()
                    .await
                    .map_err(|e| format!("CreateStream {name}: {}", trailwatch_processor::aws::error_text(&e)))?;
                let started = Instant::now();
                loop {
                    let d =
                        k.describe_stream_summary().stream_name(name).send().await.map_err(|e| {
                            format!("DescribeStreamSummary: {}", trailwatch_processor::aws::error_text(&e))
                        })?;
                    let active = d
                        .stream_description_summary()
                        .map(|s| s.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active)
                        .unwrap_or(false);
                    if active {
                        break;
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        return Err(format!("stream {name} not ACTIVE after 60s"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(format!(
                    "[sources.live]\ntype = \"kinesis\"\nstream_name = {name:?}\nstart_position = \"trim-horizon\"\n"
                ))
            }
            Via::Sqs => {
                let q = aws_sdk_sqs::Client::new(sdk);
                let url = q
                    .create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|e| format!("CreateQueue {name}: {}", trailwatch_processor::aws::error_text(&e)))?
                    .queue_url
                    .ok_or("CreateQueue returned no QueueUrl")?;
                Ok(format!("[sources.live]\ntype = \"sqs\"\nqueue_url = {url:?}\n"))
            }
        }
    }

    /// Deletes what [`Self::create`] made (best effort).
    async fn delete(&self, sdk: &aws_config::SdkConfig, name: &str) -> Result<(), String> {
        match self.via {
            Via::Kinesis => {
                let k = aws_sdk_kinesis::Client::new(sdk);
                k.delete_stream().stream_name(name).send().await.map_err(|e| e.to_string())?;
            }
            Via::Sqs => {
                let q = aws_sdk_sqs::Client::new(sdk);
                let url = q.get_queue_url().queue_name(name).send().await.map_err(|e| e.to_string())?;
                if let Some(u) = url.queue_url {
                    q.delete_queue().queue_url(u).send().await.map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Sends every line of `files`, in order, in batches, `senders` batches in flight.
    async fn send_all(
        &self,
        sdk: &aws_config::SdkConfig,
        name: &str,
        files: &[PathBuf],
        shared: &Arc<Shared>,
    ) -> Result<(), String> {
        let (max_batch, max_bytes) = match self.via {
            Via::Kinesis => (500usize, 4_500_000usize),
            Via::Sqs => (10, 200_000),
        };
        let queue_url = match self.via {
            Via::Sqs => Some(
                aws_sdk_sqs::Client::new(sdk)
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|e| format!("GetQueueUrl: {}", trailwatch_processor::aws::error_text(&e)))?
                    .queue_url
                    .ok_or("GetQueueUrl returned no QueueUrl")?,
            ),
            Via::Kinesis => None,
        };
        let kinesis = aws_sdk_kinesis::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let permits = Arc::new(tokio::sync::Semaphore::new(self.senders.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        let mut batch: Vec<String> = Vec::new();
        let mut bytes = 0usize;
        let mut queued = 0u64;
        let flush = |batch: Vec<String>, tasks: &mut tokio::task::JoinSet<Result<(), String>>, permit| {
            let shared = Arc::clone(shared);
            let (kinesis, sqs, name, url, via) =
                (kinesis.clone(), sqs.clone(), name.to_string(), queue_url.clone(), self.via);
            tasks.spawn(async move {
                let _permit: tokio::sync::OwnedSemaphorePermit = permit;
                let n = batch.len() as u64;
                match via {
                    Via::Kinesis => put_records(&kinesis, &name, &batch).await?,
                    Via::Sqs => send_messages(&sqs, url.as_deref().unwrap_or_default(), &batch).await?,
                }
                let now = Instant::now();
                let mut sent = shared.sent_at.lock().unwrap_or_else(|p| p.into_inner());
                for line in &batch {
                    for id in event_ids(line) {
                        sent.insert(hash(id), now);
                    }
                }
                drop(sent);
                shared.sent.fetch_add(n, Ordering::SeqCst);
                Ok(())
            });
        };
        for f in files {
            let reader = open(f).map_err(|e| format!("{}: {e}", f.display()))?;
            for line in reader.lines() {
                let line = line.map_err(|e| format!("{}: {e}", f.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                if !batch.is_empty() && (batch.len() >= max_batch || bytes + line.len() > max_bytes) {
                    let permit = Arc::clone(&permits).acquire_owned().await.map_err(|e| e.to_string())?;
                    flush(std::mem::take(&mut batch), &mut tasks, permit);
                    bytes = 0;
                }
                bytes += line.len();
                batch.push(line);
                queued += 1;
                if let Some(rate) = self.send_rate.filter(|r| *r > 0.0) {
                    let due = started + Duration::from_secs_f64(queued as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                while let Some(r) = tasks.try_join_next() {
                    r.map_err(|e| e.to_string())??;
                }
            }
        }
        if !batch.is_empty() {
            let permit = Arc::clone(&permits).acquire_owned().await.map_err(|e| e.to_string())?;
            flush(batch, &mut tasks, permit);
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok(())
    }
}

/// PutRecords, resending the records a partial failure names (throttling), with backoff.
async fn put_records(k: &aws_sdk_kinesis::Client, stream: &str, lines: &[String]) -> Result<(), String> {
    let mut pending: Vec<&String> = lines.iter().collect();
    for attempt in 0..20u32 {
        let entries: Vec<_> = pending
            .iter()
            .map(|l| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .data(aws_sdk_kinesis::primitives::Blob::new(l.as_bytes()))
                    .partition_key(partition_key(l))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        match k.put_records().stream_name(stream).set_records(Some(entries)).send().await {
            Ok(out) if out.failed_record_count().unwrap_or(0) == 0 => return Ok(()),
            Ok(out) => {
                pending = pending
                    .into_iter()
                    .zip(out.records())
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(l, _)| l)
                    .collect();
            }
            Err(e) if trailwatch_processor::aws::is_retryable(&e) => {}
            Err(e) => return Err(format!("PutRecords: {}", trailwatch_processor::aws::error_text(&e))),
        }
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
    }
    Err(format!("PutRecords: {} records still failing after 20 attempts", pending.len()))
}

/// SendMessageBatch, resending failed entries that the sender may retry.
async fn send_messages(q: &aws_sdk_sqs::Client, url: &str, lines: &[String]) -> Result<(), String> {
    let mut pending: Vec<(usize, &String)> = lines.iter().enumerate().collect();
    for attempt in 0..20u32 {
        let entries: Vec<_> = pending
            .iter()
            .map(|(i, l)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(l.as_str())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        match q.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
            Ok(out) if out.failed().is_empty() => return Ok(()),
            Ok(out) => {
                if let Some(f) = out.failed().iter().find(|f| f.sender_fault()) {
                    return Err(format!("SendMessageBatch: {} {}", f.code(), f.message().unwrap_or_default()));
                }
                let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
                pending.retain(|(i, _)| failed.contains(&i.to_string().as_str()));
            }
            Err(e) if trailwatch_processor::aws::is_retryable(&e) => {}
            Err(e) => return Err(format!("SendMessageBatch: {}", trailwatch_processor::aws::error_text(&e))),
        }
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
    }
    Err(format!("SendMessageBatch: {} messages still failing after 20 attempts", pending.len()))
}

/// The record's account (as a subscription or forwarder would key it), else a constant.
fn partition_key(line: &str) -> &str {
    field_value(line, "\"recipientAccountId\":\"")
        .or_else(|| field_value(line, "\"account\":\""))
        .unwrap_or("trailwatch")
}

/// The ids a finding may name for this line: the CloudTrail eventID and the EventBridge id.
fn event_ids(line: &str) -> impl Iterator<Item = &str> {
    [field_value(line, "\"eventID\":\""), field_value(line, "\"id\":\"")].into_iter().flatten()
}

/// The string after the first `"key":"` (the generator writes compact JSON without escapes in ids).
fn field_value<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let at = line.find(prefix)? + prefix.len();
    let end = line[at..].find('"')?;
    Some(&line[at..at + end])
}

fn hash(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
}

fn open(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let f = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(flate2::read::GzDecoder::new(f))))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

/// The complete lines appended to a file since the last call.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut f) = File::open(&self.path) else { return Vec::new() };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = String::new();
        if let Ok(n) = f.read_to_string(&mut buf) {
            self.offset += n as u64;
        }
        self.partial.push_str(&buf);
        let mut lines = Vec::new();
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            if !line.trim().is_empty() {
                lines.push(line.trim_end().to_string());
            }
        }
        lines
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// The sum of a metric family's samples in Prometheus text.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keys_and_metric_sums() {
        let ct = r#"{"eventID":"e-1","recipientAccountId":"111122223333","eventName":"X"}"#;
        assert_eq!(event_ids(ct).collect::<Vec<_>>(), ["e-1"]);
        assert_eq!(partition_key(ct), "111122223333");
        let eb = r#"{"version":"0","id":"eb-1","account":"444455556666","detail":{"eventID":"e-2"}}"#;
        assert_eq!(event_ids(eb).collect::<Vec<_>>(), ["e-2", "eb-1"]);
        assert_eq!(partition_key(eb), "444455556666");
        let m = "# HELP x\ntrailwatch_source_events_total{source=\"a\"} 3\ntrailwatch_source_events_total{source=\"b\"} 4\ntrailwatch_source_events_totalx 9\n";
        assert_eq!(metric_sum(m, "trailwatch_source_events_total"), 7);
        let l = Latency::from_samples(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((l.p50_seconds, l.max_seconds, l.findings_measured), (2.0, 3.0, 3));
        assert!(Latency::from_samples(Vec::new()).is_none());
    }
}
