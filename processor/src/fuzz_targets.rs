//! Entry points for fuzzing hostile input: the cargo-fuzz targets in `fuzz/`
//! call the same property checks (`decode::fuzz`, `trailwatch_rules::fuzz`,
//! [`config_text`]), and the normal test suite replays the committed corpus
//! and every crash found through these (`processor/tests/fuzz_corpus.rs`).
//! Each takes arbitrary bytes and panics only when a property is broken (a
//! panic inside is the bug being hunted).

use std::sync::{Arc, OnceLock};

use time::OffsetDateTime;
use trailwatch_rules::{DetectorConfig, RuleSet};

use crate::decode::{self, Decoded};
use crate::evaluate::{Emitted, Evaluator, EventRef};
use crate::findings::FindingContext;

/// One fuzz entry point: arbitrary bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by name (the `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` names).
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", decode_input),
    ("json_scan", trailwatch_rules::fuzz::json_scan),
    ("sigma_rule", trailwatch_rules::fuzz::sigma_rule),
    ("condition", trailwatch_rules::fuzz::condition_text),
    ("config", config_text),
];

/// The built-in pack, compiled once per process.
fn pack() -> &'static Arc<RuleSet> {
    static PACK: OnceLock<Arc<RuleSet>> = OnceLock::new();
    PACK.get_or_init(|| {
        let opts = crate::ruleset::test_options().expect("pack placeholders");
        let (set, _) = crate::ruleset::compile(&crate::ruleset::builtin_files(), &opts).expect("the built-in pack");
        Arc::new(set)
    })
}

fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-01-01 00:00 UTC)
}

/// Arbitrary bytes as one unit of input (any envelope, gzip or not): the
/// decoder's property ([`decode::fuzz::check`]), then every item through the
/// rules, windows and findings of the whole pack, as `replay` does. Every
/// item is counted and every bad record dead-lettered.
pub fn decode_input(data: &[u8]) {
    let mut eval = Evaluator::new(Arc::clone(pack()), DetectorConfig::default(), FindingContext::default());
    let (mut items, mut errors, mut dead_letters) = (0u64, 0u64, 0u64);
    let mut emit = |e: Emitted| dead_letters += matches!(e, Emitted::DeadLetter(_)) as u64;
    decode::fuzz::check(data, &mut |item| {
        items += 1;
        match item {
            Decoded::Event(ev) => {
                trailwatch_rules::fuzz::eval_event(ev.class, ev.json);
                let r = EventRef {
                    class: ev.class,
                    json: ev.json,
                    origin: "fuzz",
                    position: &ev.position,
                    ingest_ms: None,
                };
                eval.event(r, now(), &mut emit);
            }
            Decoded::Error(e) => {
                errors += 1;
                eval.bad_record("fuzz", &e.position, e.kind.as_str(), &e.message, None, &mut emit)
            }
            Decoded::Skipped { .. } => eval.skipped(1),
            Decoded::ObjectRef(_) => eval.object_ref(),
        }
    });
    eval.flush(now(), &mut emit);
    let stats = eval.stats();
    assert_eq!(stats.events + errors + stats.skipped + stats.object_refs, items, "an item was not counted");
    assert!(stats.bad_records >= errors && dead_letters == stats.bad_records, "a bad record was not dead-lettered");
}

/// Arbitrary text as the processor's TOML configuration (parse, types,
/// validation), as `trailwatch run --config` reads it (without the
/// environment overrides).
pub fn config_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = crate::config::Config::from_toml_str(&text) {
        let _ = crate::ruleset::compile_options(&cfg, cfg.rules.builtin);
        let _ = toml::to_string(&cfg);
    }
}
