//! Liveness and readiness, shared by the components and served on /healthz
//! and /readyz: ready = started, not shutting down, every source connected
//! and every sink healthy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    started: AtomicBool,
    shutting_down: AtomicBool,
    sources: Mutex<BTreeMap<String, bool>>,
    sinks: Mutex<BTreeMap<String, bool>>,
}

impl Health {
    pub fn new() -> Self {
        Health::default()
    }

    /// Registers a source as not yet connected.
    pub fn add_source(&self, name: &str) {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), false);
    }

    pub fn set_source(&self, name: &str, ok: bool) {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), ok);
        self.publish();
    }

    pub fn set_sink(&self, name: &str, ok: bool) {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), ok);
        self.publish();
    }

    pub fn set_started(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.publish();
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.publish();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Why the service is not ready (empty when it is).
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if !self.started.load(Ordering::SeqCst) {
            why.push("starting".to_string());
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            why.push("shutting down".to_string());
        }
        for (n, ok) in self.sources.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if !ok {
                why.push(format!("source {n} not connected"));
            }
        }
        for (n, ok) in self.sinks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if !ok {
                why.push(format!("sink {n} failing"));
            }
        }
        why
    }

    fn publish(&self) {
        crate::metrics::get().ready.set(i64::from(self.not_ready().is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_everything_is_up() {
        let h = Health::new();
        h.add_source("k");
        h.set_sink("sh", true);
        assert!(!h.not_ready().is_empty());
        h.set_started();
        assert_eq!(h.not_ready(), vec!["source k not connected".to_string()]);
        h.set_source("k", true);
        assert!(h.not_ready().is_empty());
        h.set_sink("sh", false);
        assert_eq!(h.not_ready(), vec!["sink sh failing".to_string()]);
        h.set_sink("sh", true);
        h.set_shutting_down();
        assert_eq!(h.not_ready(), vec!["shutting down".to_string()]);
    }
}
