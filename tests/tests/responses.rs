//! Responses end to end: CloudTrail events → the service's pipeline (real
//! rules, the file source) → `[[responses]]` → actions in moto (IAM, STS,
//! SNS, ECR, CloudTrail), each in its own member account reached through
//! the response role. What the actions changed is read back from moto.
//! BatchUpdateFindings (absent from moto) and the webhook go to a recording
//! endpoint: the write-back is checked by its request shape only.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use trailwatch_processor::config::Config;
use trailwatch_processor::ruleset;
use trailwatch_processor::service::{self, RunOptions};
use trailwatch_rules::{RuleFile, RuleSet};
use trailwatch_tests::faults::{FaultConfig, FaultProxy};
use trailwatch_tests::fixtures::read_jsonl as read_lines;
use trailwatch_tests::recorder::Recorder;
use trailwatch_tests::Server;

/// A rule of the test's own for actions on principals (the pack's rules
/// stay as they are: restore-config uses them).
const SECRET_RULE: &str = r#"
title: Test Secret Read
id: 7d0c1a52-0000-4000-8000-00000000a001
status: experimental
logsource:
    product: aws
    service: cloudtrail
detection:
    selection:
        eventSource: secretsmanager.amazonaws.com
        eventName: GetSecretValue
    condition: selection
level: high
"#;
const SECRET_RULE_ID: &str = "7d0c1a52-0000-4000-8000-00000000a001";

fn moto() -> &'static Server {
    static MOTO: OnceLock<Server> = OnceLock::new();
    MOTO.get_or_init(|| {
        // AWS managed policies (AWSCompromisedKeyQuarantineV3) exist in moto only when loaded.
        std::env::set_var("MOTO_IAM_LOAD_MANAGED_POLICIES", "true");
        Server::moto().expect("moto starts")
    })
}

fn rule_set() -> Arc<RuleSet> {
    static SET: OnceLock<Arc<RuleSet>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut files = ruleset::builtin_files();
        files.push(RuleFile { name: "secret.yml".into(), text: SECRET_RULE.into() });
        Arc::new(ruleset::compile(&files, &ruleset::test_options().unwrap()).unwrap().0)
    })
    .clone()
}

/// An SDK config acting in `account` (moto keys accounts by the assumed role's credentials).
async fn member(account: &str) -> aws_config::SdkConfig {
    let base = moto().sdk_config().await;
    let sts = aws_sdk_sts::Client::new(&base);
    let c = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/test-admin"))
        .role_session_name("test-setup")
        .send()
        .await
        .unwrap();
    let c = c.credentials().unwrap();
    let creds = aws_sdk_sts::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "test",
    );
    base.to_builder().credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(creds)).build()
}

fn event(n: u32, account: &str, source: &str, name: &str, identity: Value, params: Value) -> Value {
    json!({
        "eventVersion": "1.08",
        "eventID": format!("00000000-0000-4000-8000-{account}{n:04}"),
        "eventTime": format!("2026-12-01T10:{:02}:{:02}Z", (n / 60) % 60, n % 60),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "recipientAccountId": account,
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2",
        "userIdentity": identity,
        "requestParameters": params,
    })
}

fn assumed(account: &str, role: &str, session: &str) -> Value {
    json!({
        "type": "AssumedRole",
        "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
        "accountId": account,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{account}:role/{role}"), "userName": role}}
    })
}

fn user(account: &str, name: &str) -> Value {
    json!({"type": "IAMUser", "arn": format!("arn:aws:iam::{account}:user/{name}"), "accountId": account, "userName": name})
}

fn secret_read(n: u32, account: &str, identity: Value) -> Value {
    event(n, account, "secretsmanager.amazonaws.com", "GetSecretValue", identity, json!({"secretId": "prod/db"}))
}

struct Run {
    dir: tempfile::TempDir,
    input: PathBuf,
}

impl Run {
    fn new(events: &[Value]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("events.ndjson");
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(&input, text).unwrap();
        Run { dir, input }
    }

