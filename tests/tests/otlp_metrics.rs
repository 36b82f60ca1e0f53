//! OTLP metrics export over HTTP/protobuf end to end: the demo events run
//! in-process with `otlp_metrics = true` next to trace export, to one
//! `otlp_endpoint`, against `tests/otlp_receiver.py`, which decodes
//! `/v1/metrics` with the official `opentelemetry-proto` classes. The last
//! export (at shutdown) must carry the registry's final values: the same
//! names, labels, types and numbers as /metrics.
//!
//! Its own process: the metrics registry and the tracing subscriber are
//! process-wide. tests/otlp_metrics_grpc.rs does the same over gRPC.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use trailwatch_processor::metrics;
use trailwatch_processor::telemetry::Telemetry;
use trailwatch_tests::otlp_metrics::{check_against_registry, demo_events, metric, sum_of};
use trailwatch_tests::{demo_config, run_builtin_then_flush, telemetry_toml, OtlpReceiver, ReceiverOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_a_real_otlp_decoder_over_http_with_the_registry_values() {
    let receiver = OtlpReceiver::start(&ReceiverOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(
        dir.path(),
        Some(5),
        &telemetry_toml(
            &receiver.endpoint,
            r#"
            otlp_metrics = true
            metrics_export_interval = "300ms"
            "#,
        ),
    );
    std::env::set_var("OTEL_SERVICE_NAME", "trailwatch-metrics-e2e");
    let telemetry = Telemetry::init(&cfg.telemetry, "warn").unwrap();
    assert!(telemetry.exports_metrics() && telemetry.exports_traces(), "one endpoint, both signals");

    // A little time between start and end, so periodic exports happen during the run too.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (summary, _) = run_builtin_then_flush(cfg, dir.path(), telemetry).await;

    let requests = receiver.requests();
    let by_signal = |s: &str| -> Vec<&Value> { requests.iter().filter(|r| r["signal"] == s).collect() };
    assert!(!by_signal("traces").is_empty(), "traces still go to /v1/traces");
    let exports = by_signal("metrics");
    assert!(exports.len() >= 2, "periodic exports and the one at shutdown: {}", exports.len());
    assert!(exports.iter().all(|r| r["status"] == 200), "{}", receiver.log_text());
    for r in &exports {
        assert_eq!(r["resource"]["service.name"], "s:trailwatch-metrics-e2e");
        assert_eq!(r["scope"], format!("trailwatch/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(r["headers"]["x-tenant"], "acme");
        assert_eq!(r["headers"]["content-type"], "application/x-protobuf");
    }
    // The traces' and the metrics' resource are one: one instance id.
    let trace_instance = &by_signal("traces")[0]["resource"]["service.instance.id"];
    assert_eq!(&exports[0]["resource"]["service.instance.id"], trace_instance);

    let last = exports.last().unwrap();
    let input = demo_events();
    assert_eq!(input, 41);
    assert_eq!(summary.eval.events, input);
    // Events processed = the input, in the counters a dashboard reads.
    let events = metric(last, "trailwatch_source_events_total");
    assert_eq!((events["type"].as_str(), events["monotonic"].as_bool()), (Some("sum"), Some(true)));
    assert_eq!(events["temporality"], 2, "cumulative, like Prometheus");
    assert_eq!(sum_of(events), input);
    assert_eq!(events["points"][0]["attributes"]["source"], "s:demo");
    assert_eq!(sum_of(metric(last, "trailwatch_events_total")), input);
    let batches = sum_of(metric(last, "trailwatch_pipeline_batches_total"));
    assert!(batches >= 9, "41 events in batches of 5: {batches}");
    let findings = metric(last, "trailwatch_sink_findings_total");
    let sent: Vec<&Value> =
        findings["points"].as_array().unwrap().iter().filter(|p| p["attributes"]["outcome"] == "s:sent").collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["value"], format!("i:{}", summary.sinks.findings));
    assert!(summary.sinks.findings > 0);
    // A histogram: findings per sink request, bucketed as in Prometheus, adding up to the findings.
    let sizes = metric(last, "trailwatch_sink_batch_size");
    assert_eq!((sizes["type"].as_str(), sizes["temporality"].as_i64()), (Some("histogram"), Some(2)));
    let p = &sizes["points"][0];
    assert_eq!(p["attributes"]["sink"], "s:out");
    assert!((p["sum"].as_f64().unwrap() - summary.sinks.findings as f64).abs() < 1e-9, "{p}");
    let in_buckets: u64 = p["buckets"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).sum();
    assert!(in_buckets == p["count"].as_u64().unwrap() && in_buckets > 0, "{p}");

    // Every family and series the registry holds, with its value: exported as is.
    let seen = check_against_registry(last, metrics::get());
    assert!(seen > 30, "{seen} series compared");
    let own = metric(last, "trailwatch_otlp_metric_exports_total");
    assert_eq!(sum_of(own), exports.len() as u64 - 1, "the exports before the last one");

    // Cumulative: the same start time in every export, values never go down.
    let mut prev: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut with_records = 0;
    for r in &exports {
        // Not in the exports before the first record was read.
        let Some(m) = r["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "trailwatch_source_records_total")
        else {
            assert_eq!(with_records, 0, "a series vanished");
            continue;
        };
        with_records += 1;
        for p in m["points"].as_array().unwrap() {
            let key = p["attributes"].to_string();
            let v: u64 = p["value"].as_str().unwrap().strip_prefix("i:").unwrap().parse().unwrap();
            let start = p["start"].as_u64().unwrap();
            if let Some((s, before)) = prev.get(&key) {
                assert_eq!(*s, start, "{key}");
                assert!(v >= *before, "{key}: {before} then {v}");
            }
            prev.insert(key, (start, v));
        }
    }
    assert!(with_records >= 1);
}
