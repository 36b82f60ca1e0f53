//! The actions themselves. Every change in a member account runs with the
//! credentials of the response role there (AssumeRole with the external id),
//! never with the task's own rights. Each action reads the current state
//! first and changes only what is not already as wanted, so running it twice
//! is a no-op (`Change::Already`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_sts::config::{Credentials, Region, SharedCredentialsProvider};
use serde_json::json;
use time::OffsetDateTime;

use super::config::RespondConfig;
use super::matcher::FindingView;
use crate::aws::error_text;

/// The quarantine policy AWS attaches to users with exposed keys.
pub const QUARANTINE_POLICY: &str = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3";
/// The inline policy `revoke-role-sessions` writes (one per role: a newer revocation replaces it).
pub const REVOKE_POLICY_NAME: &str = "TrailwatchRevokeOlderSessions";

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Changed something; the text says what.
    Done(String),
    /// Everything already as wanted; nothing changed.
    Already(String),
    /// Changed something and removed `removed` (JSON), kept so an operator can put it back.
    Removed { detail: String, removed: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

fn err<E>(
    what: &str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> ActionError
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
{
    ActionError(format!("{what}: {}", error_text(&e)))
}

/// A configuration drift the built-in pack detects and `restore-config` undoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    EcrScanOnPush {
        region: String,
        account: String,
        repository: String,
    },
    EcrTagImmutability {
        region: String,
        account: String,
        repository: String,
    },
    TrailStopped {
        region: String,
        account: String,
        trail: String,
    },
    /// A public or outside-the-organization statement in a repository policy.
    EcrRepositoryPolicy {
        region: String,
        account: String,
        repository: String,
    },
    ConfigRecorderStopped {
        region: String,
        account: String,
        recorder: String,
    },
}

/// Built-in rules whose finding `restore-config` knows how to undo.
const SCAN_ON_PUSH_RULE: &str = "3b57fec2-09ae-4f5c-bc0f-ae0a72ac43c1";
const TAG_MUTABLE_RULE: &str = "5b0c2f7e-8d4a-4f61-9a3e-0c7b6e2d1a41";
const ECR_POLICY_RULES: [&str; 2] = [
    "74968f7b-23ed-403e-b89c-c07a9fc720a9", // public
    "ae005d5b-9a6c-49da-b492-daa719ab6492", // outside the organization
];
const MONITORING_DISABLED_RULE: &str = "2c8e5f14-6a3b-4d97-8e01-b4f7c9a2d6e3";
const LOGGING_STOPPED_RULES: [&str; 2] =
    ["12f63f48-5ff7-486a-a844-d2b7088e5336", "688add5b-3f08-4125-b38b-6a27616504c8"];

/// `arn:PART:SERVICE:REGION:ACCOUNT:RESOURCE` → (region, account, resource).
fn arn_parts(arn: &str) -> Option<(String, String, String)> {
    let p: Vec<&str> = arn.splitn(6, ':').collect();
    (p.len() == 6 && p[0] == "arn").then(|| (p[3].to_string(), p[4].to_string(), p[5].to_string()))
}

impl Drift {
    pub fn of(f: &FindingView) -> Option<Drift> {
        let repo = || {
            let (region, account, res) = arn_parts(f.resource("AwsEcrRepository")?)?;
            Some((region, account, res.strip_prefix("repository/")?.to_string()))
        };
        if f.rule_id == SCAN_ON_PUSH_RULE {
            let (region, account, repository) = repo()?;
            return Some(Drift::EcrScanOnPush { region, account, repository });
        }
        if f.rule_id == TAG_MUTABLE_RULE {
            let (region, account, repository) = repo()?;
            return Some(Drift::EcrTagImmutability { region, account, repository });
        }
        // Repository policies only: a registry policy (PutRegistryPolicy) is not restored.
        if ECR_POLICY_RULES.contains(&f.rule_id.as_str()) && f.event_name.as_deref() == Some("SetRepositoryPolicy") {
            let (region, account, repository) = repo()?;
            return Some(Drift::EcrRepositoryPolicy { region, account, repository });
        }
        if f.rule_id == MONITORING_DISABLED_RULE && f.event_name.as_deref() == Some("StopConfigurationRecorder") {
            let id = f.resources.iter().find(|(_, id)| id.contains(":configuration-recorder/"))?.1.as_str();
            let (region, account, res) = arn_parts(id)?;
            let recorder = res.strip_prefix("configuration-recorder/")?.to_string();
            return Some(Drift::ConfigRecorderStopped { region, account, recorder });
        }
        if LOGGING_STOPPED_RULES.contains(&f.rule_id.as_str()) && f.event_name.as_deref() == Some("StopLogging") {
            let (region, account, res) = arn_parts(f.resource("AwsCloudTrailTrail")?)?;
            return Some(Drift::TrailStopped { region, account, trail: res.strip_prefix("trail/")?.to_string() });
        }
        None
    }

