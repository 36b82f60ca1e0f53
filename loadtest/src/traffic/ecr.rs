//! Registry traffic: image pulls by nodes and tasks, the CI pipeline's push and
//! deploy, and the registry's own scan, Inspector and lifecycle events.

use rand::seq::IndexedRandom;
use rand::Rng;

use super::ecs::{container_definitions, task_definition_params};
use super::identity::{assume_role_response, session_key};
use crate::agents::*;
use crate::json::{object, Json};
use crate::org::{Account, Org, Repo, Role};
use crate::record::{Call, Emitter, EventType, Who};
use crate::util;

pub const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

pub fn repo_arn(org: &Org, repo: &Repo, region: usize) -> String {
    format!("arn:aws:ecr:{}:{}:repository/{}", org.regions[region], org.accounts[repo.account].id, repo.name)
}

/// `[{"accountId": ..., "ARN": ...}]` for a repository.
pub fn repo_resources(org: &Org, repo: &Repo, region: usize) -> String {
    let mut j = Json::with_capacity(160);
    j.arr().obj();
    j.s("accountId", &org.accounts[repo.account].id).s("ARN", &repo_arn(org, repo, region));
    j.end().end_arr();
    j.into_string()
}

/// The calls of one image pull (manifest and some layers) with the manifest's and the layer
/// downloads' user agents (the runtime's: containerd for most); returns the event ids.
#[allow(clippy::too_many_arguments)]
pub fn pull_image(
    em: &mut Emitter<'_>,
    t: i64,
    caller: usize,
    region: usize,
    repo_i: usize,
    who: Who<'_>,
    ip: &str,
    (agent, layer_agent): (&str, &str),
    layers: usize,
    token: bool,
) -> Vec<String> {
    let org = em.org;
    let repo = &org.repos[repo_i];
    let registry = &org.accounts[repo.account].id;
    let res = repo_resources(org, repo, region);
    let mut ids = Vec::with_capacity(layers + 2);
    if token {
        let p = object(64, |j| {
            j.strs("registryIds", &[registry.as_str()]);
        });
        ids.push(em.ct(
            &Call::new(t, caller, region, "ecr.amazonaws.com", "GetAuthorizationToken", who, ip, agent).params(&p),
        ));
    }
    let host = org.registry_host(repo.account, region);
    let p = object(400, |j| {
        j.key("imageIds").arr().obj().s("imageTag", &repo.tag).end().end_arr();
        j.strs("acceptedMediaTypes", MEDIA_TYPES);
        j.s("repositoryName", &repo.name).s("registryId", registry);
    });
    ids.push(
        em.ct(&Call::new(t, repo.account, region, "ecr.amazonaws.com", "BatchGetImage", who, ip, agent)
            .params(&p)
            .resources(&res)
            .host(&host)),
    );
    let mut tl = t;
    for layer in repo.layers.iter().cycle().take(layers) {
        tl += em.rng.random_range(0..2);
        let p = object(160, |j| {
            j.s("registryId", registry).s("repositoryName", &repo.name).s("layerDigest", layer);
        });
        ids.push(
            em.ct(&Call::new(
                tl,
                repo.account,
                region,
                "ecr.amazonaws.com",
                "GetDownloadUrlForLayer",
                who,
                ip,
                layer_agent,
            )
            .params(&p)
            .resources(&res)
            .host(&host)),
        );
    }
    ids
}

