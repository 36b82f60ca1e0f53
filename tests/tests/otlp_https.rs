//! OTLP export to an https endpoint: the exporter's rustls client (ring,
//! the system roots) verifies the receiver's certificate, here issued by the
//! test CA of `tests/fixtures/otlp-tls` that `SSL_CERT_FILE` points to (the
//! variable the system-roots loader reads), and the receiver decodes what
//! arrives with the official classes.
//!
//! Its own process: the exporter is the process-wide tracing subscriber,
//! and SSL_CERT_FILE must be set before the client loads its roots.

use std::time::Duration;

use trailwatch_processor::config::Config;
use trailwatch_processor::ruleset;
use trailwatch_processor::service::RunOptions;
use trailwatch_processor::telemetry::{ExportReport, Telemetry};
use trailwatch_tests::{repo_root, run_then_flush, OtlpReceiver, ReceiverOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_https_to_a_collector_with_a_verified_certificate() {
    let receiver = OtlpReceiver::start(&ReceiverOptions { tls: true, ..Default::default() }).unwrap();
    assert!(receiver.endpoint.starts_with("https://127.0.0.1:"));
    // Set once, before any TLS client exists in this process.
    std::env::set_var("SSL_CERT_FILE", repo_root().join("tests/fixtures/otlp-tls/ca.pem"));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        [sources.demo]
        type = "file"
        paths = ["{events}"]
        [sinks.out]
        type = "asff-jsonl"
        path = "{out}"
        [checkpoints]
        store = "none"
        [metrics]
        enabled = false
        [telemetry]
        otlp_endpoint = "{endpoint}"
        "#,
        events = repo_root().join("examples/events").display(),
        out = dir.path().join("findings.ndjson").display(),
        endpoint = receiver.endpoint,
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    let telemetry = Telemetry::init(&cfg.telemetry, "warn").unwrap();

    let opts = ruleset::compile_options(&cfg, true).unwrap();
    let (set, _) = ruleset::load(&[], true, &opts).unwrap();
    let run_opts = RunOptions { dead_letter: Some(dir.path().join("dead.ndjson")), ..Default::default() };
    let (_, report) = run_then_flush(cfg, set, run_opts, telemetry, Duration::from_secs(20)).await;

    let requests = receiver.requests();
    let spans: Vec<&serde_json::Value> = requests.iter().flat_map(|r| r["spans"].as_array().unwrap()).collect();
    assert!(requests.iter().all(|r| r["status"] == 200), "{requests:?}\n{}", receiver.log_text());
    assert!(spans.iter().any(|s| s["name"] == "source_batch"), "{spans:?}");
    assert_eq!(report, ExportReport { sent: spans.len() as u64, ..Default::default() }, "all of them, over TLS");
    assert_eq!(requests[0]["resource"]["service.name"], "s:trailwatch");
}
