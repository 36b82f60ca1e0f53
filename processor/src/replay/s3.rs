//! `trailwatch replay s3://bucket/prefix/`: listing an archive in the
//! CloudTrail layout and reading its objects.
//!
//! The listing walks `[AWSLogs/[o-…/]]<account>/CloudTrail/<region>/` with
//! delimiter listings (accounts and regions are discovered, and narrowed by
//! `--accounts` / `--regions`), then lists each region's date folders in
//! range (`<yyyy>/<mm>/<dd>/`, one listing per day with `--since`), so one
//! day of a year-long archive lists one day. Prefixes that do not follow the
//! layout are listed whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use time::OffsetDateTime;

use super::plan::{Filter, Input};
use crate::aws::{self, AwsConfig};

/// Listings running at once.
const LIST_CONCURRENCY: usize = 16;
/// More days than this in range: the region is listed whole instead.
const MAX_DAY_LISTINGS: i64 = 1000;

/// `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`; a non-empty prefix is taken as a folder.
    pub fn parse(s: &str) -> Option<S3Url> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Some(S3Url { bucket: bucket.to_string(), prefix })
    }
}

/// An S3 client for one replay, with the calls it made.
pub struct S3Archive {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    pub list_calls: Arc<AtomicU64>,
    pub get_calls: AtomicU64,
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn last_segments(prefix: &str) -> Vec<&str> {
    prefix.split('/').filter(|s| !s.is_empty()).collect()
}

impl S3Archive {
    /// Credentials, region and endpoint from the SDK chain (also
    /// `AWS_ENDPOINT_URL_S3`), overridden by `[aws]`.
    pub fn new(cfg: &AwsConfig) -> anyhow::Result<S3Archive> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("trailwatch-s3")
            .build()?;
        let sdk = rt.block_on(aws::sdk_config(cfg));
        // Emulators and custom endpoints take path-style requests.
        let custom = cfg.endpoint_url.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(custom).build();
        Ok(S3Archive {
            rt,
            client: aws_sdk_s3::Client::from_conf(conf),
            list_calls: Arc::new(AtomicU64::new(0)),
            get_calls: AtomicU64::new(0),
        })
    }

    /// The objects under `url` that can hold events `filter` keeps.
    pub fn list(&self, url: &S3Url, filter: &Filter) -> anyhow::Result<Vec<Input>> {
        self.rt.block_on(async {
            let mut jobs = Vec::new();
            let mut found = Vec::new();
            self.discover(&url.bucket, url.prefix.clone(), filter, 0, &mut jobs, &mut found).await?;
            // The full listings (one per region and day) run concurrently.
            let sem = Arc::new(tokio::sync::Semaphore::new(LIST_CONCURRENCY));
            let mut set = tokio::task::JoinSet::new();
            for prefix in jobs {
                let (client, calls, sem, bucket) =
                    (self.client.clone(), Arc::clone(&self.list_calls), Arc::clone(&sem), url.bucket.clone());
                set.spawn(async move {
                    let _permit = sem.acquire().await;
                    list_page(&client, &calls, &bucket, &prefix, false).await.map(|(objects, _)| objects)
                });
            }
            while let Some(r) = set.join_next().await {
                found.extend(r.context("a listing task failed")??);
            }
            Ok(found.into_iter().map(|(key, size)| Input::S3 { bucket: url.bucket.clone(), key, size }).collect())
        })
    }