    /// One run of the service over the events (a fresh state dir each time:
    /// a second run knows nothing of the first but what AWS says).
    async fn service(&self, attempt: u32, rec: &Recorder, respond: &str, responses: &str) -> Vec<Value> {
        // Dummy credentials for the SDK clients the service builds.
        trailwatch_tests::aws_env();
        let state = self.dir.path().join(format!("state{attempt}"));
        let out = self.dir.path().join(format!("findings{attempt}.ndjson"));
        let run = trailwatch_tests::fixtures::file_run_toml(&state, &self.input, &out, true);
        let text = format!(
            r#"
            {run}
            [aws]
            region = "us-east-1"
            endpoint_url = "{moto}"
            max_attempts = 1
            [respond]
            securityhub_endpoint_url = "{rec}"
            {respond}
            {responses}
            "#,
            moto = moto().endpoint,
            rec = rec.endpoint,
        );
        let cfg = Config::from_toml_str(&text).unwrap();
        let opts = RunOptions::default();
        tokio::time::timeout(Duration::from_secs(120), service::run(cfg, rule_set(), opts, std::future::pending()))
            .await
            .expect("the run ends")
            .expect("the run succeeds");
        read_lines(&out)
    }
}

/// Every write-back's (finding id, action field value), from the recorder.
fn written_back(rec: &Recorder, action: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in rec.to("/findings/batchupdate") {
        assert_eq!(r.method, "PATCH", "BatchUpdateFindings is PATCH /findings/batchupdate");
        let Some(v) = r.body["UserDefinedFields"][format!("trailwatch/response/{action}")].as_str() else { continue };
        for id in r.body["FindingIdentifiers"].as_array().unwrap() {
            out.push((id["Id"].as_str().unwrap().to_string(), v.to_string()));
        }
    }
    out
}

fn finding_of<'a>(findings: &'a [Value], rule: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["ProductFields"]["trailwatch/RuleId"] == rule)
        .unwrap_or_else(|| panic!("no finding of {rule}"))
}

fn url_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

async fn inline_policies(iam: &aws_sdk_iam::Client, role: &str) -> Vec<String> {
    iam.list_role_policies().role_name(role).send().await.unwrap().policy_names().to_vec()
}

