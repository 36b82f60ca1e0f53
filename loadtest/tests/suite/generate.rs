//! The generator: determinism by seed, ground-truth consistency, the
//! CloudTrail file layout, and every output format read back with
//! trailwatch's own decoder.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use trailwatch_loadtest::cli::select;
use trailwatch_loadtest::dataset;
use trailwatch_loadtest::generate::{generate, GenOptions};
use trailwatch_loadtest::org::OrgOptions;
use trailwatch_loadtest::output::{FileOptions, Format};
use trailwatch_loadtest::record::EventKind;
use trailwatch_loadtest::scenarios::{ATTACKS, LOOKALIKES};
use trailwatch_loadtest::truth::Truth;
use trailwatch_loadtest::util;
use trailwatch_processor::decode::{self, decode, DecodeOptions};
use trailwatch_rules::EventClass;

const START: i64 = 1_793_577_600; // 2026-11-02T00:00:00Z

/// Per format: event id → times decoded, and events per class.
type Decoded = (HashMap<String, usize>, BTreeMap<&'static str, u64>);

fn options(seed: u64, duration: i64, rate: f64) -> GenOptions {
    GenOptions {
        seed,
        org: OrgOptions {
            accounts: 7,
            regions: vec!["eu-west-1".into(), "eu-central-1".into()],
            org_id: None,
            variant: Default::default(),
        },
        start: START,
        duration,
        rate,
        attacks: ATTACKS.iter().collect(),
        lookalikes: LOOKALIKES.iter().collect(),
        repeat: 1,
        max_events: 10_000_000,
    }
}

/// Every event (id, time, json) in output order, and the truth.
fn collect(opts: &GenOptions) -> (Vec<(String, i64, String, EventKind)>, Truth) {
    let mut events = Vec::new();
    let truth = generate(opts, &mut |b| {
        assert!(b.events.windows(2).all(|w| w[0].time <= w[1].time), "a slice is not in time order");
        assert!(b.events.iter().all(|e| e.time >= b.start && e.time < b.end), "an event outside its slice");
        events.extend(b.events.iter().map(|e| (e.id.clone(), e.time, e.json.clone(), e.kind)));
        Ok(())
    })
    .expect("generates");
    (events, truth)
}

#[test]
fn same_seed_same_output_other_seed_other_output() {
    let opts = options(42, 3600, 8.0);
    let (a, ta) = collect(&opts);
    let (b, tb) = collect(&opts);
    assert!(a.len() > 20_000, "only {} events", a.len());
    assert_eq!(a, b, "same seed and options must give identical events");
    assert_eq!(ta, tb);
    let (c, tc) = collect(&options(43, 3600, 8.0));
    assert_ne!(a.iter().map(|e| &e.0).collect::<Vec<_>>(), c.iter().map(|e| &e.0).collect::<Vec<_>>());
    assert_ne!(ta.org.id, tc.org.id);
}

#[test]
fn benign_traffic_does_not_depend_on_the_scenario_selection() {
    let all = options(5, 3600, 5.0);
    let mut none = all.clone();
    none.attacks.clear();
    none.lookalikes.clear();
    let (with, truth) = collect(&all);
    let (without, t0) = collect(&none);
    assert!(t0.scenarios.is_empty() && t0.lookalikes.is_empty());
    let labelled: HashSet<&str> = truth
        .scenarios
        .iter()
        .chain(truth.lookalikes.iter())
        .flat_map(|s| s.event_ids.iter().map(String::as_str))
        .collect();
    let benign: Vec<&(String, i64, String, EventKind)> =
        with.iter().filter(|e| !labelled.contains(e.0.as_str())).collect();
    assert_eq!(benign.len(), without.len());
    assert!(benign.iter().zip(without.iter()).all(|(a, b)| **a == *b));
}

#[test]
fn ground_truth_ids_exist_exactly_once_within_their_time_range() {
    let opts = options(9, 2 * 3600, 6.0);
    let (events, truth) = collect(&opts);
    let mut count: HashMap<&str, usize> = HashMap::new();
    let mut time: HashMap<&str, i64> = HashMap::new();
    for (id, t, json, _) in &events {
        *count.entry(id.as_str()).or_default() += 1;
        time.insert(id.as_str(), *t);
        // The id we label by is the one inside the event.
        let v: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        let inner = v.get("eventID").or_else(|| v.get("id")).and_then(|x| x.as_str());
        assert_eq!(inner, Some(id.as_str()));
    }
    assert!(count.values().all(|&n| n == 1), "event ids must be unique");
    assert_eq!(truth.scenarios.len(), ATTACKS.len());
    assert_eq!(truth.lookalikes.len(), LOOKALIKES.len());
    let mut seen_label_ids = HashSet::new();
    for s in truth.scenarios.iter().chain(truth.lookalikes.iter()) {
        assert!(!s.event_ids.is_empty(), "{} has no events", s.id);
        let (start, end) = (util::parse_rfc3339(&s.start).unwrap(), util::parse_rfc3339(&s.end).unwrap());
        assert!(start >= START && end < START + opts.duration && start <= end, "{} outside the data", s.id);
        for id in &s.event_ids {
            assert_eq!(count.get(id.as_str()), Some(&1), "{}: labelled id {id} not in the output exactly once", s.id);
            let t = time[id.as_str()];
            assert!(t >= start && t <= end, "{}: event {id} at {t} outside {}..{}", s.id, s.start, s.end);
            assert!(seen_label_ids.insert(id.clone()), "{id} labelled twice");
        }
        assert_eq!(s.account.len(), 12);
    }
    // Themes of issue 4 and issue 18 are all covered, each with an attack
    // and a look-alike (issue 18's themes).
    let themes: HashSet<&str> = truth.scenarios.iter().map(|s| s.theme.as_str()).collect();
    assert_eq!(themes.len(), 14, "{themes:?}");
    let lookalike_themes: HashSet<&str> = truth.lookalikes.iter().map(|s| s.theme.as_str()).collect();
    for t in ["IAM persistence and escalation", "credential access", "data exposure", "network", "execution"] {
        assert!(themes.contains(t) && lookalike_themes.contains(t), "{t}");
    }
    for t in ["organizations and account", "databases", "other services", "identity", "monitoring tampering"] {
        assert!(themes.contains(t) && lookalike_themes.contains(t), "{t}");
    }
    assert_eq!(truth.generator.events as usize, events.len());
}

#[test]
fn selection_by_name_and_count() {
    let mut opts = options(3, 3600, 1.0);
    opts.attacks = select("bulk-layer-download, root-activity", ATTACKS, "scenario").unwrap();
    opts.lookalikes = select("none", LOOKALIKES, "look-alike").unwrap();
    opts.repeat = 3;
    let (_, truth) = collect(&opts);
    let ids: Vec<&str> = truth.scenarios.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 6);
    for want in ["bulk-layer-download#1", "bulk-layer-download#3", "root-activity#2"] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    let err = select("bulk-layer-download,nope", ATTACKS, "scenario").unwrap_err().to_string();
    assert!(err.contains("unknown scenario `nope`"), "{err}");
    let mut short = options(3, 600, 1.0);
    short.attacks = select("many-repositories", ATTACKS, "scenario").unwrap();
    let err = short.validate().unwrap_err().to_string();
    assert!(err.contains("too short for scenario many-repositories"), "{err}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir_files(dir);
    v.sort();
    v
}

fn walkdir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn gunzip(bytes: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut s).expect("gzip");
    s
}

