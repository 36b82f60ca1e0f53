//! Several `trailwatch run` processes sharing kinesalite streams through
//! lease tables in moto's DynamoDB (`coordination = "leases"`): the set-up,
//! configs, input and checks that `e2e/leases_run.rs` and `e2e/rekey_run.rs`
//! share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::chaos::{jsonl_findings, Trailwatch};
use crate::Server;

/// The emulators, the lease tables, the streams and the rules file of a
/// scenario (every instance's directory goes under `dir`).
pub struct Rig {
    pub moto: Server,
    pub kinesalite: Server,
    pub dir: tempfile::TempDir,
    pub ddb: aws_sdk_dynamodb::Client,
    pub kin: aws_sdk_kinesis::Client,
    pub rules: PathBuf,
}

impl Rig {
    /// Starts the emulators, writes `rules`, creates the lease `tables` and
    /// the `streams` (name, shards).
    pub async fn new(rules: &str, tables: &[&str], streams: &[(&str, i32)]) -> Rig {
        let moto = Server::moto().unwrap();
        let kinesalite = Server::kinesalite().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rules_file = dir.path().join("rules.yml");
        std::fs::write(&rules_file, rules).unwrap();
        let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
        for t in tables {
            crate::fixtures::create_lease_table(&ddb, t).await;
        }
        let kin = aws_sdk_kinesis::Client::new(&kinesalite.sdk_config().await);
        for (name, shards) in streams {
            kin.create_stream().stream_name(*name).shard_count(*shards).send().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Rig { moto, kinesalite, dir, ddb, kin, rules: rules_file }
    }

    /// A `[sources.<name>]` section: `stream` read under leases in `table`
    /// (fast polls and a 3 s failover, for tests).
    pub fn lease_source(&self, name: &str, stream: &str, table: &str) -> String {
        format!(
            r#"[sources.{name}]
type = "kinesis"
stream_name = "{stream}"
endpoint_url = "{kinesalite}"
poll_interval = "200ms"
max_idle_poll_interval = "400ms"
shard_discovery_interval = "2s"
coordination = "leases"
lease_table = "{table}"
failover_time = "3s"
"#,
            kinesalite = self.kinesalite.endpoint,
        )
    }

    /// Writes the config of instance `n` (in `dir/i<n>`: its state,
    /// `findings.ndjson` and run log) with `sections` (sources and any
    /// more); its path.
    pub fn config(&self, n: usize, sections: &str) -> PathBuf {
        let inst = self.dir.path().join(format!("i{n}"));
        std::fs::create_dir_all(&inst).unwrap();
        let text = format!(
            r#"[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[rules]
builtin = false
discover_org = false
paths = ["{rules}"]

{findings}
{service}shutdown_timeout = "20s"

{sections}
[checkpoints]
store = "file"

{out}"#,
            moto = self.moto.endpoint,
            rules = self.rules.display(),
            findings = crate::fixtures::central_findings_toml(),
            service = crate::fixtures::service_toml(&inst.join("state"), "300ms"),
            out = crate::fixtures::jsonl_out_toml(&inst.join("findings.ndjson")),
        );
        let path = inst.join("trailwatch.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Starts instance `n` with `cfg` (killed on drop); its log is `run-<n>.log`
/// beside the config.
pub fn start(cfg: &Path, n: usize) -> Trailwatch {
    crate::chaos::start_run(cfg, cfg.parent().unwrap().join(format!("run-{n}.log")))
}

/// SIGTERM to each; each must exit cleanly within the 25 s grace time.
pub fn stop_all(procs: &mut [&mut Trailwatch]) {
    for p in procs.iter_mut() {
        let status = p.terminate(Duration::from_secs(25)).expect("exits within the grace time");
        assert!(status.success(), "exit status {status}");
    }
}

/// Puts events `range` (`event(i)`, under partition key `key(i)`) into
/// `stream`, 250 a call.
pub async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    range: std::ops::Range<u32>,
    event: impl Fn(u32) -> String,
    key: impl Fn(u32) -> String,
) {
    let ids: Vec<u32> = range.collect();
    for chunk in ids.chunks(250) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder().data(Blob::new(event(*i))).partition_key(key(*i)).build().unwrap()
            })
            .collect();
        let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

/// A single-instance `trailwatch replay` (with `cfg`) of `events`, in `dir`:
/// the findings file a shared run is compared with.
pub fn replay_expected(dir: &Path, cfg: &Path, events: impl IntoIterator<Item = String>) -> PathBuf {
    let input = dir.join("events.ndjson");
    crate::fixtures::write_lines(&input, events);
    let out = dir.join("expected.ndjson");
    crate::chaos::replay(cfg, &input, &out);
    out
}

/// The distinct finding Ids of the instances in `dirs`.
pub fn union(dirs: &[PathBuf]) -> BTreeSet<String> {
    dirs.iter().flat_map(|d| jsonl_findings(&d.join("findings.ndjson")).distinct()).collect()
}

/// Correlation finding Id → its highest count (updates grow it). Lines that
/// do not parse (the last one of a SIGKILLed process may be torn) are left
/// out: check [`jsonl_findings`]`(..).torn` where none may be.
pub fn correlation_counts(files: &[PathBuf]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let id = v["Id"].as_str().unwrap_or_default().to_string();
            if let Some(n) = v["ProductFields"]["trailwatch/Count"].as_str() {
                let n: u64 = n.parse().unwrap();
                let e = out.entry(id).or_insert(0);
                *e = (*e).max(n);
            }
        }
    }
    out
}