pub(super) fn node_pull(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let w = org.pick_workload(&mut em.rng);
    let acct: &Account = &org.accounts[w];
    let key = session_key(em);
    let created = t - em.rng.random_range(60..6 * 3600);
    let use_eks = !acct.clusters.is_empty() && (acct.services.is_empty() || em.rng.random_bool(0.65));
    let (role, session, ip, region, repo, agent): (&Role, &str, &str, usize, usize, (&str, &str)) = if use_eks {
        let c = acct.clusters.choose(&mut em.rng).expect("clusters");
        let node = c.nodes.choose(&mut em.rng).expect("nodes");
        let local: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == w).collect();
        let repo = if !local.is_empty() && em.rng.random_bool(0.25) {
            *local.choose(&mut em.rng).expect("local")
        } else {
            em.rng.random_range(0..org.repos.len())
        };
        (&c.node_role, &node.instance_id, &node.ip, c.region, repo, (c.pull_agent, c.layer_agent))
    } else {
        let s = acct.services.choose(&mut em.rng).expect("services");
        let (task, ip) = s.tasks.choose(&mut em.rng).expect("tasks");
        let repo = if em.rng.random_bool(0.85) { s.repo } else { em.rng.random_range(0..org.repos.len()) };
        (&s.exec_role, task, ip, s.region, repo, (s.pull_agent, s.layer_agent))
    };
    let who = Who::role(&acct.id, role, session, &key, created);
    let n_layers = org.repos[repo].layers.len();
    let layers = if em.rng.random_bool(0.3) { n_layers } else { em.rng.random_range(1..=2.min(n_layers)) };
    let token = em.rng.random_bool(0.35);
    let mut n = pull_image(em, t, w, region, repo, who, ip, agent, layers, token).len();
    if em.rng.random_bool(0.15) {
        let r = &org.repos[repo];
        let registry = &org.accounts[r.account].id;
        let digests: Vec<&str> = r.layers.iter().take(3).map(String::as_str).collect();
        let p = object(300, |j| {
            j.s("registryId", registry).s("repositoryName", &r.name).strs("layerDigests", &digests);
        });
        let res = repo_resources(org, r, region);
        em.ct(&Call::new(
            t + 1,
            r.account,
            region,
            "ecr.amazonaws.com",
            "BatchCheckLayerAvailability",
            who,
            ip,
            UA_DOCKER,
        )
        .params(&p)
        .resources(&res));
        n += 1;
    }
    n
}

/// Image manifest JSON (as a string inside PutImage parameters).
fn manifest(layers: &[String], config: &str) -> String {
    object(200 + 120 * layers.len(), |j| {
        j.n("schemaVersion", 2).s("mediaType", "application/vnd.docker.distribution.manifest.v2+json");
        j.key("config")
            .obj()
            .s("mediaType", "application/vnd.docker.container.image.v1+json")
            .n("size", 7023)
            .s("digest", config)
            .end();
        j.key("layers").arr();
        for (i, l) in layers.iter().enumerate() {
            j.obj()
                .s("mediaType", "application/vnd.docker.image.rootfs.diff.tar.gzip")
                .n("size", 1000 + 7919 * i as i64 * 131)
                .s("digest", l)
                .end();
        }
        j.end_arr();
    })
}

