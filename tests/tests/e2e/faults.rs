//! Injected faults: the real `trailwatch run` binary talks to the emulators
//! through [`FaultProxy`]s that throttle (each service's real error shape),
//! answer 500, reset connections before forwarding and after (the request
//! took effect, the answer is lost) and answer slowly, for a share of the
//! Kinesis, SQS, S3, DynamoDB and Security Hub calls — with kill -9s on top.
//! Nothing is lost: every detection finding of a replay of the same events
//! is in Security Hub once, and checkpoints never move backwards.
//!
//! Sizes: `TW_FAULT_EVENTS`, `TW_FAULT_SHARE` (default 0.1), `TW_FAULT_KILLS`;
//! `TW_FAULT_SEED` repeats a run (the seed is printed).

use std::time::{Duration, Instant};

use trailwatch_tests::chaos::{self, Drain, Input, Plan, Scenario, Store};
use trailwatch_tests::faults::{Fault, FaultConfig, FaultProxy, Service};
use trailwatch_tests::{env_or, seed_from_env, Server};

fn plan(seed: u64) -> Plan {
    Plan {
        kills: env_or("TW_FAULT_KILLS", 2),
        seed,
        min_ms: 0,
        max_ms: 4000,
        drain_timeout: Duration::from_secs(env_or("TW_FAULT_DRAIN_SECS", 180)),
    }
}

fn proxy(upstream: &Server, seed: u64, services: &[Service]) -> FaultProxy {
    let share = env_or("TW_FAULT_SHARE", 0.1);
    FaultProxy::start(&upstream.endpoint, FaultConfig::new(seed, share, services)).unwrap()
}

/// Each faulted service got faults, and every kind was injected.
fn assert_injected(proxies: &[&FaultProxy], services: &[Service]) {
    for p in proxies {
        eprintln!("proxy {}: {}", p.endpoint, p.summary());
    }
    for s in services {
        let n: u64 = proxies.iter().map(|p| p.injected_into(*s)).sum();
        assert!(n > 0, "no fault was injected into {s:?}");
    }
    for f in Fault::ALL {
        let n: u64 = proxies.iter().map(|p| p.injected_of(f)).sum();
        assert!(n > 0, "no {f:?} was injected");
    }
}

async fn kinesis(store: Store) {
    let t0 = Instant::now();
    let seed = seed_from_env("TW_FAULT_SEED");
    let n: u64 = env_or("TW_FAULT_EVENTS", 20_000);
    eprintln!("faults over Kinesis ({store:?} store): seed {seed} (TW_FAULT_SEED={seed} repeats it), {n} events");
    let kinesalite = Server::kinesalite().unwrap();
    let moto = Server::moto().unwrap();
    if store == Store::Dynamodb {
        chaos::create_store_resources(&moto).await;
    }
    let last = chaos::feed_kinesis(&kinesalite, "faulty", 4, n, 10).await;
    let kp = proxy(&kinesalite, seed, &[Service::Kinesis]);
    let moto_services: &[Service] = match store {
        Store::File => &[Service::SecurityHub],
        Store::Dynamodb => &[Service::SecurityHub, Service::Dynamodb, Service::S3],
    };
    let mp = proxy(&moto, seed ^ 0x5eed, moto_services);
    let input = Input::Kinesis { stream: "faulty".into(), endpoint: kp.endpoint.clone() };
    let scenario = Scenario::new(n, &input, store, &mp.endpoint, &moto);
    let expected = scenario.expected();
    let drain = Drain::Kinesis { source: "stream".into(), last };
    let p = plan(seed);
    chaos::run_plan(&scenario, &moto, &p, &drain, &expected).await;
    let mut services = vec![Service::Kinesis];
    services.extend_from_slice(moto_services);
    assert_injected(&[&kp, &mp], &services);
    chaos::check(&scenario, &moto, &expected).await;
    eprintln!("problems logged: {:?}", scenario.log_problems(p.kills + 1));
    eprintln!("wall time {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn kinesis_through_faults_with_the_file_store() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(kinesis(Store::File));
}

#[test]
fn kinesis_through_faults_with_the_dynamodb_store() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(kinesis(Store::Dynamodb));
}

#[test]
fn sqs_and_s3_through_faults() {
    let _pair = crate::MACHINE.blocking_read();
    chaos::block_on(sqs_faults());
}

async fn sqs_faults() {
    let t0 = Instant::now();
    let seed = seed_from_env("TW_FAULT_SEED");
    let n: u64 = env_or("TW_FAULT_EVENTS", 20_000);
    eprintln!("faults over SQS + S3: seed {seed} (TW_FAULT_SEED={seed} repeats it), {n} events");
    let moto = Server::moto().unwrap();
    let url = chaos::feed_sqs(&moto, n, 50, 5).await;
    let services = [Service::Sqs, Service::S3, Service::SecurityHub];
    let mp = proxy(&moto, seed, &services);
    let input = Input::Sqs { queue_url: url.clone() };
    let scenario = Scenario::new(n, &input, Store::File, &mp.endpoint, &moto);
    let expected = scenario.expected();
    let p = plan(seed);
    chaos::run_plan(&scenario, &moto, &p, &Drain::Sqs { url }, &expected).await;
    assert_injected(&[&mp], &services);
    chaos::check(&scenario, &moto, &expected).await;
    eprintln!("problems logged: {:?}", scenario.log_problems(p.kills + 1));
    eprintln!("wall time {:.1}s", t0.elapsed().as_secs_f64());
}
