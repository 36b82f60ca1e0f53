//! The dead-letter file: records that could not be decoded or evaluated, one
//! JSON line each (origin, position, kind, error, raw text), appended and
//! synced to disk at each commit before the input is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::decode::Position;

/// A record that could not be decoded or evaluated, with where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub origin: String,
    pub position: Position,
    pub kind: &'static str,
    pub error: String,
    /// The raw text, cut to [`DeadLetter::MAX_RAW_BYTES`] by [`DeadLetter::new`].
    pub raw: Option<String>,
}

impl DeadLetter {
    /// How much of the raw text is kept: enough to see what was wrong, while
    /// one huge record cannot fill the disk.
    pub const MAX_RAW_BYTES: usize = 64 * 1024;

    /// A dead letter of `kind` at `position` of `origin`, with the raw text
    /// cut to [`Self::MAX_RAW_BYTES`] (at a character boundary).
    pub fn new(
        origin: &str,
        position: &Position,
        kind: &'static str,
        error: impl Into<String>,
        raw: Option<&str>,
    ) -> Self {
        DeadLetter {
            origin: origin.to_string(),
            position: position.clone(),
            kind,
            error: error.into(),
            raw: raw.map(|r| truncate(r, Self::MAX_RAW_BYTES).to_string()),
        }
    }

    /// One JSON line for the dead-letter file.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "origin": self.origin,
            "line": self.position.line,
            "byte_offset": self.position.byte_offset,
            "record": self.position.record,
            "kind": self.kind,
            "error": self.error,
            "raw": self.raw,
        })
        .to_string()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub struct DeadLetterWriter {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    truncate: bool,
    written: u64,
}

impl DeadLetterWriter {
    /// Opens lazily: no file unless a record is bad. `truncate` starts the
    /// file afresh (replay); otherwise records are appended (the service).
    pub fn new(path: &Path, truncate: bool) -> Self {
        DeadLetterWriter { path: path.to_path_buf(), out: None, truncate, written: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    fn open(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .append(!self.truncate)
                .truncate(self.truncate)
                .open(&self.path)?;
            self.out = Some(BufWriter::new(f));
        }
        Ok(self.out.as_mut().expect("opened above"))
    }

    pub fn write(&mut self, d: &DeadLetter) -> std::io::Result<()> {
        let line = d.to_json_line();
        let out = self.open()?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        self.written += 1;
        crate::metrics::get().dead_letters.inc();
        Ok(())
    }

    /// Flushes and syncs what was written.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
            out.get_ref().sync_data()?;
        }
        Ok(())
    }
}