#[tokio::test]
async fn revoke_role_sessions_changes_exactly_that_role_and_again_is_a_no_op() {
    let account = "111111111111";
    let iam = aws_sdk_iam::Client::new(&member(account).await);
    for r in ["dev", "other"] {
        iam.create_role().role_name(r).assume_role_policy_document("{}").send().await.unwrap();
    }
    let rec = Recorder::start().unwrap();
    let run = Run::new(&[secret_read(1, account, assumed(account, "dev", "alice"))]);
    let responses = format!(
        "[[responses]]\nname = \"secrets\"\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"revoke-role-sessions\"]\nmode = \"enforce\"\n"
    );
    let findings = run.service(1, &rec, "", &responses).await;
    let f = finding_of(&findings, SECRET_RULE_ID);

    assert_eq!(inline_policies(&iam, "dev").await, vec!["TrailwatchRevokeOlderSessions".to_string()]);
    assert!(inline_policies(&iam, "other").await.is_empty(), "only the role behind the session is touched");
    let doc = iam
        .get_role_policy()
        .role_name("dev")
        .policy_name("TrailwatchRevokeOlderSessions")
        .send()
        .await
        .unwrap()
        .policy_document()
        .to_string();
    // IAM returns policy documents URL-encoded.
    let v: Value = serde_json::from_str(&url_decode(&doc)).unwrap();
    let st = &v["Statement"][0];
    assert_eq!(st["Effect"], "Deny");
    assert_eq!(st["Action"], json!(["*"]));
    let cutoff = st["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str().unwrap();
    assert!(cutoff > "2026-12-01T10:00:01Z", "revokes sessions issued before now: {cutoff}");

    // The write-back: one BatchUpdateFindings naming the finding, with Note, field and workflow.
    let calls = rec.to("/findings/batchupdate");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let b = &calls[0].body;
    assert_eq!(b["FindingIdentifiers"], json!([{"Id": f["Id"], "ProductArn": f["ProductArn"]}]));
    assert_eq!(b["Note"]["UpdatedBy"], "trailwatch");
    let note = b["Note"]["Text"].as_str().unwrap();
    assert!(note.contains("revoke-role-sessions: done") && note.contains("role dev"), "{note}");
    assert!(note.len() <= 512);
    assert_eq!(b["Workflow"]["Status"], "NOTIFIED");
    let field = b["UserDefinedFields"]["trailwatch/response/revoke-role-sessions"].as_str().unwrap();
    assert!(field.starts_with("done: "), "{field}");

    // Again, with no memory of the first run: AWS already says it is done.
    let rec2 = Recorder::start().unwrap();
    run.service(2, &rec2, "", &responses).await;
    let again = iam
        .get_role_policy()
        .role_name("dev")
        .policy_name("TrailwatchRevokeOlderSessions")
        .send()
        .await
        .unwrap()
        .policy_document()
        .to_string();
    assert_eq!(again, doc, "the second run changed nothing");
    let wb = written_back(&rec2, "revoke-role-sessions");
    assert_eq!(wb.len(), 1);
    assert!(wb[0].1.starts_with("already: "), "{wb:?}");
}

#[tokio::test]
async fn quarantine_user_deactivates_keys_attaches_the_policy_and_again_is_a_no_op() {
    let account = "222222222222";
    let iam = aws_sdk_iam::Client::new(&member(account).await);
    for u in ["mallory", "bystander"] {
        iam.create_user().user_name(u).send().await.unwrap();
        iam.create_access_key().user_name(u).send().await.unwrap();
    }
    iam.create_access_key().user_name("mallory").send().await.unwrap();
    let rec = Recorder::start().unwrap();
    let run = Run::new(&[secret_read(1, account, user(account, "mallory"))]);
    let responses =
        format!("[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"quarantine-user\"]\nmode = \"enforce\"\n");
    run.service(1, &rec, "", &responses).await;

    let keys = |u: &'static str| {
        let iam = iam.clone();
        async move {
            let out = iam.list_access_keys().user_name(u).send().await.unwrap();
            out.access_key_metadata().iter().map(|k| k.status().unwrap().as_str().to_string()).collect::<Vec<_>>()
        }
    };
    let attached = |u: &'static str| {
        let iam = iam.clone();
        async move {
            let out = iam.list_attached_user_policies().user_name(u).send().await.unwrap();
            out.attached_policies().iter().map(|p| p.policy_arn().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(keys("mallory").await, vec!["Inactive", "Inactive"]);
    assert_eq!(attached("mallory").await, vec!["arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"]);
    assert_eq!(keys("bystander").await, vec!["Active"], "another user is not touched");
    assert!(attached("bystander").await.is_empty());
    let wb = written_back(&rec, "quarantine-user");
    assert!(wb.len() == 1 && wb[0].1.starts_with("done: user mallory"), "{wb:?}");

    let rec2 = Recorder::start().unwrap();
    run.service(2, &rec2, "", &responses).await;
    assert_eq!(keys("mallory").await, vec!["Inactive", "Inactive"]);
    assert_eq!(attached("mallory").await.len(), 1, "attached once");
    let wb = written_back(&rec2, "quarantine-user");
    assert!(wb.len() == 1 && wb[0].1.starts_with("already: "), "{wb:?}");
}

async fn ecr_state(ecr: &aws_sdk_ecr::Client, repo: &str) -> (bool, String) {
    let out = ecr.describe_repositories().repository_names(repo).send().await.unwrap();
    let r = &out.repositories()[0];
    (
        r.image_scanning_configuration().map(|c| c.scan_on_push()).unwrap_or(false),
        r.image_tag_mutability().unwrap().as_str().to_string(),
    )
}

#[tokio::test]
async fn restore_config_undoes_ecr_and_cloudtrail_drift_and_again_is_a_no_op() {
    let account = "333333333333";
    let conf = member(account).await;
    let ecr = aws_sdk_ecr::Client::new(&conf);
    for r in ["payments/api", "untouched"] {
        ecr.create_repository()
            .repository_name(r)
            .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Mutable)
            .image_scanning_configuration(
                aws_sdk_ecr::types::ImageScanningConfiguration::builder().scan_on_push(false).build(),
            )
            .send()
            .await
            .unwrap();
    }
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build());
    s3.create_bucket().bucket("org-trail-333").send().await.unwrap();
    // moto routes CloudTrail only by the long X-Amz-Target the Rust SDK no longer
    // sends: CloudTrail calls (the test's and the responder's) go through the
    // harness proxy, which lengthens it (and injects no fault).
    let proxy =
        FaultProxy::start(&moto().endpoint, FaultConfig { every_kind_early: false, ..FaultConfig::new(1, 0.0, &[]) })
            .unwrap();
    let ct = aws_sdk_cloudtrail::Client::new(&conf.to_builder().endpoint_url(proxy.endpoint.clone()).build());
    ct.create_trail().name("org").s3_bucket_name("org-trail-333").send().await.unwrap();
    // Created, never started: a stopped trail.
    assert_eq!(ct.get_trail_status().name("org").send().await.unwrap().is_logging(), Some(false));

    let who = assumed(account, "dev", "alice");
    let run = Run::new(&[
        event(
            1,
            account,
            "ecr.amazonaws.com",
            "PutImageScanningConfiguration",
            who.clone(),
            json!({"repositoryName": "payments/api", "imageScanningConfiguration": {"scanOnPush": false}}),
        ),
        event(
            2,
            account,
            "ecr.amazonaws.com",
            "PutImageTagMutability",
            who.clone(),
            json!({"repositoryName": "payments/api", "imageTagMutability": "MUTABLE"}),
        ),
        event(3, account, "cloudtrail.amazonaws.com", "StopLogging", who, json!({"name": "org"})),
    ]);
    let responses = "[[responses]]\nname = \"drift\"\nrules = [\"3b57fec2-09ae-4f5c-bc0f-ae0a72ac43c1\", \"5b0c2f7e-8d4a-4f61-9a3e-0c7b6e2d1a41\", \"12f63f48-5ff7-486a-a844-d2b7088e5336\"]\nactions = [\"restore-config\"]\nmode = \"enforce\"\n";
    let rec = Recorder::start().unwrap();
    let respond = format!("endpoint_url = \"{}\"", proxy.endpoint);
    let findings = run.service(1, &rec, &respond, responses).await;
    assert!(findings.len() >= 3, "{findings:?}");

    assert_eq!(ecr_state(&ecr, "payments/api").await, (true, "IMMUTABLE".to_string()));
    assert_eq!(
        ecr_state(&ecr, "untouched").await,
        (false, "MUTABLE".to_string()),
        "only the repository of the finding"
    );
    assert_eq!(
        ct.get_trail_status().name("org").send().await.unwrap().is_logging(),
        Some(true),
        "{:?}",
        written_back(&rec, "restore-config")
    );
    let wb = written_back(&rec, "restore-config");
    assert_eq!(wb.len(), 3, "{wb:?}");
    assert!(wb.iter().all(|(_, v)| v.starts_with("done: ")), "{wb:?}");

    let rec2 = Recorder::start().unwrap();
    run.service(2, &rec2, &respond, responses).await;
    assert_eq!(ecr_state(&ecr, "payments/api").await, (true, "IMMUTABLE".to_string()));
    let wb = written_back(&rec2, "restore-config");
    assert_eq!(wb.len(), 3, "{wb:?}");
    assert!(wb.iter().all(|(_, v)| v.starts_with("already: ")), "{wb:?}");
}

