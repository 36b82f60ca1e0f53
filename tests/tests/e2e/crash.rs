//! kill -9: the real `trailwatch run` binary reading a Kinesis stream
//! (kinesalite, 4 shards) or an SQS queue of S3-notified CloudTrail log files
//! (moto), writing to Security Hub (moto) and a JSONL file, is SIGKILLed at
//! seeded random moments and restarted until the input is drained. Then every
//! detection finding of a `trailwatch replay` of the same events is in
//! Security Hub (none lost, each Id once: repeats are upserts), the JSONL file
//! repeats only expected Ids, and no checkpoint ever moved backwards.
//!
//! Sizes (defaults meet issue 15: ≥ 50k events, ≥ 4 shards, several kills):
//! `TW_CRASH_EVENTS`, `TW_CRASH_SHARDS`, `TW_CRASH_KILLS`,
//! `TW_CRASH_PER_RECORD` (events per Kinesis record: CloudWatch Logs
//! subscription payloads, the shape CloudTrail reaches Kinesis in),
//! `TW_CRASH_PER_FILE` (events per log file, SQS); `TW_CRASH_SEED` repeats a
//! run (the seed is printed).
//!
//! SQS carries S3 notifications of gzip log files, the shape CloudTrail
//! delivers to S3 in production (not one event per message): 100 events per
//! file keeps moto's per-message cost low while every kill still catches
//! messages in flight.

use std::time::{Duration, Instant};

use trailwatch_tests::chaos::{self, Drain, Input, Plan, Scenario, Store};
use trailwatch_tests::{env_or, seed_from_env, Server};

fn plan(seed: u64) -> Plan {
    Plan {
        kills: env_or("TW_CRASH_KILLS", 4),
        seed,
        min_ms: env_or("TW_CRASH_MIN_MS", 0),
        max_ms: env_or("TW_CRASH_MAX_MS", 4000),
        drain_timeout: Duration::from_secs(env_or("TW_CRASH_DRAIN_SECS", 180)),
    }
}

async fn kinesis(store: Store) {
    let t0 = Instant::now();
    let seed = seed_from_env("TW_CRASH_SEED");
    let n: u64 = env_or("TW_CRASH_EVENTS", 50_000);
    let shards: i32 = env_or("TW_CRASH_SHARDS", 4);
    eprintln!("kill -9 over Kinesis ({store:?} store): seed {seed} (TW_CRASH_SEED={seed} repeats it), {n} events, {shards} shards");
    let kinesalite = Server::kinesalite().unwrap();
    let moto = Server::moto().unwrap();
    if store == Store::Dynamodb {
        chaos::create_store_resources(&moto).await;
    }
    let last = chaos::feed_kinesis(&kinesalite, "chaos", shards, n, env_or("TW_CRASH_PER_RECORD", 20)).await;
    assert_eq!(last.len(), shards as usize, "every shard got records");
    let input = Input::Kinesis { stream: "chaos".into(), endpoint: kinesalite.endpoint.clone() };
    eprintln!("fed in {:.1}s", t0.elapsed().as_secs_f64());
    let scenario = Scenario::new(n, &input, store, &moto.endpoint, &moto);
    let expected = scenario.expected();
    eprintln!("replayed at {:.1}s", t0.elapsed().as_secs_f64());
    let drain = Drain::Kinesis { source: "stream".into(), last };
    let p = plan(seed);
    let log = chaos::run_plan(&scenario, &moto, &p, &drain, &expected).await;
    assert!(log.observations > p.kills, "checkpoints were observed");
    chaos::check(&scenario, &moto, &expected).await;
    eprintln!("problems logged: {:?}", scenario.log_problems(p.kills + 1));
    eprintln!("wall time {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn kinesis_kill9_with_the_file_store() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(kinesis(Store::File));
}

#[test]
fn kinesis_kill9_with_the_dynamodb_store() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(kinesis(Store::Dynamodb));
}

#[test]
fn sqs_kill9_with_the_file_store() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(sqs_kill9(Store::File));
}

#[test]
fn sqs_kill9_with_the_dynamodb_store() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(sqs_kill9(Store::Dynamodb));
}

async fn sqs_kill9(store: Store) {
    let t0 = Instant::now();
    let seed = seed_from_env("TW_CRASH_SEED");
    let n: u64 = env_or("TW_CRASH_EVENTS", 50_000);
    let per_file: u64 = env_or("TW_CRASH_PER_FILE", 100);
    eprintln!(
        "kill -9 over SQS + S3 ({store:?} store): seed {seed} (TW_CRASH_SEED={seed} repeats it), {n} events, {per_file} per log file"
    );
    let moto = Server::moto().unwrap();
    if store == Store::Dynamodb {
        chaos::create_store_resources(&moto).await;
    }
    let url = chaos::feed_sqs(&moto, n, per_file, 5).await;
    let input = Input::Sqs { queue_url: url.clone() };
    eprintln!("fed in {:.1}s", t0.elapsed().as_secs_f64());
    let scenario = Scenario::new(n, &input, store, &moto.endpoint, &moto);
    let expected = scenario.expected();
    eprintln!("replayed at {:.1}s", t0.elapsed().as_secs_f64());
    let p = plan(seed);
    let log = chaos::run_plan(&scenario, &moto, &p, &Drain::Sqs { url }, &expected).await;
    assert!(log.observations > p.kills, "checkpoints were observed");
    chaos::check(&scenario, &moto, &expected).await;
    eprintln!("problems logged: {:?}", scenario.log_problems(p.kills + 1));
    eprintln!("wall time {:.1}s", t0.elapsed().as_secs_f64());
}
