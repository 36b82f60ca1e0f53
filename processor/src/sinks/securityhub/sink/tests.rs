use super::*;
use aws_sdk_securityhub::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_securityhub::types::ImportFindingsError;
use std::collections::VecDeque;
use tokio::io::AsyncWriteExt;

type Requests = Arc<Mutex<Vec<Vec<String>>>>;
type Regions = Arc<Mutex<Vec<String>>>;

/// A fake Security Hub endpoint: answers request n with `script[n]`
/// (status, error type, body) and records the Ids each request carried.
async fn fake(script: Vec<(u16, &'static str, &'static str)>) -> (String, Requests) {
    let (endpoint, seen, _) = fake_full(script, None).await;
    (endpoint, seen)
}

/// A fake that accepts everything except calls signed for `refuse`
/// (answered 403 AccessDeniedException, as for a region the import role
/// may not use); also records each call's region.
async fn fake_refusing(refuse: Option<&'static str>) -> (String, Requests, Regions) {
    fake_full(vec![OK; 1000], refuse).await
}

async fn fake_full(
    script: Vec<(u16, &'static str, &'static str)>,
    refuse: Option<&'static str>,
) -> (String, Requests, Regions) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen: Requests = Arc::default();
    let seen2 = seen.clone();
    let regions: Regions = Arc::default();
    let regions2 = regions.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let script = script.clone();
            let seen = seen2.clone();
            let regions = regions2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(message) = trailwatch_tests::http_wire::read_message(&mut sock, &mut buf).await {
                    let body: serde_json::Value = serde_json::from_slice(message.body()).unwrap_or_default();
                    let ids: Vec<String> = body["Findings"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["Id"].as_str().map(str::to_string))
                        .collect();
                    seen.lock().unwrap().push(ids);
                    // The region is in the SigV4 credential scope: Credential=KEY/DATE/REGION/securityhub/...
                    let region = trailwatch_tests::http_wire::signed_region(&message.head);
                    regions.lock().unwrap().push(region.clone());
                    let (status, kind, text) = if refuse == Some(region.as_str()) {
                        (
                            403,
                            "AccessDeniedException",
                            r#"{"Message":"not authorized to perform securityhub:BatchImportFindings in this region"}"#,
                        )
                    } else {
                        script.lock().unwrap().pop_front().unwrap_or((500, "", "{}"))
                    };
                    let mut resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                        text.len()
                    );
                    if !kind.is_empty() {
                        resp.push_str(&format!("x-amzn-errortype: {kind}\r\n"));
                    }
                    resp.push_str("\r\n");
                    resp.push_str(text);
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen, regions)
}

const OK: (u16, &str, &str) = (200, "", r#"{"FailedCount":0,"SuccessCount":1,"FailedFindings":[]}"#);
const DOWN: (u16, &str, &str) = (503, "ServiceUnavailableException", r#"{"message":"down"}"#);
const INVALID: (u16, &str, &str) = (400, "InvalidInputException", r#"{"Message":"invalid finding"}"#);

async fn shared_for(endpoint: &str, dir: &std::path::Path, name: &str, max_retries: u32) -> Arc<Shared> {
    let cfg = SecurityHubSinkConfig { max_retries, ..Default::default() };
    shared_with(endpoint, dir, name, cfg).await
}

async fn shared_with(endpoint: &str, dir: &std::path::Path, name: &str, cfg: SecurityHubSinkConfig) -> Arc<Shared> {
    let aws = crate::aws::AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        max_attempts: Some(1),
        ..Default::default()
    };
    let base = crate::aws::sdk_config(&aws)
        .await
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("k", "s", None, None, "test")))
        .build();
    Shared::open(name, cfg, base, false, dir.join("spool"), &dir.join("rejected.ndjson")).await.unwrap()
}

fn items(ids: &[&str]) -> Vec<Item> {
    ids.iter()
        .map(|id| Item {
            id: id.to_string(),
            line: serde_json::json!({"Id": id, "AwsAccountId": "111122223333",
                "ProductArn": "arn:aws:securityhub:us-east-1:111122223333:product/111122223333/default",
                "Resources": [{"Type": "Other", "Id": "x"}]})
            .to_string(),
            finding: None,
        })
        .collect()
}

