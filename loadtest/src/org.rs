//! The synthetic organisation: accounts, regions, workloads, registries,
//! people and the roles they use. Built once from the seed; traffic and
//! scenarios pick their principals from it.
//!
//! Layout (with N accounts): account 0 is the management account, 1 the
//! security (audit) account, 2 the log archive, 3 shared services (the
//! central ECR registry and CI), the rest are workload accounts cycling
//! through prod, staging and dev. With fewer than five accounts the roles
//! share accounts, and the last account carries the workloads.

use rand::seq::IndexedRandom;
use rand::Rng;

use crate::util::{self, Rand};

/// What an account is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Management,
    Security,
    LogArchive,
    SharedServices,
    Workload(Env),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Prod,
    Staging,
    Dev,
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Prod => "prod",
            Env::Staging => "staging",
            Env::Dev => "dev",
        }
    }
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Management => "management",
            AccountKind::Security => "security",
            AccountKind::LogArchive => "log-archive",
            AccountKind::SharedServices => "shared-services",
            AccountKind::Workload(e) => e.as_str(),
        }
    }
}

/// An IAM role (the part of an ARN after `role/`, plus its unique id).
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    /// Path inside the ARN, e.g. `aws-reserved/sso.amazonaws.com/eu-west-1/` or `aws-service-role/config.amazonaws.com/`.
    pub path: String,
    /// `AROA...`
    pub id: String,
}

impl Role {
    fn new(rng: &mut Rand, name: impl Into<String>, path: impl Into<String>) -> Role {
        Role { name: name.into(), path: path.into(), id: util::iam_id(rng, "AROA") }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub instance_id: String,
    pub ip: String,
}

/// An EKS cluster with its node group role and nodes.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub region: usize,
    pub node_role: Role,
    pub nodes: Vec<Node>,
    /// IRSA roles used by add-ons (VPC CNI, autoscaler), with their service accounts.
    pub irsa: Vec<(Role, &'static str)>,
    pub oidc_id: String,
    /// User agents of the node's ECR calls: token and manifest (the
    /// credential provider), and layers (the container runtime).
    pub pull_agent: &'static str,
    pub layer_agent: &'static str,
}

/// An ECS service and its roles.
#[derive(Debug, Clone)]
pub struct EcsService {
    pub cluster: String,
    pub name: String,
    pub region: usize,
    pub exec_role: Role,
    pub task_role: Role,
    pub repo: usize,
    pub tasks: Vec<(String, String)>,
    pub secrets: Vec<String>,
    /// User agents of the task's image pull (manifest, layers).
    pub pull_agent: &'static str,
    pub layer_agent: &'static str,
}

/// An IAM Identity Center permission set as it appears in an account.
#[derive(Debug, Clone)]
pub struct SsoRole {
    pub permission_set: &'static str,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    /// Share of workload traffic.
    pub weight: f64,
    /// Second octet of the account's 10.x VPC range.
    pub net: u8,
    pub clusters: Vec<Cluster>,
    pub services: Vec<EcsService>,
    pub sso: Vec<SsoRole>,
    /// Role CI assumes to deploy here.
    pub deployer: Role,
    /// Service-linked roles (Config, Security Hub, GuardDuty, Inspector).
    pub slr: Vec<(Role, &'static str)>,
    /// A legacy IAM user with access keys (integration), if any.
    pub iam_user: Option<(String, String, String)>,
    pub trail: String,
    pub kms_key: String,
    pub vpce_ecr: String,
}

/// An ECR repository and the layers of its current image.
#[derive(Debug, Clone)]
pub struct Repo {
    pub account: usize,
    pub name: String,
    pub layers: Vec<String>,
    pub digest: String,
    pub tag: String,
}

/// A person who signs in through IAM Identity Center.
#[derive(Debug, Clone)]
pub struct Person {
    pub email: String,
    pub ip: String,
    /// Index into each account's `sso` list.
    pub permission_set: usize,
    pub accounts: Vec<usize>,
    pub engineer: bool,
}

/// Size and shape of the org.
#[derive(Debug, Clone)]
pub struct OrgOptions {
    pub accounts: usize,
    /// Regions workloads run in; the first is the primary region.
    pub regions: Vec<String>,
    pub org_id: Option<String>,
    /// How the org names its machine roles and which runtimes pull images.
    pub variant: Variant,
}

/// Org variants whose role names the pack's defaults were not written for
/// (the same traffic; only machine role names and runtime user agents differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// eksctl-style node roles, `*TaskExecutionRole` task roles (what the defaults were written for).
    #[default]
    Default,
    /// AWS's documented defaults: `AmazonEKSNodeRole`, `ecsTaskExecutionRole`; ECS on EC2 pulls through dockerd.
    AwsDefaults,
    /// eksctl: `eksctl-<cluster>-nodegroup-<ng>-NodeInstanceRole-<random>`.
    Eksctl,
    /// Karpenter: `KarpenterNodeRole-<cluster>`.
    Karpenter,
    /// terraform-aws-modules: `<ng>-eks-node-group-<timestamp>`, `<svc>-task-exec-<timestamp>`.
    Terraform,
    /// CDK: `<Stack>-<Construct>NodegroupRole<hash>-<RANDOM>`, `<Stack>-TaskDefExecutionRole<hash>-<RANDOM>`.
    Cdk,
    /// Bottlerocket nodes (containerd +bottlerocket, bottlerocket/ecr-credential-provider) with a plain role name.
    Bottlerocket,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::AwsDefaults => "aws-defaults",
            Variant::Eksctl => "eksctl",
            Variant::Karpenter => "karpenter",
            Variant::Terraform => "terraform",
            Variant::Cdk => "cdk",
            Variant::Bottlerocket => "bottlerocket",
        }
    }
}

