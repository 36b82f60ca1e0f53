//! The runner: a dataset (generated or given) → trailwatch → throughput,
//! resources and detection quality against the ground truth.
//!
//! - [`replay`]: the `trailwatch replay` subprocess target;
//! - [`live`]: `trailwatch run` on a Kinesis stream or SQS queue this tool
//!   feeds (an emulator or any endpoint), with end-to-end latency;
//! - [`usage`]: CPU time and peak RSS of the child;
//! - [`score`]: findings vs. truth (precision, recall, misses, false positives);
//! - [`examples`]: raw events behind example false positives;
//! - [`report`]: the JSON report and the human summary.

pub mod examples;
pub mod live;
pub mod replay;
pub mod report;
pub mod score;
pub mod usage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dataset::{DatasetError, TRUTH_FILE};
use crate::output::Format;
use crate::truth::{Truth, TruthError};
pub use report::Report;

/// Bounds on one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The child is killed after this long.
    pub max_time: Duration,
}

/// What a target measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    /// Set when the time limit killed the child.
    pub killed_after_seconds: Option<f64>,
    pub wall: Duration,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub peak_rss_bytes: u64,
    /// "getrusage" (exact) or "proc-sampled" (VmHWM read every 50 ms).
    pub peak_rss_source: &'static str,
    /// Events trailwatch says it read.
    pub events_read: Option<u64>,
    pub stderr: String,
    /// Findings, one ASFF JSON per line.
    pub findings: PathBuf,
    pub input_bytes: u64,
    /// End-to-end latency (live targets only).
    pub latency: Option<live::Latency>,
}

/// A system under test: runs trailwatch over `inputs` and measures it.
pub trait Target {
    fn name(&self) -> &'static str;
    fn run(
        &mut self,
        inputs: &[PathBuf],
        now: &str,
        work: &Path,
        limits: &Limits,
        progress: bool,
    ) -> Result<Outcome, RunError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{path}:{line}: not an ASFF finding: {message}")]
    Findings { path: PathBuf, line: usize, message: String },
    #[error("{0}")]
    NoInput(String),
    #[error(transparent)]
    Truth(#[from] TruthError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
}

impl RunError {
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
        move |source| RunError::Io { path: path.to_path_buf(), source }
    }
}

/// The order files are given to trailwatch in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// By the delivery time in the file names, across accounts and regions
    /// (as a live service receives them).
    Time,
    /// Path order as `trailwatch replay DIR` walks it: account by account.
    Path,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dataset: PathBuf,
    pub format: Format,
    pub order: Order,
    pub limits: Limits,
    pub progress: bool,
    /// Look up the raw events of example false positives.
    pub examples: bool,
    /// How long generation took, if this run generated the dataset.
    pub generated_in: Option<Duration>,
}

/// Runs `target` over the dataset and scores the findings.
pub fn run(opts: &RunOptions, target: &mut dyn Target) -> Result<Report, RunError> {
    let truth = Truth::load(&opts.dataset.join(TRUTH_FILE))?;
    let format_dir = opts.dataset.join(opts.format.as_str());
    if !format_dir.is_dir() {
        return Err(RunError::NoInput(format!(
            "{} has no {} output; generate it with --format {}",
            opts.dataset.display(),
            opts.format.as_str(),
            opts.format.as_str()
        )));
    }
    let work = opts.dataset.join("run");
    std::fs::create_dir_all(&work).map_err(RunError::io(&work))?;
    let inputs = match (opts.format, opts.order) {
        (Format::Cloudtrail | Format::Cwl, Order::Time) => {
            vec![time_view(&format_dir, &work.join(format!("order-{}", opts.format.as_str())))?]
        }
        _ => vec![format_dir],
    };
    let outcome = target.run(&inputs, truth.end(), &work, &opts.limits, opts.progress)?;
    let findings = score::read_findings(&outcome.findings)?;
    let mut quality = score::score(&truth, &findings);
    if opts.examples {
        let ids: Vec<String> =
            quality.false_positives_by_rule.iter().filter_map(|r| r.example.event_id.clone()).collect();
        let found = examples::find_events(&inputs, &ids);
        for r in &mut quality.false_positives_by_rule {
            if let Some(id) = &r.example.event_id {
                r.example.event = found.get(id).cloned();
            }
        }
    }
    Ok(Report::new(opts, target.name(), &truth, &outcome, quality))
}

/// The `YYYYMMDDTHHMMZ` stamp in a file name, if any.
pub fn stamp_of(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    (0..b.len().saturating_sub(13)).find_map(|i| {
        let w = &b[i..i + 14];
        let ok = w[..8].iter().all(u8::is_ascii_digit)
            && w[8] == b'T'
            && w[9..13].iter().all(u8::is_ascii_digit)
            && w[13] == b'Z';
        ok.then(|| &name[i..i + 14])
    })
}

/// The files under `inputs` (files or directories, following links), each input's in path order
/// (the hourly NDJSON names are in time order).
pub(crate) fn input_files(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in inputs {
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(i)
            .follow_links(true)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

/// A directory of symlinks to the files of `dir`, named so that name order
/// is delivery-time order (trailwatch walks directories in name order).
pub fn time_view(dir: &Path, view: &Path) -> Result<PathBuf, RunError> {
    if view.exists() {
        std::fs::remove_dir_all(view).map_err(RunError::io(view))?;
    }
    std::fs::create_dir_all(view).map_err(RunError::io(view))?;
    let mut files: Vec<(String, PathBuf)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (stamp_of(&name).unwrap_or("").to_string(), e.into_path())
        })
        .collect();
    files.sort();
    for (i, (stamp, path)) in files.iter().enumerate() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let link = view.join(format!("{stamp}_{i:07}_{name}"));
        let target = std::fs::canonicalize(path).map_err(RunError::io(path))?;
        std::os::unix::fs::symlink(&target, &link).map_err(RunError::io(&link))?;
    }
    Ok(view.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_time_order() {
        assert_eq!(stamp_of("111_CloudTrail_us-east-1_20261102T0815Z_abc.json.gz"), Some("20261102T0815Z"));
        assert_eq!(stamp_of("events.ndjson"), None);
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        for (acct, ts) in [("222", "20261102T0005Z"), ("111", "20261102T0010Z"), ("111", "20261102T0005Z")] {
            let p = src.join(acct);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join(format!("{acct}_CloudTrail_r_{ts}_x.json.gz")), ts).unwrap();
        }
        let view = time_view(&src, &d.path().join("view")).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&view).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        let order: Vec<String> = names.iter().map(|n| std::fs::read_to_string(view.join(n)).unwrap()).collect();
        assert_eq!(order, ["20261102T0005Z", "20261102T0005Z", "20261102T0010Z"]);
        assert!(names[0].contains("111_") && names[1].contains("222_"));
    }
}