fn key() -> RouteKey {
    ("111122223333".into(), Some("us-east-1".into()))
}

fn rejected(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("rejected.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn failed_findings_are_retried_or_dead_lettered_without_holding_the_rest() {
    let partial = r#"{"FailedCount":2,"SuccessCount":1,"FailedFindings":[
        {"Id":"b","ErrorCode":"ThrottlingException","ErrorMessage":"slow down"},
        {"Id":"c","ErrorCode":"InvalidInput","ErrorMessage":"Finding size exceeded 240 KB"}]}"#;
    let (endpoint, seen) = fake(vec![DOWN, (200, "", partial), OK]).await;
    let dir = tempfile::tempdir().unwrap();
    let sh = shared_for(&endpoint, dir.path(), "unit_partial", 3).await;
    let left = sh.deliver(&key(), items(&["a", "b", "c"]), 3).await.left;
    assert!(left.is_empty(), "everything delivered or dead-lettered");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, [vec!["a", "b", "c"], vec!["a", "b", "c"], vec!["b"]], "503 retried whole, then only b");
    sh.dead.lock().unwrap().sync().unwrap();
    let dead = rejected(dir.path());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["kind"], "securityhub_rejected");
    assert!(dead[0]["error"].as_str().unwrap().starts_with("c: InvalidInput: Finding size exceeded"), "{dead:?}");
    assert!(dead[0]["raw"].as_str().unwrap().contains("\"Id\":\"c\""));
    assert_eq!(sh.m.sent.get(), 2);
    assert_eq!(sh.m.failed.get(), 1);
    assert_eq!(sh.m.retry_error.get(), 1);
    assert_eq!(sh.m.retry_finding.get(), 1);
    assert_eq!(sh.m.batch_size.get_sample_count(), 3);
}

#[tokio::test]
async fn a_call_refused_as_invalid_is_halved_until_the_bad_finding_is_found() {
    let (endpoint, seen) = fake(vec![INVALID, OK, INVALID, OK, INVALID]).await;
    let dir = tempfile::tempdir().unwrap();
    let sh = shared_for(&endpoint, dir.path(), "unit_bisect", 3).await;
    let left = sh.deliver(&key(), items(&["a", "b", "c", "d"]), 3).await.left;
    assert!(left.is_empty());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, [vec!["a", "b", "c", "d"], vec!["a", "b"], vec!["c", "d"], vec!["c"], vec!["d"]]);
    sh.dead.lock().unwrap().sync().unwrap();
    let dead = rejected(dir.path());
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["error"].as_str().unwrap().starts_with("d: InvalidInputException"), "{dead:?}");
    assert_eq!(sh.m.sent.get(), 3);
}

#[tokio::test]
async fn an_unreachable_service_leaves_the_batch_for_the_spool_after_the_retries() {
    let (endpoint, seen) = fake(vec![DOWN, DOWN, DOWN]).await;
    let dir = tempfile::tempdir().unwrap();
    let sh = shared_for(&endpoint, dir.path(), "unit_down", 1).await;
    let d = sh.deliver(&key(), items(&["a", "b"]), 1).await;
    assert_eq!(d.left.len(), 2, "nothing dropped");
    assert!(d.refused.is_none(), "a 503 is transient, not a refusal");
    assert_eq!(seen.lock().unwrap().len(), 2, "one try and one retry");
    assert!(sh.spool_items(key(), d.left, Some(None)).await.is_ok());
    assert_eq!(sh.spool_depth().0, 2);
    assert!(sh.failing.load(Ordering::Relaxed), "the route is parked");
    assert_eq!(sh.m.parked.get(), 1);
    // Back up: the drainer's step delivers the spooled segment and deletes it.
    let (endpoint, _) = fake(vec![OK]).await;
    let sh2 = shared_for(&endpoint, dir.path(), "unit_down_after", 1).await;
    assert_eq!(sh2.spool_depth().0, 2, "the spool survived (reopened)");
    sh2.drain_ready().await;
    assert_eq!(sh2.spool_depth().0, 0);
    assert_eq!(sh2.m.sent.get(), 2);
    assert_eq!(sh2.m.parked.get(), 0);
}

