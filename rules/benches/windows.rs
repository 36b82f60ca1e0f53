// A counting global allocator needs `unsafe impl GlobalAlloc`; this bench only.
#![allow(unsafe_code)]

//! Correlation windows: events/s through an event_count window, and bytes of
//! state per active group key at 10k and one million keys.
//!
//! Bytes are counted by a global allocator that tracks the live bytes
//! requested (not malloc's own per-allocation overhead; the live allocation
//! count is printed next to it). Every key holds one event with a 60-byte ARN
//! (57 bytes at 1M keys) as its group value and a CloudTrail (UUID) event id. Counted: everything
//! the detector allocates (index, slab, times, sample ids, values where kept,
//! the close queue); a monotone rule (`gt`) keeps no copy of the group value,
//! a rule decided at window close (`lt`) keeps it, so both are shown.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trailwatch_rules::{CompileOptions, Detector, DetectorConfig, EventClass, RuleFile, RuleSet};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RULES: &str = r#"
title: download
id: d
name: download
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetDownloadUrlForLayer}
  condition: sel
---
title: bulk
id: b
correlation:
  type: event_count
  rules: [download]
  group-by: [userIdentity.arn]
  timespan: 5m
  condition: {gt: 50}
---
title: few
id: f
correlation:
  type: event_count
  rules: [download]
  group-by: [userIdentity.arn]
  timespan: 5m
  condition: {lt: 5}
---
title: repos
id: r
correlation:
  type: value_count
  rules: [download]
  group-by: [userIdentity.arn]
  timespan: 5m
  condition: {gte: 10, field: requestParameters.repositoryName}
"#;

/// Event `i` of a stream of 100 events/s in time order, round-robin over
/// `principals` principals.
fn event(i: u64, principals: u64) -> String {
    let p = i % principals;
    let t = 36_000 + i / 100;
    format!(
        r#"{{"eventVersion":"1.08","eventSource":"ecr.amazonaws.com","eventName":"GetDownloadUrlForLayer","eventTime":"2026-11-{:02}T{:02}:{:02}:{:02}Z","eventID":"{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}","userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/app-{p}/session"}},"requestParameters":{{"repositoryName":"shop/web"}}}}"#,
        1 + t / 86400,
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60,
        i as u32,
        (i >> 32) as u16,
        i % 4096,
        (i * 7) % 4096,
        i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff_ffff
    )
}

/// The rule set with the base rule and the correlations with the given ids.
fn set(corrs: &[&str]) -> Arc<RuleSet> {
    let docs: Vec<&str> = RULES
        .split("\n---\n")
        .filter(|d| d.contains("id: d\n") || corrs.iter().any(|c| d.contains(&format!("id: {c}\n"))))
        .collect();
    let text = docs.join("\n---\n");
    Arc::new(RuleSet::load(&[RuleFile { name: "b.yml".into(), text }], &CompileOptions::default()).unwrap().0)
}

/// (bytes, allocations) per key held by a detector with `keys` active keys,
/// remembering up to `ids` event ids (redeliveries count once; 0: off).
fn per_key(corr: &str, keys: u64, ids: usize) -> (f64, f64) {
    let set = set(&[corr]);
    let events: Vec<String> = (0..keys).map(|i| event(i, keys)).collect();
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let cfg = DetectorConfig {
        max_keys: keys as usize + 1,
        allowed_lateness_ms: i64::MAX / 4,
        max_event_ids: ids,
        ..DetectorConfig::default()
    };
    let (before, allocs_before) = (LIVE.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    let mut det = Detector::new(set.clone(), cfg);
    for e in &events {
        det.process(EventClass::CloudTrail, e, 0, &mut scratch, &mut out).unwrap();
    }
    let (after, allocs_after) = (LIVE.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed));
    let held = det.stats().keys;
    assert_eq!(held, keys);
    assert!(out.is_empty());
    let r = ((after - before) as f64 / held as f64, (allocs_after - allocs_before) as f64 / held as f64);
    drop(det);
    r
}

fn bench(c: &mut Criterion) {
    for (corr, what) in [
        ("b", "event_count gt (monotone, value not kept)"),
        ("f", "event_count lt (decided at close, value kept)"),
        ("r", "value_count gte (monotone, 64-bit value hashes)"),
    ] {
        for keys in [10_000u64, 1_000_000] {
            // One event per key, so each key also holds one remembered id
            // (the lateness here keeps every id): with and without the filter.
            for (ids, filter) in [(0, "no id filter"), (keys as usize, "with the event-id filter")] {
                let (bytes, allocs) = per_key(corr, keys, ids);
                eprintln!(
                    "window state, {what}, {filter}: {bytes:.1} bytes and {allocs:.2} allocations per active key at {keys} keys"
                );
            }
        }
    }
    // 100k events at 100/s over 500 principals: each principal sends ~60
    // events per 5 minutes, so the `gt: 50` window fires now and then.
    let events: Vec<String> = (0..100_000).map(|i| event(i, 500)).collect();
    let run = |set: &Arc<RuleSet>| {
        let mut det = Detector::new(set.clone(), DetectorConfig::default());
        let mut scratch = set.scratch();
        let mut out = Vec::new();
        for e in &events {
            det.process(EventClass::CloudTrail, e, 0, &mut scratch, &mut out).unwrap();
        }
        det.flush(&mut out);
        out.len()
    };
    let mut g = c.benchmark_group("windows");
    g.throughput(Throughput::Elements(events.len() as u64));
    for (name, corrs) in
        [("event_count_500_principals", &["b"][..]), ("three_correlations_500_principals", &["b", "f", "r"])]
    {
        let set = set(corrs);
        eprintln!("{name}: {} alerts per pass", run(&set));
        g.bench_function(name, |b| b.iter(|| black_box(run(&set))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