    pub fn account(&self) -> &str {
        match self {
            Drift::EcrScanOnPush { account, .. }
            | Drift::EcrTagImmutability { account, .. }
            | Drift::TrailStopped { account, .. }
            | Drift::EcrRepositoryPolicy { account, .. }
            | Drift::ConfigRecorderStopped { account, .. } => account,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Drift::EcrScanOnPush { repository, .. } => format!("scan on push back on for ECR repository {repository}"),
            Drift::EcrTagImmutability { repository, .. } => {
                format!("tag immutability back on for ECR repository {repository}")
            }
            Drift::TrailStopped { trail, .. } => format!("logging restarted on trail {trail}"),
            Drift::EcrRepositoryPolicy { repository, .. } => {
                format!(
                    "public and outside-organization statements removed from the policy of ECR repository {repository}"
                )
            }
            Drift::ConfigRecorderStopped { recorder, .. } => format!("AWS Config recorder {recorder} restarted"),
        }
    }
}

/// Percent-decoding: IAM returns policy documents URL-encoded.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cut-off time of a revocation policy document, if it is one.
fn revocation_cutoff(doc: &str) -> Option<OffsetDateTime> {
    let v: serde_json::Value = serde_json::from_str(doc).or_else(|_| serde_json::from_str(&url_decode(doc))).ok()?;
    let stmts = match v.get("Statement")? {
        serde_json::Value::Array(a) => a.clone(),
        o => vec![o.clone()],
    };
    stmts.iter().find_map(|s| {
        let t = s.get("Condition")?.get("DateLessThan")?.get("aws:TokenIssueTime")?.as_str()?;
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    })
}

/// The AWS-documented revocation: deny everything to sessions issued before `cutoff`.
pub fn revocation_policy(cutoff: OffsetDateTime) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "TrailwatchRevokeOlderSessions",
            "Effect": "Deny",
            "Action": ["*"],
            "Resource": ["*"],
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": crate::findings::rfc3339(cutoff)}}
        }]
    })
    .to_string()
}

/// The organization as far as it is known for sure: from
/// `[rules.placeholders]` or AWS Organizations, never guessed from the input
/// (an org account not seen yet would look like an outsider).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgContext {
    pub org_id: Option<String>,
    pub accounts: std::collections::BTreeSet<String>,
}

/// The account of a policy principal (`111122223333` or an IAM/STS ARN of it).
fn principal_account(p: &str) -> Option<&str> {
    let acct = if p.starts_with("arn:") { p.split(':').nth(4)? } else { p };
    (acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit())).then_some(acct)
}

/// Does the statement keep its principals to an organization? Some(true):
/// to ours; Some(false): to another; None: no organization condition, or
/// ours is unknown (then it is left alone).
fn org_condition(stmt: &serde_json::Value, org: &OrgContext) -> Option<Option<bool>> {
    let cond = stmt.get("Condition")?.as_object()?;
    let mut values = Vec::new();
    for ops in cond.values() {
        for (k, v) in ops.as_object()?.iter() {
            let k = k.to_ascii_lowercase();
            if k == "aws:principalorgid" || k == "aws:principalorgpaths" {
                match v {
                    serde_json::Value::String(s) => values.push(s.clone()),
                    serde_json::Value::Array(a) => {
                        values.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)))
                    }
                    _ => {}
                }
            }
        }
    }
    if values.is_empty() {
        return None;
    }
    let Some(id) = &org.org_id else { return Some(None) };
    Some(Some(values.iter().all(|v| v == id || v.starts_with(&format!("{id}/")))))
}

