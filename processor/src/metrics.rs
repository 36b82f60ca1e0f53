//! Prometheus metrics: every metric trailwatch exports, registered once in
//! one registry, named `trailwatch_<subsystem>_<name>_<unit>` with `_total`
//! counters and base units (seconds, bytes). Labels come from small fixed
//! sets (source and sink names from the config, shard ids, rule ids, decode
//! error kinds, outcomes) — never principals, IPs or event ids.
//!
//! Components take [`get`] once, outside hot loops, and keep label handles
//! (`with_label_values`) they use per batch.

use std::cell::RefCell;
use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Latency buckets from 10 ms to ~1 h: end-to-end latency includes
/// CloudTrail's own ~5 min delivery delay.
const LATENCY_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0];
/// Request latency buckets, 5 ms to 60 s.
const REQUEST_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 10000.0];

pub struct Metrics {
    pub registry: Registry,
    /// Every family above with its type, in registration order: what the
    /// OTLP metrics export (`telemetry::metrics`) reads, so the metrics are
    /// defined here only.
    pub families: Vec<Family>,
    pub build_info: IntGaugeVec,
    // Sources.
    /// Units received (Kinesis records, SQS messages, S3 objects, files).
    pub source_records: IntCounterVec,
    pub source_bytes: IntCounterVec,
    /// Events decoded out of them.
    pub source_events: IntCounterVec,
    pub source_errors: IntCounterVec,
    pub decode_errors: IntCounterVec,
    pub source_skipped: IntCounterVec,
    pub kinesis_behind_latest: GaugeVec,
    /// Shard leases this instance holds (`coordination = "leases"`).
    pub kinesis_leases_held: IntGaugeVec,
    /// 1 for each shard whose lease this instance holds: summed over the
    /// instances, every open shard should be 1.
    pub kinesis_lease_owned: IntGaugeVec,
    /// Lease transitions: taken (free or expired), stolen (for balance),
    /// lost (taken by another instance), released (graceful shutdown).
    pub kinesis_lease_transitions: IntCounterVec,
    /// Re-keying stage (`[rekey]`): rule matches put on the re-keyed stream.
    pub rekey_published: IntCounter,
    /// Re-keyed records not put, by reason (refused: retried; too_large:
    /// dead-lettered) or not usable when read back (invalid: dead-lettered).
    pub rekey_failed: IntCounterVec,
    /// Re-keyed records read back and evaluated by their correlation.
    pub rekey_received: IntCounter,
    pub sqs_oldest_message_age: GaugeVec,
    pub sqs_messages_poison: IntCounterVec,
    // Rules.
    pub events_by_logsource: IntCounterVec,
    pub rule_evaluations: IntCounterVec,
    pub rule_matches: IntCounterVec,
    pub suppressed: IntCounter,
    pub findings_invalid: IntCounter,
    /// Rules left out of this run because they do not compile.
    pub rules_skipped: IntGauge,
    // Windows.
    pub window_keys: IntGauge,
    pub window_evictions: IntCounter,
    pub window_late_events: IntCounter,
    /// Late drops by source and partition, bounded labels (service/late.rs).
    pub window_partition_late_events: IntCounterVec,
    pub window_duplicate_events: IntCounter,
    pub window_future_events: IntCounter,
    pub window_missing_group_key: IntCounter,
    pub window_watermark: Gauge,
    pub baseline_entries: IntGauge,
    pub baseline_evictions: IntCounter,
    // Sinks.
    pub sink_findings: IntCounterVec,
    pub sink_request_duration: HistogramVec,
    pub sink_batch_size: HistogramVec,
    pub sink_retries: IntCounterVec,
    pub sink_spool_bytes: IntGaugeVec,
    pub sink_spool_findings: IntGaugeVec,
    pub securityhub_routes_parked: IntGaugeVec,
    pub security_lake_files: IntCounterVec,
    pub security_lake_rows: IntCounterVec,
    pub security_lake_bytes: IntCounterVec,
    pub security_lake_upload_errors: IntCounterVec,
    pub dead_letters: IntCounter,
    // End to end.
    pub event_to_finding: Histogram,
    pub ingest_to_finding: Histogram,
    // Pipeline and checkpoints.
    pub pipeline_batches: IntCounter,
    pub pipeline_queue_depth: IntGaugeVec,
    pub checkpoint_commits: IntCounterVec,
    pub checkpoint_last_success: Gauge,
    pub checkpoint_commit_duration: Histogram,
    pub up: IntGauge,
    pub ready: IntGauge,
    // Trace export (OTLP).
    pub otlp_spans_exported: IntCounterVec,
    pub otlp_spans_dropped: IntCounterVec,
    pub otlp_export_retries: IntCounterVec,
    pub otlp_metric_exports: IntCounterVec,
    // Faults and progress (panics caught per record, stalled readers and stages).
    pub record_panics: IntCounterVec,
    pub source_partition_stalled: IntGaugeVec,
    pub pipeline_stage_stalled: IntGaugeVec,
    // Responses.
    pub response_actions: IntCounterVec,
    pub response_writebacks: IntCounterVec,
}

