//! The `trailwatch replay` target: trailwatch as a subprocess over the
//! dataset's files, with `--now` fixed to the end of the data, findings to a
//! file, a progress bar fed by the bytes the child has read, and a time limit
//! that kills it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::usage;
use super::{Limits, Outcome, RunError, Target};

/// How to call trailwatch.
#[derive(Debug, Clone)]
pub struct ReplayTarget {
    pub binary: PathBuf,
    /// `--config` for trailwatch (the org context), if any.
    pub config: Option<PathBuf>,
    /// More arguments for `trailwatch replay`, before the inputs.
    pub extra_args: Vec<String>,
}

impl Target for ReplayTarget {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn run(
        &mut self,
        inputs: &[PathBuf],
        now: &str,
        work: &Path,
        limits: &Limits,
        progress: bool,
    ) -> Result<Outcome, RunError> {
        let findings = work.join("findings.ndjson");
        let stderr_path = work.join("trailwatch.stderr");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("replay").arg("--no-progress").arg("--now").arg(now).arg("--output").arg(&findings);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&self.extra_args);
        cmd.args(inputs);
        let command: Vec<String> = std::iter::once(self.binary.display().to_string())
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let stderr = File::create(&stderr_path).map_err(RunError::io(&stderr_path))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);

        let total_bytes: u64 = inputs.iter().map(|p| dir_bytes(p)).sum();
        let bar = if progress { ProgressBar::new(total_bytes.max(1)) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template(
                "trailwatch replay {bar:30} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );

        let before = usage::children();
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| RunError::Spawn { binary: self.binary.clone(), source })?;
        let pid = child.id();
        let mut peak = 0u64;
        let mut killed_after = None;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(RunError::io(&self.binary))? {
                break st;
            }
            let s = usage::sample(pid);
            peak = peak.max(s.peak_rss_bytes);
            bar.set_position(s.read_bytes.min(total_bytes));
            bar.set_message(format!("RSS {} MiB", s.rss_bytes >> 20));
            if started.elapsed() > limits.max_time {
                let _ = child.kill();
                killed_after = Some(started.elapsed().as_secs_f64());
                break child.wait().map_err(RunError::io(&self.binary))?;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let wall = started.elapsed();
        bar.finish_and_clear();
        let after = usage::children();
        // A new maximum can only come from this child; otherwise keep the sampled peak.
        let (peak_rss_bytes, peak_source) = if after.max_rss_bytes > before.max_rss_bytes {
            (after.max_rss_bytes.max(peak), "getrusage")
        } else {
            (peak, "proc-sampled")
        };
        let stderr_text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        Ok(Outcome {
            command,
            exit_code: status.code(),
            killed_after_seconds: killed_after,
            wall,
            cpu_user_seconds: (after.user_seconds - before.user_seconds).max(0.0),
            cpu_system_seconds: (after.system_seconds - before.system_seconds).max(0.0),
            peak_rss_bytes,
            peak_rss_source: peak_source,
            events_read: parse_events(&stderr_text),
            stderr: stderr_text,
            findings,
            input_bytes: total_bytes,
            latency: None,
        })
    }
}

/// Size of a file, or of every file under a directory (following links).
fn dir_bytes(p: &Path) -> u64 {
    if p.is_file() {
        return p.metadata().map(|m| m.len()).unwrap_or(0);
    }
    walkdir::WalkDir::new(p)
        .follow_links(true)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Events read, from trailwatch's summary line: "replayed N inputs, E events in ...".
pub fn parse_events(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.starts_with("replayed "))?;
    let after = line.split(", ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// The trailwatch binary: the given path, `target/release/trailwatch`, one next to this executable, or PATH.
pub fn find_trailwatch(given: Option<&Path>) -> Result<PathBuf, RunError> {
    if let Some(p) = given {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(RunError::NotFound(p.display().to_string())) };
    }
    let mut candidates = vec![PathBuf::from("target/release/trailwatch")];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("trailwatch"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("trailwatch")));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| RunError::NotFound("trailwatch (looked in target/release, next to this binary and on PATH; build it with `cargo build --release -p trailwatch-processor` or pass --trailwatch)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let s = "warning: x\nreplayed 12 inputs, 3456 events in 1.20s (2880 events/s); 0 bad records; 0 skipped; 7 findings\n";
        assert_eq!(parse_events(s), Some(3456));
        assert_eq!(parse_events("nothing"), None);
    }
}
