//! OTLP/gRPC export end to end: the OpenTelemetry exporter's tonic client
//! against `tests/otlp_receiver.py --grpc`, the generated `TraceService`
//! of the official `opentelemetry-proto` package served by grpcio. The
//! receiver answers the first request with UNAVAILABLE (the exporter
//! retries it) and reports one rejected span in its first answer: both
//! counted in `trailwatch_otlp_*` as over HTTP.
//!
//! Its own process: the exporter is the process-wide tracing subscriber.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use trailwatch_processor::metrics;
use trailwatch_processor::telemetry::{ExportReport, Telemetry};
use trailwatch_tests::{demo_config, run_builtin_then_flush, telemetry_toml, OtlpReceiver, ReceiverOptions};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_grpc_to_the_official_trace_service_retried_and_linked() {
    let receiver =
        OtlpReceiver::start(&ReceiverOptions { grpc: true, fail_first: 1, reject: 1, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(
        dir.path(),
        Some(5),
        &telemetry_toml(
            &receiver.endpoint,
            r#"
            otlp_protocol = "grpc"
            otlp_compression = "gzip"
            trace_id_format = "xray"
            trace_batch_size = 8
            "#,
        ),
    );
    // Read by the exporter, added to the config's metadata.
    std::env::set_var("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken");
    let telemetry = Telemetry::init(&cfg.telemetry, "warn").unwrap();
    assert!(telemetry.exports_traces());

    let (summary, report) = run_builtin_then_flush(cfg, dir.path(), telemetry).await;

    let requests = receiver.requests();
    let statuses: Vec<i64> = requests.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses[0], 503, "{statuses:?}\n{}", receiver.log_text());
    assert!(statuses[1..].iter().all(|s| *s == 200), "the failed export was retried and accepted: {statuses:?}");
    let accepted: Vec<&Value> = requests.iter().filter(|r| r["status"] == 200).collect();
    let spans: Vec<&Value> = accepted.iter().flat_map(|r| r["spans"].as_array().unwrap()).collect();
    let ids: BTreeSet<&str> = spans.iter().map(|sp| s(&sp["span_id"])).collect();
    assert_eq!(ids.len(), spans.len(), "a span arrived twice");
    // The rejected span was decoded too: the receiver saw it and said no.
    assert_eq!(report, ExportReport { sent: spans.len() as u64 - 1, rejected: 1, ..Default::default() }, "{report:?}");
    let m = metrics::get();
    assert_eq!(m.otlp_spans_exported.with_label_values(&["sent"]).get(), report.sent);
    assert_eq!(m.otlp_spans_exported.with_label_values(&["rejected"]).get(), 1);
    assert_eq!(m.otlp_export_retries.with_label_values(&["retryable"]).get(), 1, "the UNAVAILABLE answer");
    assert!(accepted.iter().all(|r| r["spans"].as_array().unwrap().len() <= 8), "trace_batch_size holds");
    for r in &accepted {
        assert_eq!(r["resource"]["service.name"], "s:trailwatch");
        assert_eq!(r["scope"], format!("trailwatch/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(r["headers"]["x-tenant"], "acme", "{}", r["headers"]);
        assert_eq!(r["headers"]["authorization"], "Bearer t0ken", "{}", r["headers"]);
    }

    // The same trace shape as over HTTP: source_batch → detector_batch → sink_send.
    let by_id: BTreeMap<&str, &Value> = spans.iter().map(|sp| (s(&sp["span_id"]), *sp)).collect();
    let named = |n: &str| -> Vec<&Value> { spans.iter().copied().filter(|sp| sp["name"] == n).collect() };
    let sources = named("source_batch");
    assert!(sources.len() >= 8, "41 demo events in batches of 5: {}", sources.len());
    let events: i64 = sources
        .iter()
        .map(|sp| s(&sp["attributes"]["events"]).strip_prefix("i:").unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(events as u64, summary.eval.events);
    for d in named("detector_batch") {
        let src = by_id.get(s(&d["parent_span_id"])).expect("detector_batch has a parent");
        assert_eq!((&src["name"], &src["trace_id"]), (&Value::from("source_batch"), &d["trace_id"]));
    }
    for sp in &spans {
        let id = s(&sp["trace_id"]);
        let secs = u64::from_str_radix(&id[..8], 16).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(now - secs < 600, "an X-Ray id starts with the trace's Unix time: {id}");
    }
}