pub(super) fn ci_pipeline(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let reg = org.registry;
    let central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == reg).collect();
    let repo_i = *central.choose(&mut em.rng).expect("central repos");
    let repo = &org.repos[repo_i];
    let region = 0;
    let ip = org.ci_runner_ips.choose(&mut em.rng).expect("runners").clone();
    let run = format!("GitHubActions-{}", em.rng.random_range(10_000_000u64..99_999_999));
    let key = session_key(em);
    let reg_id = &org.accounts[reg].id;
    let ci = Who::role(reg_id, &org.ci_role, &run, &key, t);
    let host = org.registry_host(reg, region);
    let res = repo_resources(org, repo, region);
    let mut n = 0;
    let mut tt = t;
    let p = format!("{{\"registryIds\":[\"{reg_id}\"]}}");
    em.ct(&Call::new(tt, reg, region, "ecr.amazonaws.com", "GetAuthorizationToken", ci, &ip, UA_CI).params(&p));
    n += 1;
    tt += 3;
    let digests: Vec<&str> = repo.layers.iter().map(String::as_str).collect();
    let p = object(200 + 80 * digests.len(), |j| {
        j.s("registryId", reg_id).s("repositoryName", &repo.name).strs("layerDigests", &digests);
    });
    em.ct(&Call::new(tt, reg, region, "ecr.amazonaws.com", "BatchCheckLayerAvailability", ci, &ip, UA_CI_DOCKER)
        .params(&p)
        .resources(&res)
        .host(&host));
    n += 1;
    // New top layers of the fresh image.
    let new_layers: Vec<String> = (0..em.rng.random_range(1..4)).map(|_| util::digest(&mut em.rng)).collect();
    for layer in &new_layers {
        tt += 1;
        let p = object(120, |j| {
            j.s("registryId", reg_id).s("repositoryName", &repo.name);
        });
        let upload = util::uuid(&mut em.rng);
        let r = object(120, |j| {
            j.s("uploadId", &upload).n("partSize", 10_485_760);
        });
        em.ct(&Call::new(tt, reg, region, "ecr.amazonaws.com", "InitiateLayerUpload", ci, &ip, UA_CI_DOCKER)
            .params(&p)
            .response(&r)
            .resources(&res)
            .host(&host));
        let parts = em.rng.random_range(1..3);
        for part in 0..parts {
            tt += em.rng.random_range(1..4);
            let p = object(200, |j| {
                j.s("registryId", reg_id).s("repositoryName", &repo.name).s("uploadId", &upload);
                j.n("partFirstByte", part * 10_485_760).n("partLastByte", (part + 1) * 10_485_760 - 1);
            });
            em.ct(&Call::new(tt, reg, region, "ecr.amazonaws.com", "UploadLayerPart", ci, &ip, UA_CI_DOCKER)
                .params(&p)
                .resources(&res)
                .host(&host));
        }
        let p = object(200, |j| {
            j.s("registryId", reg_id)
                .s("repositoryName", &repo.name)
                .s("uploadId", &upload)
                .strs("layerDigests", &[layer.as_str()]);
        });
        em.ct(&Call::new(tt, reg, region, "ecr.amazonaws.com", "CompleteLayerUpload", ci, &ip, UA_CI_DOCKER)
            .params(&p)
            .resources(&res)
            .host(&host));
        n += 2 + parts as usize;
    }
    tt += 2;
    let mut layers: Vec<String> = repo.layers[..repo.layers.len().saturating_sub(new_layers.len()).max(1)].to_vec();
    layers.extend(new_layers.iter().cloned());
    let config = util::digest(&mut em.rng);
    let tag = format!("{}-{}", repo.tag, util::hex(&mut em.rng, 7));
    let man = manifest(&layers, &config);
    let image_digest = util::digest(&mut em.rng);
    let p = object(400 + man.len(), |j| {
        j.s("repositoryName", &repo.name).s("imageTag", &tag).s("registryId", reg_id).s("imageManifest", &man);
    });
    let r = object(300, |j| {
        j.key("image").obj().s("registryId", reg_id).s("repositoryName", &repo.name);
        j.key("imageId").obj().s("imageDigest", &image_digest).s("imageTag", &tag).end();
        j.s("imageManifestMediaType", "application/vnd.docker.distribution.manifest.v2+json").end();
    });
    em.ct(&Call::new(tt, reg, region, "ecr.amazonaws.com", "PutImage", ci, &ip, UA_CI_DOCKER)
        .params(&p)
        .response(&r)
        .resources(&res)
        .host(&host));
    n += 1;
    // ECR's own events: the push, then the basic scan on push.
    let arn = repo_arn(org, repo, region);
    let d = object(300, |j| {
        j.s("result", "SUCCESS")
            .s("repository-name", &repo.name)
            .s("image-digest", &image_digest)
            .s("action-type", "PUSH")
            .s("image-tag", &tag);
    });
    em.eventbridge(tt + 1, reg, region, "aws.ecr", "ECR Image Action", &[], &d);
    let scan_t = tt + em.rng.random_range(20..120);
    let d = benign_scan_detail(em, &repo.name, &image_digest, &tag);
    em.eventbridge(scan_t, reg, region, "aws.ecr", "ECR Image Scan", &[&arn], &d);
    n += 2;
    if em.rng.random_bool(0.3) {
        for _ in 0..em.rng.random_range(1..3) {
            let sev = if em.rng.random_bool(0.6) { "MEDIUM" } else { "LOW" };
            let at = scan_t + em.rng.random_range(60..900);
            inspector_finding(em, at, reg, region, repo_i, &image_digest, &tag, sev);
            n += 1;
        }
    }
    // Deploy: assume the deployer role in a workload account, register a task definition, update the service.
    if em.rng.random_bool(0.7) {
        let at = tt + em.rng.random_range(30..120);
        n += deploy(em, at, repo_i, &tag, &ip, &run, &key);
    }
    n
}

