//! OTLP trace export end to end: the embedded default configuration (demo
//! events through the built-in pack) runs in-process with trace export on,
//! against `tests/otlp_receiver.py`, which decodes every request with the
//! official `opentelemetry-proto` classes. The receiver answers the first
//! two requests with 503 and reports one rejected span in its first 200.
//!
//! One test per process: the exporter is the process-wide tracing subscriber.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use trailwatch_processor::config::{Config, EMBEDDED_DEFAULT};
use trailwatch_processor::service::RunOptions;
use trailwatch_processor::telemetry::{ExportReport, Telemetry};
use trailwatch_processor::{metrics, ruleset};
use trailwatch_tests::{run_then_flush, OtlpReceiver, ReceiverOptions};

fn config(dir: &Path, endpoint: &str) -> Config {
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let mut v: toml::Value = toml::from_str(EMBEDDED_DEFAULT).unwrap();
    let root = v.as_table_mut().unwrap();
    let demo = root["sources"]["demo"].as_table_mut().unwrap();
    demo.insert("paths".into(), toml::Value::Array(vec![events.display().to_string().into()]));
    // Several batches, so a trace per batch can be told apart.
    demo.insert("batch_events".into(), 5.into());
    let sink = root["sinks"]["stdout"].as_table_mut().unwrap();
    sink.insert("path".into(), dir.join("findings.ndjson").display().to_string().into());
    root["metrics"].as_table_mut().unwrap().insert("enabled".into(), false.into());
    let telemetry: toml::Table = toml::from_str(&format!(
        r#"
        otlp_endpoint = "{endpoint}"
        otlp_timeout = "5s"
        # Small requests during the run; a long interval, so whatever is left
        # at the end goes out only with the shutdown flush.
        trace_batch_size = 4
        trace_export_interval = "60s"
        # What the CloudFormation stack sets for X-Ray (the default, random,
        # is what tests/otlp_https.rs exports).
        trace_id_format = "xray"
        "#
    ))
    .unwrap();
    root.insert("telemetry".into(), telemetry.into());
    let cfg: Config = v.try_into().unwrap();
    cfg.validate().unwrap();
    cfg
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// `i:42` → 42 (the receiver keeps the OTLP value type in front).
fn int(v: &Value) -> i64 {
    s(v).strip_prefix("i:").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not an int attribute: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_spans_reach_a_real_otlp_decoder_linked_retried_and_flushed_at_shutdown() {
    let receiver = OtlpReceiver::start(&ReceiverOptions { fail_first: 2, reject: 1, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &receiver.endpoint);

    // The standard variables, read by the OpenTelemetry SDK, fill in what
    // the config leaves unset (set before the exporter exists; one test per process).
    for (k, v) in [
        ("OTEL_SERVICE_NAME", "trailwatch-e2e"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        // Ignored: the config's endpoint wins.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
    ] {
        std::env::set_var(k, v);
    }
    let telemetry = Telemetry::init(&cfg.telemetry, "warn").unwrap();
    assert!(telemetry.exports_traces());

    let opts = ruleset::compile_options(&cfg, true).unwrap();
    let (set, _) = ruleset::load(&[], true, &opts).unwrap();
    let run_opts = RunOptions { dead_letter: Some(dir.path().join("dead.ndjson")), ..Default::default() };
    let unix_now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let started = unix_now();
    // The file source is finite: the run ends by itself, then the flush.
    let (summary, report) = run_then_flush(cfg, set, run_opts, telemetry, Duration::from_secs(30)).await;

    let ended = unix_now();
    let requests = receiver.requests();
    let statuses: Vec<i64> = requests.iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(&statuses[..2], &[503, 503], "{statuses:?}\n{}", receiver.log_text());
    assert!(statuses[2..].iter().all(|s| *s == 200), "every retried request was then accepted: {statuses:?}");
    let m = metrics::get();
    assert_eq!(m.otlp_export_retries.with_label_values(&["retryable"]).get(), 2, "the two 503 answers");

    // Nothing lost, nothing twice: every span the layer queued was decoded
    // once (the rejected one too: the receiver saw it and said no).
    let accepted: Vec<&Value> = requests.iter().filter(|r| r["status"] == 200).collect();
    let spans: Vec<&Value> = accepted.iter().flat_map(|r| r["spans"].as_array().unwrap()).collect();
    let ids: BTreeSet<&str> = spans.iter().map(|sp| s(&sp["span_id"])).collect();
    assert_eq!(ids.len(), spans.len(), "a span arrived twice");
    assert_eq!(report, ExportReport { sent: spans.len() as u64 - 1, rejected: 1, failed: 0, dropped: 0 });
    assert_eq!(m.otlp_spans_dropped.with_label_values(&["queue_full"]).get(), 0);
    assert_eq!(m.otlp_spans_exported.with_label_values(&["sent"]).get(), report.sent);
    assert_eq!(m.otlp_spans_exported.with_label_values(&["rejected"]).get(), 1);
    assert!(accepted.iter().all(|r| r["spans"].as_array().unwrap().len() <= 4), "trace_batch_size holds");

    // What every request says about who sent it.
    for r in &accepted {
        let res = &r["resource"];
        assert_eq!(res["service.name"], "s:trailwatch-e2e");
        assert_eq!(res["service.version"], format!("s:{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(res["deployment.environment"], "s:test");
        assert!(s(&res["service.instance.id"]).len() == 2 + 36, "{res}");
        assert_eq!(r["scope"], format!("trailwatch/{}", env!("CARGO_PKG_VERSION")));
        let h = &r["headers"];
        assert_eq!(h["authorization"], "Bearer t0ken");
        assert_eq!(h["content-encoding"], "gzip");
        assert!(s(&h["user-agent"]).starts_with("trailwatch/"), "{h}");
    }
    let instances: BTreeSet<&str> = accepted.iter().map(|r| s(&r["resource"]["service.instance.id"])).collect();
    assert_eq!(instances.len(), 1, "one instance id per process");

    let by_name = |n: &str| -> Vec<&Value> { spans.iter().copied().filter(|sp| sp["name"] == n).collect() };
    let by_id: BTreeMap<&str, &Value> = spans.iter().map(|sp| (s(&sp["span_id"]), *sp)).collect();
    let parent_of = |sp: &Value| by_id.get(s(&sp["parent_span_id"])).copied();

    // One trace per source batch: source_batch → detector_batch → sink_send.
    let sources = by_name("source_batch");
    let detectors = by_name("detector_batch");
    let batches = m.pipeline_batches.get() as usize;
    assert!(batches >= 8, "41 demo events in batches of 5: {batches}");
    assert_eq!((sources.len(), detectors.len()), (batches, batches));
    let events: i64 = sources.iter().map(|sp| int(&sp["attributes"]["events"])).sum();
    assert_eq!(events as u64, summary.eval.events);
    for sp in &sources {
        assert_eq!(sp["parent_span_id"], "", "a batch's source span is its trace's root");
        assert_eq!(sp["attributes"]["source"], "s:demo");
        assert!(int(&sp["attributes"]["records"]) >= 0 && int(&sp["attributes"]["bytes"]) >= 0);
        assert!(sp["start"].as_u64().unwrap() <= sp["end"].as_u64().unwrap());
        assert_eq!((sp["kind"].as_i64(), sp["flags"].as_i64()), (Some(1), Some(0x101)));
    }
    let mut traces = BTreeSet::new();
    for d in &detectors {
        let src = parent_of(d).expect("detector_batch has its source_batch as parent");
        assert_eq!(src["name"], "source_batch");
        assert_eq!(d["trace_id"], src["trace_id"]);
        assert_eq!(d["attributes"]["events"], src["attributes"]["events"]);
        assert!(d["start"].as_u64() >= src["end"].as_u64(), "detection follows the read");
        traces.insert(s(&d["trace_id"]));
    }
    assert_eq!(traces.len(), batches, "a trace per batch");
    // X-Ray ids: 8 hex digits of Unix seconds (when the trace started), then 24 random ones.
    for sp in &spans {
        let id = s(&sp["trace_id"]);
        let secs = u64::from_str_radix(&id[..8], 16).unwrap();
        assert!((started..=ended).contains(&secs), "trace id {id} does not start with the run's time");
    }
    let sends = by_name("sink_send");
    let with_findings = detectors.iter().filter(|d| int(&d["attributes"]["findings"]) > 0).count();
    assert!(with_findings > 0, "the demo events produce findings");
    // Findings of windows closed by time (not by a batch) start traces of their own.
    let (linked, by_time): (Vec<&Value>, Vec<&Value>) = sends.iter().partition(|sp| sp["parent_span_id"] != "");
    assert_eq!(linked.len(), with_findings, "one send per batch with findings (one sink, no retry)");
    assert!(by_time.iter().all(|sp| int(&sp["attributes"]["findings"]) > 0));
    for snd in &linked {
        let det = parent_of(snd).expect("sink_send has its detector_batch as parent");
        assert_eq!(det["name"], "detector_batch");
        assert_eq!(snd["trace_id"], det["trace_id"]);
        assert_eq!(snd["attributes"]["sink"], "s:stdout");
        assert_eq!(int(&snd["attributes"]["findings"]), int(&det["attributes"]["findings"]));
        assert_eq!(snd["status"]["code"], 0);
    }
    let found: i64 = sends.iter().map(|sp| int(&sp["attributes"]["findings"])).sum();
    assert_eq!(found as u64, summary.sinks.findings);

    // The final commit closed last of all: it came with the shutdown flush.
    let commits = by_name("commit");
    let last: Vec<&&Value> = commits.iter().filter(|c| c["attributes"]["last"] == "b:True").collect();
    assert_eq!(last.len(), 1, "{commits:?}");
    for f in by_name("sink_flush") {
        assert_eq!(parent_of(f).map(|p| &p["name"]), Some(&Value::from("commit")), "sink_flush runs inside a commit");
    }
    let names: BTreeSet<&str> = spans.iter().map(|sp| s(&sp["name"])).collect();
    assert_eq!(
        names,
        ["commit", "detector_batch", "sink_flush", "sink_send", "source_batch"].into_iter().collect(),
        "only the pipeline's spans pass the default trace_filter"
    );
}
