//! Events/s of the full rule set over realistic CloudTrail records, next to
//! the events/s of merely parsing the same bytes into `serde_json::Value`.
//!
//! Rules: the 57 SigmaHQ AWS CloudTrail rules in ../shared/sigma/rules (plus
//! the built-in pack when present). Events: the Stratus Red Team detonation
//! records and ECR API samples in ../shared/samples (real CloudTrail shapes),
//! or `TRAILWATCH_BENCH_EVENTS`: an NDJSON file or a folder of them, e.g. the
//! loadtest's realistic day (`trailwatch-loadtest generate --format ndjson`),
//! whose mix of reads, writes and services is an org's, not an attack's.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trailwatch_rules::{CompileOptions, EventClass, RuleFile, RuleSet};

fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    assert!(p.join("sigma/rules").is_dir(), "bench needs ../shared next to the repository ({})", p.display());
    p
}

fn rule_files() -> Vec<RuleFile> {
    let mut files = Vec::new();
    for dir in [shared().join("sigma/rules"), Path::new(env!("CARGO_MANIFEST_DIR")).join("pack")] {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yml") {
                    files.push(RuleFile { name: p.display().to_string(), text: std::fs::read_to_string(&p).unwrap() });
                }
            }
        }
    }
    files
}

fn events() -> Vec<String> {
    if let Some(p) = std::env::var_os("TRAILWATCH_BENCH_EVENTS") {
        return ndjson(Path::new(&p));
    }
    let mut out = Vec::new();
    let root = shared().join("samples");
    for dir in ["stratus-detonations", "ecr"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if dir == "ecr" && !name.starts_with("cloudtrail") {
                continue;
            }
            if p.extension().is_some_and(|x| x == "jsonl") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    if !line.trim().is_empty() {
                        out.push(line.to_string());
                    }
                }
            }
        }
    }
    out
}

/// Lines of an NDJSON file, or of every `.ndjson` file in a folder (sorted);
/// at most 300k, to bound memory.
fn ndjson(p: &Path) -> Vec<String> {
    let mut files = vec![p.to_path_buf()];
    if p.is_dir() {
        files = std::fs::read_dir(p).unwrap().flatten().map(|e| e.path()).collect();
        files.retain(|f| f.extension().is_some_and(|x| x == "ndjson"));
        files.sort();
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    out.truncate(300_000);
    out
}

fn bench(c: &mut Criterion) {
    let (set, _) = RuleSet::load(&rule_files(), &CompileOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let events = events();
    let bytes: usize = events.iter().map(|e| e.len()).sum();
    eprintln!(
        "{} rules, {} fields read, {} events, {:.0} bytes/event on average",
        set.rules().len(),
        set.fields().len(),
        events.len(),
        bytes as f64 / events.len() as f64
    );
    if std::env::var_os("TRAILWATCH_BENCH_STATS").is_some() {
        stats(&set, &events);
    }
    if let Some(rounds) = std::env::var("TRAILWATCH_BENCH_CPU_ROUNDS").ok().and_then(|r| r.parse().ok()) {
        cpu_rounds(&set, &events, rounds);
        return;
    }
    let mut g = c.benchmark_group("cloudtrail");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("serde_json_value_parse", |b| {
        b.iter(|| {
            for e in &events {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                black_box(v);
            }
        })
    });
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    g.bench_function("full_ruleset_eval", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in &events {
                out.clear();
                set.eval(EventClass::CloudTrail, e, &mut scratch, &mut out).unwrap();
                n += out.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

/// `TRAILWATCH_BENCH_STATS=1`: which rules the events visit most (where to
/// look when the full set slows down).
fn stats(set: &RuleSet, events: &[String]) {
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let mut matches = 0usize;
    for e in events {
        out.clear();
        set.eval(EventClass::CloudTrail, e, &mut scratch, &mut out).unwrap();
        matches += out.len();
    }
    let mut per_rule = Vec::new();
    scratch.drain_evaluations(|r, n| per_rule.push((n, r)));
    per_rule.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = per_rule.iter().map(|(n, _)| n).sum();
    eprintln!(
        "{matches} matches, {:.2} rule evaluations per event; most evaluated:",
        total as f64 / events.len() as f64
    );
    for (n, r) in per_rule.iter().take(25) {
        let rule = set.rule(*r);
        eprintln!("  {n:>9}  {}  keys {:?}", rule.meta.title, rule.index_keys.as_ref().map(|k| k.len()));
    }
}

/// CPU time of this thread, from `/proc/thread-self/schedstat` (Linux):
/// on a shared machine wall time counts the time other processes had the
/// core, CPU time does not.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok().map(Duration::from_nanos)
}

/// `TRAILWATCH_BENCH_CPU_ROUNDS=N`: N alternating rounds of the plain parse
/// and the full rule set over every event, in events per CPU second (per
/// core) of this thread; prints the median of each and their ratio, then
/// skips criterion.
fn cpu_rounds(set: &RuleSet, events: &[String], rounds: usize) {
    let Some(_) = thread_cpu() else {
        eprintln!("TRAILWATCH_BENCH_CPU_ROUNDS: no /proc/thread-self/schedstat here, skipped");
        return;
    };
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let (mut parse, mut eval) = (Vec::new(), Vec::new());
    let rate = |d: Duration| events.len() as f64 / d.as_secs_f64();
    for _ in 0..rounds {
        let t = thread_cpu().unwrap_or_default();
        for e in events {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            black_box(v);
        }
        parse.push(rate(thread_cpu().unwrap_or_default() - t));
        let t = thread_cpu().unwrap_or_default();
        let mut n = 0usize;
        for e in events {
            out.clear();
            set.eval(EventClass::CloudTrail, e, &mut scratch, &mut out).unwrap();
            n += out.len();
        }
        black_box(n);
        eval.push(rate(thread_cpu().unwrap_or_default() - t));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, e) = (median(&mut parse), median(&mut eval));
    eprintln!(
        "events per CPU second, median of {rounds} rounds: serde_json_value_parse {:.0}k, full_ruleset_eval {:.0}k ({:.2}x the parse)",
        p / 1e3,
        e / 1e3,
        e / p
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
