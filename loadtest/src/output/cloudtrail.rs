//! CloudTrail log files as CloudTrail delivers them to S3: one gzip
//! `{"Records":[...]}` per account, region and ~5 minutes, under
//! `AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/`. Native EventBridge
//! events (scan results, Inspector findings) never pass through CloudTrail;
//! they go to `EventBridge/<acct>/<region>/YYYY/MM/DD/` as gzip NDJSON so one
//! directory holds the whole dataset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{name_suffix, Batch, FileOptions, GzPool, Output, OutputError, OutputSummary};
use crate::record::{EventKind, GenEvent};
use crate::util::{compact, Civil};

pub struct CloudTrailFiles {
    dir: PathBuf,
    pool: GzPool,
    org_trail: bool,
    shuffle: bool,
    summary: OutputSummary,
}

impl CloudTrailFiles {
    pub fn new(dir: &Path, opts: FileOptions) -> Self {
        CloudTrailFiles {
            dir: dir.to_path_buf(),
            pool: GzPool::new(opts.gzip_level),
            org_trail: opts.org_trail,
            shuffle: opts.shuffle_records,
            summary: OutputSummary { format: "cloudtrail".into(), dir: dir.to_path_buf(), ..OutputSummary::default() },
        }
    }
}

/// `<acct>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<16 chars>.json.gz` and its
/// folder, under `AWSLogs/<org>/` for an organization trail.
pub fn log_file_path(dir: &Path, org: Option<&str>, account: &str, region: &str, delivered: i64) -> PathBuf {
    let c = Civil::from_unix(delivered);
    let ts = compact(delivered);
    let root = dir.join("AWSLogs");
    let root = match org {
        Some(o) => root.join(o),
        None => root,
    };
    root.join(account)
        .join("CloudTrail")
        .join(region)
        .join(format!("{:04}", c.year))
        .join(format!("{:02}", c.month))
        .join(format!("{:02}", c.day))
        .join(format!("{account}_CloudTrail_{region}_{ts}_{}.json.gz", name_suffix(&format!("{account}{region}{ts}"))))
}

impl Output for CloudTrailFiles {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), OutputError> {
        let mut groups: BTreeMap<(u16, u16, bool), Vec<&GenEvent>> = BTreeMap::new();
        for ev in batch.events {
            let native = matches!(ev.kind, EventKind::EventBridge(_));
            groups.entry((ev.account, ev.region, native)).or_default().push(ev);
        }
        let org = batch.org;
        for ((account, region, native), mut events) in groups {
            let acct = &org.accounts[account as usize].id;
            let region = &org.regions[region as usize];
            let size: usize = events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 16;
            let mut data = Vec::with_capacity(size);
            let path = if native {
                let c = Civil::from_unix(batch.end);
                let ts = compact(batch.end);
                let path = self
                    .dir
                    .join("EventBridge")
                    .join(acct)
                    .join(region)
                    .join(format!("{:04}", c.year))
                    .join(format!("{:02}", c.month))
                    .join(format!("{:02}", c.day))
                    .join(format!(
                        "{acct}_EventBridge_{region}_{ts}_{}.ndjson.gz",
                        name_suffix(&format!("eb{acct}{region}{ts}"))
                    ));
                for ev in &events {
                    data.extend_from_slice(ev.json.as_bytes());
                    data.push(b'\n');
                }
                path
            } else {
                if self.shuffle {
                    // Seeded by the file, so a dataset stays reproducible.
                    let mut h = crate::util::fnv(format!("{acct}{region}{}", batch.end).as_bytes());
                    for i in (1..events.len()).rev() {
                        h = crate::util::mix(h);
                        events.swap(i, (h % (i as u64 + 1)) as usize);
                    }
                }
                data.extend_from_slice(b"{\"Records\":[");
                for (i, ev) in events.iter().enumerate() {
                    if i > 0 {
                        data.push(b',');
                    }
                    data.extend_from_slice(ev.json.as_bytes());
                }
                data.extend_from_slice(b"]}");
                log_file_path(&self.dir, self.org_trail.then_some(org.id.as_str()), acct, region, batch.end)
            };
            self.pool.submit(path, data)?;
            self.summary.events += events.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<OutputSummary, OutputError> {
        self.pool.finish_into(&mut self.summary)
    }
}
