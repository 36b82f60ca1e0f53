//! The service pipeline without AWS: file source → rules and windows → JSON
//! lines sink, with the file state store. Window state committed by one run
//! is restored by the next, so a burst split across a restart still fires.

use std::path::Path;
use std::time::Duration;

use trailwatch_processor::config::Config;
use trailwatch_processor::service::{self, RunOptions, RunSummary};
use trailwatch_tests::fixtures::{
    assert_window_completed_across_restart, denied_event as event, file_run_toml, read_jsonl, rules, write_lines,
    REPEATED_DENIED_RULES,
};

fn write_events(path: &Path, range: std::ops::Range<u32>) {
    write_lines(path, range.map(|i| event(i, i)));
}

fn config(dir: &Path, input: &Path) -> Config {
    config_with(dir, input, "")
}

/// `config` with more TOML (sections such as `[windows]`) after it.
fn config_with(dir: &Path, input: &Path, extra: &str) -> Config {
    let text = file_run_toml(&dir.join("state"), input, &dir.join("findings.ndjson"), false);
    trailwatch_tests::fixtures::config(&(text + extra))
}

/// Runs until the first commit after the input was read, then shuts down.
async fn run_once(cfg: Config) -> RunSummary {
    trailwatch_tests::fixtures::run_once(cfg, rules(REPEATED_DENIED_RULES)).await
}

fn findings(dir: &Path) -> Vec<serde_json::Value> {
    read_jsonl(&dir.join("findings.ndjson"))
}

#[tokio::test]
async fn windows_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.ndjson");
    let second = dir.path().join("second.ndjson");
    write_events(&first, 0..3);
    write_events(&second, 3..5);

    let s1 = run_once(config(dir.path(), &first)).await;
    assert_eq!(s1.eval.events, 3);
    assert!(findings(dir.path()).is_empty(), "3 denials are not more than 3");
    assert!(dir.path().join("state/state.json").exists());

    let s2 = run_once(config(dir.path(), &second)).await;
    assert_eq!(s2.eval.events, 2);
    assert_window_completed_across_restart(&findings(dir.path()));
}

/// `[[suppressions]]` of the config given to `run` apply: the burst that
/// fires above is silenced for its principal, and only for it.
#[tokio::test]
async fn a_configured_suppression_silences_the_burst() {
    let suppress = |arn: &str| {
        format!("[[suppressions]]\nfield = \"userIdentity.arn\"\nvalues = [\"{arn}\"]\nreason = \"test\"\n")
    };

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 0..5);
    let other = suppress("arn:aws:iam::111122223333:user/alice");
    let s = run_once(config_with(dir.path(), &input, &other)).await;
    assert_eq!(s.eval.detector.suppressed, 0);
    assert_eq!(findings(dir.path()).len(), 1, "another principal's suppression changes nothing");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 0..5);
    let mallory = suppress("arn:aws:iam::111122223333:user/mallory");
    let s = run_once(config_with(dir.path(), &input, &mallory)).await;
    assert_eq!(s.eval.events, 5);
    assert_eq!(s.eval.detector.suppressed, 5, "{:?}", s.eval.detector);
    assert!(findings(dir.path()).is_empty(), "{:?}", findings(dir.path()));
}

/// `windows.allowed_lateness` of the config given to `run` decides whether
/// an out-of-order event still counts: three denials at 10:30-10:32, then
/// one from 10:25 (7 minutes behind the newest).
#[tokio::test]
async fn the_configured_lateness_decides_whether_a_late_event_counts() {
    let run_with = |lateness: &'static str| async move {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("events.ndjson");
        write_lines(&input, [event(0, 30), event(1, 31), event(2, 32), event(3, 25)]);
        let extra = format!("[windows]\nallowed_lateness = \"{lateness}\"\n");
        let s = run_once(config_with(dir.path(), &input, &extra)).await;
        assert_eq!(s.eval.events, 4);
        (s.eval.detector.late_dropped, findings(dir.path()))
    };

    let (late, f) = run_with("10m").await;
    assert_eq!(late, 0);
    assert_eq!(f.len(), 1, "inside the lateness bound the 4th denial counts: {f:?}");
    assert_eq!(f[0]["FirstObservedAt"], "2026-11-01T10:25:00Z");

    let (late, f) = run_with("1m").await;
    assert_eq!(late, 1, "behind the watermark (10:31): dropped from the window");
    assert!(f.is_empty(), "three denials are not more than three: {f:?}");
    // The drop is exported by partition (the file source is one partition,
    // named after it); no other test of this binary drops late events.
    let text = trailwatch_processor::metrics::get().render();
    let line = text
        .lines()
        .find(|l| l.starts_with("trailwatch_window_partition_late_events_total{"))
        .unwrap_or_else(|| panic!("no late-by-partition series in:\n{text}"));
    assert_eq!(line, r#"trailwatch_window_partition_late_events_total{partition="files",source="files"} 1"#);
}

