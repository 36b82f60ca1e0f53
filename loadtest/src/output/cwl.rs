//! CloudWatch Logs subscription payloads, as a subscription filter delivers
//! them to Kinesis or Lambda: gzip JSON with `messageType: DATA_MESSAGE` and
//! the events as `logEvents[].message` strings. CloudTrail records come from
//! the trail's log group (stream `<acct>_CloudTrail_<region>`); native
//! EventBridge events from a log group an EventBridge rule writes to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Batch, FileOptions, GzPool, Output, OutputError, OutputSummary};
use crate::json::Json;
use crate::record::{EventKind, GenEvent};
use crate::util::compact;

/// Log events per payload (subscriptions deliver batches well under 1 MB).
const MAX_EVENTS: usize = 400;

pub struct CwlPayloads {
    dir: PathBuf,
    pool: GzPool,
    summary: OutputSummary,
}

impl CwlPayloads {
    pub fn new(dir: &Path, opts: FileOptions) -> Self {
        CwlPayloads {
            dir: dir.to_path_buf(),
            pool: GzPool::new(opts.gzip_level),
            summary: OutputSummary { format: "cwl".into(), dir: dir.to_path_buf(), ..OutputSummary::default() },
        }
    }
}

impl Output for CwlPayloads {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), OutputError> {
        let mut groups: BTreeMap<(u16, u16, bool), Vec<&GenEvent>> = BTreeMap::new();
        for ev in batch.events {
            groups.entry((ev.account, ev.region, matches!(ev.kind, EventKind::EventBridge(_)))).or_default().push(ev);
        }
        let org = batch.org;
        let ts = compact(batch.end);
        for ((account, region, native), events) in groups {
            let acct = &org.accounts[account as usize].id;
            let region = &org.regions[region as usize];
            let (group, stream) = if native {
                ("/aws/events/security-findings".to_string(), format!("{acct}_{region}"))
            } else {
                (format!("aws-cloudtrail-logs-{}", org.id), format!("{acct}_CloudTrail_{region}"))
            };
            for (n, chunk) in events.chunks(MAX_EVENTS).enumerate() {
                let mut j = Json::with_capacity(chunk.iter().map(|e| e.json.len() + 120).sum::<usize>() + 300);
                j.obj();
                j.s("messageType", "DATA_MESSAGE").s("owner", acct).s("logGroup", &group).s("logStream", &stream);
                j.strs("subscriptionFilters", &["trailwatch"]);
                j.key("logEvents").arr();
                for ev in chunk {
                    // CloudWatch Logs event ids are 56-digit strings.
                    let id = format!(
                        "{:020}{:020}{:016}",
                        ev.time as u64 * 1000,
                        ev.seq,
                        crate::util::fnv(ev.id.as_bytes()) % 10_000_000_000_000_000
                    );
                    j.obj().s("id", &id).n("timestamp", ev.time * 1000).s("message", &ev.json).end();
                }
                j.end_arr();
                j.end();
                let kind = if native { "EventBridge" } else { "CloudTrail" };
                let path = self.dir.join(acct).join(region).join(format!("{acct}_{kind}_{region}_{ts}_{n:03}.json.gz"));
                self.pool.submit(path, j.into_string().into_bytes())?;
                self.summary.events += chunk.len() as u64;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<OutputSummary, OutputError> {
        self.pool.finish_into(&mut self.summary)
    }
}
