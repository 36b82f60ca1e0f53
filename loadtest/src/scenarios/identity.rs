//! Scenarios of the theme Identity: root use, console sign-in, AccessDenied enumeration, calls from outside the org; attacks and their benign look-alikes.

use super::*;

pub(super) fn root_activity(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let ip = util::public_ip(ctx.rng());
    let a = Actor {
        created: ctx.t - 600,
        account: w,
        user: None,
        role: None,
        session: String::new(),
        key: String::new(),
        ip,
        agent: UA_BROWSER,
    };
    begin(ctx, &a, ctx.org().global_region());
    let t = ctx.t;
    let who = a.who(ctx.em.org);
    let id = console_sign_in(ctx.em, t, w, who, &a.ip, true, true);
    ctx.take(vec![id], t);
    call(ctx, &a, t + 30, "iam.amazonaws.com", "GetAccountSummary", None, None);
    call(ctx, &a, t + 55, "iam.amazonaws.com", "ListAccessKeys", None, None);
    call(ctx, &a, t + 90, "iam.amazonaws.com", "CreateAccessKey", None, None);
}

pub(super) fn console_login_without_mfa(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let name = INTRUDER_USERS.choose(ctx.rng()).copied().unwrap_or("admin").to_string();
    let id = util::iam_id(ctx.rng(), "AIDA");
    let ip = util::public_ip(ctx.rng());
    let a = Actor {
        created: ctx.t - 600,
        account: w,
        user: Some((name, id)),
        role: None,
        session: String::new(),
        key: String::new(),
        ip,
        agent: UA_BROWSER,
    };
    let g = ctx.org().global_region();
    begin(ctx, &a, g);
    let org = ctx.em.org;
    let who = match a.who(org) {
        Who::User { account, name, id, .. } => Who::User { account, name, id, key: None },
        other => other,
    };
    let t = ctx.t;
    let id = console_sign_in(ctx.em, t, w, who, &a.ip, false, true);
    ctx.take(vec![id], t);
    let c = Call::new(t + 20, w, g, "iam.amazonaws.com", "ListUsers", who, &a.ip, UA_CONSOLE);
    ctx.ct(&c);
}

