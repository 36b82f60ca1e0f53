//! The live target end to end, bounded: a small generated hour goes through a
//! real Kinesis emulator (kinesalite) and a real SQS emulator (moto) into
//! `trailwatch run`, and the report has every event read, findings scored
//! against the ground truth, and end-to-end latency.

use std::process::Command;

use trailwatch_loadtest::runner::Report;
use trailwatch_tests::{trailwatch_bin as trailwatch, Server};

fn live(via: &str, server: &Server, rate: &str) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_trailwatch-loadtest"))
        .args(["run", "--live", via, "--endpoint-url", &server.endpoint])
        .args(["--accounts", "5", "--duration", "1h", "--rate", rate, "--seed", "3"])
        .args(["--scenarios", "root-activity,scan-on-push-disabled,critical-image-scan", "--lookalikes", "none"])
        .args(["--max-seconds", "240", "--no-progress"])
        .arg("--out")
        .arg(&data)
        .arg("--trailwatch")
        .arg(trailwatch())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("trailwatch-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "live run over {via} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("latency ("), "{stdout}");
    eprintln!("{via}:\n{stdout}");
    serde_json::from_str(&std::fs::read_to_string(data.join("run/report.json")).expect("report written")).unwrap()
}

fn check(r: &Report, exactly_once: bool) {
    assert!(r.completed(), "{:?}", r.trailwatch);
    // Every event sent was read by trailwatch, none lost on the way. A
    // Kinesis shard is read once from its checkpoint; SQS standard queues
    // deliver at least once, so an event may be read twice (same finding id).
    if exactly_once {
        assert_eq!(r.throughput.events, r.dataset.events_generated);
    } else {
        assert!(r.throughput.events >= r.dataset.events_generated);
    }
    let l = r.latency.as_ref().expect("latency measured");
    assert!(l.findings_measured > 0 && l.p50_seconds <= l.max_seconds);
    let q = &r.quality;
    assert_eq!(q.scenarios, 3);
    assert!(q.findings > 0 && q.true_positive_findings > 0, "{q:?}");
}

#[test]
fn kinesis_end_to_end_with_latency() {
    let server = Server::kinesalite().expect("kinesalite starts (scripts/test installs it)");
    check(&live("kinesis", &server, "1"), true);
}

#[test]
fn sqs_end_to_end_with_latency() {
    let server = Server::moto().expect("moto starts (scripts/test installs it)");
    // moto scans the queue on every send: keep it shallow.
    check(&live("sqs", &server, "0.25"), false);
}
