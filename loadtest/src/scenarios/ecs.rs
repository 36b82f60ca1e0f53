//! Scenarios of the theme ECS: risky task definitions, unexpected images and ExecuteCommand; attacks and their benign look-alikes.

use super::*;

/// Registers a task definition in a workload account.
#[allow(clippy::too_many_arguments)]
pub(super) fn register_task_definition(
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

/// Registers a revision of the account's first service: its own image and secrets, with `env` added.
pub(super) fn register_service_revision(
    ctx: &mut Ctx<'_, '_>,
    actor: &Actor,
    w: usize,
    region: usize,
    env: &[(&str, &str)],
) {
    let org = ctx.em.org;
    let svc = &org.accounts[w].services[0];
    let repo = &org.repos[svc.repo];
    let containers = container_definitions(org, w, region, repo, &repo.tag, &svc.secrets, env);
    let t = ctx.t;
    register_task_definition(ctx, actor, t, &containers, "awsvpc", &[]);
}

pub(super) fn single_container(image: &str, name: &str, privileged: bool, env: &[(&str, &str)]) -> String {
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

pub(super) fn workload_region(ctx: &Ctx<'_, '_>, w: usize) -> usize {
    ctx.org().accounts[w].services.first().map(|s| s.region).unwrap_or(0)
}

pub(super) fn privileged_task_definition(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn plaintext_aws_key(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_workload(ctx.rng());
    // A developer's own session from the office: a mistake, still a leaked key.
    let org = ctx.em.org;
    let devs: Vec<_> = org.people.iter().filter(|p| p.permission_set == 3 || p.permission_set == 1).collect();
    let person = devs.choose(ctx.rng()).copied().unwrap_or(&org.people[0]);
    let a = person_session(ctx, person, w, 3, UA_BROWSER);
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let access = util::iam_id(ctx.rng(), "AKIA");
    let secret: String = (0..40)
        .map(|_| {
            *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".choose(ctx.rng()).unwrap_or(&b'x')
                as char
        })
        .collect();
    let env = [("AWS_ACCESS_KEY_ID", access.as_str()), ("AWS_SECRET_ACCESS_KEY", &secret)];
    register_service_revision(ctx, &a, w, region, &env);
}

pub(super) fn unapproved_registry_image(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn execute_command(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn task_definition_with_secrets(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let w = org.pick_workload(ctx.rng());
    let acct = &org.accounts[w];
    let a = ci_session(ctx, w, &acct.deployer, "-deploy", 1, traffic::UA_CI_ECS);
    let region = workload_region(ctx, w);
    begin(ctx, &a, region);
    let svc = &acct.services[0];
    let secret_arn = format!("arn:aws:secretsmanager:{}:{}:secret:{}", org.regions[region], acct.id, svc.secrets[0]);
    // Secret-looking names whose values are references, not secrets.
    let env = [
        ("DB_PASSWORD_SECRET_ARN", secret_arn.as_str()),
        ("API_TOKEN_PARAMETER", "/payments/api-token"),
        ("AWS_DEFAULT_REGION", &org.regions[region]),
    ];
    register_service_revision(ctx, &a, w, region, &env);
}

pub(super) fn node_scale_out(ctx: &mut Ctx<'_, '_>) {
    let org = ctx.em.org;
    let w = org.pick_workload(ctx.rng());
    let acct = &org.accounts[w];
    let c = &acct.clusters[0];
    let instance = util::instance_id(ctx.rng());
    let ip = format!("10.{}.{}.{}", acct.net, ctx.rng().random_range(0..64), ctx.rng().random_range(4..250));
    let key = session_key(ctx.em);
    ctx.account = w;
    ctx.region = c.region;
    let who = Who::role(&acct.id, &c.node_role, &instance, &key, ctx.t);
    ctx.principal = who.arn();
    let mut central: Vec<usize> = (0..org.repos.len()).filter(|&r| org.repos[r].account == org.registry).collect();
    let k = central.len().min(12);
    let (picked, _) = central.partial_shuffle(ctx.rng(), k);
    let picked = picked.to_vec();
    let mut t = ctx.t;
    for (i, repo) in picked.into_iter().enumerate() {
        let n = org.repos[repo].layers.len();
        let ids = pull_image(ctx.em, t, w, c.region, repo, who, &ip, (UA_CRED_PROVIDER, UA_CONTAINERD), n, i == 0);
        ctx.take(ids, t + n as i64);
        t += ctx.rng().random_range(5..15);
    }
}
