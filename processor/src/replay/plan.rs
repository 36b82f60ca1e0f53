//! How an archive is read: inputs grouped into partitions by the CloudTrail
//! key layout, each partition ordered by the time in its file names.
//!
//! CloudTrail names every log file
//! `<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz` (under
//! `[AWSLogs/[o-…/]]<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/`); the
//! time is when the file was delivered, and its events are from the minutes
//! before (about 5, with a tail: the lookahead). A file named so belongs to the
//! partition `<account>/<region>`; any other file is a partition of its own.

use std::path::PathBuf;

/// One input of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
    S3 { bucket: String, key: String, size: u64 },
}

impl Input {
    /// The name used in messages and dead letters.
    pub fn origin(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "-".to_string(),
            Input::S3 { bucket, key, .. } => format!("s3://{bucket}/{key}"),
        }
    }

    /// The last path segment (where the CloudTrail name is).
    fn file_name(&self) -> Option<String> {
        match self {
            Input::File(p) => p.file_name().and_then(|n| n.to_str()).map(str::to_string),
            Input::Stdin => None,
            Input::S3 { key, .. } => key.rsplit('/').next().map(str::to_string),
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Input::File(p) => p.metadata().map(|m| m.len()).unwrap_or(0),
            Input::Stdin => 0,
            Input::S3 { size, .. } => *size,
        }
    }
}

/// What a CloudTrail-style file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub account: String,
    pub region: String,
    /// The delivery time in the name (epoch ms).
    pub time_ms: i64,
}

/// Parses `<account>_<Kind>_<region>_<YYYYMMDDTHHMMZ>_<id>.<ext>` (also the
/// generator's `<account>_EventBridge_<region>_…` files).
pub fn parse_name(name: &str) -> Option<KeyInfo> {
    let parts: Vec<&str> = name.split('_').collect();
    if parts.len() < 5 {
        return None;
    }
    let account = parts[0];
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let region = parts[2];
    if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return None;
    }
    let time_ms = parts[3..].iter().find_map(|p| parse_compact_time(p.split('.').next().unwrap_or(p)))?;
    Some(KeyInfo { account: account.to_string(), region: region.to_string(), time_ms })
}

/// `20261102T0105Z` → epoch ms.
pub fn parse_compact_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 14 || b[8] != b'T' || b[13] != b'Z' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..13]).all(u8::is_ascii_digit) {
        return None;
    }
    let text = format!("{}-{}-{}T{}:{}:00Z", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13]);
    trailwatch_rules::detect::parse_rfc3339_ms(&text)
}

/// What to read of an archive.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Events before this time (epoch ms).
    pub until_ms: Option<i64>,
    /// Only these accounts / regions (empty: all). Applies to files named in
    /// the CloudTrail layout; other files are read whole.
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    /// How far before the time in its name a file's events may be (ms).
    pub lookahead_ms: i64,
}

impl Filter {
    /// Whether a file named with `k` can hold events in range.
    pub fn keeps(&self, k: &KeyInfo) -> bool {
        (self.accounts.is_empty() || self.accounts.contains(&k.account))
            && (self.regions.is_empty() || self.regions.contains(&k.region))
            // Its events are from [time − lookahead, time].
            && self.since_ms.is_none_or(|s| k.time_ms >= s)
            && self.until_ms.is_none_or(|u| k.time_ms < u.saturating_add(self.lookahead_ms))
    }

    /// Whether an event at `t` is in range.
    pub fn keeps_time(&self, t: i64) -> bool {
        self.since_ms.is_none_or(|s| t >= s) && self.until_ms.is_none_or(|u| t < u)
    }
}

/// One file of the plan.
#[derive(Debug, Clone)]
pub struct Planned {
    pub input: Input,
    /// Index into [`Plan::partitions`].
    pub partition: u32,
    /// The time in the file name, for files in the CloudTrail layout.
    pub name_time_ms: Option<i64>,
}

/// The read order of an archive.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Partition labels: `<account>/<region>`, or the file's origin.
    pub partitions: Vec<String>,
    /// Files without a time in their names: read whole, one partition each.
    pub untimed: Vec<Planned>,
    /// Files in the CloudTrail layout, by (name time, partition, name): each
    /// partition in its own time order, partitions interleaved by time.
    pub timed: Vec<Planned>,
    /// Files left out by the filter.
    pub filtered_out: u64,
}