#[tokio::test]
async fn without_the_state_the_second_half_alone_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second.ndjson");
    write_events(&second, 3..5);
    run_once(config(dir.path(), &second)).await;
    assert!(findings(dir.path()).is_empty());
}

#[tokio::test]
async fn bad_records_go_to_the_dead_letter_file_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.ndjson");
    std::fs::write(&input, format!("{}\n{{not json\n{}\n", event(0, 0), event(1, 1))).unwrap();
    let s = run_once(config(dir.path(), &input)).await;
    assert_eq!(s.eval.events, 2);
    assert_eq!(s.eval.bad_records, 1);
    let dead = std::fs::read_to_string(dir.path().join("state/dead-letter.ndjson")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(rec["line"], 2);
    assert_eq!(rec["kind"], "json");
}

/// A sink that cannot keep up (a FIFO nobody reads) stops the reading: the
/// bounded channels hold a few batches, not the whole input.
#[tokio::test]
async fn a_stalled_sink_slows_the_source_down() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.ndjson");
    let n = 20_000u32;
    write_lines(&input, (0..n).map(|i| event(i, i % 60)));
    let fifo = dir.path().join("sink.fifo");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    // Every event matches; a per-event finding of ~2 KB fills the pipe fast.
    let every_denial = r#"
title: every denial
id: 6f1d1b0e-0000-4000-8000-000000000003
level: low
tags: [nist_csf.de.cm-1]
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
"#;
    let set = rules(every_denial);
    let cfg_text = format!(
        r#"
        [service]
        state_dir = "{state}"
        channel_capacity = 1
        [sources.stall_test]
        type = "file"
        paths = ["{input}"]
        batch_events = 10
        [sinks.pipe]
        type = "asff-jsonl"
        path = "{fifo}"
        [checkpoints]
        store = "none"
        [metrics]
        enabled = false
        "#,
        state = dir.path().join("state").display(),
        input = input.display(),
        fifo = fifo.display(),
    );
    let cfg: Config = toml::from_str(&cfg_text).unwrap();
    // Opening a FIFO for writing blocks until a reader opens it: open the
    // read end first, but do not read yet.
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::File::open(reader_path).unwrap());
    let opts = RunOptions::default();
    let run = tokio::spawn(service::run(cfg, set, opts, std::future::pending()));
    let mut pipe = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let read = trailwatch_processor::metrics::get().source_events.with_label_values(&["stall_test", ""]).get();
    assert!(!run.is_finished());
    assert!(read < 2_000, "with the sink stalled only a few batches are read, not {read} of {n}");
    // Drain the pipe: everything flows and nothing is lost.
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(&mut pipe).lines().count()
    });
    let summary = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the run ends").unwrap().unwrap();
    assert_eq!(summary.eval.events, u64::from(n));
    assert_eq!(lines.await.unwrap(), n as usize);
}

/// Redelivery (a Kinesis record read again after a restart, an SQS message
/// that came back): an event delivered three times counts once in a window.
#[tokio::test]
async fn an_event_delivered_three_times_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("repeated.ndjson");
    // Three distinct denials, each delivered three times: not more than 3.
    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.extend((0..3).map(|i| event(i, i)));
    }
    write_lines(&input, lines.clone());
    let s = run_once(config(dir.path(), &input)).await;
    assert_eq!(s.eval.events, 9, "every delivery is evaluated");
    assert_eq!(s.eval.detector.duplicate_events, 6);
    assert!(findings(dir.path()).is_empty(), "{:?}", findings(dir.path()));

    // A fourth distinct denial completes the window, counted 4, not 10.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("repeated.ndjson");
    lines.push(event(3, 3));
    write_lines(&input, lines);
    run_once(config(dir.path(), &input)).await;
    let f = findings(dir.path());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["ProductFields"]["trailwatch/Count"], "4");
}
