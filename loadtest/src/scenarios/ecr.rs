//! Scenarios of the theme ECR: image layer access, registry configuration weakened, image deletion, encryption, vulnerable images; attacks and their benign look-alikes.

use super::*;

pub(super) fn policy_statement(
    j: &mut Json,
    sid: &str,
    principal: &str,
    actions: &[&str],
    org_condition: Option<&str>,
) {
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

pub(super) fn policy(principal: &str, actions: &[&str], org_condition: Option<&str>) -> String {
    object(400, |j| {
        j.s("Version", "2012-10-17");
        j.key("Statement").arr();
        policy_statement(j, "AllowPull", principal, actions, org_condition);
        j.end_arr();
    })
}

pub(super) const PULL_ACTIONS: &[&str] =
    &["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"];

pub(super) fn set_repository_policy(ctx: &mut Ctx<'_, '_>, actor: &Actor, t: i64, repo: usize, policy_text: &str) {
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

pub(super) fn repo_params(org: &Org, repo: usize) -> String {
    let r = &org.repos[repo];
    object(120, |j| {
        j.s("repositoryName", &r.name).s("registryId", &org.accounts[r.account].id);
    })
}

/// The actor `who` picks in the registry account, begun there in the primary region.
pub(super) fn in_registry(ctx: &mut Ctx<'_, '_>, who: fn(&mut Ctx<'_, '_>, usize) -> Actor) -> (usize, Actor) {
    let reg = ctx.org().registry;
    let a = who(ctx, reg);
    begin(ctx, &a, 0);
    (reg, a)
}

pub(super) fn layer_download_unexpected(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, intruder);
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
        ("docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0-kali3-amd64 os/linux arch/amd64", UA_CONTAINERD),
        layers,
        true,
    );
    let t = ctx.t;
    ctx.take(ids, t + layers as i64 * 2);
}

/// A node role's credentials (taken from instance metadata) used from the
/// internet: the principal is an expected puller, the network is not.
pub(super) fn stolen_node_credentials(ctx: &mut Ctx<'_, '_>) {
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
    let who = Who::role(&org.accounts[w].id, &c.node_role, &node.instance_id, &key, ctx.t - 3 * 3600);
    ctx.principal = who.arn();
    let repo = central_repo(ctx);
    let layers = ctx.org().repos[repo].layers.len().min(4);
    let ids = pull_image(ctx.em, ctx.t, w, c.region, repo, who, &ip, (UA_CLI, UA_CONTAINERD), layers, true);
    let t = ctx.t;
    ctx.take(ids, t + layers as i64 * 2);
}

pub(super) fn bulk_layer_download(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, |c, r| hijacked_sso(c, r, 3));
    let mut t = ctx.t;
    let mut total = 0;
    while total < 64 {
        let repo = central_repo(ctx);
        let n = ctx.org().repos[repo].layers.len();
        let who = a.who(ctx.em.org);
        let ids = pull_image(ctx.em, t, reg, 0, repo, who, &a.ip, (UA_CONTAINERD, UA_CONTAINERD), n, total == 0);
        total += n;
        t += n as i64 + 3;
        ctx.take(ids, t);
    }
    // A second copy of the largest image: the same layers again, as tools do.
    let repo = central_repo(ctx);
    let who = a.who(ctx.em.org);
    let n = ctx.org().repos[repo].layers.len();
    let ids = pull_image(ctx.em, t, reg, 0, repo, who, &a.ip, (UA_CONTAINERD, UA_CONTAINERD), n, false);
    ctx.take(ids, t + n as i64 * 2);
}

pub(super) fn many_repositories(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, intruder);
    let org = ctx.em.org;
    let mut central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == reg).collect();
    let k = central.len().min(14);
    let (picked, _) = central.partial_shuffle(ctx.rng(), k);
    let picked: Vec<usize> = picked.to_vec();
    let mut t = ctx.t;
    for (i, repo) in picked.into_iter().enumerate() {
        let who = a.who(ctx.em.org);
        let ids = pull_image(ctx.em, t, reg, 0, repo, who, &a.ip, (a.agent, UA_CONTAINERD), 1 + i % 2, i == 0);
        ctx.take(ids, t + 3);
        t += ctx.rng().random_range(20..35);
    }
}

pub(super) fn scan_on_push_disabled(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, attacker);
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

pub(super) fn tag_mutability(ctx: &mut Ctx<'_, '_>, value: &str) {
    let (reg, a) = in_registry(ctx, if value == "MUTABLE" { attacker } else { engineer });
    let repo = central_repo(ctx);
    let org = ctx.em.org;
    let (name, id) = (&org.repos[repo].name, &org.accounts[reg].id);
    let p = object(160, |j| {
        j.s("repositoryName", name).s("registryId", id).s("imageTagMutability", value);
    });
    let t = ctx.t;
    ecr_call(ctx, &a, t, "PutImageTagMutability", &p, Some(&p), Some(repo));
}

