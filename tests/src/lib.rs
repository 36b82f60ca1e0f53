//! Test harness for trailwatch's end-to-end tests: real AWS-compatible
//! servers on 127.0.0.1, started and stopped by the tests.
//!
//! - [`Server::moto`]: `moto[server]` (SQS, S3, DynamoDB, Security Hub), from
//!   the repository's `.venv/` (installed by `scripts/test`);
//! - [`Server::kinesalite`]: Kinesis, from the repository's `node_modules/`;
//! - [`OtlpReceiver`]: an OTLP/HTTP or OTLP/gRPC trace receiver (`tests/otlp_receiver.py`,
//!   decoding with the official `opentelemetry-proto` classes, and grpcio, from `.venv/`).
//!
//! Each server runs in a wrapper that exits when the test process does, so a
//! crashed test leaves nothing behind; [`Server`] kills it on drop. Ports are
//! free ports picked at start. Credentials are dummies, region us-east-1.
//!
//! - [`faults::FaultProxy`]: an HTTP proxy between the SDK and an emulator
//!   that injects throttling, 500s, connection resets and slow answers;
//! - [`recorder::Recorder`]: a recording HTTP endpoint (BatchUpdateFindings,
//!   webhooks), for what moto does not serve;
//! - [`http_wire`]: HTTP/1.1 messages read off a socket, for hand-written
//!   endpoints and proxies;
//! - [`otlp_metrics`]: what the OTLP metrics tests check in the receiver's requests;
//! - [`chaos`]: the kill -9 / fault scenario shared by `crash.rs` and
//!   `faults.rs` (events, rules, the real `trailwatch` binary, checks);
//! - [`fixtures`]: what the scenarios share (rules, events and envelopes,
//!   stream and queue set-up, a run until a condition, reading findings);
//! - [`instances`]: several `trailwatch run` processes sharing streams
//!   through lease tables (set-up, configs, input, replay comparison).

pub mod chaos;
pub mod faults;
pub mod fixtures;
pub mod http_wire;
pub mod instances;
pub mod otlp_metrics;
pub mod recorder;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";
/// The account moto uses for everything.
pub const MOTO_ACCOUNT: &str = "123456789012";

/// The repository root (the tests crate lives one level below).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

#[path = "../../rules/tests/support/shared.rs"]
pub mod shared_support;
/// `../shared` next to the repository, or `None` after one skip line, and a
/// directory walk (one copy of each in the workspace: the rules crate's test support).
pub use shared_support::{files_under, shared};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Sets the dummy AWS credentials and region for SDK clients in this process
/// and in the `trailwatch` processes it starts.
pub fn aws_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Set once, before any client exists; every test uses the same values.
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", REGION);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

