//! The Security Lake sink end to end against moto S3: the demo events become
//! OCSF Detection Finding Parquet objects in the custom source's partition
//! layout, read back by pyarrow (not our reader): OCSF 2004 field names and
//! types, one row per finding the `ocsf-jsonl` sink writes for the same run,
//! rows sorted by time. A kill -9 after the findings are staged (committed)
//! but before the upload loses nothing: the next start uploads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trailwatch_processor::config::Config;
use trailwatch_processor::ruleset;
use trailwatch_processor::service::{self, RunOptions};
use trailwatch_rules::RuleSet;
use trailwatch_tests::chaos::start_run;
use trailwatch_tests::fixtures::{file_source_toml, service_toml, write_lines};
use trailwatch_tests::{aws_env, repo_root, trailwatch_bin, Server};

const BUCKET: &str = "aws-security-data-lake-us-east-1-test";

/// An S3 client of `server` with the lake's bucket created.
async fn lake_bucket(server: &Server) -> aws_sdk_s3::Client {
    let sdk = server.sdk_config().await;
    let client = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    client
}

/// moto with the lake's bucket (and its S3 client), and a test directory
/// with [`EVERY_DENIAL`] in its `rules/`.
async fn lake_with_denials() -> (Server, aws_sdk_s3::Client, tempfile::TempDir) {
    aws_env();
    let server = Server::moto().unwrap();
    let client = lake_bucket(&server).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/denial.yml"), EVERY_DENIAL).unwrap();
    (server, client, dir)
}

/// The head of a config: `server`'s AWS section, state in `dir` committed
/// every 100 ms, the rules of `dir/rules` only.
fn head_toml(server: &Server, dir: &Path) -> String {
    format!(
        r#"
        {aws}
        {service}
        [rules]
        builtin = false
        paths = ["{rules}"]
        "#,
        aws = server.aws_section(),
        service = service_toml(&dir.join("state"), "100ms"),
        rules = dir.join("rules").display(),
    )
}

/// A security-lake sink `name` uploading through the provider role (moto's
/// STS answers AssumeRole) beside an ocsf-jsonl sink writing `jsonl`, and
/// no metrics endpoint.
fn lake_and_ocsf_sinks(name: &str, jsonl: &Path) -> String {
    format!(
        r#"
        [sinks.{name}]
        type = "security-lake"
        bucket = "{BUCKET}"
        source_name = "trailwatch"
        role_arn = "arn:aws:iam::123456789012:role/AmazonSecurityLake-Provider-trailwatch"
        external_id = "trailwatch-test"
        {ocsf}
        "#,
        ocsf = ocsf_out_toml(jsonl),
    )
}

/// An ocsf-jsonl sink writing `jsonl`, and no metrics endpoint.
fn ocsf_out_toml(jsonl: &Path) -> String {
    format!("[sinks.ocsf]\ntype = \"ocsf-jsonl\"\npath = \"{}\"\n[metrics]\nenabled = false\n", jsonl.display())
}

/// The rules `cfg` names, compiled as `trailwatch run` does.
fn rules_of(cfg: &Config) -> Arc<RuleSet> {
    let opts = ruleset::compile_options(cfg, cfg.rules.builtin).unwrap();
    let (set, _) = ruleset::load(&cfg.rules.paths, cfg.rules.builtin, &opts).unwrap();
    Arc::new(set)
}

/// Runs the service until its inputs are done (`secs` at the most).
async fn run_to_end(cfg: Config, set: Arc<RuleSet>, opts: RunOptions, secs: u64) {
    tokio::time::timeout(Duration::from_secs(secs), service::run(cfg, set, opts, std::future::pending()))
        .await
        .expect("the run ends")
        .expect("the run succeeds");
}

/// A running service, stopped by [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<anyhow::Result<service::RunSummary>>,
}

impl Running {
    fn start(cfg: Config, opts: RunOptions) -> Running {
        let set = rules_of(&cfg);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(service::run(cfg, set, opts, async move {
            let _ = stop_rx.await;
        }));
        Running { stop, run }
    }

