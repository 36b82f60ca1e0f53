//! Shared by the loadtest's integration tests.

use std::path::PathBuf;
use std::process::Command;

/// The `trailwatch` binary: `TRAILWATCH_BIN`, or built next to this test.
pub fn trailwatch() -> PathBuf {
    if let Some(p) = std::env::var_os("TRAILWATCH_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "trailwatch-processor", "--bin", "trailwatch"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building trailwatch failed");
    // Tests run from target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("trailwatch");
    assert!(bin.is_file(), "{} not built", bin.display());
    bin
}