/// Bottlerocket's runtime and credential provider as they identify themselves.
pub const UA_BOTTLEROCKET_CONTAINERD: &str = "containerd/1.6.36+bottlerocket";
pub const UA_BOTTLEROCKET_CRED: &str = "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/ecr#1.32.0 bottlerocket/ecr-credential-provider";

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub accounts: Vec<Account>,
    /// Configured regions first, then `us-east-1` if missing (global services log there).
    pub regions: Vec<String>,
    pub workload_regions: usize,
    pub management: usize,
    pub security: usize,
    pub log_archive: usize,
    pub registry: usize,
    pub workloads: Vec<usize>,
    pub repos: Vec<Repo>,
    pub people: Vec<Person>,
    pub email_domain: String,
    pub office_cidrs: Vec<String>,
    pub office_ips: Vec<String>,
    /// Accounts not in the org (attackers, strangers).
    pub outside_accounts: Vec<String>,
    /// CI role in the shared-services account.
    pub ci_role: Role,
    pub ci_runner_ips: Vec<String>,
    /// Approved upstream registries for pull-through cache rules.
    pub approved_upstreams: Vec<&'static str>,
    /// IAM Identity Center's SAML provider in every account, and the id CloudTrail shows for it.
    pub saml_provider: String,
    pub saml_id: String,
}

const TEAMS: &[&str] = &[
    "payments",
    "checkout",
    "catalog",
    "search",
    "identity",
    "ledger",
    "notify",
    "pricing",
    "orders",
    "inventory",
    "shipping",
    "reviews",
    "billing",
    "fraud",
    "reports",
    "gateway",
    "media",
    "profile",
    "loyalty",
    "support",
];
const COMPONENTS: &[&str] = &["api", "worker", "web", "batch", "consumer", "scheduler", "sync", "gateway"];
const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallika", "niaj", "olivia",
    "peggy", "rupert", "sybil", "trent", "victor", "wendy", "yusuf", "zoe", "amir", "bea", "chen", "dana", "elif",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "nguyen", "kowalski", "okafor", "tanaka", "silva", "muller", "rossi", "haddad",
    "ivanova", "larsen", "dubois", "kim", "patel",
];
pub const PERMISSION_SETS: &[&str] = &["AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess", "DeveloperAccess"];

