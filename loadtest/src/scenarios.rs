//! Injected scenarios: one attack per theme of the rule pack (issue 4), and
//! benign look-alikes that a good pack stays quiet on. Each instance records
//! its principal, account, time range and the ids of its events; the ground
//! truth is those ids, never rule ids, so it does not depend on how rules are
//! written.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::json::{object, Json};
use crate::org::{Org, Person, Role};
use crate::record::{Call, Emitter, Who};
use crate::traffic::{
    self, access_denied, console_login, console_sign_in, container_definitions, inspector_finding, pull_image,
    repo_arn, repo_resources, session_key, task_definition_params, Sso, UA_BROWSER, UA_CI, UA_CI_DOCKER, UA_CLI,
    UA_CONSOLE, UA_CONTAINERD, UA_CRED_PROVIDER,
};
use crate::util::{self, Rand};

mod coverage;
mod ecr;
mod ecs;
mod identity;
mod tampering;
use coverage::*;
use ecr::*;
use ecs::*;
use identity::*;
use tampering::*;

pub const THEME_LAYERS: &str = "image layer access";
pub const THEME_REGISTRY: &str = "registry configuration weakened";
pub const THEME_VULNS: &str = "vulnerable images";
pub const THEME_ECS: &str = "risky ECS workloads";
pub const THEME_TAMPERING: &str = "monitoring tampering";
pub const THEME_IDENTITY: &str = "identity";

/// A scenario: how to inject one instance of it.
pub struct Scenario {
    pub name: &'static str,
    pub theme: &'static str,
    pub summary: &'static str,
    /// Seconds from its first to its last event, at most.
    pub span: i64,
    build: fn(&mut Ctx<'_, '_>),
}

/// One injected instance, as written to the ground truth.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Labelled {
    /// `<name>#<n>`, unique in the file.
    pub id: String,
    pub name: String,
    pub theme: String,
    pub summary: String,
    /// ARN (or principal id) of who did it; absent for events without a caller (scan results).
    pub principal: Option<String>,
    pub account: String,
    pub region: String,
    pub start: String,
    pub end: String,
    pub event_ids: Vec<String>,
}

/// Builder state of one instance.
pub struct Ctx<'e, 'o> {
    pub em: &'e mut Emitter<'o>,
    pub t: i64,
    pub ids: Vec<String>,
    pub principal: Option<String>,
    pub account: usize,
    pub region: usize,
    pub end: i64,
}

impl<'o> Ctx<'_, 'o> {
    fn org(&self) -> &'o Org {
        self.em.org
    }
    fn rng(&mut self) -> &mut Rand {
        &mut self.em.rng
    }
    fn ct(&mut self, c: &Call<'_>) -> String {
        self.end = self.end.max(c.time);
        let id = self.em.ct(c);
        self.ids.push(id.clone());
        id
    }
    fn take(&mut self, ids: Vec<String>, last: i64) {
        self.end = self.end.max(last);
        self.ids.extend(ids);
    }
}

/// Injects one instance of `s` starting at `t`.
pub fn inject(s: &Scenario, em: &mut Emitter<'_>, t: i64, n: usize) -> Labelled {
    let mut ctx = Ctx { em, t, ids: Vec::new(), principal: None, account: 0, region: 0, end: t };
    (s.build)(&mut ctx);
    let org = ctx.em.org;
    Labelled {
        id: format!("{}#{n}", s.name),
        name: s.name.to_string(),
        theme: s.theme.to_string(),
        summary: s.summary.to_string(),
        principal: ctx.principal,
        account: org.accounts[ctx.account].id.clone(),
        region: org.regions[ctx.region].clone(),
        start: util::iso(t),
        end: util::iso(ctx.end),
        event_ids: ctx.ids,
    }
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).field("theme", &self.theme).finish()
    }
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    ATTACKS.iter().chain(LOOKALIKES.iter()).find(|s| s.name == name)
}

// ---------------------------------------------------------------- actors

const INTRUDER_USERS: &[&str] =
    &["jenkins-legacy", "terraform-old", "backup-sync", "ci-bot", "data-export", "svc-reporting"];
