//! ASFF (AWS Security Finding Format) types, serialised exactly as
//! `BatchImportFindings` takes them.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AsffFinding {
    pub schema_version: String,
    pub id: String,
    pub product_arn: String,
    pub product_name: String,
    pub company_name: String,
    pub generator_id: String,
    pub aws_account_id: String,
    pub types: Vec<String>,
    pub first_observed_at: String,
    pub last_observed_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub severity: Severity,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    pub product_fields: BTreeMap<String, String>,
    pub resources: Vec<Resource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
    pub record_state: String,
    pub workflow: Workflow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub finding_provider_fields: FindingProviderFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Severity {
    pub label: String,
    pub normalized: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Remediation {
    pub recommendation: Recommendation,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Recommendation {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: String,
    pub id: String,
    pub partition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Compliance {
    pub status: String,
    pub related_requirements: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Workflow {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Action {
    pub action_type: String,
    pub aws_api_call_action: AwsApiCallAction,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AwsApiCallAction {
    pub api: String,
    pub service_name: String,
    pub caller_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip_details: Option<RemoteIpDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_details: Option<DomainDetails>,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RemoteIpDetails {
    pub ip_address_v4: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DomainDetails {
    pub domain: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct FindingProviderFields {
    pub severity: ProviderSeverity,
    pub types: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ProviderSeverity {
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

impl AsffFinding {
    /// The finding as one line of JSON: exactly what `serde_json::to_string`
    /// writes (field order, skipped `None`s, escapes), without its
    /// byte-by-byte escape loop, which was the largest part of building a
    /// finding. Tests compare the two.
    pub fn to_json_line(&self) -> String {
        let mut w = Writer(String::with_capacity(4096));
        w.finding(self);
        w.0
    }
}

/// Writes JSON objects in `to_json_line`: `{` … `}` with `"Key":value`
/// members separated by commas.
struct Writer(String);

impl Writer {
    fn str(&mut self, s: &str) {
        if needs_escape(s) {
            // Rare (quotes, backslashes, control characters): serde_json's own escaping.
            self.0.push_str(&serde_json::to_string(s).unwrap_or_default());
        } else {
            self.0.push('"');
            self.0.push_str(s);
            self.0.push('"');
        }
    }

    /// `"Key":` after a comma, unless it is the first member (`first`).
    /// Only for the ASFF names written here, which need no escapes.
    fn key(&mut self, first: bool, k: &str) {
        if !first {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(k);
        self.0.push_str("\":");
    }

    fn field(&mut self, first: bool, k: &str, v: &str) {
        self.key(first, k);
        self.str(v);
    }

    fn opt(&mut self, k: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.field(false, k, v);
        }
    }

    fn list(&mut self, items: &[String]) {
        self.0.push('[');
        for (i, t) in items.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.str(t);
        }
        self.0.push(']');
    }

    fn finding(&mut self, f: &AsffFinding) {
        self.0.push('{');
        self.field(true, "SchemaVersion", &f.schema_version);
        self.field(false, "Id", &f.id);
        self.field(false, "ProductArn", &f.product_arn);
        self.field(false, "ProductName", &f.product_name);
        self.field(false, "CompanyName", &f.company_name);
        self.field(false, "GeneratorId", &f.generator_id);
        self.field(false, "AwsAccountId", &f.aws_account_id);
        self.key(false, "Types");
        self.list(&f.types);
        self.field(false, "FirstObservedAt", &f.first_observed_at);
        self.field(false, "LastObservedAt", &f.last_observed_at);
        self.field(false, "CreatedAt", &f.created_at);
        self.field(false, "UpdatedAt", &f.updated_at);
        self.key(false, "Severity");
        self.0.push('{');
        self.field(true, "Label", &f.severity.label);
        self.key(false, "Normalized");
        let _ = write!(self.0, "{}", f.severity.normalized);
        self.opt("Original", &f.severity.original);
        self.0.push('}');
        self.field(false, "Title", &f.title);
        self.field(false, "Description", &f.description);
        if let Some(r) = &f.remediation {
            self.key(false, "Remediation");
            self.0.push('{');
            self.key(true, "Recommendation");
            self.0.push('{');
            self.field(true, "Text", &r.recommendation.text);
            self.opt("Url", &r.recommendation.url);
            self.0.push_str("}}");
        }
        self.opt("SourceUrl", &f.source_url);
        self.key(false, "ProductFields");
        self.0.push('{');
        for (i, (k, v)) in f.product_fields.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.str(k);
            self.0.push(':');
            self.str(v);
        }
        self.0.push('}');
        self.key(false, "Resources");
        self.0.push('[');
        for (i, r) in f.resources.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.0.push('{');
            self.field(true, "Type", &r.kind);
            self.field(false, "Id", &r.id);
            self.field(false, "Partition", &r.partition);
            self.opt("Region", &r.region);
            if let Some(d) = &r.details {
                self.key(false, "Details");
                self.0.push_str(&serde_json::to_string(d).unwrap_or_default());
            }
            self.0.push('}');
        }
        self.0.push(']');
        if let Some(c) = &f.compliance {
            self.key(false, "Compliance");
            self.0.push('{');
            self.field(true, "Status", &c.status);
            self.key(false, "RelatedRequirements");
            self.list(&c.related_requirements);
            self.0.push('}');
        }
        self.field(false, "RecordState", &f.record_state);
        self.key(false, "Workflow");
        self.0.push('{');
        self.field(true, "Status", &f.workflow.status);
        self.0.push('}');
        if let Some(a) = &f.action {
            self.key(false, "Action");
            self.0.push('{');
            self.field(true, "ActionType", &a.action_type);
            self.key(false, "AwsApiCallAction");
            let c = &a.aws_api_call_action;
            self.0.push('{');
            self.field(true, "Api", &c.api);
            self.field(false, "ServiceName", &c.service_name);
            self.field(false, "CallerType", &c.caller_type);
            if let Some(r) = &c.remote_ip_details {
                self.key(false, "RemoteIpDetails");
                self.0.push('{');
                self.field(true, "IpAddressV4", &r.ip_address_v4);
                self.0.push('}');
            }
            if let Some(d) = &c.domain_details {
                self.key(false, "DomainDetails");
                self.0.push('{');
                self.field(true, "Domain", &d.domain);
                self.0.push('}');
            }
            self.field(false, "FirstSeen", &c.first_seen);
            self.field(false, "LastSeen", &c.last_seen);
            self.0.push_str("}}");
        }
        self.key(false, "FindingProviderFields");
        self.0.push('{');
        self.key(true, "Severity");
        self.0.push('{');
        self.field(true, "Label", &f.finding_provider_fields.severity.label);
        self.opt("Original", &f.finding_provider_fields.severity.original);
        self.0.push('}');
        self.key(false, "Types");
        self.list(&f.finding_provider_fields.types);
        self.0.push('}');
        self.opt("Region", &f.region);
        self.0.push('}');
    }
}

/// Whether JSON needs an escape in `s` (`"`, `\\` or a control character).
/// 16-byte chunks without an early exit inside, so the compiler uses SIMD;
/// the tail is the last 16 bytes, overlapping (copying it into a padded
/// buffer instead stalls on store forwarding).
fn needs_escape(s: &str) -> bool {
    let bad = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let chunk = |c: &[u8]| c.iter().fold(false, |acc, &b| acc | bad(b));
    let b = s.as_bytes();
    if b.len() < 16 {
        return b.iter().any(|&x| bad(x));
    }
    b.chunks_exact(16).any(chunk) || chunk(&b[b.len() - 16..])
}