    /// Shuts the service down; it must end within 60 s, successfully.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.run).await.expect("the run ends").unwrap().unwrap();
    }
}

/// Every object in the bucket, downloaded under `to` by key.
async fn download_all(client: &aws_sdk_s3::Client, to: &Path) -> Vec<(String, PathBuf)> {
    let list = client.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let mut out = Vec::new();
    for o in list.contents() {
        let key = o.key().unwrap().to_string();
        let body = client.get_object().bucket(BUCKET).key(&key).send().await.unwrap().body.collect().await.unwrap();
        let path = to.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body.into_bytes()).unwrap();
        out.push((key, path));
    }
    out
}

/// pyarrow's reading of each file (tests/read_parquet.py), by path.
fn read_with_pyarrow(files: &[PathBuf]) -> BTreeMap<PathBuf, serde_json::Value> {
    let root = repo_root();
    let o = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/read_parquet.py"))
        .args(files)
        .output()
        .expect("python runs (pyarrow is installed into .venv by scripts/test)");
    assert!(o.status.success(), "pyarrow could not read the files: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (PathBuf::from(v["path"].as_str().unwrap()), v)
        })
        .collect()
}

/// `ext/<source>/region=<r>/accountId=<a>/eventDay=<YYYYMMDD>/<file>.parquet` → (r, a, day).
fn partition_of(key: &str) -> (String, String, String) {
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 6, "{key}");
    assert_eq!(&parts[..2], &["ext", "trailwatch"], "{key}");
    let region = parts[2].strip_prefix("region=").unwrap_or_else(|| panic!("{key}"));
    let account = parts[3].strip_prefix("accountId=").unwrap_or_else(|| panic!("{key}"));
    let day = parts[4].strip_prefix("eventDay=").unwrap_or_else(|| panic!("{key}"));
    assert!(!region.is_empty() && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    assert!(account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()), "{key}");
    assert!(day.len() == 8 && day.chars().all(|c| c.is_ascii_digit()), "{key}");
    assert!(parts[5].ends_with(".parquet"), "{key}");
    (region.into(), account.into(), day.into())
}

