//! What the re-keying stage (`[rekey]`) would put on the re-keyed stream for
//! some input, with the built-in pack: which correlations need it (they do
//! not group by `userIdentity.arn`), and how many records and bytes per event.
//!
//! `cargo run --release -p trailwatch-processor --example rekey_cost -- FILE.ndjson...`

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use trailwatch_processor::decode::{self, DecodeOptions, Decoded};
use trailwatch_processor::evaluate::{Evaluator, EventRef};
use trailwatch_processor::rekey::{Plan, RekeyOut};

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: rekey_cost FILE.ndjson...");
    let opts = trailwatch_processor::ruleset::compile_options(&Default::default(), true)?;
    let (set, _) = trailwatch_processor::ruleset::compile(&trailwatch_processor::ruleset::builtin_files(), &opts)?;
    let set = Arc::new(set);
    // `REKEY_ALL=1`: every correlation, as when queues (SQS) are read next to a
    // leased stream (no correlation follows a key there).
    let needing = if std::env::var_os("REKEY_ALL").is_some() {
        (0..set.correlations().len()).collect()
    } else {
        Plan::needing(&set, &["userIdentity.arn"])
    };
    println!("{} of {} pack correlations need re-keying:", needing.len(), set.correlations().len());
    for &i in &needing {
        let c = &set.correlations()[i];
        println!("  {} ({:?}; group-by {})", c.meta.id, c.kind, c.group_by.join(", "));
    }
    let (plan, sets) = Plan::new("rekeyed", Arc::clone(&set), &needing).map_err(anyhow::Error::msg)?;
    println!(
        "{} units (a chain runs as one): {:?}",
        plan.units.len(),
        plan.units.iter().map(|u| &u.id).collect::<Vec<_>>()
    );
    let mut eval = Evaluator::new(Arc::new(sets.main), Default::default(), Default::default());
    let now = OffsetDateTime::now_utc();
    let (mut events, mut with_records, mut records, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for path in &paths {
        let input = std::fs::read(path)?;
        decode::decode(&input, path, &DecodeOptions::default(), &mut |item| {
            let Decoded::Event(ev) = item else { return };
            events += 1;
            let r = EventRef { class: ev.class, json: ev.json, origin: path, position: &ev.position, ingest_ms: None };
            eval.event(r, now, &mut |_| {});
            let mut n = 0;
            plan.collect(&eval, &r, "org/shard", &mut |o| {
                if let RekeyOut::Record(rec) = o {
                    n += 1;
                    bytes += rec.data.len() as u64;
                    let h = trailwatch_processor::rekey::decode(std::str::from_utf8(&rec.data).unwrap_or("")).unwrap();
                    *per.entry(h.correlation).or_default() += 1;
                }
            });
            records += n;
            with_records += u64::from(n > 0);
        });
    }
    println!(
        "{events} events; {with_records} fed a re-keyed correlation ({:.3}%); {records} records ({:.4} per event), {bytes} bytes ({:.1} per event, {:.0} per record)",
        100.0 * with_records as f64 / events.max(1) as f64,
        records as f64 / events.max(1) as f64,
        bytes as f64 / events.max(1) as f64,
        bytes as f64 / records.max(1) as f64,
    );
    for (id, n) in per {
        println!("  {n:>9}  {id}");
    }
    Ok(())
}
