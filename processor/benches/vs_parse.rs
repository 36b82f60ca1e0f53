//! trailwatch's events/s next to merely parsing the same bytes, in one run.
//!
//! Input: NDJSON CloudTrail records (see `common`), the same bytes for every
//! contender:
//! - `trailwatch`: `replay` over the NDJSON file (read, line split, format
//!   detection, the built-in pack with its correlation windows, ASFF findings
//!   to a sink) — what `trailwatch replay` does, minus process start;
//! - `trailwatch+sigmahq`: the same with the 57 SigmaHQ AWS rules added;
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

mod common;

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use time::OffsetDateTime;
use trailwatch_processor::decode::DecodeOptions;
use trailwatch_processor::findings::FindingContext;
use trailwatch_processor::replay::{self, ReplayOptions};
use trailwatch_processor::ruleset;
use trailwatch_rules::{DetectorConfig, RuleSet};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rule_set(with_sigmahq: bool) -> Arc<RuleSet> {
    let opts = ruleset::compile_options(&Default::default(), true).unwrap();
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
    }
}

/// (events, findings) of one replay. The named wrappers below keep each
/// contender apart in a profile (`valgrind --tool=callgrind`, inclusive
/// instruction counts per function).
fn run_replay(set: &Arc<RuleSet>, opts: &ReplayOptions) -> (u64, u64) {
    let stats = replay::replay(Arc::clone(set), opts, &mut std::io::sink()).unwrap();
    assert_eq!(stats.bad_records, 0);
    (stats.events, stats.findings)
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
    let mut buf = Vec::new();
    let mut buffers = simd_json::Buffers::default();
    let names = ["trailwatch (pack)", "trailwatch (pack + 57 SigmaHQ)", "serde_json::Value", "simd-json borrowed"];
    let mut best = [Duration::MAX; 4];
    let mut findings = [0u64; 2];
    for _ in 0..rounds {
        for (i, b) in best.iter_mut().enumerate() {
            let t0 = Instant::now();
            let n = match i {
                0 | 1 => {
                    let (n, f) =
                        if i == 0 { trailwatch_pack(&pack, &opts) } else { trailwatch_pack_and_sigmahq(&full, &opts) };
                    findings[i] = f;
                    n as usize
                }
                2 => parse_serde(bytes),
                _ => parse_simd(bytes, &mut buf, &mut buffers),
            };
            *b = (*b).min(t0.elapsed());
            assert_eq!(n, events, "{}", names[i]);
        }
    }
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    eprintln!(
        "\n{events} CloudTrail records, {:.0} bytes each on average; best of {rounds} rounds, one thread:",
        bytes.len() as f64 / events as f64
    );
    for (i, name) in names.iter().enumerate() {
        let extra = if i < 2 { format!("  ({} findings)", findings[i]) } else { String::new() };
        eprintln!(
            "  {name:<32} {:>10.0} events/s {:>8.1} MB/s{extra}",
            rate(best[i]),
            bytes.len() as f64 / best[i].as_secs_f64() / 1e6
        );
    }
    for (i, name) in names.iter().enumerate().take(2) {
        eprintln!(
            "  ratio {name} / serde_json::Value = {:.2}, / simd-json = {:.2}",
            rate(best[i]) / rate(best[2]),
            rate(best[i]) / rate(best[3])
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