const INTRUDER_AGENTS: &[&str] = &[
    "aws-cli/2.13.0 Python/3.11.4 Linux/6.3.0-kali1-amd64 exe/x86_64.kali.2023 prompt/off",
    "Boto3/1.28.62 md/Botocore#1.31.62 ua/2.0 os/linux#6.5.0-kali3-amd64 md/arch#x86_64 lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.31.62",
    "aws-sdk-go/1.44.327 (go1.21.0; linux; amd64)",
];

/// Who an attack runs as: a leaked IAM user key or a hijacked SSO session, from outside.
struct Actor {
    account: usize,
    user: Option<(String, String)>,
    role: Option<Role>,
    session: String,
    key: String,
    ip: String,
    agent: &'static str,
    /// When the session or key came into use.
    created: i64,
}

impl Actor {
    fn who<'a>(&'a self, org: &'a Org) -> Who<'a> {
        let account = &org.accounts[self.account].id;
        match (&self.user, &self.role) {
            (Some((name, id)), _) => Who::User { account, name, id, key: Some(&self.key) },
            (None, Some(role)) => Who::role(account, role, &self.session, &self.key, self.created),
            (None, None) => Who::Root { account, key: None },
        }
    }
    fn arn(&self, org: &Org) -> String {
        self.who(org).arn().unwrap_or_default()
    }
}

/// A leaked access key of an IAM user, used from an outside address.
fn intruder(ctx: &mut Ctx<'_, '_>, account: usize) -> Actor {
    let name = INTRUDER_USERS.choose(ctx.rng()).copied().unwrap_or("ci-bot").to_string();
    let id = util::iam_id(ctx.rng(), "AIDA");
    let key = util::iam_id(ctx.rng(), "AKIA");
    let ip = util::public_ip(ctx.rng());
    let agent = INTRUDER_AGENTS.choose(ctx.rng()).copied().unwrap_or(UA_CLI);
    Actor { created: ctx.t - 600, account, user: Some((name, id)), role: None, session: String::new(), key, ip, agent }
}

/// A hijacked SSO session of a person with the given permission set, from an outside address.
fn hijacked_sso(ctx: &mut Ctx<'_, '_>, account: usize, permission_set: usize) -> Actor {
    let person = ctx.org().people.choose(ctx.rng()).expect("people");
    let mut a = person_session(ctx, person, account, permission_set, UA_CLI);
    a.ip = util::public_ip(ctx.rng());
    a
}

/// A leaked key or a hijacked admin session, at random.
fn attacker(ctx: &mut Ctx<'_, '_>, account: usize) -> Actor {
    if ctx.rng().random_bool(0.5) {
        intruder(ctx, account)
    } else {
        hijacked_sso(ctx, account, 0)
    }
}

/// A platform engineer's own admin session from the office.
fn engineer(ctx: &mut Ctx<'_, '_>, account: usize) -> Actor {
    let org = ctx.em.org;
    let admins: Vec<_> = org.people.iter().filter(|p| p.permission_set == 0).collect();
    let person = admins.choose(ctx.rng()).copied().unwrap_or(&org.people[0]);
    let mut a = person_session(ctx, person, account, 0, UA_CLI);
    a.agent = if ctx.rng().random_bool(0.5) { UA_CONSOLE } else { UA_CLI };
    a
}

/// `person`'s own SSO session with permission set `set` in `account`, from the office.
fn person_session(ctx: &mut Ctx<'_, '_>, person: &Person, account: usize, set: usize, agent: &'static str) -> Actor {
    let role = ctx.org().accounts[account].sso[set].role.clone();
    let key = session_key(ctx.em);
    Actor {
        created: ctx.t - 600,
        account,
        user: None,
        role: Some(role),
        session: person.email.clone(),
        key,
        ip: person.ip.clone(),
        agent,
    }
}

/// A CI run's session of `role` in `account` from CI runner `runner`: `GitHubActions-<run><suffix>`.
fn ci_session(
    ctx: &mut Ctx<'_, '_>,
    account: usize,
    role: &Role,
    suffix: &str,
    runner: usize,
    agent: &'static str,
) -> Actor {
    let key = session_key(ctx.em);
    let run = ctx.rng().random_range(10_000_000u64..99_999_999);
    Actor {
        created: ctx.t - 600,
        account,
        user: None,
        role: Some(role.clone()),
        session: format!("GitHubActions-{run}{suffix}"),
        key,
        ip: ctx.org().ci_runner_ips[runner].clone(),
        agent,
    }
}