#[tokio::test]
async fn protected_principals_and_service_linked_roles_are_never_touched() {
    let account = "444444444444";
    let iam = aws_sdk_iam::Client::new(&member(account).await);
    for r in ["breakglass-ops", "trailwatch-deployer"] {
        iam.create_role().role_name(r).assume_role_policy_document("{}").send().await.unwrap();
    }
    let slr = iam.create_service_linked_role().aws_service_name("ecs.amazonaws.com").send().await.unwrap();
    let slr_name = slr.role().unwrap().role_name().to_string();
    iam.create_user().user_name("ops-admin").send().await.unwrap();
    iam.create_access_key().user_name("ops-admin").send().await.unwrap();

    let run = Run::new(&[
        secret_read(1, account, assumed(account, "breakglass-ops", "oncall")),
        secret_read(2, account, assumed(account, "trailwatch-deployer", "ci")),
        secret_read(3, account, assumed(account, &slr_name, "ecs")),
        secret_read(4, account, user(account, "ops-admin")),
    ]);
    let respond = "protected_principals = [\"breakglass*\", \"arn:aws:iam::*:user/ops-admin\"]";
    let responses = format!(
        "[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"revoke-role-sessions\", \"quarantine-user\"]\nmode = \"enforce\"\n"
    );
    let rec = Recorder::start().unwrap();
    run.service(1, &rec, respond, &responses).await;

    for r in ["breakglass-ops", "trailwatch-deployer"] {
        assert!(inline_policies(&iam, r).await.is_empty(), "{r} untouched");
    }
    // The service-linked role lives under its path; its inline policies are AWS's own.
    assert!(inline_policies(&iam, &slr_name).await.is_empty(), "service-linked role untouched");
    let keys = iam.list_access_keys().user_name("ops-admin").send().await.unwrap();
    assert_eq!(keys.access_key_metadata()[0].status().unwrap().as_str(), "Active");
    assert!(iam
        .list_attached_user_policies()
        .user_name("ops-admin")
        .send()
        .await
        .unwrap()
        .attached_policies()
        .is_empty());

    let revoke: Vec<String> = written_back(&rec, "revoke-role-sessions").into_iter().map(|x| x.1).collect();
    assert_eq!(revoke.iter().filter(|v| v.starts_with("skipped_protected")).count(), 2, "{revoke:?}");
    assert_eq!(revoke.iter().filter(|v| v.starts_with("skipped_service_linked")).count(), 1, "{revoke:?}");
    let quarantine: Vec<String> = written_back(&rec, "quarantine-user").into_iter().map(|x| x.1).collect();
    assert!(quarantine.iter().any(|v| v.starts_with("skipped_protected")), "{quarantine:?}");
}

