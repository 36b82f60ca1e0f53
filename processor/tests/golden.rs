//! Golden files: the ASFF findings and OCSF records of the demo events
//! (examples/events through the built-in pack, what `trailwatch run` shows on
//! its embedded default) as committed, reviewed files. A change of any
//! finding field shows up as a diff of processor/tests/golden/*.json.
//!
//! After an intended change, rewrite them and review the diff:
//! `TRAILWATCH_UPDATE_GOLDEN=1 cargo test -p trailwatch-processor --test golden`
//!
//! Nothing is normalised: `replay --now` fixes CreatedAt/UpdatedAt (the only
//! wall-clock fields), ids are derived from rule and event, and the child runs
//! with an empty environment so no `TRAILWATCH_*`/`AWS_*` variable of the
//! caller changes account, region or config.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const NOW: &str = "2026-11-02T00:00:00Z";
const UPDATE_ENV: &str = "TRAILWATCH_UPDATE_GOLDEN";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `trailwatch replay examples/events --format FORMAT --now NOW` as a
/// pretty-printed JSON array, one element per finding, in output order.
fn replay(format: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let res = Command::new(env!("CARGO_BIN_EXE_trailwatch"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .arg("replay")
        .arg(repo().join("examples/events"))
        .args(["--no-progress", "--now", NOW, "--format", format, "--output"])
        .arg(&out)
        .output()
        .expect("run trailwatch");
    assert!(res.status.success(), "replay --format {format} failed: {}", String::from_utf8_lossy(&res.stderr));
    let text = std::fs::read_to_string(&out).expect("read output");
    let records: Vec<Value> = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{format} line {}: {e}", i + 1)))
        .collect();
    assert!(!records.is_empty(), "the demo events produced no {format} findings");
    serde_json::to_string_pretty(&records).expect("serialise") + "\n"
}

fn check(format: &str) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/demo-{format}.json"));
    let actual = replay(format);
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden.parent().unwrap()).expect("create golden dir");
        std::fs::write(&golden, &actual).expect("write golden");
        eprintln!("rewrote {}", golden.display());
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; create it with {UPDATE_ENV}=1", golden.display()));
    if expected != actual {
        // The first differing line, so the failure says where without a diff tool.
        let (n, (e, a)) = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (e, a))| e != a)
            .unwrap_or((expected.lines().count().min(actual.lines().count()), ("<end>", "<end>")));
        panic!(
            "{} differs from the output at line {}:\n  golden: {e}\n  actual: {a}\n\
             ({} vs {} lines). If the change is intended: {UPDATE_ENV}=1 cargo test -p trailwatch-processor \
             --test golden, then review the diff.",
            golden.display(),
            n + 1,
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

#[test]
fn asff_findings_of_the_demo_events_match_the_golden_file() {
    check("asff");
}

#[test]
fn ocsf_records_of_the_demo_events_match_the_golden_file() {
    check("ocsf");
}