fn central_repo(ctx: &mut Ctx<'_, '_>) -> usize {
    let org = ctx.em.org;
    let central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == org.registry).collect();
    *central.choose(ctx.rng()).expect("central repos")
}

/// Sets the instance's account, region and principal from its actor.
fn begin(ctx: &mut Ctx<'_, '_>, actor: &Actor, region: usize) {
    ctx.account = actor.account;
    ctx.region = region;
    ctx.principal = Some(actor.arn(ctx.em.org));
}

/// An ECR control-plane call on a repository by `actor`.
fn ecr_call(
    ctx: &mut Ctx<'_, '_>,
    actor: &Actor,
    t: i64,
    name: &'static str,
    params: &str,
    response: Option<&str>,
    repo: Option<usize>,
) {
    let org = ctx.em.org;
    let res = repo.map(|r| repo_resources(org, &org.repos[r], ctx.region));
    let mut c =
        Call::new(t, actor.account, ctx.region, "ecr.amazonaws.com", name, actor.who(org), &actor.ip, actor.agent)
            .params(params)
            .read_only(false);
    if let Some(r) = response {
        c = c.response(r);
    }
    if let Some(r) = &res {
        c = c.resources(r);
    }
    ctx.ct(&c);
}

/// A generic API call by `actor` in the instance's region.
fn call(
    ctx: &mut Ctx<'_, '_>,
    actor: &Actor,
    t: i64,
    source: &'static str,
    name: &'static str,
    params: Option<&str>,
    response: Option<&str>,
) {
    let org = ctx.em.org;
    let region = if source == "iam.amazonaws.com" { org.global_region() } else { ctx.region };
    let mut c =
        Call::new(t, actor.account, region, source, name, actor.who(org), &actor.ip, actor.agent).read_only(false);
    if let Some(p) = params {
        c = c.params(p);
    }
    if let Some(r) = response {
        c = c.response(r);
    }
    ctx.ct(&c);
}

// ------------------------------------------------------------ attacks

// ---------------------------------------------------------- look-alikes

macro_rules! scenario {
    ($name:expr, $theme:expr, $span:expr, $summary:expr, $f:expr) => {
        Scenario { name: $name, theme: $theme, summary: $summary, span: $span, build: $f }
    };
}

