//! ASFF finding → OCSF 1.1 Detection Finding (class 2004, category 2), as
//! JSON: written as JSON lines by the `ocsf-jsonl` sink and as Parquet rows
//! by the `security-lake` sink.
//! The mapping starts from the ASFF finding so both formats say the same
//! thing: `finding_info.uid` is the deterministic ASFF Id (a repeat of a
//! correlation is an Update of the same uid), the rule is the analytic, and
//! whatever OCSF has no place for goes to `unmapped`.

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::findings::AsffFinding;
use crate::findings::Finding;

const CLASS_UID: u32 = 2004;
const CATEGORY_UID: u32 = 2;
const OCSF_VERSION: &str = "1.1.0";

pub fn to_json_line(f: &Finding) -> String {
    to_ocsf(&f.asff, f.is_update).to_string()
}

/// The OCSF Detection Finding for an ASFF finding; `update` picks activity 2
/// (Update) over 1 (Create).
pub fn to_ocsf(a: &AsffFinding, update: bool) -> Value {
    let (activity_id, activity_name) = if update { (2, "Update") } else { (1, "Create") };
    let (severity_id, severity) = severity(&a.severity.label);
    let (status_id, status) = status(&a.workflow.status);
    let pf = &a.product_fields;
    let rule_id = pf.get("trailwatch/RuleId").cloned().unwrap_or_else(|| a.generator_id.clone());
    let rule_name = pf.get("trailwatch/RuleTitle").cloned().unwrap_or_else(|| a.title.clone());
    // Under central reporting the ASFF account is the reporting one; OCSF's
    // cloud.account is where it happened.
    let account = pf.get("trailwatch/AffectedAccount").unwrap_or(&a.aws_account_id);

    let mut finding_info = json!({
        "uid": a.id,
        "title": a.title,
        "desc": a.description,
        "types": a.types,
        "first_seen_time": millis(&a.first_observed_at),
        "last_seen_time": millis(&a.last_observed_at),
        "created_time": millis(&a.created_at),
        "modified_time": millis(&a.updated_at),
        "analytic": {"uid": rule_id, "name": rule_name, "type_id": 1, "type": "Rule"},
        "product_uid": a.product_arn,
    });
    if let Some(url) = &a.source_url {
        finding_info["src_url"] = json!(url);
    }

    let resources: Vec<Value> = a
        .resources
        .iter()
        .map(|r| {
            let mut o = json!({"uid": r.id, "type": r.kind, "cloud_partition": r.partition});
            if let Some(region) = &r.region {
                o["region"] = json!(region);
            }
            if let Some(d) = &r.details {
                o["data"] = d.clone();
            }
            o
        })
        .collect();

    let user = a.resources.iter().find(|r| r.kind == "AwsIamUser" || r.kind == "AwsIamRole");
    let mut evidence = Map::new();
    let mut observables = Vec::new();
    if let Some(act) = &a.action {
        let call = &act.aws_api_call_action;
        evidence.insert("api".into(), json!({"operation": call.api, "service": {"name": call.service_name}}));
        if let Some(ip) = &call.remote_ip_details {
            evidence.insert("src_endpoint".into(), json!({"ip": ip.ip_address_v4}));
            observables.push(json!({"name": "evidences[0].src_endpoint.ip", "type_id": 2, "type": "IP Address", "value": ip.ip_address_v4}));
        }
        if let Some(d) = &call.domain_details {
            evidence.insert("src_endpoint".into(), json!({"domain": d.domain}));
            observables.push(json!({"name": "evidences[0].src_endpoint.domain", "type_id": 1, "type": "Hostname", "value": d.domain}));
        }
    }
    if let Some(u) = user {
        evidence.insert("actor".into(), json!({"user": {"uid": u.id, "type": u.kind}}));
        observables
            .push(json!({"name": "evidences[0].actor.user.uid", "type_id": 10, "type": "Resource UID", "value": u.id}));
    }

    let mut unmapped = json!({
        "ProductFields": a.product_fields,
        "GeneratorId": a.generator_id,
        "SchemaVersion": a.schema_version,
        "RecordState": a.record_state,
        "Severity": {"Label": a.severity.label, "Normalized": a.severity.normalized, "Original": a.severity.original},
    });
    if let Some(c) = &a.compliance {
        unmapped["Compliance"] = json!({"Status": c.status, "RelatedRequirements": c.related_requirements});
    }

    let mut out = json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Detection Finding: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": millis(&a.updated_at),
        "message": a.title,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": ["cloud"],
            "product": {"name": "trailwatch", "vendor_name": a.company_name, "version": env!("CARGO_PKG_VERSION")},
        },
        "cloud": {"provider": "AWS", "account": {"uid": account}},
        "finding_info": finding_info,
        "resources": resources,
        "unmapped": unmapped,
    });
    if let Some(region) = &a.region {
        out["cloud"]["region"] = json!(region);
    }
    if !evidence.is_empty() {
        out["evidences"] = json!([Value::Object(evidence)]);
    }
    if !observables.is_empty() {
        out["observables"] = json!(observables);
    }
    if let Some(r) = &a.remediation {
        let mut rem = json!({"desc": r.recommendation.text});
        if let Some(url) = &r.recommendation.url {
            rem["references"] = json!([url]);
        }
        out["remediation"] = rem;
    }
    out
}

