//! ASFF JSON (as the findings module writes it, and as the spool keeps it) →
//! the SDK's `AwsSecurityFinding`. The SDK has no public JSON reader for its
//! types, so the fields trailwatch emits are mapped here; unknown resource
//! details go to `Details.Other` (flattened to strings) rather than being lost.

use aws_sdk_securityhub::types::{
    Action, ActionRemoteIpDetails, AwsApiCallAction, AwsApiCallActionDomainDetails, AwsEcrContainerImageDetails,
    AwsSecurityFinding, Compliance, ComplianceStatus, FindingProviderFields, FindingProviderSeverity, Partition,
    Recommendation, RecordState, Remediation, Resource, ResourceDetails, Severity, SeverityLabel, Workflow,
    WorkflowStatus,
};
use serde_json::Value;

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn strings(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
}

/// The account and region a finding is imported into: its AwsAccountId and
/// the region of its ProductArn (`arn:aws:securityhub:REGION:ACCOUNT:product/…`).
pub fn route_of(v: &Value) -> (String, Option<String>) {
    let account = s(v, "AwsAccountId").unwrap_or_default().to_string();
    let region = s(v, "ProductArn").and_then(|a| a.split(':').nth(3)).filter(|r| !r.is_empty()).map(str::to_string);
    (account, region)
}

