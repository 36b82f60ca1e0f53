//! Workload traffic: ECS task definitions, tasks starting, EKS add-ons through IRSA,
//! node agents and a legacy integration user.

use rand::seq::IndexedRandom;
use rand::Rng;

use super::identity::{assume_role_response, session_key};
use super::services::read_params;
use crate::agents::*;
use crate::json::{object, Json};
use crate::org::{EcsService, Org, Repo};
use crate::record::{Call, Emitter, Who};
use crate::util;

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

pub(super) fn workload(em: &mut Emitter<'_>, t: i64) -> usize {
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
        let exec = Who::role(&acct.id, &s.exec_role, task, &key, t - 5);
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
        let app = Who::role(&acct.id, &s.task_role, task, &key, t - 5);
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
        let who = Who::role(&acct.id, role, &session, &key, t - 600).web_identity(&provider);
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
        let who = Who::role(&acct.id, &c.node_role, &node.instance_id, &key, t - 3000);
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