pub(super) const ENUMERATION: &[(&str, &str)] = &[
    ("iam.amazonaws.com", "ListUsers"),
    ("iam.amazonaws.com", "ListRoles"),
    ("iam.amazonaws.com", "GetAccountAuthorizationDetails"),
    ("s3.amazonaws.com", "ListBuckets"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("secretsmanager.amazonaws.com", "ListSecrets"),
    ("ssm.amazonaws.com", "DescribeParameters"),
    ("lambda.amazonaws.com", "ListFunctions20150331"),
    ("rds.amazonaws.com", "DescribeDBInstances"),
    ("kms.amazonaws.com", "ListKeys"),
    ("cloudtrail.amazonaws.com", "DescribeTrails"),
    ("ecr.amazonaws.com", "DescribeRepositories"),
    ("eks.amazonaws.com", "ListClusters"),
    ("organizations.amazonaws.com", "DescribeOrganization"),
    ("dynamodb.amazonaws.com", "ListTables"),
];

pub(super) fn denied_calls(ctx: &mut Ctx<'_, '_>, actor: &Actor, calls: &[(&str, &str)], spacing: (i64, i64)) {
    let arn = actor.arn(ctx.org());
    let mut t = ctx.t;
    for (source, name) in calls {
        let org = ctx.em.org;
        let region = if *source == "iam.amazonaws.com" { org.global_region() } else { ctx.region };
        let (code, msg) = access_denied(source, name, &arn);
        let c = Call::new(
            t,
            actor.account,
            region,
            traffic::source_static(source),
            name,
            actor.who(org),
            &actor.ip,
            actor.agent,
        )
        .error(code, &msg)
        .params("{}");
        ctx.ct(&c);
        t += ctx.rng().random_range(spacing.0..spacing.1);
    }
}

pub(super) fn access_denied_enumeration(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = intruder(ctx, w);
    begin(ctx, &a, 0);
    let mut calls = ENUMERATION.to_vec();
    calls.shuffle(ctx.rng());
    calls.truncate(13);
    denied_calls(ctx, &a, &calls, (5, 25));
}

pub(super) fn few_access_denied(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let org = ctx.em.org;
    let person = org.people.iter().find(|p| p.permission_set == 2).unwrap_or(&org.people[0]);
    let a = person_session(ctx, person, w, 2, UA_CONSOLE);
    begin(ctx, &a, 0);
    let calls = &ENUMERATION[9..13];
    denied_calls(ctx, &a, calls, (60, 120));
}

pub(super) fn outside_account_calls(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    let outside = org.outside_accounts.choose(ctx.rng()).cloned().expect("outside");
    let principal = format!("{}:{}", util::iam_id(ctx.rng(), "AROA"), "exfil");
    let ip = util::public_ip(ctx.rng());
    ctx.account = reg;
    ctx.region = 0;
    ctx.principal = Some(format!("{outside}:{principal}"));
    let who = Who::Account { account: &outside, principal: &principal };
    let t = ctx.t;
    // Cross-account reads of the central registry, then an attempt to assume a role inside.
    let c = Call::new(t, reg, 0, "ecr.amazonaws.com", "DescribeRepositories", who, &ip, UA_CLI)
        .params("{\"maxResults\":100}");
    ctx.ct(&c);
    let repo = central_repo(ctx);
    let r = &org.repos[repo];
    let res = repo_resources(org, r, 0);
    let p = object(200, |j| {
        j.s("repositoryName", &r.name).s("registryId", &org.accounts[reg].id).n("maxResults", 100);
    });
    let c = Call::new(t + 12, reg, 0, "ecr.amazonaws.com", "ListImages", who, &ip, UA_CLI).params(&p).resources(&res);
    ctx.ct(&c);
    let role_arn = format!("arn:aws:iam::{}:role/{}", org.accounts[reg].id, org.accounts[reg].deployer.name);
    let p = object(200, |j| {
        j.s("roleArn", &role_arn).s("roleSessionName", "exfil");
    });
    let (code, msg) =
        access_denied("sts.amazonaws.com", "AssumeRole", &format!("arn:aws:sts::{outside}:assumed-role/ops/exfil"));
    let c = Call::new(t + 40, reg, 0, "sts.amazonaws.com", "AssumeRole", who, &ip, UA_CLI).params(&p).error(code, &msg);
    ctx.ct(&c);
}

pub(super) fn federated_console_login(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let person = org.people.choose(ctx.rng()).expect("people");
    let a = *person.accounts.choose(ctx.rng()).expect("accounts");
    let sso = Sso {
        account: a,
        role: &org.accounts[a].sso[person.permission_set].role,
        session: &person.email,
        key: session_key(ctx.em),
        created: ctx.t,
    };
    ctx.account = a;
    ctx.region = org.global_region();
    ctx.principal = sso.who(org).arn();
    let t = ctx.t;
    // Identity Center enforces MFA at sign-in; CloudTrail still says MFAUsed "No" for the federated session.
    let saml = traffic::saml_sign_in(ctx.em, t, &sso, &person.ip);
    let id = console_login(ctx.em, t + 1, &sso, &person.ip, false);
    ctx.take(vec![saml, id], t + 1);
}

pub(super) fn org_account_assume_role(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let w = org.pick_workload(ctx.rng());
    let reg = org.registry;
    let run = format!("GitHubActions-{}", ctx.rng().random_range(10_000_000u64..99_999_999));
    let principal = format!("{}:{run}", org.ci_role.id);
    let ip = org.ci_runner_ips[0].clone();
    ctx.account = w;
    ctx.region = 0;
    ctx.principal = Some(format!("{}:{principal}", org.accounts[reg].id));
    let role_arn = format!("arn:aws:iam::{}:role/{}", org.accounts[w].id, org.accounts[w].deployer.name);
    let p = object(200, |j| {
        j.s("roleArn", &role_arn).s("roleSessionName", &format!("{run}-deploy"));
    });
    let c = Call::new(
        ctx.t,
        w,
        0,
        "sts.amazonaws.com",
        "AssumeRole",
        Who::Account { account: &org.accounts[reg].id, principal: &principal },
        &ip,
        UA_CI_DOCKER,
    )
    .params(&p)
    .read_only(true);
    ctx.ct(&c);
}