fn deploy(em: &mut Emitter<'_>, t: i64, repo_i: usize, tag: &str, ip: &str, run: &str, ci_key: &str) -> usize {
    let org = em.org;
    let w = org.pick_workload(&mut em.rng);
    let acct = &org.accounts[w];
    let reg_id = &org.accounts[org.registry].id;
    let session = format!("{run}-deploy");
    let role_arn = format!("arn:aws:iam::{}:role/{}", acct.id, acct.deployer.name);
    let p = object(200, |j| {
        j.s("roleArn", &role_arn).s("roleSessionName", &session).n("durationSeconds", 3600);
    });
    let r = assume_role_response(em, t, &acct.id, &acct.deployer, &session);
    // In the target account a cross-account AssumeRole shows the caller as AWSAccount.
    let caller = format!("{}:{run}", org.ci_role.id);
    let _ = ci_key;
    em.ct(&Call::new(
        t,
        w,
        0,
        "sts.amazonaws.com",
        "AssumeRole",
        Who::Account { account: reg_id, principal: &caller },
        ip,
        UA_CI_ECS,
    )
    .params(&p)
    .response(&r)
    .read_only(true));
    let key = session_key(em);
    let who = Who::role(&acct.id, &acct.deployer, &session, &key, t);
    let mut n = 1;
    let Some(svc) = acct.services.choose(&mut em.rng) else { return n };
    let region = svc.region;
    let repo = &org.repos[repo_i];
    let containers = container_definitions(org, w, region, repo, tag, &svc.secrets, &[]);
    let p = task_definition_params(org, w, svc, &containers, "awsvpc", &[]);
    let revision = em.rng.random_range(2..400);
    let td_arn = format!("arn:aws:ecs:{}:{}:task-definition/{}:{revision}", org.regions[region], acct.id, svc.name);
    let r = object(300, |j| {
        j.key("taskDefinition")
            .obj()
            .s("taskDefinitionArn", &td_arn)
            .s("family", &svc.name)
            .n("revision", revision)
            .s("status", "ACTIVE")
            .end();
    });
    em.ct(&Call::new(t + 3, w, region, "ecs.amazonaws.com", "RegisterTaskDefinition", who, ip, UA_CI_ECS)
        .params(&p)
        .response(&r));
    let p = object(300, |j| {
        j.s("cluster", &svc.cluster)
            .s("service", &svc.name)
            .s("taskDefinition", &td_arn)
            .b("forceNewDeployment", false);
    });
    em.ct(&Call::new(t + 5, w, region, "ecs.amazonaws.com", "UpdateService", who, ip, UA_CI_ECS)
        .params(&p)
        .read_only(false));
    n += 2;
    for k in 0..em.rng.random_range(2..5) {
        let p = object(200, |j| {
            j.s("cluster", &svc.cluster).strs("services", &[svc.name.as_str()]);
        });
        em.ct(&Call::new(t + 20 + 15 * k, w, region, "ecs.amazonaws.com", "DescribeServices", who, ip, UA_CI_ECS)
            .params(&p));
        n += 1;
    }
    n
}