/// A local AWS-compatible server, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    kind: Kind,
    log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Moto,
    Kinesalite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Moto => "moto",
            Kind::Kinesalite => "kinesalite",
        }
    }

    /// The command that serves on `port`, wrapped so that it exits when the
    /// test process is gone.
    fn command(self, port: u16) -> anyhow::Result<Command> {
        let root = repo_root();
        match self {
            Kind::Moto => {
                let python = root.join(".venv/bin/python");
                if !python.exists() || !root.join(".venv/bin/moto_server").exists() {
                    anyhow::bail!(
                        "moto is not installed in {}: run scripts/test (it installs moto[server] into .venv/)",
                        root.join(".venv").display()
                    );
                }
                // Orphaned (the test process ended without dropping it: a
                // static server), it exits and removes its log, unless a
                // failed test left the `.keep` mark ([`Server::keep_log_on_panic`]).
                let log = serde_json::to_string(&log_path(self.name(), port).to_string_lossy())?;
                let code = format!(
                    "import os, sys, threading, time\n\
                     parent = os.getppid()\n\
                     log = {log}\n\
                     def watch():\n\
                     \x20   while os.getppid() == parent:\n\
                     \x20       time.sleep(0.5)\n\
                     \x20   try:\n\
                     \x20       os.remove(log + '.keep') if os.path.exists(log + '.keep') else os.remove(log)\n\
                     \x20   except OSError:\n\
                     \x20       pass\n\
                     \x20   os._exit(0)\n\
                     threading.Thread(target=watch, daemon=True).start()\n\
                     from moto.server import main\n\
                     sys.argv = ['moto_server', '-H', '127.0.0.1', '-p', '{port}']\n\
                     main()\n"
                );
                let mut cmd = Command::new(python);
                cmd.arg("-c").arg(code);
                Ok(cmd)
            }
            Kind::Kinesalite => {
                if !root.join("node_modules/kinesalite").is_dir() {
                    anyhow::bail!(
                        "kinesalite is not installed in {}: run scripts/test (it runs npm install)",
                        root.join("node_modules").display()
                    );
                }
                // Streams become ACTIVE at once.
                let code = format!(
                    "const ppid = process.ppid;\n\
                     setInterval(() => {{ try {{ process.kill(ppid, 0) }} catch (e) {{ process.exit(0) }} }}, 500);\n\
                     require('kinesalite')({{createStreamMs: 5, deleteStreamMs: 5, updateStreamMs: 5, shardLimit: 1000}})\n\
                     .listen({port}, '127.0.0.1', err => {{ if (err) {{ console.error(err); process.exit(1) }} }});\n"
                );
                let mut cmd = Command::new("node");
                cmd.arg("-e").arg(code).current_dir(&root);
                Ok(cmd)
            }
        }
    }
}

impl Server {
    /// Starts moto (SQS, S3, DynamoDB, Security Hub) on a free port and waits until it answers.
    pub fn moto() -> anyhow::Result<Server> {
        Server::start(Kind::Moto, free_port())
    }

    /// Starts kinesalite (Kinesis) on a free port and waits until it answers.
    pub fn kinesalite() -> anyhow::Result<Server> {
        Server::start(Kind::Kinesalite, free_port())
    }

    fn start(kind: Kind, port: u16) -> anyhow::Result<Server> {
        let name = kind.name();
        let mut cmd = kind.command(port)?;
        let log = log_path(name, port);
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
        let mut s = Server { child, port, endpoint: format!("http://127.0.0.1:{port}"), kind, log };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                anyhow::bail!("{name} exited at start ({status}): {}", s.log_text());
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("{name} did not listen on {port} within 30s: {}", s.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's output so far (for failure messages).
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let tail: Vec<&str> = s.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// For a server kept in a `static` (never dropped, so [`Drop`] cannot
    /// decide): a panic in any test marks its log to be kept; otherwise the
    /// server removes it when the test process ends (moto only).
    pub fn keep_log_on_panic(&self) {
        let mark = self.log.with_extension("log.keep");
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::fs::write(&mark, b"").is_ok() {
                eprintln!("server log kept: {}", mark.with_extension("").display());
            }
            previous(info);
        }));
    }

    /// The server's process id (to pause it with SIGSTOP: a hung endpoint).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's whole output so far (moto logs one line per request).
    pub fn log_all(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (an outage) without dropping the handle.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (the outage ends). Server state is lost.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut again = Server::start(self.kind, self.port)?;
        std::mem::swap(&mut self.child, &mut again.child);
        // `again` now holds the dead process; dropping it only reaps it (and
        // must not delete the log the new process writes).
        again.log = PathBuf::new();
        Ok(())
    }

    /// An SDK config for test-side clients (creating streams, queues,
    /// reading findings back) pointed at this server, without SDK retries so
    /// failures are fast and visible.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_env();
        let aws = trailwatch_processor::aws::AwsConfig {
            region: Some(REGION.to_string()),
            endpoint_url: Some(self.endpoint.clone()),
            max_attempts: Some(1),
            ..Default::default()
        };
        trailwatch_processor::aws::sdk_config(&aws).await
    }

    /// The `[aws]` section that points trailwatch at this server.
    pub fn aws_section(&self) -> String {
        format!("[aws]\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\n", self.endpoint)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        keep_log_if_failed(&self.log);
    }
}

