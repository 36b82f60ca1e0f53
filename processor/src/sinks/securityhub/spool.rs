//! The durable spool: findings Security Hub could not take, as ASFF JSON
//! lines in numbered segment files (`00000000000000000001.ndjson`, …). A
//! segment is written once (to a `.tmp` name, fsynced, renamed, directory
//! fsynced), so after a crash it is either whole or absent; segments are
//! read and deleted oldest first. Bounded by `max_bytes`: past it, `append`
//! refuses and the sink pushes back instead of dropping anything. The sink
//! keeps one spool per route (account and region) and calls it only from
//! blocking threads (`spawn_blocking`): every write is fsynced.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool {dir} is full ({bytes} of {max} bytes); waiting for Security Hub to take findings")]
    Full { dir: String, bytes: u64, max: u64 },
    #[error("cannot write the spool {dir}: {error}")]
    Io { dir: String, error: io::Error },
}

struct Segment {
    seq: u64,
    bytes: u64,
    findings: u64,
}

pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next_seq: u64,
    bytes: u64,
    findings: u64,
    max_bytes: u64,
}

fn seq_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".ndjson")?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

impl Spool {
    /// Opens (creating) the spool directory and takes stock of what an
    /// earlier run left; half-written `.tmp` segments are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
                continue;
            }
            let Some(seq) = seq_of(&name) else { continue };
            let text = fs::read(entry.path())?;
            let findings = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
            found.push(Segment { seq, bytes: text.len() as u64, findings });
        }
        found.sort_by_key(|s| s.seq);
        let next_seq = found.last().map_or(1, |s| s.seq + 1);
        let bytes = found.iter().map(|s| s.bytes).sum();
        let findings = found.iter().map(|s| s.findings).sum();
        Ok(Spool { dir: dir.to_path_buf(), segments: found.into(), next_seq, bytes, findings, max_bytes })
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn findings(&self) -> u64 {
        self.findings
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.ndjson"))
    }

    fn io(&self, error: io::Error) -> SpoolError {
        SpoolError::Io { dir: self.dir.display().to_string(), error }
    }

    /// Writes `lines` (one finding each, no newlines inside) as a new
    /// segment, durable when this returns its number.
    pub fn append(&mut self, lines: &[String]) -> Result<u64, SpoolError> {
        if lines.is_empty() {
            return Ok(self.next_seq.saturating_sub(1));
        }
        let size: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        // One segment may always go into an empty spool, so a batch larger
        // than the limit cannot wedge the sink forever.
        if !self.segments.is_empty() && self.bytes + size > self.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let seq = self.next_seq;
        let path = self.path(seq);
        let tmp = path.with_extension("ndjson.tmp");
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().create_new(true).write(true).open(&tmp)?;
            let mut buf = Vec::with_capacity(size as usize);
            for l in lines {
                buf.extend_from_slice(l.as_bytes());
                buf.push(b'\n');
            }
            f.write_all(&buf)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        self.next_seq += 1;
        self.segments.push_back(Segment { seq, bytes: size, findings: lines.len() as u64 });
        self.bytes += size;
        self.findings += lines.len() as u64;
        Ok(seq)
    }

    /// The oldest segment: its number and its lines.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<String>)>, SpoolError> {
        let Some(seg) = self.segments.front() else { return Ok(None) };
        let text = fs::read_to_string(self.path(seg.seq)).map_err(|e| self.io(e))?;
        Ok(Some((seg.seq, text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())))
    }

    /// Deletes a segment whose findings were all delivered (or dead-lettered).
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let Some(i) = self.segments.iter().position(|s| s.seq == seq) else { return Ok(()) };
        match fs::remove_file(self.path(seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(e)),
        }
        let seg = self.segments.remove(i).expect("found above");
        self.bytes -= seg.bytes;
        self.findings -= seg.findings;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("{{\"Id\":\"f{i}\"}}")).collect()
    }

    #[test]
    fn segments_come_back_oldest_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(s.is_empty());
        s.append(&lines(0..3)).unwrap();
        s.append(&lines(3..5)).unwrap();
        assert_eq!(s.findings(), 5);
        let bytes = s.bytes();
        drop(s);

        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((s.findings(), s.bytes()), (5, bytes), "counted again after a restart");
        let (seq, first) = s.oldest().unwrap().unwrap();
        assert_eq!(first, lines(0..3));
        s.remove(seq).unwrap();
        s.append(&lines(5..6)).unwrap();
        let (seq, second) = s.oldest().unwrap().unwrap();
        assert_eq!(second, lines(3..5));
        s.remove(seq).unwrap();
        assert_eq!(s.oldest().unwrap().unwrap().1, lines(5..6), "new segments go behind old ones");
        assert_eq!(s.findings(), 1);
    }

    #[test]
    fn a_full_spool_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 40).unwrap();
        s.append(&lines(0..3)).unwrap(); // 3 × 12 bytes
        let err = s.append(&lines(3..4)).unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert_eq!(s.findings(), 3);
        let (seq, _) = s.oldest().unwrap().unwrap();
        s.remove(seq).unwrap();
        s.append(&lines(3..4)).unwrap();
        assert_eq!(s.findings(), 1);
    }

    #[test]
    fn half_written_segments_are_discarded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&lines(0..2)).unwrap();
        fs::write(dir.path().join("00000000000000000002.ndjson.tmp"), "{\"Id\":\"torn").unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.findings(), 2);
        assert!(!dir.path().join("00000000000000000002.ndjson.tmp").exists());
    }
}