/// "ECR Image Scan" detail with only low and medium findings (or none).
fn benign_scan_detail(em: &mut Emitter<'_>, repo: &str, digest: &str, tag: &str) -> String {
    let roll = em.rng.random_range(0..100);
    object(400, |j| {
        j.s("scan-status", "COMPLETE").s("repository-name", repo);
        if roll >= 20 {
            j.key("finding-severity-counts").obj();
            if roll % 3 == 0 {
                j.n("INFORMATIONAL", (roll % 7) as i64 + 1);
            }
            j.n("LOW", (roll % 11) as i64 + 1);
            if roll >= 45 {
                j.n("MEDIUM", (roll % 5) as i64 + 1);
            }
            if roll % 10 == 1 {
                j.n("UNDEFINED", 1);
            }
            j.end();
        }
        j.s("image-digest", digest).strs("image-tags", &[tag]);
    })
}

const PACKAGES: &[(&str, &str)] = &[
    ("openssl", "3.0.8"),
    ("libssh2", "1.9.0"),
    ("zlib", "1.2.13"),
    ("glibc", "2.34"),
    ("curl", "8.4.0"),
    ("expat", "2.5.0"),
    ("libxml2", "2.10.3"),
    ("busybox", "1.36.1"),
    ("jackson-databind", "2.13.4"),
    ("urllib3", "1.26.15"),
];