fn log_path(name: &str, port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("trailwatch-test-{name}-{port}.log"))
}

/// A server's log is kept (and named) only when the test failed: a passing
/// run leaves nothing in the temp directory.
fn keep_log_if_failed(log: &Path) {
    if std::thread::panicking() {
        eprintln!("server log kept: {}", log.display());
    } else {
        let _ = std::fs::remove_file(log);
    }
}

/// How the [`OtlpReceiver`] answers.
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Answer the first N requests with `fail_status` (default 503).
    pub fail_first: u32,
    pub fail_status: Option<u16>,
    /// Report this many rejected spans (partial success) in the first 200.
    pub reject: u32,
    /// Serve https with the test certificate of `tests/fixtures/otlp-tls`
    /// (issued by its `ca.pem` for 127.0.0.1).
    pub tls: bool,
    /// Serve OTLP/gRPC (grpcio, the generated TraceService) instead of OTLP/HTTP.
    pub grpc: bool,
}

/// The OTLP trace receiver of `tests/otlp_receiver.py` on a free port,
/// killed on drop. Each request it got is a JSON line of [`OtlpReceiver::requests`].
pub struct OtlpReceiver {
    child: Child,
    pub endpoint: String,
    out: PathBuf,
    log: PathBuf,
}

impl OtlpReceiver {
    pub fn start(opts: &ReceiverOptions) -> anyhow::Result<OtlpReceiver> {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let import = if opts.grpc {
            "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc"
        } else {
            "import opentelemetry.proto.collector.trace.v1.trace_service_pb2"
        };
        let probe = Command::new(&python).args(["-c", import]).output();
        if !probe.map(|o| o.status.success()).unwrap_or(false) {
            anyhow::bail!(
                "opentelemetry-proto (and grpcio for gRPC) is not installed in {}: run scripts/test (it installs them)",
                root.join(".venv").display()
            );
        }
        let port = free_port();
        let out = std::env::temp_dir().join(format!("trailwatch-test-otlp-{port}.ndjson"));
        let log = std::env::temp_dir().join(format!("trailwatch-test-otlp-{port}.log"));
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(python);
        cmd.arg(root.join("tests/otlp_receiver.py"))
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .args(["--fail-first", &opts.fail_first.to_string()])
            .args(["--fail-status", &opts.fail_status.unwrap_or(503).to_string()])
            .args(["--reject", &opts.reject.to_string()]);
        if opts.tls {
            let tls = root.join("tests/fixtures/otlp-tls");
            cmd.arg("--tls-cert").arg(tls.join("server.pem")).arg("--tls-key").arg(tls.join("server.key"));
        }
        if opts.grpc {
            cmd.arg("--grpc");
        }
        let child = spawn_listening("otlp receiver", cmd, port, &log)?;
        let scheme = if opts.tls { "https" } else { "http" };
        Ok(OtlpReceiver { child, endpoint: format!("{scheme}://127.0.0.1:{port}"), out, log })
    }

    /// Every request so far, decoded, in arrival order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the receiver writes JSON lines"))
            .collect()
    }

    /// The receiver's own output (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
        keep_log_if_failed(&self.log);
    }
}

