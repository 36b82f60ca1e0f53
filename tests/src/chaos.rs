//! The hard-fault scenario shared by `tests/crash.rs` (kill -9) and
//! `tests/faults.rs` (injected faults): synthetic CloudTrail events fed to
//! Kinesis (kinesalite) or to SQS as S3-notified log files (moto), the real
//! `trailwatch run` binary writing to Security Hub (moto) and a JSONL file,
//! and the checks: every finding `trailwatch replay` makes of the same events
//! is in Security Hub, repeats only as upserts of the same Id, and committed
//! checkpoints never move backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use trailwatch_processor::state::StateStore;

use crate::Server;

/// Correlation findings after kills equal the replay's: per-partition
/// watermarks (issue 16) keep a shard that resumes behind the others from
/// making its events late, and redelivered events count once.
pub const ASSERT_CORRELATIONS: bool = true;

pub const DENIED_RULE: &str = "6f1d1b0e-0000-4000-8000-00000000c0d1";
pub const TAMPER_RULE: &str = "6f1d1b0e-0000-4000-8000-00000000c0d2";
pub const BURST_RULE: &str = "6f1d1b0e-0000-4000-8000-00000000c0c1";

/// Two detections (one event in 10, one in 97) and a correlation over the
/// first (`generate: true`: the denials are findings of their own too).
pub const RULES: &str = r#"
title: Chaos test denial
id: 6f1d1b0e-0000-4000-8000-00000000c0d1
name: chaos_denied
level: medium
tags: [attack.discovery, nist_csf.de.cm-1]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
---
title: Chaos test logging stopped
id: 6f1d1b0e-0000-4000-8000-00000000c0d2
level: high
tags: [attack.defense_evasion, nist_csf.de.cm-1]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {eventName: StopLogging}
    condition: sel
---
title: Chaos test denial burst
id: 6f1d1b0e-0000-4000-8000-00000000c0c1
level: high
tags: [nist_csf.de.cm-1]
correlation:
    type: event_count
    rules: [chaos_denied]
    group-by: [userIdentity.arn]
    timespan: 10m
    condition: {gte: 40}
    generate: true
"#;

const NAMES: [&str; 8] =
    ["ListUsers", "GetObject", "DescribeInstances", "AssumeRole", "PutObject", "ListBuckets", "GetRole", "Decrypt"];

pub const USERS: u64 = 200;

/// Event `i`: 20 events per second of event time from 2026-11-01T10:00:00Z,
/// user `i % 200`, a denial when `i % 10 == 3`, StopLogging when `i % 97 == 0`.
pub fn event(i: u64) -> String {
    let secs = 10 * 3600 + i / 20;
    let (day, rest) = (1 + secs / 86_400, secs % 86_400);
    let time = format!("2026-11-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60);
    let user = i % USERS;
    let name = if i % 97 == 0 { "StopLogging" } else { NAMES[(i as usize * 7 / 3) % NAMES.len()] };
    let error = if i % 10 == 3 { r#","errorCode":"AccessDenied","errorMessage":"not allowed""# } else { "" };
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"192.0.2.{ip}","eventID":"c4a05000-0000-4000-8000-{i:012}","recipientAccountId":"111122223333","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u{user}","accountId":"111122223333"}}{error}}}"#,
        ip = user % 250 + 1,
    )
}

/// Shortest first, then lexically: Kinesis sequence numbers are decimal
/// strings of varying length. `SHARD_END` is past every number.
pub fn position_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let end = |s: &str| s == "SHARD_END";
    match (end(a), end(b)) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
    }
}

/// Where the service keeps its checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    File,
    Dynamodb,
}

pub const TABLE: &str = "trailwatch-chaos-checkpoints";
pub const BUCKET: &str = "trailwatch-chaos-state";

/// The input of a scenario.
#[derive(Debug, Clone)]
pub enum Input {
    /// A Kinesis stream on kinesalite: `endpoint` is what trailwatch uses
    /// (kinesalite or a proxy in front of it).
    Kinesis { stream: String, endpoint: String },
    /// An SQS queue of S3 notifications (moto, through `[aws]`).
    Sqs { queue_url: String },
}

