//! What the rules crate's tests and the end-to-end harness both need from
//! files: `../shared` next to the repository (public SigmaHQ rules and
//! samples: there in CI, not in a user's clone) and walking a directory.
//! One copy: the rules crate's tests declare it as a module, and the harness
//! (trailwatch-tests) includes this file by path, since the rules crate may
//! not depend on the harness.

use std::path::{Path, PathBuf};

/// `../shared`, or `None` after one line on stderr naming the test and what
/// it skipped. Every crate using it sits one level below the repository.
pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    if p.join("sigma/rules").is_dir() {
        return Some(p);
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    // Straight to stderr: the harness captures `eprintln!` of passing tests.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "skipped {test}: needs the public SigmaHQ rules and samples in ../shared, not next to the repository\n"
        )
        .as_bytes(),
    );
    None
}

/// Every file below `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `../shared` ([`shared`]), or returns from the test after the skip line.
/// The including crate declares this file as its root module `shared_support`.
#[macro_export]
macro_rules! shared_or_skip {
    () => {
        match $crate::shared_support::shared() {
            Some(p) => p,
            None => return,
        }
    };
}