/// What to do with one statement of a repository policy.
#[derive(Debug, PartialEq)]
enum Verdict {
    Keep,
    Drop,
    /// Keep it with only these AWS principals (the outside ones removed).
    Narrow(Vec<String>),
}

/// Public: an Allow to `*` without a condition keeping it to our
/// organization. Outside: an Allow to an account that is neither the
/// repository's nor one of the organization's (when those are known), without
/// such a condition. Anything else (Deny, service principals, in-org
/// accounts, conditions we cannot judge) is kept as it is.
fn judge(stmt: &serde_json::Value, repo_account: &str, org: &OrgContext) -> Verdict {
    if stmt.get("Effect").and_then(|e| e.as_str()) != Some("Allow") {
        return Verdict::Keep;
    }
    // Kept to our organization, or to one we cannot judge: left alone. Kept
    // to another organization: only matters for `*` (named accounts are
    // judged by account below, whatever the condition).
    if matches!(org_condition(stmt, org), Some(Some(true)) | Some(None)) {
        return Verdict::Keep;
    }
    let Some(principal) = stmt.get("Principal") else { return Verdict::Keep };
    if principal.as_str() == Some("*") {
        return Verdict::Drop;
    }
    let aws: Vec<String> = match principal.get("AWS") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => return Verdict::Keep,
    };
    if aws.iter().any(|p| p == "*") {
        return Verdict::Drop;
    }
    if org.accounts.is_empty() {
        // Without the organization's accounts, an account is never proven outside.
        return Verdict::Keep;
    }
    let inside = |p: &String| principal_account(p).is_none_or(|a| a == repo_account || org.accounts.contains(a));
    let keep: Vec<String> = aws.iter().filter(|p| inside(p)).cloned().collect();
    let others = principal.as_object().is_some_and(|o| o.keys().any(|k| k != "AWS"));
    if keep.len() == aws.len() {
        Verdict::Keep
    } else if keep.is_empty() && !others {
        Verdict::Drop
    } else {
        Verdict::Narrow(keep)
    }
}

/// The policy without its public and outside statements: (new policy, or
/// None when no statement is left; the statements removed or narrowed, as
/// they were). An empty list: nothing to remove.
pub fn filter_policy(
    doc: &str,
    repo_account: &str,
    org: &OrgContext,
) -> Result<(Option<serde_json::Value>, Vec<serde_json::Value>), String> {
    let mut v: serde_json::Value = serde_json::from_str(doc).map_err(|e| format!("policy is not JSON: {e}"))?;
    let stmts = match v.get("Statement") {
        Some(serde_json::Value::Array(a)) => a.clone(),
        Some(o @ serde_json::Value::Object(_)) => vec![o.clone()],
        _ => return Err("policy has no Statement".into()),
    };
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for st in stmts {
        match judge(&st, repo_account, org) {
            Verdict::Keep => kept.push(st),
            Verdict::Drop => removed.push(st),
            Verdict::Narrow(principals) => {
                let mut n = st.clone();
                let mut p = n["Principal"].as_object().cloned().unwrap_or_default();
                if principals.is_empty() {
                    p.remove("AWS");
                } else {
                    p.insert("AWS".into(), json!(principals));
                }
                n["Principal"] = serde_json::Value::Object(p);
                kept.push(n);
                removed.push(st);
            }
        }
    }
    if kept.is_empty() {
        return Ok((None, removed));
    }
    v["Statement"] = serde_json::Value::Array(kept);
    Ok((Some(v), removed))
}

