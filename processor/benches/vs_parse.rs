//! trailwatch's events/s next to merely parsing the same bytes, in one run.
//!
//! Input: NDJSON CloudTrail records (see `common`), the same bytes for every
//! contender:
//! - `trailwatch`: `replay` over the NDJSON file (read, line split, format
//!   detection, the built-in pack with its correlation windows, ASFF findings
//!   to a sink) — what `trailwatch replay` does, minus process start;
//! - `engine`: the rule engine alone (`Detector::process`: field extraction,
//!   rules, windows) over the same events, already split and classified;
//! - `trailwatch+sigmahq`: `replay` with the 57 SigmaHQ AWS rules added;
//! - `serde_json::Value`: split lines, parse each into a `Value`;
//! - `simd-json`: split lines, copy each into a buffer, parse it into a
//!   borrowed value (its fastest DOM, buffers reused).
//!
//! First a comparison mode: all contenders in turns over the same input
//! (`TRAILWATCH_BENCH_EVENTS`, default 200000), best of
//! `TRAILWATCH_BENCH_ROUNDS` (default 5), printed with the ratios; then the
//! criterion benches (skip them with `TRAILWATCH_BENCH_COMPARE_ONLY=1`). Pin
//! it to one core for per-core figures: run the bench binary under
//! `taskset -c 0`. `TRAILWATCH_BENCH_WRITE=FILE` only writes the input as
//! NDJSON to FILE (for an end-to-end `trailwatch replay` of the same records).
//! `TRAILWATCH_BENCH_INPUT=FILE` compares on that NDJSON file instead (e.g. a
//! day from `trailwatch-loadtest generate --format ndjson`), with
//! `TRAILWATCH_BENCH_CONFIG=FILE` for the pack's placeholders (the dataset's
//! `trailwatch.toml`).

mod common;

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use time::OffsetDateTime;
use trailwatch_processor::config::Config;
use trailwatch_processor::decode::{self, DecodeOptions, Decoded};
use trailwatch_processor::findings::FindingContext;
use trailwatch_processor::replay::{self, ReplayOptions};
use trailwatch_processor::ruleset;
use trailwatch_rules::{Alert, Detector, DetectorConfig, EventClass, RuleSet};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rule_set(with_sigmahq: bool) -> Arc<RuleSet> {
    let cfg = std::env::var_os("TRAILWATCH_BENCH_CONFIG").map(|p| Config::load(Some(Path::new(&p))).unwrap());
    let opts = ruleset::compile_options(&cfg.unwrap_or_default(), true).unwrap();
    let dirs = if with_sigmahq { vec![common::shared().join("sigma/rules")] } else { Vec::new() };
    Arc::new(ruleset::load(&dirs, true, &opts).unwrap().0)
}

fn replay_opts(file: &Path) -> ReplayOptions {
    ReplayOptions {
        inputs: vec![file.to_path_buf()],
        dead_letter: None,
        progress: false,
        decode: DecodeOptions::default(),
        findings: FindingContext::default(),
        now: OffsetDateTime::from_unix_timestamp(1_793_600_000).unwrap(),
        detector: DetectorConfig::default(),
        format: Default::default(),
        archive: Default::default(),
    }
}

/// (events, findings) of one replay. The named wrappers below keep each
/// contender apart in a profile (`valgrind --tool=callgrind`, inclusive
/// instruction counts per function).
fn run_replay(set: &Arc<RuleSet>, opts: &ReplayOptions) -> (u64, u64) {
    let stats = replay::replay(Arc::clone(set), opts, &mut std::io::sink()).unwrap();
    assert_eq!(stats.eval.bad_records, 0);
    (stats.eval.events, stats.eval.findings)
}

// (The black_box keeps the compiler from merging the two identical bodies.)
#[inline(never)]
fn trailwatch_pack(set: &Arc<RuleSet>, opts: &ReplayOptions) -> (u64, u64) {
    black_box("pack");
    run_replay(set, opts)
}

#[inline(never)]
fn trailwatch_pack_and_sigmahq(set: &Arc<RuleSet>, opts: &ReplayOptions) -> (u64, u64) {
    black_box("pack and sigmahq");
    run_replay(set, opts)
}

/// Each event's class and its place in the input, as the decoder finds them
/// (outside the timed part: the engine contender starts from these).
fn classified(bytes: &[u8]) -> Vec<(EventClass, usize, usize)> {
    let base = bytes.as_ptr() as usize;
    let mut out = Vec::new();
    decode::decode(bytes, "bench", &DecodeOptions::default(), &mut |d| {
        if let Decoded::Event(ev) = d {
            let start = ev.json.as_ptr() as usize - base;
            assert!(start + ev.json.len() <= bytes.len(), "an event outside the input");
            out.push((ev.class, start, start + ev.json.len()));
        }
    });
    out
}