/// A registered metric family and its Prometheus type.
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// The family itself (a clone of the handle the components use).
    pub collector: Box<dyn Collector>,
}

/// The Prometheus type of a [`Family`] (and of its values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// An integer counter.
    Counter,
    IntGauge,
    Gauge,
    /// A histogram with these bucket upper bounds (`+Inf` implied).
    Histogram(&'static [f64]),
}

/// The registry being built, and the families registered in it.
struct Defs {
    registry: Registry,
    families: RefCell<Vec<Family>>,
}

impl Defs {
    fn add<C: Collector + Clone + 'static>(&self, c: &C, kind: Kind) {
        self.registry.register(Box::new(c.clone())).expect("metric registered once");
        for d in c.desc() {
            let collector: Box<dyn Collector> = Box::new(c.clone());
            self.families.borrow_mut().push(Family { name: d.fq_name.clone(), help: d.help.clone(), kind, collector });
        }
    }
}

fn counter_vec(r: &Defs, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.add(&c, Kind::Counter);
    c
}

fn counter(r: &Defs, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definition");
    r.add(&c, Kind::Counter);
    c
}

fn gauge_vec(r: &Defs, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.add(&g, Kind::Gauge);
    g
}

fn int_gauge_vec(r: &Defs, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.add(&g, Kind::IntGauge);
    g
}

fn int_gauge(r: &Defs, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definition");
    r.add(&g, Kind::IntGauge);
    g
}

fn gauge(r: &Defs, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("metric definition");
    r.add(&g, Kind::Gauge);
    g
}

fn histogram(r: &Defs, name: &str, help: &str, buckets: &'static [f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("metric definition");
    r.add(&h, Kind::Histogram(buckets));
    h
}