/// One scenario's files and settings.
pub struct Scenario {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub events: PathBuf,
    pub jsonl: PathBuf,
    pub store: Store,
    /// The endpoint trailwatch uses for moto's services (moto or a proxy).
    pub aws_endpoint: String,
    /// The real moto, for the test's own reads.
    pub moto_endpoint: String,
    pub n_events: u64,
}

impl Scenario {
    /// Writes the events file, the rules and the config.
    pub fn new(n_events: u64, input: &Input, store: Store, aws_endpoint: &str, moto: &Server) -> Scenario {
        let dir = tempfile::tempdir().expect("a temp dir");
        let events = dir.path().join("events.ndjson");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
        for i in 0..n_events {
            writeln!(f, "{}", event(i)).unwrap();
        }
        f.flush().unwrap();
        let rules = dir.path().join("rules.yml");
        std::fs::write(&rules, RULES).unwrap();
        let jsonl = dir.path().join("findings.ndjson");
        let source = match input {
            Input::Kinesis { stream, endpoint } => format!(
                r#"[sources.stream]
type = "kinesis"
stream_name = "{stream}"
endpoint_url = "{endpoint}"
max_records = 100
poll_interval = "200ms"
max_idle_poll_interval = "400ms"
shard_discovery_interval = "2s"
"#
            ),
            Input::Sqs { queue_url } => format!(
                r#"[sources.queue]
type = "sqs"
queue_url = "{queue_url}"
receivers = 2
wait_time = "1s"
"#
            ),
        };
        let checkpoints = match store {
            Store::File => "[checkpoints]\nstore = \"file\"\n".to_string(),
            Store::Dynamodb => {
                format!("[checkpoints]\nstore = \"dynamodb\"\ntable = \"{TABLE}\"\nsnapshot_bucket = \"{BUCKET}\"\n")
            }
        };
        let text = format!(
            r#"[aws]
region = "us-east-1"
endpoint_url = "{aws_endpoint}"

[rules]
builtin = false
paths = ["{rules}"]

{findings}
{service}shutdown_timeout = "20s"

{source}
{checkpoints}
[sinks.securityhub]
type = "securityhub"
batch_timeout = "200ms"

[sinks.archive]
type = "asff-jsonl"
path = "{jsonl}"

[metrics]
enabled = false
"#,
            rules = rules.display(),
            findings = crate::fixtures::central_findings_toml(),
            service = crate::fixtures::service_toml(&dir.path().join("state"), "500ms"),
            jsonl = jsonl.display(),
        );
        let config = dir.path().join("trailwatch.toml");
        std::fs::write(&config, text).unwrap();
        Scenario {
            dir,
            config,
            events,
            jsonl,
            store,
            aws_endpoint: aws_endpoint.to_string(),
            moto_endpoint: moto.endpoint.clone(),
            n_events,
        }
    }

    /// `trailwatch replay` of the same events with the same config: the
    /// findings an uninterrupted run makes, by Id.
    pub fn expected(&self) -> Findings {
        let out = self.dir.path().join("expected.ndjson");
        replay(&self.config, &self.events, &out);
        let f = jsonl_findings(&out);
        assert_eq!(f.torn, 0, "replay writes whole lines");
        f
    }

    /// Starts `trailwatch run` (killed on drop); its output goes to `run-<n>.log`.
    pub fn start(&self, n: usize) -> Trailwatch {
        start_run(&self.config, self.dir.path().join(format!("run-{n}.log")))
    }

    /// The committed checkpoint (commit number and positions).
    pub async fn committed(&self) -> (u64, BTreeMap<String, String>) {
        let c = match self.store {
            Store::File => {
                trailwatch_processor::state::file::FileStore::open(&self.dir.path().join("state")).unwrap().load().await
            }
            Store::Dynamodb => {
                let cfg = trailwatch_processor::config::CheckpointsConfig {
                    store: trailwatch_processor::config::StoreKind::Dynamodb,
                    table: Some(TABLE.into()),
                    snapshot_bucket: Some(BUCKET.into()),
                    ..Default::default()
                };
                let aws = trailwatch_processor::aws::AwsConfig {
                    region: Some("us-east-1".into()),
                    endpoint_url: Some(self.moto_endpoint.clone()),
                    max_attempts: Some(3),
                    ..Default::default()
                };
                let store = trailwatch_processor::state::dynamodb::DynamoStore::build(&cfg, &aws).await.unwrap();
                // This observer reads the head item, then the snapshot it
                // names: a commit in between (new head, then the previous
                // instance's objects deleted) makes the object vanish under
                // it. Read again: the service itself loads only at start,
                // when nothing else commits.
                let mut tries = 0;
                loop {
                    match store.load().await {
                        Err(e) if tries < 10 && format!("{e:?}").contains("NoSuchKey") => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        r => break r,
                    }
                }
            }
        };
        let c = c.expect("the committed state loads").unwrap_or_default();
        (c.commit, c.positions)
    }

