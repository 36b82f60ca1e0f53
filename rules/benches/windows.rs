// A counting global allocator needs `unsafe impl GlobalAlloc`; this bench only.
#![allow(unsafe_code)]

//! Correlation windows: events/s through an event_count window, and bytes of
//! state per active group key at one million keys (counted by a global
//! allocator that tracks live bytes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trailwatch_rules::{CompileOptions, Detector, DetectorConfig, EventClass, RuleFile, RuleSet};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
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
"#;

fn event(i: u64, principals: u64) -> String {
    let p = i % principals;
    format!(
        r#"{{"eventVersion":"1.08","eventSource":"ecr.amazonaws.com","eventName":"GetDownloadUrlForLayer","eventTime":"2026-11-01T10:{:02}:{:02}Z","eventID":"{i:032x}","userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/app-{p}/session"}},"requestParameters":{{"repositoryName":"shop/web"}}}}"#,
        (i / 60) % 60,
        i % 60
    )
}

fn set() -> Arc<RuleSet> {
    Arc::new(
        RuleSet::load(&[RuleFile { name: "b.yml".into(), text: RULES.into() }], &CompileOptions::default()).unwrap().0,
    )
}

fn bytes_per_key(keys: u64) -> f64 {
    let set = set();
    let events: Vec<String> = (0..keys).map(|i| event(i, keys)).collect();
    let mut scratch = set.scratch();
    let mut out = Vec::new();
    let cfg =
        DetectorConfig { max_keys: keys as usize + 1, allowed_lateness_ms: i64::MAX / 4, ..DetectorConfig::default() };
    let before = LIVE.load(Ordering::Relaxed);
    let mut det = Detector::new(set.clone(), cfg);
    for e in &events {
        det.process(EventClass::CloudTrail, e, 0, &mut scratch, &mut out).unwrap();
    }
    let after = LIVE.load(Ordering::Relaxed);
    let held = det.stats().keys;
    assert_eq!(held, keys);
    let per_key = (after - before) as f64 / held as f64;
    drop(det);
    per_key
}

fn bench(c: &mut Criterion) {
    for keys in [10_000u64, 1_000_000] {
        eprintln!(
            "window state: {:.0} bytes per active key at {keys} keys (group value = 60-byte ARN)",
            bytes_per_key(keys)
        );
    }
    let set = set();
    let events: Vec<String> = (0..100_000).map(|i| event(i, 500)).collect();
    let mut g = c.benchmark_group("windows");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("event_count_500_principals", |b| {
        b.iter(|| {
            let mut det = Detector::new(set.clone(), DetectorConfig::default());
            let mut scratch = set.scratch();
            let mut out = Vec::new();
            for e in &events {
                det.process(EventClass::CloudTrail, e, 0, &mut scratch, &mut out).unwrap();
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
