//! AWS services at work: service principals assuming roles, service-linked roles
//! reading configuration, and the interned event sources.

use rand::seq::IndexedRandom;
use rand::Rng;

use super::ecr::repo_arn;
use super::identity::{assume_role_response, session_key};
use crate::json::object;
use crate::org::Role;
use crate::record::{Call, Emitter, Who};
use crate::util;

pub(super) fn service_principal(em: &mut Emitter<'_>, t: i64) -> usize {
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
        let who = Who::role(&acct.id, &s.exec_role, task, &key, t - 30).invoked_by("secretsmanager.amazonaws.com");
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
pub(super) fn read_params(
    em: &mut Emitter<'_>,
    source: &str,
    name: &str,
    account: usize,
    region: usize,
) -> Option<String> {
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

pub(super) fn service_linked_role(em: &mut Emitter<'_>, t: i64) -> usize {
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
    let who = Who::role(&acct.id, role, session, &key, t - em.rng.random_range(60..3600)).invoked_by(svc);
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
