//! Scenarios of the theme Monitoring and network-control tampering: CloudTrail, Config, Security Hub, GuardDuty, EventBridge, VPC endpoint policies; attacks and their benign look-alikes.

use super::*;

pub(super) fn trail_arn(org: &Org, account: usize) -> String {
    format!("arn:aws:cloudtrail:{}:{}:trail/{}", org.regions[0], org.accounts[account].id, org.accounts[account].trail)
}

pub(super) fn stop_then_delete_trail(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn event_selectors(ctx: &mut Ctx<'_, '_>, drop_management: bool) {
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

pub(super) fn config_recorder_stopped(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn config_recorder_updated(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn securityhub_disabled(ctx: &mut Ctx<'_, '_>) {
    let w = ctx.org().pick_account(ctx.rng());
    let a = attacker(ctx, w);
    begin(ctx, &a, 0);
    let t = ctx.t;
    call(ctx, &a, t, "securityhub.amazonaws.com", "DisableSecurityHub", Some("{}"), None);
}

pub(super) fn securityhub_standard_enabled(ctx: &mut Ctx<'_, '_>) {
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

pub(super) fn guardduty_detector(ctx: &mut Ctx<'_, '_>, delete: bool) {
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

pub(super) fn eventbridge_rule_disabled(ctx: &mut Ctx<'_, '_>, security: bool) {
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

pub(super) fn vpc_endpoint_policy(ctx: &mut Ctx<'_, '_>, attack: bool) {
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
