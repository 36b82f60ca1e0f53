//! The SQS source against a real SQS and S3 emulator (moto): EventBridge,
//! SNS-wrapped and raw bodies come out as findings and their messages are
//! deleted once committed; S3 notifications of CloudTrail log files are
//! fetched and decoded (digest files skipped); a poison message goes to the
//! queue's dead-letter queue through its redrive policy while the rest flows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use trailwatch_processor::config::Config;
use trailwatch_processor::service::RunSummary;
use trailwatch_tests::faults::{Fault, FaultConfig, FaultProxy, Service};
use trailwatch_tests::fixtures::{
    create_queue as queue, event_ids as ids, eventbridge, eventbridge_of, finding_event_ids, jsonl_out_toml,
    log_file_of, marker_event as record, queue_depth as depth, rules, run_until, s3_notification, service_toml, sns,
    until_findings, DENIED_BURST_RULES, DENIED_BURST_RULE_ID, MARKER_RULE,
};
use trailwatch_tests::Server;

fn log_file(ids: &[u32]) -> Vec<u8> {
    log_file_of(&ids.iter().map(|i| record(*i)).collect::<Vec<_>>())
}

fn config(server: &Server, dir: &Path, url: &str) -> Config {
    config_at(&server.aws_section(), dir, url)
}

/// [`config`] with another `[aws]` section (a fault proxy's endpoint).
fn config_at(aws: &str, dir: &Path, url: &str) -> Config {
    trailwatch_tests::fixtures::config(&format!(
        r#"
        {aws}
        {service}
        [sources.queue]
        type = "sqs"
        queue_url = "{url}"
        receivers = 2
        wait_time = "1s"
        {out}
        "#,
        service = service_toml(&dir.join("state"), "200ms"),
        out = jsonl_out_toml(&findings_path(dir)),
    ))
}

fn findings_path(dir: &Path) -> PathBuf {
    dir.join("findings.ndjson")
}

fn finding_events(dir: &Path) -> Vec<String> {
    let mut v = finding_event_ids(&findings_path(dir));
    v.sort();
    v
}

#[tokio::test]
async fn bodies_become_findings_and_messages_are_deleted_after_commit() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = queue(&sqs, "events", &[]).await;
    for body in [eventbridge(1), sns(&eventbridge(2)), record(3), sns(&record(4))] {
        sqs.send_message().queue_url(&url).message_body(body).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let s =
        run_until(config(&server, dir.path(), &url), rules(MARKER_RULE), until_findings(&findings_path(dir.path()), 4))
            .await;
    assert_eq!(finding_events(dir.path()), ids(&[1, 2, 3, 4]));
    assert_eq!(s.eval.events, 4);
    // Committed, so deleted: nothing visible or in flight.
    assert_eq!(depth(&sqs, &url).await, 0);
}

