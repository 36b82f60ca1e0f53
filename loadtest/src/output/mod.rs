//! Where generated events go. Every format implements [`Output`]: it gets the
//! events of one time slice (about 5 minutes of event time, sorted) and
//! writes them its own way. A new destination (a Kinesis stream, an SQS
//! queue) is one more module implementing the trait.
//!
//! | format | layout under `<out>/<format>/` |
//! |---|---|
//! | [`cloudtrail`] | `AWSLogs/[<org id>/]<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_<ts>_<rand>.json.gz` (`{"Records":[...]}`, one file per account, region and slice), plus native EventBridge events in `EventBridge/<acct>/<region>/YYYY/MM/DD/...ndjson.gz` |
//! | [`ndjson`] `ndjson` | `events_<YYYYMMDDTHHMMZ>.ndjson[.gz]` per hour: raw CloudTrail records and native EventBridge events, one per line |
//! | [`ndjson`] `eventbridge` | the same files, every event as EventBridge delivers it ("AWS API Call via CloudTrail" around records) |
//! | [`cwl`] | `<acct>/<region>/..._<ts>_<n>.json.gz`: CloudWatch Logs subscription payloads (gzip JSON, `logEvents[].message`) |

pub mod cloudtrail;
pub mod cwl;
pub mod ndjson;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;

use crate::org::Org;
use crate::record::GenEvent;

/// The events of one slice of event time.
pub struct Batch<'a> {
    pub org: &'a Org,
    /// Slice start and end (Unix seconds, end exclusive).
    pub start: i64,
    pub end: i64,
    /// Sorted by event time.
    pub events: &'a [GenEvent],
}

/// A destination for generated events.
pub trait Output {
    /// Writes one slice.
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), OutputError>;
    /// Flushes and reports what was written.
    fn finish(&mut self) -> Result<OutputSummary, OutputError>;
}

/// What an output wrote.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct OutputSummary {
    pub format: String,
    pub dir: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub events: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl OutputError {
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
        move |source| OutputError::Io { path: path.to_path_buf(), source }
    }
}

/// The formats a dataset can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CloudTrail log files as delivered to S3 (gzip `{"Records":[...]}`).
    Cloudtrail,
    /// Raw records, one JSON per line.
    Ndjson,
    /// EventBridge events, one per line.
    Eventbridge,
    /// CloudWatch Logs subscription payloads (gzip).
    Cwl,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Cloudtrail => "cloudtrail",
            Format::Ndjson => "ndjson",
            Format::Eventbridge => "eventbridge",
            Format::Cwl => "cwl",
        }
    }
}

/// Settings shared by the file outputs.
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    /// gzip level 0-9 for compressed files.
    pub gzip_level: u32,
    /// Compress the NDJSON formats (ndjson, eventbridge) too.
    pub gzip_ndjson: bool,
    /// CloudTrail files under `AWSLogs/<org id>/<acct>/` as an organization
    /// trail writes them (else `AWSLogs/<acct>/`).
    pub org_trail: bool,
    /// Records of a CloudTrail file in a seeded shuffled order, as CloudTrail
    /// writes them (unsorted inside a file); else sorted by time.
    pub shuffle_records: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions { gzip_level: 1, gzip_ndjson: false, org_trail: false, shuffle_records: false }
    }
}

/// Opens the output for `format` under `dir` (created).
pub fn open(format: Format, dir: &Path, opts: FileOptions) -> Result<Box<dyn Output>, OutputError> {
    std::fs::create_dir_all(dir).map_err(OutputError::io(dir))?;
    Ok(match format {
        Format::Cloudtrail => Box::new(cloudtrail::CloudTrailFiles::new(dir, opts)),
        Format::Ndjson => Box::new(ndjson::ndjson(dir, opts)),
        Format::Eventbridge => Box::new(ndjson::eventbridge(dir, opts)),
        Format::Cwl => Box::new(cwl::CwlPayloads::new(dir, opts)),
    })
}

/// Writes `bytes` gzip-compressed to a new file (parents created); returns its size.
pub fn write_gz(path: &Path, level: u32, parts: &[&[u8]]) -> Result<u64, OutputError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(OutputError::io(p))?;
    }
    let f = File::create(path).map_err(OutputError::io(path))?;
    let mut gz = GzEncoder::new(BufWriter::with_capacity(1 << 16, f), Compression::new(level));
    for p in parts {
        gz.write_all(p).map_err(OutputError::io(path))?;
    }
    let mut w = gz.finish().map_err(OutputError::io(path))?;
    w.flush().map_err(OutputError::io(path))?;
    let f = w.into_inner().map_err(|e| OutputError::Io { path: path.to_path_buf(), source: e.into_error() })?;
    Ok(f.metadata().map_err(OutputError::io(path))?.len())
}

