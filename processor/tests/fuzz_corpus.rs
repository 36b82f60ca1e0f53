//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) and every crash the
//! fuzzer found (`fuzz/regressions/<target>/`) through the same entry points
//! the libFuzzer targets call: none may panic. Runs in `cargo test`; the
//! fuzzing itself is `scripts/fuzz` (too long for CI).

use std::path::Path;

use trailwatch_processor::fuzz_targets::TARGETS;

#[test]
fn every_corpus_and_regression_input_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut total = 0;
    for (name, run) in TARGETS {
        let mut n = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                assert_eq!(kind, "regressions", "{} missing", dir.display());
                continue;
            };
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
            files.sort();
            for f in files {
                if f.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                    continue;
                }
                let data = std::fs::read(&f).unwrap();
                // A panic names the file: the reproducer is `cargo fuzz run <target> <file>`.
                eprintln!("{name}: {}", f.display());
                run(&data);
                n += 1;
            }
        }
        assert!(n > 0, "no corpus for fuzz target {name}");
        total += n;
    }
    println!("{total} fuzz inputs replayed");
}
