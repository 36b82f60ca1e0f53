//! The DynamoDB checkpoint store against moto (DynamoDB + S3): the service
//! resumes its windows from it after a restart; a stale instance cannot move
//! a checkpoint backwards; a DynamoDB/S3 outage delays the commit (retried)
//! instead of losing or acknowledging anything early.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use trailwatch_processor::aws::AwsConfig;
use trailwatch_processor::config::{CheckpointsConfig, Config, StoreKind};
use trailwatch_processor::service::{self, RunOptions, RunSummary};
use trailwatch_processor::state::dynamodb::DynamoStore;
use trailwatch_processor::state::{Committed, StateError, StateStore};
use trailwatch_tests::fixtures::{
    assert_window_completed_across_restart, denied_event, file_source_toml, jsonl_out_toml, read_jsonl, rules,
    service_toml, write_lines, REPEATED_DENIED_RULES,
};
use trailwatch_tests::Server;

const TABLE: &str = "trailwatch-checkpoints";
const BUCKET: &str = "trailwatch-state";

fn write_events(path: &Path, range: std::ops::Range<u32>) {
    write_lines(path, range.map(|i| denied_event(i, i)));
}

/// The table (partition key `pk`, string) and the snapshot bucket.
async fn create_resources(server: &Server) {
    let sdk = server.sdk_config().await;
    trailwatch_tests::fixtures::create_table(&aws_sdk_dynamodb::Client::new(&sdk), TABLE, "pk").await;
    let s3 = trailwatch_tests::chaos::s3_client(&sdk);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
}