/// Compresses and writes files on worker threads while the generator goes on.
pub struct GzPool {
    tx: Option<SyncSender<(PathBuf, Vec<u8>)>>,
    workers: Vec<JoinHandle<Result<(u64, u64), OutputError>>>,
    failed: Arc<AtomicBool>,
}

impl GzPool {
    /// One worker per spare core (at least one, at most four).
    pub fn new(level: u32) -> GzPool {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).saturating_sub(1).clamp(1, 4);
        let (tx, rx) = sync_channel::<(PathBuf, Vec<u8>)>(n * 4);
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(AtomicBool::new(false));
        let workers = (0..n)
            .map(|_| {
                let rx = Arc::clone(&rx);
                let failed = Arc::clone(&failed);
                std::thread::spawn(move || {
                    let (mut files, mut bytes) = (0u64, 0u64);
                    loop {
                        let job = rx.lock().map(|r| r.recv());
                        let Ok(Ok((path, data))) = job else { break };
                        match write_gz(&path, level, &[&data]) {
                            Ok(b) => {
                                files += 1;
                                bytes += b;
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok((files, bytes))
                })
            })
            .collect();
        GzPool { tx: Some(tx), workers, failed }
    }

    /// Queues one file (blocks while the workers are behind).
    pub fn submit(&mut self, path: PathBuf, data: Vec<u8>) -> Result<(), OutputError> {
        if self.failed.load(Ordering::Relaxed) {
            self.finish()?;
        }
        match &self.tx {
            Some(tx) if tx.send((path, data)).is_ok() => Ok(()),
            _ => self.finish().map(|_| ()),
        }
    }

    /// Waits for every queued file; returns (files, bytes) or the first error.
    pub fn finish(&mut self) -> Result<(u64, u64), OutputError> {
        self.tx = None;
        let (mut files, mut bytes) = (0, 0);
        let mut first_err = None;
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(Ok((f, b))) => {
                    files += f;
                    bytes += b;
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(OutputError::Io {
                        path: PathBuf::from("(gzip worker)"),
                        source: io::Error::other("a gzip worker panicked"),
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((files, bytes)),
        }
    }

    /// [`GzPool::finish`], with the files and bytes written into `summary`; returns it.
    pub fn finish_into(&mut self, summary: &mut OutputSummary) -> Result<OutputSummary, OutputError> {
        let (files, bytes) = self.finish()?;
        summary.files = files;
        summary.bytes = bytes;
        Ok(summary.clone())
    }
}

enum Sink {
    Plain(BufWriter<File>),
    Gz(GzEncoder<BufWriter<File>>),
}

/// A single growing file, plain or gzip.
pub struct LineFile {
    path: PathBuf,
    w: Option<Sink>,
    pub lines: u64,
}

impl LineFile {
    pub fn create(path: PathBuf, gzip: Option<u32>) -> Result<LineFile, OutputError> {
        let f = File::create(&path).map_err(OutputError::io(&path))?;
        let buf = BufWriter::with_capacity(1 << 17, f);
        let w = match gzip {
            Some(level) => Sink::Gz(GzEncoder::new(buf, Compression::new(level))),
            None => Sink::Plain(buf),
        };
        Ok(LineFile { path, w: Some(w), lines: 0 })
    }

    pub fn line(&mut self, s: &str) -> Result<(), OutputError> {
        let w: &mut dyn Write = match self.w.as_mut().expect("line file used after finish") {
            Sink::Plain(w) => w,
            Sink::Gz(w) => w,
        };
        w.write_all(s.as_bytes()).and_then(|_| w.write_all(b"\n")).map_err(OutputError::io(&self.path))?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes (ending the gzip stream) and returns the file size.
    pub fn finish(&mut self) -> Result<u64, OutputError> {
        let io = OutputError::io;
        match self.w.take() {
            Some(Sink::Plain(mut w)) => w.flush().map_err(io(&self.path))?,
            Some(Sink::Gz(gz)) => gz.finish().and_then(|mut w| w.flush()).map_err(io(&self.path))?,
            None => {}
        }
        Ok(std::fs::metadata(&self.path).map_err(io(&self.path))?.len())
    }
}

/// 16 characters from `[A-Za-z0-9]`, fixed by `key` (file names need a random-looking part).
pub fn name_suffix(key: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = crate::util::fnv(key.as_bytes());
    (0..16)
        .map(|_| {
            h = crate::util::mix(h);
            A[(h % A.len() as u64) as usize] as char
        })
        .collect()
}
