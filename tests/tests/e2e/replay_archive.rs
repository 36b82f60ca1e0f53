//! Archive replay plans its read (issue 16): a generated multi-account,
//! multi-region CloudTrail archive in the S3 key layout (organization trail,
//! records unsorted inside each file, spanning midnight) gives exactly the
//! findings of the time-sorted stream whatever order its files come in, with
//! no late drops; `replay s3://` against moto reads only the objects that
//! --since/--until/--accounts/--regions select (GetObject requests counted in
//! moto's own request log), and lists only the date folders in range.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use clap::Parser;
use trailwatch_processor::config::Config;
use trailwatch_processor::replay::plan::parse_name;
use trailwatch_processor::replay::{replay, ArchiveOptions, ReplayOptions, ReplayStats};
use trailwatch_processor::ruleset;
use trailwatch_rules::RuleSet;
use trailwatch_tests::{files_under, Server, REGION};

const START: &str = "2026-11-02T22:30:00Z";

struct Dataset {
    root: PathBuf,
    set: Arc<RuleSet>,
}

/// 4 accounts x 2 regions x 3 hours of generated traffic with every attack
/// scenario, written once per test binary. A `static` is never dropped, so
/// a temporary directory would outlive every run in the system's temp
/// directory: it goes to Cargo's directory for integration tests' files
/// instead (under target/), written afresh by each run.
fn dataset() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay-archive-dataset");
        match std::fs::remove_dir_all(&out) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{}: {e}", out.display()),
            _ => {}
        }
        let cli = trailwatch_loadtest::cli::Cli::parse_from([
            "trailwatch-loadtest",
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--seed",
            "16",
            "--accounts",
            "4",
            "--regions",
            "us-east-1,eu-west-1",
            "--start",
            START,
            "--duration",
            "3h",
            "--rate",
            "2",
            "--org-trail",
            "--shuffle-records",
            "--no-progress",
        ]);
        assert_eq!(trailwatch_loadtest::cli::run(cli).unwrap(), 0);
        let cfg = Config::load(Some(&out.join("trailwatch.toml"))).unwrap();
        let opts = ruleset::compile_options(&cfg, true).unwrap();
        let (set, _) = ruleset::load(&cfg.rules.paths, true, &opts).unwrap();
        Dataset { root: out.join("cloudtrail"), set: Arc::new(set) }
    })
}

fn options(inputs: Vec<PathBuf>, archive: ArchiveOptions) -> ReplayOptions {
    ReplayOptions {
        now: time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_800),
        archive,
        ..trailwatch_tests::fixtures::replay_options(inputs)
    }
}

/// Finding Id → correlation count ("" for detections; the highest count
/// when a correlation finding was updated), and the stats.
fn run(set: &Arc<RuleSet>, opts: &ReplayOptions) -> (BTreeMap<String, String>, ReplayStats) {
    let mut out = Vec::new();
    let stats = replay(Arc::clone(set), opts, &mut out).unwrap();
    let mut ids = BTreeMap::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let count = v["ProductFields"]["trailwatch/Count"].as_str().unwrap_or("").to_string();
        let e: &mut String = ids.entry(v["Id"].as_str().unwrap().to_string()).or_default();
        if count.parse::<u64>().unwrap_or(0) >= e.parse::<u64>().unwrap_or(0) {
            *e = count;
        }
    }
    (ids, stats)
}

fn correlations(f: &BTreeMap<String, String>) -> usize {
    f.values().filter(|c| !c.is_empty()).count()
}

/// Every event of the archive, sorted by (event time, event id), as one NDJSON file.
fn sorted_stream(root: &Path, to: &Path) -> usize {
    let mut events: Vec<(i64, String, String)> = Vec::new();
    for f in files_under(root) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).unwrap()).read_to_string(&mut text).unwrap();
        let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(mut o)) if o.contains_key("Records") => {
                o.remove("Records").unwrap().as_array().unwrap().clone()
            }
            _ => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
        };
        for v in values {
            let t = v["eventTime"].as_str().or(v["time"].as_str()).unwrap();
            let t = trailwatch_rules::detect::parse_rfc3339_ms(t).unwrap();
            let id = v["eventID"].as_str().or(v["id"].as_str()).unwrap_or("").to_string();
            events.push((t, id, v.to_string()));
        }
    }
    events.sort();
    let mut w = std::io::BufWriter::new(std::fs::File::create(to).unwrap());
    for (_, _, json) in &events {
        writeln!(w, "{json}").unwrap();
    }
    w.flush().unwrap();
    events.len()
}

