//! The replay pipeline as a library: the demo events through the built-in
//! pack, with a stable, valid set of findings.

use std::path::Path;
use std::sync::Arc;

use trailwatch_processor::config::Config;
use trailwatch_processor::decode::DecodeOptions;
use trailwatch_processor::findings::{self, FindingContext};
use trailwatch_processor::replay::{replay, ReplayOptions};
use trailwatch_processor::ruleset;
use trailwatch_rules::DetectorConfig;

#[test]
fn demo_events_through_the_builtin_pack() -> anyhow::Result<()> {
    let cfg = Config::default();
    let opts = ruleset::compile_options(&cfg.rules, true)?;
    let (set, warnings) = ruleset::load(&[], true, &opts)?;
    assert!(warnings.is_empty(), "{warnings:?}");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let ropts = ReplayOptions {
        inputs: vec![examples],
        dead_letter: None,
        progress: false,
        decode: DecodeOptions::default(),
        findings: FindingContext::default(),
        now: time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
        detector: DetectorConfig::default(),
    };
    let mut out = Vec::new();
    let stats = replay(Arc::new(set), &ropts, &mut out)?;
    assert_eq!(stats.bad_records, 0);
    assert_eq!(stats.events, 41);
    assert_eq!(stats.findings, 4);
    for line in String::from_utf8(out)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(v["SchemaVersion"], "2018-10-08");
        assert!(v["Id"].as_str().is_some_and(|id| id.starts_with("trailwatch/")));
    }
    // Ids do not depend on the run: same rule and event, same id.
    assert_eq!(findings::finding_id("r", "e"), findings::finding_id("r", "e"));
    Ok(())
}