fn day_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_findings_become_ocsf_parquet_in_the_lake_layout() {
    aws_env();
    let server = Server::moto().unwrap();
    let client = lake_bucket(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("ocsf.ndjson");
    let text = format!(
        r#"
        {aws}
        {service}
        {source}
        {sinks}
        "#,
        aws = server.aws_section(),
        service = service_toml(&dir.path().join("state"), "100ms"),
        source = file_source_toml(&repo_root().join("examples/events/demo-cloudtrail.ndjson"), true),
        sinks = lake_and_ocsf_sinks("lake", &jsonl),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    let (set, _) = ruleset::compile(&ruleset::builtin_files(), &ruleset::test_options().unwrap()).unwrap();
    run_to_end(cfg, Arc::new(set), RunOptions::default(), 120).await;

    // What the same run wrote as OCSF JSON lines: the rows expected, by partition.
    let want = jsonl_rows(&jsonl);
    assert!(count(&want) > 0, "the demo events make findings");

    let objects = download_all(&client, &dir.path().join("lake")).await;
    assert!(!objects.is_empty(), "no objects in the lake");
    let read = read_objects(&objects);
    // Rows, partitions, order by time, days, accounts and class: lake_rows's checks.
    let (got, _) = rows_of(&objects, &read);
    for (key, path) in &objects {
        let r = &read[path];
        // OCSF 2004 names and types, nested objects as structs.
        let schema = r["schema"].as_object().unwrap();
        for (field, ty) in [
            ("activity_id", "int32"),
            ("category_uid", "int32"),
            ("class_uid", "int32"),
            ("type_uid", "int64"),
            ("severity_id", "int32"),
            ("status_id", "int32"),
            ("time", "int64"),
            ("message", "string"),
        ] {
            assert_eq!(schema[field], ty, "{field} in {key}");
        }
        for (field, prefix) in [
            ("metadata", "struct<version: string, profiles: list<element: string>, product: struct<name: string"),
            ("cloud", "struct<provider: string, region: string, account: struct<uid: string>>"),
            (
                "finding_info",
                "struct<uid: string, title: string, desc: string, types: list<element: string>, first_seen_time: int64",
            ),
            ("resources", "list<element: struct<uid: string, type: string"),
            ("evidences", "list<element: struct<api: struct<operation: string"),
            ("observables", "list<element: struct<name: string, type_id: int32"),
            ("remediation", "struct<desc: string, references: list<element: string>>"),
            ("unmapped", "map<string, string"),
        ] {
            let ty = schema[field].as_str().unwrap_or_default();
            assert!(ty.starts_with(prefix), "{field} in {key}: {ty}");
        }
        assert_eq!(r["codecs"], serde_json::json!(["SNAPPY"]), "{key}");
        assert!(r["types"].as_array().unwrap().iter().all(|t| t.as_array().is_some_and(|t| !t.is_empty())));
        assert!(r["unmapped_keys"].as_array().unwrap().iter().all(|k| k
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "ProductFields")));
    }
    assert_eq!(got, want, "the lake holds exactly the run's findings, in their partitions");
    eprintln!(
        "{} findings → {} Parquet objects, {} rows, {} partitions",
        count(&want),
        objects.len(),
        count(&got),
        got.len()
    );
    let staged: Vec<_> = std::fs::read_dir(dir.path().join("state/security-lake/lake")).unwrap().flatten().collect();
    assert!(staged.is_empty(), "uploaded files are removed from staging: {staged:?}");
}

const EVERY_DENIAL: &str = r#"
title: every denial
id: 6f1d1b0e-0000-4000-8000-0000000000a1
level: medium
logsource: {product: aws, service: cloudtrail}
detection:
    sel: {errorCode: AccessDenied}
    condition: sel
"#;

/// Event `i`: one of two accounts and two regions (four partitions).
fn denial(i: u32) -> String {
    let account = ["123456789012", "210987654321"][(i % 2) as usize];
    let region = ["eu-west-1", "us-east-2"][(i / 2 % 2) as usize];
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:{m:02}:{s:02}Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","awsRegion":"{region}","errorCode":"AccessDenied","sourceIPAddress":"192.0.2.7","eventID":"00000000-0000-4000-8000-{i:012}","recipientAccountId":"{account}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{account}:user/u{i}","accountId":"{account}"}}}}"#,
        m = (i / 60) % 60,
        s = i % 60,
    )
}

