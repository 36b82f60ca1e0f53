//! `sigma-rust-harness RULES_DIR EVENTS.ndjson [--per-event]`
//!
//! Loads every detection rule (one YAML document each; correlation documents
//! are skipped: sigma-rust has none) and checks every rule against every
//! event. Prints one JSON object: events, seconds spent parsing events and
//! matching (loading excluded), matches per rule id, rules that failed to
//! load. With `--per-event`, also one `match <rule id> <eventID>` line per
//! match on stderr.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).expect("rules dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: sigma-rust-harness RULES_DIR EVENTS.ndjson [--per-event]");
        std::process::exit(2);
    }
    let per_event = args.iter().any(|a| a == "--per-event");
    let mut files = Vec::new();
    yaml_files(Path::new(&args[1]), &mut files);
    let mut rules = Vec::new();
    let mut failed = Vec::new();
    let mut skipped = 0usize;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("rule file");
        let mut doc = String::new();
        let mut docs = Vec::new();
        for line in text.lines() {
            if line.trim_end() == "---" {
                docs.push(std::mem::take(&mut doc));
            } else {
                doc.push_str(line);
                doc.push('\n');
            }
        }
        docs.push(doc);
        for d in docs.iter().filter(|d| !d.trim().is_empty()) {
            let id = d.lines().find_map(|l| l.strip_prefix("id:")).map(|s| s.trim().to_string()).unwrap_or_default();
            if !d.lines().any(|l| l.starts_with("detection:")) {
                skipped += 1;
                continue;
            }
            match sigma_rust::rule_from_yaml(d) {
                Ok(r) => rules.push((id, r)),
                Err(e) => failed.push(format!("{} ({id}): {e}", f.display())),
            }
        }
    }
    let reader = BufReader::new(std::fs::File::open(&args[2]).expect("events file"));
    let mut counts: BTreeMap<String, u64> = rules.iter().map(|(id, _)| (id.clone(), 0)).collect();
    let mut events = 0u64;
    let mut bad = 0u64;
    let mut spent = std::time::Duration::ZERO;
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for line in reader.lines() {
        let line = line.expect("read events");
        if line.trim().is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let ev = match sigma_rust::event_from_json(&line) {
            Ok(e) => e,
            Err(_) => {
                bad += 1;
                continue;
            }
        };
        events += 1;
        let mut hits: Vec<usize> = Vec::new();
        for (i, (_, r)) in rules.iter().enumerate() {
            if r.is_match(&ev) {
                hits.push(i);
            }
        }
        spent += t0.elapsed();
        for i in hits {
            *counts.get_mut(&rules[i].0).unwrap() += 1;
            if per_event {
                let id = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("eventID").and_then(|x| x.as_str()).map(str::to_string))
                    .unwrap_or_default();
                writeln!(err, "match {} {id}", rules[i].0).unwrap();
            }
        }
    }
    let out = serde_json::json!({
        "engine": "sigma-rust 0.7.0",
        "rules_loaded": rules.len(),
        "correlations_skipped": skipped,
        "rules_failed": failed,
        "events": events,
        "bad_events": bad,
        "seconds": spent.as_secs_f64(),
        "events_per_s": events as f64 / spent.as_secs_f64().max(1e-9),
        "matches": counts,
    });
    println!("{out}");
}