#[test]
fn any_file_order_gives_the_findings_of_the_time_sorted_stream() {
    let d = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let sorted = tmp.path().join("sorted.ndjson");
    let n = sorted_stream(&d.root, &sorted);
    let (want, s) = run(&d.set, &options(vec![sorted], ArchiveOptions::default()));
    assert!(s.streamed);
    assert_eq!(s.eval.events as usize, n);
    assert_eq!(s.eval.detector.late_dropped, 0);
    let corr = correlations(&want);
    assert!(corr >= 2, "the scenarios fire correlations in the sorted stream: {want:?}");
    eprintln!("sorted stream: {n} events, {} findings, {corr} correlation findings", want.len());

    let mut files = files_under(&d.root);
    let mut orders: Vec<(&str, Vec<PathBuf>)> = vec![("directory", vec![d.root.clone()])];
    files.reverse();
    orders.push(("reverse", files.clone()));
    // A seeded shuffle.
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..files.len()).rev() {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        files.swap(i, (h % (i as u64 + 1)) as usize);
    }
    orders.push(("shuffled", files));
    for (name, inputs) in orders {
        let (got, s) = run(&d.set, &options(inputs, ArchiveOptions::default()));
        assert_eq!(s.eval.events as usize, n, "{name}");
        assert_eq!(s.eval.detector.late_dropped, 0, "{name}: {}", s.summary());
        assert_eq!(s.out_of_order, 0, "{name}: {}", s.summary());
        assert_eq!(s.partitions, 8, "{name}: 4 accounts x 2 regions");
        assert!(s.summary().contains(", 0 late events dropped"), "{}", s.summary());
        assert_eq!(got, want, "{name} order");
    }
}