#[tokio::test]
async fn s3_notified_log_files_are_read_and_digests_skipped() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = trailwatch_tests::chaos::s3_client(&sdk);
    s3.create_bucket().bucket("org-trail").send().await.unwrap();
    let key1 = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/01/111122223333_CloudTrail_us-east-1_20261101T1000Z_a.json.gz";
    let key2 = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/01/111122223333_CloudTrail_us-east-1_20261101T1005Z_b.json.gz";
    for (key, body) in [(key1, log_file(&[10, 11, 12])), (key2, log_file(&[13]))] {
        s3.put_object().bucket("org-trail").key(key).body(body.into()).send().await.unwrap();
    }
    let url = queue(&sqs, "notifications", &[]).await;
    let digest =
        "AWSLogs/o-abc/111122223333/CloudTrail-Digest/us-east-1/2026/11/01/x_CloudTrail-Digest_us-east-1.json.gz";
    let created = format!(
        r#"{{"version":"0","id":"s3-1","detail-type":"Object Created","source":"aws.s3","account":"111122223333","time":"2026-11-01T10:06:00Z","region":"us-east-1","resources":[],"detail":{{"bucket":{{"name":"org-trail"}},"object":{{"key":"{key2}","size":100}}}}}}"#
    );
    for body in [s3_notification("org-trail", key1), sns(&s3_notification("org-trail", digest)), created] {
        sqs.send_message().queue_url(&url).message_body(body).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let s =
        run_until(config(&server, dir.path(), &url), rules(MARKER_RULE), until_findings(&findings_path(dir.path()), 4))
            .await;
    assert_eq!(finding_events(dir.path()), ids(&[10, 11, 12, 13]));
    assert_eq!(s.eval.events, 4);
    // The digest notification was skipped, not fetched (it does not exist) and not poison: deleted too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(depth(&sqs, &url).await, 0);
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_queue_and_the_rest_flows() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = queue(&sqs, "events-dlq", &[]).await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#);
    let url = queue(
        &sqs,
        "events",
        &[(QueueAttributeName::RedrivePolicy, redrive), (QueueAttributeName::VisibilityTimeout, "1".into())],
    )
    .await;
    sqs.send_message().queue_url(&url).message_body("this is not an event {").send().await.unwrap();
    // An S3 notification for an object that does not exist is poison too.
    sqs.send_message()
        .queue_url(&url)
        .message_body(s3_notification("no-such-bucket", "AWSLogs/x.json.gz"))
        .send()
        .await
        .unwrap();
    for i in 20..23 {
        sqs.send_message().queue_url(&url).message_body(eventbridge(i)).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (sqs2, dlq2, path) = (sqs.clone(), dlq.clone(), dir.path().to_path_buf());
    let until = async move {
        while finding_events(&path).len() < 3 || depth(&sqs2, &dlq2).await < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let s = run_until(config(&server, dir.path(), &url), rules(MARKER_RULE), until).await;
    assert_eq!(finding_events(dir.path()), ids(&[20, 21, 22]));
    assert_eq!(s.eval.events, 3);
    assert_eq!(depth(&sqs, &dlq).await, 2, "both poison messages were redriven");
    assert_eq!(depth(&sqs, &url).await, 0);
}

const ACCOUNTS: [&str; 4] = ["111111111111", "222222222222", "333333333333", "444444444444"];
/// Log files per account: one per 5 minutes of event time, 3 hours.
const FILES: u32 = 36;

/// A CloudTrail event of `account` at `secs` after 2026-11-01T00:00:00Z.
fn trail_event(account: &str, secs: u32, n: u32, user: &str, denied: bool) -> String {
    let error = if denied { r#""errorCode":"AccessDenied","# } else { "" };
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T{h:02}:{m:02}:{s:02}Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets",{error}"awsRegion":"us-east-1","eventID":"00000000-0000-4000-a000-{n:012}","recipientAccountId":"{account}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{account}:user/{user}","accountId":"{account}"}}}}"#,
        h = secs / 3600,
        m = (secs % 3600) / 60,
        s = secs % 60
    )
}

/// The log files of one account, as CloudTrail writes them: file `i` holds
/// the events of minutes [5i, 5i+5). Every 15 minutes a burst of three
/// denials by one user starts at the end of one file and ends in the next.
fn account_files(ai: usize) -> Vec<Vec<String>> {
    let account = ACCOUNTS[ai];
    let mut events: Vec<(u32, String, bool)> =
        (0..FILES * 300).step_by(15).map(|secs| (secs, "busy".to_string(), false)).collect();
    for j in 0..FILES / 3 {
        for d in [0, 15, 30] {
            events.push((j * 900 + 290 + d, format!("burst{j}"), true));
        }
    }
    events.sort_by_key(|e| e.0);
    let mut files: Vec<Vec<String>> = vec![Vec::new(); FILES as usize];
    for (k, (secs, user, denied)) in events.into_iter().enumerate() {
        let n = ai as u32 * 1_000_000 + k as u32;
        files[(secs / 300) as usize].push(trail_event(account, secs, n, &user, denied));
    }
    files
}

fn burst_groups(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = trailwatch_tests::fixtures::read_jsonl(&findings_path(dir))
        .into_iter()
        .filter(|v| v["GeneratorId"] == DENIED_BURST_RULE_ID)
        .map(|v| v["ProductFields"]["trailwatch/GroupKey"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A backlog of S3-notified log files of four accounts, drained by four
/// receivers at once (each batch of 10 files is ~12 minutes of event time,
/// handed on in whatever order their S3 reads finish): every burst fires,
/// as in a time-sorted replay, and no event is late.
#[tokio::test]
async fn four_receivers_draining_a_backlog_lose_no_correlation() {
    let (s, got, want, _) = drain_backlog(None, Duration::from_secs(4)).await;
    assert_eq!(s.eval.detector.late_dropped, 0);
    assert_eq!(got, want, "every burst of every account fired");
}

/// Receive order, proven: the same backlog, with S3 reads of some log
/// files slowed by 2 s in a fault proxy, so a receiver whose batch was
/// received first often finishes after those received later. Batches are
/// handed on in receive order anyway (tickets), so nothing is late and every
/// burst fires. Handed on in finishing order instead (the turn wait
/// removed), this test fails: later batches move the watermark past the
/// slow one's events.
#[tokio::test]
async fn slow_s3_reads_do_not_reorder_what_four_receivers_hand_on() {
    let faults = FaultConfig {
        faults: vec![Fault::Slow],
        max_faults: 40,
        slow: Duration::from_secs(2),
        every_kind_early: false,
        ..FaultConfig::new(16, 0.3, &[Service::S3])
    };
    let (s, got, want, proxy) = drain_backlog(Some(faults), Duration::from_secs(3)).await;
    let proxy = proxy.unwrap();
    eprintln!("proxy: {}", proxy.summary());
    assert!(proxy.injected_of(Fault::Slow) >= 10, "S3 reads were slowed: {}", proxy.summary());
    assert_eq!(s.eval.detector.late_dropped, 0);
    assert_eq!(got, want, "every burst of every account fired");
}

/// Puts the four accounts' log files in S3 and their notifications in a
/// queue (in delivery order), drains it with four receivers, through a fault
/// proxy when `faults` is given. Returns the run, the burst groups that
/// fired and those that should have.
async fn drain_backlog(
    faults: Option<FaultConfig>,
    visibility: Duration,
) -> (RunSummary, Vec<String>, Vec<String>, Option<FaultProxy>) {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = trailwatch_tests::chaos::s3_client(&sdk);
    s3.create_bucket().bucket("org-trail").send().await.unwrap();
    let url = queue(&sqs, "backlog", &[]).await;
    let files: Vec<Vec<Vec<String>>> = (0..ACCOUNTS.len()).map(account_files).collect();
    // Delivered in time order across accounts, as CloudTrail writes them.
    // (slot, account index) in delivery order.
    let order = (0..FILES as usize).flat_map(|i| (0..ACCOUNTS.len()).map(move |ai| (i, ai)));
    for (i, ai) in order {
        let account = ACCOUNTS[ai];
        let key = format!(
            "AWSLogs/o-abc/{account}/CloudTrail/us-east-1/2026/11/01/{account}_CloudTrail_us-east-1_20261101T{:02}{:02}Z_{i}.json.gz",
            i / 12,
            (i % 12) * 5
        );
        s3.put_object().bucket("org-trail").key(&key).body(log_file_of(&files[ai][i]).into()).send().await.unwrap();
        sqs.send_message().queue_url(&url).message_body(s3_notification("org-trail", &key)).send().await.unwrap();
    }
    let want: Vec<String> = {
        let mut v: Vec<String> = ACCOUNTS
            .iter()
            .flat_map(|a| (0..FILES / 3).map(move |j| format!("userIdentity.arn=arn:aws:iam::{a}:user/burst{j}")))
            .collect();
        v.sort();
        v
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = faults.map(|f| FaultProxy::start(&server.endpoint, f).unwrap());
    let aws = match &proxy {
        Some(p) => format!("[aws]\nregion = \"{}\"\nendpoint_url = \"{}\"\n", trailwatch_tests::REGION, p.endpoint),
        None => server.aws_section(),
    };
    let mut cfg = config_at(&aws, dir.path(), &url);
    if let Some(trailwatch_processor::sources::SourceConfig::Sqs(q)) = cfg.sources.get_mut("queue") {
        q.receivers = 4;
        // A short hold at start (two visibility timeouts): the drain below
        // takes longer, so it is the receivers' order that is tested.
        q.visibility_timeout = Some(visibility);
    }
    // A lateness of 6 minutes: one batch (~12 minutes of event time)
    // handed on before an older one makes the older one late, while two
    // adjacent files (5 minutes each) that SQS returns out of order in one
    // batch (a standard queue is only roughly ordered) are not.
    cfg.windows.allowed_lateness = Duration::from_secs(6 * 60);
    let s = run_until(cfg, rules(DENIED_BURST_RULES), drained(&sqs, &url)).await;
    let total: usize = files.iter().flatten().map(Vec::len).sum();
    // A message can come back on a loaded machine (its visibility is short
    // here): read twice, its events count once.
    assert!(s.eval.events >= total as u64, "the whole backlog was read: {} of {total}", s.eval.events);
    (s, burst_groups(dir.path()), want, proxy)
}

/// Resolves once the queue at `url` is empty (nothing visible or in flight).
fn drained(sqs: &aws_sdk_sqs::Client, url: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (sqs, url) = (sqs.clone(), url.to_string());
    async move {
        while depth(&sqs, &url).await > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A gzip bomb: `members` gzip members of 1 MiB of zeros each (about 1 KiB
/// apiece compressed), read back to back as one unit.
fn gzip_bomb(members: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    gz.finish().unwrap().repeat(members)
}

#[tokio::test]
async fn a_gzip_bomb_in_s3_is_stopped_at_the_limit_dead_lettered_and_the_rest_flows() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = trailwatch_tests::chaos::s3_client(&sdk);
    s3.create_bucket().bucket("org-trail").send().await.unwrap();
    let (bomb_key, good_key) =
        ("AWSLogs/1/CloudTrail/us-east-1/bomb.json.gz", "AWSLogs/1/CloudTrail/us-east-1/good.json.gz");
    let bomb = gzip_bomb(32);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    s3.put_object().bucket("org-trail").key(bomb_key).body(bomb.into()).send().await.unwrap();
    s3.put_object().bucket("org-trail").key(good_key).body(log_file(&[20, 21]).into()).send().await.unwrap();
    let url = queue(&sqs, "bombs", &[]).await;
    for key in [bomb_key, good_key] {
        sqs.send_message().queue_url(&url).message_body(s3_notification("org-trail", key)).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    // 32 MiB of zeros against a 1 MiB limit.
    let mut cfg = config(&server, dir.path(), &url);
    cfg.decode.max_decompressed_bytes = 1 << 20;
    let s = run_until(cfg, rules(MARKER_RULE), until_findings(&findings_path(dir.path()), 2)).await;
    assert_eq!(finding_events(dir.path()), ids(&[20, 21]));
    assert_eq!(s.eval.bad_by_kind.get("too_large"), Some(&1), "{:?}", s.eval.bad_by_kind);
    let dead = std::fs::read_to_string(dir.path().join("state/dead-letter.ndjson")).unwrap();
    let lines: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{dead}");
    assert_eq!(lines[0]["kind"], "too_large");
    assert!(lines[0]["origin"].as_str().unwrap().ends_with("bomb.json.gz"), "{dead}");
    // Dead-lettered is handled: the message is deleted, not redelivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(depth(&sqs, &url).await, 0);
}

/// Events in message bodies (raw records, EventBridge, SNS-wrapped) are
/// partitioned by their own account+region (issue 16): account B's events
/// arrive an hour of event time behind account A's, interleaved in one
/// queue, and B's bursts still fire with a 2 minute lateness. With one
/// partition per source, A's newer events would make all of B's late.
#[tokio::test]
async fn body_events_hold_the_watermark_per_account_and_region() {
    let server = Server::moto().unwrap();
    let sdk = server.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = queue(&sqs, "bodies", &[]).await;
    let (a, b) = (ACCOUNTS[0], ACCOUNTS[1]);
    // A: 30 minutes from 01:00; B: 30 minutes from 00:00, with 4 bursts.
    let a_events: Vec<String> = (0..120).map(|k| trail_event(a, 3600 + k * 15, k, "busy", false)).collect();
    let mut b_times: Vec<(u32, String, bool)> = (0..120).map(|k| (k * 15, "busy".to_string(), false)).collect();
    for j in 0..4 {
        for d in [0, 15, 30] {
            b_times.push((j * 400 + 100 + d + 7, format!("burst{j}"), true));
        }
    }
    b_times.sort_by_key(|e| e.0);
    let b_events: Vec<String> = b_times
        .iter()
        .enumerate()
        .map(|(k, (secs, user, denied))| trail_event(b, *secs, 1_000_000 + k as u32, user, *denied))
        .collect();
    let body_a = |k: usize| format!(r#"{{"Records":[{}]}}"#, a_events[k]);
    let body_b = |k: usize| {
        let id = format!("eb-{k}");
        match k % 4 {
            0 => eventbridge_of(&b_events[k], &id),
            1 => sns(&eventbridge_of(&b_events[k], &id)),
            2 => sns(&format!(r#"{{"Records":[{}]}}"#, b_events[k])),
            _ => format!(r#"{{"Records":[{}]}}"#, b_events[k]),
        }
    };
    // The first of each before the start (both partitions exist while the
    // start-up hold lasts), the rest once the hold is over.
    for body in [body_a(0), body_b(0)] {
        sqs.send_message().queue_url(&url).message_body(body).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server, dir.path(), &url);
    if let Some(trailwatch_processor::sources::SourceConfig::Sqs(q)) = cfg.sources.get_mut("queue") {
        q.receivers = 1;
        // Hold at start: 2 x 1 s + the 1 s wait.
        q.visibility_timeout = Some(Duration::from_secs(1));
    }
    cfg.windows.allowed_lateness = Duration::from_secs(2 * 60);
    let (sqs2, url2) = (sqs.clone(), url.clone());
    let rest: Vec<String> = (1..a_events.len().max(b_events.len()))
        .flat_map(|k| {
            let mut v = Vec::new();
            if k < a_events.len() {
                v.push(body_a(k));
            }
            if k < b_events.len() {
                v.push(body_b(k));
            }
            v
        })
        .collect();
    let until = async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        for body in rest {
            sqs2.send_message().queue_url(&url2).message_body(body).send().await.unwrap();
        }
        drained(&sqs2, &url2).await;
    };
    let s = run_until(cfg, rules(DENIED_BURST_RULES), until).await;
    assert!(s.eval.events >= (a_events.len() + b_events.len()) as u64, "everything read: {}", s.eval.events);
    let want: Vec<String> = (0..4).map(|j| format!("userIdentity.arn=arn:aws:iam::{b}:user/burst{j}")).collect();
    assert_eq!(s.eval.detector.late_dropped, 0);
    assert_eq!(burst_groups(dir.path()), want, "every burst of the lagging account fired");
}
