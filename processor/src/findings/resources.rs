//! Typed ASFF resources read from the event, most specific first.

use serde_json::{json, Value};
use trailwatch_rules::EventClass;

use super::asff::Resource;

static NULL: Value = Value::Null;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn res(kind: &str, id: String, region: Option<&str>, details: Option<Value>) -> Resource {
    let partition = id
        .strip_prefix("arn:")
        .and_then(|r| r.split(':').next())
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
        .to_string();
    Resource { kind: kind.into(), id, partition, region: region.map(str::to_string), details }
}

/// `arn:aws:sts::A:assumed-role/NAME/SESSION` → `arn:aws:iam::A:role/NAME`.
pub(super) fn role_arn_of_assumed(arn: &str) -> Option<String> {
    let (head, rest) = arn.split_once(":assumed-role/")?;
    let name = rest.split('/').next()?;
    let head = head.replacen(":sts:", ":iam:", 1);
    Some(format!("{head}:role/{name}"))
}

pub(super) fn resources_of(class: EventClass, ev: &Value, region: Option<&str>) -> Vec<Resource> {
    let mut out = Vec::new();
    match class {
        EventClass::CloudTrail => {
            let account = s(ev, &["recipientAccountId"]).unwrap_or("");
            let rp = ev.get("requestParameters").unwrap_or(&NULL);
            if let Some(repo) = s(rp, &["repositoryName"]) {
                let registry = s(rp, &["registryId"]).unwrap_or(account);
                let r = region.unwrap_or("us-east-1");
                let repo_arn = format!("arn:aws:ecr:{r}:{registry}:repository/{repo}");
                let digest = s(rp, &["imageDigest"]).or_else(|| s(rp, &["layerDigest"])).or_else(|| {
                    rp.get("imageIds").and_then(|i| i.get(0)).and_then(|i| i.get("imageDigest")).and_then(Value::as_str)
                });
                if let Some(d) = digest {
                    out.push(res(
                        "AwsEcrContainerImage",
                        format!("{repo_arn}/{d}"),
                        region,
                        Some(json!({"AwsEcrContainerImage": {"RegistryId": registry, "RepositoryName": repo, "ImageDigest": d}})),
                    ));
                }
                out.push(res(
                    "AwsEcrRepository",
                    repo_arn,
                    region,
                    Some(json!({"AwsEcrRepository": {"RepositoryName": repo}})),
                ));
            }
            let td = s(ev, &["responseElements", "taskDefinition", "taskDefinitionArn"])
                .map(str::to_string)
                .or_else(|| s(rp, &["taskDefinition"]).map(str::to_string))
                .or_else(|| {
                    s(rp, &["family"])
                        .map(|f| format!("arn:aws:ecs:{}:{account}:task-definition/{f}", region.unwrap_or("us-east-1")))
                });
            if let Some(td) = td {
                let id = if td.starts_with("arn:") {
                    td
                } else {
                    format!("arn:aws:ecs:{}:{account}:task-definition/{td}", region.unwrap_or("us-east-1"))
                };
                out.push(res("AwsEcsTaskDefinition", id, region, None));
            }
            // The task an ECS call names (ExecuteCommand: a response may stop it).
            if let Some(t) =
                s(rp, &["task"]).filter(|t| !t.is_empty() && s(ev, &["eventSource"]) == Some("ecs.amazonaws.com"))
            {
                let id = if t.starts_with("arn:") {
                    t.to_string()
                } else {
                    let c = s(rp, &["cluster"]).unwrap_or("default");
                    let c = c.rsplit_once("cluster/").map_or(c, |(_, n)| n);
                    format!("arn:aws:ecs:{}:{account}:task/{c}/{t}", region.unwrap_or("us-east-1"))
                };
                out.push(res("AwsEcsTask", id, region, None));
            }
            if let Some(c) = s(rp, &["cluster"]) {
                let id = if c.starts_with("arn:") {
                    c.to_string()
                } else {
                    format!("arn:aws:ecs:{}:{account}:cluster/{c}", region.unwrap_or("us-east-1"))
                };
                out.push(res("AwsEcsCluster", id, region, None));
            }
            // The trail a CloudTrail call changed (a response restarts a stopped one).
            if s(ev, &["eventSource"]) == Some("cloudtrail.amazonaws.com") {
                if let Some(name) = s(rp, &["name"]).filter(|n| !n.is_empty()) {
                    let id = if name.starts_with("arn:") {
                        name.to_string()
                    } else {
                        format!("arn:aws:cloudtrail:{}:{account}:trail/{name}", region.unwrap_or("us-east-1"))
                    };
                    out.push(res("AwsCloudTrailTrail", id, region, None));
                }
            }
            // The Config recorder a Config call changed (a response restarts a
            // stopped one). ASFF has no type for it: Other, with its ARN.
            if s(ev, &["eventSource"]) == Some("config.amazonaws.com") {
                if let Some(name) = s(rp, &["configurationRecorderName"]).filter(|n| !n.is_empty()) {
                    let id = format!(
                        "arn:aws:config:{}:{account}:configuration-recorder/{name}",
                        region.unwrap_or("us-east-1")
                    );
                    out.push(res("Other", id, region, None));
                }
            }
            let ui = ev.get("userIdentity").unwrap_or(&NULL);
            let arn = s(ui, &["arn"]).unwrap_or("");
            // The type when given, else what the ARN says (correlation
            // findings carry only the grouped fields).
            let kind = s(ui, &["type"]).unwrap_or(if arn.contains(":assumed-role/") {
                "AssumedRole"
            } else if arn.contains(":user/") {
                "IAMUser"
            } else if arn.ends_with(":root") {
                "Root"
            } else if arn.contains(":role/") {
                "Role"
            } else {
                ""
            });
            match kind {
                "IAMUser" if !arn.is_empty() => out.push(res("AwsIamUser", arn.to_string(), None, None)),
                "AssumedRole" => {
                    let role = s(ui, &["sessionContext", "sessionIssuer", "arn"])
                        .map(str::to_string)
                        .or_else(|| role_arn_of_assumed(arn));
                    if let Some(role) = role {
                        out.push(res("AwsIamRole", role, None, None));
                    }
                }
                "Role" => out.push(res("AwsIamRole", arn.to_string(), None, None)),
                "Root" => {
                    let account = s(ui, &["accountId"]).or_else(|| arn.split(':').nth(4)).unwrap_or("");
                    if !account.is_empty() {
                        out.push(res("AwsAccount", format!("AWS::::Account:{account}"), region, None));
                    }
                }
                _ => {}
            }
        }
        EventClass::Ecr | EventClass::Inspector2 | EventClass::EventBridge => {
            let d = ev.get("detail").unwrap_or(&NULL);
            if class == EventClass::Inspector2 {
                if let Some(items) = d.get("resources").and_then(Value::as_array) {
                    for r in items {
                        let Some(id) = s(r, &["id"]) else { continue };
                        let img = r.get("details").and_then(|x| x.get("awsEcrContainerImage"));
                        let details = img.map(|i| {
                            json!({"AwsEcrContainerImage": {
                                "RegistryId": s(i, &["registry"]),
                                "RepositoryName": s(i, &["repositoryName"]),
                                "ImageDigest": id.rsplit('/').next(),
                            }})
                        });
                        let kind = if s(r, &["type"]) == Some("AWS_ECR_CONTAINER_IMAGE") {
                            "AwsEcrContainerImage"
                        } else {
                            "Other"
                        };
                        out.push(res(kind, id.to_string(), region, details));
                    }
                }
            }
            if class == EventClass::Ecr {
                if let (Some(repo), Some(digest)) = (s(d, &["repository-name"]), s(d, &["image-digest"])) {
                    let account = s(ev, &["account"]).unwrap_or("");
                    let r = region.unwrap_or("us-east-1");
                    out.push(res(
                        "AwsEcrContainerImage",
                        format!("arn:aws:ecr:{r}:{account}:repository/{repo}/{digest}"),
                        region,
                        Some(json!({"AwsEcrContainerImage": {"RegistryId": account, "RepositoryName": repo, "ImageDigest": digest}})),
                    ));
                }
            }
            if let Some(items) = ev.get("resources").and_then(Value::as_array) {
                for r in items.iter().filter_map(Value::as_str) {
                    if out.iter().any(|x| x.id == r) {
                        continue;
                    }
                    let kind = if r.contains(":repository/") && r.matches('/').count() == 1 {
                        "AwsEcrRepository"
                    } else {
                        "Other"
                    };
                    out.push(res(kind, r.to_string(), region, None));
                }
            }
        }
    }
    out
}
