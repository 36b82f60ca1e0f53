//! Scenarios for the coverage themes of issue 18 (IAM, credentials, data
//! exposure, network, execution, Organizations, databases, other services,
//! and the identity and tampering additions): one attack and one benign
//! look-alike each. The look-alike calls the same API the same way an admin
//! does on an ordinary day, without the one property the rule is about.

use rand::Rng;

use super::{begin, call, engineer, hijacked_sso, intruder, Actor, Ctx};
use crate::json::object;
use crate::record::Who;
use crate::traffic::console_sign_in;
use crate::util;

pub const THEME_IAM: &str = "IAM persistence and escalation";
pub const THEME_CREDENTIALS: &str = "credential access";
pub const THEME_EXPOSURE: &str = "data exposure";
pub const THEME_NETWORK: &str = "network";
pub const THEME_EXECUTION: &str = "execution";
pub const THEME_ORGANIZATIONS: &str = "organizations and account";
pub const THEME_DATABASES: &str = "databases";
pub const THEME_SERVICES: &str = "other services";

fn global(ctx: &Ctx<'_, '_>) -> usize {
    ctx.em.org.global_region()
}

// ------------------------------------------------------------------ IAM

/// A hijacked admin session gives a dormant IAM user a new key and admin rights.
pub(super) fn access_key_for_another_user(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = hijacked_sso(ctx, w, 0);
    let g = global(ctx);
    begin(ctx, &a, g);
    let t = ctx.t;
    let key = util::iam_id(ctx.rng(), "AKIA");
    let p = object(60, |j| {
        j.s("userName", "backup-sync");
    });
    let r = object(200, |j| {
        j.key("accessKey").obj().s("userName", "backup-sync").s("accessKeyId", &key).s("status", "Active").end();
    });
    call(ctx, &a, t, "iam.amazonaws.com", "CreateAccessKey", Some(&p), Some(&r));
    let p = object(120, |j| {
        j.s("userName", "backup-sync").s("policyArn", "arn:aws:iam::aws:policy/AdministratorAccess");
    });
    call(ctx, &a, t + 25, "iam.amazonaws.com", "AttachUserPolicy", Some(&p), None);
}

/// An IAM user rotates its own access key.
pub(super) fn own_access_key_rotation(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let mut a = intruder(ctx, w);
    // Not an intruder: the same kind of user, from the office.
    let office = ctx.org().office_ips.first().cloned().unwrap_or_else(|| a.ip.clone());
    a.ip = office;
    a.agent = crate::traffic::UA_CLI;
    let g = global(ctx);
    begin(ctx, &a, g);
    let name = a.user.as_ref().map(|u| u.0.clone()).unwrap_or_default();
    let t = ctx.t;
    let p = object(60, |j| {
        j.s("userName", &name);
    });
    call(ctx, &a, t, "iam.amazonaws.com", "CreateAccessKey", Some(&p), None);
    let old = a.key.clone();
    let p = object(100, |j| {
        j.s("userName", &name).s("accessKeyId", &old);
    });
    call(ctx, &a, t + 40, "iam.amazonaws.com", "DeleteAccessKey", Some(&p), None);
}

// ---------------------------------------------------------- credentials

fn secret_arn(ctx: &Ctx<'_, '_>, account: usize, name: &str) -> String {
    let org = ctx.em.org;
    format!("arn:aws:secretsmanager:{}:{}:secret:{name}", org.regions[ctx.region], org.accounts[account].id)
}

/// A leaked key reads 14 different secrets in a few minutes.
pub(super) fn secrets_mass_read(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = intruder(ctx, w);
    begin(ctx, &a, 0);
    let mut t = ctx.t;
    for i in 0..14 {
        let suffix = util::lower_alnum(ctx.rng(), 6);
        let arn = secret_arn(ctx, w, &format!("prod/app-{i}/db-credentials-{suffix}"));
        let p = object(200, |j| {
            j.s("secretId", &arn);
        });
        call(ctx, &a, t, "secretsmanager.amazonaws.com", "GetSecretValue", Some(&p), None);
        t += ctx.rng().random_range(5..20);
    }
}

/// A person reads the three secrets of the service they are debugging, twice.
pub(super) fn few_secrets_read(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    let names: Vec<String> = (0..3).map(|i| secret_arn(ctx, w, &format!("prod/orders/secret-{i}-AbCdEf"))).collect();
    let mut t = ctx.t;
    for _ in 0..2 {
        for arn in &names {
            let p = object(200, |j| {
                j.s("secretId", arn);
            });
            call(ctx, &a, t, "secretsmanager.amazonaws.com", "GetSecretValue", Some(&p), None);
            t += ctx.rng().random_range(10..40);
        }
    }
}

// ------------------------------------------------------------- exposure