impl Plan {
    /// Plans `inputs` (in any order: the plan does not depend on it).
    pub fn new(inputs: Vec<Input>, filter: &Filter) -> Plan {
        let mut plan = Plan::default();
        let mut timed: Vec<(KeyInfo, String, Input)> = Vec::new();
        let mut untimed: Vec<(String, Input)> = Vec::new();
        for input in inputs {
            match input.file_name().as_deref().and_then(parse_name) {
                Some(k) if filter.keeps(&k) => timed.push((k, input.origin(), input)),
                Some(_) => plan.filtered_out += 1,
                None => untimed.push((input.origin(), input)),
            }
        }
        untimed.sort_by(|a, b| a.0.cmp(&b.0));
        for (origin, input) in untimed {
            plan.partitions.push(origin);
            plan.untimed.push(Planned { input, partition: plan.partitions.len() as u32 - 1, name_time_ms: None });
        }
        let mut labels: Vec<String> = timed.iter().map(|(k, _, _)| format!("{}/{}", k.account, k.region)).collect();
        labels.sort();
        labels.dedup();
        let base = plan.partitions.len() as u32;
        plan.partitions.extend(labels.iter().cloned());
        timed.sort_by(|a, b| {
            (a.0.time_ms, &a.0.account, &a.0.region, &a.1).cmp(&(b.0.time_ms, &b.0.account, &b.0.region, &b.1))
        });
        for (k, _, input) in timed {
            let label = format!("{}/{}", k.account, k.region);
            let p = base + labels.binary_search(&label).unwrap_or(0) as u32;
            plan.timed.push(Planned { input, partition: p, name_time_ms: Some(k.time_ms) });
        }
        plan
    }

    pub fn files(&self) -> usize {
        self.untimed.len() + self.timed.len()
    }

    /// All files in read order: the untimed ones first.
    pub fn in_order(&self) -> impl Iterator<Item = &Planned> {
        self.untimed.iter().chain(&self.timed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudtrail_names_parse() {
        let k = parse_name("111122223333_CloudTrail_eu-west-1_20261102T0105Z_abcdEFGH12345678.json.gz").unwrap();
        assert_eq!((k.account.as_str(), k.region.as_str()), ("111122223333", "eu-west-1"));
        assert_eq!(Some(k.time_ms), trailwatch_rules::detect::parse_rfc3339_ms("2026-11-02T01:05:00Z"));
        assert!(parse_name("111122223333_EventBridge_us-east-1_20261102T0105Z_x.ndjson.gz").is_some());
        // Digest files name the trail too; the time is still found.
        assert!(parse_name("111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20261102T0105Z.json.gz").is_some());
        for bad in ["events_20261102T0100Z.ndjson", "1111_CloudTrail_us-east-1_20261102T0105Z_x.json.gz", "x.json"] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert_eq!(parse_compact_time("20261302T0105Z"), None);
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order() {
        let names = [
            "a/111122223333_CloudTrail_us-east-1_20261102T0110Z_b.json.gz",
            "a/111122223333_CloudTrail_us-east-1_20261102T0105Z_a.json.gz",
            "a/444455556666_CloudTrail_us-east-1_20261102T0105Z_c.json.gz",
            "other.ndjson",
        ];
        let inputs: Vec<Input> = names.iter().map(|n| Input::File(PathBuf::from(n))).collect();
        let f = Filter { lookahead_ms: 15 * 60_000, ..Filter::default() };
        let a = Plan::new(inputs.clone(), &f);
        let b = Plan::new(inputs.into_iter().rev().collect(), &f);
        let order = |p: &Plan| p.in_order().map(|x| x.input.origin()).collect::<Vec<_>>();
        assert_eq!(order(&a), order(&b));
        assert_eq!(order(&a)[0], "other.ndjson");
        assert!(order(&a)[1].ends_with("0105Z_a.json.gz") && order(&a)[3].ends_with("0110Z_b.json.gz"));
        assert_eq!(a.partitions, ["other.ndjson", "111122223333/us-east-1", "444455556666/us-east-1"]);
        // --since / --accounts leave files out by name.
        let since = trailwatch_rules::detect::parse_rfc3339_ms("2026-11-02T01:06:00Z");
        let f = Filter { since_ms: since, accounts: vec!["111122223333".into()], ..f };
        let c = Plan::new(names.iter().map(|n| Input::File(PathBuf::from(n))).collect(), &f);
        assert_eq!((c.timed.len(), c.filtered_out), (1, 2));
    }
}