pub fn to_sdk(v: &Value) -> AwsSecurityFinding {
    let mut b = AwsSecurityFinding::builder()
        .set_schema_version(s(v, "SchemaVersion").map(Into::into))
        .set_id(s(v, "Id").map(Into::into))
        .set_product_arn(s(v, "ProductArn").map(Into::into))
        .set_product_name(s(v, "ProductName").map(Into::into))
        .set_company_name(s(v, "CompanyName").map(Into::into))
        .set_region(s(v, "Region").map(Into::into))
        .set_generator_id(s(v, "GeneratorId").map(Into::into))
        .set_aws_account_id(s(v, "AwsAccountId").map(Into::into))
        .set_types(strings(v, "Types"))
        .set_first_observed_at(s(v, "FirstObservedAt").map(Into::into))
        .set_last_observed_at(s(v, "LastObservedAt").map(Into::into))
        .set_created_at(s(v, "CreatedAt").map(Into::into))
        .set_updated_at(s(v, "UpdatedAt").map(Into::into))
        .set_title(s(v, "Title").map(Into::into))
        .set_description(s(v, "Description").map(Into::into))
        .set_source_url(s(v, "SourceUrl").map(Into::into))
        .set_record_state(s(v, "RecordState").map(RecordState::from));
    if let Some(sev) = v.get("Severity") {
        b = b.severity(
            Severity::builder()
                .set_label(s(sev, "Label").map(SeverityLabel::from))
                .set_normalized(sev.get("Normalized").and_then(Value::as_i64).map(|n| n as i32))
                .set_original(s(sev, "Original").map(Into::into))
                .build(),
        );
    }
    if let Some(rec) = v.get("Remediation").and_then(|r| r.get("Recommendation")) {
        b = b.remediation(
            Remediation::builder()
                .recommendation(
                    Recommendation::builder()
                        .set_text(s(rec, "Text").map(Into::into))
                        .set_url(s(rec, "Url").map(Into::into))
                        .build(),
                )
                .build(),
        );
    }
    if let Some(fields) = v.get("ProductFields").and_then(Value::as_object) {
        for (k, val) in fields {
            b = b.product_fields(k, val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
        }
    }
    for r in v.get("Resources").and_then(Value::as_array).into_iter().flatten() {
        b = b.resources(resource(r));
    }
    if let Some(c) = v.get("Compliance") {
        b = b.compliance(
            Compliance::builder()
                .set_status(s(c, "Status").map(ComplianceStatus::from))
                .set_related_requirements(strings(c, "RelatedRequirements"))
                .build(),
        );
    }
    if let Some(w) = v.get("Workflow") {
        b = b.workflow(Workflow::builder().set_status(s(w, "Status").map(WorkflowStatus::from)).build());
    }
    if let Some(a) = v.get("Action") {
        let mut ab = Action::builder().set_action_type(s(a, "ActionType").map(Into::into));
        if let Some(call) = a.get("AwsApiCallAction") {
            let mut cb = AwsApiCallAction::builder()
                .set_api(s(call, "Api").map(Into::into))
                .set_service_name(s(call, "ServiceName").map(Into::into))
                .set_caller_type(s(call, "CallerType").map(Into::into))
                .set_first_seen(s(call, "FirstSeen").map(Into::into))
                .set_last_seen(s(call, "LastSeen").map(Into::into));
            if let Some(ip) = call.get("RemoteIpDetails").and_then(|r| s(r, "IpAddressV4")) {
                cb = cb.remote_ip_details(ActionRemoteIpDetails::builder().ip_address_v4(ip).build());
            }
            if let Some(d) = call.get("DomainDetails").and_then(|r| s(r, "Domain")) {
                cb = cb.domain_details(AwsApiCallActionDomainDetails::builder().domain(d).build());
            }
            ab = ab.aws_api_call_action(cb.build());
        }
        b = b.action(ab.build());
    }
    if let Some(p) = v.get("FindingProviderFields") {
        let mut pb = FindingProviderFields::builder().set_types(strings(p, "Types"));
        if let Some(sev) = p.get("Severity") {
            pb = pb.severity(
                FindingProviderSeverity::builder()
                    .set_label(s(sev, "Label").map(SeverityLabel::from))
                    .set_original(s(sev, "Original").map(Into::into))
                    .build(),
            );
        }
        b = b.finding_provider_fields(pb.build());
    }
    b.build()
}

fn resource(r: &Value) -> Resource {
    let mut rb = Resource::builder()
        .set_type(s(r, "Type").map(Into::into))
        .set_id(s(r, "Id").map(Into::into))
        .set_partition(s(r, "Partition").map(Partition::from))
        .set_region(s(r, "Region").map(Into::into));
    if let Some(d) = r.get("Details").and_then(Value::as_object) {
        let mut db = ResourceDetails::builder();
        for (k, val) in d {
            if k == "AwsEcrContainerImage" {
                db = db.aws_ecr_container_image(
                    AwsEcrContainerImageDetails::builder()
                        .set_registry_id(s(val, "RegistryId").map(Into::into))
                        .set_repository_name(s(val, "RepositoryName").map(Into::into))
                        .set_image_digest(s(val, "ImageDigest").map(Into::into))
                        .build(),
                );
            } else if k == "Other" {
                for (ok, ov) in val.as_object().into_iter().flatten() {
                    db = db.other(ok, ov.as_str().map(str::to_string).unwrap_or_else(|| ov.to_string()));
                }
            } else {
                db = db.other(k, val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
            }
        }
        rb = rb.details(db.build());
    }
    rb.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "SchemaVersion": "2018-10-08",
            "Id": "trailwatch/r1/abc",
            "ProductArn": "arn:aws:securityhub:eu-west-1:111122223333:product/111122223333/default",
            "ProductName": "trailwatch", "CompanyName": "trailwatch",
            "GeneratorId": "r1", "AwsAccountId": "111122223333",
            "Types": ["TTPs/Discovery"],
            "FirstObservedAt": "2026-11-01T10:00:00Z", "LastObservedAt": "2026-11-01T10:05:00Z",
            "CreatedAt": "2026-11-01T10:00:00Z", "UpdatedAt": "2026-11-01T10:06:00Z",
            "Severity": {"Label": "HIGH", "Normalized": 70, "Original": "high"},
            "Title": "t", "Description": "d",
            "Remediation": {"Recommendation": {"Text": "fix it", "Url": "https://example.com"}},
            "ProductFields": {"trailwatch/RuleId": "r1", "trailwatch/Count": "4"},
            "Resources": [
                {"Type": "AwsIamUser", "Id": "arn:aws:iam::111122223333:user/m", "Partition": "aws", "Region": "eu-west-1"},
                {"Type": "AwsEcrContainerImage", "Id": "img", "Partition": "aws",
                 "Details": {"AwsEcrContainerImage": {"RegistryId": "111122223333", "RepositoryName": "r", "ImageDigest": "sha256:x"}}}
            ],
            "Compliance": {"Status": "FAILED", "RelatedRequirements": ["NIST.CSF DE.CM-1"]},
            "RecordState": "ACTIVE", "Workflow": {"Status": "NEW"},
            "Action": {"ActionType": "AWS_API_CALL", "AwsApiCallAction": {
                "Api": "ListUsers", "ServiceName": "iam.amazonaws.com", "CallerType": "remoteIp",
                "RemoteIpDetails": {"IpAddressV4": "192.0.2.1"}, "FirstSeen": "2026-11-01T10:00:00Z", "LastSeen": "2026-11-01T10:05:00Z"}},
            "FindingProviderFields": {"Severity": {"Label": "HIGH", "Original": "high"}, "Types": ["TTPs/Discovery"]},
            "Region": "eu-west-1"
        })
    }

    #[test]
    fn every_emitted_field_reaches_the_sdk_type() {
        let f = to_sdk(&sample());
        assert_eq!(f.id(), Some("trailwatch/r1/abc"));
        assert_eq!(f.aws_account_id(), Some("111122223333"));
        assert_eq!(f.types(), ["TTPs/Discovery"]);
        assert_eq!(f.updated_at(), Some("2026-11-01T10:06:00Z"));
        let sev = f.severity().unwrap();
        assert_eq!(sev.label(), Some(&SeverityLabel::High));
        assert_eq!(sev.normalized(), Some(70));
        assert_eq!(f.product_fields().unwrap()["trailwatch/Count"], "4");
        assert_eq!(f.resources().len(), 2);
        assert_eq!(f.resources()[0].r#type(), Some("AwsIamUser"));
        assert_eq!(f.resources()[0].partition(), Some(&Partition::Aws));
        let img = f.resources()[1].details().unwrap().aws_ecr_container_image().unwrap();
        assert_eq!(img.image_digest(), Some("sha256:x"));
        assert_eq!(f.compliance().unwrap().related_requirements(), ["NIST.CSF DE.CM-1"]);
        assert_eq!(f.workflow().unwrap().status(), Some(&WorkflowStatus::New));
        let call = f.action().unwrap().aws_api_call_action().unwrap();
        assert_eq!(call.remote_ip_details().unwrap().ip_address_v4(), Some("192.0.2.1"));
        let p = f.finding_provider_fields().unwrap();
        assert_eq!(p.severity().unwrap().label(), Some(&SeverityLabel::High));
        assert_eq!(p.types(), ["TTPs/Discovery"]);
        assert_eq!(f.remediation().unwrap().recommendation().unwrap().text(), Some("fix it"));
        assert_eq!(f.record_state(), Some(&RecordState::Active));
    }

    #[test]
    fn the_route_is_the_account_and_the_product_arn_region() {
        assert_eq!(route_of(&sample()), ("111122223333".to_string(), Some("eu-west-1".to_string())));
        assert_eq!(route_of(&serde_json::json!({})), (String::new(), None));
    }
}