    /// The last lines of run `n`'s log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("run-{n}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Warnings and errors the runs logged, counted by their first words.
    pub fn log_problems(&self, runs: usize) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for n in 0..runs {
            let text = std::fs::read_to_string(self.dir.path().join(format!("run-{n}.log"))).unwrap_or_default();
            for l in text.lines().map(strip_ansi) {
                let Some((_, msg)) = l.split_once(" WARN ").or_else(|| l.split_once(" ERROR ")) else { continue };
                let key: String = msg.chars().take(70).collect();
                *out.entry(key).or_default() += 1;
            }
        }
        out
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // A failed test keeps its logs, config and state for a look.
        if std::thread::panicking() {
            // Named after the scenario's own temp dir: tests of one process run side by side.
            let name = self.dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let keep = std::env::temp_dir().join(format!("trailwatch-chaos-{}-{name}", std::process::id()));
            let _ = Command::new("cp").arg("-r").arg(self.dir.path()).arg(&keep).status();
            eprintln!("kept the scenario's files in {}", keep.display());
        }
    }
}

/// Runs `f` on a runtime whose threads have 16 MiB stacks (the SDK's
/// deserialisers in debug builds overflow 2 MiB under a deep test future),
/// re-raising its panic.
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .expect("a runtime");
    let out = rt.block_on(async move { tokio::spawn(f).await });
    rt.shutdown_timeout(Duration::from_secs(5));
    match out {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("the test task failed: {e}"),
        },
    }
}

/// The text of a log line without its colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `trailwatch run --config config` (killed on drop), its output to `log`.
pub fn start_run(config: &Path, log: PathBuf) -> Trailwatch {
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    crate::aws_env();
    let child = Command::new(crate::trailwatch_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("TRAILWATCH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("trailwatch run starts");
    Trailwatch { child: Some(child), log }
}

/// `trailwatch replay` of the JSON lines file `events` with `config` (the
/// clock set to the day after the test events) into `out`; asserts it succeeds.
pub fn replay(config: &Path, events: &Path, out: &Path) {
    let o = Command::new(crate::trailwatch_bin())
        .arg("replay")
        .arg("--config")
        .arg(config)
        .args(["--no-progress", "--now", "2026-11-02T00:00:00Z", "--output"])
        .arg(out)
        .arg(events)
        .env("TRAILWATCH_LOG", "warn")
        .output()
        .expect("trailwatch replay runs");
    assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// A `trailwatch run` child, SIGKILLed on drop.
pub struct Trailwatch {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Trailwatch {
    /// Takes over a started process (killed on drop).
    pub fn new(child: Child, log: PathBuf) -> Trailwatch {
        Trailwatch { child: Some(child), log }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// Still running? (Panics with its log if it exited by itself.)
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!("trailwatch exited by itself ({status}):\n{}", tail.join("\n"));
            }
        }
    }

    /// SIGTERM, then waits up to `grace` for a clean exit; its exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Trailwatch {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Finding Ids of a JSON-lines file, with torn (unparsable) lines counted.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Every line's Id, repeats included.
    pub ids: Vec<String>,
    pub torn: usize,
}

impl Findings {
    pub fn distinct(&self) -> BTreeSet<String> {
        self.ids.iter().cloned().collect()
    }

    /// Distinct Ids of detection (true) or correlation (false) rules.
    pub fn of_kind(&self, detection: bool) -> BTreeSet<String> {
        self.distinct().into_iter().filter(|id| is_detection(id) == detection).collect()
    }
}

/// Finding Ids are `trailwatch/<rule id>/<hash>`.
pub fn is_detection(id: &str) -> bool {
    !id.starts_with(&format!("trailwatch/{BURST_RULE}/"))
}

pub fn jsonl_findings(path: &Path) -> Findings {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut f = Findings::default();
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["Id"].as_str().map(str::to_string)) {
            Some(id) => f.ids.push(id),
            None => f.torn += 1,
        }
    }
    f
}

