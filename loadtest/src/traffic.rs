//! Benign org traffic: what a normal day looks like.
//!
//! Each kind of activity gets a share of the configured rate; an activity
//! (an image pull, a console session, a CI pipeline) emits several related
//! events, and the budget carries over between slices so the long-run rate is
//! exact. People and CI follow office hours (UTC 08-16 carries most of it);
//! machines run all day.

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::json::{object, Json};
use crate::org::{Account, EcsService, Org, Repo, Role};
use crate::record::Emitter;
use crate::record::{Call, EventType, Who};
use crate::util;

pub const UA_CONTAINERD: &str = "containerd/v1.7.22";
pub const UA_CRED_PROVIDER: &str =
    "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/ecr#1.32.0 ecr-credential-provider";
pub const UA_ECS_AGENT: &str = "aws-sdk-go/1.55.5 (go1.22.7; linux; amd64) Amazon ECS Agent - v1.86.3 (9c10fa5c)";
pub const UA_DOCKER: &str = "docker/25.0.6 go/go1.22.7 git-commit/b08a51f kernel/6.1.109-118.189.amzn2023.x86_64 os/linux arch/amd64 UpstreamClient(Go-http-client/1.1)";
pub const UA_BOTO3: &str = "Boto3/1.35.36 md/Botocore#1.35.36 ua/2.0 os/linux#5.10.226-214.880.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.7 md/pyimpl#CPython exec-env/AWS_ECS_FARGATE cfg/retry-mode#legacy Botocore/1.35.36";
pub const UA_JAVA: &str = "aws-sdk-java/2.28.16 Linux/5.10.226-214.880.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/21.0.4+7-LTS Java/21.0.4 vendor/Amazon.com_Inc. md/internal exec-env/AWS_ECS_EC2 io/sync http/Apache cfg/retry-mode/legacy";
pub const UA_CNI: &str = "amazon-vpc-cni-k8s/v1.18.5 aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.173.0";
pub const UA_AUTOSCALER: &str = "cluster-autoscaler/v1.31.0 aws-sdk-go/1.55.5 (go1.22.7; linux; amd64)";
pub const UA_SSM_AGENT: &str = "aws-sdk-go/1.55.5 (go1.22.7; linux; amd64) amazon-ssm-agent/3.3.987.0";
pub const UA_CLI: &str = "aws-cli/2.18.5 md/awscrt#0.22.0 ua/2.0 os/macos#23.6.0 md/arch#arm64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#source md/prompt#off";
pub const UA_BROWSER: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36";
pub const UA_CONSOLE: &str = "AWS Internal";
pub const UA_CI: &str = "aws-sdk-js/3.654.0 ua/2.1 os/linux#6.5.0-1025-azure lang/js md/nodejs#20.17.0 api/ecr#3.654.0 exec-env/GitHubActions";
pub const UA_CI_DOCKER: &str = "docker/27.2.0 go/go1.21.13 git-commit/3ab5c7d kernel/6.5.0-1025-azure os/linux arch/amd64 UpstreamClient(Docker-Client/27.2.0 \\(linux\\))";
pub const UA_CI_ECS: &str = "aws-sdk-js/3.654.0 ua/2.1 os/linux#6.5.0-1025-azure lang/js md/nodejs#20.17.0 api/ecs#3.654.0 exec-env/GitHubActions";

pub const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Activity kinds and their share of the event rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NodePull,
    ServicePrincipal,
    ServiceLinkedRole,
    Workload,
    Human,
    Ci,
    Scanner,
}

const KINDS: [(Kind, f64); 7] = [
    (Kind::NodePull, 0.30),
    (Kind::ServicePrincipal, 0.13),
    (Kind::ServiceLinkedRole, 0.18),
    (Kind::Workload, 0.258),
    (Kind::Human, 0.08),
    (Kind::Ci, 0.05),
    (Kind::Scanner, 0.002),
];

/// Benign traffic state: the rate and each kind's budget carried over.
pub struct Traffic {
    rate: f64,
    budget: [f64; KINDS.len()],
}

impl Traffic {
    pub fn new(rate: f64) -> Self {
        Traffic { rate, budget: [0.0; KINDS.len()] }
    }