fn line(id: &str, region: &str) -> Vec<String> {
    vec![serde_json::json!({"Id": id, "AwsAccountId": "111122223333",
        "ProductArn": format!("arn:aws:securityhub:{region}:111122223333:product/111122223333/default"),
        "Resources": [{"Type": "Other", "Id": "x"}]})
    .to_string()]
}

fn sink_on(shared: Arc<Shared>) -> SecurityHubSink {
    SecurityHubSink::on(shared)
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

/// The wedge of issue 15: one eu-west-1 finding refused (AccessDenied),
/// then 4 healthy us-east-1 findings. Before per-route queues they were
/// spooled behind the refused one and never sent.
#[tokio::test]
async fn a_refused_route_neither_blocks_the_others_nor_is_retried_forever() {
    let (endpoint, seen, regions) = fake_refusing(Some("eu-west-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = SecurityHubSinkConfig {
        max_retries: 1,
        max_refused_attempts: 3,
        park_max: Duration::from_millis(200),
        ..Default::default()
    };
    let sh = shared_with(&endpoint, dir.path(), "unit_wedge", cfg).await;
    let mut sink = sink_on(sh.clone());
    sink.send_json_lines(line("eu-1", "eu-west-1")).await.unwrap();
    sink.flush().await.unwrap();
    assert_eq!(sh.spool_depth().0, 1, "the refused finding is spooled, not lost");
    assert_eq!(sh.m.parked.get(), 1, "its route is parked");
    let us: Vec<String> = (1..=4).flat_map(|i| line(&format!("us-{i}"), "us-east-1")).collect();
    sink.send_json_lines(us).await.unwrap();
    sink.flush().await.unwrap();
    let sent_us = || {
        let seen = seen.lock().unwrap();
        let regions = regions.lock().unwrap();
        seen.iter().zip(regions.iter()).filter(|(_, r)| *r == "us-east-1").map(|(ids, _)| ids.len()).sum::<usize>()
    };
    assert_eq!(sent_us(), 4, "the healthy route's findings went out at once, not behind the refused one");
    assert_eq!(sh.m.sent.get(), 4);
    // The refused route is retried a bounded number of times, then dead-lettered with the reason.
    until("the refused finding is dead-lettered", || rejected(dir.path()).len() == 1).await;
    until("the spool is empty", || sh.spool_depth().0 == 0).await;
    let eu_calls = regions.lock().unwrap().iter().filter(|r| *r == "eu-west-1").count();
    assert_eq!(eu_calls, 3, "max_refused_attempts calls, no more");
    let dead = rejected(dir.path());
    assert_eq!(dead[0]["kind"], "securityhub_refused");
    let why = dead[0]["error"].as_str().unwrap();
    assert!(why.starts_with("eu-1: ") && why.contains("AccessDenied") && why.contains("3 times"), "{why}");
    assert!(dead[0]["raw"].as_str().unwrap().contains("\"Id\":\"eu-1\""));
    assert_eq!(sh.m.failed.get(), 1);
    assert_eq!(sh.m.parked.get(), 0, "nothing waits any more");
    // Another refusal after that: the route is still refused, so the finding
    // gets one more try and is dead-lettered, not spooled.
    sink.send_json_lines(line("eu-2", "eu-west-1")).await.unwrap();
    sink.flush().await.unwrap();
    until("eu-2 dead-lettered", || rejected(dir.path()).len() == 2).await;
    assert_eq!(regions.lock().unwrap().iter().filter(|r| *r == "eu-west-1").count(), 4);
    sink.close().await.unwrap();
}

/// With `spool_durable = false` a flush (and so the commit) fails while
/// findings wait in the spool, and succeeds once they are delivered;
/// with the default (durable) it succeeds as soon as they are spooled.
#[tokio::test]
async fn a_spool_that_is_not_durable_holds_the_commit_until_delivery() {
    for durable in [false, true] {
        let (endpoint, seen) = fake(vec![DOWN, DOWN, OK]).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = SecurityHubSinkConfig {
            max_retries: 1,
            spool_durable: durable,
            park_max: Duration::from_millis(100),
            ..Default::default()
        };
        let sh = shared_with(&endpoint, dir.path(), &format!("unit_durable_{durable}"), cfg).await;
        let mut sink = sink_on(sh.clone());
        sink.send_json_lines(line("a", "us-east-1")).await.unwrap();
        let first = sink.flush().await;
        if durable {
            assert!(first.is_ok(), "spooled counts as accepted on a durable spool: {first:?}");
        } else {
            let e = first.expect_err("spooled is not accepted on a spool that is not durable");
            assert!(e.to_string().contains("not durable"), "{e}");
        }
        until("delivered after the outage", || sh.m.sent.get() == 1).await;
        until("spool empty", || sh.spool_depth().0 == 0).await;
        sink.flush().await.expect("accepted once delivered");
        assert_eq!(seen.lock().unwrap().len(), 3);
        sink.close().await.unwrap();
    }
}

#[tokio::test]
async fn findings_spooled_by_an_older_version_move_to_their_routes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let mut old = Spool::open(&root, 1 << 20).unwrap();
    let mut mixed = line("a", "us-east-1");
    mixed.extend(line("b", "eu-west-1"));
    old.append(&mixed).unwrap();
    drop(old);
    let (endpoint, seen, regions) = fake_refusing(None).await;
    let sh = shared_for(&endpoint, dir.path(), "unit_legacy", 1).await;
    assert_eq!(sh.spool_depth().0, 2);
    assert_eq!(sh.queue_list().len(), 2, "one queue per route");
    sh.drain_ready().await;
    assert_eq!(sh.spool_depth().0, 0);
    let mut r = regions.lock().unwrap().clone();
    r.sort();
    assert_eq!(r, ["eu-west-1", "us-east-1"]);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(std::fs::read_dir(&root).unwrap().filter_map(Result::ok).all(|e| e.file_type().unwrap().is_dir()));
}

#[test]
fn parking_doubles_up_to_the_limit() {
    let max = Duration::from_secs(5);
    let waits: Vec<u128> = (1..=6).map(|f| park_for(f, max).as_millis()).collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
    assert_eq!(park_for(1000, max), max);
}

fn answer(failed: &[(&str, &str)]) -> BatchImportFindingsOutput {
    let mut b =
        BatchImportFindingsOutput::builder().failed_count(failed.len() as i32).success_count(3 - failed.len() as i32);
    for (id, code) in failed {
        b = b.failed_findings(
            ImportFindingsError::builder().id(*id).error_code(*code).error_message(format!("{code} for {id}")).build(),
        );
    }
    b.build()
}

#[test]
fn a_partial_failure_is_split_into_delivered_retried_and_rejected() {
    let ids = ["a", "b", "c"];
    let a = classify(&ids, &answer(&[("b", "ThrottlingException"), ("c", "InvalidInput")]));
    assert_eq!(a.delivered, [0]);
    assert_eq!(a.retry, [1]);
    assert_eq!(a.rejected, [(2, "InvalidInput".to_string(), "InvalidInput for c".to_string())]);
    let all = classify(&ids, &answer(&[]));
    assert_eq!(all.delivered, [0, 1, 2]);
    let internal = classify(&ids, &answer(&[("a", "InternalException"), ("c", "AccessDeniedException")]));
    assert_eq!(internal.retry, [0]);
    assert_eq!(internal.rejected.len(), 1);
}

#[test]
fn findings_route_by_account_and_product_arn_region() {
    assert_eq!(
        route_key("111122223333", "arn:aws:securityhub:eu-west-1:111122223333:product/111122223333/default"),
        ("111122223333".to_string(), Some("eu-west-1".to_string()))
    );
    assert_eq!(route_key("1", "bad"), ("1".to_string(), None));
}