/// One attack per theme of the rule pack.
pub static ATTACKS: &[Scenario] = &[
    scenario!(
        "layer-download-unexpected-principal",
        THEME_LAYERS,
        60,
        "an IAM user's leaked key pulls an image from outside the org's networks",
        layer_download_unexpected
    ),
    scenario!(
        "stolen-node-credentials",
        THEME_LAYERS,
        30,
        "an EKS node role's session pulls an image from an address outside the org's networks",
        stolen_node_credentials
    ),
    scenario!(
        "bulk-layer-download",
        THEME_LAYERS,
        300,
        "a hijacked developer session downloads more than 50 layers in under 5 minutes",
        bulk_layer_download
    ),
    scenario!(
        "many-repositories",
        THEME_LAYERS,
        600,
        "a leaked key pulls from 14 repositories within 10 minutes",
        many_repositories
    ),
    scenario!(
        "scan-on-push-disabled",
        THEME_REGISTRY,
        1,
        "scan on push turned off on a repository",
        scan_on_push_disabled
    ),
    scenario!("tag-mutability-mutable", THEME_REGISTRY, 1, "a repository's tags made MUTABLE", |c| tag_mutability(
        c, "MUTABLE"
    )),
    scenario!(
        "lifecycle-policy-deleted",
        THEME_REGISTRY,
        1,
        "a repository's lifecycle policy deleted",
        lifecycle_policy_deleted
    ),
    scenario!(
        "public-repository-policy",
        THEME_REGISTRY,
        1,
        "repository policy with Principal \"*\" and no org condition",
        public_repository_policy
    ),
    scenario!(
        "cross-account-policy-outside",
        THEME_REGISTRY,
        1,
        "repository policy granting an account outside the org",
        cross_account_policy_outside
    ),
    scenario!(
        "registry-policy",
        THEME_REGISTRY,
        1,
        "registry policy granting an outside account replication into the registry",
        |c| {
            let o = c.org().outside_accounts[0].clone();
            registry_policy(c, &o)
        }
    ),
    scenario!("replication-outside", THEME_REGISTRY, 1, "replication rule to a registry outside the org", |c| {
        replication(c, true)
    }),
    scenario!(
        "pull-through-cache-unapproved",
        THEME_REGISTRY,
        1,
        "pull-through cache rule to an unapproved upstream (ghcr.io)",
        |c| pull_through_cache(c, "ghcr.io")
    ),
    scenario!(
        "repository-deletion",
        THEME_REGISTRY,
        1,
        "a repository force-deleted with its images",
        repository_deletion
    ),
    scenario!(
        "mass-image-deletion",
        THEME_REGISTRY,
        200,
        "60-120 images deleted across three repositories in minutes",
        mass_image_deletion
    ),
    scenario!(
        "encryption-changed",
        THEME_REGISTRY,
        80,
        "repository template switched to AES256, the registry's KMS key disabled and scheduled for deletion",
        encryption_changed
    ),
    scenario!(
        "critical-image-scan",
        THEME_VULNS,
        1,
        "ECR basic scan result with CRITICAL and HIGH findings",
        critical_image_scan
    ),
    scenario!(
        "critical-inspector-finding",
        THEME_VULNS,
        1,
        "Inspector2 finding of CRITICAL severity for an ECR image",
        critical_inspector_finding
    ),
    scenario!(
        "privileged-task-definition",
        THEME_ECS,
        1,
        "task definition with a privileged container, host network and host PID",
        privileged_task_definition
    ),
    scenario!(
        "plaintext-aws-key-task-definition",
        THEME_ECS,
        1,
        "task definition with an AWS access key pair in plaintext environment",
        plaintext_aws_key
    ),
    scenario!(
        "unapproved-registry-image",
        THEME_ECS,
        1,
        "task definition running an image from docker.io",
        unapproved_registry_image
    ),
    scenario!(
        "execute-command",
        THEME_ECS,
        1,
        "ECS ExecuteCommand into a running task by a hijacked session",
        execute_command
    ),
    scenario!(
        "stop-logging-then-delete-trail",
        THEME_TAMPERING,
        600,
        "StopLogging, then DeleteTrail by the same principal minutes later",
        stop_then_delete_trail
    ),
    scenario!(
        "event-selectors-drop-management",
        THEME_TAMPERING,
        1,
        "trail event selectors set to exclude management events",
        |c| event_selectors(c, true)
    ),
    scenario!("config-recorder-stopped", THEME_TAMPERING, 1, "AWS Config recorder stopped", config_recorder_stopped),
    scenario!("securityhub-disabled", THEME_TAMPERING, 1, "Security Hub disabled", securityhub_disabled),
    scenario!("guardduty-detector-deleted", THEME_TAMPERING, 1, "GuardDuty detector deleted", |c| guardduty_detector(
        c, true
    )),
    scenario!(
        "eventbridge-security-rule-disabled",
        THEME_TAMPERING,
        1,
        "the EventBridge rule forwarding Security Hub findings disabled",
        |c| eventbridge_rule_disabled(c, true)
    ),
    scenario!(
        "ecr-vpc-endpoint-policy-changed",
        THEME_TAMPERING,
        1,
        "ECR VPC endpoint policy replaced with allow-all",
        |c| vpc_endpoint_policy(c, true)
    ),
    scenario!("root-activity", THEME_IDENTITY, 90, "root signs in and creates an access key", root_activity),
    scenario!(
        "console-login-without-mfa",
        THEME_IDENTITY,
        20,
        "IAM user console sign-in without MFA from outside",
        console_login_without_mfa
    ),
    scenario!(
        "access-denied-enumeration",
        THEME_IDENTITY,
        300,
        "a leaked key refused on 13 different APIs within minutes",
        access_denied_enumeration
    ),
    scenario!(
        "outside-account-calls",
        THEME_IDENTITY,
        40,
        "calls into the org from an account outside it",
        outside_account_calls
    ),
    scenario!(
        "access-key-for-another-user",
        THEME_IAM,
        30,
        "a hijacked admin session creates an access key for a dormant IAM user and attaches AdministratorAccess",
        access_key_for_another_user
    ),
    scenario!(
        "secrets-mass-read",
        THEME_CREDENTIALS,
        300,
        "a leaked key reads 14 distinct Secrets Manager secrets within minutes",
        secrets_mass_read
    ),
    scenario!(
        "s3-bucket-made-public",
        THEME_EXPOSURE,
        1,
        "bucket policy allowing s3:GetObject to Principal \"*\" without a condition",
        s3_bucket_made_public
    ),
    scenario!(
        "security-group-ssh-open",
        THEME_NETWORK,
        1,
        "security group ingress for SSH from 0.0.0.0/0",
        security_group_ssh_open
    ),
    scenario!(
        "ec2-user-data-modified",
        THEME_EXECUTION,
        100,
        "an instance stopped, its user data replaced and started again by a leaked key",
        ec2_user_data_modified
    ),
    scenario!(
        "scp-detached",
        THEME_ORGANIZATIONS,
        1,
        "a service control policy detached from an OU by a hijacked management-account session",
        scp_detached
    ),
    scenario!(
        "rds-made-public",
        THEME_DATABASES,
        1,
        "an RDS instance modified to be publicly accessible",
        rds_made_public
    ),
    scenario!(
        "bedrock-model-access-enabled",
        THEME_SERVICES,
        20,
        "a leaked key turns on Bedrock foundation model access (LLMjacking)",
        bedrock_model_access
    ),
    scenario!(
        "console-password-spraying",
        THEME_IDENTITY,
        450,
        "one address fails console sign-in for 11 user names within minutes",
        console_password_spraying
    ),
    scenario!(
        "trail-redirected",
        THEME_TAMPERING,
        1,
        "the account trail's S3 bucket changed to another bucket",
        trail_redirected
    ),
];