/// Every finding moto's Security Hub holds (moto ignores filters: all pages).
pub async fn securityhub_findings(moto: &Server) -> Findings {
    let client = aws_sdk_securityhub::Client::new(&moto.sdk_config().await);
    let mut f = Findings::default();
    let mut token: Option<String> = None;
    loop {
        let r = client.get_findings().max_results(100).set_next_token(token.clone()).send().await.unwrap();
        f.ids.extend(r.findings().iter().filter_map(|x| x.id().map(str::to_string)));
        token = r.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    f
}

/// The DynamoDB table and S3 bucket of the dynamodb store.
pub async fn create_store_resources(moto: &Server) {
    let sdk = moto.sdk_config().await;
    crate::fixtures::create_table(&aws_sdk_dynamodb::Client::new(&sdk), TABLE, "pk").await;
    s3_client(&sdk).create_bucket().bucket(BUCKET).send().await.unwrap();
}

pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(sdk).force_path_style(true).build())
}

/// A CloudWatch Logs subscription payload (gzip JSON, the shape CloudTrail
/// reaches Kinesis in) carrying events `ids`.
pub fn cwl_record(ids: &[u64]) -> Vec<u8> {
    let events: Vec<(u64, String)> = ids.iter().map(|i| (*i, event(*i))).collect();
    crate::fixtures::cwl_payload(&events)
}

/// Creates a stream of `shards` shards and puts events `0..n` as CloudWatch
/// Logs subscription records of up to `per_record` events of one user, keyed
/// by user (a user's events stay in order in one shard). Returns the last
/// sequence number of each shard.
pub async fn feed_kinesis(
    kinesalite: &Server,
    stream: &str,
    shards: i32,
    n: u64,
    per_record: usize,
) -> BTreeMap<String, String> {
    let client = aws_sdk_kinesis::Client::new(&kinesalite.sdk_config().await);
    client.create_stream().stream_name(stream).shard_count(shards).send().await.unwrap();
    for _ in 0..200 {
        let d = client.describe_stream_summary().stream_name(stream).send().await.unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut pending: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut records: Vec<(u64, Vec<u64>)> = Vec::new();
    for i in 0..n {
        let buf = pending.entry(i % USERS).or_default();
        buf.push(i);
        if buf.len() >= per_record.max(1) {
            records.push((i % USERS, std::mem::take(buf)));
        }
    }
    records.extend(pending.into_iter().filter(|(_, v)| !v.is_empty()));
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    // One PutRecords at a time: the order of a user's records is kept.
    for chunk in records.chunks(250) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|(user, ids)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(cwl_record(ids)))
                    .partition_key(format!("u{user}"))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
        for r in out.records() {
            let e = last.entry(r.shard_id().unwrap_or("").to_string()).or_default();
            let seq = r.sequence_number().unwrap_or("");
            if position_cmp(seq, e).is_gt() {
                *e = seq.to_string();
            }
        }
    }
    last
}

/// A gzip CloudTrail log file of events `range`.
pub fn log_file(range: std::ops::Range<u64>) -> Vec<u8> {
    crate::fixtures::log_file_of(&range.map(event).collect::<Vec<_>>())
}

