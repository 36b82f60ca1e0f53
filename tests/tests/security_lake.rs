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
use trailwatch_tests::{aws_env, repo_root, trailwatch_bin, Server};

const BUCKET: &str = "aws-security-data-lake-us-east-1-test";

async fn s3(server: &Server) -> aws_sdk_s3::Client {
    let sdk = server.sdk_config().await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build())
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
    let client = s3(&server).await;
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("ocsf.ndjson");
    let text = format!(
        r#"
        {aws}
        [service]
        state_dir = "{state}"
        commit_interval = "100ms"
        [sources.files]
        type = "file"
        paths = ["{input}"]
        exit_when_done = true
        [sinks.lake]
        type = "security-lake"
        bucket = "{BUCKET}"
        source_name = "trailwatch"
        # moto's STS answers AssumeRole: the uploads go through the role path.
        role_arn = "arn:aws:iam::123456789012:role/AmazonSecurityLake-Provider-trailwatch"
        external_id = "trailwatch-test"
        [sinks.ocsf]
        type = "ocsf-jsonl"
        path = "{jsonl}"
        [metrics]
        enabled = false
        "#,
        aws = server.aws_section(),
        state = dir.path().join("state").display(),
        input = repo_root().join("examples/events/demo-cloudtrail.ndjson").display(),
        jsonl = jsonl.display(),
    );
    let cfg: Config = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    let (set, _) = ruleset::compile(&ruleset::builtin_files(), &ruleset::test_options().unwrap()).unwrap();
    let opts = RunOptions::default();
    tokio::time::timeout(Duration::from_secs(120), service::run(cfg, Arc::new(set), opts, std::future::pending()))
        .await
        .expect("the run ends")
        .expect("the run succeeds");

    // What the same run wrote as OCSF JSON lines: the rows expected, by partition.
    let expected: Vec<serde_json::Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!expected.is_empty(), "the demo events make findings");
    let mut want: BTreeMap<(String, String, String), Vec<(String, i64)>> = BTreeMap::new();
    for o in &expected {
        let pf = &o["unmapped"]["ProductFields"];
        let region = pf["trailwatch/EventRegion"].as_str().or(o["cloud"]["region"].as_str()).unwrap().to_string();
        let account = o["cloud"]["account"]["uid"].as_str().unwrap().to_string();
        let time = o["time"].as_i64().unwrap();
        let uid = o["finding_info"]["uid"].as_str().unwrap().to_string();
        want.entry((region, account, day_of(time))).or_default().push((uid, o["activity_id"].as_i64().unwrap()));
    }

    let objects = download_all(&client, &dir.path().join("lake")).await;
    assert!(!objects.is_empty(), "no objects in the lake");
    let files: Vec<PathBuf> = objects.iter().map(|(_, p)| p.clone()).collect();
    let read = read_with_pyarrow(&files);
    assert_eq!(read.len(), objects.len());
    let mut got: BTreeMap<(String, String, String), Vec<(String, i64)>> = BTreeMap::new();
    for (key, path) in &objects {
        let part = partition_of(key);
        let r = &read[path];
        let n = r["num_rows"].as_u64().unwrap() as usize;
        assert!(n > 0, "{key} is empty");
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
        let times: Vec<i64> = r["time"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{key} is not sorted by time: {times:?}");
        assert!(times.iter().all(|t| day_of(*t) == part.2), "{key}: a row of another day");
        assert!(r["class_uid"].as_array().unwrap().iter().all(|c| c == 2004));
        assert!(r["account"].as_array().unwrap().iter().all(|a| a == part.1.as_str()), "{key}: another account");
        assert!(r["types"].as_array().unwrap().iter().all(|t| t.as_array().is_some_and(|t| !t.is_empty())));
        assert!(r["unmapped_keys"].as_array().unwrap().iter().all(|k| k
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "ProductFields")));
        let uids = r["uid"].as_array().unwrap();
        let acts = r["activity_id"].as_array().unwrap();
        assert_eq!(uids.len(), n);
        let entry = got.entry(part).or_default();
        for (u, a) in uids.iter().zip(acts) {
            entry.push((u.as_str().unwrap().to_string(), a.as_i64().unwrap()));
        }
    }
    for v in want.values_mut().chain(got.values_mut()) {
        v.sort();
    }
    assert_eq!(got, want, "the lake holds exactly the run's findings, in their partitions");
    let rows: usize = got.values().map(Vec::len).sum();
    eprintln!("{} findings → {} Parquet objects, {rows} rows, {} partitions", expected.len(), objects.len(), got.len());
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
        r#"
        {aws}
        [service]
        state_dir = "{state}"
        commit_interval = "100ms"
        [rules]
        builtin = false
        paths = ["{rules}"]
        [sources.files]
        type = "file"
        paths = ["{input}"]
        exit_when_done = {exit_when_done}
        [sinks.lake]
        type = "security-lake"
        bucket = "{BUCKET}"
        source_name = "trailwatch"
        roll_age = "1h"
        [metrics]
        enabled = false
        "#,
        aws = server.aws_section(),
        state = dir.join("state").display(),
        rules = dir.join("rules").display(),
        input = input.display(),
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
    aws_env();
    let server = Server::moto().unwrap();
    let client = s3(&server).await;
    client.create_bucket().bucket(BUCKET).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/denial.yml"), EVERY_DENIAL).unwrap();
    const N: u32 = 300;
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, (0..N).map(denial).collect::<Vec<_>>().join("\n") + "\n").unwrap();

    // First run: a service that keeps running (roll_age 1h: nothing is due
    // for upload); killed once every finding is staged.
    let log = std::fs::File::create(dir.path().join("run-1.log")).unwrap();
    let mut child = Command::new(trailwatch_bin())
        .arg("run")
        .arg("--config")
        .arg(lake_config(&server, dir.path(), &events, false))
        .env("TRAILWATCH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_rows(dir.path()) < N as usize {
        assert!(Instant::now() < deadline, "findings were not staged: {}", staged_rows(dir.path()));
        assert!(child.try_wait().unwrap().is_none(), "trailwatch exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
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
    let objects = download_all(&client, &dir.path().join("lake")).await;
    let files: Vec<PathBuf> = objects.iter().map(|(_, p)| p.clone()).collect();
    let read = read_with_pyarrow(&files);
    let mut partitions = std::collections::BTreeSet::new();
    let mut uids = std::collections::BTreeSet::new();
    for (key, path) in &objects {
        let r = &read[path];
        let (region, account, day) = partition_of(key);
        // The day is the OCSF `time`'s: when the finding was made.
        let times: Vec<i64> = r["time"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{key} is not sorted by time");
        assert!(times.iter().all(|t| day_of(*t) == day), "{key}");
        assert!(r["account"].as_array().unwrap().iter().all(|a| a == account.as_str()), "{key}");
        assert_eq!(r["num_rows"].as_u64().unwrap() as usize, times.len());
        uids.extend(r["uid"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()));
        partitions.insert((region, account));
    }
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
    let rows: u64 = read.values().map(|r| r["num_rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, N as u64, "every staged finding arrived, once");
    assert_eq!(uids.len(), N as usize, "distinct findings");
    assert_eq!(staged_rows(dir.path()), 0);
}