/// Object keys relative to the archive root, with the file's bytes.
fn objects(root: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|p| (p.strip_prefix(root).unwrap().to_str().unwrap().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The GetObject and ListObjectsV2 requests moto logged after `from` bytes of its log.
fn requests(s: &Server, bucket: &str, from: usize) -> (Vec<String>, Vec<String>) {
    let log = s.log_all();
    let (mut gets, mut lists) = (Vec::new(), Vec::new());
    for line in log[from.min(log.len())..].lines() {
        let Some(req) = line.split('"').nth(1) else { continue };
        let Some(path) = req.strip_prefix("GET /") else { continue };
        let path = path.split(' ').next().unwrap_or("");
        if path.contains("list-type=2") {
            lists.push(path.to_string());
        } else if let Some(key) = path.strip_prefix(&format!("{bucket}/")) {
            gets.push(key.split('?').next().unwrap().to_string());
        }
    }
    (gets, lists)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_replay_reads_only_what_the_filters_select() {
    let d = dataset();
    let moto = Server::moto().unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk_config().await).force_path_style(true).build(),
    );
    let bucket = "org-trail";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let objs = objects(&d.root);
    let org_prefix = {
        let k = objs.iter().find(|(k, _)| k.starts_with("AWSLogs/o-")).expect("an org-trail layout").0.clone();
        k.split('/').take(2).collect::<Vec<_>>().join("/")
    };
    let one_account =
        objs.iter().find_map(|(k, _)| parse_name(k.rsplit('/').next().unwrap()).map(|n| n.account)).unwrap();
    for (k, body) in &objs {
        s3.put_object().bucket(bucket).key(k).body(body.clone().into()).send().await.unwrap();
        // One account again as a plain (non-organization) trail writes it.
        if let Some(rest) = k.strip_prefix(&format!("{org_prefix}/{one_account}/")) {
            let plain = format!("plain/AWSLogs/{one_account}/{rest}");
            s3.put_object().bucket(bucket).key(plain).body(body.clone().into()).send().await.unwrap();
        }
    }
    let aws = trailwatch_processor::aws::AwsConfig {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.endpoint.clone()),
        ..Default::default()
    };
    let archive = |since: Option<&str>, until: Option<&str>, accounts: &[&str], regions: &[&str]| {
        let mut a = ArchiveOptions { aws: aws.clone(), ..ArchiveOptions::default() };
        a.filter.since_ms = since.and_then(trailwatch_rules::detect::parse_rfc3339_ms);
        a.filter.until_ms = until.and_then(trailwatch_rules::detect::parse_rfc3339_ms);
        a.filter.accounts = accounts.iter().map(|s| s.to_string()).collect();
        a.filter.regions = regions.iter().map(|s| s.to_string()).collect();
        a
    };
    let set = Arc::clone(&d.set);
    let url = |p: &str| PathBuf::from(format!("s3://{bucket}/{p}"));

    // The whole org trail from S3: the findings of the same files read locally.
    let (local, _) = run(&set, &options(vec![d.root.join("AWSLogs")], ArchiveOptions::default()));
    let mark = moto.log_all().len();
    let opts = options(vec![url(&format!("{org_prefix}/"))], archive(None, None, &[], &[]));
    let (got, s) = tokio::task::block_in_place(|| run(&set, &opts));
    let org_objects = objs.iter().filter(|(k, _)| k.starts_with(&org_prefix)).count();
    let (gets, _) = requests(&moto, bucket, mark);
    assert_eq!(gets.len(), org_objects, "every org-trail object read once");
    assert_eq!(s.s3_get_calls, Some(org_objects as u64));
    assert_eq!(s.eval.detector.late_dropped, 0);
    assert!(correlations(&got) >= 1, "{}", s.summary());
    assert_eq!(got, local, "{}", s.summary());

    // One hour after midnight: only that hour's files (plus the lookahead)
    // are read, and only the second day's folders are listed.
    let (since, until) = ("2026-11-03T00:30:00Z", "2026-11-03T01:30:00Z");
    let mark = moto.log_all().len();
    let opts = options(vec![url("")], archive(Some(since), Some(until), &[], &[]));
    let (_, s) = tokio::task::block_in_place(|| run(&set, &opts));
    let (gets, lists) = requests(&moto, bucket, mark);
    let (lo, hi) = (
        trailwatch_rules::detect::parse_rfc3339_ms(since).unwrap(),
        trailwatch_rules::detect::parse_rfc3339_ms(until).unwrap() + 15 * 60_000,
    );
    let mut want: Vec<String> = objs
        .iter()
        .filter(|(k, _)| k.starts_with("AWSLogs/"))
        .filter(|(k, _)| parse_name(k.rsplit('/').next().unwrap()).is_some_and(|n| n.time_ms >= lo && n.time_ms < hi))
        .map(|(k, _)| k.clone())
        .collect();
    // EventBridge/ and plain/ are outside the CloudTrail layout at the bucket
    // root's level: listed whole, and their files filtered by name.
    want.extend(
        objs.iter()
            .filter(|(k, _)| !k.starts_with("AWSLogs/"))
            .filter(|(k, _)| {
                parse_name(k.rsplit('/').next().unwrap()).is_some_and(|n| n.time_ms >= lo && n.time_ms < hi)
            })
            .map(|(k, _)| k.clone()),
    );
    want.extend(
        objs.iter()
            .filter_map(|(k, _)| k.strip_prefix(&format!("{org_prefix}/{one_account}/")))
            .filter(|rest| {
                parse_name(rest.rsplit('/').next().unwrap()).is_some_and(|n| n.time_ms >= lo && n.time_ms < hi)
            })
            .map(|rest| format!("plain/AWSLogs/{one_account}/{rest}")),
    );
    let mut gets_sorted = gets.clone();
    gets_sorted.sort();
    want.sort();
    assert!(!want.is_empty() && want.len() < objs.len() / 2, "{} of {}", want.len(), objs.len());
    assert_eq!(gets_sorted, want, "GetObject only for files named in range");
    assert_eq!(s.s3_get_calls, Some(want.len() as u64));
    assert!(s.out_of_range > 0, "events of the lookahead outside the range are not evaluated");
    let day_lists: Vec<&String> = lists.iter().filter(|l| l.contains("/CloudTrail/")).collect();
    assert!(!day_lists.is_empty(), "{lists:?}");
    assert!(lists.iter().all(|l| !l.contains("2026/11/02")), "the first day is not listed: {lists:?}");
    assert!(day_lists.iter().any(|l| l.contains("2026/11/03")), "{lists:?}");

    // --accounts / --regions narrow the listing and the reads.
    let mark = moto.log_all().len();
    let opts = options(vec![url(&format!("{org_prefix}/"))], archive(None, None, &[&one_account], &["eu-west-1"]));
    let (_, s) = tokio::task::block_in_place(|| run(&set, &opts));
    let (gets, lists) = requests(&moto, bucket, mark);
    let want = objs
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{org_prefix}/{one_account}/CloudTrail/eu-west-1/")))
        .count();
    assert!(want > 0);
    assert_eq!(gets.len(), want, "{gets:?}");
    assert!(gets.iter().all(|k| k.contains(&one_account) && k.contains("eu-west-1")));
    assert!(lists.iter().all(|l| !l.contains("us-east-1")), "{lists:?}");
    assert!(s.eval.events > 0);

    // A plain account prefix works the same way.
    let mark = moto.log_all().len();
    let opts = options(vec![url(&format!("plain/AWSLogs/{one_account}/"))], archive(None, None, &[], &[]));
    let (_, s) = tokio::task::block_in_place(|| run(&set, &opts));
    let (gets, _) = requests(&moto, bucket, mark);
    let want = objs.iter().filter(|(k, _)| k.starts_with(&format!("{org_prefix}/{one_account}/"))).count();
    assert_eq!(gets.len(), want);
    assert!(s.eval.events > 0 && s.partitions >= 2, "{}", s.summary());
}

