//! Never a silent half-dead service: the real `trailwatch run` binary against
//! a real Kinesis emulator (kinesalite), with faults injected.
//!
//! - a shard reader whose endpoint hangs (kinesalite paused with SIGSTOP)
//!   turns /readyz to 503 naming the shard, and back to 200 when it resumes;
//! - a panic injected (`TRAILWATCH_TEST_PANIC_AT`, test-only) in a shard
//!   reader, the detector stage or the sink stage ends the process with exit
//!   code 70;
//! - a record whose decoding or evaluation panics is dead-lettered with the
//!   panic message and counted, and the stream goes on.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use trailwatch_tests::fixtures::{create_stream, MARKER_RULE};
use trailwatch_tests::Server;

fn record(i: u32, extra: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:00:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"TwMarker","awsRegion":"us-east-1","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"111122223333","userAgent":"{extra}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/u{i}","accountId":"111122223333"}}}}"#,
        s = i % 60
    )
}

struct Env {
    kinesis: Server,
    client: aws_sdk_kinesis::Client,
    dir: tempfile::TempDir,
    stream: String,
    metrics: String,
}

impl Env {
    async fn start(shards: i32) -> Env {
        let kinesis = Server::kinesalite().expect("kinesalite");
        let client = aws_sdk_kinesis::Client::new(&kinesis.sdk_config().await);
        let stream = "tw-supervision".to_string();
        create_stream(&client, &stream, shards).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/marker.yml"), MARKER_RULE).unwrap();
        let metrics = format!("127.0.0.1:{}", trailwatch_tests::free_port());
        let cfg = format!(
            r#"{aws}
[service]
state_dir = "{state}"
commit_interval = "200ms"
shutdown_timeout = "10s"
source_stall_polls = 2
source_stall_min = "2s"
[sources.k]
type = "kinesis"
stream_name = "{stream}"
poll_interval = "200ms"
max_idle_poll_interval = "400ms"
[sinks.out]
type = "asff-jsonl"
path = "{out}"
[metrics]
enabled = true
listen = "{metrics}"
"#,
            aws = kinesis.aws_section(),
            state = dir.path().join("state").display(),
            out = dir.path().join("findings.ndjson").display(),
        );
        std::fs::write(dir.path().join("trailwatch.toml"), cfg).unwrap();
        Env { kinesis, client, dir, stream, metrics }
    }

