//! End to end, bounded: generate a small dataset, replay it through the real
//! `trailwatch` binary via the runner, and check the report. Quality is
//! printed, not asserted: the rule pack is still being written.

use std::process::Command;
use std::time::{Duration, Instant};

use trailwatch_loadtest::output::Format;
use trailwatch_loadtest::runner::{self, replay::ReplayTarget, Limits, Order, Report, RunOptions};

use trailwatch_tests::trailwatch_bin as trailwatch;

#[test]
fn generate_replay_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = trailwatch();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_trailwatch-loadtest"))
        .args([
            "run",
            "--accounts",
            "6",
            "--duration",
            "1h",
            "--rate",
            "6",
            "--seed",
            "7",
            "--max-seconds",
            "300",
            "--no-progress",
        ])
        .arg("--out")
        .arg(&data)
        .arg("--trailwatch")
        .arg(&bin)
        .output()
        .expect("trailwatch-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("throughput:") && stdout.contains("recall"), "{stdout}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(data.join("run/report.json")).expect("report written")).unwrap();
    assert!(report.completed());
    assert_eq!(report.dataset.format, Format::Cloudtrail);
    let attacks = trailwatch_loadtest::scenarios::ATTACKS.len();
    assert_eq!(report.dataset.scenarios as usize, attacks);
    // trailwatch read every generated event.
    assert_eq!(report.throughput.events, report.dataset.events_generated);
    assert!(report.throughput.wall_seconds > 0.0 && report.throughput.cpu_seconds > 0.0);
    assert!(report.throughput.peak_rss_bytes > 1 << 20);
    let q = &report.quality;
    let recall = q.recall.expect("recall is computed when scenarios were injected");
    assert_eq!(q.scenarios as usize, attacks);
    assert_eq!(q.detected.len() + q.missed.len(), attacks);
    assert!((recall - q.detected.len() as f64 / attacks as f64).abs() < 1e-9);
    assert_eq!(q.true_positive_findings + q.false_positive_findings, q.findings);
    assert_eq!(q.by_rule.iter().map(|r| r.findings).sum::<u64>(), q.findings);
    let findings = std::fs::read_to_string(data.join("run/findings.ndjson")).unwrap_or_default();
    assert_eq!(findings.lines().count() as u64, q.findings);
    eprintln!(
        "measured (debug build, {:.1}s in all): {} events, {:.0} events/s, {:.0} events/s per core, peak RSS {} KiB; findings {}, precision {:?}, recall {:.3} ({}/{}); missed: {:?}",
        started.elapsed().as_secs_f64(),
        report.throughput.events,
        report.throughput.events_per_second,
        report.throughput.events_per_cpu_second,
        report.throughput.peak_rss_bytes >> 10,
        q.findings,
        q.precision,
        recall,
        q.scenarios_detected,
        q.scenarios,
        q.missed.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
    );
}

#[test]
fn time_limit_kills_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (opts, fopts) = trailwatch_loadtest::cli::GenArgs {
        seed: 1,
        accounts: 3,
        regions: vec!["us-east-1".into()],
        org_id: None,
        org_variant: Default::default(),
        start: "2026-11-02T00:00:00Z".into(),
        duration: "1h".into(),
        rate: 1.0,
        scenarios: "root-activity".into(),
        lookalikes: "none".into(),
        repeat: 1,
        gzip_level: 1,
        gzip: false,
        org_trail: false,
        shuffle_records: false,
        max_events: 1_000_000,
    }
    .options()
    .unwrap();
    trailwatch_loadtest::dataset::write(&opts, &data, &[Format::Ndjson], fopts, false, false).unwrap();
    // A stand-in for trailwatch that never finishes.
    let fake = dir.path().join("fake-trailwatch");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let mut target = ReplayTarget { binary: fake, config: None, extra_args: vec![] };
    let run = RunOptions {
        dataset: data,
        format: Format::Ndjson,
        order: Order::Time,
        limits: Limits { max_time: Duration::from_millis(500) },
        progress: false,
        examples: true,
        generated_in: None,
    };
    let started = Instant::now();
    let report = runner::run(&run, &mut target).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(report.trailwatch.killed_after_seconds.is_some());
    assert!(!report.completed());
    assert_eq!(report.quality.findings, 0);
    assert_eq!(report.quality.precision, None);
    assert_eq!(report.quality.recall, Some(0.0));
    assert!(report.summary().contains("KILLED"));
}