/// Spawns `cmd` with its output in `log` and waits until it listens on `port`.
fn spawn_listening(name: &str, mut cmd: Command, port: u16, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("{name} exited at start ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            anyhow::bail!("{name} did not listen on {port} within 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the service over a finite source to its end, then stops the OTLP
/// exporter within `flush` (the order `trailwatch run` follows) and returns
/// the run's summary and the exporter's report.
pub async fn run_then_flush(
    cfg: trailwatch_processor::config::Config,
    set: trailwatch_rules::RuleSet,
    opts: trailwatch_processor::service::RunOptions,
    telemetry: trailwatch_processor::telemetry::Telemetry,
    flush: Duration,
) -> (trailwatch_processor::service::RunSummary, trailwatch_processor::telemetry::ExportReport) {
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        trailwatch_processor::service::run(cfg, std::sync::Arc::new(set), opts, std::future::pending::<()>()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    let report = tokio::task::spawn_blocking(move || telemetry.shutdown(Instant::now() + flush)).await.unwrap();
    (summary, report)
}

/// A `[telemetry]` section exporting to the OTLP `endpoint` (5 s timeout,
/// header `x-tenant: acme`) with a test's own telemetry `keys`.
pub fn telemetry_toml(endpoint: &str, keys: &str) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\notlp_timeout = \"5s\"\n{keys}\n[telemetry.otlp_headers]\nx-tenant = \"acme\"\n"
    )
}

/// What the OTLP tests run: the demo events (in batches of `batch_events`
/// when set) to an ASFF file in `dir`, no checkpoints, no /metrics
/// endpoint, then `telemetry` (TOML); validated.
pub fn demo_config(dir: &Path, batch_events: Option<u32>, telemetry: &str) -> trailwatch_processor::config::Config {
    let batch = batch_events.map(|n| format!("batch_events = {n}")).unwrap_or_default();
    let text = format!(
        r#"
        [sources.demo]
        type = "file"
        paths = ["{events}"]
        {batch}
        [sinks.out]
        type = "asff-jsonl"
        path = "{out}"
        [checkpoints]
        store = "none"
        [metrics]
        enabled = false
        {telemetry}
        "#,
        events = repo_root().join("examples/events").display(),
        out = dir.join("findings.ndjson").display(),
    );
    fixtures::config(&text)
}

/// [`run_then_flush`] with the built-in rules, dead letters to `dir`, and 20 s
/// for the flush.
pub async fn run_builtin_then_flush(
    cfg: trailwatch_processor::config::Config,
    dir: &Path,
    telemetry: trailwatch_processor::telemetry::Telemetry,
) -> (trailwatch_processor::service::RunSummary, trailwatch_processor::telemetry::ExportReport) {
    let opts = trailwatch_processor::ruleset::compile_options(&cfg, true).unwrap();
    let (set, _) = trailwatch_processor::ruleset::load(&[], true, &opts).unwrap();
    let run_opts =
        trailwatch_processor::service::RunOptions { dead_letter: Some(dir.join("dead.ndjson")), ..Default::default() };
    run_then_flush(cfg, set, run_opts, telemetry, Duration::from_secs(20)).await
}

/// The newest modification time of the files under `paths`.
fn newest(paths: &[PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::metadata(&p) else { continue };
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        } else if let Ok(t) = m.modified() {
            newest = newest.max(Some(t));
        }
    }
    newest
}

/// The `trailwatch` binary: $TRAILWATCH_BIN, or the debug build next to the
/// test binaries when it is newer than every source it is built from
/// (`scripts/test` builds it first), else built by cargo. (Building it from
/// here otherwise rebuilds a few shared dependencies that `cargo test`
/// compiled with other features: minutes on two cores.)
pub fn trailwatch_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRAILWATCH_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let bin = exe.parent().and_then(|d| d.parent()).expect("target/debug").join("trailwatch");
        let root = repo_root();
        let sources: Vec<PathBuf> = [
            "processor/src",
            "processor/build.rs",
            "processor/Cargo.toml",
            "rules/src",
            "rules/pack",
            "rules/Cargo.toml",
            "Cargo.toml",
            "Cargo.lock",
        ]
        .iter()
        .map(|p| root.join(p))
        .collect();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_some() && built > newest(&sources) {
            return bin;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo_root())
            .args(["build", "--quiet", "-p", "trailwatch-processor", "--bin", "trailwatch"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building trailwatch failed");
        assert!(bin.is_file(), "{} not built", bin.display());
        bin
    })
    .clone()
}

/// A small seeded generator (splitmix64): the same seed, the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A seed from `$name` if set (to repeat a run), else from the clock.
pub fn seed_from_env(name: &str) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    })
}

/// A number from `$name`, else `default` (sizes of the long tests).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}