#[tokio::test]
async fn dry_run_changes_nothing_and_writes_nothing() {
    let account = "555555555555";
    let conf = member(account).await;
    let iam = aws_sdk_iam::Client::new(&conf);
    iam.create_role().role_name("dev").assume_role_policy_document("{}").send().await.unwrap();
    iam.create_user().user_name("mallory").send().await.unwrap();
    iam.create_access_key().user_name("mallory").send().await.unwrap();
    let ecr = aws_sdk_ecr::Client::new(&conf);
    ecr.create_repository().repository_name("app").send().await.unwrap();
    ecr.put_image_scanning_configuration()
        .repository_name("app")
        .image_scanning_configuration(
            aws_sdk_ecr::types::ImageScanningConfiguration::builder().scan_on_push(false).build(),
        )
        .send()
        .await
        .unwrap();
    let before = ecr_state(&ecr, "app").await;

    let run = Run::new(&[
        secret_read(1, account, assumed(account, "dev", "alice")),
        secret_read(2, account, user(account, "mallory")),
        event(
            3,
            account,
            "ecr.amazonaws.com",
            "PutImageScanningConfiguration",
            assumed(account, "dev", "alice"),
            json!({"repositoryName": "app", "imageScanningConfiguration": {"scanOnPush": false}}),
        ),
    ]);
    let rec = Recorder::start().unwrap();
    let respond = format!("webhook_url = \"{}/hook\"", rec.endpoint);
    let responses = format!(
        "[[responses]]\nrules = [\"{SECRET_RULE_ID}\", \"3b57fec2-09ae-4f5c-bc0f-ae0a72ac43c1\"]\nactions = [\"notify\", \"revoke-role-sessions\", \"quarantine-user\", \"restore-config\"]\n"
    );
    let m = trailwatch_processor::metrics::get();
    let dry = |a: &str| m.response_actions.with_label_values(&[a, "dry-run", "dry_run"]).get();
    let counts_before: Vec<u64> =
        ["notify", "revoke-role-sessions", "quarantine-user", "restore-config"].iter().map(|a| dry(a)).collect();
    run.service(1, &rec, &respond, &responses).await;

    assert!(inline_policies(&iam, "dev").await.is_empty());
    let keys = iam.list_access_keys().user_name("mallory").send().await.unwrap();
    assert_eq!(keys.access_key_metadata()[0].status().unwrap().as_str(), "Active");
    assert!(iam
        .list_attached_user_policies()
        .user_name("mallory")
        .send()
        .await
        .unwrap()
        .attached_policies()
        .is_empty());
    assert_eq!(ecr_state(&ecr, "app").await, before);
    assert!(rec.requests().is_empty(), "no webhook, no write-back: {:?}", rec.requests());
    let counts_after: Vec<u64> =
        ["notify", "revoke-role-sessions", "quarantine-user", "restore-config"].iter().map(|a| dry(a)).collect();
    let delta: Vec<u64> = counts_after.iter().zip(&counts_before).map(|(a, b)| a - b).collect();
    // notify: 3 findings; revoke: the two by the dev session; quarantine: the user's; restore: the repository's.
    assert_eq!(delta, vec![3, 2, 1, 1], "counted as dry_run");
}

