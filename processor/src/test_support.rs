//! Support for the unit tests: `../shared` (public SigmaHQ rules and sample
//! events) is next to the repository in CI but not in a user's clone, where
//! the tests that need it say so in one line and pass.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `../shared`, or `None` after printing one line naming the test and what it skipped.
pub(crate) fn shared(what: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if p.join("samples").is_dir() {
        return Some(p);
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of passing tests, and a skip must be visible.
    let _ =
        writeln!(std::io::stderr(), "skipped {test}: needs {what} from ../shared, which is not next to the repository");
    None
}

/// `../shared` or return from the test (after saying so).
macro_rules! shared_or_skip {
    ($what:expr) => {
        match $crate::test_support::shared($what) {
            Some(p) => p,
            None => return,
        }
    };
}
pub(crate) use shared_or_skip;
