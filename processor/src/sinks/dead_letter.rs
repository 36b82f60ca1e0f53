//! The dead-letter file: records that could not be decoded or evaluated, one
//! JSON line each (origin, position, kind, error, raw text), appended and
//! synced to disk at each commit before the input is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::evaluate::DeadLetter;

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