async fn head_item(server: &Server) -> Option<std::collections::HashMap<String, AttributeValue>> {
    let ddb = aws_sdk_dynamodb::Client::new(&server.sdk_config().await);
    ddb.get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S("trailwatch#head".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

fn config(server: &Server, dir: &Path, input: &Path, commit_interval: &str) -> Config {
    let text = format!(
        r#"
        {service}
        {source}
        [checkpoints]
        store = "dynamodb"
        table = "{TABLE}"
        snapshot_bucket = "{BUCKET}"
        {out}
        {aws}max_attempts = 1
        "#,
        service = service_toml(&dir.join("state"), commit_interval),
        source = file_source_toml(input, false),
        out = jsonl_out_toml(&dir.join("findings.ndjson")),
        aws = server.aws_section(),
    );
    trailwatch_tests::fixtures::config(&text)
}

/// A service run in a task: its commits so far, the sender that stops it, the run.
struct Spawned {
    commits: tokio::sync::watch::Receiver<u64>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<anyhow::Result<RunSummary>>,
}

/// Runs `cfg` with [`REPEATED_DENIED_RULES`] in a task until `stop` is sent.
fn spawn_run(cfg: Config) -> Spawned {
    let (tx, commits) = tokio::sync::watch::channel(0u64);
    let opts = RunOptions { commits: Some(tx), ..Default::default() };
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(service::run(cfg, rules(REPEATED_DENIED_RULES), opts, async move {
        let _ = stop_rx.await;
    }));
    Spawned { commits, stop, run }
}

/// Runs until the first commit after the input was read, then shuts down.
async fn run_once(cfg: Config) -> RunSummary {
    trailwatch_tests::fixtures::run_once(cfg, rules(REPEATED_DENIED_RULES)).await
}

fn findings(dir: &Path) -> Vec<serde_json::Value> {
    read_jsonl(&dir.join("findings.ndjson"))
}

async fn store(server: &Server) -> DynamoStore {
    server.sdk_config().await; // dummy credentials in the environment
    let cfg = CheckpointsConfig {
        store: StoreKind::Dynamodb,
        table: Some(TABLE.into()),
        snapshot_bucket: Some(BUCKET.into()),
        ..Default::default()
    };
    let aws = AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(server.endpoint.clone()),
        max_attempts: Some(1),
        ..Default::default()
    };
    DynamoStore::build(&cfg, &aws).await.unwrap()
}

#[tokio::test]
async fn windows_survive_a_restart_through_dynamodb_and_s3() {
    let server = Server::moto().unwrap();
    create_resources(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.ndjson");
    let second = dir.path().join("second.ndjson");
    write_events(&first, 0..3);
    write_events(&second, 3..5);

    let s1 = run_once(config(&server, dir.path(), &first, "100ms")).await;
    assert_eq!(s1.eval.events, 3);
    assert!(findings(dir.path()).is_empty(), "3 denials are not more than 3");
    let head = head_item(&server).await.expect("the head item is written");
    let gen1: u64 = head["commit"].as_n().unwrap().parse().unwrap();
    assert!(gen1 >= 1, "{head:?}");
    assert!(head["snapshot"].as_s().unwrap().starts_with("trailwatch/trailwatch/windows-"), "{head:?}");
    assert!(!dir.path().join("state/state.json").exists(), "nothing goes to the file store");

    let s2 = run_once(config(&server, dir.path(), &second, "100ms")).await;
    assert_eq!(s2.eval.events, 2);
    assert_window_completed_across_restart(&findings(dir.path()));
    let gen2: u64 = head_item(&server).await.unwrap()["commit"].as_n().unwrap().parse().unwrap();
    assert!(gen2 > gen1, "the second run continues the generations: {gen1} then {gen2}");
}

#[tokio::test]
async fn a_stale_instance_cannot_move_a_checkpoint_backwards() {
    let server = Server::moto().unwrap();
    create_resources(&server).await;
    let old = store(&server).await;
    assert_eq!(old.load().await.unwrap(), None);

    let key = Committed::key("stream", "shardId-000000000000");
    let mut c = Committed { commit: 1, ..Default::default() };
    c.positions.insert(key.clone(), "50".into());
    c.windows = Some(b"{\"version\":1,\"n\":0}".to_vec());
    old.commit(&c, std::slice::from_ref(&key)).await.unwrap();
    c.commit = 2;
    c.positions.insert(key.clone(), "100".into());
    c.windows = Some(b"{\"version\":1,\"n\":1}".to_vec());
    old.commit(&c, std::slice::from_ref(&key)).await.unwrap();

    // A second instance takes over from what the first committed.
    let new = store(&server).await;
    let mut resumed = new.load().await.unwrap().expect("committed state");
    assert_eq!(resumed, c);
    resumed.commit += 1;
    resumed.positions.insert(key.clone(), "200".into());
    resumed.windows = Some(b"{\"version\":1,\"n\":2}".to_vec());
    new.commit(&resumed, std::slice::from_ref(&key)).await.unwrap();
    // Re-sending the same commit (a retry after a lost reply) is not a conflict.
    new.commit(&resumed, std::slice::from_ref(&key)).await.unwrap();

    // The first instance goes on with its own generation 3: refused.
    let mut stale = c.clone();
    stale.commit = 3;
    stale.positions.insert(key.clone(), "150".into());
    let e = old.commit(&stale, std::slice::from_ref(&key)).await.unwrap_err();
    assert!(matches!(e, StateError::Conflict(_)), "{e}");
    assert!(!e.is_retryable());
    // An older generation as well.
    let e = old.commit(&c, std::slice::from_ref(&key)).await.unwrap_err();
    assert!(matches!(e, StateError::Conflict(_)), "{e}");

    // The newer instance's commit stands, windows included.
    let now = store(&server).await.load().await.unwrap().unwrap();
    assert_eq!(now, resumed);
    assert_eq!(now.positions_of("stream").get("shardId-000000000000").map(String::as_str), Some("200"));

    // The newer one goes on.
    resumed.commit += 1;
    resumed.positions.insert(key.clone(), "300".into());
    new.commit(&resumed, std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(store(&server).await.load().await.unwrap().unwrap(), resumed);

    // Only the referenced snapshot is left: the first instance's two were
    // deleted once replaced, an unchanged snapshot is not uploaded again.
    let sdk = server.sdk_config().await;
    let s3 = trailwatch_tests::chaos::s3_client(&sdk);
    let listed = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    let head = head_item(&server).await.unwrap();
    assert_eq!(keys, vec![head["snapshot"].as_s().unwrap().as_str()]);
}

#[tokio::test]
async fn many_partitions_are_committed_in_several_transactions() {
    let server = Server::moto().unwrap();
    create_resources(&server).await;
    let s = store(&server).await;
    let mut c = Committed { commit: 1, ..Default::default() };
    for i in 0..250 {
        c.positions.insert(Committed::key("stream", &format!("shardId-{i:012}")), format!("{}", 1000 + i));
    }
    let changed: Vec<String> = c.positions.keys().cloned().collect();
    s.commit(&c, &changed).await.unwrap();
    let back = store(&server).await.load().await.unwrap().unwrap();
    assert_eq!(back, c);
    assert_eq!(back.positions_of("stream").len(), 250);
}

#[tokio::test]
async fn a_missing_table_is_a_clear_error() {
    let server = Server::moto().unwrap();
    let e = store(&server).await.load().await.unwrap_err().to_string();
    assert!(e.contains("GetItem") && e.contains("ResourceNotFound"), "{e}");
    let e = match DynamoStore::build(
        &CheckpointsConfig { store: StoreKind::Dynamodb, snapshot_bucket: Some(BUCKET.into()), ..Default::default() },
        &AwsConfig::default(),
    )
    .await
    {
        Ok(_) => panic!("a store without a table"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("checkpoints.table"), "{e}");
}

#[tokio::test]
async fn an_outage_delays_the_commit_and_it_is_retried() {
    let mut server = Server::moto().unwrap();
    create_resources(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 0..5);
    let cfg = config(&server, dir.path(), &input, "2s");

    let retried = || trailwatch_processor::metrics::get().checkpoint_commits.with_label_values(&["retried"]).get();
    let retried_before = retried();
    let posts = |server: &Server| server.log_text().matches("POST /").count();
    let posts_before = posts(&server);
    let Spawned { commits: mut rx, stop: stop_tx, run } = spawn_run(cfg);

    // The state is loaded (the next request moto sees), then the outage starts,
    // before the first commit (due 2 s after the start).
    let started = Instant::now();
    while posts(&server) <= posts_before {
        assert!(started.elapsed() < Duration::from_secs(20), "the service never loaded its state");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // moto logs a request as its reply starts: let the reply reach the service.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished(), "the service stopped at start: {:?}", run.await);
    server.stop();

    // Retries back off with equal jitter, each wait in [c/2, c] for c = 0.2,
    // 0.4, ... 6.4, 12.8 s: after the 7th failed attempt the next comes 6.4 s
    // or more later, time enough to restart moto and make the table and the
    // bucket again even on a loaded machine (an attempt that found the
    // restarted moto before its bucket would fail for good: NoSuchBucket is
    // not a transient error).
    let started = Instant::now();
    while retried() < retried_before + 7 {
        assert!(!run.is_finished(), "the service stopped during the outage: {:?}", run.await);
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "the commit is not retried: {} retries, {} commits",
            retried() - retried_before,
            *rx.borrow()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*rx.borrow(), 0, "nothing is committed while the store is down");
    let delivered = findings(dir.path()).len();
    assert!(delivered >= 1, "findings are delivered before the commit is attempted");

    server.restart().unwrap();
    create_resources(&server).await;
    let r = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|n| *n >= 1))
        .await
        .expect("the commit goes through once the store is back")
        .map(|_| ());
    if r.is_err() {
        panic!("the service ended before the commit went through: {:?}", run.await);
    }
    let head = head_item(&server).await.expect("the head item is written after the outage");
    assert!(head.contains_key("snapshot"), "{head:?}");

    let _ = stop_tx.send(());
    let summary = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.eval.events, 5);
    assert_eq!(findings(dir.path()).len(), delivered, "nothing is delivered twice");
}

#[test]
fn the_config_names_what_the_dynamodb_store_is_missing() {
    let cfg: Config = toml::from_str("[checkpoints]\nstore = \"dynamodb\"\n").unwrap();
    let e = format!("{:#}", cfg.validate().unwrap_err());
    assert!(e.contains("needs checkpoints.table") && e.contains("needs checkpoints.snapshot_bucket"), "{e}");
}

#[tokio::test]
async fn a_service_overtaken_by_another_instance_stops_with_a_conflict() {
    let server = Server::moto().unwrap();
    create_resources(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    write_events(&input, 0..3);
    let cfg = config(&server, dir.path(), &input, "100ms");
    let Spawned { commits: mut rx, stop: stop_tx, run } = spawn_run(cfg);
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|n| *n >= 1)).await.unwrap().unwrap();

    // Another instance takes over and commits a later generation.
    let other = store(&server).await;
    let mut c = other.load().await.unwrap().expect("the service committed");
    c.commit += 10;
    other.commit(&c, &[]).await.unwrap();

    // The service's final commit is refused: it reports the conflict instead of overwriting.
    let _ = stop_tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    let e = format!("{:#}", result.expect_err("the run fails"));
    assert!(e.contains("checkpoint conflict"), "{e}");
    let head = head_item(&server).await.unwrap();
    assert_eq!(head["commit"].as_n().unwrap(), &c.commit.to_string(), "the newer generation stands");
}