    async fn put(&self, records: Vec<String>) {
        let entries: Vec<PutRecordsRequestEntry> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                PutRecordsRequestEntry::builder().data(Blob::new(r)).partition_key(format!("k{i}")).build().unwrap()
            })
            .collect();
        let out = self.client.put_records().stream_name(&self.stream).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }

    /// Starts `trailwatch run`; `panic_at` sets the test-only injection point.
    fn run(&self, panic_at: Option<&str>) -> Child {
        trailwatch_tests::aws_env();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailwatch"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.path().join("trailwatch.toml"))
            .arg("--no-builtin")
            .arg("--rules")
            .arg(self.dir.path().join("rules"))
            .env("TRAILWATCH_LOG", "info")
            .env_remove("TRAILWATCH_TEST_PANIC_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).unwrap());
        if let Some(p) = panic_at {
            cmd.env("TRAILWATCH_TEST_PANIC_AT", p);
        }
        cmd.spawn().expect("start trailwatch")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("trailwatch.log")
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// GET a path on the metrics endpoint: Ok(body) on 200, Err("status: body").
    fn get(&self, path: &str) -> Result<String, String> {
        trailwatch_processor::http::check(&format!("http://{}{path}", self.metrics), Duration::from_secs(3))
    }

    /// Polls `f` every 100 ms until it is Some, or fails after `limit`.
    fn wait_for<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(start.elapsed() < limit, "timed out waiting for {what}; trailwatch log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn findings(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("findings.ndjson")).map(|t| t.lines().count()).unwrap_or(0)
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("state/dead-letter.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Waits for the process to exit by itself within `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Stops trailwatch with SIGTERM and returns its exit status.
fn terminate(child: &mut Child) -> ExitStatus {
    signal(child.id(), "TERM");
    match exit_within(child, Duration::from_secs(30)) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            panic!("trailwatch did not stop within 30s of SIGTERM");
        }
    }
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shard_reader_turns_readyz_to_503_naming_the_shard() {
    let env = Env::start(1).await;
    env.put((0..3).map(|i| record(i, "ok")).collect()).await;
    let mut child = env.run(None);
    env.wait_for("ready", Duration::from_secs(60), || env.get("/readyz").ok());
    env.wait_for("3 findings", Duration::from_secs(30), || (env.findings() == 3).then_some(()));

    // The endpoint hangs: GetRecords never completes.
    signal(env.kinesis.pid(), "STOP");
    let why = env.wait_for("/readyz to fail", Duration::from_secs(30), || env.get("/readyz").err());
    signal(env.kinesis.pid(), "CONT");
    assert!(why.contains("503"), "{why}");
    assert!(why.contains("source k partition shardId-000000000000 stalled"), "{why}");
    // Still alive: the pipeline stages are fine (restarting would not help).
    assert_eq!(env.get("/healthz"), Ok("ok".to_string()));

    // It recovers by itself once the endpoint answers again.
    env.wait_for("ready again", Duration::from_secs(60), || env.get("/readyz").ok());
    let text = env.get("/metrics").unwrap();
    let stalled = r#"trailwatch_source_partition_stalled{partition="shardId-000000000000",source="k"}"#;
    assert_eq!(metric(&text, stalled), Some(0.0), "{text}");
    env.put(vec![record(3, "ok")]).await;
    env.wait_for("the 4th finding", Duration::from_secs(30), || (env.findings() == 4).then_some(()));
    let st = terminate(&mut child);
    assert!(st.success(), "{st}: {}", env.log_text());
    assert!(env.log_text().contains("source partition stalled"), "the stall is logged");
}

/// A panic outside the per-record guards ends `trailwatch run` with code 70.
async fn panic_ends_the_process(point: &str) {
    let env = Env::start(2).await;
    env.put((0..4).map(|i| record(i, "ok")).collect()).await;
    let mut child = env.run(Some(point));
    let Some(st) = exit_within(&mut child, Duration::from_secs(60)) else {
        let ready = env.get("/readyz");
        let _ = child.kill();
        panic!("{point}: trailwatch still running 60s after the panic (readyz: {ready:?}):\n{}", env.log_text());
    };
    let log = env.log_text();
    assert_eq!(st.code(), Some(70), "{point}: {st}\n{log}");
    assert!(log.contains(&format!("injected test panic at {point}")), "{point}: the panic is logged:\n{log}");
    assert!(log.contains("exiting with code 70"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_shard_reader_ends_the_process() {
    panic_ends_the_process("kinesis-reader").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_detector_stage_ends_the_process() {
    panic_ends_the_process("detector").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_sink_stage_ends_the_process() {
    panic_ends_the_process("sink").await;
}

/// A record whose decoding (or evaluation) panics is dead-lettered with the
/// panic message, counted, and the records around it are processed.
async fn a_panicking_record_is_dead_lettered(point: &str) {
    let env = Env::start(1).await;
    let mut records: Vec<String> = (0..5).map(|i| record(i, "ok")).collect();
    records[2] = record(2, trailwatch_processor::panics::TEST_PANIC_MARKER);
    env.put(records).await;
    let mut child = env.run(Some(point));
    env.wait_for("4 findings", Duration::from_secs(60), || (env.findings() == 4).then_some(()));
    let letters = env.wait_for("the dead letter", Duration::from_secs(30), || {
        let d = env.dead_letters();
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    let d = &letters[0];
    assert_eq!(d["kind"], "panic", "{d}");
    let error = d["error"].as_str().unwrap();
    assert!(error.contains(&format!("injected test panic at {point}")), "{error}");
    assert!(error.contains("(at "), "the location is kept: {error}");
    assert!(d["raw"].as_str().unwrap().contains(trailwatch_processor::panics::TEST_PANIC_MARKER), "{d}");
    assert!(d["origin"].as_str().unwrap().starts_with("kinesis:tw-supervision/shardId-000000000000/"), "{d}");
    let text = env.get("/metrics").unwrap();
    let counted = format!("trailwatch_record_panics_total{{stage=\"{point}\"}}");
    assert_eq!(metric(&text, &counted), Some(1.0), "{text}");
    assert_eq!(env.get("/healthz"), Ok("ok".to_string()));
    // The stream goes on.
    env.put(vec![record(7, "ok")]).await;
    env.wait_for("the 5th finding", Duration::from_secs(30), || (env.findings() == 5).then_some(()));
    let st = terminate(&mut child);
    assert!(st.success(), "{st}: {}", env.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_decoding_panics_is_dead_lettered() {
    a_panicking_record_is_dead_lettered("decode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_evaluation_panics_is_dead_lettered() {
    a_panicking_record_is_dead_lettered("evaluate").await;
}

/// Embedded without the fail-fast hook (a library host), a shard reader that
/// dies still fails the run, naming the shard, instead of leaving it unread.
/// (The injection variable is read once per process; the binaries started by
/// the other tests get their own environment.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_dead_shard_reader_fails_the_run() {
    use std::sync::Arc;
    use trailwatch_processor::service::{self, RunOptions};

    let env = Env::start(1).await;
    env.put((0..2).map(|i| record(i, "ok")).collect()).await;
    std::env::set_var("TRAILWATCH_TEST_PANIC_AT", "kinesis-reader");
    let text = std::fs::read_to_string(env.dir.path().join("trailwatch.toml")).unwrap();
    let mut cfg: trailwatch_processor::config::Config = toml::from_str(&text).unwrap();
    cfg.metrics.enabled = false;
    let (set, _) = trailwatch_processor::ruleset::compile(
        &[trailwatch_rules::RuleFile { name: "marker.yml".into(), text: MARKER_RULE.into() }],
        &trailwatch_rules::CompileOptions::default(),
    )
    .unwrap();
    let run = service::run(cfg, Arc::new(set), RunOptions::default(), std::future::pending::<()>());
    let r = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the run ends by itself");
    let e = format!("{:#}", r.expect_err("the run fails"));
    assert!(e.contains("the reader of shard shardId-000000000000 died"), "{e}");
    assert!(e.contains("injected test panic at kinesis-reader"), "{e}");
}
