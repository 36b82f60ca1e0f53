//! The live observability endpoint: the embedded default configuration (demo
//! events from examples/events through the built-in pack) runs in-process,
//! and the test scrapes /metrics, /healthz and /readyz over HTTP the way
//! Prometheus and a load balancer would, then runs `promtool check metrics`
//! on the scrape (scripts/test installs promtool; a missing one fails here).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use trailwatch_processor::config::{Config, EMBEDDED_DEFAULT};
use trailwatch_processor::ruleset;
use trailwatch_processor::service::{self, RunOptions};

static ADDR: OnceLock<SocketAddr> = OnceLock::new();

fn on_listen(a: SocketAddr) {
    let _ = ADDR.set(a);
}

/// One HTTP/1.0 GET; returns (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_health_endpoints_answer() {
    let dir = tempfile::tempdir().unwrap();
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let mut v: toml::Value = toml::from_str(EMBEDDED_DEFAULT).unwrap();
    // The embedded default, kept serving after the demo files are read, on a
    // free port, with findings in a file instead of the test's stdout.
    let root = v.as_table_mut().unwrap();
    let demo = root["sources"]["demo"].as_table_mut().unwrap();
    demo.insert("paths".into(), toml::Value::Array(vec![events.display().to_string().into()]));
    demo.insert("exit_when_done".into(), false.into());
    let sink = root["sinks"]["stdout"].as_table_mut().unwrap();
    sink.insert("path".into(), dir.path().join("findings.ndjson").display().to_string().into());
    root["metrics"].as_table_mut().unwrap().insert("listen".into(), "127.0.0.1:0".into());
    let mut service = toml::Table::new();
    service.insert("commit_interval".into(), "100ms".into());
    service.insert("state_dir".into(), dir.path().join("state").display().to_string().into());
    root.insert("service".into(), service.into());
    let cfg: Config = v.try_into().unwrap();
    cfg.validate().unwrap();

    let opts = ruleset::compile_options(&cfg, true).unwrap();
    let (set, _) = ruleset::load(&[], true, &opts).unwrap();
    let (commits_tx, mut commits) = tokio::sync::watch::channel(0u64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run_opts = RunOptions { on_listen: Some(on_listen), commits: Some(commits_tx), ..Default::default() };
    let run = tokio::spawn(service::run(cfg, Arc::new(set), run_opts, async move {
        let _ = stop_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(60), commits.wait_for(|n| *n >= 1))
        .await
        .expect("a commit within 60 s")
        .unwrap();
    let addr = *ADDR.get().expect("the metrics endpoint listens");

    let (health, ready, metrics) = tokio::task::spawn_blocking(move || {
        (get(addr, "/healthz").unwrap(), get(addr, "/readyz").unwrap(), get(addr, "/metrics").unwrap())
    })
    .await
    .unwrap();
    assert_eq!(health, (200, "ok\n".to_string()));
    // The file source is connected, the sink healthy, nothing shutting down.
    assert_eq!(ready, (200, "ready\n".to_string()));
    let (status, text) = metrics;
    assert_eq!(status, 200);

    // The file-source path records what the dashboard and alerts read.
    assert!(sample(&text, "trailwatch_build_info{version=").is_some(), "{text}");
    assert_eq!(sample(&text, "trailwatch_up "), Some(1.0));
    assert_eq!(sample(&text, "trailwatch_ready "), Some(1.0));
    assert!(sample(&text, "trailwatch_source_events_total{").unwrap_or(0.0) > 0.0, "{text}");
    assert!(sample(&text, "trailwatch_events_total{").unwrap_or(0.0) > 0.0, "{text}");
    assert!(sample(&text, "trailwatch_rule_matches_total{").unwrap_or(0.0) > 0.0, "{text}");
    // Every demo event is tried by at least one rule after the index.
    assert!(sample(&text, "trailwatch_rule_evaluations_total{").unwrap_or(0.0) > 0.0, "{text}");
    assert!(sample(&text, "trailwatch_sink_findings_total{outcome=\"sent\",sink=\"stdout\"}").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "trailwatch_sink_request_duration_seconds_count{sink=\"stdout\"}").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "trailwatch_sink_batch_size_count{sink=\"stdout\"}").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "trailwatch_ingest_to_finding_seconds_count").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "trailwatch_checkpoint_last_success_timestamp_seconds ").unwrap_or(0.0) > 1.6e9);

    // Prometheus' own linter on the live scrape.
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run scripts/test (it installs Debian's prometheus package) or install it");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics complains:\n{said}");

    // Shutting down: the run ends cleanly and the endpoint goes away.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("the run ends").unwrap().unwrap();
    let after = tokio::task::spawn_blocking(move || get(addr, "/readyz")).await.unwrap();
    assert!(after.map(|(s, _)| s != 200).unwrap_or(true), "not ready once shut down");
}