fn bucket_policy(ctx: &mut Ctx<'_, '_>, a: &Actor, bucket: &str, org_only: bool) {
    let org_id = ctx.org().id.clone();
    let p = object(500, |j| {
        j.s("bucketName", bucket).s("Host", &format!("{bucket}.s3.amazonaws.com"));
        j.key("bucketPolicy").obj().s("Version", "2012-10-17");
        j.key("Statement").arr();
        j.obj().s("Sid", "Read").s("Effect", "Allow").s("Principal", "*").s("Action", "s3:GetObject");
        j.s("Resource", &format!("arn:aws:s3:::{bucket}/*"));
        if org_only {
            j.key("Condition").obj().key("StringEquals").obj().s("aws:PrincipalOrgID", &org_id).end().end();
        }
        j.end();
        j.end_arr();
        j.end();
    });
    let t = ctx.t;
    call(ctx, a, t, "s3.amazonaws.com", "PutBucketPolicy", Some(&p), None);
}

/// A hijacked session opens a data bucket to anyone.
pub(super) fn s3_bucket_made_public(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = hijacked_sso(ctx, w, 0);
    begin(ctx, &a, 0);
    let bucket = format!("{}-customer-exports", ctx.org().accounts[w].name);
    bucket_policy(ctx, &a, &bucket, false);
}

/// A bucket shared with the whole org (Principal "*" with aws:PrincipalOrgID).
pub(super) fn s3_bucket_policy_org_only(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    let bucket = format!("{}-shared-artifacts", ctx.org().accounts[w].name);
    bucket_policy(ctx, &a, &bucket, true);
}

// -------------------------------------------------------------- network

fn ingress(ctx: &mut Ctx<'_, '_>, a: &Actor, rules: &[(i64, &str)]) {
    let group = format!("sg-{}", util::hex(ctx.rng(), 17));
    let p = object(400, |j| {
        j.s("groupId", &group);
        j.key("ipPermissions").obj().key("items").arr();
        for (port, cidr) in rules {
            j.obj().s("ipProtocol", "tcp").n("fromPort", *port).n("toPort", *port);
            j.key("ipRanges").obj().key("items").arr().obj().s("cidrIp", cidr).end().end_arr().end();
            j.end();
        }
        j.end_arr().end();
    });
    let t = ctx.t;
    call(ctx, a, t, "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", Some(&p), None);
}

/// SSH opened to the whole internet.
pub(super) fn security_group_ssh_open(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = hijacked_sso(ctx, w, 0);
    begin(ctx, &a, 0);
    ingress(ctx, &a, &[(22, "0.0.0.0/0")]);
}

/// HTTPS opened to the internet and SSH to the private network only.
pub(super) fn security_group_https_open(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    ingress(ctx, &a, &[(443, "0.0.0.0/0"), (22, "10.0.0.0/8")]);
}

// ------------------------------------------------------------ execution

fn modify_instance(ctx: &mut Ctx<'_, '_>, a: &Actor, user_data: bool) {
    let instance = util::instance_id(ctx.rng());
    let ids = object(120, |j| {
        j.key("instancesSet").obj().key("items").arr().obj().s("instanceId", &instance).end().end_arr().end();
    });
    let t = ctx.t;
    call(ctx, a, t, "ec2.amazonaws.com", "StopInstances", Some(&ids), None);
    let p = object(200, |j| {
        j.s("instanceId", &instance);
        if user_data {
            j.s("userData", "<sensitiveDataRemoved>");
        } else {
            j.key("instanceType").obj().s("value", "m6i.xlarge").end();
        }
    });
    call(ctx, a, t + 70, "ec2.amazonaws.com", "ModifyInstanceAttribute", Some(&p), None);
    call(ctx, a, t + 95, "ec2.amazonaws.com", "StartInstances", Some(&ids), None);
}

/// An instance stopped, its user data replaced (runs as root at boot), started.
pub(super) fn ec2_user_data_modified(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = intruder(ctx, w);
    begin(ctx, &a, 0);
    modify_instance(ctx, &a, true);
}

/// An instance stopped, resized, started.
pub(super) fn ec2_instance_resized(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    modify_instance(ctx, &a, false);
}

// -------------------------------------------------------- organizations

fn scp_call(ctx: &mut Ctx<'_, '_>, a: &Actor, name: &'static str) {
    let policy = format!("p-{}", util::lower_alnum(ctx.rng(), 8));
    let ou = format!("ou-{}-{}", util::lower_alnum(ctx.rng(), 4), util::lower_alnum(ctx.rng(), 8));
    let p = object(100, |j| {
        j.s("policyId", &policy).s("targetId", &ou);
    });
    let t = ctx.t;
    call(ctx, a, t, "organizations.amazonaws.com", name, Some(&p), None);
}

/// A hijacked management-account admin session detaches a guardrail SCP.
pub(super) fn scp_detached(ctx: &mut Ctx<'_, '_>) {
    let m = ctx.org().management;
    let a = hijacked_sso(ctx, m, 0);
    let g = global(ctx);
    begin(ctx, &a, g);
    scp_call(ctx, &a, "DetachPolicy");
}

