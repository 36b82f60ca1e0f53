//! Hot paths of the processor: decoding every input format, and building
//! ASFF findings. (Matching and windows are benched in `rules/benches`.)
//!
//! Input: the same synthetic CloudTrail records as `vs_parse` (see `common`),
//! wrapped the way each source delivers them.

mod common;

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use time::OffsetDateTime;
use trailwatch_processor::decode::{decode, DecodeOptions, Decoded};
use trailwatch_processor::findings::{
    build_finding, build_finding_line, parse_event, CorrelationSummary, FindingContext, FindingInput,
};
use trailwatch_processor::ruleset;
use trailwatch_rules::{EventClass, RuleSet};

const EVENTS: usize = 10_000;

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Events decoded from all units.
fn decode_all(units: &[Vec<u8>]) -> usize {
    let opts = DecodeOptions::default();
    let mut n = 0;
    for u in units {
        decode(u, "bench", &opts, &mut |d| {
            if let Decoded::Event(e) = d {
                black_box(e.json);
                n += 1;
            }
        });
    }
    n
}

fn bench_decode(c: &mut Criterion) {
    let records = common::cloudtrail_records(EVENTS, 1000, 3);
    let parsed: Vec<Value> = records.iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    // CloudTrail log files as delivered to S3: up to a few hundred records, gzip.
    let log_files: Vec<Vec<u8>> =
        parsed.chunks(250).map(|c| gzip(serde_json::to_string(&json!({ "Records": c })).unwrap().as_bytes())).collect();
    let ndjson = vec![common::ndjson(&records)];
    // EventBridge "AWS API Call via CloudTrail", one per line.
    let mut eb = Vec::new();
    let mut rng = common::Rng::new(5);
    for r in &parsed {
        let source = r["eventSource"].as_str().unwrap_or("ec2.amazonaws.com").trim_end_matches(".amazonaws.com");
        let ev = json!({
            "version": "0", "id": rng.uuid(), "detail-type": "AWS API Call via CloudTrail",
            "source": format!("aws.{source}"), "account": r["recipientAccountId"], "time": r["eventTime"],
            "region": r["awsRegion"], "resources": [], "detail": r,
        });
        eb.extend_from_slice(serde_json::to_string(&ev).unwrap().as_bytes());
        eb.push(b'\n');
    }
    let eventbridge = vec![eb];
    // CloudWatch Logs subscription payloads (gzip), 50 log events each.
    let cwl: Vec<Vec<u8>> = records
        .chunks(50)
        .enumerate()
        .map(|(i, c)| {
            let events: Vec<Value> = c
                .iter()
                .enumerate()
                .map(|(j, m)| json!({"id": format!("{:056}", i * 50 + j), "timestamp": 1_793_527_200_000u64 + j as u64, "message": m}))
                .collect();
            let payload = json!({
                "messageType": "DATA_MESSAGE", "owner": "210987654321", "logGroup": "aws-cloudtrail-logs-org",
                "logStream": "210987654321_CloudTrail_us-east-1", "subscriptionFilters": ["trailwatch"], "logEvents": events,
            });
            gzip(serde_json::to_string(&payload).unwrap().as_bytes())
        })
        .collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for (name, units) in [
        ("ndjson", &ndjson),
        ("cloudtrail_log_file_gzip", &log_files),
        ("eventbridge", &eventbridge),
        ("cloudwatch_logs_gzip", &cwl),
    ] {
        assert_eq!(decode_all(units), EVENTS, "{name}");
        g.bench_function(name, |b| b.iter(|| decode_all(units)));
    }
    g.finish();
}

fn pack() -> RuleSet {
    let opts = ruleset::compile_options(&trailwatch_processor::config::Config::default(), true).unwrap();
    ruleset::load(&[], true, &opts).unwrap().0
}

fn bench_asff(c: &mut Criterion) {
    let set = pack();
    let stop = set.rules().iter().find(|r| r.meta.id == "12f63f48-5ff7-486a-a844-d2b7088e5336").expect("pack rule");
    let text = std::fs::read_to_string(
        common::shared().join("samples/stratus-detonations/aws.defense-evasion.cloudtrail-stop.jsonl"),
    )
    .unwrap();
    let line = text.lines().find(|l| l.contains("\"StopLogging\"")).expect("a StopLogging record").to_string();
    let ctx = FindingContext::default();
    let now = OffsetDateTime::from_unix_timestamp(1_793_600_000).unwrap();
    let corr = set.correlations().first().expect("pack correlations");
    let mut g = c.benchmark_group("asff");
    g.throughput(Throughput::Elements(1));
    let id: Option<String> = serde_json::from_str::<Value>(&line).unwrap()["eventID"].as_str().map(str::to_string);
    // What replay does per detection: parse the fields a finding reads,
    // build, serialise (once).
    g.bench_function("detection_parse_build_serialise", |b| {
        b.iter(|| {
            let event = parse_event(&line).unwrap();
            let input = FindingInput {
                rule: &stop.meta,
                class: EventClass::CloudTrail,
                event: &event,
                event_ids: id.clone().into_iter().collect(),
                correlation: None,
                now,
            };
            build_finding_line(&input, &ctx).1
        })
    });
    let event: Value = serde_json::from_str(&line).unwrap();
    let input = FindingInput {
        rule: &stop.meta,
        class: EventClass::CloudTrail,
        event: &event,
        event_ids: id.clone().into_iter().collect(),
        correlation: None,
        now,
    };
    let finding = build_finding(&input, &ctx);
    g.bench_function("detection_parse_whole_event", |b| b.iter(|| serde_json::from_str::<Value>(&line).unwrap()));
    g.bench_function("detection_parse_event", |b| b.iter(|| parse_event(&line).unwrap()));
    g.bench_function("detection_build", |b| b.iter(|| build_finding_line(&input, &ctx)));
    g.bench_function("serialise", |b| b.iter(|| finding.to_json_line()));
    g.bench_function("serialise_serde_json", |b| b.iter(|| serde_json::to_string(&finding).unwrap()));
    let arn = "arn:aws:sts::210987654321:assumed-role/deployer/mallory";
    let doc = json!({"userIdentity": {"arn": arn}, "recipientAccountId": "210987654321", "awsRegion": "eu-west-1"});
    let ids: Vec<String> = (0..10).map(|i| format!("8a8844ff-dc95-4ef5-87d2-d86cc23fed{i:02}")).collect();
    g.bench_function("correlation_build_serialise", |b| {
        b.iter(|| {
            let input = FindingInput {
                rule: &corr.meta,
                class: EventClass::CloudTrail,
                event: &doc,
                event_ids: ids.clone(),
                correlation: Some(CorrelationSummary {
                    count: 51,
                    window_start: now,
                    window_end: now,
                    group: vec![("userIdentity.arn".into(), arn.into())],
                    sample_event_ids: ids.clone(),
                    dedup_key: format!("{}|{arn}|498222", corr.meta.id),
                    timespan_ms: corr.timespan_ms,
                }),
                now,
            };
            build_finding(&input, &ctx).to_json_line()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_asff);
criterion_main!(benches);