/// One "Inspector2 Finding" for an image of `repo_i`; returns its id.
#[allow(clippy::too_many_arguments)]
pub fn inspector_finding(
    em: &mut Emitter<'_>,
    t: i64,
    account: usize,
    region: usize,
    repo_i: usize,
    digest: &str,
    tag: &str,
    severity: &str,
) -> String {
    let org = em.org;
    let repo = &org.repos[repo_i];
    let acct_id = &org.accounts[account].id;
    let (pkg, ver) = *PACKAGES.choose(&mut em.rng).expect("packages");
    let cve = format!("CVE-{}-{}", em.rng.random_range(2019..2026), em.rng.random_range(1000..60000));
    let score: f64 = match severity {
        "CRITICAL" => em.rng.random_range(90..=100) as f64 / 10.0,
        "HIGH" => em.rng.random_range(70..90) as f64 / 10.0,
        "MEDIUM" => em.rng.random_range(40..70) as f64 / 10.0,
        _ => em.rng.random_range(10..40) as f64 / 10.0,
    };
    let region_name = &org.regions[region];
    let image_arn = format!("arn:aws:ecr:{region_name}:{acct_id}:repository/{}/{digest}", repo.name);
    let finding_arn = format!("arn:aws:inspector2:{region_name}:{acct_id}:finding/{}", util::hex(&mut em.rng, 32));
    let layer = repo.layers.first().cloned().unwrap_or_default();
    let seen = util::inspector_time(t);
    let detail = object(2000, |j| {
        j.s("awsAccountId", acct_id);
        j.s("description", &format!("A vulnerability in {pkg} before a fixed release allows a remote attacker to affect confidentiality or availability ({cve})."));
        j.s("findingArn", &finding_arn).s("firstObservedAt", &seen).key("inspectorScore").float(score);
        j.key("inspectorScoreDetails").obj().key("adjustedCvss").obj();
        j.key("adjustments").arr().end_arr().s("cvssSource", "NVD").key("score").float(score).s("scoreSource", "NVD");
        j.s("scoringVector", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").s("version", "3.1");
        j.end().end();
        j.s("lastObservedAt", &seen);
        j.key("packageVulnerabilityDetails").obj();
        j.key("cvss")
            .arr()
            .obj()
            .key("baseScore")
            .float(score)
            .s("scoringVector", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
            .s("source", "NVD")
            .s("version", "3.1")
            .end()
            .end_arr();
        j.strs("referenceUrls", &[&format!("https://nvd.nist.gov/vuln/detail/{cve}") as &str]);
        j.s("source", "NVD").s("sourceUrl", &format!("https://nvd.nist.gov/vuln/detail/{cve}"));
        j.s("vendorCreatedAt", &util::inspector_time(t - 86_400 * 90))
            .s("vendorSeverity", severity)
            .s("vulnerabilityId", &cve);
        j.key("vulnerablePackages").arr().obj();
        j.s("arch", "X86_64")
            .n("epoch", 0)
            .s("name", pkg)
            .s("packageManager", "OS")
            .s("release", "1.amzn2023")
            .s("sourceLayerHash", &layer)
            .s("version", ver);
        j.end().end_arr();
        j.end();
        j.key("remediation")
            .obj()
            .key("recommendation")
            .obj()
            .s("text", "Update all packages in the vulnerable packages section to their latest versions.")
            .end()
            .end();
        j.key("resources").arr().obj();
        j.key("details").obj().key("awsEcrContainerImage").obj();
        j.s("architecture", "amd64")
            .s("imageHash", digest)
            .strs("imageTags", &[tag])
            .s("platform", "AMAZON_LINUX_2023");
        j.s("pushedAt", &util::inspector_time(t - 600)).s("registry", acct_id).s("repositoryName", &repo.name);
        j.end().end();
        j.s("id", &image_arn).s("partition", "aws").s("region", region_name).s("type", "AWS_ECR_CONTAINER_IMAGE");
        j.end().end_arr();
        j.s("severity", severity)
            .s("status", "ACTIVE")
            .s("title", &format!("{cve} - {pkg}"))
            .s("type", "PACKAGE_VULNERABILITY");
        j.s("updatedAt", &seen);
    });
    em.eventbridge(t, account, region, "aws.inspector2", "Inspector2 Finding", &[&image_arn], &detail)
}

/// Continuous scanning and lifecycle policy runs in the registry.
pub(super) fn scanner(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let reg = org.registry;
    let region = org.pick_region(&mut em.rng);
    let central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == reg).collect();
    let repo_i = *central.choose(&mut em.rng).expect("central repos");
    let repo = &org.repos[repo_i];
    if em.rng.random_bool(0.8) {
        let sev = match em.rng.random_range(0..10) {
            0..=1 => "INFORMATIONAL",
            2..=5 => "LOW",
            _ => "MEDIUM",
        };
        inspector_finding(em, t, reg, region, repo_i, &repo.digest.clone(), &repo.tag.clone(), sev);
        1
    } else {
        let acct_id = &org.accounts[reg].id;
        let policy_id = util::uuid(&mut em.rng);
        let expired = util::digest(&mut em.rng);
        let details = object(600, |j| {
            j.s("repositoryName", &repo.name);
            j.key("lifecycleEventPolicy").obj();
            j.key("lifecycleEventRules")
                .arr()
                .obj()
                .n("rulePriority", 1)
                .s("description", "expire untagged images older than 14 days");
            j.key("lifecycleEventSelection")
                .obj()
                .s("tagStatus", "Untagged")
                .strs("tagPrefixList", &[])
                .s("countType", "Days since image created")
                .n("countNumber", 14)
                .end();
            j.s("action", "expire").end().end_arr();
            j.n("lastEvaluatedAt", 0).n("policyVersion", 1).s("policyId", &policy_id);
            j.end();
            j.key("lifecycleEventImageActions").arr().obj();
            j.key("lifecycleEventImage")
                .obj()
                .s("digest", &expired)
                .s("tagStatus", "Untagged")
                .strs("tagList", &[])
                .n("pushedAt", (t - 20 * 86_400) * 1000)
                .end();
            j.n("rulePriority", 1).end().end_arr();
        });
        let res = format!(
            "[{{\"ARN\":\"{}\",\"accountId\":\"{acct_id}\",\"type\":\"AWS::ECR::Repository\"}}]",
            repo_arn(org, repo, region)
        );
        let mut c = Call::new(
            t,
            reg,
            region,
            "ecr.amazonaws.com",
            "PolicyExecutionEvent",
            Who::Internal { account: acct_id },
            "AWS Internal",
            "AWS Internal",
        )
        .resources(&res)
        .read_only(true);
        c.event_type = EventType::ServiceEvent;
        c.service_details = Some(&details);
        em.ct(&c);
        1
    }
}
