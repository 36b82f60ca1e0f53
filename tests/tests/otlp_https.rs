//! OTLP export to an https endpoint: the exporter's rustls client (ring,
//! the system roots) verifies the receiver's certificate, here issued by the
//! test CA of `tests/fixtures/otlp-tls` that `SSL_CERT_FILE` points to (the
//! variable the system-roots loader reads), and the receiver decodes what
//! arrives with the official classes.
//!
//! Its own process: the exporter is the process-wide tracing subscriber,
//! and SSL_CERT_FILE must be set before the client loads its roots.

use trailwatch_processor::telemetry::{ExportReport, Telemetry};
use trailwatch_tests::{demo_config, repo_root, run_builtin_then_flush, OtlpReceiver, ReceiverOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_https_to_a_collector_with_a_verified_certificate() {
    let receiver = OtlpReceiver::start(&ReceiverOptions { tls: true, ..Default::default() }).unwrap();
    assert!(receiver.endpoint.starts_with("https://127.0.0.1:"));
    // Set once, before any TLS client exists in this process.
    std::env::set_var("SSL_CERT_FILE", repo_root().join("tests/fixtures/otlp-tls/ca.pem"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(
        dir.path(),
        None,
        &format!(
            r#"
            [telemetry]
            otlp_endpoint = "{endpoint}"
            "#,
            endpoint = receiver.endpoint,
        ),
    );
    let telemetry = Telemetry::init(&cfg.telemetry, "warn").unwrap();

    let (_, report) = run_builtin_then_flush(cfg, dir.path(), telemetry).await;

    let requests = receiver.requests();
    let spans: Vec<&serde_json::Value> = requests.iter().flat_map(|r| r["spans"].as_array().unwrap()).collect();
    assert!(requests.iter().all(|r| r["status"] == 200), "{requests:?}\n{}", receiver.log_text());
    assert!(spans.iter().any(|s| s["name"] == "source_batch"), "{spans:?}");
    assert_eq!(report, ExportReport { sent: spans.len() as u64, ..Default::default() }, "all of them, over TLS");
    assert_eq!(requests[0]["resource"]["service.name"], "s:trailwatch");
}