#[tokio::test]
async fn notify_publishes_a_readable_message_to_sns_and_the_webhook_once() {
    let account = "666666666666";
    // The topic is the security team's, in the task's own account.
    let base = moto().sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&base);
    let sqs = aws_sdk_sqs::Client::new(&base);
    let topic = sns.create_topic().name("security-alerts").send().await.unwrap().topic_arn().unwrap().to_string();
    let q = sqs.create_queue().queue_name("alerts-inbox").send().await.unwrap().queue_url().unwrap().to_string();
    let qa = sqs
        .get_queue_attributes()
        .queue_url(&q)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let qarn = qa.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(qarn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();

    let rec = Recorder::start().unwrap();
    // The same event twice: one finding Id, one notification.
    let ev = secret_read(1, account, assumed(account, "dev", "alice"));
    let run = Run::new(&[ev.clone(), ev]);
    let respond = format!("sns_topic_arn = \"{topic}\"\nwebhook_url = \"{}/hook\"", rec.endpoint);
    let responses =
        format!("[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"notify\"]\nmode = \"enforce\"\n");
    let findings = run.service(1, &rec, &respond, &responses).await;
    let id = finding_of(&findings, SECRET_RULE_ID)["Id"].as_str().unwrap().to_string();

    let got = sqs.receive_message().queue_url(&q).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
    let msgs = got.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let body = msgs[0].body().unwrap();
    for want in [
        "Test Secret Read (HIGH)",
        "Who:   arn:aws:sts::666666666666:assumed-role/dev/alice",
        "From:  203.0.113.7",
        "Where: account 666666666666 in us-east-1",
        "When:  2026-12-01T10:00:01Z",
        "API:   GetSecretValue",
        "What to do: ",
        "securityhub/home?region=us-east-1#/findings?search=Id",
        id.as_str(),
    ] {
        assert!(body.contains(want), "`{want}` missing from:\n{body}");
    }
    let hooks = rec.to("/hook");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let h = &hooks[0].body;
    assert_eq!(h["text"], "[trailwatch HIGH] Test Secret Read");
    assert_eq!(h["blocks"][0]["type"], "header");
    assert!(h["blocks"][1]["text"]["text"].as_str().unwrap().contains("Who:"));
    assert_eq!(h["finding"]["id"], id.as_str());
}