#[test]
fn dataset_layout_and_every_format_decodes_with_trailwatch() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(11, 3600, 4.0);
    let formats = [Format::Cloudtrail, Format::Ndjson, Format::Eventbridge, Format::Cwl];
    let fopts = FileOptions { gzip_level: 1, gzip_ndjson: false, ..FileOptions::default() };
    let (truth, _) = dataset::write(&opts, dir.path(), &formats, fopts, false, false).unwrap();
    assert!(
        dataset::write(&opts, dir.path(), &formats, fopts, false, false).is_err(),
        "must not overwrite without force"
    );
    assert_eq!(Truth::load(&dir.path().join("truth.json")).unwrap(), truth);
    let cfg = std::fs::read_to_string(dir.path().join("trailwatch.toml")).unwrap();
    assert!(cfg.contains("[rules.placeholders]") && cfg.contains(&truth.org.accounts[0].id));
    let accounts: HashSet<&str> = truth.org.accounts.iter().map(|a| a.id.as_str()).collect();

    // CloudTrail layout: AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_<ts>_<16>.json.gz
    let ct = dir.path().join("cloudtrail");
    let mut log_files = 0;
    for f in files_under(&ct.join("AWSLogs")) {
        let rel: Vec<String> =
            f.strip_prefix(&ct).unwrap().components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        assert_eq!(rel.len(), 8, "{rel:?}");
        let (acct, region, name) = (&rel[1], &rel[3], &rel[7]);
        assert!(accounts.contains(acct.as_str()) && rel[0] == "AWSLogs" && rel[2] == "CloudTrail");
        let stamp = trailwatch_loadtest::runner::stamp_of(name).expect("timestamp in the name");
        assert_eq!(&stamp[..8], format!("{}{}{}", rel[4], rel[5], rel[6]), "date folders match the stamp");
        let prefix = format!("{acct}_CloudTrail_{region}_{stamp}_");
        assert!(name.starts_with(&prefix) && name.ends_with(".json.gz"), "{name}");
        let suffix = &name[prefix.len()..name.len() - ".json.gz".len()];
        assert!(suffix.len() == 16 && suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        let delivered = util::parse_rfc3339(&format!(
            "{}-{}-{}T{}:{}:00Z",
            &stamp[..4],
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13]
        ))
        .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&gunzip(&std::fs::read(&f).unwrap())).unwrap();
        let records = doc["Records"].as_array().expect("Records array");
        assert!(!records.is_empty());
        for r in records {
            assert_eq!(r["recipientAccountId"].as_str(), Some(acct.as_str()));
            assert_eq!(r["awsRegion"].as_str(), Some(region.as_str()));
            let t = util::parse_rfc3339(r["eventTime"].as_str().unwrap()).unwrap();
            assert!(t < delivered && t >= delivered - 300, "record at {t} in a file delivered at {delivered}");
            for k in [
                "eventVersion",
                "userIdentity",
                "eventSource",
                "eventName",
                "sourceIPAddress",
                "userAgent",
                "eventID",
                "eventType",
                "recipientAccountId",
                "eventCategory",
            ] {
                assert!(r.get(k).is_some(), "record without {k}: {r}");
            }
        }
        log_files += 1;
    }
    assert!(log_files > 12 * 3, "only {log_files} log files");

    // Each format through trailwatch's decoder: same events, each exactly once, no errors.
    let mut per_format: BTreeMap<&str, Decoded> = BTreeMap::new();
    for f in formats {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut classes: BTreeMap<&str, u64> = BTreeMap::new();
        let mut errors = Vec::new();
        for file in files_under(&dir.path().join(f.as_str())) {
            let bytes = std::fs::read(&file).unwrap();
            decode(&bytes, &file.display().to_string(), &DecodeOptions::default(), &mut |item| match item {
                decode::Decoded::Event(ev) => {
                    let v: serde_json::Value = serde_json::from_str(ev.json).expect("event JSON");
                    let id = if ev.class == EventClass::CloudTrail { &v["eventID"] } else { &v["id"] };
                    *ids.entry(id.as_str().expect("an id").to_string()).or_default() += 1;
                    *classes.entry(ev.class.service()).or_default() += 1;
                }
                decode::Decoded::Error(e) => errors.push(e.to_string()),
                decode::Decoded::Skipped { .. } | decode::Decoded::ObjectRef(_) => {
                    errors.push("unexpected skip".into())
                }
            });
        }
        assert!(errors.is_empty(), "{}: {errors:?}", f.as_str());
        assert!(ids.values().all(|&n| n == 1), "{}: an event decoded twice", f.as_str());
        assert_eq!(ids.len() as u64, truth.generator.events, "{}", f.as_str());
        assert_eq!(classes["cloudtrail"], truth.generator.events_cloudtrail, "{}", f.as_str());
        assert!(classes.get("ecr").copied().unwrap_or(0) > 0 && classes.get("inspector2").copied().unwrap_or(0) > 0);
        per_format.insert(f.as_str(), (ids, classes));
    }
    let reference = &per_format["ndjson"];
    for (name, got) in &per_format {
        assert_eq!(got.0.keys().collect::<HashSet<_>>(), reference.0.keys().collect::<HashSet<_>>(), "{name}");
        assert_eq!(got.1, reference.1, "{name}");
    }
    for s in truth.scenarios.iter().chain(truth.lookalikes.iter()) {
        assert!(s.event_ids.iter().all(|id| reference.0.contains_key(id)), "{} ids missing from the files", s.id);
    }
    // The summaries agree with what is on disk.
    for o in &truth.generator.outputs {
        assert_eq!(o.events, truth.generator.events, "{}", o.format);
        assert_eq!(o.files as usize, files_under(&o.dir).len(), "{}", o.format);
    }
}

#[test]
fn same_seed_same_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = options(21, 1800, 3.0);
    let formats = [Format::Cloudtrail, Format::Cwl, Format::Eventbridge];
    let fopts = FileOptions { gzip_level: 1, gzip_ndjson: true, ..FileOptions::default() };
    dataset::write(&opts, a.path(), &formats, fopts, false, false).unwrap();
    dataset::write(&opts, b.path(), &formats, fopts, false, false).unwrap();
    let (fa, fb) = (files_under(a.path()), files_under(b.path()));
    assert!(fa.len() > 50);
    assert_eq!(fa.len(), fb.len());
    for (x, y) in fa.iter().zip(fb.iter()) {
        assert_eq!(x.strip_prefix(a.path()).unwrap(), y.strip_prefix(b.path()).unwrap());
        if x.file_name().is_some_and(|n| n == "truth.json") {
            // Output summaries name their directory.
            let (tx, ty) = (Truth::load(x).unwrap(), Truth::load(y).unwrap());
            assert_eq!((tx.scenarios, tx.generator.events), (ty.scenarios, ty.generator.events));
            continue;
        }
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap(), "{} differs", x.display());
    }
}
