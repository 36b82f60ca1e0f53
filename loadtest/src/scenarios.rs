//! Injected scenarios: one attack per theme of the rule pack (issue 4), and
//! benign look-alikes that a good pack stays quiet on. Each instance records
//! its principal, account, time range and the ids of its events; the ground
//! truth is those ids, never rule ids, so it does not depend on how rules are
//! written.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::json::{object, Json};
use crate::org::{Org, Role};
use crate::record::{Call, Emitter, EventType, Who};
use crate::traffic::{
    self, access_denied, console_login, container_definitions, inspector_finding, pull_image, repo_arn, repo_resources,
    session_key, task_definition_params, Sso, UA_BROWSER, UA_CI, UA_CI_DOCKER, UA_CLI, UA_CONSOLE, UA_CONTAINERD,
    UA_CRED_PROVIDER,
};
use crate::util::{self, Rand};

mod coverage;
use coverage::*;

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
            (None, Some(role)) => Who::Role {
                account,
                role,
                session: &self.session,
                key: &self.key,
                mfa: false,
                created: self.created,
                web_identity: None,
                invoked_by: None,
            },
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
    let org = ctx.em.org;
    let person = org.people.choose(ctx.rng()).expect("people");
    let role = org.accounts[account].sso[permission_set].role.clone();
    let key = session_key(ctx.em);
    let ip = util::public_ip(ctx.rng());
    Actor {
        created: ctx.t - 600,
        account,
        user: None,
        role: Some(role),
        session: person.email.clone(),
        key,
        ip,
        agent: UA_CLI,
    }
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
    let role = org.accounts[account].sso[0].role.clone();
    let key = session_key(ctx.em);
    Actor {
        created: ctx.t - 600,
        account,
        user: None,
        role: Some(role),
        session: person.email.clone(),
        key,
        ip: person.ip.clone(),
        agent: if ctx.rng().random_bool(0.5) { UA_CONSOLE } else { UA_CLI },
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

fn policy_statement(j: &mut Json, sid: &str, principal: &str, actions: &[&str], org_condition: Option<&str>) {
    j.obj().s("Sid", sid).s("Effect", "Allow");
    if principal == "*" {
        j.s("Principal", "*");
    } else {
        j.key("Principal").obj().s("AWS", principal).end();
    }
    j.strs("Action", actions);
    if let Some(org_id) = org_condition {
        j.key("Condition").obj().key("StringEquals").obj().s("aws:PrincipalOrgID", org_id).end().end();
    }
    j.end();
}

fn policy(principal: &str, actions: &[&str], org_condition: Option<&str>) -> String {
    object(400, |j| {
        j.s("Version", "2012-10-17");
        j.key("Statement").arr();
        policy_statement(j, "AllowPull", principal, actions, org_condition);
        j.end_arr();
    })
}

const PULL_ACTIONS: &[&str] = &["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"];

fn set_repository_policy(ctx: &mut Ctx<'_, '_>, actor: &Actor, t: i64, repo: usize, policy_text: &str) {
    let org = ctx.em.org;
    let (name, reg) = (&org.repos[repo].name, &org.accounts[org.repos[repo].account].id);
    let p = object(200 + policy_text.len(), |j| {
        j.s("repositoryName", name).s("registryId", reg).s("policyText", policy_text).b("force", false);
    });
    let r = object(200 + policy_text.len(), |j| {
        j.s("registryId", reg).s("repositoryName", name).s("policyText", policy_text);
    });
    ecr_call(ctx, actor, t, "SetRepositoryPolicy", &p, Some(&r), Some(repo));
}

fn repo_params(org: &Org, repo: usize) -> String {
    let r = &org.repos[repo];
    object(120, |j| {
        j.s("repositoryName", &r.name).s("registryId", &org.accounts[r.account].id);
    })
}

// ------------------------------------------------------------ attacks

fn layer_download_unexpected(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = intruder(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let layers = ctx.org().repos[repo].layers.len().min(5);
    let who = a.who(ctx.em.org);
    let ids = pull_image(
        ctx.em,
        ctx.t,
        reg,
        0,
        repo,
        who,
        &a.ip,
        "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0-kali3-amd64 os/linux arch/amd64",
        layers,
        true,
    );
    let t = ctx.t;
    ctx.take(ids, t + layers as i64 * 2);
}

/// A node role's credentials (taken from instance metadata) used from the
/// internet: the principal is an expected puller, the network is not.
fn stolen_node_credentials(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let Some(w) = (0..org.accounts.len()).find(|&i| !org.accounts[i].clusters.is_empty()) else {
        return;
    };
    let c = &org.accounts[w].clusters[0];
    let node = c.nodes.first().expect("a cluster has nodes");
    let key = session_key(ctx.em);
    let ip = util::public_ip(ctx.rng());
    ctx.account = w;
    ctx.region = c.region;
    let who = Who::Role {
        account: &org.accounts[w].id,
        role: &c.node_role,
        session: &node.instance_id,
        key: &key,
        mfa: false,
        created: ctx.t - 3 * 3600,
        web_identity: None,
        invoked_by: None,
    };
    ctx.principal = who.arn();
    let repo = central_repo(ctx);
    let layers = ctx.org().repos[repo].layers.len().min(4);
    let ids = pull_image(ctx.em, ctx.t, w, c.region, repo, who, &ip, UA_CLI, layers, true);
    let t = ctx.t;
    ctx.take(ids, t + layers as i64 * 2);
}

fn bulk_layer_download(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = hijacked_sso(ctx, reg, 3);
    begin(ctx, &a, 0);
    let mut t = ctx.t;
    let mut total = 0;
    while total < 64 {
        let repo = central_repo(ctx);
        let n = ctx.org().repos[repo].layers.len();
        let who = a.who(ctx.em.org);
        let ids = pull_image(ctx.em, t, reg, 0, repo, who, &a.ip, UA_CONTAINERD, n, total == 0);
        total += n;
        t += n as i64 + 3;
        ctx.take(ids, t);
    }
    // A second copy of the largest image: the same layers again, as tools do.
    let repo = central_repo(ctx);
    let who = a.who(ctx.em.org);
    let n = ctx.org().repos[repo].layers.len();
    let ids = pull_image(ctx.em, t, reg, 0, repo, who, &a.ip, UA_CONTAINERD, n, false);
    ctx.take(ids, t + n as i64 * 2);
}

fn many_repositories(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = intruder(ctx, reg);
    begin(ctx, &a, 0);
    let org = ctx.em.org;
    let mut central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == reg).collect();
    let k = central.len().min(14);
    let (picked, _) = central.partial_shuffle(ctx.rng(), k);
    let picked: Vec<usize> = picked.to_vec();
    let mut t = ctx.t;
    for (i, repo) in picked.into_iter().enumerate() {
        let who = a.who(ctx.em.org);
        let ids = pull_image(ctx.em, t, reg, 0, repo, who, &a.ip, a.agent, 1 + i % 2, i == 0);
        ctx.take(ids, t + 3);
        t += ctx.rng().random_range(20..35);
    }
}

fn scan_on_push_disabled(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let (name, id) = (&org.repos[repo].name, &org.accounts[reg].id);
    let p = object(160, |j| {
        j.s("repositoryName", name).s("registryId", id);
        j.key("imageScanningConfiguration").obj().b("scanOnPush", false).end();
    });
    let r = object(160, |j| {
        j.s("registryId", id).s("repositoryName", name);
        j.key("imageScanningConfiguration").obj().b("scanOnPush", false).end();
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutImageScanningConfiguration", &p, Some(&r), Some(repo));
}

fn tag_mutability(ctx: &mut Ctx<'_, '_>, value: &str) {
    let reg = ctx.org().registry;
    let a = if value == "MUTABLE" { attacker(ctx, reg) } else { engineer(ctx, reg) };
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let (name, id) = (&org.repos[repo].name, &org.accounts[reg].id);
    let p = object(160, |j| {
        j.s("repositoryName", name).s("registryId", id).s("imageTagMutability", value);
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutImageTagMutability", &p, Some(&p), Some(repo));
}

fn lifecycle_policy_deleted(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let p = repo_params(org, repo);
    let text = "{\"rules\":[{\"rulePriority\":1,\"description\":\"expire untagged\",\"selection\":{\"tagStatus\":\"untagged\",\"countType\":\"sinceImagePushed\",\"countUnit\":\"days\",\"countNumber\":14},\"action\":{\"type\":\"expire\"}}]}";
    let r = object(400, |j| {
        j.s("registryId", &org.accounts[reg].id)
            .s("repositoryName", &org.repos[repo].name)
            .s("lifecyclePolicyText", text);
        j.s("lastEvaluatedAt", "Jan 1, 1970, 12:00:00 AM");
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "DeleteLifecyclePolicy", &p, Some(&r), Some(repo));
}

fn public_repository_policy(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let text = policy("*", PULL_ACTIONS, None);
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

fn cross_account_policy_outside(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let outside = ctx.org().outside_accounts.choose(ctx.rng()).cloned().expect("outside");
    let text = policy(&format!("arn:aws:iam::{outside}:root"), PULL_ACTIONS, None);
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

fn registry_policy(ctx: &mut Ctx<'_, '_>, grantee: &str) {
    let reg = ctx.org().registry;
    let a =
        if ctx.org().outside_accounts.iter().any(|o| o == grantee) { attacker(ctx, reg) } else { engineer(ctx, reg) };
    begin(ctx, &a, 0);
    let org = ctx.em.org;
    let region = &org.regions[0];
    let reg_id = &org.accounts[reg].id;
    let text = object(500, |j| {
        j.s("Version", "2012-10-17");
        j.key("Statement").arr().obj();
        j.s("Sid", "ReplicationAccess").s("Effect", "Allow");
        j.key("Principal").obj().s("AWS", &format!("arn:aws:iam::{grantee}:root")).end();
        j.strs("Action", &["ecr:CreateRepository", "ecr:ReplicateImage"]);
        j.s("Resource", &format!("arn:aws:ecr:{region}:{reg_id}:repository/*"));
        j.end().end_arr();
    });
    let p = object(600, |j| {
        j.s("policyText", &text);
    });
    let r = object(600, |j| {
        j.s("registryId", reg_id).s("policyText", &text);
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutRegistryPolicy", &p, Some(&r), None);
}

fn replication(ctx: &mut Ctx<'_, '_>, outside: bool) {
    let reg = ctx.org().registry;
    let a = if outside { attacker(ctx, reg) } else { engineer(ctx, reg) };
    begin(ctx, &a, 0);
    let org = ctx.em.org;
    let dest_account = if outside {
        org.outside_accounts.choose(ctx.rng()).cloned().expect("outside")
    } else {
        org.accounts[org.pick_workload(ctx.rng())].id.clone()
    };
    let dest_region = if org.workload_regions > 1 { org.regions[1].clone() } else { "us-west-2".to_string() };
    let cfg = |j: &mut Json| {
        j.key("replicationConfiguration").obj().key("rules").arr().obj();
        j.key("destinations").arr().obj().s("region", &dest_region).s("registryId", &dest_account).end().end_arr();
        j.key("repositoryFilters").arr().obj().s("filter", "payments").s("filterType", "PREFIX_MATCH").end().end_arr();
        j.end().end_arr().end();
    };
    let p = object(400, |j| cfg(j));
    let r = object(400, |j| {
        cfg(j);
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutReplicationConfiguration", &p, Some(&r), None);
}

fn pull_through_cache(ctx: &mut Ctx<'_, '_>, upstream: &str) {
    let reg = ctx.org().registry;
    let approved = ctx.org().approved_upstreams.contains(&upstream);
    let a = if approved { engineer(ctx, reg) } else { attacker(ctx, reg) };
    begin(ctx, &a, 0);
    let org = ctx.em.org;
    let reg_id = &org.accounts[reg].id;
    let prefix = if approved { "ecr-public" } else { "mirror" };
    let secret = format!(
        "arn:aws:secretsmanager:{}:{reg_id}:secret:ecr-pullthroughcache/{prefix}-{}",
        org.regions[0],
        util::lower_alnum(ctx.rng(), 6)
    );
    let p = object(300, |j| {
        j.s("ecrRepositoryPrefix", prefix).s("upstreamRegistryUrl", upstream);
        if !approved {
            j.s("credentialArn", &secret);
        }
    });
    let created = util::inspector_time(ctx.t);
    let r = object(400, |j| {
        j.s("ecrRepositoryPrefix", prefix).s("upstreamRegistryUrl", upstream).s("createdAt", &created);
        j.s("registryId", reg_id)
            .s("upstreamRegistry", if approved { "ecr-public" } else { "github-container-registry" });
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "CreatePullThroughCacheRule", &p, Some(&r), None);
}

fn repository_deletion(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let r = &org.repos[repo];
    let reg_id = &org.accounts[reg].id;
    let p = object(160, |j| {
        j.s("repositoryName", &r.name).s("registryId", reg_id).b("force", true);
    });
    let resp = object(400, |j| {
        j.key("repository")
            .obj()
            .s("repositoryArn", &repo_arn(org, r, 0))
            .s("registryId", reg_id)
            .s("repositoryName", &r.name);
        j.s("repositoryUri", &format!("{}/{}", org.registry_host(reg, 0), r.name))
            .s("imageTagMutability", "IMMUTABLE")
            .end();
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "DeleteRepository", &p, Some(&resp), Some(repo));
}

fn batch_delete(ctx: &mut Ctx<'_, '_>, actor: &Actor, t: i64, repo: usize, count: usize, agent: &'static str) {
    let org = ctx.em.org;
    let r = &org.repos[repo];
    let reg_id = &org.accounts[r.account].id;
    let digests: Vec<String> = (0..count).map(|_| util::digest(ctx.rng())).collect();
    let ids = |j: &mut Json| {
        j.key("imageIds").arr();
        for d in &digests {
            j.obj().s("imageDigest", d).end();
        }
        j.end_arr();
    };
    let p = object(200 + 90 * count, |j| {
        j.s("repositoryName", &r.name).s("registryId", reg_id);
        ids(j);
    });
    let resp = object(200 + 90 * count, |j| {
        ids(j);
        j.key("failures").arr().end_arr();
    });
    let res = repo_resources(org, r, ctx.region);
    let c =
        Call::new(t, r.account, ctx.region, "ecr.amazonaws.com", "BatchDeleteImage", actor.who(org), &actor.ip, agent)
            .params(&p)
            .response(&resp)
            .resources(&res)
            .read_only(false);
    ctx.ct(&c);
}

fn mass_image_deletion(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let mut t = ctx.t;
    for _ in 0..3 {
        let repo = central_repo(ctx);
        let n = ctx.rng().random_range(20..41);
        let agent = a.agent;
        batch_delete(ctx, &a, t, repo, n, agent);
        t += ctx.rng().random_range(20..60);
    }
}

fn kms_key_call(ctx: &mut Ctx<'_, '_>, actor: &Actor, t: i64, name: &'static str, extra: Option<(&str, i64)>) {
    let org = ctx.em.org;
    let acct = &org.accounts[actor.account];
    let key_arn = format!("arn:aws:kms:{}:{}:key/{}", org.regions[ctx.region], acct.id, acct.kms_key);
    let p = object(160, |j| {
        j.s("keyId", &key_arn);
        if let Some((k, v)) = extra {
            j.n(k, v);
        }
    });
    let r = (name == "ScheduleKeyDeletion").then(|| {
        object(200, |j| {
            j.s("keyId", &key_arn)
                .s("deletionDate", &util::inspector_time(t + 7 * 86_400))
                .s("keyState", "PendingDeletion")
                .n("pendingWindowInDays", 7);
        })
    });
    let res = format!("[{{\"accountId\":\"{}\",\"type\":\"AWS::KMS::Key\",\"ARN\":\"{key_arn}\"}}]", acct.id);
    let mut c =
        Call::new(t, actor.account, ctx.region, "kms.amazonaws.com", name, actor.who(org), &actor.ip, actor.agent)
            .params(&p)
            .resources(&res)
            .read_only(false);
    if let Some(r) = &r {
        c = c.response(r);
    }
    ctx.ct(&c);
}

fn encryption_changed(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = attacker(ctx, reg);
    begin(ctx, &a, 0);
    let t = ctx.t;
    // New repositories created without the customer key, then the key itself disabled.
    let p = object(300, |j| {
        j.s("prefix", "ROOT");
        j.key("encryptionConfiguration").obj().s("encryptionType", "AES256").end();
        j.strs("appliedFor", &["REPLICATION", "PULL_THROUGH_CACHE"]);
    });
    ecr_call(ctx, &a, t, "UpdateRepositoryCreationTemplate", &p, None, None);
    kms_key_call(ctx, &a, t + 40, "DisableKey", None);
    kms_key_call(ctx, &a, t + 75, "ScheduleKeyDeletion", Some(("pendingWindowInDays", 7)));
}

fn critical_image_scan(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    ctx.account = reg;
    let repo = central_repo(ctx);
    let r = &org.repos[repo];
    let digest = util::digest(ctx.rng());
    let crit = ctx.rng().random_range(1..6);
    let high = ctx.rng().random_range(3..20);
    let d = object(400, |j| {
        j.s("scan-status", "COMPLETE").s("repository-name", &r.name);
        j.key("finding-severity-counts").obj().n("CRITICAL", crit).n("HIGH", high).n("MEDIUM", 12).n("LOW", 7).end();
        j.s("image-digest", &digest).strs("image-tags", &[r.tag.as_str()]);
    });
    let arn = repo_arn(org, r, 0);
    let t = ctx.t;
    let id = ctx.em.eventbridge(t, reg, 0, "aws.ecr", "ECR Image Scan", &[&arn], &d);
    ctx.take(vec![id], t);
}

fn critical_inspector_finding(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    ctx.account = reg;
    let repo = central_repo(ctx);
    let (digest, tag) = (org.repos[repo].digest.clone(), org.repos[repo].tag.clone());
    let t = ctx.t;
    let id = inspector_finding(ctx.em, t, reg, 0, repo, &digest, &tag, "CRITICAL");
    ctx.take(vec![id], t);
}

/// Registers a task definition in a workload account.
#[allow(clippy::too_many_arguments)]
fn register_task_definition(
    ctx: &mut Ctx<'_, '_>,
    actor: &Actor,
    t: i64,
    containers: &str,
    network: &str,
    extra: &[(&str, &str)],
) {
    let org = ctx.em.org;
    let w = actor.account;
    let acct = &org.accounts[w];
    let svc = acct.services.first().expect("a workload account has services");
    let p = task_definition_params(org, w, svc, containers, network, extra);
    let revision = ctx.rng().random_range(2..400);
    let arn = format!("arn:aws:ecs:{}:{}:task-definition/{}:{revision}", org.regions[ctx.region], acct.id, svc.name);
    let r = object(300, |j| {
        j.key("taskDefinition")
            .obj()
            .s("taskDefinitionArn", &arn)
            .s("family", &svc.name)
            .n("revision", revision)
            .s("status", "ACTIVE")
            .end();
    });
    let c = Call::new(
        t,
        w,
        ctx.region,
        "ecs.amazonaws.com",
        "RegisterTaskDefinition",
        actor.who(org),
        &actor.ip,
        actor.agent,
    )
    .params(&p)
    .response(&r)
    .read_only(false);
    ctx.ct(&c);
}

fn single_container(image: &str, name: &str, privileged: bool, env: &[(&str, &str)]) -> String {
    let mut j = Json::with_capacity(600);
    j.arr().obj();
    j.s("name", name).s("image", image).n("cpu", 256).n("memory", 512).b("essential", true);
    if privileged {
        j.b("privileged", true);
        j.key("linuxParameters").obj().key("capabilities").obj().strs("add", &["SYS_ADMIN", "NET_ADMIN"]).end().end();
        j.key("mountPoints")
            .arr()
            .obj()
            .s("sourceVolume", "host-root")
            .s("containerPath", "/host")
            .b("readOnly", false)
            .end()
            .end_arr();
    }
    j.key("environment").arr();
    for (k, v) in env {
        j.obj().s("name", k).s("value", v).end();
    }
    j.end_arr();
    j.end().end_arr();
    j.into_string()
}

fn workload_region(ctx: &Ctx<'_, '_>, w: usize) -> usize {
    ctx.org().accounts[w].services.first().map(|s| s.region).unwrap_or(0)
}

fn privileged_task_definition(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = attacker(ctx, w);
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let org = ctx.em.org;
    let repo = &org.repos[org.accounts[w].services[0].repo];
    let image = format!("{}/{}:{}", org.registry_host(repo.account, region), repo.name, repo.tag);
    let containers = single_container(&image, "debug", true, &[]);
    let t = ctx.t;
    register_task_definition(ctx, &a, t, &containers, "host", &[("pidMode", "host"), ("ipcMode", "host")]);
}

fn plaintext_aws_key(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    // A developer's own session from the office: a mistake, still a leaked key.
    let org = ctx.em.org;
    let devs: Vec<_> = org.people.iter().filter(|p| p.permission_set == 3 || p.permission_set == 1).collect();
    let person = devs.choose(ctx.rng()).copied().unwrap_or(&org.people[0]);
    let role = org.accounts[w].sso[3].role.clone();
    let key = session_key(ctx.em);
    let a = Actor {
        created: ctx.t - 600,
        account: w,
        user: None,
        role: Some(role),
        session: person.email.clone(),
        key,
        ip: person.ip.clone(),
        agent: UA_BROWSER,
    };
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let svc = &org.accounts[w].services[0];
    let repo = &org.repos[svc.repo];
    let access = util::iam_id(ctx.rng(), "AKIA");
    let secret: String = (0..40)
        .map(|_| {
            *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".choose(ctx.rng()).unwrap_or(&b'x')
                as char
        })
        .collect();
    let containers = container_definitions(
        org,
        w,
        region,
        repo,
        &repo.tag,
        &svc.secrets,
        &[("AWS_ACCESS_KEY_ID", &access), ("AWS_SECRET_ACCESS_KEY", &secret)],
    );
    let t = ctx.t;
    register_task_definition(ctx, &a, t, &containers, "awsvpc", &[]);
}

fn unapproved_registry_image(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = attacker(ctx, w);
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let containers = single_container(
        "docker.io/kdevtools/xmr-stak:2.10.8",
        "metrics-agent",
        false,
        &[("POOL", "pool.example.net:443")],
    );
    let t = ctx.t;
    register_task_definition(ctx, &a, t, &containers, "awsvpc", &[]);
}

fn execute_command(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = hijacked_sso(ctx, w, 0);
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let org = ctx.em.org;
    let acct = &org.accounts[w];
    let svc = &acct.services[0];
    let (task, _) = &svc.tasks[0];
    let cluster_arn = format!("arn:aws:ecs:{}:{}:cluster/{}", org.regions[region], acct.id, svc.cluster);
    let task_arn = format!("arn:aws:ecs:{}:{}:task/{}/{task}", org.regions[region], acct.id, svc.cluster);
    let p = object(300, |j| {
        j.s("cluster", &svc.cluster)
            .s("container", &svc.name)
            .s("command", "/bin/sh")
            .b("interactive", true)
            .s("task", task);
    });
    let session = format!("ecs-execute-command-{}", util::hex(ctx.rng(), 17));
    let container_id = util::uuid(ctx.rng());
    let r = object(600, |j| {
        j.s("clusterArn", &cluster_arn).s("containerArn", &format!("{task_arn}/{container_id}"));
        j.s("containerName", &svc.name).b("interactive", true);
        j.key("session")
            .obj()
            .s("sessionId", &session)
            .s(
                "streamUrl",
                &format!("wss://ssmmessages.{}.amazonaws.com/v1/data-channel/{session}", org.regions[region]),
            )
            .s("tokenValue", "HIDDEN_DUE_TO_SECURITY_REASONS")
            .end();
        j.s("taskArn", &task_arn);
    });
    let t = ctx.t;
    call(ctx, &a, t, "ecs.amazonaws.com", "ExecuteCommand", Some(&p), Some(&r));
}

fn trail_arn(org: &Org, account: usize) -> String {
    format!("arn:aws:cloudtrail:{}:{}:trail/{}", org.regions[0], org.accounts[account].id, org.accounts[account].trail)
}

fn stop_then_delete_trail(ctx: &mut Ctx<'_, '_>) {
    let a_i = ctx.org().management;
    let a = intruder(ctx, a_i);
    begin(ctx, &a, 0);
    let trail = trail_arn(ctx.org(), a_i);
    let p = object(160, |j| {
        j.s("name", &trail);
    });
    let t = ctx.t;
    call(ctx, &a, t, "cloudtrail.amazonaws.com", "StopLogging", Some(&p), None);
    let gap = ctx.rng().random_range(120..600);
    call(ctx, &a, t + gap, "cloudtrail.amazonaws.com", "DeleteTrail", Some(&p), None);
}

fn event_selectors(ctx: &mut Ctx<'_, '_>, drop_management: bool) {
    let a_i = ctx.org().management;
    let a = if drop_management { attacker(ctx, a_i) } else { engineer(ctx, a_i) };
    begin(ctx, &a, 0);
    let trail = trail_arn(ctx.org(), a_i);
    let sel = |j: &mut Json| {
        j.key("eventSelectors").arr().obj();
        j.s("readWriteType", "All").b("includeManagementEvents", !drop_management);
        j.key("dataResources").arr();
        if !drop_management {
            j.obj().s("type", "AWS::S3::Object").strs("values", &["arn:aws:s3:::payments-exports/"]).end();
        }
        j.end_arr();
        j.strs("excludeManagementEventSources", &[]);
        j.end().end_arr();
    };
    let p = object(400, |j| {
        j.s("trailName", &trail);
        sel(j);
    });
    let r = object(400, |j| {
        j.s("trailARN", &trail);
        sel(j);
    });
    let t = ctx.t;
    call(ctx, &a, t, "cloudtrail.amazonaws.com", "PutEventSelectors", Some(&p), Some(&r));
}

fn config_recorder_stopped(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let a = attacker(ctx, w);
    begin(ctx, &a, 0);
    let t = ctx.t;
    call(
        ctx,
        &a,
        t,
        "config.amazonaws.com",
        "StopConfigurationRecorder",
        Some("{\"configurationRecorderName\":\"default\"}"),
        None,
    );
}

fn config_recorder_updated(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    let org = ctx.em.org;
    let role = format!(
        "arn:aws:iam::{}:role/aws-service-role/config.amazonaws.com/AWSServiceRoleForConfig",
        org.accounts[w].id
    );
    let p = object(300, |j| {
        j.key("configurationRecorder").obj().s("name", "default").s("roleARN", &role);
        j.key("recordingGroup").obj().b("allSupported", true).b("includeGlobalResourceTypes", true).end().end();
    });
    let t = ctx.t;
    call(ctx, &a, t, "config.amazonaws.com", "PutConfigurationRecorder", Some(&p), None);
    call(
        ctx,
        &a,
        t + 5,
        "config.amazonaws.com",
        "StartConfigurationRecorder",
        Some("{\"configurationRecorderName\":\"default\"}"),
        None,
    );
}

fn securityhub_disabled(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let a = attacker(ctx, w);
    begin(ctx, &a, 0);
    let t = ctx.t;
    call(ctx, &a, t, "securityhub.amazonaws.com", "DisableSecurityHub", Some("{}"), None);
}

fn securityhub_standard_enabled(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().security;
    let a = engineer(ctx, w);
    begin(ctx, &a, 0);
    let region = ctx.org().regions[0].clone();
    let p = object(200, |j| {
        j.key("StandardsSubscriptionRequests").arr().obj();
        j.s(
            "StandardsArn",
            &format!("arn:aws:securityhub:{region}::standards/aws-foundational-security-best-practices/v/1.0.0"),
        );
        j.end().end_arr();
    });
    let t = ctx.t;
    call(ctx, &a, t, "securityhub.amazonaws.com", "BatchEnableStandards", Some(&p), None);
}

fn guardduty_detector(ctx: &mut Ctx<'_, '_>, delete: bool) {
    let w = ctx.org().pick_account(ctx.rng());
    let a = if delete { attacker(ctx, w) } else { engineer(ctx, w) };
    begin(ctx, &a, 0);
    let detector = util::hex(ctx.rng(), 32);
    let p = if delete {
        object(80, |j| {
            j.s("detectorId", &detector);
        })
    } else {
        object(300, |j| {
            j.s("detectorId", &detector).b("enable", true);
            j.key("features").arr().obj().s("name", "RUNTIME_MONITORING").s("status", "ENABLED").end().end_arr();
        })
    };
    let t = ctx.t;
    call(
        ctx,
        &a,
        t,
        "guardduty.amazonaws.com",
        if delete { "DeleteDetector" } else { "UpdateDetector" },
        Some(&p),
        None,
    );
}

fn eventbridge_rule_disabled(ctx: &mut Ctx<'_, '_>, security: bool) {
    let w = if security { ctx.org().security } else { ctx.org().pick_workload(ctx.rng()) };
    let a = if security { attacker(ctx, w) } else { engineer(ctx, w) };
    begin(ctx, &a, 0);
    let name = if security { "securityhub-findings-to-soc" } else { "nightly-report-trigger" };
    let p = object(120, |j| {
        j.s("name", name).s("eventBusName", "default");
    });
    let t = ctx.t;
    call(ctx, &a, t, "events.amazonaws.com", "DisableRule", Some(&p), None);
}

fn vpc_endpoint_policy(ctx: &mut Ctx<'_, '_>, attack: bool) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = if attack { attacker(ctx, w) } else { engineer(ctx, w) };
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let org = ctx.em.org;
    let vpce = org.accounts[w].vpce_ecr.clone();
    let t = ctx.t;
    if attack {
        let doc = object(300, |j| {
            j.s("Version", "2012-10-17");
            j.key("Statement")
                .arr()
                .obj()
                .s("Effect", "Allow")
                .s("Principal", "*")
                .s("Action", "*")
                .s("Resource", "*")
                .end()
                .end_arr();
        });
        let p = object(400, |j| {
            j.key("ModifyVpcEndpointRequest").obj().s("VpcEndpointId", &vpce).s("PolicyDocument", &doc).end();
        });
        let request = util::uuid(ctx.rng());
        let r = object(200, |j| {
            j.key("ModifyVpcEndpointResponse")
                .obj()
                .s("xmlns", "http://ec2.amazonaws.com/doc/2016-11-15/")
                .s("requestId", &request)
                .b("return", true)
                .end();
        });
        call(ctx, &a, t, "ec2.amazonaws.com", "ModifyVpcEndpoint", Some(&p), Some(&r));
    } else {
        let doc = policy("*", PULL_ACTIONS, Some(&org.id));
        let service = format!("com.amazonaws.{}.ecr.dkr", org.regions[region]);
        let vpc = format!("vpc-0{}", util::hex(ctx.rng(), 16));
        let p = object(600, |j| {
            j.key("CreateVpcEndpointRequest")
                .obj()
                .s("VpcId", &vpc)
                .s("ServiceName", &service)
                .s("VpcEndpointType", "Interface");
            j.s("PolicyDocument", &doc).b("PrivateDnsEnabled", true).end();
        });
        call(ctx, &a, t, "ec2.amazonaws.com", "CreateVpcEndpoint", Some(&p), None);
    }
}

fn root_activity(ctx: &mut Ctx<'_, '_>) {
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
    let org = ctx.em.org;
    let add = object(160, |j| {
        j.s("LoginTo", "https://console.aws.amazon.com/console/home").s("MobileVersion", "No").s("MFAUsed", "Yes");
    });
    let mut c =
        Call::new(ctx.t, w, org.global_region(), "signin.amazonaws.com", "ConsoleLogin", a.who(org), &a.ip, UA_BROWSER)
            .response("{\"ConsoleLogin\":\"Success\"}")
            .host("signin.aws.amazon.com")
            .read_only(false);
    c.event_type = EventType::ConsoleSignIn;
    c.additional = Some(&add);
    ctx.ct(&c);
    let t = ctx.t;
    call(ctx, &a, t + 30, "iam.amazonaws.com", "GetAccountSummary", None, None);
    call(ctx, &a, t + 55, "iam.amazonaws.com", "ListAccessKeys", None, None);
    call(ctx, &a, t + 90, "iam.amazonaws.com", "CreateAccessKey", None, None);
}

fn console_login_without_mfa(ctx: &mut Ctx<'_, '_>) {
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
    let add = object(160, |j| {
        j.s("LoginTo", "https://console.aws.amazon.com/console/home").s("MobileVersion", "No").s("MFAUsed", "No");
    });
    let mut c = Call::new(ctx.t, w, g, "signin.amazonaws.com", "ConsoleLogin", who, &a.ip, UA_BROWSER)
        .response("{\"ConsoleLogin\":\"Success\"}")
        .host("signin.aws.amazon.com")
        .read_only(false);
    c.event_type = EventType::ConsoleSignIn;
    c.additional = Some(&add);
    ctx.ct(&c);
    let t = ctx.t;
    let c = Call::new(t + 20, w, g, "iam.amazonaws.com", "ListUsers", who, &a.ip, UA_CONSOLE);
    ctx.ct(&c);
}

const ENUMERATION: &[(&str, &str)] = &[
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

fn denied_calls(ctx: &mut Ctx<'_, '_>, actor: &Actor, calls: &[(&str, &str)], spacing: (i64, i64)) {
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

fn access_denied_enumeration(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let a = intruder(ctx, w);
    begin(ctx, &a, 0);
    let mut calls = ENUMERATION.to_vec();
    calls.shuffle(ctx.rng());
    calls.truncate(13);
    denied_calls(ctx, &a, &calls, (5, 25));
}

fn few_access_denied(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    let org = ctx.em.org;
    let person = org.people.iter().find(|p| p.permission_set == 2).unwrap_or(&org.people[0]);
    let role = org.accounts[w].sso[2].role.clone();
    let key = session_key(ctx.em);
    let a = Actor {
        created: ctx.t - 600,
        account: w,
        user: None,
        role: Some(role),
        session: person.email.clone(),
        key,
        ip: person.ip.clone(),
        agent: UA_CONSOLE,
    };
    begin(ctx, &a, 0);
    let calls = &ENUMERATION[9..13];
    denied_calls(ctx, &a, calls, (60, 120));
}

fn outside_account_calls(ctx: &mut Ctx<'_, '_>) {
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

// ---------------------------------------------------------- look-alikes

fn enable_scan_on_push(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = engineer(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let (name, id) = (&org.repos[repo].name, &org.accounts[reg].id);
    let p = object(160, |j| {
        j.s("repositoryName", name).s("registryId", id);
        j.key("imageScanningConfiguration").obj().b("scanOnPush", true).end();
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutImageScanningConfiguration", &p, Some(&p), Some(repo));
}

fn lifecycle_policy_updated(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = engineer(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let text = "{\"rules\":[{\"rulePriority\":1,\"description\":\"keep 50 release images\",\"selection\":{\"tagStatus\":\"tagged\",\"tagPrefixList\":[\"v\"],\"countType\":\"imageCountMoreThan\",\"countNumber\":50},\"action\":{\"type\":\"expire\"}}]}";
    let p = object(400, |j| {
        j.s("repositoryName", &org.repos[repo].name)
            .s("registryId", &org.accounts[reg].id)
            .s("lifecyclePolicyText", text);
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutLifecyclePolicy", &p, Some(&p), Some(repo));
}

fn org_restricted_policy(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = engineer(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let text = policy("*", PULL_ACTIONS, Some(&ctx.org().id.clone()));
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

fn policy_to_org_account(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = engineer(ctx, reg);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let w = ctx.org().pick_workload(ctx.rng());
    let text = policy(&format!("arn:aws:iam::{}:root", ctx.org().accounts[w].id), PULL_ACTIONS, None);
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

fn single_image_cleanup(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    let key = session_key(ctx.em);
    let ip = org.ci_runner_ips[0].clone();
    let a = Actor {
        created: ctx.t - 600,
        account: reg,
        user: None,
        role: Some(org.ci_role.clone()),
        session: format!("GitHubActions-{}", ctx.rng().random_range(10_000_000u64..99_999_999)),
        key,
        ip,
        agent: UA_CI,
    };
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let n = ctx.rng().random_range(1..3);
    let t = ctx.t;
    batch_delete(ctx, &a, t, repo, n, UA_CI);
}

fn kms_rotation_enabled(ctx: &mut Ctx<'_, '_>) {
    let reg = ctx.org().registry;
    let a = engineer(ctx, reg);
    begin(ctx, &a, 0);
    let t = ctx.t;
    kms_key_call(ctx, &a, t, "EnableKeyRotation", None);
}

fn task_definition_with_secrets(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let w = org.pick_workload(ctx.rng());
    let acct = &org.accounts[w];
    let key = session_key(ctx.em);
    let ip = org.ci_runner_ips[1].clone();
    let a = Actor {
        created: ctx.t - 600,
        account: w,
        user: None,
        role: Some(acct.deployer.clone()),
        session: format!("GitHubActions-{}-deploy", ctx.rng().random_range(10_000_000u64..99_999_999)),
        key,
        ip,
        agent: traffic::UA_CI_ECS,
    };
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let svc = &acct.services[0];
    let repo = &org.repos[svc.repo];
    let secret_arn = format!("arn:aws:secretsmanager:{}:{}:secret:{}", org.regions[region], acct.id, svc.secrets[0]);
    // Secret-looking names whose values are references, not secrets.
    let containers = container_definitions(
        org,
        w,
        region,
        repo,
        &repo.tag,
        &svc.secrets,
        &[
            ("DB_PASSWORD_SECRET_ARN", &secret_arn),
            ("API_TOKEN_PARAMETER", "/payments/api-token"),
            ("AWS_DEFAULT_REGION", &org.regions[region]),
        ],
    );
    let t = ctx.t;
    register_task_definition(ctx, &a, t, &containers, "awsvpc", &[]);
}

fn node_scale_out(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let w = org.pick_workload(ctx.rng());
    let acct = &org.accounts[w];
    let c = &acct.clusters[0];
    let instance = util::instance_id(ctx.rng());
    let ip = format!("10.{}.{}.{}", acct.net, ctx.rng().random_range(0..64), ctx.rng().random_range(4..250));
    let key = session_key(ctx.em);
    ctx.account = w;
    ctx.region = c.region;
    let who = Who::Role {
        account: &acct.id,
        role: &c.node_role,
        session: &instance,
        key: &key,
        mfa: false,
        created: ctx.t,
        web_identity: None,
        invoked_by: None,
    };
    ctx.principal = who.arn();
    let mut central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == org.registry).collect();
    let k = central.len().min(12);
    let (picked, _) = central.partial_shuffle(ctx.rng(), k);
    let picked = picked.to_vec();
    let mut t = ctx.t;
    for (i, repo) in picked.into_iter().enumerate() {
        let n = org.repos[repo].layers.len();
        let ids = pull_image(ctx.em, t, w, c.region, repo, who, &ip, UA_CRED_PROVIDER, n, i == 0);
        ctx.take(ids, t + n as i64);
        t += ctx.rng().random_range(5..15);
    }
}

fn inspector_scan_pulls(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    let acct = &org.accounts[reg];
    let (role, svc) = &acct.slr[3];
    let key = session_key(ctx.em);
    ctx.account = reg;
    ctx.region = 0;
    let who = Who::Role {
        account: &acct.id,
        role,
        session: "inspector2",
        key: &key,
        mfa: false,
        created: ctx.t,
        web_identity: None,
        invoked_by: Some(svc),
    };
    ctx.principal = who.arn();
    let mut t = ctx.t;
    for _ in 0..12 {
        let repo = central_repo(ctx);
        let n = org.repos[repo].layers.len();
        let ids = pull_image(ctx.em, t, reg, 0, repo, who, svc, svc, n, false);
        ctx.take(ids, t + n as i64);
        t += ctx.rng().random_range(3..10);
    }
}

fn federated_console_login(ctx: &mut Ctx<'_, '_>) {
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

fn org_account_assume_role(ctx: &mut Ctx<'_, '_>) {
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