impl Org {
    pub fn new(opts: &OrgOptions, rng: &mut Rand) -> Org {
        let n = opts.accounts.max(1);
        let mut regions = opts.regions.clone();
        if regions.is_empty() {
            regions.push("us-east-1".into());
        }
        let workload_regions = regions.len();
        if !regions.iter().any(|r| r == "us-east-1") {
            regions.push("us-east-1".into());
        }
        let org_id = opts.org_id.clone().unwrap_or_else(|| format!("o-{}", util::lower_alnum(rng, 10)));
        let sso_region = regions[0].clone();
        let email_domain = "example.com".to_string();

        let role_of = |i: usize| -> usize { i.min(n - 1) };
        let (management, security, log_archive, registry) = (role_of(0), role_of(1), role_of(2), role_of(3));
        let workloads: Vec<usize> = if n > 4 { (4..n).collect() } else { vec![n - 1] };

        let mut accounts = Vec::with_capacity(n);
        for i in 0..n {
            let workload_pos = workloads.iter().position(|&w| w == i);
            let kind = match workload_pos {
                Some(k) => AccountKind::Workload([Env::Prod, Env::Staging, Env::Dev][k % 3]),
                None if i == registry => AccountKind::SharedServices,
                None if i == log_archive => AccountKind::LogArchive,
                None if i == security => AccountKind::Security,
                None => AccountKind::Management,
            };
            let id = loop {
                let id = util::account_id(rng);
                if !accounts.iter().any(|a: &Account| a.id == id) {
                    break id;
                }
            };
            let name = match (kind, workload_pos) {
                (AccountKind::Workload(e), Some(k)) => {
                    let team = TEAMS[(k / 3) % TEAMS.len()];
                    let round = k / (3 * TEAMS.len());
                    if round > 0 {
                        format!("{team}{round}-{}", e.as_str())
                    } else {
                        format!("{team}-{}", e.as_str())
                    }
                }
                (k, _) => k.as_str().to_string(),
            };
            let sso = PERMISSION_SETS
                .iter()
                .map(|ps| {
                    let suffix = util::hex(rng, 16);
                    SsoRole {
                        permission_set: ps,
                        role: Role::new(
                            rng,
                            format!("AWSReservedSSO_{ps}_{suffix}"),
                            format!("aws-reserved/sso.amazonaws.com/{sso_region}/"),
                        ),
                    }
                })
                .collect();
            let slr = vec![
                (
                    Role::new(rng, "AWSServiceRoleForConfig", "aws-service-role/config.amazonaws.com/"),
                    "config.amazonaws.com",
                ),
                (
                    Role::new(rng, "AWSServiceRoleForSecurityHub", "aws-service-role/securityhub.amazonaws.com/"),
                    "securityhub.amazonaws.com",
                ),
                (
                    Role::new(rng, "AWSServiceRoleForAmazonGuardDuty", "aws-service-role/guardduty.amazonaws.com/"),
                    "guardduty.amazonaws.com",
                ),
                (
                    Role::new(rng, "AWSServiceRoleForAmazonInspector2", "aws-service-role/inspector2.amazonaws.com/"),
                    "inspector2.amazonaws.com",
                ),
            ];
            let weight = match kind {
                AccountKind::Workload(Env::Prod) => 3.0,
                AccountKind::Workload(Env::Staging) => 1.5,
                AccountKind::Workload(Env::Dev) => 1.0,
                AccountKind::SharedServices => 1.0,
                _ => 0.3,
            };
            let iam_user = matches!(kind, AccountKind::Workload(_)).then(|| {
                (
                    format!("svc-{}-backup", name.split('-').next().unwrap_or("legacy")),
                    util::iam_id(rng, "AIDA"),
                    util::iam_id(rng, "AKIA"),
                )
            });
            accounts.push(Account {
                deployer: Role::new(rng, format!("{name}-deployer"), ""),
                id,
                name,
                kind,
                weight,
                net: (i % 250) as u8 + 1,
                clusters: Vec::new(),
                services: Vec::new(),
                sso,
                slr,
                iam_user,
                trail: format!("org-trail-{}", util::lower_alnum(rng, 6)),
                kms_key: util::uuid(rng),
                vpce_ecr: format!("vpce-0{}", util::hex(rng, 16)),
            });
        }

        // Repositories: central ones in shared services, a few local ones per workload account.
        let mut repos = Vec::new();
        let central = (8 + 4 * workloads.len()).min(120);
        for k in 0..central {
            let team = TEAMS[k % TEAMS.len()];
            let comp = COMPONENTS[(k / TEAMS.len() + k) % COMPONENTS.len()];
            repos.push(new_repo(rng, registry, format!("{team}/{comp}")));
        }
        for base in ["base/python", "base/node", "base/jvm", "tools/otel-collector"] {
            repos.push(new_repo(rng, registry, base.to_string()));
        }
        for &w in &workloads {
            for k in 0..2 {
                let name = format!("{}/{}", accounts[w].name, ["jobs", "migrations"][k]);
                repos.push(new_repo(rng, w, name));
            }
        }

        // Workloads: one or two EKS clusters and a few ECS services per workload account.
        for &w in &workloads {
            let acct_name = accounts[w].name.clone();
            let net = accounts[w].net;
            let n_clusters = 1 + usize::from(accounts[w].weight > 2.0);
            for c in 0..n_clusters {
                let region = if c == 0 || workload_regions == 1 { 0 } else { 1 + (c - 1) % (workload_regions - 1) };
                let name = format!("{acct_name}-eks-{}", c + 1);
                let suffix = util::upper_alnum(rng, 12);
                let node_role = Role::new(rng, format!("eksctl-{name}-nodegroup-NodeInstanceRole-{suffix}"), "");
                let nodes = (0..rng.random_range(4..12))
                    .map(|_| Node {
                        instance_id: util::instance_id(rng),
                        ip: format!("10.{net}.{}.{}", rng.random_range(0..64), rng.random_range(4..250)),
                    })
                    .collect();
                let irsa = vec![
                    (Role::new(rng, format!("{name}-aws-node"), ""), "kube-system:aws-node"),
                    (Role::new(rng, format!("{name}-cluster-autoscaler"), ""), "kube-system:cluster-autoscaler"),
                ];
                accounts[w].clusters.push(Cluster {
                    name,
                    region,
                    node_role,
                    nodes,
                    irsa,
                    oidc_id: util::hex(rng, 32).to_uppercase(),
                    pull_agent: crate::agents::UA_CRED_PROVIDER,
                    layer_agent: crate::agents::UA_CONTAINERD,
                });
            }
            let n_services = rng.random_range(2..5);
            for s in 0..n_services {
                let repo = rng.random_range(0..central);
                let svc = repos[repo].name.replace('/', "-");
                let exec_role = if s == 0 {
                    Role::new(rng, "ecsTaskExecutionRole", "")
                } else {
                    Role::new(rng, format!("{svc}-TaskExecutionRole"), "")
                };
                let region = if workload_regions > 1 && s % 3 == 2 { 1 } else { 0 };
                let tasks = (0..rng.random_range(2..6))
                    .map(|_| {
                        (
                            util::hex(rng, 32),
                            format!("10.{net}.{}.{}", rng.random_range(64..128), rng.random_range(4..250)),
                        )
                    })
                    .collect();
                let secrets = (0..rng.random_range(1..4))
                    .map(|k| {
                        format!(
                            "{svc}/{}-{}",
                            ["db-password", "api-token", "signing-key"][k],
                            util::lower_alnum(rng, 6)
                        )
                    })
                    .collect();
                accounts[w].services.push(EcsService {
                    cluster: format!("{acct_name}-ecs"),
                    name: svc.clone(),
                    region,
                    exec_role,
                    task_role: Role::new(rng, format!("{svc}-task-role"), ""),
                    repo,
                    tasks,
                    secrets,
                    pull_agent: crate::agents::UA_ECS_AGENT,
                    layer_agent: crate::agents::UA_CONTAINERD,
                });
            }
        }

        // People: platform engineers (admin everywhere), developers, read-only auditors.
        let n_people = 4 + n * 2;
        let mut people = Vec::with_capacity(n_people);
        for p in 0..n_people {
            let email = format!(
                "{}.{}{}@{email_domain}",
                FIRST[p % FIRST.len()],
                LAST[(p * 7 + 3) % LAST.len()],
                if p >= FIRST.len() { (p / FIRST.len()).to_string() } else { String::new() }
            );
            let (permission_set, accts, engineer) = match p % 5 {
                0 => (0, (0..n).collect::<Vec<_>>(), true),
                4 => (2, (0..n).collect(), false),
                1 | 2 => {
                    let mut a: Vec<usize> = workloads.choose_multiple(rng, 3.min(workloads.len())).copied().collect();
                    a.push(registry);
                    a.sort_unstable();
                    a.dedup();
                    (3, a, true)
                }
                _ => {
                    let mut a: Vec<usize> = workloads.choose_multiple(rng, 2.min(workloads.len())).copied().collect();
                    a.sort_unstable();
                    (1, a, true)
                }
            };
            people.push(Person { email, ip: String::new(), permission_set, accounts: accts, engineer });
        }
        // Offices egress from two public /24s; some people work from home.
        let office_cidrs: Vec<String> = (0..2)
            .map(|_| {
                let ip = util::public_ip(rng);
                let parts: Vec<&str> = ip.split('.').collect();
                format!("{}.{}.{}.0/24", parts[0], parts[1], parts[2])
            })
            .collect();
        let office_ips: Vec<String> = office_cidrs
            .iter()
            .flat_map(|c| {
                let base = c.trim_end_matches("0/24").to_string();
                [format!("{base}17"), format!("{base}42"), format!("{base}201")]
            })
            .collect();
        for p in &mut people {
            p.ip = if rng.random_bool(0.7) {
                office_ips.choose(rng).cloned().unwrap_or_default()
            } else {
                util::public_ip(rng)
            };
        }

        let mut outside_accounts = Vec::new();
        while outside_accounts.len() < 6 {
            let id = util::account_id(rng);
            if !accounts.iter().any(|a| a.id == id) && !outside_accounts.contains(&id) {
                outside_accounts.push(id);
            }
        }
        let mut ci_runner_ips: Vec<String> =
            (0..4).map(|_| format!("10.{}.200.{}", accounts[registry].net, rng.random_range(4..250))).collect();
        ci_runner_ips.extend((0..4).map(|_| util::public_ip(rng)));
        let saml_provider = format!("AWSSSO_{}_DO_NOT_DELETE", util::hex(rng, 16));
        let saml_id = format!("{}=", util::upper_alnum(rng, 27));
        let mut org = Org {
            saml_provider,
            saml_id,
            id: org_id,
            ci_role: Role::new(rng, "github-actions-ecr-push", ""),
            accounts,
            regions,
            workload_regions,
            management,
            security,
            log_archive,
            registry,
            workloads,
            repos,
            people,
            email_domain,
            office_cidrs,
            office_ips,
            outside_accounts,
            ci_runner_ips,
            approved_upstreams: vec!["public.ecr.aws", "registry.k8s.io"],
        };
        org.apply_variant(opts.variant);
        org
    }