    /// Emits the activities starting in `[t0, t1)`; their later events may fall in later slices.
    pub fn slice(&mut self, em: &mut Emitter<'_>, t0: i64, t1: i64) {
        let secs = (t1 - t0) as f64;
        for (k, (kind, share)) in KINDS.iter().enumerate() {
            let shape = match kind {
                Kind::Human | Kind::Ci => office_hours((t0 + t1) / 2),
                _ => 1.0,
            };
            self.budget[k] += self.rate * secs * share * shape;
            while self.budget[k] >= 1.0 {
                let t = em.rng.random_range(t0..t1);
                let n = match kind {
                    Kind::NodePull => node_pull(em, t),
                    Kind::ServicePrincipal => service_principal(em, t),
                    Kind::ServiceLinkedRole => service_linked_role(em, t),
                    Kind::Workload => workload(em, t),
                    Kind::Human => human_session(em, t),
                    Kind::Ci => ci_pipeline(em, t),
                    Kind::Scanner => scanner(em, t),
                };
                self.budget[k] -= n.max(1) as f64;
            }
        }
    }
}

/// Office-hours shape with a mean of 1 over a day: 2.6 from 08 to 16 UTC, 0.2 otherwise.
pub fn office_hours(t: i64) -> f64 {
    let hour = t.rem_euclid(86_400) / 3600;
    if (8..16).contains(&hour) {
        2.6
    } else {
        0.2
    }
}

/// A fresh temporary key for a role session.
pub fn session_key(em: &mut Emitter<'_>) -> String {
    util::iam_id(&mut em.rng, "ASIA")
}

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

/// The calls of one image pull (manifest and some layers); returns the event ids.
#[allow(clippy::too_many_arguments)]
pub fn pull_image(
    em: &mut Emitter<'_>,
    t: i64,
    caller: usize,
    region: usize,
    repo_i: usize,
    who: Who<'_>,
    ip: &str,
    agent: &str,
    layers: usize,
    token: bool,
) -> Vec<String> {
    pull_image_by(em, t, caller, region, repo_i, who, ip, (agent, UA_CONTAINERD), layers, token)
}