/// Puts events `0..n` as CloudTrail log files of `per_file` events in S3 and
/// an S3 notification per file in a new queue (visibility `visibility`
/// seconds, so messages a killed process held come back soon). Returns the
/// queue URL.
pub async fn feed_sqs(moto: &Server, n: u64, per_file: u64, visibility: u32) -> String {
    use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
    let sdk = moto.sdk_config().await;
    let s3 = s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    s3.create_bucket().bucket("org-trail").send().await.unwrap();
    let url = sqs
        .create_queue()
        .queue_name("chaos-notifications")
        .attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mut bodies = Vec::new();
    let mut start = 0;
    let mut file = 0;
    while start < n {
        let end = (start + per_file).min(n);
        let key = format!(
            "AWSLogs/o-chaos/111122223333/CloudTrail/us-east-1/2026/11/01/111122223333_CloudTrail_us-east-1_20261101T1000Z_{file:06}.json.gz"
        );
        s3.put_object().bucket("org-trail").key(&key).body(log_file(start..end).into()).send().await.unwrap();
        bodies.push(crate::fixtures::s3_notification("org-trail", &key));
        start = end;
        file += 1;
    }
    for (b, batch) in bodies.chunks(10).enumerate() {
        let entries: Vec<SendMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder().id(format!("m{b}-{i}")).message_body(body).build().unwrap()
            })
            .collect();
        let out = sqs.send_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
        assert!(out.failed().is_empty(), "{:?}", out.failed());
    }
    url
}

/// Messages visible plus in flight.
pub async fn queue_depth(moto: &Server, url: &str) -> u64 {
    crate::fixtures::queue_depth(&aws_sdk_sqs::Client::new(&moto.sdk_config().await), url).await
}

/// Every committed checkpoint seen, checked never to move backwards.
#[derive(Debug, Default)]
pub struct CheckpointLog {
    pub commit: u64,
    pub positions: BTreeMap<String, String>,
    pub observations: usize,
}

impl CheckpointLog {
    /// Records one observation; panics if the commit number or any
    /// partition's position is behind an earlier observation.
    pub fn observe(&mut self, commit: u64, positions: &BTreeMap<String, String>, when: &str) {
        assert!(commit >= self.commit, "{when}: commit number went back from {} to {commit}", self.commit);
        for (k, old) in &self.positions {
            let new = positions
                .get(k)
                .unwrap_or_else(|| panic!("{when}: partition {k} (was at {old}) vanished from the checkpoint"));
            assert!(position_cmp(new, old).is_ge(), "{when}: checkpoint of {k} moved backwards from {old} to {new}");
        }
        self.commit = commit;
        self.positions = positions.clone();
        self.observations += 1;
    }
}

