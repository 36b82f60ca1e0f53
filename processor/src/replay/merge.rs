//! Loading planned files in parallel, and their events back in one order.
//!
//! Workers (plain threads) fetch, gunzip, decode, screen and sort one file
//! each, at most `window` files ahead of the merge; the merge takes them in
//! plan order. Screening runs the detection rules on the worker (pure, per
//! event: [`Detector::screen`]): the merge thread then only moves the
//! watermark for the events that matched nothing (most of them), and
//! evaluates the rest fully (windows, suppressions, findings). Only the merge
//! is sequential (the engine owns its windows).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use trailwatch_rules::{Detector, EventClass, RuleSet, Scratch};

use super::plan::{Input, Planned};
use crate::decode::{self, DecodeOptions, Decoded, Position};

/// One event of a loaded file; its JSON is `arena[start..end]`.
pub(super) struct LoadedEvent {
    /// Event time (`eventTime`, else EventBridge `time`), if it parses.
    pub time_ms: Option<i64>,
    /// The time it is merged at: its own, else the file's name time.
    pub key_ms: i64,
    pub class: EventClass,
    /// Screened on the worker and matched no detection rule (false when it
    /// matched, or was not screened, or did not parse: evaluated fully).
    pub unmatched: bool,
    pub start: usize,
    pub end: usize,
    pub position: Position,
}

/// Everything else a file held.
pub(super) enum Other {
    Bad { position: Position, kind: &'static str, message: String },
    Skipped,
    ObjectRef,
}

/// A decoded file, its events sorted by time (ties in file order).
pub(super) struct Loaded {
    pub origin: String,
    pub partition: u32,
    pub arena: String,
    pub events: Vec<LoadedEvent>,
    pub others: Vec<Other>,
    pub bytes: u64,
}

impl Loaded {
    pub fn json(&self, e: &LoadedEvent) -> &str {
        &self.arena[e.start..e.end]
    }
}

/// Reads the bytes of one input (local file, stdin, S3 object).
pub(super) trait Fetch: Sync {
    fn fetch(&self, input: &Input) -> anyhow::Result<Vec<u8>>;
}

/// The event time the engine will use: `eventTime`, else `time`.
pub(super) fn event_time(json: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Times<'a> {
        #[serde(borrow, rename = "eventTime")]
        event_time: Option<&'a str>,
        #[serde(borrow)]
        time: Option<&'a str>,
    }
    let t: Times<'_> = serde_json::from_str(json).ok()?;
    t.event_time.or(t.time).and_then(trailwatch_rules::detect::parse_rfc3339_ms)
}

/// A worker's rules and scratch for screening.
pub(super) struct Screener<'s> {
    set: &'s RuleSet,
    scratch: Scratch,
    matches: Vec<u32>,
}

impl<'s> Screener<'s> {
    pub fn new(set: &'s RuleSet) -> Self {
        Screener { set, scratch: set.scratch(), matches: Vec::new() }
    }
}

/// Decodes one file, screens its events when `screen` is given, and sorts
/// them (CloudTrail files are unsorted inside).
pub(super) fn load(p: &Planned, bytes: &[u8], opts: &DecodeOptions, mut screen: Option<&mut Screener<'_>>) -> Loaded {
    let origin = p.input.origin();
    let mut arena = String::with_capacity(bytes.len());
    let mut events = Vec::new();
    let mut others = Vec::new();
    let fallback = p.name_time_ms.unwrap_or(i64::MIN);
    decode::decode(bytes, &origin, opts, &mut |item| match item {
        Decoded::Event(ev) => {
            let start = arena.len();
            arena.push_str(ev.json);
            // The engine's own reading of the time (the same fields), so an
            // unmatched event is timed exactly as evaluating it would.
            let (time_ms, unmatched) = match screen.as_deref_mut() {
                Some(s) => match Detector::screen(s.set, ev.class, ev.json, &mut s.scratch, &mut s.matches) {
                    Ok(r) => (r.event_time_ms, !r.matched),
                    Err(_) => (event_time(ev.json), false),
                },
                None => (event_time(ev.json), false),
            };
            events.push(LoadedEvent {
                time_ms,
                key_ms: time_ms.unwrap_or(fallback),
                class: ev.class,
                unmatched,
                start,
                end: arena.len(),
                position: ev.position,
            });
        }
        Decoded::Error(e) => {
            others.push(Other::Bad { position: e.position, kind: e.kind.as_str(), message: e.message })
        }
        Decoded::Skipped { .. } => others.push(Other::Skipped),
        Decoded::ObjectRef(_) => others.push(Other::ObjectRef),
    });
    // Stable: events of the same second keep their order in the file.
    events.sort_by_key(|e| e.key_ms);
    Loaded { origin, partition: p.partition, arena, events, others, bytes: bytes.len() as u64 }
}