/// [`pull_image`] with the layer downloads' own user agent (the runtime's).
#[allow(clippy::too_many_arguments)]
pub fn pull_image_by(
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

fn node_pull(em: &mut Emitter<'_>, t: i64) -> usize {
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
    let who = Who::Role {
        account: &acct.id,
        role,
        session,
        key: &key,
        mfa: false,
        created,
        web_identity: None,
        invoked_by: None,
    };
    let n_layers = org.repos[repo].layers.len();
    let layers = if em.rng.random_bool(0.3) { n_layers } else { em.rng.random_range(1..=2.min(n_layers)) };
    let token = em.rng.random_bool(0.35);
    let mut n = pull_image_by(em, t, w, region, repo, who, ip, agent, layers, token).len();
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

fn assume_role_response(em: &mut Emitter<'_>, t: i64, account: &str, role: &Role, session: &str) -> String {
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

fn service_principal(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let w = org.pick_workload(&mut em.rng);
    let acct = &org.accounts[w];
    let roll = em.rng.random_range(0..100);
    // A service assuming a workload role (tasks, nodes, EKS), or a role call made through a service.
    let (service, role, session, region): (&str, &Role, String, usize) = if roll < 45 && !acct.services.is_empty() {
        let s = acct.services.choose(&mut em.rng).expect("services");
        let (task, _) = s.tasks.choose(&mut em.rng).expect("tasks");
        let role = if em.rng.random_bool(0.5) { &s.exec_role } else { &s.task_role };
        ("ecs-tasks.amazonaws.com", role, task.clone(), s.region)
    } else if roll < 75 && !acct.clusters.is_empty() {
        let c = acct.clusters.choose(&mut em.rng).expect("clusters");
        let node = c.nodes.choose(&mut em.rng).expect("nodes");
        ("ec2.amazonaws.com", &c.node_role, node.instance_id.clone(), c.region)
    } else if roll < 90 {
        let (role, svc) = &acct.slr[em.rng.random_range(0..acct.slr.len())];
        (svc, role, svc.split('.').next().unwrap_or("service").to_string(), org.pick_region(&mut em.rng))
    } else {
        // KMS decrypting a secret for a task execution role, through Secrets Manager.
        let Some(s) = acct.services.choose(&mut em.rng) else { return 0 };
        let (task, _) = s.tasks.choose(&mut em.rng).expect("tasks");
        let key = session_key(em);
        let who = Who::Role {
            account: &acct.id,
            role: &s.exec_role,
            session: task,
            key: &key,
            mfa: false,
            created: t - 30,
            web_identity: None,
            invoked_by: Some("secretsmanager.amazonaws.com"),
        };
        let key_arn = format!("arn:aws:kms:{}:{}:key/{}", org.regions[s.region], acct.id, acct.kms_key);
        let secret = format!("arn:aws:secretsmanager:{}:{}:secret:{}", org.regions[s.region], acct.id, s.secrets[0]);
        let p = object(300, |j| {
            j.key("encryptionContext")
                .obj()
                .s("SecretARN", &secret)
                .s("SecretVersionId", &util::uuid(&mut em.rng))
                .end();
            j.s("encryptionAlgorithm", "SYMMETRIC_DEFAULT");
        });
        let res = format!("[{{\"accountId\":\"{}\",\"type\":\"AWS::KMS::Key\",\"ARN\":\"{key_arn}\"}}]", acct.id);
        em.ct(&Call::new(
            t,
            w,
            s.region,
            "kms.amazonaws.com",
            "Decrypt",
            who,
            "secretsmanager.amazonaws.com",
            "secretsmanager.amazonaws.com",
        )
        .params(&p)
        .resources(&res)
        .read_only(true));
        return 1;
    };
    let role_arn = format!("arn:aws:iam::{}:role/{}{}", acct.id, role.path, role.name);
    let p = object(200, |j| {
        j.s("roleArn", &role_arn).s("roleSessionName", &session);
    });
    let r = assume_role_response(em, t, &acct.id, role, &session);
    let res = format!("[{{\"accountId\":\"{}\",\"type\":\"AWS::IAM::Role\",\"ARN\":\"{role_arn}\"}}]", acct.id);
    em.ct(&Call::new(
        t,
        w,
        region,
        "sts.amazonaws.com",
        "AssumeRole",
        Who::Service { invoked_by: service },
        service,
        service,
    )
    .params(&p)
    .response(&r)
    .resources(&res)
    .read_only(true));
    1
}

/// What each service-linked role reads: (eventSource, eventName).
const CONFIG_READS: &[(&str, &str)] = &[
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ec2.amazonaws.com", "DescribeSecurityGroups"),
    ("ec2.amazonaws.com", "DescribeVpcEndpoints"),
    ("ec2.amazonaws.com", "DescribeNetworkInterfaces"),
    ("ecr.amazonaws.com", "DescribeRepositories"),
    ("ecr.amazonaws.com", "GetRepositoryPolicy"),
    ("ecr.amazonaws.com", "GetLifecyclePolicy"),
    ("ecr.amazonaws.com", "ListTagsForResource"),
    ("ecs.amazonaws.com", "DescribeClusters"),
    ("ecs.amazonaws.com", "DescribeTaskDefinition"),
    ("ecs.amazonaws.com", "ListServices"),
    ("iam.amazonaws.com", "GetRole"),
    ("iam.amazonaws.com", "ListAttachedRolePolicies"),
    ("cloudtrail.amazonaws.com", "DescribeTrails"),
    ("cloudtrail.amazonaws.com", "GetEventSelectors"),
    ("kms.amazonaws.com", "DescribeKey"),
    ("kms.amazonaws.com", "GetKeyRotationStatus"),
    ("events.amazonaws.com", "ListRules"),
];
const SECURITYHUB_READS: &[(&str, &str)] = &[
    ("cloudtrail.amazonaws.com", "DescribeTrails"),
    ("cloudtrail.amazonaws.com", "GetTrailStatus"),
    ("cloudtrail.amazonaws.com", "GetEventSelectors"),
    ("config.amazonaws.com", "DescribeConfigurationRecorders"),
    ("config.amazonaws.com", "DescribeConfigurationRecorderStatus"),
    ("iam.amazonaws.com", "GetAccountPasswordPolicy"),
    ("iam.amazonaws.com", "GetAccountSummary"),
    ("guardduty.amazonaws.com", "ListDetectors"),
    ("ecr.amazonaws.com", "DescribeRepositories"),
    ("ecr.amazonaws.com", "GetRegistryScanningConfiguration"),
];
const GUARDDUTY_READS: &[(&str, &str)] = &[
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ec2.amazonaws.com", "DescribeVpcEndpoints"),
    ("eks.amazonaws.com", "ListClusters"),
    ("eks.amazonaws.com", "DescribeCluster"),
    ("ecs.amazonaws.com", "ListClusters"),
    ("ecs.amazonaws.com", "DescribeClusters"),
];
const INSPECTOR_READS: &[(&str, &str)] = &[
    ("ecr.amazonaws.com", "DescribeRepositories"),
    ("ecr.amazonaws.com", "DescribeImages"),
    ("ecr.amazonaws.com", "ListImages"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ssm.amazonaws.com", "DescribeInstanceInformation"),
];

/// Request parameters for a read call, shaped like the real ones.
fn read_params(em: &mut Emitter<'_>, source: &str, name: &str, account: usize, region: usize) -> Option<String> {
    let org = em.org;
    let acct = &org.accounts[account];
    let repo = &org.repos[em.rng.random_range(0..org.repos.len())];
    Some(match (source, name) {
        ("ecr.amazonaws.com", "GetRepositoryPolicy" | "GetLifecyclePolicy" | "DescribeImages" | "ListImages") => {
            object(120, |j| {
                j.s("repositoryName", &repo.name).s("registryId", &acct.id);
            })
        }
        ("ecr.amazonaws.com", "ListTagsForResource") => object(160, |j| {
            j.s("resourceArn", &repo_arn(org, repo, region));
        }),
        ("ecr.amazonaws.com", "DescribeRepositories") => object(40, |j| {
            j.n("maxResults", 100);
        }),
        ("ec2.amazonaws.com", "DescribeInstances") => "{\"instancesSet\":{},\"filterSet\":{}}".to_string(),
        ("ec2.amazonaws.com", "DescribeSecurityGroups") => {
            "{\"securityGroupSet\":{},\"securityGroupIdSet\":{},\"filterSet\":{}}".to_string()
        }
        ("ec2.amazonaws.com", "DescribeVpcs") => "{\"vpcSet\":{},\"filterSet\":{}}".to_string(),
        ("ec2.amazonaws.com", _) => object(120, |j| {
            j.key(&format!("{name}Request")).obj().n("MaxResults", 1000).end();
        }),
        ("iam.amazonaws.com", "GetRole" | "ListAttachedRolePolicies") => {
            let role = &acct.deployer.name;
            object(80, |j| {
                j.s("roleName", role);
            })
        }
        ("cloudtrail.amazonaws.com", "GetTrailStatus" | "GetEventSelectors") => {
            let trail = format!(
                "arn:aws:cloudtrail:{}:{}:trail/{}",
                org.regions[0], org.accounts[org.management].id, acct.trail
            );
            object(120, |j| {
                j.s(if name == "GetTrailStatus" { "name" } else { "trailName" }, &trail);
            })
        }
        ("kms.amazonaws.com", _) => object(80, |j| {
            j.s("keyId", &acct.kms_key);
        }),
        ("ecs.amazonaws.com", "DescribeClusters") => {
            let c = format!("{}-ecs", acct.name);
            object(80, |j| {
                j.strs("clusters", &[c.as_str()]);
            })
        }
        ("ecs.amazonaws.com", "DescribeTaskDefinition") => {
            let family = acct.services.first().map(|s| s.name.clone()).unwrap_or_else(|| "app".into());
            object(80, |j| {
                j.s("taskDefinition", &family);
            })
        }
        ("eks.amazonaws.com", "DescribeCluster") => {
            let c = acct.clusters.first().map(|c| c.name.clone()).unwrap_or_else(|| "default".into());
            object(80, |j| {
                j.s("name", &c);
            })
        }
        ("iam.amazonaws.com", _) | ("guardduty.amazonaws.com", _) | ("config.amazonaws.com", _) => return None,
        _ => "{}".to_string(),
    })
}

fn service_linked_role(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let a = org.pick_account(&mut em.rng);
    let acct = &org.accounts[a];
    let roll = em.rng.random_range(0..100);
    let (slr, reads, session) = match roll {
        0..=44 => (0, CONFIG_READS, "AWSConfig-Describe"),
        45..=64 => (1, SECURITYHUB_READS, "securityhub"),
        65..=79 => (2, GUARDDUTY_READS, "GuardDuty"),
        _ => (3, INSPECTOR_READS, "inspector2"),
    };
    let (role, svc) = &acct.slr[slr];
    let key = session_key(em);
    let who = Who::Role {
        account: &acct.id,
        role,
        session,
        key: &key,
        mfa: false,
        created: t - em.rng.random_range(60..3600),
        web_identity: None,
        invoked_by: Some(svc),
    };
    let region = org.pick_region(&mut em.rng);
    let n = em.rng.random_range(3..10);
    let mut tt = t;
    for _ in 0..n {
        let (source, name) = *reads.choose(&mut em.rng).expect("reads");
        let region = if source == "iam.amazonaws.com" { org.global_region() } else { region };
        let params = read_params(em, source, name, a, region);
        let mut call = Call::new(tt, a, region, source_static(source), name, who, svc, svc);
        if let Some(p) = &params {
            call = call.params(p);
        }
        // The errors a busy config recorder really sees: missing policies, and a key policy that keeps it out.
        let err = match name {
            "GetRepositoryPolicy" if em.rng.random_bool(0.6) => {
                Some(("RepositoryPolicyNotFoundException", "Repository policy does not exist for the repository"))
            }
            "GetLifecyclePolicy" if em.rng.random_bool(0.4) => {
                Some(("LifecyclePolicyNotFoundException", "Lifecycle policy does not exist for the repository"))
            }
            "GetKeyRotationStatus" if em.rng.random_bool(0.05) => Some((
                "AccessDeniedException",
                "User is not authorized to perform: kms:GetKeyRotationStatus because no resource-based policy allows it",
            )),
            _ => None,
        };
        if let Some((code, msg)) = err {
            call = call.error(code, msg);
        }
        em.ct(&call);
        tt += em.rng.random_range(0..4);
    }
    n
}

/// The `&'static str` for a service we know (event sources are interned as statics).
pub fn source_static(s: &str) -> &'static str {
    const ALL: &[&str] = &[
        "ec2.amazonaws.com",
        "ecr.amazonaws.com",
        "ecs.amazonaws.com",
        "eks.amazonaws.com",
        "iam.amazonaws.com",
        "sts.amazonaws.com",
        "kms.amazonaws.com",
        "ssm.amazonaws.com",
        "logs.amazonaws.com",
        "events.amazonaws.com",
        "config.amazonaws.com",
        "cloudtrail.amazonaws.com",
        "guardduty.amazonaws.com",
        "securityhub.amazonaws.com",
        "secretsmanager.amazonaws.com",
        "signin.amazonaws.com",
        "autoscaling.amazonaws.com",
        "s3.amazonaws.com",
        "lambda.amazonaws.com",
        "rds.amazonaws.com",
        "organizations.amazonaws.com",
        "cloudwatch.amazonaws.com",
        "inspector2.amazonaws.com",
        "dynamodb.amazonaws.com",
        "sqs.amazonaws.com",
    ];
    ALL.iter().find(|x| **x == s).copied().unwrap_or("unknown.amazonaws.com")
}

fn workload(em: &mut Emitter<'_>, t: i64) -> usize {
    let org = em.org;
    let w = org.pick_workload(&mut em.rng);
    let acct = &org.accounts[w];
    let roll = em.rng.random_range(0..100);
    let key = session_key(em);
    if roll < 45 && !acct.services.is_empty() {
        // A task starting: secrets and logs through the execution role, then the app's own calls.
        let s = acct.services.choose(&mut em.rng).expect("services");
        let (task, ip) = s.tasks.choose(&mut em.rng).expect("tasks");
        let region = s.region;
        let exec = Who::Role {
            account: &acct.id,
            role: &s.exec_role,
            session: task,
            key: &key,
            mfa: false,
            created: t - 5,
            web_identity: None,
            invoked_by: None,
        };
        let mut n = 0;
        for secret in &s.secrets {
            let arn = format!("arn:aws:secretsmanager:{}:{}:secret:{secret}", org.regions[region], acct.id);
            let p = object(160, |j| {
                j.s("secretId", &arn);
            });
            em.ct(&Call::new(t, w, region, "secretsmanager.amazonaws.com", "GetSecretValue", exec, ip, UA_ECS_AGENT)
                .params(&p));
            n += 1;
        }
        let p = object(160, |j| {
            j.s("logGroupName", &format!("/ecs/{}", s.name)).s("logStreamName", &format!("ecs/{}/{task}", s.name));
        });
        em.ct(&Call::new(t + 1, w, region, "logs.amazonaws.com", "CreateLogStream", exec, ip, UA_ECS_AGENT)
            .params(&p)
            .read_only(false));
        n += 1;
        let app = Who::Role {
            account: &acct.id,
            role: &s.task_role,
            session: task,
            key: &key,
            mfa: false,
            created: t - 5,
            web_identity: None,
            invoked_by: None,
        };
        let agent = if em.rng.random_bool(0.5) { UA_BOTO3 } else { UA_JAVA };
        for k in 0..em.rng.random_range(1..4) {
            let tt = t + 2 + k;
            if em.rng.random_bool(0.5) {
                let p = object(120, |j| {
                    j.strs("names", &[&format!("/{}/config/feature-flags", s.name) as &str]).b("withDecryption", true);
                });
                em.ct(&Call::new(tt, w, region, "ssm.amazonaws.com", "GetParameters", app, ip, agent).params(&p));
            } else {
                let p = object(120, |j| {
                    j.s("keyId", &format!("arn:aws:kms:{}:{}:key/{}", org.regions[region], acct.id, acct.kms_key));
                    j.s("encryptionAlgorithm", "SYMMETRIC_DEFAULT");
                });
                em.ct(&Call::new(tt, w, region, "kms.amazonaws.com", "Decrypt", app, ip, agent).params(&p));
            }
            n += 1;
        }
        n
    } else if roll < 80 && !acct.clusters.is_empty() {
        // EKS add-ons through IRSA (VPC CNI, cluster autoscaler).
        let c = acct.clusters.choose(&mut em.rng).expect("clusters");
        let node = c.nodes.choose(&mut em.rng).expect("nodes");
        let (role, sa) = &c.irsa[em.rng.random_range(0..c.irsa.len())];
        let provider = format!(
            "arn:aws:iam::{}:oidc-provider/oidc.eks.{}.amazonaws.com/id/{}",
            acct.id, org.regions[c.region], c.oidc_id
        );
        let session = format!("{}", 1_700_000_000_000_000_000u64 + em.rng.random_range(0..1_000_000_000_000u64));
        let mut n = 0;
        if em.rng.random_bool(0.1) {
            let subject = format!("system:serviceaccount:{sa}");
            let role_arn = format!("arn:aws:iam::{}:role/{}", acct.id, role.name);
            let p = object(200, |j| {
                j.s("roleArn", &role_arn).s("roleSessionName", &session).n("durationSeconds", 86_400);
            });
            let r = assume_role_response(em, t, &acct.id, role, &session);
            em.ct(&Call::new(
                t,
                w,
                c.region,
                "sts.amazonaws.com",
                "AssumeRoleWithWebIdentity",
                Who::WebIdentity { provider: &provider, subject: &subject },
                &node.ip,
                UA_CNI,
            )
            .params(&p)
            .response(&r)
            .read_only(true));
            n += 1;
        }
        let who = Who::Role {
            account: &acct.id,
            role,
            session: &session,
            key: &key,
            mfa: false,
            created: t - 600,
            web_identity: Some(&provider),
            invoked_by: None,
        };
        let calls: &[(&str, &str)] = if sa.ends_with("aws-node") {
            &[
                ("ec2.amazonaws.com", "DescribeNetworkInterfaces"),
                ("ec2.amazonaws.com", "AssignPrivateIpAddresses"),
                ("ec2.amazonaws.com", "DescribeInstances"),
            ]
        } else {
            &[
                ("autoscaling.amazonaws.com", "DescribeAutoScalingGroups"),
                ("autoscaling.amazonaws.com", "DescribeScalingActivities"),
                ("ec2.amazonaws.com", "DescribeLaunchTemplateVersions"),
            ]
        };
        let agent = if sa.ends_with("aws-node") { UA_CNI } else { UA_AUTOSCALER };
        for k in 0..em.rng.random_range(1..4) {
            let (source, name) = calls[k % calls.len()];
            let p = if name == "AssignPrivateIpAddresses" {
                let eni = format!("eni-0{}", util::hex(&mut em.rng, 16));
                object(160, |j| {
                    j.key("AssignPrivateIpAddressesRequest")
                        .obj()
                        .s("NetworkInterfaceId", &eni)
                        .n("SecondaryPrivateIpAddressCount", 1)
                        .end();
                })
            } else if source == "autoscaling.amazonaws.com" {
                object(80, |j| {
                    j.n("maxRecords", 100);
                })
            } else {
                read_params(em, source, name, w, c.region).unwrap_or_else(|| "{}".into())
            };
            em.ct(&Call::new(t + k as i64, w, c.region, source, name, who, &node.ip, agent).params(&p));
            n += 1;
        }
        n
    } else if roll < 97 && !acct.clusters.is_empty() {
        // The SSM agent on a node checking in.
        let c = acct.clusters.choose(&mut em.rng).expect("clusters");
        let node = c.nodes.choose(&mut em.rng).expect("nodes");
        let who = Who::Role {
            account: &acct.id,
            role: &c.node_role,
            session: &node.instance_id,
            key: &key,
            mfa: false,
            created: t - 3000,
            web_identity: None,
            invoked_by: None,
        };
        let p = object(300, |j| {
            j.s("instanceId", &node.instance_id).s("agentVersion", "3.3.987.0").s("agentName", "amazon-ssm-agent");
            j.s("platformType", "Linux")
                .s("platformName", "Amazon Linux")
                .s("iPAddress", &node.ip)
                .s("computerName", &format!("ip-{}.ec2.internal", node.ip.replace('.', "-")));
        });
        em.ct(&Call::new(
            t,
            w,
            c.region,
            "ssm.amazonaws.com",
            "UpdateInstanceInformation",
            who,
            &node.ip,
            UA_SSM_AGENT,
        )
        .params(&p));
        1
    } else if let Some((user, uid, ukey)) = &acct.iam_user {
        // A legacy integration user with access keys, from the on-premises network.
        let ip = format!("10.250.{}.{}", acct.net, 10 + em.rng.random_range(0..5));
        let who = Who::User { account: &acct.id, name: user, id: uid, key: Some(ukey) };
        let region = org.pick_region(&mut em.rng);
        let vol = format!("vol-0{}", util::hex(&mut em.rng, 16));
        let p = object(120, |j| {
            j.s("volumeId", &vol).s("description", "nightly backup");
        });
        em.ct(&Call::new(t, w, region, "ec2.amazonaws.com", "DescribeVolumes", who, &ip, UA_BOTO3)
            .params("{\"maxResults\":500}"));
        em.ct(&Call::new(t + 2, w, region, "ec2.amazonaws.com", "CreateSnapshot", who, &ip, UA_BOTO3).params(&p));
        2
    } else {
        0
    }
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
        Who::Role {
            account: &org.accounts[self.account].id,
            role: self.role,
            session: self.session,
            key: &self.key,
            mfa: false,
            created: self.created,
            web_identity: None,
            invoked_by: None,
        }
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
    let org = em.org;
    let add = object(160, |j| {
        j.s("LoginTo", "https://console.aws.amazon.com/console/home").s("MobileVersion", "No");
        j.s("MFAUsed", if mfa_used { "Yes" } else { "No" });
    });
    let mut c = Call::new(
        t,
        sso.account,
        org.global_region(),
        "signin.amazonaws.com",
        "ConsoleLogin",
        sso.who(org),
        ip,
        UA_BROWSER,
    )
    .response("{\"ConsoleLogin\":\"Success\"}")
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

fn human_session(em: &mut Emitter<'_>, t: i64) -> usize {
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

/// Container definitions for a normal service: the app from ECR with secrets from
/// Secrets Manager, an OpenTelemetry sidecar from public.ecr.aws.
pub fn container_definitions(
    org: &Org,
    account: usize,
    region: usize,
    repo: &Repo,
    tag: &str,
    secrets: &[String],
    extra_env: &[(&str, &str)],
) -> String {
    let acct = &org.accounts[account];
    let image = format!("{}/{}:{tag}", org.registry_host(repo.account, region), repo.name);
    let name = repo.name.replace('/', "-");
    let mut j = Json::with_capacity(1200);
    j.arr();
    j.obj();
    j.s("name", &name).s("image", &image).n("cpu", 256).n("memory", 512).b("essential", true);
    j.key("portMappings").arr().obj().n("containerPort", 8080).s("protocol", "tcp").end().end_arr();
    j.key("environment").arr();
    for (k, v) in [
        ("LOG_LEVEL", "info"),
        ("AWS_REGION", org.regions[region].as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
    ]
    .iter()
    .chain(extra_env.iter())
    {
        j.obj().s("name", k).s("value", v).end();
    }
    j.end_arr();
    j.key("secrets").arr();
    for (i, s) in secrets.iter().enumerate() {
        let env = ["DB_PASSWORD", "API_TOKEN", "SIGNING_KEY"][i % 3];
        j.obj()
            .s("name", env)
            .s("valueFrom", &format!("arn:aws:secretsmanager:{}:{}:secret:{s}", org.regions[region], acct.id))
            .end();
    }
    j.end_arr();
    j.key("logConfiguration").obj().s("logDriver", "awslogs");
    j.key("options")
        .obj()
        .s("awslogs-group", &format!("/ecs/{name}"))
        .s("awslogs-region", &org.regions[region])
        .s("awslogs-stream-prefix", "ecs")
        .end();
    j.end();
    j.end();
    j.obj();
    j.s("name", "otel-collector")
        .s("image", "public.ecr.aws/aws-observability/aws-otel-collector:v0.41.1")
        .b("essential", false);
    j.n("cpu", 64).n("memory", 128);
    j.end();
    j.end_arr();
    j.into_string()
}

/// RegisterTaskDefinition parameters.
pub fn task_definition_params(
    org: &Org,
    account: usize,
    svc: &EcsService,
    containers: &str,
    network: &str,
    extra: &[(&str, &str)],
) -> String {
    let acct = &org.accounts[account];
    object(400 + containers.len(), |j| {
        j.s("family", &svc.name);
        j.s("taskRoleArn", &format!("arn:aws:iam::{}:role/{}", acct.id, svc.task_role.name));
        j.s("executionRoleArn", &format!("arn:aws:iam::{}:role/{}", acct.id, svc.exec_role.name));
        j.s("networkMode", network);
        j.key("containerDefinitions").raw(containers);
        j.strs("requiresCompatibilities", &[if network == "awsvpc" { "FARGATE" } else { "EC2" }]);
        j.s("cpu", "512").s("memory", "1024");
        for (k, v) in extra {
            j.s(k, v);
        }
    })
}

fn ci_pipeline(em: &mut Emitter<'_>, t: i64) -> usize {
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
    let ci = Who::Role {
        account: reg_id,
        role: &org.ci_role,
        session: &run,
        key: &key,
        mfa: false,
        created: t,
        web_identity: None,
        invoked_by: None,
    };
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
    let who = Who::Role {
        account: &acct.id,
        role: &acct.deployer,
        session: &session,
        key: &key,
        mfa: false,
        created: t,
        web_identity: None,
        invoked_by: None,
    };
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
fn scanner(em: &mut Emitter<'_>, t: i64) -> usize {
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
