//! `trailwatch-loadtest leases` end to end at reduced scale, bounded (about
//! 30 s): 3 workers on 8 shard leases in moto's DynamoDB, failover time 3 s.
//! The report has an even share, every operation kind counted, a failover no
//! sooner than the failover time, a handover after a release, and a cost and
//! drain model computed from them. The full-scale run (64 shards, 8
//! instances, 30 s) is in loadtest/README.md.

use std::process::Command;

use trailwatch_tests::Server;

#[test]
fn lease_simulation_reports_operations_cost_failover_and_drain() {
    let server = Server::moto().unwrap();
    trailwatch_tests::aws_env();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("leases.json");
    let out = Command::new(env!("CARGO_BIN_EXE_trailwatch-loadtest"))
        .args(["leases", "--endpoint-url", &server.endpoint])
        .args(["--shards", "8", "--instances", "3", "--failover", "3s", "--commit-interval", "1s"])
        .args(["--measure", "5s", "--snapshot-bytes", "4096", "--accounts", "50"])
        .arg("--report")
        .arg(&report)
        .output()
        .expect("the loadtest runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "leases failed: {stderr}");
    println!("{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    let shares: Vec<u64> =
        r["shares_after_scale_out"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(shares, vec![2, 3, 3]);
    for kind in ["renew", "checkpoint", "scan"] {
        assert!(r["ops_per_s"][kind].as_f64().unwrap() > 0.0, "no {kind} counted: {}", r["ops_per_s"]);
    }
    // A steady state steals nothing (3/3/2 is even).
    assert!(r["ops_per_s"].get("take").is_none_or(|v| v.as_f64() == Some(0.0)), "{}", r["ops_per_s"]);
    assert!(r["killed_worker_leases"].as_u64().unwrap() >= 2);
    // Expiry is measured on the others' clocks from the victim's last renewal.
    assert!(r["failover_s"].as_f64().unwrap() >= 2.0, "taken over before expiry: {}", r["failover_s"]);
    assert!(r["released_worker_leases"].as_u64().unwrap() >= 2);
    assert!(r["cost"]["s3_usd_per_day"].as_f64().unwrap() > 0.0);
    assert!(r["cost"]["inline_usd_per_day"].as_f64().unwrap() > r["cost"]["s3_usd_per_day"].as_f64().unwrap());
    assert_eq!(r["drain"]["rate_events_per_s"].as_f64().unwrap(), 50.0 * 1.75);
    assert!(r["drain"]["drain_s"].as_f64().unwrap().is_finite());
}