struct Shared {
    next: usize,
    consumed: usize,
    stop: bool,
}

struct StopOnDrop<'a> {
    state: &'a Mutex<Shared>,
    cv: &'a Condvar,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.cv.notify_all();
    }
}

/// How far the loaders may run ahead of the merge.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ahead {
    /// Always this many files (even large ones).
    pub min_files: usize,
    /// Never more files than this.
    pub max_files: usize,
    /// Beyond `min_files`, at most this many input bytes (compressed, as
    /// stored) loaded and not yet merged: it bounds memory, while small files
    /// behind a large one keep every loader busy. CloudTrail files of one
    /// archive range from under 1 KB to hundreds of KB; a window of a few files
    /// left a loader idle behind each large file (2 cores: 1.5x one core).
    pub max_bytes: u64,
}

impl Ahead {
    pub fn for_threads(threads: usize) -> Ahead {
        Ahead { min_files: threads * 2 + 2, max_files: 4096, max_bytes: 8 << 20 }
    }
}

/// Loads `files` on `threads` workers, at most `ahead` of the consumer, and
/// hands them to `consume` in order. `consume` returns false to stop early.
/// A fetch error stops the replay with that error.
pub(super) fn for_each_loaded(
    files: &[&Planned],
    threads: usize,
    ahead: Ahead,
    fetch: &dyn Fetch,
    opts: &DecodeOptions,
    screen: Option<&RuleSet>,
    consume: &mut dyn FnMut(usize, Loaded) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let n = files.len();
    // Input bytes before file i: what is ahead of the merge is a difference.
    let mut before = Vec::with_capacity(n + 1);
    before.push(0u64);
    for p in files {
        before.push(before.last().copied().unwrap_or(0) + p.input.size());
    }
    let may_start = |g: &Shared| {
        let files_ahead = g.next - g.consumed;
        files_ahead < ahead.min_files.max(1)
            || (files_ahead < ahead.max_files && before[g.next + 1] - before[g.consumed] <= ahead.max_bytes)
    };
    let state = Mutex::new(Shared { next: 0, consumed: 0, stop: false });
    let cv = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, anyhow::Result<Loaded>)>();
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|s| {
        // If `consume` panics, the scope still joins the loaders: stop them
        // first, or those waiting for the merge to move on would wait forever.
        let _stop = StopOnDrop { state: &state, cv: &cv };
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (state, cv, may_start) = (&state, &cv, &may_start);
            std::thread::Builder::new()
                .name("replay-load".into())
                .spawn_scoped(s, move || {
                    let mut screener = screen.map(Screener::new);
                    loop {
                        let i = {
                            let mut g = state.lock().unwrap_or_else(|e| e.into_inner());
                            loop {
                                if g.stop || g.next >= n {
                                    return;
                                }
                                if may_start(&g) {
                                    break;
                                }
                                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                            }
                            g.next += 1;
                            g.next - 1
                        };
                        let p = files[i];
                        let res = fetch
                            .fetch(&p.input)
                            .map(|bytes| load(p, &bytes, opts, screener.as_mut()))
                            .map_err(|e| e.context(format!("cannot read {}", p.input.origin())));
                        if tx.send((i, res)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning a loader thread");
        }
        drop(tx);
        let mut result = Ok(());
        let mut ready: BTreeMap<usize, anyhow::Result<Loaded>> = BTreeMap::new();
        for i in 0..n {
            let loaded = loop {
                if let Some(r) = ready.remove(&i) {
                    break r;
                }
                match rx.recv() {
                    Ok((j, r)) => {
                        ready.insert(j, r);
                    }
                    Err(_) => break Err(anyhow::anyhow!("the loader threads stopped")),
                }
            };
            lock().consumed = i + 1;
            cv.notify_all();
            match loaded.and_then(|l| consume(i, l)) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        lock().stop = true;
        cv.notify_all();
        result
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Serves NDJSON of one event per file, and notes the furthest file fetched.
    struct Lines {
        furthest: AtomicUsize,
    }

    impl Fetch for Lines {
        fn fetch(&self, input: &Input) -> anyhow::Result<Vec<u8>> {
            let Input::S3 { key, .. } = input else { anyhow::bail!("S3 inputs only") };
            let i: usize = key.parse()?;
            self.furthest.fetch_max(i, Ordering::SeqCst);
            Ok(format!(r#"{{"eventTime":"2026-11-01T00:00:{:02}Z","eventName":"E{i}"}}"#, i % 60).into_bytes())
        }
    }

    fn files(sizes: &[u64]) -> Vec<Planned> {
        let input = |i: usize, size: u64| Input::S3 { bucket: "b".into(), key: i.to_string(), size };
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| Planned { input: input(i, s), partition: 0, name_time_ms: None })
            .collect()
    }

    #[test]
    fn files_come_in_plan_order_and_loaders_stay_within_the_byte_budget() {
        // A large file every 10th, small ones between (as in a CloudTrail archive).
        let sizes: Vec<u64> = (0..300).map(|i| if i % 10 == 0 { 400_000 } else { 2_000 }).collect();
        let planned = files(&sizes);
        let order: Vec<&Planned> = planned.iter().collect();
        let ahead = Ahead { min_files: 3, max_files: 50, max_bytes: 100_000 };
        let fetch = Lines { furthest: AtomicUsize::new(0) };
        let mut seen = Vec::new();
        let mut beyond_min = 0;
        for_each_loaded(&order, 3, ahead, &fetch, &DecodeOptions::default(), None, &mut |i, loaded| {
            assert_eq!(loaded.events.len(), 1, "{}", loaded.origin);
            seen.push(i);
            // A merge slower than the loaders, so they run as far ahead as allowed.
            std::thread::sleep(std::time::Duration::from_millis(2));
            // Every file fetched past the first `min_files` ahead fits the budget.
            let furthest = fetch.furthest.load(Ordering::SeqCst);
            // (`consumed` moves to i + 1 before file i is handed on.)
            if furthest > i + ahead.min_files {
                beyond_min += 1;
                let bytes: u64 = sizes[i..=furthest].iter().sum();
                assert!(furthest - i < ahead.max_files, "file {i}: {furthest} fetched");
                assert!(bytes - sizes[i] <= ahead.max_bytes, "file {i}: {bytes} bytes up to file {furthest}");
            }
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        // Small files let the loaders run further ahead than `min_files`.
        assert!(beyond_min > 0, "the loaders never ran past min_files");
    }

    #[test]
    fn a_panic_while_merging_stops_the_loaders_instead_of_hanging() {
        let planned = files(&[1_000; 64]);
        let order: Vec<&Planned> = planned.iter().collect();
        let fetch = Lines { furthest: AtomicUsize::new(0) };
        let ahead = Ahead { min_files: 2, max_files: 4, max_bytes: 0 };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for_each_loaded(&order, 2, ahead, &fetch, &DecodeOptions::default(), None, &mut |i, _| {
                assert!(i < 5, "merge fails at file {i}");
                Ok(true)
            })
        }));
        assert!(r.is_err(), "the panic reaches the caller");
        assert!(fetch.furthest.load(Ordering::SeqCst) < 64, "the loaders stopped early");
    }
}
