//! OTLP metrics export over gRPC end to end: turned on and pointed by the
//! standard variables alone (OTEL_METRICS_EXPORTER, the metrics endpoint,
//! protocol and interval, read by trailwatch and the OpenTelemetry SDK),
//! against `tests/otlp_receiver.py --grpc`, the generated `MetricsService` of
//! the official `opentelemetry-proto` package served by grpcio. No traces:
//! no trace endpoint is set.
//!
//! Its own process: the metrics registry is process-wide.

use std::time::Duration;

use serde_json::Value;
use trailwatch_processor::metrics;
use trailwatch_processor::telemetry::Telemetry;
use trailwatch_tests::otlp_metrics::{check_against_registry, demo_events, metric, sum_of};
use trailwatch_tests::{demo_config, run_builtin_then_flush, OtlpReceiver, ReceiverOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_go_over_grpc_to_the_official_metrics_service_set_by_otel_variables() {
    let receiver = OtlpReceiver::start(&ReceiverOptions { grpc: true, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(
        dir.path(),
        Some(5),
        r#"
        [telemetry.otlp_headers]
        x-tenant = "acme"
        "#,
    );
    for (k, v) in [
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        // Milliseconds, read by the SDK's periodic reader.
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken"),
    ] {
        std::env::set_var(k, v);
    }
    let telemetry = Telemetry::init(&cfg.telemetry, "warn").unwrap();
    assert!(telemetry.exports_metrics() && !telemetry.exports_traces());

    tokio::time::sleep(Duration::from_millis(700)).await;
    let (summary, _) = run_builtin_then_flush(cfg, dir.path(), telemetry).await;

    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r["signal"] == "metrics"), "metrics only: {requests:?}");
    let exports: Vec<&Value> = requests.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(exports.len(), requests.len(), "{}", receiver.log_text());
    assert!(exports.len() >= 2, "periodic exports (every 300 ms) and the one at shutdown: {}", exports.len());
    for r in &exports {
        assert_eq!(r["resource"]["service.name"], "s:trailwatch");
        assert_eq!(r["headers"]["x-tenant"], "acme", "{}", r["headers"]);
        assert_eq!(r["headers"]["authorization"], "Bearer t0ken", "{}", r["headers"]);
    }
    let last = exports.last().unwrap();
    let input = demo_events();
    assert_eq!(summary.eval.events, input);
    assert_eq!(sum_of(metric(last, "trailwatch_source_events_total")), input);
    assert_eq!(sum_of(metric(last, "trailwatch_events_total")), input);
    let checks = metric(last, "trailwatch_checkpoint_commit_duration_seconds");
    assert_eq!((checks["type"].as_str(), checks["unit"].as_str()), (Some("histogram"), Some("s")));
    let seen = check_against_registry(last, metrics::get());
    assert!(seen > 30, "{seen} series compared");
    assert_eq!(sum_of(metric(last, "trailwatch_otlp_metric_exports_total")), exports.len() as u64 - 1);
}