    /// Renames the machine roles and sets the runtimes' user agents of a
    /// variant. Its own random stream, so every variant has the same traffic
    /// as the default org (only names and user agents differ).
    fn apply_variant(&mut self, v: Variant) {
        use rand::SeedableRng;
        if v == Variant::Default {
            return;
        }
        let mut rng = Rand::seed_from_u64(0x5eed_0000 + v as u64);
        let rng = &mut rng;
        let stamp = |rng: &mut Rand| -> String {
            // terraform's name_prefix suffix: UTC timestamp + counter, 26 digits.
            format!(
                "2024{:02}{:02}{:02}{:02}{:02}{:04}00000000{:02}",
                rng.random_range(1..13),
                rng.random_range(1..29),
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60),
                rng.random_range(0..10_000),
                rng.random_range(1..20)
            )
        };
        let stack = ["PlatformStack", "EksClusterStack", "WorkloadsStack"];
        for acct in &mut self.accounts {
            let acct_name = acct.name.clone();
            for c in &mut acct.clusters {
                let id = c.node_role.id.clone();
                let name = match v {
                    Variant::Default => unreachable!(),
                    Variant::AwsDefaults => "AmazonEKSNodeRole".to_string(),
                    Variant::Eksctl => format!(
                        "eksctl-{}-nodegroup-ng-{}-NodeInstanceRole-{}",
                        c.name,
                        util::hex(rng, 8),
                        util::upper_alnum(rng, 12)
                    ),
                    Variant::Karpenter => format!("KarpenterNodeRole-{}", c.name),
                    Variant::Terraform => format!(
                        "{}-eks-node-group-{}",
                        ["default", "general", "system"][rng.random_range(0..3)],
                        stamp(rng)
                    ),
                    Variant::Cdk => format!(
                        "{}-{}NodegroupDefaultCapacityNodeGroupRole{}-{}",
                        stack[rng.random_range(0..stack.len())],
                        "Cluster",
                        util::hex(rng, 8).to_uppercase(),
                        util::upper_alnum(rng, 12)
                    ),
                    Variant::Bottlerocket => format!("{}-workers", c.name),
                };
                c.node_role = Role { name, path: String::new(), id };
                if v == Variant::Bottlerocket {
                    c.pull_agent = UA_BOTTLEROCKET_CRED;
                    c.layer_agent = UA_BOTTLEROCKET_CONTAINERD;
                }
            }
            for s in &mut acct.services {
                let id = s.exec_role.id.clone();
                let name = match v {
                    Variant::AwsDefaults => Some("ecsTaskExecutionRole".to_string()),
                    Variant::Terraform => Some(format!("{}-task-exec-{}", s.name, stamp(rng))),
                    Variant::Cdk => Some(format!(
                        "{}-{}TaskDefExecutionRole{}-{}",
                        stack[rng.random_range(0..stack.len())],
                        acct_name.replace('-', ""),
                        util::hex(rng, 8).to_uppercase(),
                        util::upper_alnum(rng, 12)
                    )),
                    _ => None,
                };
                if let Some(name) = name {
                    s.exec_role = Role { name, path: String::new(), id };
                }
                if v == Variant::AwsDefaults {
                    // The ECS agent on EC2 pulls through dockerd.
                    s.layer_agent = crate::agents::UA_DOCKER;
                }
            }
        }
    }

    pub fn account_ids(&self) -> Vec<String> {
        self.accounts.iter().map(|a| a.id.clone()).collect()
    }

    /// The registry host of an account in a region.
    pub fn registry_host(&self, account: usize, region: usize) -> String {
        format!("{}.dkr.ecr.{}.amazonaws.com", self.accounts[account].id, self.regions[region])
    }

    /// The index of `us-east-1` (where global services log).
    pub fn global_region(&self) -> usize {
        self.regions.iter().position(|r| r == "us-east-1").unwrap_or(0)
    }

    /// A workload account, weighted by environment.
    pub fn pick_workload(&self, rng: &mut Rand) -> usize {
        let total: f64 = self.workloads.iter().map(|&w| self.accounts[w].weight).sum();
        let mut x = rng.random_range(0.0..total);
        for &w in &self.workloads {
            x -= self.accounts[w].weight;
            if x <= 0.0 {
                return w;
            }
        }
        self.workloads[self.workloads.len() - 1]
    }

    /// Any account, weighted.
    pub fn pick_account(&self, rng: &mut Rand) -> usize {
        let total: f64 = self.accounts.iter().map(|a| a.weight).sum();
        let mut x = rng.random_range(0.0..total);
        for (i, a) in self.accounts.iter().enumerate() {
            x -= a.weight;
            if x <= 0.0 {
                return i;
            }
        }
        self.accounts.len() - 1
    }

    /// A workload region: the primary most of the time.
    pub fn pick_region(&self, rng: &mut Rand) -> usize {
        if self.workload_regions == 1 || rng.random_bool(0.75) {
            0
        } else {
            rng.random_range(1..self.workload_regions)
        }
    }
}

