//! (finding Id, action) pairs already carried out, kept across restarts in
//! `state_dir/responses-handled.ndjson`: a finding read again after a crash
//! or restart (the input is acknowledged only at a commit) must not notify
//! twice. Most actions are idempotent against AWS's own state; `notify` is
//! not, so it relies on this file.
//!
//! One JSON line per pair, appended and fsynced at each flush. At start-up
//! the file is read, pairs older than `respond.handled_ttl` or beyond the
//! newest `respond.handled_max` are dropped, and it is rewritten compacted.
//! It is compacted again when it has grown to twice the live pairs. A
//! malformed line (a torn last write) is logged with its line number and
//! skipped: the worst case is one repeated action, never a lost run.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::ActionKind;

pub const FILE_NAME: &str = "responses-handled.ndjson";

type Key = (String, ActionKind);

#[derive(Serialize, Deserialize)]
struct Line {
    id: String,
    action: ActionKind,
    /// Unix seconds when it was handled.
    at: u64,
}

/// What loading found, for the start-up log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub kept: usize,
    pub expired: usize,
    pub malformed: usize,
}

/// Handled pairs: in memory always, on disk when a path is given.
pub struct Handled {
    ttl: Duration,
    max: usize,
    at: HashMap<Key, u64>,
    /// Insertion order (oldest first); may hold pairs already dropped from `at`.
    order: VecDeque<(Key, u64)>,
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    /// Lines in the file now (live or not): compaction when twice the live ones.
    lines: usize,
    dirty: bool,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Handled {
    /// In memory only (replay, or no state dir).
    pub fn memory(ttl: Duration, max: usize) -> Handled {
        Handled {
            ttl,
            max: max.max(1),
            at: HashMap::new(),
            order: VecDeque::new(),
            path: None,
            file: None,
            lines: 0,
            dirty: false,
        }
    }

    /// Loads `dir/responses-handled.ndjson` (creating `dir`), drops what has
    /// expired, rewrites it compacted and keeps appending to it.
    pub fn open(dir: &Path, ttl: Duration, max: usize) -> io::Result<(Handled, Loaded)> {
        Self::open_at(dir, ttl, max, unix_now())
    }

    fn open_at(dir: &Path, ttl: Duration, max: usize, now: u64) -> io::Result<(Handled, Loaded)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut h = Handled::memory(ttl, max);
        let mut loaded = Loaded::default();
        match File::open(&path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Line>(&line) {
                        Ok(l) if now.saturating_sub(l.at) >= ttl.as_secs() => loaded.expired += 1,
                        Ok(l) => h.insert_mem((l.id, l.action), l.at),
                        Err(e) => {
                            loaded.malformed += 1;
                            tracing::warn!(
                                file = %path.display(),
                                line = n + 1,
                                "handled responses: malformed line skipped (that pair may be acted on again): {e}"
                            );
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        loaded.kept = h.at.len();
        h.path = Some(path);
        h.rewrite()?;
        Ok((h, loaded))
    }

    fn insert_mem(&mut self, key: Key, at: u64) {
        self.at.insert(key.clone(), at);
        self.order.push_back((key, at));
        while self.at.len() > self.max {
            let Some((old, t)) = self.order.pop_front() else { break };
            // Only the pair's latest entry removes it.
            if self.at.get(&old) == Some(&t) {
                self.at.remove(&old);
            }
        }
        if self.order.len() > 2 * self.max {
            let at = &self.at;
            self.order.retain(|(k, t)| at.get(k) == Some(t));
        }
    }

    /// Was this pair handled within the ttl?
    pub fn contains(&self, id: &str, action: ActionKind) -> bool {
        // A borrowed lookup would need a second map type; the key is small.
        self.at.get(&(id.to_string(), action)).is_some_and(|t| unix_now().saturating_sub(*t) < self.ttl.as_secs())
    }

    /// Records a pair (buffered; durable at [`Handled::sync`]).
    pub fn insert(&mut self, id: &str, action: ActionKind) {
        let now = unix_now();
        let key = (id.to_string(), action);
        if self.contains(id, action) {
            return;
        }
        self.insert_mem(key, now);
        if let Some(w) = &mut self.file {
            let line = serde_json::to_string(&Line { id: id.to_string(), action, at: now }).expect("serializable");
            if let Err(e) = writeln!(w, "{line}") {
                tracing::warn!("handled responses not written to {}: {e}", FILE_NAME);
            }
            self.lines += 1;
            self.dirty = true;
        }
    }

    /// Makes what was recorded durable (fsync), compacting the file when it
    /// has grown to twice the live pairs.
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        if self.lines > 2 * self.at.len().max(1000) {
            return self.rewrite();
        }
        if let Some(w) = &mut self.file {
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// Writes the live pairs to a temporary file and renames it over the file.
    fn rewrite(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let tmp = path.with_extension("tmp");
        let mut w = BufWriter::new(File::create(&tmp)?);
        let mut n = 0;
        for (k, t) in &self.order {
            if self.at.get(k) == Some(t) {
                serde_json::to_writer(&mut w, &Line { id: k.0.clone(), action: k.1, at: *t })?;
                w.write_all(b"\n")?;
                n += 1;
            }
        }
        w.flush()?;
        w.get_ref().sync_all()?;
        drop(w);
        std::fs::rename(&tmp, &path)?;
        if let Some(parent) = path.parent() {
            // The rename itself durable.
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        let f = OpenOptions::new().append(true).open(&path)?;
        self.file = Some(BufWriter::new(f));
        self.lines = n;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn pairs_survive_a_reopen_and_expire_by_age_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, loaded) = Handled::open(dir.path(), DAY, 3).unwrap();
        assert_eq!(loaded, Loaded::default());
        h.insert("f1", ActionKind::Notify);
        h.insert("f1", ActionKind::RestoreConfig);
        h.insert("f2", ActionKind::Notify);
        h.insert("f2", ActionKind::Notify);
        h.sync().unwrap();
        drop(h);

        let (h, loaded) = Handled::open(dir.path(), DAY, 3).unwrap();
        assert_eq!(loaded.kept, 3);
        assert!(h.contains("f1", ActionKind::Notify) && h.contains("f2", ActionKind::Notify));
        assert!(!h.contains("f2", ActionKind::RestoreConfig));
        drop(h);

        // The count bound: the oldest goes first.
        let (mut h, _) = Handled::open(dir.path(), DAY, 3).unwrap();
        h.insert("f3", ActionKind::Notify);
        h.sync().unwrap();
        assert_eq!(h.len(), 3);
        assert!(!h.contains("f1", ActionKind::Notify));
        drop(h);

        // The age bound: two days later, nothing is left, and the file is rewritten empty.
        let later = unix_now() + 2 * DAY.as_secs();
        let (h, loaded) = Handled::open_at(dir.path(), DAY, 3, later).unwrap();
        // Four lines: the pair evicted by count stays in the file until the next compaction.
        assert_eq!((loaded.kept, loaded.expired), (0, 4));
        assert!(h.is_empty());
        assert_eq!(std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(), "");
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = unix_now();
        std::fs::write(
            dir.path().join(FILE_NAME),
            format!("{{\"id\":\"a\",\"action\":\"notify\",\"at\":{now}}}\n{{\"id\":\"b\",\"act"),
        )
        .unwrap();
        let (h, loaded) = Handled::open(dir.path(), DAY, 10).unwrap();
        assert_eq!(loaded, Loaded { kept: 1, expired: 0, malformed: 1 });
        assert!(h.contains("a", ActionKind::Notify));
        // Rewritten without the torn line.
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, _) = Handled::open(dir.path(), DAY, 10).unwrap();
        for i in 0..2500 {
            h.insert(&format!("f{i}"), ActionKind::Notify);
        }
        h.sync().unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 10, "only the newest max pairs are kept");
        assert!(text.contains("\"f2499\""));
    }
}