/// OCSF severity_id from the ASFF label (which comes from the rule level).
fn severity(label: &str) -> (u8, &'static str) {
    match label {
        "INFORMATIONAL" => (1, "Informational"),
        "LOW" => (2, "Low"),
        "MEDIUM" => (3, "Medium"),
        "HIGH" => (4, "High"),
        "CRITICAL" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

/// OCSF finding status_id from the ASFF workflow status.
fn status(workflow: &str) -> (u8, &'static str) {
    match workflow {
        "NEW" => (1, "New"),
        "NOTIFIED" => (2, "In Progress"),
        "SUPPRESSED" => (3, "Suppressed"),
        "RESOLVED" => (4, "Resolved"),
        _ => (0, "Unknown"),
    }
}

/// Milliseconds since the epoch (OCSF timestamp_t) of an ASFF RFC 3339 time;
/// the ASFF builder only writes valid ones, so 0 marks a bug, not input.
fn millis(rfc3339: &str) -> i64 {
    OffsetDateTime::parse(rfc3339, &Rfc3339).map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::findings::*;

    fn asff() -> AsffFinding {
        let mut pf = BTreeMap::new();
        pf.insert("trailwatch/RuleId".to_string(), "11111111-2222-3333-4444-555555555555".to_string());
        pf.insert("trailwatch/RuleTitle".to_string(), "CloudTrail logging stopped".to_string());
        AsffFinding {
            schema_version: "2018-10-08".into(),
            id: "trailwatch/11111111-2222-3333-4444-555555555555/0123456789abcdef0123456789abcdef".into(),
            product_arn: "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default".into(),
            product_name: "trailwatch".into(),
            company_name: "trailwatch".into(),
            generator_id: "trailwatch/11111111-2222-3333-4444-555555555555".into(),
            aws_account_id: "123456789012".into(),
            types: vec!["TTPs/Defense Evasion".into()],
            first_observed_at: "2024-07-31T13:06:24Z".into(),
            last_observed_at: "2024-07-31T13:07:00Z".into(),
            created_at: "2024-07-31T13:06:24Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            severity: Severity { label: "HIGH".into(), normalized: 70, original: None },
            title: "CloudTrail logging stopped".into(),
            description: "Someone stopped a trail.".into(),
            remediation: Some(Remediation {
                recommendation: Recommendation { text: "Turn it back on.".into(), url: Some("https://x".into()) },
            }),
            source_url: None,
            product_fields: pf,
            resources: vec![Resource {
                kind: "AwsIamUser".into(),
                id: "arn:aws:iam::123456789012:user/alice".into(),
                partition: "aws".into(),
                region: Some("eu-west-1".into()),
                details: None,
            }],
            compliance: Some(Compliance {
                status: "FAILED".into(),
                related_requirements: vec!["NIST CSF DE.CM-7".into()],
            }),
            record_state: "ACTIVE".into(),
            workflow: Workflow { status: "NEW".into() },
            action: Some(Action {
                action_type: "AWS_API_CALL".into(),
                aws_api_call_action: AwsApiCallAction {
                    api: "StopLogging".into(),
                    service_name: "cloudtrail.amazonaws.com".into(),
                    caller_type: "remoteIp".into(),
                    remote_ip_details: Some(RemoteIpDetails { ip_address_v4: "192.0.2.7".into() }),
                    domain_details: None,
                    first_seen: "2024-07-31T13:06:24Z".into(),
                    last_seen: "2024-07-31T13:06:24Z".into(),
                },
            }),
            finding_provider_fields: FindingProviderFields {
                severity: ProviderSeverity { label: "HIGH".into(), original: None },
                types: vec!["TTPs/Defense Evasion".into()],
            },
            region: Some("eu-west-1".into()),
        }
    }

    #[test]
    fn required_ocsf_fields_are_present() {
        let a = asff();
        let o = to_ocsf(&a, false);
        // Required attributes of Detection Finding 1.1 and its base event.
        for k in
            ["activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time", "metadata", "finding_info"]
        {
            assert!(o.get(k).is_some(), "missing {k}: {o}");
        }
        assert_eq!(o["class_uid"], 2004);
        assert_eq!(o["category_uid"], 2);
        assert_eq!(o["activity_id"], 1);
        assert_eq!(o["type_uid"], 200401);
        assert_eq!(o["severity_id"], 4);
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["time"], 1_767_225_600_000i64);
        assert_eq!(o["metadata"]["version"], "1.1.0");
        assert_eq!(o["metadata"]["product"]["name"], "trailwatch");
        let fi = &o["finding_info"];
        assert_eq!(fi["uid"], a.id.as_str());
        assert_eq!(fi["title"], "CloudTrail logging stopped");
        assert_eq!(fi["types"][0], "TTPs/Defense Evasion");
        assert_eq!(fi["first_seen_time"], 1_722_431_184_000i64);
        assert_eq!(fi["analytic"]["uid"], "11111111-2222-3333-4444-555555555555");
        assert_eq!(fi["analytic"]["type_id"], 1);
        assert_eq!(o["cloud"]["provider"], "AWS");
        assert_eq!(o["cloud"]["account"]["uid"], "123456789012");
        assert_eq!(o["cloud"]["region"], "eu-west-1");
        assert_eq!(o["resources"][0]["uid"], "arn:aws:iam::123456789012:user/alice");
        assert_eq!(o["evidences"][0]["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(o["evidences"][0]["actor"]["user"]["uid"], "arn:aws:iam::123456789012:user/alice");
        assert!(o["observables"].as_array().unwrap().iter().any(|v| v["type_id"] == 2 && v["value"] == "192.0.2.7"));
        assert_eq!(o["unmapped"]["Compliance"]["RelatedRequirements"][0], "NIST CSF DE.CM-7");
        assert_eq!(o["remediation"]["references"][0], "https://x");
    }

    #[test]
    fn uid_is_deterministic_and_updates_keep_it() {
        let a = asff();
        let first = to_ocsf(&a, false);
        assert_eq!(first, to_ocsf(&a, false));
        let upd = to_ocsf(&a, true);
        assert_eq!(upd["activity_id"], 2);
        assert_eq!(upd["type_uid"], 200402);
        assert_eq!(upd["finding_info"]["uid"], first["finding_info"]["uid"]);
    }

    #[test]
    fn levels_map_to_severity_ids_and_affected_account_wins() {
        let mut a = asff();
        for (label, id) in [("INFORMATIONAL", 1), ("LOW", 2), ("MEDIUM", 3), ("HIGH", 4), ("CRITICAL", 5)] {
            a.severity.label = label.into();
            assert_eq!(to_ocsf(&a, false)["severity_id"], id, "{label}");
        }
        a.product_fields.insert("trailwatch/AffectedAccount".into(), "210987654321".into());
        assert_eq!(to_ocsf(&a, false)["cloud"]["account"]["uid"], "210987654321");
    }
}
