//! People and sessions: role session keys, Identity Center (SAML) sign-in, console
//! logins, console and CLI browsing, and AccessDenied errors.

use rand::seq::IndexedRandom;
use rand::Rng;

use super::services::{read_params, source_static};
use crate::agents::*;
use crate::json::object;
use crate::org::{Org, Role};
use crate::record::{Call, Emitter, EventType, Who};
use crate::util;

/// A fresh temporary key for a role session.
pub fn session_key(em: &mut Emitter<'_>) -> String {
    util::iam_id(&mut em.rng, "ASIA")
}

pub(super) fn assume_role_response(em: &mut Emitter<'_>, t: i64, account: &str, role: &Role, session: &str) -> String {
    let key = session_key(em);
    object(400, |j| {
        j.key("credentials").obj();
        j.s("accessKeyId", &key)
            .s("sessionToken", "IQoJb3JpZ2luX2VjEXAMPLE")
            .s("expiration", &util::inspector_time(t + 3600));
        j.end();
        j.key("assumedRoleUser").obj();
        j.s("assumedRoleId", &format!("{}:{session}", role.id));
        j.s("arn", &format!("arn:aws:sts::{account}:assumed-role/{}/{session}", role.name));
        j.end();
    })
}

/// Console browsing: (eventSource, eventName).
const BROWSE: &[(&str, &str)] = &[
    ("ecr.amazonaws.com", "DescribeRepositories"),
    ("ecr.amazonaws.com", "DescribeImages"),
    ("ecr.amazonaws.com", "ListImages"),
    ("ecr.amazonaws.com", "GetLifecyclePolicy"),
    ("ecr.amazonaws.com", "GetRepositoryPolicy"),
    ("ecr.amazonaws.com", "DescribeImageScanFindings"),
    ("ecs.amazonaws.com", "ListClusters"),
    ("ecs.amazonaws.com", "DescribeClusters"),
    ("ecs.amazonaws.com", "ListServices"),
    ("ecs.amazonaws.com", "DescribeServices"),
    ("ecs.amazonaws.com", "DescribeTaskDefinition"),
    ("ecs.amazonaws.com", "ListTasks"),
    ("ecs.amazonaws.com", "DescribeTasks"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ec2.amazonaws.com", "DescribeVpcs"),
    ("ec2.amazonaws.com", "DescribeSecurityGroups"),
    ("logs.amazonaws.com", "DescribeLogGroups"),
    ("logs.amazonaws.com", "FilterLogEvents"),
    ("iam.amazonaws.com", "ListRoles"),
    ("iam.amazonaws.com", "GetRole"),
    ("cloudtrail.amazonaws.com", "LookupEvents"),
    ("eks.amazonaws.com", "DescribeCluster"),
    ("secretsmanager.amazonaws.com", "ListSecrets"),
    ("cloudwatch.amazonaws.com", "DescribeAlarms"),
];

/// A person's role session in an account.
pub struct Sso<'a> {
    pub account: usize,
    pub role: &'a Role,
    pub session: &'a str,
    pub key: String,
    pub created: i64,
}

impl<'a> Sso<'a> {
    pub fn who(&'a self, org: &'a Org) -> Who<'a> {
        Who::role(&org.accounts[self.account].id, self.role, self.session, &self.key, self.created)
    }
}

/// The AssumeRoleWithSAML that starts an Identity Center session in an account.
pub fn saml_sign_in(em: &mut Emitter<'_>, t: i64, sso: &Sso<'_>, ip: &str) -> String {
    let org = em.org;
    let acct = &org.accounts[sso.account];
    let role_arn = format!("arn:aws:iam::{}:role/{}{}", acct.id, sso.role.path, sso.role.name);
    let provider = format!("arn:aws:iam::{}:saml-provider/{}", acct.id, org.saml_provider);
    let p = object(300, |j| {
        j.s("roleArn", &role_arn).s("principalArn", &provider).n("durationSeconds", 43_200);
    });
    let r = object(700, |j| {
        j.key("credentials").obj().s("accessKeyId", &sso.key).s("sessionToken", "IQoJb3JpZ2luX2VjEXAMPLE");
        j.s("expiration", &util::inspector_time(t + 43_200)).end();
        j.key("assumedRoleUser").obj().s("assumedRoleId", &format!("{}:{}", sso.role.id, sso.session));
        j.s("arn", &format!("arn:aws:sts::{}:assumed-role/{}/{}", acct.id, sso.role.name, sso.session)).end();
        j.s("subject", sso.session).s("subjectType", "persistent");
        j.s("issuer", &format!("https://portal.sso.{}.amazonaws.com/saml/assertion/{}", org.regions[0], org.saml_id));
        j.s("audience", "https://signin.aws.amazon.com/saml").s("nameQualifier", &org.saml_id);
    });
    let who = Who::Saml { provider_id: &org.saml_id, user: sso.session };
    em.ct(&Call::new(
        t,
        sso.account,
        org.global_region(),
        "sts.amazonaws.com",
        "AssumeRoleWithSAML",
        who,
        ip,
        UA_BROWSER,
    )
    .params(&p)
    .response(&r)
    .read_only(true))
}