/// `<acct>_CloudTrail_<region>_<time>_<id>` with the time moved by `shift_ms`.
fn shifted_name(name: &str, shift_ms: i64) -> String {
    let mut parts: Vec<String> = name.split('_').map(str::to_string).collect();
    let t = trailwatch_processor::replay::plan::parse_compact_time(&parts[3]).unwrap() + shift_ms;
    let t = time::OffsetDateTime::from_unix_timestamp(t / 1000).unwrap();
    let f = time::macros::format_description!("[year][month][day]T[hour][minute]Z");
    parts[3] = t.format(&f).unwrap();
    parts.join("_")
}

fn gz_records(path: &Path) -> Vec<serde_json::Value> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["Records"].as_array().unwrap().clone()
}

fn write_gz_records(path: &Path, records: Vec<serde_json::Value>) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    serde_json::to_writer(&mut w, &serde_json::json!({ "Records": records })).unwrap();
    w.finish().unwrap();
}

/// Replay's partitions are engine partitions (issue 16): one account+region
/// whose files were delivered an hour late (its events an hour behind
/// the names, beyond the 15 min lookahead) is merged behind the others, yet
/// holds the watermark for its own events: the findings are those of the
/// time-sorted stream and nothing is late. A global watermark would have
/// dropped its events. An event genuinely late within its own partition is
/// dropped and counted against that partition only. And loading on 1 or 4
/// threads (where detection rules are screened) gives the same findings.
#[test]
fn a_lagging_partition_holds_the_watermark_and_late_drops_are_counted_per_partition() {
    let d = dataset();
    let tmp = tempfile::tempdir().unwrap();
    let sorted = tmp.path().join("sorted.ndjson");
    sorted_stream(&d.root, &sorted);
    let (want, _) = run(&d.set, &options(vec![sorted], ArchiveOptions::default()));

    // A flat copy of the archive; partition `lag` delivered an hour late.
    let files = files_under(&d.root);
    let label = |p: &Path| {
        let k = parse_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
        format!("{}/{}", k.account, k.region)
    };
    // Partitions by size, largest first: the busiest one lags.
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for f in &files {
        *sizes.entry(label(f)).or_default() += f.metadata().unwrap().len();
    }
    let mut by_size: Vec<(u64, String)> = sizes.into_iter().map(|(l, n)| (n, l)).collect();
    by_size.sort();
    by_size.reverse();
    let lag = by_size[0].1.clone();
    let copy = tmp.path().join("lagging");
    std::fs::create_dir(&copy).unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let name = if label(f) == lag { shifted_name(name, 60 * 60_000) } else { name.to_string() };
        std::fs::copy(f, copy.join(name)).unwrap();
    }
    let (got, s) = run(&d.set, &options(vec![copy.clone()], ArchiveOptions::default()));
    eprintln!("lagging partition {lag}:\n{}", s.summary());
    assert!(s.out_of_order > 0, "the lagging partition's events were merged behind newer ones: {}", s.summary());
    assert_eq!(s.eval.detector.late_dropped, 0, "{}", s.summary());
    assert!(s.late_by_partition.is_empty(), "{:?}", s.late_by_partition);
    assert_eq!(got, want, "a lagging partition gives the findings of the sorted stream");

    // Same archive, loaded (and screened) on one thread and on four.
    for threads in [1, 4] {
        let (g, _) = run(&d.set, &options(vec![copy.clone()], ArchiveOptions { threads, ..ArchiveOptions::default() }));
        assert_eq!(g, want, "--threads {threads}");
    }

    // Late within its own partition: the events of the first half of
    // another partition's files again (new ids, so not redeliveries), in a
    // file named at its end, two hours and more behind that partition.
    let late_label = by_size[1].1.clone();
    let mine: Vec<&PathBuf> = files.iter().filter(|f| label(f) == late_label).collect();
    let mut old = Vec::new();
    for f in &mine[..mine.len() / 3] {
        for mut r in gz_records(f) {
            let id = format!("{}-again", r["eventID"].as_str().unwrap());
            r["eventID"] = serde_json::Value::String(id);
            old.push(r);
        }
    }
    let last = mine.last().unwrap().file_name().unwrap().to_str().unwrap();
    let name = shifted_name(last, 0).replacen(".json.gz", "x.json.gz", 1);
    write_gz_records(&copy.join(&name), old);
    let (_, s) = run(&d.set, &options(vec![copy], ArchiveOptions::default()));
    eprintln!("late events in {late_label}:\n{}", s.summary());
    assert!(s.eval.detector.late_dropped > 0, "{}", s.summary());
    assert_eq!(s.late_by_partition, vec![(late_label.clone(), s.eval.detector.late_dropped)]);
    assert!(
        s.summary().contains(&format!("late events by partition: {late_label}: {}", s.eval.detector.late_dropped)),
        "{}",
        s.summary()
    );
}
