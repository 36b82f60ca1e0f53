//! What real Security Hub enforces on `BatchImportFindings` (the local
//! emulator checks almost none of it), checked before a finding leaves us.

use std::fmt;

use super::asff::AsffFinding;

/// One broken rule of the ASFF contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsffViolation {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for AsffViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

pub const MAX_FINDING_BYTES: usize = 240 * 1024;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 1024;
pub const MAX_RESOURCES: usize = 32;
pub const MAX_REQUIREMENTS: usize = 32;
pub const MAX_PRODUCT_FIELDS: usize = 50;
pub const MAX_TYPES: usize = 50;
const NAMESPACES: [&str; 5] =
    ["Software and Configuration Checks", "TTPs", "Effects", "Unusual Behaviors", "Sensitive Data Identifications"];
const LABELS: [&str; 5] = ["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

/// Every violation of `f`, or Ok.
pub fn validate(f: &AsffFinding) -> Result<(), Vec<AsffViolation>> {
    validate_serialized(f, f.to_json_line().len())
}

/// [`validate`] for a finding already serialised to `json_len` bytes (the
/// writer serialises it anyway; doing it twice was a third of the cost of a
/// finding).
pub fn validate_serialized(f: &AsffFinding, json_len: usize) -> Result<(), Vec<AsffViolation>> {
    let mut v = Vec::new();
    let mut bad = |field: &'static str, reason: String| v.push(AsffViolation { field, reason });
    if f.schema_version != "2018-10-08" {
        bad("SchemaVersion", format!("must be 2018-10-08, is `{}`", f.schema_version));
    }
    if f.id.is_empty() || f.id.len() > 512 {
        bad("Id", format!("must be 1..=512 characters, is {}", f.id.len()));
    }
    if f.generator_id.is_empty() || f.generator_id.len() > 512 {
        bad("GeneratorId", "must be 1..=512 characters".into());
    }
    if !is_account(&f.aws_account_id) {
        bad("AwsAccountId", format!("`{}` is not a 12-digit account id", f.aws_account_id));
    }
    match parse_product_arn(&f.product_arn) {
        Some(account) if account == f.aws_account_id => {}
        Some(account) => bad(
            "ProductArn",
            format!(
                "account {account} differs from AwsAccountId {} (Security Hub rejects the import)",
                f.aws_account_id
            ),
        ),
        None => bad(
            "ProductArn",
            format!("`{}` is not arn:aws:securityhub:REGION:ACCOUNT:product/ACCOUNT/default", f.product_arn),
        ),
    }
    if f.types.is_empty() || f.types.len() > MAX_TYPES {
        bad("Types", format!("must have 1..={MAX_TYPES} entries"));
    }
    for t in &f.types {
        let parts: Vec<&str> = t.split('/').collect();
        if parts.len() > 3 || !NAMESPACES.contains(&parts[0]) || parts.iter().any(|p| p.is_empty()) {
            bad("Types", format!("`{t}` is not namespace/category/classifier of the ASFF taxonomy"));
        }
    }
    for (field, t) in [
        ("CreatedAt", &f.created_at),
        ("UpdatedAt", &f.updated_at),
        ("FirstObservedAt", &f.first_observed_at),
        ("LastObservedAt", &f.last_observed_at),
    ] {
        if time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_err() {
            bad(field, format!("`{t}` is not an RFC 3339 time"));
        }
    }
    if !LABELS.contains(&f.severity.label.as_str()) {
        bad("Severity.Label", format!("`{}` is not a severity label", f.severity.label));
    }
    if f.severity.normalized > 100 {
        bad("Severity.Normalized", "must be 0..=100".into());
    }
    // Lengths in UTF-8 bytes: never more than characters, so a text within
    // them is within Security Hub's limits however they are counted.
    if f.title.is_empty() || f.title.len() > MAX_TITLE {
        bad("Title", format!("must be 1..={MAX_TITLE} bytes, is {}", f.title.len()));
    }
    if f.description.is_empty() || f.description.len() > MAX_DESCRIPTION {
        bad("Description", format!("must be 1..={MAX_DESCRIPTION} bytes, is {}", f.description.len()));
    }
    if f.resources.is_empty() || f.resources.len() > MAX_RESOURCES {
        bad("Resources", format!("must have 1..={MAX_RESOURCES} entries, has {}", f.resources.len()));
    }
    for r in &f.resources {
        if r.kind.is_empty() || r.id.is_empty() {
            bad("Resources", "every resource needs Type and Id".into());
        }
    }
    if let Some(c) = &f.compliance {
        if c.related_requirements.len() > MAX_REQUIREMENTS {
            bad("Compliance.RelatedRequirements", format!("at most {MAX_REQUIREMENTS} entries"));
        }
    }
    if let Some(r) = &f.remediation {
        if r.recommendation.text.len() > 512 {
            bad("Remediation.Recommendation.Text", "at most 512 bytes".into());
        }
    }
    if f.product_fields.len() > MAX_PRODUCT_FIELDS {
        bad("ProductFields", format!("at most {MAX_PRODUCT_FIELDS} pairs"));
    }
    for (k, val) in &f.product_fields {
        if k.len() > 128 || val.len() > 2048 {
            bad("ProductFields", format!("`{k}`: keys ≤128 and values ≤2048 bytes"));
        }
    }
    let size = json_len;
    if size > MAX_FINDING_BYTES {
        bad("(finding)", format!("{size} bytes, over the 240 KB limit"));
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(v)
    }
}

pub(super) fn is_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

/// The account of a custom-integration product ARN.
fn parse_product_arn(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(6, ':');
    let _partition = parts.next()?;
    if parts.next()? != "securityhub" {
        return None;
    }
    let _region = parts.next()?;
    let account = parts.next()?;
    let resource = parts.next()?;
    (resource == format!("product/{account}/default")).then_some(account)
}