/// TLS for the webhook trusting only the CA certificates in `ca` (PEM).
fn webhook_tls(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("respond.webhook_ca_file {}: {e}", ca.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        anyhow::bail!("respond.webhook_ca_file {}: no CA certificate in it", ca.display());
    }
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Runs actions: AWS clients per member account (cached credentials), SNS, the webhook.
pub struct Executor {
    base: SdkConfig,
    cfg: RespondConfig,
    /// Member account → (config with the response role's credentials, valid until).
    members: HashMap<String, (SdkConfig, Instant)>,
    webhook: Option<(hyper::Uri, Webhook)>,
    /// Who is inside the organization (repository policy statements).
    pub org: OrgContext,
}

type Webhook = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

impl Executor {
    pub async fn build(cfg: &RespondConfig, aws: &crate::aws::AwsConfig) -> anyhow::Result<Executor> {
        let mut aws = aws.with_overrides(None, cfg.endpoint_url.as_ref());
        aws.attempt_timeout = Some(aws.attempt_timeout.unwrap_or(cfg.call_timeout));
        let base = crate::aws::sdk_config(&aws).await;
        let webhook = match &cfg.webhook_url {
            Some(u) => {
                let uri: hyper::Uri = u.parse()?;
                let https = match &cfg.webhook_ca_file {
                    None => hyper_rustls::HttpsConnectorBuilder::new()
                        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?,
                    Some(ca) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(webhook_tls(ca)?),
                }
                .https_or_http()
                .enable_http1()
                .build();
                let client =
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
                Some((uri, client))
            }
            None => None,
        };
        Ok(Executor { base, cfg: cfg.clone(), members: HashMap::new(), webhook, org: OrgContext::default() })
    }

    /// The response role's credentials in `account` (cached until 5 minutes before they expire).
    async fn member(&mut self, account: &str, region: &str) -> Result<SdkConfig, ActionError> {
        let now = Instant::now();
        if let Some((c, until)) = self.members.get(account) {
            if now < *until {
                return Ok(c.to_builder().region(Region::new(region.to_string())).build());
            }
        }
        let role = format!("arn:aws:iam::{account}:role/{}", self.cfg.role_name);
        let sts = aws_sdk_sts::Client::new(&self.base);
        let mut req =
            sts.assume_role().role_arn(&role).role_session_name(&self.cfg.session_name).duration_seconds(3600);
        if let Some(e) = &self.cfg.external_id {
            req = req.external_id(e);
        }
        let out = req.send().await.map_err(|e| err(&format!("AssumeRole {role}"), e))?;
        let c = out.credentials().ok_or_else(|| ActionError(format!("AssumeRole {role}: no credentials")))?;
        let creds = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "trailwatch-response-role",
        );
        let member = self.base.to_builder().credentials_provider(SharedCredentialsProvider::new(creds)).build();
        self.members.insert(account.to_string(), (member.clone(), now + Duration::from_secs(55 * 60)));
        Ok(member.to_builder().region(Region::new(region.to_string())).build())
    }

    /// `revoke-role-sessions`: deny sessions of `role_arn` issued before now,
    /// unless an earlier revocation already covers everything up to `seen`
    /// (the finding's last activity).
    pub async fn revoke_role_sessions(
        &mut self,
        role_arn: &str,
        seen: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<Change, ActionError> {
        let (_, account, res) =
            arn_parts(role_arn).ok_or_else(|| ActionError(format!("not a role ARN: {role_arn}")))?;
        let name = res.rsplit('/').next().unwrap_or_default().to_string();
        let iam = aws_sdk_iam::Client::new(&self.member(&account, "us-east-1").await?);
        match iam.get_role_policy().role_name(&name).policy_name(REVOKE_POLICY_NAME).send().await {
            Ok(p) => {
                if let (Some(cut), Some(seen)) = (revocation_cutoff(p.policy_document()), seen) {
                    if cut >= seen {
                        return Ok(Change::Already(format!(
                            "sessions of role {name} issued before {} are already revoked",
                            crate::findings::rfc3339(cut)
                        )));
                    }
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {}
            Err(e) => return Err(err(&format!("GetRolePolicy {name}"), e)),
        }
        iam.put_role_policy()
            .role_name(&name)
            .policy_name(REVOKE_POLICY_NAME)
            .policy_document(revocation_policy(now))
            .send()
            .await
            .map_err(|e| err(&format!("PutRolePolicy {name}"), e))?;
        Ok(Change::Done(format!("sessions of role {name} issued before {} revoked", crate::findings::rfc3339(now))))
    }

    /// `quarantine-user`: every active access key inactive, the quarantine policy attached.
    pub async fn quarantine_user(&mut self, user_arn: &str) -> Result<Change, ActionError> {
        let (_, account, res) =
            arn_parts(user_arn).ok_or_else(|| ActionError(format!("not a user ARN: {user_arn}")))?;
        let name = res.rsplit('/').next().unwrap_or_default().to_string();
        let iam = aws_sdk_iam::Client::new(&self.member(&account, "us-east-1").await?);
        let mut changed = Vec::new();
        let keys = iam
            .list_access_keys()
            .user_name(&name)
            .send()
            .await
            .map_err(|e| err(&format!("ListAccessKeys {name}"), e))?;
        for k in keys.access_key_metadata() {
            if k.status() == Some(&aws_sdk_iam::types::StatusType::Active) {
                let id = k.access_key_id().unwrap_or_default();
                iam.update_access_key()
                    .user_name(&name)
                    .access_key_id(id)
                    .status(aws_sdk_iam::types::StatusType::Inactive)
                    .send()
                    .await
                    .map_err(|e| err(&format!("UpdateAccessKey {name} {id}"), e))?;
                changed.push(format!("access key {id} deactivated"));
            }
        }
        let attached = iam
            .list_attached_user_policies()
            .user_name(&name)
            .send()
            .await
            .map_err(|e| err(&format!("ListAttachedUserPolicies {name}"), e))?;
        if !attached.attached_policies().iter().any(|p| p.policy_arn() == Some(QUARANTINE_POLICY)) {
            iam.attach_user_policy()
                .user_name(&name)
                .policy_arn(QUARANTINE_POLICY)
                .send()
                .await
                .map_err(|e| err(&format!("AttachUserPolicy {name}"), e))?;
            changed.push("AWSCompromisedKeyQuarantineV3 attached".into());
        }
        Ok(if changed.is_empty() {
            Change::Already(format!("user {name} already quarantined"))
        } else {
            Change::Done(format!("user {name}: {}", changed.join(", ")))
        })
    }

    /// `restore-config`: undo one detected drift.
    pub async fn restore(&mut self, d: &Drift) -> Result<Change, ActionError> {
        match d {
            Drift::EcrScanOnPush { region, account, repository }
            | Drift::EcrTagImmutability { region, account, repository } => {
                let ecr = aws_sdk_ecr::Client::new(&self.member(account, region).await?);
                let out = ecr
                    .describe_repositories()
                    .repository_names(repository)
                    .send()
                    .await
                    .map_err(|e| err(&format!("DescribeRepositories {repository}"), e))?;
                let repo = out
                    .repositories()
                    .first()
                    .ok_or_else(|| ActionError(format!("repository {repository} not found")))?;
                if let Drift::EcrScanOnPush { .. } = d {
                    if repo.image_scanning_configuration().is_some_and(|c| c.scan_on_push()) {
                        return Ok(Change::Already(format!("scan on push already on for {repository}")));
                    }
                    ecr.put_image_scanning_configuration()
                        .repository_name(repository)
                        .image_scanning_configuration(
                            aws_sdk_ecr::types::ImageScanningConfiguration::builder().scan_on_push(true).build(),
                        )
                        .send()
                        .await
                        .map_err(|e| err(&format!("PutImageScanningConfiguration {repository}"), e))?;
                } else {
                    // Any immutable variant (with or without exclusions) is what the rule wants.
                    if repo.image_tag_mutability() != Some(&aws_sdk_ecr::types::ImageTagMutability::Mutable) {
                        return Ok(Change::Already(format!("tags already immutable in {repository}")));
                    }
                    ecr.put_image_tag_mutability()
                        .repository_name(repository)
                        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
                        .send()
                        .await
                        .map_err(|e| err(&format!("PutImageTagMutability {repository}"), e))?;
                }
                Ok(Change::Done(d.describe()))
            }
            Drift::TrailStopped { region, account, trail } => {
                let ct = aws_sdk_cloudtrail::Client::new(&self.member(account, region).await?);
                let st = ct
                    .get_trail_status()
                    .name(trail)
                    .send()
                    .await
                    .map_err(|e| err(&format!("GetTrailStatus {trail}"), e))?;
                if st.is_logging() == Some(true) {
                    return Ok(Change::Already(format!("trail {trail} is already logging")));
                }
                ct.start_logging().name(trail).send().await.map_err(|e| err(&format!("StartLogging {trail}"), e))?;
                Ok(Change::Done(d.describe()))
            }
            Drift::ConfigRecorderStopped { region, account, recorder } => {
                let cfg = aws_sdk_config::Client::new(&self.member(account, region).await?);
                let st = cfg
                    .describe_configuration_recorder_status()
                    .configuration_recorder_names(recorder)
                    .send()
                    .await
                    .map_err(|e| err(&format!("DescribeConfigurationRecorderStatus {recorder}"), e))?;
                if st.configuration_recorders_status().iter().any(|s| s.recording()) {
                    return Ok(Change::Already(format!("Config recorder {recorder} is already recording")));
                }
                cfg.start_configuration_recorder()
                    .configuration_recorder_name(recorder)
                    .send()
                    .await
                    .map_err(|e| err(&format!("StartConfigurationRecorder {recorder}"), e))?;
                Ok(Change::Done(d.describe()))
            }
            Drift::EcrRepositoryPolicy { region, account, repository } => {
                let ecr = aws_sdk_ecr::Client::new(&self.member(account, region).await?);
                let doc = match ecr.get_repository_policy().repository_name(repository).send().await {
                    Ok(p) => p.policy_text().unwrap_or_default().to_string(),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_repository_policy_not_found_exception()) => {
                        return Ok(Change::Already(format!("repository {repository} has no policy")));
                    }
                    Err(e) => return Err(err(&format!("GetRepositoryPolicy {repository}"), e)),
                };
                let (policy, removed) = filter_policy(&doc, account, &self.org)
                    .map_err(|e| ActionError(format!("repository {repository}: {e}")))?;
                if removed.is_empty() {
                    return Ok(Change::Already(format!(
                        "the policy of repository {repository} has no public or outside-organization statement"
                    )));
                }
                let how = match policy {
                    Some(p) => {
                        ecr.set_repository_policy()
                            .repository_name(repository)
                            .policy_text(p.to_string())
                            .send()
                            .await
                            .map_err(|e| err(&format!("SetRepositoryPolicy {repository}"), e))?;
                        "SetRepositoryPolicy"
                    }
                    None => {
                        ecr.delete_repository_policy()
                            .repository_name(repository)
                            .send()
                            .await
                            .map_err(|e| err(&format!("DeleteRepositoryPolicy {repository}"), e))?;
                        "DeleteRepositoryPolicy: nothing else was left"
                    }
                };
                let n = removed.len();
                let removed = serde_json::Value::Array(removed).to_string();
                Ok(Change::Removed {
                    detail: format!(
                        "{n} statement(s) removed from the policy of repository {repository} ({how}); removed: {removed}"
                    ),
                    removed,
                })
            }
        }
    }

    /// `stop-task`: ECS StopTask on a task that is not already stopping.
    pub async fn stop_task(&mut self, task_arn: &str, reason: &str) -> Result<Change, ActionError> {
        let (region, account, res) =
            arn_parts(task_arn).ok_or_else(|| ActionError(format!("not a task ARN: {task_arn}")))?;
        // task/CLUSTER/ID (the old format task/ID runs in the default cluster).
        let mut parts = res.strip_prefix("task/").unwrap_or(&res).rsplitn(2, '/');
        let id = parts.next().unwrap_or_default().to_string();
        let cluster = parts.next().unwrap_or("default").to_string();
        let ecs = aws_sdk_ecs::Client::new(&self.member(&account, &region).await?);
        let out = ecs
            .describe_tasks()
            .cluster(&cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(|e| err(&format!("DescribeTasks {cluster}/{id}"), e))?;
        let Some(task) = out.tasks().first() else {
            return Ok(Change::Already(format!("task {id} of cluster {cluster} no longer exists")));
        };
        if task.desired_status() == Some("STOPPED") || task.last_status() == Some("STOPPED") {
            return Ok(Change::Already(format!("task {id} of cluster {cluster} is already stopped or stopping")));
        }
        // ECS keeps up to 1,024 characters of reason; shown in the console and DescribeTasks.
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(1024).collect();
        ecs.stop_task()
            .cluster(&cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
            .map_err(|e| err(&format!("StopTask {cluster}/{id}"), e))?;
        Ok(Change::Done(format!("task {id} of cluster {cluster} stopped")))
    }

    /// `notify`: SNS (the configured topic) and/or the webhook.
    pub async fn notify(&mut self, f: &FindingView, response: &str) -> Result<Change, ActionError> {
        let mut sent = Vec::new();
        if let Some(topic) = self.cfg.sns_topic_arn.clone() {
            let region = arn_parts(&topic).map(|p| p.0).unwrap_or_else(|| "us-east-1".into());
            let conf = self.base.to_builder().region(Region::new(region)).build();
            let sns = aws_sdk_sns::Client::new(&conf);
            let subject: String = format!("[trailwatch {}] {}", f.severity, f.title)
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            sns.publish()
                .topic_arn(&topic)
                .subject(subject)
                .message(message_text(f, response))
                .send()
                .await
                .map_err(|e| err(&format!("Publish {topic}"), e))?;
            sent.push("SNS");
        }
        if let Some((uri, client)) = &self.webhook {
            let body = webhook_body(f, response).to_string();
            let req = hyper::Request::post(uri.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .map_err(|e| ActionError(format!("webhook request: {e}")))?;
            let resp = tokio::time::timeout(self.cfg.call_timeout, client.request(req))
                .await
                .map_err(|_| ActionError("webhook: timed out".into()))?
                .map_err(|e| ActionError(format!("webhook: {e}")))?;
            if !resp.status().is_success() {
                return Err(ActionError(format!("webhook: HTTP {}", resp.status().as_u16())));
            }
            sent.push("webhook");
        }
        if sent.is_empty() {
            return Err(ActionError("no notification channel configured".into()));
        }
        Ok(Change::Done(format!("notified by {}", sent.join(" and "))))
    }
}

/// The Security Hub console link of a finding.
pub fn finding_link(f: &FindingView) -> String {
    let region = arn_parts(&f.product_arn).map(|p| p.0).filter(|r| !r.is_empty()).unwrap_or_else(|| f.region.clone());
    let id: String =
        f.id.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
    format!("https://{region}.console.aws.amazon.com/securityhub/home?region={region}#/findings?search=Id%3D%255Coperator%255C%253AEQUALS%255C%253A{id}")
}

/// The readable notification: what, who, where, when, what to do, the link.
pub fn message_text(f: &FindingView, response: &str) -> String {
    let mut m = format!("{} ({})\n\n{}\n\n", f.title, f.severity, f.description);
    m.push_str(&format!("Who:   {}\n", f.principal.as_deref().unwrap_or("unknown")));
    if let Some(ip) = &f.source_ip {
        m.push_str(&format!("From:  {ip}\n"));
    }
    m.push_str(&format!("Where: account {} in {}\n", f.account, f.region));
    let when =
        if f.first_seen == f.last_seen { f.first_seen.clone() } else { format!("{} to {}", f.first_seen, f.last_seen) };
    m.push_str(&format!("When:  {when}\n"));
    if let Some(e) = &f.event_name {
        m.push_str(&format!("API:   {e}\n"));
    }
    if let Some(r) = &f.remediation {
        m.push_str(&format!("\nWhat to do: {}\n", r.trim()));
    }
    if let Some(u) = &f.remediation_url {
        m.push_str(&format!("See: {u}\n"));
    }
    m.push_str(&format!("\nFinding: {}\n{}\nRule {}; response {response}.\n", f.id, finding_link(f), f.rule_id));
    m
}

/// Slack (`text` + blocks) and Teams (`text`) both read this shape.
pub fn webhook_body(f: &FindingView, response: &str) -> serde_json::Value {
    let text = message_text(f, response);
    json!({
        "text": format!("[trailwatch {}] {}", f.severity, f.title),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": format!("{} ({})", f.title, f.severity).chars().take(150).collect::<String>()}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text.chars().take(3000).collect::<String>()}}
        ],
        "finding": {
            "id": f.id, "rule_id": f.rule_id, "severity": f.severity, "account": f.account, "region": f.region,
            "principal": f.principal, "first_seen": f.first_seen, "last_seen": f.last_seen, "link": finding_link(f)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_policy_round_trips_plain_and_url_encoded() {
        let t = OffsetDateTime::parse("2026-12-06T04:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
        let doc = revocation_policy(t);
        assert_eq!(revocation_cutoff(&doc), Some(t));
        let enc: String = doc.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(revocation_cutoff(&enc), Some(t));
        assert_eq!(revocation_cutoff("{\"Statement\":[]}"), None);
    }

    #[test]
    fn drift_is_read_from_the_builtin_rules_findings() {
        let mut f = FindingView {
            rule_id: SCAN_ON_PUSH_RULE.into(),
            resources: vec![(
                "AwsEcrRepository".into(),
                "arn:aws:ecr:eu-west-1:111122223333:repository/team/app".into(),
            )],
            ..Default::default()
        };
        assert_eq!(
            Drift::of(&f),
            Some(Drift::EcrScanOnPush {
                region: "eu-west-1".into(),
                account: "111122223333".into(),
                repository: "team/app".into()
            })
        );
        f.rule_id = "custom".into();
        assert_eq!(Drift::of(&f), None);
    }

    fn org() -> OrgContext {
        OrgContext { org_id: Some("o-a1b2c3d4e5".into()), accounts: ["444455556666".to_string()].into() }
    }

    #[test]
    fn only_public_and_outside_statements_are_removed() {
        let doc = r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"Public","Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"},
            {"Sid":"PublicAws","Effect":"Allow","Principal":{"AWS":["*"]},"Action":"ecr:BatchGetImage"},
            {"Sid":"OrgOnly","Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-a1b2c3d4e5"}}},
            {"Sid":"OtherOrg","Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-zzzzzzzzzz"}}},
            {"Sid":"InOrgOtherCond","Effect":"Allow","Principal":{"AWS":"444455556666"},"Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-zzzzzzzzzz"}}},
            {"Sid":"InOrg","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::444455556666:role/ci","111122223333"]},"Action":"ecr:BatchGetImage"},
            {"Sid":"Mixed","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::444455556666:root","arn:aws:iam::999988887777:root"]},"Action":"ecr:BatchGetImage"},
            {"Sid":"Outside","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999988887777:root"},"Action":"ecr:BatchGetImage"},
            {"Sid":"Service","Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"ecr:BatchGetImage"},
            {"Sid":"Deny","Effect":"Deny","Principal":"*","Action":"ecr:*"}
        ]}"#;
        let (policy, removed) = filter_policy(doc, "111122223333", &org()).unwrap();
        let policy = policy.unwrap();
        let sids = |a: &serde_json::Value| -> Vec<String> {
            a.as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(sids(&policy["Statement"]), ["OrgOnly", "InOrgOtherCond", "InOrg", "Mixed", "Service", "Deny"]);
        assert_eq!(policy["Version"], "2012-10-17");
        assert_eq!(policy["Statement"][3]["Principal"]["AWS"], json!(["arn:aws:iam::444455556666:root"]));
        // As they were, the narrowed one with its outside principal.
        assert_eq!(
            sids(&serde_json::Value::Array(removed.clone())),
            ["Public", "PublicAws", "OtherOrg", "Mixed", "Outside"]
        );
        assert_eq!(removed[3]["Principal"]["AWS"][1], "arn:aws:iam::999988887777:root");
    }

    #[test]
    fn without_the_org_accounts_only_public_statements_go() {
        let doc = r#"{"Statement":[
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999988887777:root"},"Action":"ecr:BatchGetImage"},
            {"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-zzzzzzzzzz"}}}
        ]}"#;
        // Neither the accounts nor the org id known: nothing is proven outside.
        let (policy, removed) = filter_policy(doc, "111122223333", &OrgContext::default()).unwrap();
        assert!(removed.is_empty());
        assert_eq!(policy.unwrap()["Statement"].as_array().unwrap().len(), 2);
        // Only a public statement: nothing is left.
        let (policy, removed) =
            filter_policy(r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:*"}}"#, "1", &org()).unwrap();
        assert!(policy.is_none());
        assert_eq!(removed.len(), 1);
        assert!(filter_policy("not json", "1", &org()).is_err());
    }
}
