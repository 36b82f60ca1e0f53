//! The rule index skips no match: over a generated day (every attack scenario
//! and look-alike injected), `RuleSet::eval` (index on eventName, then on
//! another field each rule pins) and `RuleSet::eval_unfiltered` (every rule
//! of the class) give the same matches for every event, with the pack alone
//! and with the SigmaHQ AWS rules, without org context, with the pack's
//! defaults and with the org's own values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trailwatch_loadtest::generate::{build_org, generate, GenOptions};
use trailwatch_loadtest::org::OrgOptions;
use trailwatch_loadtest::record::EventKind;
use trailwatch_loadtest::scenarios::{ATTACKS, LOOKALIKES};
use trailwatch_processor::config::Config;
use trailwatch_processor::ruleset;
use trailwatch_rules::{CompileOptions, EventClass, RuleFile, RuleSet};

fn options() -> GenOptions {
    GenOptions {
        seed: 7,
        org: OrgOptions {
            accounts: 7,
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            org_id: None,
            variant: Default::default(),
        },
        start: 1_793_577_600, // 2026-11-02T00:00:00Z
        duration: 3600,
        rate: 6.0,
        attacks: ATTACKS.iter().collect(),
        lookalikes: LOOKALIKES.iter().collect(),
        repeat: 1,
        max_events: 1_000_000,
    }
}

/// The SigmaHQ AWS CloudTrail rules from ../shared, if it is there.
fn sigma_files() -> Option<Vec<RuleFile>> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sigma/rules/cloud/aws");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).ok()?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yml") {
                files.push(RuleFile { name: p.display().to_string(), text: std::fs::read_to_string(&p).ok()? });
            }
        }
    }
    (!files.is_empty()).then_some(files)
}

#[test]
fn indexed_and_unfiltered_evaluation_match_the_same_rules() {
    let opts = options();
    let mut events: Vec<(EventClass, String)> = Vec::new();
    generate(&opts, &mut |b| {
        for e in b.events {
            let class = match e.kind {
                EventKind::CloudTrail(_) => EventClass::CloudTrail,
                EventKind::EventBridge(src) => EventClass::from_eventbridge_source(src),
            };
            events.push((class, e.json.clone()));
        }
        Ok(())
    })
    .expect("generates");
    assert!(events.len() > 15_000, "{} events", events.len());

    let pack_defaults = ruleset::compile_options(&Config::default(), true).expect("pack placeholders");
    let mut org_values = pack_defaults.clone();
    let org = build_org(&opts);
    org_values.placeholders.insert("org_accounts".into(), org.account_ids());
    org_values.placeholders.insert("trusted_cidrs".into(), vec!["10.0.0.0/8".into()]);
    let configs: [(&str, CompileOptions); 3] =
        [("no org context", CompileOptions::default()), ("pack defaults", pack_defaults), ("org values", org_values)];

    let mut rule_sets = vec![("pack", ruleset::builtin_files())];
    match sigma_files() {
        Some(sigma) => {
            let mut all = ruleset::builtin_files();
            all.extend(sigma);
            rule_sets.push(("pack + SigmaHQ", all));
        }
        None => println!("skipped the SigmaHQ rule set: ../shared/sigma/rules is not next to the repository"),
    }

    for (set_name, files) in &rule_sets {
        for (cfg_name, copts) in &configs {
            let (set, _warnings, errors) = RuleSet::load_skipping(files, copts);
            assert!(errors.is_empty() || *cfg_name == "no org context", "{set_name}, {cfg_name}: {errors:?}");
            let unindexed = set.unindexed_rules(EventClass::CloudTrail);
            assert!(
                unindexed * 10 < set.rules().len(),
                "{set_name}, {cfg_name}: {unindexed} of {} rules unindexed",
                set.rules().len()
            );
            let mut scratch = set.scratch();
            let (mut indexed, mut unfiltered) = (Vec::new(), Vec::new());
            let mut matches: BTreeMap<u32, usize> = BTreeMap::new();
            for (i, (class, json)) in events.iter().enumerate() {
                indexed.clear();
                unfiltered.clear();
                set.eval(*class, json, &mut scratch, &mut indexed).expect("generated JSON parses");
                set.eval_unfiltered(*class, json, &mut scratch, &mut unfiltered).expect("generated JSON parses");
                indexed.sort_unstable();
                assert_eq!(indexed, unfiltered, "{set_name}, {cfg_name}: event {i} ({class:?}) {json}");
                for r in &indexed {
                    *matches.entry(*r).or_default() += 1;
                }
            }
            // Not vacuous: the scenarios make many different rules match.
            assert!(matches.len() >= 40, "{set_name}, {cfg_name}: only {} rules matched", matches.len());
            println!(
                "{set_name}, {cfg_name}: {} events, {} rules matched {} times, identical; {unindexed} rules unindexed",
                events.len(),
                matches.len(),
                matches.values().sum::<usize>()
            );
        }
    }
}