#[tokio::test]
async fn the_hourly_cap_holds_under_a_burst_of_1000_findings() {
    let account = "777777777777";
    let events: Vec<Value> =
        (0..1000).map(|n| secret_read(n, account, assumed(account, &format!("app{n}"), "s"))).collect();
    let run = Run::new(&events);
    let rec = Recorder::start().unwrap();
    let respond = format!(
        "webhook_url = \"{}/hook\"\nmax_actions_per_hour = 5\n[respond.rate_limits]\nnotify = 1000",
        rec.endpoint
    );
    let responses =
        format!("[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"notify\"]\nmode = \"enforce\"\n");
    let findings = run.service(1, &rec, &respond, &responses).await;
    assert_eq!(findings.iter().filter(|f| f["ProductFields"]["trailwatch/RuleId"] == SECRET_RULE_ID).count(), 1000);

    assert_eq!(rec.to("/hook").len(), 5, "only the cap's worth of notifications went out");
    let wb = written_back(&rec, "notify");
    let ids: std::collections::BTreeSet<&str> = wb.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 1000, "every finding has its outcome written back");
    assert_eq!(wb.iter().filter(|(_, v)| v.starts_with("done: ")).count(), 5);
    assert_eq!(wb.iter().filter(|(_, v)| v.starts_with("skipped_cap: ")).count(), 995);
    // Identical updates share calls of at most 100 findings.
    let calls = rec.to("/findings/batchupdate");
    assert!(calls.iter().all(|c| c.body["FindingIdentifiers"].as_array().unwrap().len() <= 100));
    assert!(calls.len() < 100, "{} calls", calls.len());
}

#[tokio::test]
async fn an_on_request_event_runs_the_mapped_action_for_the_findings_it_names() {
    let account = "888888888888";
    let iam = aws_sdk_iam::Client::new(&member(account).await);
    for r in ["dev", "other"] {
        iam.create_role().role_name(r).assume_role_policy_document("{}").send().await.unwrap();
    }
    let responses = format!(
        "[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"revoke-role-sessions\"]\nmode = \"on-request\"\n"
    );
    // From the stream, an on-request response does nothing.
    let run = Run::new(&[
        secret_read(1, account, assumed(account, "dev", "alice")),
        event(
            2,
            account,
            "cloudtrail.amazonaws.com",
            "StopLogging",
            assumed(account, "other", "bob"),
            json!({"name": "org"}),
        ),
    ]);
    let rec = Recorder::start().unwrap();
    let findings = run.service(1, &rec, "", &responses).await;
    assert!(inline_policies(&iam, "dev").await.is_empty());
    assert!(rec.requests().is_empty(), "{:?}", rec.requests());
    let secret = finding_of(&findings, SECRET_RULE_ID).clone();
    let stopped = finding_of(&findings, "12f63f48-5ff7-486a-a844-d2b7088e5336").clone();

    // An analyst selects both findings in Security Hub and picks the
    // custom action; EventBridge delivers this event to trailwatch's input.
    let request = json!({
        "version": "0",
        "id": "c0ffee00-0000-4000-8000-000000000001",
        "detail-type": "Security Hub Findings - Custom Action",
        "source": "aws.securityhub",
        "account": "123456789012",
        "time": "2026-12-01T11:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:securityhub:us-east-1:123456789012:action/custom/TwRevokeSessions"],
        "detail": {
            "actionName": "trailwatch revoke",
            "actionDescription": "Revoke the sessions of the role behind the finding",
            "findings": [secret, stopped]
        }
    });
    let asked = Run::new(&[request]);
    let rec2 = Recorder::start().unwrap();
    asked.service(1, &rec2, "", &responses).await;

    assert_eq!(inline_policies(&iam, "dev").await, vec!["TrailwatchRevokeOlderSessions".to_string()]);
    assert!(inline_policies(&iam, "other").await.is_empty(), "no response allows it for that finding");
    let wb: std::collections::BTreeMap<String, String> =
        written_back(&rec2, "revoke-role-sessions").into_iter().collect();
    assert_eq!(wb.len(), 2, "{wb:?}");
    assert!(wb[secret["Id"].as_str().unwrap()].starts_with("done: sessions of role dev"), "{wb:?}");
    assert!(wb[stopped["Id"].as_str().unwrap()].starts_with("skipped_not_allowed: "), "{wb:?}");
}
