//! The replay pipeline as a library: the demo events through the built-in
//! pack, with a stable, valid set of findings.

use std::path::Path;
use std::sync::Arc;

use trailwatch_processor::config::Config;
use trailwatch_processor::findings;
use trailwatch_processor::replay::{replay, ReplayFormat};
use trailwatch_processor::ruleset;
use trailwatch_tests::fixtures::replay_options;

#[test]
fn demo_events_through_the_builtin_pack() -> anyhow::Result<()> {
    let cfg = Config::default();
    let opts = ruleset::compile_options(&cfg, true)?;
    let (set, warnings) = ruleset::load(&[], true, &opts)?;
    assert!(warnings.is_empty(), "{warnings:?}");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let ropts = replay_options(vec![examples]);
    let mut out = Vec::new();
    let stats = replay(Arc::new(set), &ropts, &mut out)?;
    assert_eq!(stats.eval.bad_records, 0);
    assert_eq!(stats.eval.events, 41);
    assert_eq!(stats.eval.findings, 4);
    for line in String::from_utf8(out)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(v["SchemaVersion"], "2018-10-08");
        assert!(v["Id"].as_str().is_some_and(|id| id.starts_with("trailwatch/")));
    }
    // Ids do not depend on the run: same rule and event, same id.
    assert_eq!(findings::finding_id("r", "e"), findings::finding_id("r", "e"));
    Ok(())
}

/// `--format matches` reports the same matches as the findings (rule and
/// triggering event), one short line each, and builds no finding.
#[test]
fn matches_format_lists_what_the_findings_report() -> anyhow::Result<()> {
    let cfg = Config::default();
    let opts = ruleset::compile_options(&cfg, true)?;
    let set = Arc::new(ruleset::load(&[], true, &opts)?.0);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events");
    let mut ropts = replay_options(vec![examples]);
    let mut asff = Vec::new();
    let a = replay(Arc::clone(&set), &ropts, &mut asff)?;
    ropts.format = ReplayFormat::Matches;
    let mut lines = Vec::new();
    let m = replay(set, &ropts, &mut lines)?;
    assert_eq!((m.eval.findings, m.eval.match_lines), (0, a.eval.findings));
    assert_eq!(m.eval.matches, a.eval.matches);
    let from_findings: Vec<(String, String)> = String::from_utf8(asff)?
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let pf = &v["ProductFields"];
            (
                pf["trailwatch/RuleId"].as_str().unwrap().to_string(),
                pf["trailwatch/EventIds"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let from_matches: Vec<(String, String)> = String::from_utf8(lines)?
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["rule_title"].is_string() && v["level"].is_string(), "{l}");
            let ids = match v["event_ids"].as_array() {
                Some(ids) => ids.iter().map(|i| i.as_str().unwrap()).collect::<Vec<_>>().join(","),
                None => v["event_id"].as_str().unwrap().to_string(),
            };
            (v["rule_id"].as_str().unwrap().to_string(), ids)
        })
        .collect();
    assert!(!from_matches.is_empty());
    assert_eq!(from_matches, from_findings);
    Ok(())
}