    /// Walks the folder layout down to the prefixes to list whole.
    fn discover<'a>(
        &'a self,
        bucket: &'a str,
        prefix: String,
        filter: &'a Filter,
        depth: u32,
        jobs: &'a mut Vec<String>,
        found: &'a mut Vec<(String, u64)>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let segs = last_segments(&prefix);
            let n = segs.len();
            // <account>/CloudTrail/<region>/
            if n >= 3 && is_account(segs[n - 3]) && segs[n - 2] == "CloudTrail" {
                jobs.extend(day_prefixes(&prefix, filter));
                return Ok(());
            }
            // <account>/CloudTrail/: the regions.
            if n >= 2 && is_account(segs[n - 2]) && segs[n - 1] == "CloudTrail" {
                let (_, regions) = list_page(&self.client, &self.list_calls, bucket, &prefix, true).await?;
                for r in regions {
                    let region = last_segments(&r).last().map(|s| s.to_string()).unwrap_or_default();
                    if filter.regions.is_empty() || filter.regions.contains(&region) {
                        jobs.extend(day_prefixes(&r, filter));
                    }
                }
                return Ok(());
            }
            // <account>/: its CloudTrail folder (not digests or Insights).
            if n >= 1 && is_account(segs[n - 1]) {
                if filter.accounts.is_empty() || filter.accounts.iter().any(|a| a == segs[n - 1]) {
                    return self.discover(bucket, format!("{prefix}CloudTrail/"), filter, depth + 1, jobs, found).await;
                }
                return Ok(());
            }
            // Below a region (a date folder given by hand), or too deep: all of it.
            if (n >= 4 && segs[..n - 1].contains(&"CloudTrail")) || depth > 6 {
                jobs.push(prefix);
                return Ok(());
            }
            // Anything else (bucket root, AWSLogs/, AWSLogs/o-…/, a custom
            // prefix): look one level down.
            let (objects, children) = list_page(&self.client, &self.list_calls, bucket, &prefix, true).await?;
            found.extend(objects);
            for child in children {
                let name = last_segments(&child).last().map(|s| s.to_string()).unwrap_or_default();
                if is_account(&name) || name == "AWSLogs" || name.starts_with("o-") {
                    self.discover(bucket, child, filter, depth + 1, jobs, found).await?;
                } else {
                    jobs.push(child);
                }
            }
            Ok(())
        })
    }

    /// One object's bytes (called from the loader threads).
    pub fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        self.get_calls.fetch_add(1, Ordering::Relaxed);
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("GetObject: {}", aws::error_text(&e)))?;
            let body = out.body.collect().await.context("reading the object body")?;
            Ok(body.into_bytes().to_vec())
        })
    }
}

/// The prefixes to list under a region folder: one per day in range, or the
/// whole folder when the range is open or long.
fn day_prefixes(region_root: &str, filter: &Filter) -> Vec<String> {
    let (Some(since), Some(until)) = (filter.since_ms, filter.until_ms.or_else(|| Some(now_ms()))) else {
        return vec![region_root.to_string()];
    };
    // A file's name time is at most `lookahead` after its events.
    let last = until.saturating_add(filter.lookahead_ms);
    let day = |ms: i64| OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok().map(|t| t.date());
    let (Some(mut d), Some(end)) = (day(since), day(last)) else {
        return vec![region_root.to_string()];
    };
    if (end - d).whole_days() > MAX_DAY_LISTINGS || end < d {
        return vec![region_root.to_string()];
    }
    let mut out = Vec::new();
    while d <= end {
        out.push(format!("{region_root}{:04}/{:02}/{:02}/", d.year(), u8::from(d.month()), d.day()));
        match d.next_day() {
            Some(n) => d = n,
            None => break,
        }
    }
    out
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// All pages of one ListObjectsV2: (key, size) of the objects and, with
/// `delimited`, the common prefixes one level down.
async fn list_page(
    client: &aws_sdk_s3::Client,
    calls: &AtomicU64,
    bucket: &str,
    prefix: &str,
    delimited: bool,
) -> anyhow::Result<(Vec<(String, u64)>, Vec<String>)> {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        calls.fetch_add(1, Ordering::Relaxed);
        let mut req = client.list_objects_v2().bucket(bucket).prefix(prefix);
        if delimited {
            req = req.delimiter("/");
        }
        if let Some(t) = &token {
            req = req.continuation_token(t);
        }
        let out = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("ListObjectsV2 s3://{bucket}/{prefix}: {}", aws::error_text(&e)))?;
        for o in out.contents() {
            if let Some(k) = o.key() {
                if !k.ends_with('/') {
                    objects.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
        }
        prefixes.extend(out.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok((objects, prefixes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = S3Url::parse("s3://b/AWSLogs/o-abc").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("b", "AWSLogs/o-abc/"));
        assert_eq!(S3Url::parse("s3://b").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3:///x"), None);
        assert_eq!(S3Url::parse("/tmp/x"), None);
    }

    #[test]
    fn one_day_lists_one_day() {
        let t = |s: &str| trailwatch_rules::detect::parse_rfc3339_ms(s);
        let f = Filter {
            since_ms: t("2026-11-02T00:00:00Z"),
            until_ms: t("2026-11-02T12:00:00Z"),
            lookahead_ms: 15 * 60_000,
            ..Filter::default()
        };
        assert_eq!(day_prefixes("a/1/CloudTrail/us-east-1/", &f), ["a/1/CloudTrail/us-east-1/2026/11/02/"]);
        // The last files of a day are delivered after midnight.
        let f = Filter { until_ms: t("2026-11-03T00:00:00Z"), ..f };
        assert_eq!(day_prefixes("r/", &f), ["r/2026/11/02/", "r/2026/11/03/"]);
        let open = Filter { since_ms: None, ..f };
        assert_eq!(day_prefixes("r/", &open), ["r/"]);
    }
}