/// Benign traffic that resembles an attack; a good pack raises nothing on these.
pub static LOOKALIKES: &[Scenario] = &[
    scenario!("enable-scan-on-push", THEME_REGISTRY, 1, "scan on push turned on", enable_scan_on_push),
    scenario!("tag-mutability-immutable", THEME_REGISTRY, 1, "a repository's tags made IMMUTABLE", |c| tag_mutability(
        c,
        "IMMUTABLE"
    )),
    scenario!(
        "lifecycle-policy-updated",
        THEME_REGISTRY,
        1,
        "a lifecycle policy put (not deleted)",
        lifecycle_policy_updated
    ),
    scenario!(
        "org-restricted-repository-policy",
        THEME_REGISTRY,
        1,
        "Principal \"*\" restricted with aws:PrincipalOrgID",
        org_restricted_policy
    ),
    scenario!(
        "policy-to-org-account",
        THEME_REGISTRY,
        1,
        "repository policy granting another account of the org",
        policy_to_org_account
    ),
    scenario!(
        "registry-policy-within-org",
        THEME_REGISTRY,
        1,
        "registry policy granting replication to an org account",
        |c| {
            let w = c.org().workloads[0];
            let id = c.org().accounts[w].id.clone();
            registry_policy(c, &id)
        }
    ),
    scenario!("replication-within-org", THEME_REGISTRY, 1, "replication to another org account", |c| replication(
        c, false
    )),
    scenario!("pull-through-cache-approved", THEME_REGISTRY, 1, "pull-through cache rule to public.ecr.aws", |c| {
        pull_through_cache(c, "public.ecr.aws")
    }),
    scenario!("single-image-cleanup", THEME_REGISTRY, 1, "CI deletes one or two untagged images", single_image_cleanup),
    scenario!(
        "kms-key-rotation-enabled",
        THEME_REGISTRY,
        1,
        "rotation enabled on the registry's KMS key",
        kms_rotation_enabled
    ),
    scenario!(
        "task-definition-with-secrets",
        THEME_ECS,
        1,
        "task definition with secrets from Secrets Manager and secret-looking names holding ARNs",
        task_definition_with_secrets
    ),
    scenario!(
        "node-scale-out",
        THEME_LAYERS,
        200,
        "a new EKS node pulls 12 images (all layers) in 3 minutes",
        node_scale_out
    ),
    scenario!(
        "inspector-scan-pulls",
        THEME_LAYERS,
        200,
        "Inspector's service-linked role reads the layers of 12 images",
        inspector_scan_pulls
    ),
    scenario!(
        "event-selectors-add-data-events",
        THEME_TAMPERING,
        1,
        "trail event selectors add S3 data events, keep management events",
        |c| event_selectors(c, false)
    ),
    scenario!(
        "config-recorder-updated",
        THEME_TAMPERING,
        5,
        "Config recorder updated and started",
        config_recorder_updated
    ),
    scenario!(
        "securityhub-standard-enabled",
        THEME_TAMPERING,
        1,
        "a Security Hub standard enabled",
        securityhub_standard_enabled
    ),
    scenario!("guardduty-detector-updated", THEME_TAMPERING, 1, "GuardDuty detector features enabled", |c| {
        guardduty_detector(c, false)
    }),
    scenario!(
        "eventbridge-nonsecurity-rule-disabled",
        THEME_TAMPERING,
        1,
        "a batch-job EventBridge rule disabled",
        |c| eventbridge_rule_disabled(c, false)
    ),
    scenario!(
        "ecr-vpc-endpoint-created",
        THEME_TAMPERING,
        1,
        "ECR VPC endpoint created with an org-restricted policy",
        |c| vpc_endpoint_policy(c, false)
    ),
    scenario!(
        "federated-console-login",
        THEME_IDENTITY,
        1,
        "SSO console sign-in; CloudTrail reports MFAUsed No (MFA is done by Identity Center)",
        federated_console_login
    ),
    scenario!(
        "few-access-denied",
        THEME_IDENTITY,
        500,
        "a read-only user refused on 4 APIs within 10 minutes",
        few_access_denied
    ),
    scenario!(
        "org-account-assume-role",
        THEME_IDENTITY,
        1,
        "CI in the shared-services account assumes a deploy role (caller shows as another org account)",
        org_account_assume_role
    ),
    scenario!(
        "own-access-key-rotation",
        THEME_IAM,
        40,
        "an IAM user creates its own new access key and deletes the old one",
        own_access_key_rotation
    ),
    scenario!(
        "few-secrets-read",
        THEME_CREDENTIALS,
        300,
        "an engineer reads the three secrets of one service, twice",
        few_secrets_read
    ),
    scenario!(
        "s3-bucket-policy-org-only",
        THEME_EXPOSURE,
        1,
        "bucket policy for Principal \"*\" restricted with aws:PrincipalOrgID",
        s3_bucket_policy_org_only
    ),
    scenario!(
        "security-group-https-open",
        THEME_NETWORK,
        1,
        "HTTPS open to 0.0.0.0/0, SSH only from 10.0.0.0/8",
        security_group_https_open
    ),
    scenario!(
        "ec2-instance-resized",
        THEME_EXECUTION,
        100,
        "an instance stopped, its type changed and started again",
        ec2_instance_resized
    ),
    scenario!("scp-attached", THEME_ORGANIZATIONS, 1, "a service control policy attached to an OU", scp_attached),
    scenario!(
        "rds-resized",
        THEME_DATABASES,
        1,
        "an RDS instance class changed (publiclyAccessible false)",
        rds_resized
    ),
    scenario!(
        "bedrock-models-listed",
        THEME_SERVICES,
        15,
        "an engineer lists Bedrock foundation models and their availability",
        bedrock_models_listed
    ),
    scenario!(
        "mistyped-password",
        THEME_IDENTITY,
        12,
        "two failed console sign-ins from the office",
        mistyped_password
    ),
    scenario!(
        "trail-validation-enabled",
        THEME_TAMPERING,
        1,
        "log file validation turned on for the account trail (same bucket)",
        trail_validation_enabled
    ),
];