/// An admin attaches an SCP to an OU.
pub(super) fn scp_attached(ctx: &mut Ctx<'_, '_>) {
    let m = ctx.org().management;
    let a = engineer(ctx, m);
    let g = global(ctx);
    begin(ctx, &a, g);
    scp_call(ctx, &a, "AttachPolicy");
}

// ------------------------------------------------------------ databases

fn modify_db(ctx: &mut Ctx<'_, '_>, a: &Actor, public: bool) {
    let db = format!("{}-db-{}", ctx.org().accounts[a.account].name, util::lower_alnum(ctx.rng(), 4));
    let p = object(160, |j| {
        j.s("dBInstanceIdentifier", &db).b("applyImmediately", public);
        if public {
            j.b("publiclyAccessible", true);
        } else {
            j.s("dBInstanceClass", "db.r6g.xlarge").b("publiclyAccessible", false);
        }
    });
    let t = ctx.t;
    call(ctx, a, t, "rds.amazonaws.com", "ModifyDBInstance", Some(&p), None);
}

/// A database made reachable from the internet.
pub(super) fn rds_made_public(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = hijacked_sso(ctx, w, 0);
    begin(ctx, &a, 0);
    modify_db(ctx, &a, true);
}

/// A database resized (and stated private).
pub(super) fn rds_resized(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    modify_db(ctx, &a, false);
}

// ------------------------------------------------------------- services

/// A leaked key turns on Bedrock model access (LLMjacking).
pub(super) fn bedrock_model_access(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = intruder(ctx, w);
    begin(ctx, &a, 0);
    let t = ctx.t;
    call(ctx, &a, t, "bedrock.amazonaws.com", "PutUseCaseForModelAccess", Some("{\"formData\":\"HIDDEN\"}"), None);
    let p = "{\"modelId\":\"anthropic.claude-3-sonnet-20240229-v1:0\",\"offerToken\":\"HIDDEN\"}";
    call(ctx, &a, t + 20, "bedrock.amazonaws.com", "CreateFoundationModelAgreement", Some(p), None);
}

/// An engineer browses the Bedrock model catalogue.
pub(super) fn bedrock_models_listed(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    let t = ctx.t;
    call(ctx, &a, t, "bedrock.amazonaws.com", "ListFoundationModels", None, None);
    let p = "{\"modelId\":\"anthropic.claude-3-sonnet-20240229-v1:0\"}";
    call(ctx, &a, t + 15, "bedrock.amazonaws.com", "GetFoundationModelAvailability", Some(p), None);
}

// ------------------------------------------------------------- identity

const SPRAYED_USERS: &[&str] =
    &["admin", "administrator", "devops", "ops", "deploy", "jenkins", "backup", "support", "dev", "test", "root-ops"];

fn console_failure(ctx: &mut Ctx<'_, '_>, t: i64, account: usize, name: &str, ip: &str) {
    let org = ctx.em.org;
    let id = util::iam_id(ctx.rng(), "AIDA");
    let who = Who::User { account: &org.accounts[account].id, name, id: &id, key: None };
    let event = console_sign_in(ctx.em, t, account, who, ip, false, false);
    ctx.take(vec![event], t);
}

/// One address tries common user names against the console, 11 in minutes.
pub(super) fn console_password_spraying(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let ip = util::public_ip(ctx.rng());
    ctx.account = w;
    ctx.region = global(ctx);
    ctx.principal = Some(ip.clone());
    let mut t = ctx.t;
    for name in SPRAYED_USERS {
        console_failure(ctx, t, w, name, &ip);
        t += ctx.rng().random_range(10..40);
    }
}

/// A person mistypes their console password twice.
pub(super) fn mistyped_password(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let ip = ctx.org().office_ips.first().cloned().unwrap_or_else(|| "192.0.2.10".into());
    ctx.account = w;
    ctx.region = global(ctx);
    ctx.principal = Some(ip.clone());
    let t = ctx.t;
    console_failure(ctx, t, w, "ops-breakglass", &ip);
    console_failure(ctx, t + 12, w, "ops-breakglass", &ip);
}

// ------------------------------------------------------------ tampering

fn update_trail(ctx: &mut Ctx<'_, '_>, a: &Actor, redirect: bool) {
    let trail = super::trail_arn(ctx.em.org, a.account);
    let bucket = format!("logs-{}", util::lower_alnum(ctx.rng(), 10));
    let p = object(200, |j| {
        j.s("name", &trail);
        if redirect {
            j.s("s3BucketName", &bucket);
        } else {
            j.b("enableLogFileValidation", true);
        }
    });
    let t = ctx.t;
    call(ctx, a, t, "cloudtrail.amazonaws.com", "UpdateTrail", Some(&p), None);
}

/// The account's trail sent to a bucket the intruder controls.
pub(super) fn trail_redirected(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = hijacked_sso(ctx, w, 0);
    begin(ctx, &a, 0);
    update_trail(ctx, &a, true);
}

/// Log file validation turned on (same bucket).
pub(super) fn trail_validation_enabled(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    update_trail(ctx, &a, false);
}