#[inline(never)]
fn engine(set: &Arc<RuleSet>, text: &str, events: &[(EventClass, usize, usize)]) -> usize {
    let mut det = Detector::new(Arc::clone(set), DetectorConfig::default());
    let mut scratch = set.scratch();
    let mut alerts: Vec<Alert> = Vec::new();
    for &(class, a, b) in events {
        alerts.clear();
        det.process(class, &text[a..b], 0, &mut scratch, &mut alerts).unwrap();
        black_box(&alerts);
    }
    det.flush(&mut alerts);
    events.len()
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

#[inline(never)]
fn parse_serde(bytes: &[u8]) -> usize {
    let mut n = 0;
    for l in lines(bytes) {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        black_box(&v);
        n += 1;
    }
    n
}

#[inline(never)]
fn parse_simd(bytes: &[u8], buf: &mut Vec<u8>, buffers: &mut simd_json::Buffers) -> usize {
    let mut n = 0;
    for l in lines(bytes) {
        buf.clear();
        buf.extend_from_slice(l);
        let v = simd_json::to_borrowed_value_with_buffers(buf, buffers).unwrap();
        black_box(&v);
        n += 1;
    }
    n
}

fn compare(file: &Path, bytes: &[u8], events: usize) {
    let rounds = env_num("TRAILWATCH_BENCH_ROUNDS", 5).max(1);
    let pack = rule_set(false);
    let full = rule_set(true);
    let opts = replay_opts(file);
    let text = std::str::from_utf8(bytes).expect("UTF-8 input");
    let classes = classified(bytes);
    assert_eq!(classes.len(), events, "every line one event");
    let mut buf = Vec::new();
    let mut buffers = simd_json::Buffers::default();
    let names = [
        "trailwatch replay (pack)",
        "engine only (pack)",
        "trailwatch replay (pack + SigmaHQ)",
        "serde_json::Value",
        "simd-json borrowed",
    ];
    let mut best = [Duration::MAX; 5];
    let mut findings = [0u64; 3];
    for _ in 0..rounds {
        for (i, b) in best.iter_mut().enumerate() {
            let t0 = Instant::now();
            let n = match i {
                0 | 2 => {
                    let (n, f) =
                        if i == 0 { trailwatch_pack(&pack, &opts) } else { trailwatch_pack_and_sigmahq(&full, &opts) };
                    findings[i] = f;
                    n as usize
                }
                1 => engine(&pack, text, &classes),
                3 => parse_serde(bytes),
                _ => parse_simd(bytes, &mut buf, &mut buffers),
            };
            *b = (*b).min(t0.elapsed());
            assert_eq!(n, events, "{}", names[i]);
        }
    }
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    eprintln!(
        "\n{events} events, {:.0} bytes each on average; {} + {} rules; best of {rounds} rounds, one thread:",
        bytes.len() as f64 / events as f64,
        pack.rules().len(),
        pack.correlations().len(),
    );
    for (i, name) in names.iter().enumerate() {
        let extra = if i == 0 || i == 2 { format!("  ({} findings)", findings[i]) } else { String::new() };
        eprintln!(
            "  {name:<36} {:>10.0} events/s {:>8.1} MB/s{extra}",
            rate(best[i]),
            bytes.len() as f64 / best[i].as_secs_f64() / 1e6
        );
    }
    for (i, name) in names.iter().enumerate().take(3) {
        eprintln!(
            "  ratio {name} / serde_json::Value = {:.2}, / simd-json = {:.2}",
            rate(best[i]) / rate(best[3]),
            rate(best[i]) / rate(best[4])
        );
    }
    eprintln!();
}

fn criterion_benches(c: &mut Criterion, file: &Path, bytes: &[u8], events: usize) {
    let pack = rule_set(false);
    let opts = replay_opts(file);
    let mut g = c.benchmark_group("vs_parse");
    g.throughput(Throughput::Elements(events as u64));
    g.sample_size(10);
    g.bench_function("trailwatch_replay_pack", |b| b.iter(|| run_replay(&pack, &opts)));
    g.bench_function("serde_json_value", |b| b.iter(|| parse_serde(bytes)));
    let mut buf = Vec::new();
    let mut buffers = simd_json::Buffers::default();
    g.bench_function("simd_json_borrowed", |b| b.iter(|| parse_simd(bytes, &mut buf, &mut buffers)));
    g.finish();
}

fn main() {
    if let Some(input) = std::env::var_os("TRAILWATCH_BENCH_INPUT") {
        let path = Path::new(&input);
        let bytes = std::fs::read(path).unwrap();
        let events = lines(&bytes).count();
        return compare(path, &bytes, events);
    }
    let events = env_num("TRAILWATCH_BENCH_EVENTS", 200_000);
    let records = common::cloudtrail_records(events, 1000, 9);
    let bytes = common::ndjson(&records);
    drop(records);
    if let Some(path) = std::env::var_os("TRAILWATCH_BENCH_WRITE") {
        std::fs::write(&path, &bytes).unwrap();
        eprintln!("wrote {events} records to {}", Path::new(&path).display());
        return;
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    file.flush().unwrap();
    compare(file.path(), &bytes, events);
    if std::env::var_os("TRAILWATCH_BENCH_COMPARE_ONLY").is_some() {
        return;
    }
    // Criterion on a tenth of the input: enough per iteration, quicker runs.
    let small = events / 10;
    let small_bytes = common::ndjson(&common::cloudtrail_records(small, 1000, 9));
    let mut small_file = tempfile::NamedTempFile::new().unwrap();
    small_file.write_all(&small_bytes).unwrap();
    small_file.flush().unwrap();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, small_file.path(), &small_bytes, small);
    c.final_summary();
}