fn new_repo(rng: &mut Rand, account: usize, name: String) -> Repo {
    let layers = (0..rng.random_range(3..13)).map(|_| util::digest(rng)).collect();
    Repo {
        account,
        name,
        layers,
        digest: util::digest(rng),
        tag: format!("v1.{}.{}", rng.random_range(0..40), rng.random_range(0..20)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn org(n: usize) -> Org {
        let mut rng = Rand::seed_from_u64(7);
        Org::new(
            &OrgOptions {
                accounts: n,
                regions: vec!["eu-west-1".into(), "eu-central-1".into()],
                org_id: None,
                variant: Variant::Default,
            },
            &mut rng,
        )
    }

    #[test]
    fn roles_and_sizes() {
        let o = org(20);
        assert_eq!(o.accounts.len(), 20);
        assert_eq!(o.workloads.len(), 16);
        assert_eq!(o.regions, ["eu-west-1", "eu-central-1", "us-east-1"]);
        assert_eq!(o.global_region(), 2);
        assert_eq!(o.accounts[o.registry].kind, AccountKind::SharedServices);
        assert!(o.repos.iter().any(|r| r.account == o.registry));
        let ids: std::collections::BTreeSet<_> = o.account_ids().into_iter().collect();
        assert_eq!(ids.len(), 20);
        assert!(o.outside_accounts.iter().all(|a| !ids.contains(a)));
        for &w in &o.workloads {
            assert!(!o.accounts[w].clusters.is_empty() && !o.accounts[w].services.is_empty());
        }
        assert!(o.id.starts_with("o-"));
    }

    #[test]
    fn tiny_orgs_work() {
        for n in 1..5 {
            let o = org(n);
            assert_eq!(o.accounts.len(), n);
            assert_eq!(o.workloads, vec![n - 1]);
        }
    }
}