fn histogram_vec(r: &Defs, name: &str, help: &str, labels: &[&str], buckets: &'static [f64]) -> HistogramVec {
    let h =
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("metric definition");
    r.add(&h, Kind::Histogram(buckets));
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Defs { registry: Registry::new(), families: RefCell::new(Vec::new()) };
        let build_info = int_gauge_vec(&r, "trailwatch_build_info", "Build information; always 1.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            build_info,
            source_records: counter_vec(
                &r,
                "trailwatch_source_records_total",
                "Input units received: Kinesis records, SQS messages, S3 objects, files.",
                &["source", "shard"],
            ),
            source_bytes: counter_vec(
                &r,
                "trailwatch_source_bytes_total",
                "Bytes of input received (before decompression).",
                &["source", "shard"],
            ),
            source_events: counter_vec(
                &r,
                "trailwatch_source_events_total",
                "Events decoded from the input.",
                &["source", "shard"],
            ),
            source_errors: counter_vec(
                &r,
                "trailwatch_source_errors_total",
                "Failed source requests (AWS API errors, unreadable objects), by kind.",
                &["source", "kind"],
            ),
            decode_errors: counter_vec(
                &r,
                "trailwatch_decode_errors_total",
                "Malformed records (counted, dead-lettered, skipped), by kind.",
                &["source", "kind"],
            ),
            source_skipped: counter_vec(
                &r,
                "trailwatch_source_skipped_total",
                "Input values skipped on purpose (digest files, control messages, test events).",
                &["source", "reason"],
            ),
            kinesis_behind_latest: gauge_vec(
                &r,
                "trailwatch_kinesis_behind_latest_seconds",
                "Kinesis MillisBehindLatest of the last GetRecords, in seconds.",
                &["source", "shard"],
            ),
            kinesis_leases_held: int_gauge_vec(
                &r,
                "trailwatch_kinesis_leases_held",
                "Shard leases held by this instance.",
                &["source"],
            ),
            kinesis_lease_owned: int_gauge_vec(
                &r,
                "trailwatch_kinesis_lease_owned",
                "1 while this instance holds the shard's lease.",
                &["source", "shard"],
            ),
            kinesis_lease_transitions: counter_vec(
                &r,
                "trailwatch_kinesis_lease_transitions_total",
                "Shard lease changes of this instance, by kind (taken, stolen, lost, released).",
                &["source", "kind"],
            ),
            rekey_published: counter(
                &r,
                "trailwatch_rekey_records_published_total",
                "Rule matches put on the re-keyed stream (PutRecords accepted).",
            ),
            rekey_failed: counter_vec(
                &r,
                "trailwatch_rekey_records_failed_total",
                "Re-keyed records that failed, by reason (refused: PutRecords refused them, retried; too_large: dead-lettered; invalid: unusable when read back, dead-lettered).",
                &["reason"],
            ),
            rekey_received: counter(
                &r,
                "trailwatch_rekey_records_received_total",
                "Re-keyed records read back from the re-keyed stream and evaluated.",
            ),
            sqs_oldest_message_age: gauge_vec(
                &r,
                "trailwatch_sqs_oldest_message_age_seconds",
                "Age of the oldest message in the queue (ApproximateAgeOfOldestMessage or the oldest received).",
                &["source"],
            ),
            sqs_messages_poison: counter_vec(
                &r,
                "trailwatch_sqs_poison_messages_total",
                "SQS messages left for the queue's redrive policy (not deleted), by reason.",
                &["source", "reason"],
            ),
            events_by_logsource: counter_vec(
                &r,
                "trailwatch_events_total",
                "Events evaluated, by log source class.",
                &["logsource"],
            ),
            rule_evaluations: counter_vec(
                &r,
                "trailwatch_rule_evaluations_total",
                "Times a rule's detection was evaluated (after the rule index).",
                &["rule"],
            ),
            rule_matches: counter_vec(
                &r,
                "trailwatch_rule_matches_total",
                "Rule matches that became findings (correlations included).",
                &["rule", "level"],
            ),
            suppressed: counter(&r, "trailwatch_suppressed_matches_total", "Matches dropped by suppressions."),
            findings_invalid: counter(
                &r,
                "trailwatch_findings_invalid_total",
                "Findings that failed ASFF validation: dead-lettered (kind invalid_finding), not emitted.",
            ),
            rules_skipped: int_gauge(
                &r,
                "trailwatch_rules_skipped",
                "Rules left out of this run because they do not compile (file, line and reason in the log).",
            ),
            window_keys: int_gauge(&r, "trailwatch_window_keys", "Correlation group keys held in memory."),
            window_evictions: counter(
                &r,
                "trailwatch_window_evictions_total",
                "Correlation group keys evicted by the max_keys cap.",
            ),
            baseline_entries: int_gauge(
                &r,
                "trailwatch_baseline_entries",
                "Combinations remembered by first_seen rules.",
            ),
            baseline_evictions: counter(
                &r,
                "trailwatch_baseline_evictions_total",
                "Combinations forgotten early by the windows.max_baseline_entries cap.",
            ),
            window_late_events: counter(
                &r,
                "trailwatch_window_late_events_total",
                "Events older than the watermark, dropped from correlation windows.",
            ),
            window_partition_late_events: counter_vec(
                &r,
                "trailwatch_window_partition_late_events_total",
                "Late drops from correlation windows by source and watermark partition (shard, account/region, source); the first 20 partitions of a source with drops are named, later ones count as partition=\"_other\".",
                &["source", "partition"],
            ),
            window_duplicate_events: counter(
                &r,
                "trailwatch_window_duplicate_events_total",
                "Redelivered events (an event id already counted) kept out of correlation windows.",
            ),
            window_future_events: counter(
                &r,
                "trailwatch_window_future_events_total",
                "Events whose time is further ahead of processing time than windows.max_future_skew; they move no watermark.",
            ),
            window_missing_group_key: counter(
                &r,
                "trailwatch_window_missing_group_key_total",
                "Events not counted by a correlation because a group-by field was missing.",
            ),
            window_watermark: gauge(
                &r,
                "trailwatch_window_watermark_seconds",
                "Event-time watermark of the correlation windows (Unix time).",
            ),
            sink_findings: counter_vec(
                &r,
                "trailwatch_sink_findings_total",
                "Findings handled by a sink, by outcome (sent, spooled, failed, dead_lettered).",
                &["sink", "outcome"],
            ),
            security_lake_files: counter_vec(
                &r,
                "trailwatch_security_lake_files_uploaded_total",
                "Parquet files the Security Lake sink uploaded.",
                &["sink"],
            ),
            security_lake_rows: counter_vec(
                &r,
                "trailwatch_security_lake_rows_uploaded_total",
                "OCSF rows (findings and updates) in the Parquet files the Security Lake sink uploaded.",
                &["sink"],
            ),
            security_lake_bytes: counter_vec(
                &r,
                "trailwatch_security_lake_bytes_uploaded_total",
                "Bytes of Parquet the Security Lake sink uploaded.",
                &["sink"],
            ),
            security_lake_upload_errors: counter_vec(
                &r,
                "trailwatch_security_lake_upload_errors_total",
                "Failed uploads of the Security Lake sink (the file stays staged and is retried).",
                &["sink"],
            ),
            sink_request_duration: histogram_vec(
                &r,
                "trailwatch_sink_request_duration_seconds",
                "Duration of sink requests (e.g. BatchImportFindings).",
                &["sink"],
                REQUEST_BUCKETS,
            ),
            sink_batch_size: histogram_vec(
                &r,
                "trailwatch_sink_batch_size",
                "Findings per sink request.",
                &["sink"],
                BATCH_BUCKETS,
            ),
            sink_retries: counter_vec(
                &r,
                "trailwatch_sink_retries_total",
                "Retried sink requests or findings, by reason.",
                &["sink", "reason"],
            ),
            sink_spool_bytes: int_gauge_vec(
                &r,
                "trailwatch_sink_spool_bytes",
                "Bytes of findings waiting in the sink's on-disk spool.",
                &["sink"],
            ),
            sink_spool_findings: int_gauge_vec(
                &r,
                "trailwatch_sink_spool_findings",
                "Findings waiting in the sink's on-disk spool.",
                &["sink"],
            ),
            securityhub_routes_parked: int_gauge_vec(
                &r,
                "trailwatch_securityhub_routes_parked",
                "Security Hub routes (account and region) whose last attempt failed and whose findings wait in their spool.",
                &["sink"],
            ),
            dead_letters: counter(&r, "trailwatch_dead_letters_total", "Records written to the dead-letter file."),
            event_to_finding: histogram(
                &r,
                "trailwatch_event_to_finding_seconds",
                "From event time to the finding accepted by the sinks.",
                LATENCY_BUCKETS,
            ),
            ingest_to_finding: histogram(
                &r,
                "trailwatch_ingest_to_finding_seconds",
                "From the input reaching trailwatch to the finding accepted by the sinks.",
                LATENCY_BUCKETS,
            ),
            pipeline_batches: counter(&r, "trailwatch_pipeline_batches_total", "Source batches evaluated."),
            pipeline_queue_depth: int_gauge_vec(
                &r,
                "trailwatch_pipeline_queue_depth",
                "Messages waiting between pipeline stages.",
                &["stage"],
            ),
            checkpoint_commits: counter_vec(
                &r,
                "trailwatch_checkpoint_commits_total",
                "Commits of checkpoints and window state, by outcome.",
                &["outcome"],
            ),
            checkpoint_last_success: gauge(
                &r,
                "trailwatch_checkpoint_last_success_timestamp_seconds",
                "Unix time of the last successful commit (alert on time() minus this).",
            ),
            checkpoint_commit_duration: histogram(
                &r,
                "trailwatch_checkpoint_commit_duration_seconds",
                "Duration of a commit: sink flush, state write, acknowledgements.",
                REQUEST_BUCKETS,
            ),
            up: int_gauge(&r, "trailwatch_up", "1 while the service runs."),
            ready: int_gauge(&r, "trailwatch_ready", "1 when sources are connected and sinks healthy."),
            otlp_spans_exported: counter_vec(
                &r,
                "trailwatch_otlp_spans_exported_total",
                "Spans sent to the OTLP collector, by outcome (sent, rejected by the collector, failed).",
                &["outcome"],
            ),
            otlp_spans_dropped: counter_vec(
                &r,
                "trailwatch_otlp_spans_dropped_total",
                "Spans dropped before export, by reason (queue_full, shutdown).",
                &["reason"],
            ),
            otlp_export_retries: counter_vec(
                &r,
                "trailwatch_otlp_export_retries_total",
                "OTLP export requests (spans, and metrics when exported) retried, by reason (retryable: a network error, a timeout, HTTP 429/502/503/504 or a retryable gRPC status; throttled: the collector named a delay, in Retry-After or gRPC RetryInfo).",
                &["reason"],
            ),
            otlp_metric_exports: counter_vec(
                &r,
                "trailwatch_otlp_metric_exports_total",
                "OTLP metrics exports (telemetry.otlp_metrics), by outcome (sent, failed).",
                &["outcome"],
            ),
            record_panics: counter_vec(
                &r,
                "trailwatch_record_panics_total",
                "Records whose decoding or evaluation panicked, by stage (decode, evaluate); each is dead-lettered.",
                &["stage"],
            ),
            source_partition_stalled: int_gauge_vec(
                &r,
                "trailwatch_source_partition_stalled",
                "1 while a source partition (Kinesis shard, SQS receiver) has completed no poll within its stall budget.",
                &["source", "partition"],
            ),
            pipeline_stage_stalled: int_gauge_vec(
                &r,
                "trailwatch_pipeline_stage_stalled",
                "1 while a pipeline stage (detector, sinks) has been busy without progress past service.stage_stall_timeout, or is gone.",
                &["stage"],
            ),
            response_actions: counter_vec(
                &r,
                "trailwatch_response_actions_total",
                "Response actions planned for findings, by action, mode and outcome (done, already, dry_run, skipped_*, duplicate, failed).",
                &["action", "mode", "outcome"],
            ),
            response_writebacks: counter_vec(
                &r,
                "trailwatch_response_writebacks_total",
                "Findings whose response outcome was written back with BatchUpdateFindings, by outcome (updated, failed).",
                &["outcome"],
            ),
            families: r.families.into_inner(),
            registry: r.registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = get();
        m.source_events.with_label_values(&["s", "0"]).inc();
        let text = m.render();
        assert!(text.contains("trailwatch_build_info{version="), "{text}");
        for fam in m.registry.gather() {
            let name = fam.name();
            assert!(name.starts_with("trailwatch_"), "{name}");
            let counter = fam.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(counter, name.ends_with("_total"), "{name}: counters and only counters end in _total");
            assert!(!name.contains("millis") && !name.ends_with("_ms"), "{name}: base units");
        }
    }

    /// Every family registered above has a row in README's metrics table
    /// (read from this file's source: unlabelled vecs are not gathered yet).
    #[test]
    fn every_metric_is_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        let src = include_str!("metrics.rs");
        let names: Vec<&str> = src
            .split('"')
            .filter(|s| {
                s.len() > 11 && s.starts_with("trailwatch_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
            .collect();
        assert!(names.len() > 30, "{names:?}");
        for n in names {
            assert!(readme.contains(&format!("| `{n}` |")), "{n} is missing from README's metrics table");
        }
    }
}
