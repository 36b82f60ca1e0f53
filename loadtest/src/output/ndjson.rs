//! Raw events, one JSON per line, in event-time order: CloudTrail records as
//! they appear inside log files, native EventBridge events whole. One file
//! per hour of event time (`events_<YYYYMMDDTHHMMZ>.ndjson[.gz]`), so name
//! order is time order and no file grows past what readers accept.

use std::path::{Path, PathBuf};

use super::{Batch, FileOptions, LineFile, Output, OutputError, OutputSummary};
use crate::org::Org;
use crate::record::{wrap_eventbridge, GenEvent};
use crate::util::compact;

/// Hourly line files; `wrap` turns an event into its line.
pub struct HourlyLines {
    dir: PathBuf,
    opts: FileOptions,
    wrap: fn(&GenEvent, &Org) -> String,
    current: Option<(i64, LineFile)>,
    summary: OutputSummary,
}

impl HourlyLines {
    fn new(dir: &Path, opts: FileOptions, format: &str, wrap: fn(&GenEvent, &Org) -> String) -> Self {
        HourlyLines {
            dir: dir.to_path_buf(),
            opts,
            wrap,
            current: None,
            summary: OutputSummary { format: format.into(), dir: dir.to_path_buf(), ..OutputSummary::default() },
        }
    }

    fn close(&mut self) -> Result<(), OutputError> {
        if let Some((_, mut f)) = self.current.take() {
            self.summary.bytes += f.finish()?;
            self.summary.files += 1;
            self.summary.events += f.lines;
        }
        Ok(())
    }
}

/// Raw records (`ndjson`).
pub fn ndjson(dir: &Path, opts: FileOptions) -> HourlyLines {
    HourlyLines::new(dir, opts, "ndjson", |e, _| e.json.clone())
}

/// EventBridge events (`eventbridge`).
pub fn eventbridge(dir: &Path, opts: FileOptions) -> HourlyLines {
    HourlyLines::new(dir, opts, "eventbridge", wrap_eventbridge)
}

impl Output for HourlyLines {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), OutputError> {
        for ev in batch.events {
            let hour = ev.time.div_euclid(3600) * 3600;
            if self.current.as_ref().map(|(h, _)| *h) != Some(hour) {
                self.close()?;
                let ext = if self.opts.gzip_ndjson { "ndjson.gz" } else { "ndjson" };
                let path = self.dir.join(format!("events_{}.{ext}", compact(hour)));
                let f = LineFile::create(path, self.opts.gzip_ndjson.then_some(self.opts.gzip_level))?;
                self.current = Some((hour, f));
            }
            let line = (self.wrap)(ev, batch.org);
            if let Some((_, f)) = self.current.as_mut() {
                f.line(&line)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<OutputSummary, OutputError> {
        self.close()?;
        Ok(self.summary.clone())
    }
}