pub(super) fn lifecycle_policy_deleted(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, attacker);
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

pub(super) fn public_repository_policy(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, attacker);
    let repo = central_repo(ctx);
    let text = policy("*", PULL_ACTIONS, None);
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

pub(super) fn cross_account_policy_outside(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, attacker);
    let repo = central_repo(ctx);
    let outside = ctx.org().outside_accounts.choose(ctx.rng()).cloned().expect("outside");
    let text = policy(&format!("arn:aws:iam::{outside}:root"), PULL_ACTIONS, None);
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

pub(super) fn registry_policy(ctx: &mut Ctx<'_, '_>, grantee: &str) {
    let outside = ctx.org().outside_accounts.iter().any(|o| o == grantee);
    let (reg, a) = in_registry(ctx, if outside { attacker } else { engineer });
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

pub(super) fn replication(ctx: &mut Ctx<'_, '_>, outside: bool) {
    let (_, a) = in_registry(ctx, if outside { attacker } else { engineer });
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

pub(super) fn pull_through_cache(ctx: &mut Ctx<'_, '_>, upstream: &str) {
    let approved = ctx.org().approved_upstreams.contains(&upstream);
    let (reg, a) = in_registry(ctx, if approved { engineer } else { attacker });
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

pub(super) fn repository_deletion(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, attacker);
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

pub(super) fn batch_delete(
    ctx: &mut Ctx<'_, '_>,
    actor: &Actor,
    t: i64,
    repo: usize,
    count: usize,
    agent: &'static str,
) {
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

pub(super) fn mass_image_deletion(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, attacker);
    let mut t = ctx.t;
    for _ in 0..3 {
        let repo = central_repo(ctx);
        let n = ctx.rng().random_range(20..41);
        let agent = a.agent;
        batch_delete(ctx, &a, t, repo, n, agent);
        t += ctx.rng().random_range(20..60);
    }
}

pub(super) fn kms_key_call(
    ctx: &mut Ctx<'_, '_>,
    actor: &Actor,
    t: i64,
    name: &'static str,
    extra: Option<(&str, i64)>,
) {
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

pub(super) fn encryption_changed(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, attacker);
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

pub(super) fn critical_image_scan(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn critical_inspector_finding(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    ctx.account = reg;
    let repo = central_repo(ctx);
    let (digest, tag) = (org.repos[repo].digest.clone(), org.repos[repo].tag.clone());
    let t = ctx.t;
    let id = inspector_finding(ctx.em, t, reg, 0, repo, &digest, &tag, "CRITICAL");
    ctx.take(vec![id], t);
}

pub(super) fn enable_scan_on_push(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, engineer);
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

pub(super) fn lifecycle_policy_updated(ctx: &mut Ctx<'_, '_>) {
    let (reg, a) = in_registry(ctx, engineer);
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

pub(super) fn org_restricted_policy(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, engineer);
    let repo = central_repo(ctx);
    let text = policy("*", PULL_ACTIONS, Some(&ctx.org().id.clone()));
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

pub(super) fn policy_to_org_account(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, engineer);
    let repo = central_repo(ctx);
    let w = ctx.org().pick_workload(ctx.rng());
    let text = policy(&format!("arn:aws:iam::{}:root", ctx.org().accounts[w].id), PULL_ACTIONS, None);
    let t = ctx.t;
    set_repository_policy(ctx, &a, t, repo, &text);
}

pub(super) fn single_image_cleanup(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    let a = ci_session(ctx, reg, &org.ci_role, "", 0, UA_CI);
    begin(ctx, &a, 0);
    let repo = central_repo(ctx);
    let n = ctx.rng().random_range(1..3);
    let t = ctx.t;
    batch_delete(ctx, &a, t, repo, n, UA_CI);
}

pub(super) fn kms_rotation_enabled(ctx: &mut Ctx<'_, '_>) {
    let (_, a) = in_registry(ctx, engineer);
    let t = ctx.t;
    kms_key_call(ctx, &a, t, "EnableKeyRotation", None);
}

pub(super) fn inspector_scan_pulls(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let reg = org.registry;
    let acct = &org.accounts[reg];
    let (role, svc) = &acct.slr[3];
    let key = session_key(ctx.em);
    ctx.account = reg;
    ctx.region = 0;
    let who = Who::role(&acct.id, role, "inspector2", &key, ctx.t).invoked_by(svc);
    ctx.principal = who.arn();
    let mut t = ctx.t;
    for _ in 0..12 {
        let repo = central_repo(ctx);
        let n = org.repos[repo].layers.len();
        let ids = pull_image(ctx.em, t, reg, 0, repo, who, svc, (svc, UA_CONTAINERD), n, false);
        ctx.take(ids, t + n as i64);
        t += ctx.rng().random_range(3..10);
    }
}
