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
use trailwatch_tests::fixtures::{self, read_jsonl as read_lines};
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
        let s = Server::moto().expect("moto starts");
        s.keep_log_on_panic();
        s
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

/// Credentials of the test's admin role in `account`.
async fn admin_credentials(account: &str) -> aws_sdk_sts::types::Credentials {
    let sts = aws_sdk_sts::Client::new(&moto().sdk_config().await);
    let out = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/test-admin"))
        .role_session_name("test-setup")
        .send()
        .await
        .unwrap();
    out.credentials().unwrap().clone()
}

/// An SDK config acting in `account` (moto keys accounts by the assumed role's credentials).
async fn member(account: &str) -> aws_config::SdkConfig {
    let base = moto().sdk_config().await;
    let c = admin_credentials(account).await;
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
        self.service_in(&format!("state{attempt}"), attempt, rec, respond, responses, "").await
    }

    /// A run with the given state dir (kept between runs of the same name)
    /// and extra top-level configuration.
    async fn service_in(
        &self,
        state: &str,
        attempt: u32,
        rec: &Recorder,
        respond: &str,
        responses: &str,
        extra: &str,
    ) -> Vec<Value> {
        // Dummy credentials for the SDK clients the service builds.
        trailwatch_tests::aws_env();
        let state = self.dir.path().join(state);
        let out = self.dir.path().join(format!("findings{attempt}.ndjson"));
        let run = trailwatch_tests::fixtures::file_run_toml(&state, &self.input, &out, true);
        let text = format!(
            r#"
            {extra}
            {run}
            {aws_respond}
            {respond}
            {responses}
            "#,
            aws_respond = aws_and_respond_toml(rec),
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

/// `[aws]` (moto, one attempt) and the head of `[respond]`: the write-back
/// goes to the recorder `rec` (keys of a test's own may follow).
fn aws_and_respond_toml(rec: &Recorder) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nmax_attempts = 1\n[respond]\nsecurityhub_endpoint_url = \"{}\"\n",
        moto().endpoint,
        rec.endpoint
    )
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

/// The policy document (URL-encoded, as IAM returns it) that revoke-role-sessions put on `role`.
async fn revoke_policy(iam: &aws_sdk_iam::Client, role: &str) -> String {
    let out = iam.get_role_policy().role_name(role).policy_name("TrailwatchRevokeOlderSessions").send().await;
    out.unwrap().policy_document().to_string()
}

/// Asserts that `user`'s first access key is still active and no policy is attached to it.
async fn assert_user_untouched(iam: &aws_sdk_iam::Client, user: &str) {
    let keys = iam.list_access_keys().user_name(user).send().await.unwrap();
    assert_eq!(keys.access_key_metadata()[0].status().unwrap().as_str(), "Active");
    let attached = iam.list_attached_user_policies().user_name(user).send().await.unwrap();
    assert!(attached.attached_policies().is_empty(), "{user}: {attached:?}");
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
    let doc = revoke_policy(&iam, "dev").await;
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
    let again = revoke_policy(&iam, "dev").await;
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
    assert_user_untouched(&iam, "ops-admin").await;

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
    assert_user_untouched(&iam, "mallory").await;
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

#[tokio::test]
async fn a_finding_read_again_after_a_restart_is_not_notified_twice() {
    let account = "121212121212";
    let rec = Recorder::start().unwrap();
    let run = Run::new(&[secret_read(1, account, assumed(account, "dev", "alice"))]);
    let respond = format!("webhook_url = \"{}/hook\"", rec.endpoint);
    let responses =
        format!("[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"notify\"]\nmode = \"enforce\"\n");
    // No checkpoints: every run reads the input from the start, as a restart
    // before the commit (a crash) would.
    let replay = "[checkpoints]\nstore = \"none\"";
    let findings = run.service_in("kept", 1, &rec, &respond, &responses, replay).await;
    let id = finding_of(&findings, SECRET_RULE_ID)["Id"].as_str().unwrap().to_string();
    assert_eq!(rec.to("/hook").len(), 1);
    let handled = std::fs::read_to_string(run.dir.path().join("kept/responses-handled.ndjson")).unwrap();
    assert!(handled.contains(&id) && handled.contains("\"notify\""), "{handled}");

    // Restarted on the same state dir: the same finding (same Id) again, no second notification.
    let rec2 = Recorder::start().unwrap();
    let respond2 = format!("webhook_url = \"{}/hook\"", rec2.endpoint);
    let again = run.service_in("kept", 2, &rec2, &respond2, &responses, replay).await;
    assert_eq!(finding_of(&again, SECRET_RULE_ID)["Id"], id.as_str(), "the replay produced the same finding");
    assert!(rec2.requests().is_empty(), "no webhook and no write-back: {:?}", rec2.requests());

    // The control: a fresh state dir notifies again (notify itself is not idempotent).
    let rec3 = Recorder::start().unwrap();
    let respond3 = format!("webhook_url = \"{}/hook\"", rec3.endpoint);
    run.service_in("fresh", 3, &rec3, &respond3, &responses, replay).await;
    assert_eq!(rec3.to("/hook").len(), 1);
}

async fn repo_policy(ecr: &aws_sdk_ecr::Client, repo: &str) -> Option<Value> {
    match ecr.get_repository_policy().repository_name(repo).send().await {
        Ok(p) => Some(serde_json::from_str(p.policy_text().unwrap()).unwrap()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_repository_policy_not_found_exception()) => None,
        Err(e) => panic!("GetRepositoryPolicy {repo}: {e:?}"),
    }
}

fn sids(policy: &Value) -> Vec<String> {
    policy["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn restore_config_removes_only_public_and_outside_statements_from_an_ecr_repository_policy() {
    let account = "111122223333";
    let ecr = aws_sdk_ecr::Client::new(&member(account).await);
    let public = json!({"Sid": "Public", "Effect": "Allow", "Principal": "*", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]});
    let in_org = json!({"Sid": "InOrg", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:role/ci"}, "Action": "ecr:BatchGetImage"});
    let outside = json!({"Sid": "Outside", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "ecr:BatchGetImage"});
    let policies = [
        ("shop/web", json!({"Version": "2012-10-17", "Statement": [public, in_org, outside]})),
        ("shop/open", json!({"Version": "2012-10-17", "Statement": [public]})),
        // Set with an outside grant (the finding), since narrowed by hand to the org: nothing to remove.
        ("shop/inorg", json!({"Version": "2012-10-17", "Statement": [in_org]})),
    ];
    for (repo, p) in &policies {
        ecr.create_repository().repository_name(*repo).send().await.unwrap();
        ecr.set_repository_policy().repository_name(*repo).policy_text(p.to_string()).send().await.unwrap();
    }
    let who = assumed(account, "dev", "alice");
    let set = |n: u32, repo: &str, policy: &Value| {
        event(
            n,
            account,
            "ecr.amazonaws.com",
            "SetRepositoryPolicy",
            who.clone(),
            json!({"repositoryName": repo, "policyText": policy.to_string()}),
        )
    };
    let run = Run::new(&[
        set(1, "shop/web", &policies[0].1),
        set(2, "shop/open", &policies[1].1),
        set(3, "shop/inorg", &json!({"Version": "2012-10-17", "Statement": [outside]})),
    ]);
    let responses = "[[responses]]\nname = \"ecr-policy\"\nrules = [\"74968f7b-23ed-403e-b89c-c07a9fc720a9\", \"ae005d5b-9a6c-49da-b492-daa719ab6492\"]\nactions = [\"restore-config\"]\nmode = \"enforce\"\n";
    // The responder's org: from the configuration (as AWS Organizations would say).
    let org = "[rules.placeholders]\norg_accounts = [\"111122223333\", \"444455556666\"]\norg_id = [\"o-a1b2c3d4e5\"]";
    let rec = Recorder::start().unwrap();
    let findings = run.service_in("s1", 1, &rec, "", responses, org).await;
    // shop/web and shop/open: public (the outside rule leaves public policies to it); shop/inorg: outside.
    assert_eq!(findings.len(), 3, "{findings:#?}");

    assert_eq!(sids(&repo_policy(&ecr, "shop/web").await.unwrap()), ["InOrg"], "only the offending statements went");
    assert_eq!(repo_policy(&ecr, "shop/open").await, None, "nothing left: the policy is deleted");
    assert_eq!(repo_policy(&ecr, "shop/inorg").await.unwrap(), policies[2].1, "an in-org grant is never touched");

    let wb = written_back(&rec, "restore-config");
    assert_eq!(wb.len(), 3, "{wb:?}");
    assert_eq!(wb.iter().filter(|(_, v)| v.starts_with("done: ")).count(), 2, "{wb:?}");
    assert_eq!(wb.iter().filter(|(_, v)| v.starts_with("already: ")).count(), 1, "{wb:?}");
    // What was removed, as JSON, on the finding: enough to put it back.
    let removed: Vec<Value> = written_back(&rec, "restore-config/removed")
        .into_iter()
        .map(|(_, v)| serde_json::from_str(&v).unwrap())
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.contains(&json!([public, outside])), "{removed:?}");
    assert!(removed.contains(&json!([public])), "{removed:?}");

    // Again, with no memory of the first run: nothing left to remove.
    let rec2 = Recorder::start().unwrap();
    run.service_in("s2", 2, &rec2, "", responses, org).await;
    assert_eq!(sids(&repo_policy(&ecr, "shop/web").await.unwrap()), ["InOrg"]);
    let wb = written_back(&rec2, "restore-config");
    assert_eq!(wb.len(), 3, "{wb:?}");
    assert!(wb.iter().all(|(_, v)| v.starts_with("already: ")), "{wb:?}");
}

async fn recording(cfg: &aws_sdk_config::Client, name: &str) -> bool {
    let st = cfg.describe_configuration_recorder_status().configuration_recorder_names(name).send().await.unwrap();
    st.configuration_recorders_status()[0].recording()
}

#[tokio::test]
async fn restore_config_restarts_a_stopped_config_recorder_and_again_is_a_no_op() {
    let account = "141414141414";
    let conf = member(account).await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build());
    s3.create_bucket().bucket("config-141414").send().await.unwrap();
    let cfg = aws_sdk_config::Client::new(&conf);
    // One recorder per region: the finding's (us-east-1) and another region's, both stopped.
    let west = aws_sdk_config::Client::new(&conf.to_builder().region(aws_config::Region::new("us-west-2")).build());
    for c in [&cfg, &west] {
        c.put_configuration_recorder()
            .configuration_recorder(
                aws_sdk_config::types::ConfigurationRecorder::builder()
                    .name("default")
                    .role_arn(format!("arn:aws:iam::{account}:role/config"))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    cfg.put_delivery_channel()
        .delivery_channel(
            aws_sdk_config::types::DeliveryChannel::builder().name("default").s3_bucket_name("config-141414").build(),
        )
        .send()
        .await
        .unwrap();
    assert!(!recording(&cfg, "default").await && !recording(&west, "default").await);

    let run = Run::new(&[event(
        1,
        account,
        "config.amazonaws.com",
        "StopConfigurationRecorder",
        assumed(account, "dev", "alice"),
        json!({"configurationRecorderName": "default"}),
    )]);
    let responses = "[[responses]]\nrules = [\"2c8e5f14-6a3b-4d97-8e01-b4f7c9a2d6e3\"]\nactions = [\"restore-config\"]\nmode = \"enforce\"\n";
    let rec = Recorder::start().unwrap();
    run.service(1, &rec, "", responses).await;
    let wb = written_back(&rec, "restore-config");
    assert!(recording(&cfg, "default").await, "{wb:?}");
    assert!(!recording(&west, "default").await, "only the recorder of the finding (its region)");
    assert!(wb.len() == 1 && wb[0].1.starts_with("done: AWS Config recorder default restarted"), "{wb:?}");

    let rec2 = Recorder::start().unwrap();
    run.service(2, &rec2, "", responses).await;
    let wb = written_back(&rec2, "restore-config");
    assert!(wb.len() == 1 && wb[0].1.starts_with("already: "), "{wb:?}");
    assert!(recording(&cfg, "default").await);
}

/// A default subnet of `account` (awsvpc tasks need one). No EC2 SDK crate in
/// the build for one call: a Query request to moto, which reads the account
/// from the access key in the Authorization header (it checks no signature).
async fn default_subnet(account: &str) -> String {
    use std::io::{Read, Write};
    let key = admin_credentials(account).await.access_key_id().to_string();
    let addr = moto().endpoint.trim_start_matches("http://").to_string();
    let body = "Action=DescribeSubnets&Version=2016-11-15";
    let req = format!(
        "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential={key}/20261206/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    let start = out.find("<subnetId>").unwrap_or_else(|| panic!("no subnet in {out}")) + "<subnetId>".len();
    out[start..start + out[start..].find('<').unwrap()].to_string()
}

async fn task_status(ecs: &aws_sdk_ecs::Client, arn: &str) -> (String, Option<String>) {
    let out = ecs.describe_tasks().cluster("prod").tasks(arn).send().await.unwrap();
    let t = &out.tasks()[0];
    (t.desired_status().unwrap().to_string(), t.stopped_reason().map(str::to_string))
}

#[tokio::test]
async fn stop_task_stops_the_task_of_the_finding_with_a_reason_and_again_is_a_no_op() {
    let account = "151515151515";
    let ecs = aws_sdk_ecs::Client::new(&member(account).await);
    ecs.create_cluster().cluster_name("prod").send().await.unwrap();
    ecs.register_task_definition()
        .family("app")
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("app:1").memory(512).build(),
        )
        .send()
        .await
        .unwrap();
    let out = ecs
        .run_task()
        .cluster("prod")
        .task_definition("app")
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .count(3)
        .network_configuration(
            aws_sdk_ecs::types::NetworkConfiguration::builder()
                .awsvpc_configuration(
                    aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                        .subnets(default_subnet(account).await)
                        .security_groups("sg-0abc")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let arns: Vec<String> = out.tasks().iter().map(|t| t.task_arn().unwrap().to_string()).collect();
    assert_eq!(arns.len(), 3);
    assert!(arns[0].contains(":task/prod/"), "long task ARNs: {arns:?}");
    let id = |a: &str| a.rsplit('/').next().unwrap().to_string();
    let exec = |n: u32, who: Value, task: &str| {
        event(
            n,
            account,
            "ecs.amazonaws.com",
            "ExecuteCommand",
            who,
            json!({"cluster": "prod", "task": task, "container": "app", "command": "/bin/sh", "interactive": true}),
        )
    };
    // Task 0: a developer's shell (stopped); task 1: the break-glass role's (protected, left running); task 2: no finding.
    let run = Run::new(&[
        exec(1, assumed(account, "dev", "mallory"), &id(&arns[0])),
        exec(2, assumed(account, "breakglass-ops", "oncall"), &id(&arns[1])),
    ]);
    let respond = "protected_principals = [\"breakglass*\"]";
    let responses = "[[responses]]\nrules = [\"3e7b1a95-d2c4-4f08-8b6e-5a9c0d4f1b27\"]\nactions = [\"stop-task\"]\nmode = \"enforce\"\n";
    let rec = Recorder::start().unwrap();
    run.service(1, &rec, respond, responses).await;

    let wb: Vec<String> = written_back(&rec, "stop-task").into_iter().map(|x| x.1).collect();
    let (desired, reason) = task_status(&ecs, &arns[0]).await;
    assert_eq!(desired, "STOPPED", "{wb:?}");
    let reason = reason.unwrap_or_default();
    assert!(reason.starts_with("trailwatch: ") && reason.contains("mallory"), "{reason}");
    assert_eq!(task_status(&ecs, &arns[1]).await.0, "RUNNING", "a protected principal's task keeps running");
    assert_eq!(task_status(&ecs, &arns[2]).await.0, "RUNNING", "a task without a finding keeps running");
    assert_eq!(wb.len(), 2, "{wb:?}");
    assert!(wb.iter().any(|v| v.starts_with("done: task ")), "{wb:?}");
    assert!(wb.iter().any(|v| v.starts_with("skipped_protected: ")), "{wb:?}");

    let rec2 = Recorder::start().unwrap();
    run.service(2, &rec2, respond, responses).await;
    let wb: Vec<String> = written_back(&rec2, "stop-task").into_iter().map(|x| x.1).collect();
    assert!(wb.iter().any(|v| v.starts_with("already: ")), "{wb:?}");
    assert_eq!(task_status(&ecs, &arns[1]).await.0, "RUNNING");
}

#[tokio::test]
async fn an_on_request_event_from_an_sqs_queue_runs_the_action_and_the_message_is_deleted() {
    let account = "161616161616";
    let iam = aws_sdk_iam::Client::new(&member(account).await);
    iam.create_role().role_name("dev").assume_role_policy_document("{}").send().await.unwrap();
    let responses = format!(
        "[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"revoke-role-sessions\"]\nmode = \"on-request\"\n"
    );
    // The finding, as the stream produced it (on-request: nothing done then).
    let run = Run::new(&[secret_read(1, account, assumed(account, "dev", "alice"))]);
    let findings = run.service(1, &Recorder::start().unwrap(), "", &responses).await;
    let secret = finding_of(&findings, SECRET_RULE_ID).clone();
    assert!(inline_policies(&iam, "dev").await.is_empty());

    // EventBridge delivers the custom action's event to the queue trailwatch reads.
    let base = moto().sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&base);
    let url = sqs.create_queue().queue_name("scan-events-h20").send().await.unwrap().queue_url().unwrap().to_string();
    let request = json!({
        "version": "0", "id": "c0ffee00-0000-4000-8000-000000000002",
        "detail-type": "Security Hub Findings - Custom Action", "source": "aws.securityhub",
        "account": "123456789012", "time": "2026-12-01T11:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:securityhub:us-east-1:123456789012:action/custom/TwRevokeSessions"],
        "detail": {"actionName": "trailwatch revoke", "actionDescription": "revoke", "findings": [secret]}
    });
    sqs.send_message().queue_url(&url).message_body(request.to_string()).send().await.unwrap();

    let rec = Arc::new(Recorder::start().unwrap());
    let text = format!(
        r#"
        {service}
        [sources.queue]
        type = "sqs"
        queue_url = "{url}"
        wait_time = "1s"
        {out}
        {aws_respond}
        {responses}
        "#,
        service = fixtures::service_toml(&run.dir.path().join("sqs-state"), "200ms"),
        out = fixtures::jsonl_out_toml(&run.dir.path().join("sqs-findings.ndjson")),
        aws_respond = aws_and_respond_toml(&rec),
    );
    let cfg = Config::from_toml_str(&text).unwrap();
    let (tx, mut commits) = tokio::sync::watch::channel(0u64);
    let opts = RunOptions { commits: Some(tx), ..Default::default() };
    let rec2 = Arc::clone(&rec);
    // Stop once the write-back arrived and one more commit (the message's delete) followed.
    let shutdown = async move {
        let _ = tokio::time::timeout(Duration::from_secs(40), async {
            while rec2.to("/findings/batchupdate").is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let seen = *commits.borrow();
        let _ = tokio::time::timeout(Duration::from_secs(5), commits.wait_for(|n| *n > seen)).await;
    };
    tokio::time::timeout(Duration::from_secs(60), service::run(cfg, rule_set(), opts, shutdown))
        .await
        .expect("the run ends")
        .expect("the run succeeds");

    assert_eq!(inline_policies(&iam, "dev").await, vec!["TrailwatchRevokeOlderSessions".to_string()]);
    let wb = written_back(&rec, "revoke-role-sessions");
    assert_eq!(wb.len(), 1, "{wb:?}");
    assert_eq!(wb[0].0, secret["Id"].as_str().unwrap());
    assert!(wb[0].1.starts_with("done: sessions of role dev"), "{wb:?}");
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let a = attrs.attributes().unwrap();
    assert_eq!(a[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages], "0");
    assert_eq!(
        a[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "0",
        "deleted after the commit"
    );
}

/// An https endpoint with a certificate from the test CA
/// (tests/fixtures/tls): records each POST body, answers 200.
fn tls_webhook() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let Ok(tls) = rustls::ServerConnection::new(Arc::clone(&config)) else { continue };
            // A failed handshake (an untrusting client) just drops the connection.
            let mut stream = BufReader::new(rustls::StreamOwned::new(tls, tcp));
            let mut len = 0;
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    let mut body = vec![0; len];
                    if stream.read_exact(&mut body).is_ok() {
                        sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        let out = stream.get_mut();
                        let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        let _ = out.flush();
                        out.conn.send_close_notify();
                        let _ = out.flush();
                    }
                    break;
                }
            }
        }
    });
    (format!("https://localhost:{port}/hook"), got)
}

#[tokio::test]
async fn notify_posts_to_an_https_webhook_trusted_through_webhook_ca_file() {
    let account = "171717171717";
    let (url, got) = tls_webhook();
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem");
    let responses =
        format!("[[responses]]\nrules = [\"{SECRET_RULE_ID}\"]\nactions = [\"notify\"]\nmode = \"enforce\"\n");

    // Without the CA the system roots do not know the certificate: the post fails, nothing arrives.
    let run = Run::new(&[secret_read(1, account, assumed(account, "dev", "alice"))]);
    let rec = Recorder::start().unwrap();
    run.service(1, &rec, &format!("webhook_url = \"{url}\""), &responses).await;
    assert!(got.lock().unwrap().is_empty());
    let wb = written_back(&rec, "notify");
    assert!(wb.len() == 1 && wb[0].1.starts_with("failed: webhook"), "{wb:?}");

    // With it: delivered over TLS.
    let rec2 = Recorder::start().unwrap();
    let respond = format!("webhook_url = \"{url}\"\nwebhook_ca_file = \"{}\"", ca.display());
    let findings = run.service(2, &rec2, &respond, &responses).await;
    let id = finding_of(&findings, SECRET_RULE_ID)["Id"].clone();
    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["finding"]["id"], id);
    assert_eq!(posts[0]["text"], "[trailwatch HIGH] Test Secret Read");
    let wb = written_back(&rec2, "notify");
    assert!(wb.len() == 1 && wb[0].1.starts_with("done: notified by webhook"), "{wb:?}");
}