/// A ConsoleLogin record for an SSO session.
pub fn console_login(em: &mut Emitter<'_>, t: i64, sso: &Sso<'_>, ip: &str, mfa_used: bool) -> String {
    let who = sso.who(em.org);
    console_sign_in(em, t, sso.account, who, ip, mfa_used, true)
}

/// A ConsoleLogin record of `who` in `account`, a success or a failure.
pub fn console_sign_in(
    em: &mut Emitter<'_>,
    t: i64,
    account: usize,
    who: Who<'_>,
    ip: &str,
    mfa_used: bool,
    success: bool,
) -> String {
    let org = em.org;
    let add = object(160, |j| {
        j.s("LoginTo", "https://console.aws.amazon.com/console/home").s("MobileVersion", "No");
        j.s("MFAUsed", if mfa_used { "Yes" } else { "No" });
    });
    let response = if success { "{\"ConsoleLogin\":\"Success\"}" } else { "{\"ConsoleLogin\":\"Failure\"}" };
    let mut c = Call::new(t, account, org.global_region(), "signin.amazonaws.com", "ConsoleLogin", who, ip, UA_BROWSER)
        .response(response)
        .host("signin.aws.amazon.com")
        .read_only(false);
    c.event_type = EventType::ConsoleSignIn;
    c.additional = Some(&add);
    em.ct(&c)
}

/// The AccessDenied error code and message a service returns for `name`.
pub fn access_denied(source: &str, name: &str, arn: &str) -> (&'static str, String) {
    let svc = source.trim_end_matches(".amazonaws.com");
    let code = match svc {
        "ec2" => "Client.UnauthorizedOperation",
        "iam" | "s3" | "cloudtrail" | "sts" | "organizations" => "AccessDenied",
        _ => "AccessDeniedException",
    };
    (code, format!("User: {arn} is not authorized to perform: {svc}:{name} because no identity-based policy allows the {svc}:{name} action"))
}

pub(super) fn human_session(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let person = org.people.choose(&mut em.rng).expect("people");
    let Some(&a) = person.accounts.choose(&mut em.rng) else { return 0 };
    let acct = &org.accounts[a];
    let sso = Sso {
        account: a,
        role: &acct.sso[person.permission_set].role,
        session: &person.email,
        key: session_key(em),
        created: t,
    };
    let cli = person.engineer && em.rng.random_bool(0.3);
    let mut n = 0;
    if !cli {
        saml_sign_in(em, t, &sso, &person.ip);
        console_login(em, t + 1, &sso, &person.ip, true);
        n += 2;
    }
    let region = org.pick_region(&mut em.rng);
    let calls = em.rng.random_range(6..30);
    let denied_at = if em.rng.random_bool(0.15) { Some(em.rng.random_range(0..calls)) } else { None };
    let arn = sso.who(org).arn().unwrap_or_default();
    let mut tt = t + em.rng.random_range(2..20);
    for k in 0..calls {
        let (source, name) = *BROWSE.choose(&mut em.rng).expect("browse");
        let region = if source == "iam.amazonaws.com" { org.global_region() } else { region };
        let params = read_params(em, source, name, a, region);
        let agent = if cli {
            UA_CLI
        } else if em.rng.random_bool(0.5) {
            UA_CONSOLE
        } else {
            UA_BROWSER
        };
        let mut call = Call::new(tt, a, region, source_static(source), name, sso.who(org), &person.ip, agent);
        if let Some(p) = &params {
            call = call.params(p);
        }
        let denied;
        if denied_at == Some(k) {
            denied = access_denied(source, name, &arn);
            call = call.error(denied.0, &denied.1);
        }
        em.ct(&call);
        n += 1;
        tt += em.rng.random_range(3..60);
    }
    n
}
