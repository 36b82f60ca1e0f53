//! Panic policy of `trailwatch run` (see `service/design.md`):
//!
//! - A panic **inside a per-record guard** ([`guard`]: decoding one unit,
//!   evaluating one event) is caught: the record is dead-lettered with the
//!   panic message and counted (`trailwatch_record_panics_total`), the stream
//!   goes on. A restart would meet the same record again, so crashing on it
//!   would only turn one bad record into a crash loop.
//! - A panic **anywhere else** (a shard reader, the detector or sink stage, a
//!   spawned task) means the process can no longer be trusted: the hook
//!   installed by [`install_fatal_hook`] logs it with its location and exits
//!   with [`PANIC_EXIT_CODE`] at once. Nothing uncommitted is lost (input is
//!   acknowledged only after it is durable): the orchestrator restarts the
//!   task, which resumes from the last commit. Without the hook (the library
//!   embedded in tests), the service's supervision turns a dead task or stage
//!   into a failed run instead.
//!
//! [`test_point`] lets the end-to-end tests inject panics; it does nothing
//! unless `TRAILWATCH_TEST_PANIC_AT` is set.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

/// The exit code after a panic outside a guard (EX_SOFTWARE).
pub const PANIC_EXIT_CODE: i32 = 70;

/// Test-only: `TRAILWATCH_TEST_PANIC_AT=<point>` panics at that point.
pub const TEST_PANIC_ENV: &str = "TRAILWATCH_TEST_PANIC_AT";

/// Text in a record that panics the `decode`/`evaluate` test points.
pub const TEST_PANIC_MARKER: &str = "TRAILWATCH_TEST_PANIC";

thread_local! {
    /// Guards active on this thread (nested guards are fine).
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    /// Where the last guarded panic on this thread happened.
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the fail-fast hook (the `run` command only: a library must not
/// exit its host's process).
pub fn install_fatal_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        if GUARDED.with(Cell::get) > 0 {
            // Caught by `guard`, which dead-letters the record and logs it.
            LAST_LOCATION.with(|l| *l.borrow_mut() = location);
            return;
        }
        let message = payload_text(info.payload());
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let at = location.as_deref().unwrap_or("unknown location");
        // stderr is unbuffered: this line is out even if the log pipeline is not.
        eprintln!("trailwatch: panic in thread '{thread}' at {at}: {message}");
        // Logging below could block (a panic while a logger lock is held):
        // the exit happens regardless.
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(2));
            std::process::exit(PANIC_EXIT_CODE);
        });
        tracing::error!(thread, location = at, "panic: {message}; exiting with {PANIC_EXIT_CODE}");
        eprintln!("trailwatch: exiting with code {PANIC_EXIT_CODE}; uncommitted input is read again after a restart");
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            previous(info);
        }
        // Flushes stdout; no destructors run (a commit in flight is simply not made).
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

/// Runs `f`, catching a panic as an error: "message (at file:line:col)".
/// For per-record work only: the caller must drop or reset whatever `f` may
/// have left half-done.
pub fn guard<T>(stage: &'static str, f: impl FnOnce() -> T) -> Result<T, String> {
    GUARDED.with(|g| g.set(g.get() + 1));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    r.map_err(|payload| {
        crate::metrics::get().record_panics.with_label_values(&[stage]).inc();
        let message = payload_text(payload.as_ref());
        match LAST_LOCATION.with(|l| l.borrow_mut().take()) {
            Some(at) => format!("panic: {message} (at {at})"),
            None => format!("panic: {message}"),
        }
    })
}

fn payload_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

/// Test-only fault injection. With `TRAILWATCH_TEST_PANIC_AT` unset (always,
/// outside tests) this is one load of a cached `None`.
///
/// Points: `kinesis-reader` (after a shard reader's first poll),
/// `sqs-receiver` (after a receiver's first poll), `detector` (at the
/// detector stage's first batch), `sink` (at the sink stage's first batch of
/// findings): each panics outside any guard, so the process must exit. The
/// `decode` and `evaluate` points panic only on a record holding
/// [`TEST_PANIC_MARKER`], inside the per-record guard: that record must be
/// dead-lettered and the stream go on.
pub fn test_point(point: &str) {
    if test_spec().is_some_and(|s| s == point) {
        panic!("injected test panic at {point} ({TEST_PANIC_ENV})");
    }
}

/// Like [`test_point`], for a point that fires only on records holding the marker.
pub fn test_point_record(point: &str, record: &[u8]) {
    if test_spec().is_some_and(|s| s == point) && memchr::memmem::find(record, TEST_PANIC_MARKER.as_bytes()).is_some() {
        panic!("injected test panic at {point} on a record holding {TEST_PANIC_MARKER}");
    }
}

fn test_spec() -> Option<&'static str> {
    static SPEC: OnceLock<Option<String>> = OnceLock::new();
    SPEC.get_or_init(|| std::env::var(TEST_PANIC_ENV).ok().filter(|s| !s.is_empty())).as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_panic_becomes_an_error_with_its_message() {
        let r: Result<(), String> = guard("test", || panic!("boom {}", 7));
        let e = r.unwrap_err();
        assert!(e.starts_with("panic: boom 7"), "{e}");
        assert_eq!(guard("test", || 5), Ok(5));
        // The guard depth is restored after a panic.
        assert_eq!(GUARDED.with(Cell::get), 0);
    }
}
