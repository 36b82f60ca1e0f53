//! Resource use of the child: CPU time and peak RSS from
//! `getrusage(RUSAGE_CHILDREN)` around its lifetime, plus `/proc/<pid>`
//! samples while it runs (bytes read for the progress bar, and the peak RSS
//! when getrusage cannot attribute it).

use nix::sys::resource::{getrusage, UsageWho};

/// Cumulative usage of this process's waited-for children.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildUsage {
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// Largest peak RSS of any waited-for child, bytes.
    pub max_rss_bytes: u64,
}

pub fn children() -> ChildUsage {
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            ChildUsage {
                user_seconds: secs(u.user_time()),
                system_seconds: secs(u.system_time()),
                // Linux reports ru_maxrss in kilobytes.
                max_rss_bytes: (u.max_rss().max(0) as u64) * 1024,
            }
        }
        Err(_) => ChildUsage::default(),
    }
}

/// One look at a running process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// VmHWM: peak resident set so far, bytes.
    pub peak_rss_bytes: u64,
    /// VmRSS now, bytes.
    pub rss_bytes: u64,
    /// Bytes read through read(2) so far (`rchar`).
    pub read_bytes: u64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/io` (zeros where unavailable).
pub fn sample(pid: u32) -> Sample {
    let mut s = Sample::default();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in text.lines() {
            let kb = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
            if line.starts_with("VmHWM:") {
                s.peak_rss_bytes = kb();
            } else if line.starts_with("VmRSS:") {
                s.rss_bytes = kb();
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("rchar:") {
                s.read_bytes = v.trim().parse().unwrap_or(0);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id());
        assert!(s.peak_rss_bytes > 0 && s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
        let before = children();
        let status = std::process::Command::new("true").status().expect("true runs");
        assert!(status.success());
        let after = children();
        assert!(after.user_seconds + after.system_seconds >= before.user_seconds + before.system_seconds);
        assert!(after.max_rss_bytes > 0);
    }
}