fn lake_config(server: &Server, dir: &Path, input: &Path, exit_when_done: bool) -> PathBuf {
    let text = format!(
        r#"{head}
        {source}
        [sinks.lake]
        type = "security-lake"
        bucket = "{BUCKET}"
        source_name = "trailwatch"
        roll_age = "1h"
        [metrics]
        enabled = false
        "#,
        head = head_toml(server, dir),
        source = file_source_toml(input, exit_when_done),
    );
    let path = dir.join(format!("config-{exit_when_done}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn staged_rows(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir.join("state/security-lake/lake")) else { return 0 };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("open_"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_staging_loses_nothing() {
    let (server, client, dir) = lake_with_denials().await;
    const N: u32 = 300;
    let events = dir.path().join("events.ndjson");
    write_lines(&events, (0..N).map(denial));

    // First run: a service that keeps running (roll_age 1h: nothing is due
    // for upload); killed once every finding is staged.
    let mut child = start_run(&lake_config(&server, dir.path(), &events, false), dir.path().join("run-1.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_rows(dir.path()) < N as usize {
        assert!(Instant::now() < deadline, "findings were not staged: {}", staged_rows(dir.path()));
        child.assert_running();
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill9();
    assert_eq!(staged_rows(dir.path()), N as usize);
    let before = client.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    assert_eq!(before.key_count(), Some(0), "nothing was uploaded before the kill");

    // Second run over no new input: it uploads what the first one staged.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let o = Command::new(trailwatch_bin())
        .arg("run")
        .arg("--config")
        .arg(lake_config(&server, dir.path(), &empty, true))
        .env("TRAILWATCH_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "second run failed: {}", String::from_utf8_lossy(&o.stderr));
    // The day is the OCSF `time`'s (when the finding was made): lake_rows checks it.
    let objects = download_all(&client, &dir.path().join("lake")).await;
    let (got, _) = lake_rows(&objects);
    let partitions: std::collections::BTreeSet<(String, String)> =
        got.keys().map(|(region, account, _)| (region.clone(), account.clone())).collect();
    let uids: std::collections::BTreeSet<&String> = got.values().flatten().map(|r| &r.0).collect();
    let want: std::collections::BTreeSet<(String, String)> = [
        ("eu-west-1", "123456789012"),
        ("eu-west-1", "210987654321"),
        ("us-east-2", "123456789012"),
        ("us-east-2", "210987654321"),
    ]
    .iter()
    .map(|(r, a)| (r.to_string(), a.to_string()))
    .collect();
    assert_eq!(partitions, want, "one file per region and account");
    assert_eq!(objects.len(), 4, "one file per partition");
    assert_eq!(count(&got), N as usize, "every staged finding arrived, once");
    assert_eq!(uids.len(), N as usize, "distinct findings");
    assert_eq!(staged_rows(dir.path()), 0);
}

/// (uid, activity_id, time) of the rows of each partition, sorted.
type Rows = BTreeMap<(String, String, String), Vec<(String, i64, i64)>>;

/// What an `ocsf-jsonl` sink wrote, by the partition each row belongs in:
/// the event's region and account, the UTC day of the row's `time`.
fn jsonl_rows(path: &Path) -> Rows {
    let mut out = Rows::new();
    for l in std::fs::read_to_string(path).unwrap().lines() {
        let o: serde_json::Value = serde_json::from_str(l).unwrap();
        let pf = &o["unmapped"]["ProductFields"];
        let region = pf["trailwatch/EventRegion"].as_str().or(o["cloud"]["region"].as_str()).unwrap().to_string();
        let account = o["cloud"]["account"]["uid"].as_str().unwrap().to_string();
        let time = o["time"].as_i64().unwrap();
        let uid = o["finding_info"]["uid"].as_str().unwrap().to_string();
        out.entry((region, account, day_of(time))).or_default().push((uid, o["activity_id"].as_i64().unwrap(), time));
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// The lake's rows by partition, read by pyarrow, with the checks every
/// file must pass: in its partition's layout, non-empty, sorted by `time`,
/// every row of the partition's day and account, class 2004. Also the
/// number of files per partition.
fn lake_rows(objects: &[(String, PathBuf)]) -> (Rows, BTreeMap<(String, String, String), usize>) {
    rows_of(objects, &read_objects(objects))
}

/// pyarrow's reading of every downloaded object, by path.
fn read_objects(objects: &[(String, PathBuf)]) -> BTreeMap<PathBuf, serde_json::Value> {
    let files: Vec<PathBuf> = objects.iter().map(|(_, p)| p.clone()).collect();
    let read = read_with_pyarrow(&files);
    assert_eq!(read.len(), objects.len());
    read
}

/// [`lake_rows`] of objects already read.
fn rows_of(
    objects: &[(String, PathBuf)],
    read: &BTreeMap<PathBuf, serde_json::Value>,
) -> (Rows, BTreeMap<(String, String, String), usize>) {
    let mut rows = Rows::new();
    let mut files_per = BTreeMap::new();
    for (key, path) in objects {
        let part = partition_of(key);
        let r = &read[path];
        let n = r["num_rows"].as_u64().unwrap() as usize;
        assert!(n > 0, "{key} is empty");
        let times: Vec<i64> = r["time"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{key} is not sorted by time");
        assert!(times.iter().all(|t| day_of(*t) == part.2), "{key}: a row of another day");
        assert!(r["account"].as_array().unwrap().iter().all(|a| a == part.1.as_str()), "{key}: another account");
        assert!(r["class_uid"].as_array().unwrap().iter().all(|c| c == 2004), "{key}");
        let uids = r["uid"].as_array().unwrap();
        let acts = r["activity_id"].as_array().unwrap();
        assert_eq!((uids.len(), acts.len(), times.len()), (n, n, n));
        let e = rows.entry(part.clone()).or_default();
        for ((u, a), t) in uids.iter().zip(acts).zip(&times) {
            e.push((u.as_str().unwrap().to_string(), a.as_i64().unwrap(), *t));
        }
        *files_per.entry(part).or_insert(0) += 1;
    }
    rows.values_mut().for_each(|v| v.sort());
    (rows, files_per)
}

fn count(rows: &Rows) -> usize {
    rows.values().map(Vec::len).sum()
}

/// A generated org's traffic (the load generator's realistic day, reduced:
/// 4 accounts, 2 regions, 4 hours across midnight at 1 event/s, about 14,000
/// events, plus every attack scenario twice) through the service with the Security Lake sink and the
/// OCSF JSON-lines sink side by side: the lake holds exactly the JSON-lines
/// rows (finding ids, activities, times), each in the partition of its
/// finding's region, account and day. Processing time is pinned to the
/// start of the data, so a finding's `time` is its last event's time and
/// the rows spread over two event days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_day_lands_in_the_lake_as_the_ocsf_sink_writes_it() {
    use clap::Parser;
    const START: &str = "2026-11-02T22:00:00Z";
    let t0 = Instant::now();
    aws_env();
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    let cli = trailwatch_loadtest::cli::Cli::parse_from([
        "trailwatch-loadtest",
        "generate",
        "--out",
        ds.to_str().unwrap(),
        "--seed",
        "22",
        "--accounts",
        "4",
        // eu-west-1 first (the workload's primary region): regional attacks
        // land there, global services' in us-east-1.
        "--regions",
        "eu-west-1,us-east-1",
        "--start",
        START,
        "--duration",
        "4h",
        "--rate",
        "1",
        "--repeat",
        "2",
        "--format",
        "ndjson",
        "--no-progress",
    ]);
    assert_eq!(trailwatch_loadtest::cli::run(cli).unwrap(), 0);

    let server = Server::moto().unwrap();
    let client = lake_bucket(&server).await;
    let jsonl = dir.path().join("ocsf.ndjson");
    // The dataset's org config (rules, org accounts), with our inputs and sinks.
    let mut cfg = Config::load(Some(&ds.join("trailwatch.toml"))).unwrap();
    let overlay: Config = toml::from_str(&format!(
        r#"
        {aws}
        {service}
        [sources.day]
        type = "file"
        paths = ["{input}"]
        {sinks}
        "#,
        aws = server.aws_section(),
        service = service_toml(&dir.path().join("state"), "200ms"),
        input = ds.join("ndjson").display(),
        sinks = lake_and_ocsf_sinks("lake_day", &jsonl),
    ))
    .unwrap();
    cfg.aws = overlay.aws;
    cfg.service = overlay.service;
    cfg.sources = overlay.sources;
    cfg.sinks = overlay.sinks;
    cfg.metrics = overlay.metrics;
    cfg.validate().unwrap();
    let start = time::OffsetDateTime::parse(START, &time::format_description::well_known::Rfc3339).unwrap();
    let run_opts = RunOptions { now: Some(start), ..Default::default() };
    let set = rules_of(&cfg);
    run_to_end(cfg, set, run_opts, 600).await;

    let want = jsonl_rows(&jsonl);
    let objects = download_all(&client, &dir.path().join("lake")).await;
    let (got, files_per) = lake_rows(&objects);
    let days: std::collections::BTreeSet<&String> = want.keys().map(|k| &k.2).collect();
    let regions: std::collections::BTreeSet<&String> = want.keys().map(|k| &k.0).collect();
    let accounts: std::collections::BTreeSet<&String> = want.keys().map(|k| &k.1).collect();
    eprintln!(
        "generated day: {} OCSF rows in {} partitions ({} days, {} regions, {} accounts) → {} Parquet objects; {:.1}s",
        count(&want),
        want.len(),
        days.len(),
        regions.len(),
        accounts.len(),
        objects.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(count(&want) >= 100, "the generated day makes findings: {}", count(&want));
    assert!(days.len() >= 2 && regions.len() >= 2 && accounts.len() >= 2, "{:?}", want.keys());
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "the same partitions");
    assert_eq!(count(&got), count(&want), "the same number of rows");
    assert_eq!(got, want, "the same finding ids, activities and times in each partition");
    assert_eq!(files_per.values().sum::<usize>(), objects.len());
    let staged: Vec<_> =
        std::fs::read_dir(dir.path().join("state/security-lake/lake_day")).unwrap().flatten().collect();
    assert!(staged.is_empty(), "uploaded files are removed from staging: {staged:?}");
}

/// Findings of a whole run, one partition, more than three times
/// `roll_bytes` of OCSF JSON: several files, each of at most about
/// `roll_bytes` (a journal is closed at a row boundary), no row lost or
/// duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roll_by_size() {
    let (server, client, dir) = lake_with_denials().await;
    const N: u32 = 2000;
    // Every event in one account and region: one partition.
    let events = dir.path().join("events.ndjson");
    write_lines(&events, (0..N).map(|i| denial(i * 4)));
    let jsonl = dir.path().join("ocsf.ndjson");
    let text = format!(
        r#"{head}
        {source}
        batch_events = 200
        [sinks.lake_size]
        type = "security-lake"
        bucket = "{BUCKET}"
        source_name = "trailwatch"
        roll_bytes = 1048576
        roll_age = "1h"
        {ocsf}
        "#,
        head = head_toml(&server, dir.path()),
        source = file_source_toml(&events, true),
        ocsf = ocsf_out_toml(&jsonl),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    let set = rules_of(&cfg);
    run_to_end(cfg, set, RunOptions::default(), 300).await;

    let json_bytes = std::fs::metadata(&jsonl).unwrap().len();
    let want = jsonl_rows(&jsonl);
    let objects = download_all(&client, &dir.path().join("lake")).await;
    let (got, files_per) = lake_rows(&objects);
    let parquet_bytes: u64 = objects.iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
    eprintln!(
        "{N} findings, {json_bytes} bytes of OCSF JSON → {} files, {parquet_bytes} bytes of Parquet: {files_per:?}",
        objects.len()
    );
    assert_eq!(count(&want), N as usize);
    assert_eq!(want.len(), 1, "one partition");
    assert_eq!(got, want, "every finding once");
    let files = *files_per.values().next().unwrap();
    // Each file holds at most roll_bytes of JSON rows: at least
    // json_bytes / roll_bytes files (the journal's rows are the sink's own
    // serialisation of the same rows, so allow one more either way).
    let least = (json_bytes / 1048576) as usize;
    assert!(least >= 3, "the test needs more than 3 roll sizes of findings: {json_bytes} bytes");
    assert!((least..=least + 2).contains(&files), "{files} files for {json_bytes} bytes of rows");
}

/// An EventBridge delivery of a denial (as an SQS subscription receives it).
fn eventbridge(i: u32) -> String {
    let record = denial(i);
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    serde_json::json!({
        "version": "0",
        "id": format!("10000000-0000-4000-8000-{i:012}"),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.iam",
        "account": v["recipientAccountId"],
        "time": v["eventTime"],
        "region": v["awsRegion"],
        "resources": [],
        "detail": v,
    })
    .to_string()
}

/// A config of the service reading `queue_url` (or `input` files, kept
/// open) with one security-lake sink `sink` rolling after `roll_age`.
fn live_config(server: &Server, dir: &Path, input: &str, sink: &str, roll_age: &str, endpoint: &str) -> Config {
    let text = format!(
        r#"{head}
        {input}
        [sinks.{sink}]
        type = "security-lake"
        bucket = "{BUCKET}"
        source_name = "trailwatch"
        roll_age = "{roll_age}"
        endpoint_url = "{endpoint}"
        [metrics]
        listen = "127.0.0.1:0"
        "#,
        head = head_toml(server, dir),
    );
    toml::from_str(&text).unwrap()
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, secs: u64, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn object_count(client: &aws_sdk_s3::Client) -> usize {
    client.list_objects_v2().bucket(BUCKET).send().await.map(|l| l.contents().len()).unwrap_or(0)
}

/// Findings arriving in waves, each wave after the last one's files are in
/// the lake: a partition's journal is rolled when it reaches `roll_age`
/// although no further commit comes (the uploader checks the age), so each
/// wave is one more file per partition, while the service keeps running.
/// `roll_age` is 2 s here, under the 5 minutes the config check demands
/// (Security Lake's delivery window), to keep the test short: the
/// config is built without `validate` for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roll_by_age_on_a_quiet_stream() {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let (server, client, dir) = lake_with_denials().await;
    let sqs = aws_sdk_sqs::Client::new(&server.sdk_config().await);
    let url = sqs.create_queue().queue_name("lake-age").send().await.unwrap().queue_url.unwrap();
    let input = format!("[sources.queue]\ntype = \"sqs\"\nqueue_url = \"{url}\"\nwait_time = \"1s\"");
    let cfg = live_config(&server, dir.path(), &input, "lake_age", "2s", &server.endpoint);
    assert!(cfg.validate().is_err(), "2s is below the configurable roll_age");
    let running = Running::start(cfg, RunOptions::default());

    const WAVES: u32 = 3;
    const PER_WAVE: u32 = 40; // 10 per partition (two accounts x two regions)
    for w in 0..WAVES {
        let ids: Vec<u32> = (w * PER_WAVE..(w + 1) * PER_WAVE).collect();
        for chunk in ids.chunks(10) {
            let entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .map(|i| {
                    SendMessageBatchRequestEntry::builder().id(format!("m{i}")).message_body(eventbridge(*i)).build()
                })
                .collect::<Result<_, _>>()
                .unwrap();
            let out = sqs.send_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        }
        // Rolled by age while the service runs; the wave's last findings
        // may come after a roll (a slow receive), hence at least.
        let want = 4 * (w as usize + 1);
        let d = dir.path().to_path_buf();
        wait_for("the wave's files", 90, || {
            let d = d.clone();
            let (client, sqs, url) = (&client, &sqs, &url);
            async move {
                object_count(client).await >= want
                    && staged_files(&d, "lake_age").is_empty()
                    && sqs_idle(sqs, url).await
            }
        })
        .await;
    }
    running.stop().await;

    let objects = download_all(&client, &dir.path().join("lake")).await;
    let (got, files_per) = lake_rows(&objects);
    assert_eq!(files_per.len(), 4, "{files_per:?}");
    assert!(files_per.values().all(|n| *n >= WAVES as usize), "a file per wave and partition: {files_per:?}");
    assert_eq!(count(&got), (WAVES * PER_WAVE) as usize, "every finding, once");
    let uids: std::collections::BTreeSet<&String> = got.values().flatten().map(|r| &r.0).collect();
    assert_eq!(uids.len(), (WAVES * PER_WAVE) as usize, "distinct findings");
}

/// No message waits in the queue or is in flight (the source took and
/// deleted them all).
async fn sqs_idle(sqs: &aws_sdk_sqs::Client, url: &str) -> bool {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let Ok(a) = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
    else {
        return false;
    };
    let attrs = a.attributes().cloned().unwrap_or_default();
    [A::ApproximateNumberOfMessages, A::ApproximateNumberOfMessagesNotVisible]
        .iter()
        .all(|k| attrs.get(k).map(String::as_str) == Some("0"))
}

static METRICS_ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

fn on_listen(a: std::net::SocketAddr) {
    let _ = METRICS_ADDR.set(a);
}

/// One HTTP/1.0 GET on the metrics endpoint: (status, body).
fn get(path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    // The service binds its endpoint after start-up: the first polls may come
    // before it (a loaded machine), so wait for it, within a bound.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Some(a) = METRICS_ADDR.get() {
            break *a;
        }
        assert!(std::time::Instant::now() < until, "the metrics endpoint listens within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn metric(name_and_labels: &str) -> f64 {
    let (_, text) = get("/metrics");
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn staged_files(dir: &Path, sink: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir.join("state/security-lake").join(sink)) else { return Vec::new() };
    let mut v: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// S3 answers every PutObject with a 500 or a SlowDown (the fault proxy
/// between the SDK and moto): the Parquet files stay staged, /readyz says
/// not ready, the error counter grows with the retries; once S3 answers
/// again every file is uploaded, and each exactly once (every PutObject the
/// proxy saw was either a fault it injected or one of the files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upload_stays_staged_and_is_retried_once_s3_is_back() {
    use trailwatch_tests::faults::{Fault, FaultConfig, FaultProxy, Service};
    let (server, client, dir) = lake_with_denials().await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultConfig {
            faults: vec![Fault::ServerError, Fault::Throttle],
            every_kind_early: false,
            ..FaultConfig::new(22, 1.0, &[Service::S3])
        },
    )
    .unwrap();
    const N: u32 = 200;
    let events = dir.path().join("events.ndjson");
    write_lines(&events, (0..N).map(denial));
    let input = file_source_toml(&events, false);
    // roll_age 2 s (below the configurable 5 min, see the age test): the
    // files are rolled and their uploads tried while the service runs.
    let cfg = live_config(&server, dir.path(), &input, "lake_retry", "2s", &proxy.endpoint);
    let running = Running::start(cfg, RunOptions { on_listen: Some(on_listen), ..Default::default() });

    let errors = r#"trailwatch_security_lake_upload_errors_total{sink="lake_retry"}"#;
    let d = dir.path().to_path_buf();
    wait_for("failed uploads and their retries", 120, || {
        let d = d.clone();
        async move {
            // Every finding rolled into a staged file (no journal left), at
            // least one per partition, and retried at least twice.
            tokio::task::spawn_blocking(move || {
                let staged = staged_files(&d, "lake_retry");
                metric(errors) >= 3.0
                    && staged.iter().filter(|f| f.starts_with("ready_")).count() >= 4
                    && !staged.iter().any(|f| f.starts_with("open_"))
            })
            .await
            .unwrap()
        }
    })
    .await;
    let (ready, body) = tokio::task::spawn_blocking(|| get("/readyz")).await.unwrap();
    assert_eq!(ready, 503, "not ready while uploads fail: {body}");
    assert!(body.contains("lake_retry"), "{body}");
    assert_eq!(object_count(&client).await, 0, "nothing reached S3");
    let staged = staged_files(dir.path(), "lake_retry");
    assert!(staged.iter().all(|f| f.starts_with("ready_") && f.ends_with(".parquet")), "{staged:?}");
    let files = staged.len();
    let faults_before = proxy.injected_into(Service::S3);
    assert!(faults_before >= 3, "{}", proxy.summary());

    proxy.heal();
    wait_for("the uploads after S3 recovered", 120, || async { object_count(&client).await == files }).await;
    wait_for("ready again", 30, || async { tokio::task::spawn_blocking(|| get("/readyz").0 == 200).await.unwrap() })
        .await;
    let uploaded =
        tokio::task::spawn_blocking(|| metric(r#"trailwatch_security_lake_files_uploaded_total{sink="lake_retry"}"#))
            .await
            .unwrap();
    running.stop().await;

    eprintln!("fault proxy: {}", proxy.summary());
    assert_eq!(uploaded, files as f64, "every staged file uploaded, once");
    let puts = proxy.requests().get(&Service::S3).copied().unwrap_or(0);
    assert_eq!(
        puts,
        proxy.injected_into(Service::S3) + files as u64,
        "every PutObject was a fault or one of the files"
    );
    assert!(staged_files(dir.path(), "lake_retry").is_empty(), "nothing left staged");
    let objects = download_all(&client, &dir.path().join("lake")).await;
    let (got, files_per) = lake_rows(&objects);
    assert_eq!(files_per.len(), 4, "two accounts x two regions: {files_per:?}");
    assert_eq!(objects.len(), files);
    assert_eq!(count(&got), N as usize);
    let uids: std::collections::BTreeSet<&String> = got.values().flatten().map(|r| &r.0).collect();
    assert_eq!(uids.len(), N as usize, "every finding once");
}