/// Compares what arrived with the replay and asserts the detections.
pub async fn check(scenario: &Scenario, moto: &Server, expected: &Findings) {
    let want_det = expected.of_kind(true);
    let want_cor = expected.of_kind(false);
    let sh = securityhub_findings(moto).await;
    let jl = jsonl_findings(&scenario.jsonl);
    let sh_det = sh.of_kind(true);
    let jl_det = jl.of_kind(true);
    eprintln!(
        "expected {} detection + {} correlation findings; Security Hub holds {} rows, {} distinct ({} detections); JSONL {} lines, {} distinct, {} torn",
        want_det.len(),
        want_cor.len(),
        sh.ids.len(),
        sh.distinct().len(),
        sh_det.len(),
        jl.ids.len(),
        jl.distinct().len(),
        jl.torn,
    );
    // Correlations: compared, printed and asserted (ASSERT_CORRELATIONS).
    let sh_cor = sh.of_kind(false);
    let missing_cor = want_cor.difference(&sh_cor).count();
    let extra_cor = sh_cor.difference(&want_cor).count();
    eprintln!(
        "correlations: replay {} / Security Hub {} (missing {missing_cor}, extra {extra_cor}){}",
        want_cor.len(),
        sh_cor.len(),
        if ASSERT_CORRELATIONS { "" } else { " — not asserted" }
    );
    assert!(!want_det.is_empty(), "the scenario makes detection findings");
    let missing: Vec<&String> = want_det.difference(&sh_det).collect();
    assert!(
        missing.is_empty(),
        "{} detection findings lost in Security Hub, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let extra: Vec<&String> = sh_det.difference(&want_det).collect();
    assert!(
        extra.is_empty(),
        "{} unexpected detection findings in Security Hub, e.g. {:?}",
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    assert_eq!(sh.ids.len(), sh.distinct().len(), "Security Hub holds each Id once (repeats are upserts)");
    assert_eq!(jl.torn, 0, "the JSONL sink has no torn lines");
    let jl_missing = want_det.difference(&jl_det).count();
    assert_eq!(jl_missing, 0, "detection findings missing from the JSONL sink");
    let jl_extra: Vec<&String> = jl_det.difference(&want_det).collect();
    assert!(jl_extra.is_empty(), "JSONL lines repeat only expected Ids: {:?}", &jl_extra[..jl_extra.len().min(5)]);
    if ASSERT_CORRELATIONS {
        assert_eq!(sh_cor, want_cor, "correlation findings");
    }
}

/// When the input is all read and committed.
pub enum Drain {
    /// Every shard's committed position reached its last sequence number.
    Kinesis { source: String, last: BTreeMap<String, String> },
    /// The queue is empty: every message was deleted (after its commit).
    Sqs { url: String },
}

impl Drain {
    async fn done(&self, scenario: &Scenario, moto: &Server, positions: &BTreeMap<String, String>) -> bool {
        let _ = scenario;
        match self {
            Drain::Kinesis { source, last } => last.iter().all(|(shard, seq)| {
                positions.get(&format!("{source}/{shard}")).is_some_and(|p| position_cmp(p, seq).is_ge())
            }),
            Drain::Sqs { url } => queue_depth(moto, url).await == 0,
        }
    }
}

/// How a scenario is run: SIGKILLed `kills` times, each at a seeded random
/// moment `min_ms..=max_ms` after that run's first commit, then run until drained.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kills: usize,
    pub seed: u64,
    pub min_ms: u64,
    pub max_ms: u64,
    /// Longest wait for the last run to drain the input.
    pub drain_timeout: Duration,
}

/// Runs the plan and returns the checkpoint history; the caller then [`check`]s.
pub async fn run_plan(
    scenario: &Scenario,
    moto: &Server,
    plan: &Plan,
    drain: &Drain,
    expected: &Findings,
) -> CheckpointLog {
    let mut rng = crate::Rng::new(plan.seed);
    let mut log = CheckpointLog::default();
    let started = Instant::now();
    for k in 0..=plan.kills {
        let last = k == plan.kills;
        let mut tw = scenario.start(k);
        let mut until = Instant::now() + plan.drain_timeout;
        // A kill lands a random moment after this run's first commit, so
        // every restart resumes mid-stream from a checkpoint it moved.
        let (start_commit, _) = scenario.committed().await;
        let mut armed = last;
        let mut drained = false;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            tw.assert_running();
            let (commit, positions) = scenario.committed().await;
            log.observe(commit, &positions, &format!("run {k}"));
            if !armed && (commit > start_commit || drain.done(scenario, moto, &positions).await) {
                armed = true;
                until = Instant::now() + Duration::from_millis(rng.range(plan.min_ms, plan.max_ms));
            }
            if last && drain.done(scenario, moto, &positions).await {
                drained = true;
                break;
            }
        }
        if !last {
            tw.kill9();
            let (commit, positions) = scenario.committed().await;
            log.observe(commit, &positions, &format!("after kill {k}"));
            let done = drain.done(scenario, moto, &positions).await;
            eprintln!(
                "kill -9 #{k} at {:.1}s: commit {commit}{}",
                started.elapsed().as_secs_f64(),
                if done { " (input already drained)" } else { "" }
            );
            assert!(armed, "run {k} made no commit within {:?}:\n{}", plan.drain_timeout, scenario.log_tail(k));
            continue;
        }
        assert!(drained, "the input was not drained within {:?}:\n{}", plan.drain_timeout, scenario.log_tail(k));
        // Drained means committed, and a commit follows the sinks' flush;
        // wait for anything spooled to arrive as well.
        let want = expected.of_kind(true);
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if want.is_subset(&securityhub_findings(moto).await.of_kind(true)) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let status = tw.terminate(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "the last run stops cleanly on SIGTERM ({status:?}):\n{}",
            scenario.log_tail(k)
        );
        let (commit, positions) = scenario.committed().await;
        log.observe(commit, &positions, "after the last run");
        eprintln!(
            "drained after {} kills in {:.1}s; {} checkpoint observations, last commit {commit}",
            plan.kills,
            started.elapsed().as_secs_f64(),
            log.observations
        );
    }
    log
}
