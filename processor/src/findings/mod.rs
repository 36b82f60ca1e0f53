//! Rule matches → ASFF findings for Security Hub, and [`Finding`], the
//! validated finding the pipeline routes to the sinks.
//!
//! - `Id` is deterministic: the same rule on the same event (or, for a
//!   correlation, the same dedup key) always gives the same Id, so a replay or
//!   a retry upserts instead of duplicating.
//! - Time comes in ([`FindingInput::now`]); nothing here reads the clock.
//! - [`validate`] checks what real Security Hub enforces; findings are trimmed
//!   to fit rather than ever being emitted invalid.

mod asff;
mod event;
mod finding;
pub mod ocsf;
pub mod request;
mod resources;
mod validate;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use trailwatch_rules::template::Correlation;
use trailwatch_rules::{EventClass, Level, RuleMeta};

pub use asff::*;
pub use event::parse_event;
pub use finding::{Finding, InvalidFinding};
pub use validate::{validate, validate_serialized, AsffViolation, MAX_FINDING_BYTES};

/// Where findings are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReportTo {
    /// Each finding belongs to the account the event came from (its
    /// AwsAccountId and ProductArn name that account).
    #[default]
    EventAccount,
    /// Every finding is reported under one central account; the affected
    /// account is kept as an `AwsAccount` resource.
    Central { account: String },
}

/// Fixed per-run settings.
#[derive(Debug, Clone)]
pub struct FindingContext {
    /// The region findings are imported into (ProductArn and `Region`): the
    /// one region the import role may use. The event's own region stays in
    /// the resources and in ProductFields `trailwatch/EventRegion`.
    pub product_region: String,
    /// Event regions whose findings are imported in that same region instead
    /// (each must be allowed for the import role); empty: all go to `product_region`.
    pub import_regions: Vec<String>,
    /// Account used when the event has none.
    pub product_account: String,
    pub company_name: String,
    pub product_name: String,
    pub report_to: ReportTo,
}

impl Default for FindingContext {
    fn default() -> Self {
        FindingContext {
            product_region: "us-east-1".into(),
            import_regions: Vec::new(),
            product_account: "000000000000".into(),
            company_name: "trailwatch".into(),
            product_name: "trailwatch".into(),
            report_to: ReportTo::EventAccount,
        }
    }
}

/// A windowed (correlation) match.
#[derive(Debug, Clone)]
pub struct CorrelationSummary {
    pub count: u64,
    pub window_start: OffsetDateTime,
    pub window_end: OffsetDateTime,
    pub group: Vec<(String, String)>,
    pub sample_event_ids: Vec<String>,
    /// Same rule and group within the dedup period → same key → same Id.
    pub dedup_key: String,
    /// The rule's timespan (`{window}` in a title template).
    pub timespan_ms: i64,
}

/// What matched.
pub struct FindingInput<'a> {
    pub rule: &'a RuleMeta,
    pub class: EventClass,
    /// The document the rule saw (CloudTrail record or whole EventBridge event).
    pub event: &'a serde_json::Value,
    pub event_ids: Vec<String>,
    pub correlation: Option<CorrelationSummary>,
    pub now: OffsetDateTime,
}

/// The deterministic finding Id.
pub fn finding_id(rule_id: &str, identity: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0]);
    h.update(identity.as_bytes());
    // 32 hex digits: the first 16 bytes of the digest.
    let hex = hex::encode(&h.finalize()[..16]);
    let rule: String = rule_id.chars().take(128).collect();
    format!("trailwatch/{rule}/{hex}")
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Whole seconds: Security Hub takes ISO 8601 times, CloudTrail has seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn severity_of(level: Level) -> (&'static str, u8) {
    match level {
        Level::Informational => ("INFORMATIONAL", 0),
        Level::Low => ("LOW", 30),
        Level::Medium => ("MEDIUM", 50),
        Level::High => ("HIGH", 70),
        Level::Critical => ("CRITICAL", 90),
    }
}

/// The severity an image-scan event carries itself, as a rule level.
fn event_severity(class: EventClass, ev: &serde_json::Value) -> Option<Level> {
    match class {
        EventClass::Inspector2 => str_at(ev, &["detail", "severity"]).and_then(Level::parse),
        EventClass::Ecr => {
            let counts = ev.get("detail")?.get("finding-severity-counts")?;
            let has = |k: &str| counts.get(k).and_then(|c| c.as_u64()).is_some_and(|n| n > 0);
            if has("CRITICAL") {
                Some(Level::Critical)
            } else if has("HIGH") {
                Some(Level::High)
            } else if has("MEDIUM") {
                Some(Level::Medium)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn tactic_type(tactic: &str) -> Option<&'static str> {
    Some(match tactic {
        "initial-access" => "TTPs/Initial Access",
        "execution" => "TTPs/Execution",
        "persistence" => "TTPs/Persistence",
        "privilege-escalation" => "TTPs/Privilege Escalation",
        "defense-evasion" | "stealth" => "TTPs/Defense Evasion",
        "credential-access" => "TTPs/Credential Access",
        "discovery" => "TTPs/Discovery",
        "lateral-movement" => "TTPs/Lateral Movement",
        "collection" => "TTPs/Collection",
        "command-and-control" => "TTPs/Command and Control",
        "exfiltration" => "Effects/Data Exfiltration",
        "impact" => "Effects/Resource Consumption",
        _ => return None,
    })
}

fn types_of(rule: &RuleMeta, class: EventClass) -> Vec<String> {
    if let Some(serde_json::Value::Array(items)) = rule.custom.get("asff_types") {
        let t: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        if !t.is_empty() {
            return t;
        }
    }
    let mut out: Vec<String> = Vec::new();
    if matches!(class, EventClass::Inspector2 | EventClass::Ecr) {
        out.push("Software and Configuration Checks/Vulnerabilities/CVE".into());
    }
    for t in rule.attack_tactics() {
        if let Some(ty) = tactic_type(&t) {
            if !out.iter().any(|o| o == ty) {
                out.push(ty.into());
            }
        }
    }
    if out.is_empty() {
        out.push(match class {
            EventClass::CloudTrail => "Unusual Behaviors/User".into(),
            _ => "Software and Configuration Checks".into(),
        });
    }
    out.truncate(validate::MAX_TYPES);
    out
}

/// Cuts `s` to at most `max` bytes (UTF-8, what [`validate`] counts), at a
/// character boundary, marking the cut with `…`.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 3);
    out.push_str(&s[..end]);
    out.push('…');
    out
}

/// Builds the finding for one match.
pub fn build_finding(input: &FindingInput<'_>, ctx: &FindingContext) -> AsffFinding {
    build_finding_line(input, ctx).0
}

/// [`build_finding`] and the finding as one JSON line, serialised once (the
/// size check needs it, and sinks write it as it is).
pub fn build_finding_line(input: &FindingInput<'_>, ctx: &FindingContext) -> (AsffFinding, String) {
    let ev = input.event;
    let rule = input.rule;
    let ct = input.class == EventClass::CloudTrail;
    let event_account = if ct {
        str_at(ev, &["recipientAccountId"]).or_else(|| str_at(ev, &["userIdentity", "accountId"]))
    } else {
        str_at(ev, &["account"])
    }
    .filter(|a| validate::is_account(a))
    .map(str::to_string);
    let region = if ct { str_at(ev, &["awsRegion"]) } else { str_at(ev, &["region"]) }.map(str::to_string);
    let (account, affected) = match &ctx.report_to {
        ReportTo::EventAccount => (event_account.clone().unwrap_or_else(|| ctx.product_account.clone()), None),
        ReportTo::Central { account } => (account.clone(), event_account.clone()),
    };
    // Import only where the deployment allows it: a finding of another
    // region is routed to the import region, not refused there.
    let product_region = match &region {
        Some(r) if ctx.import_regions.iter().any(|a| a == r) => r.clone(),
        _ => ctx.product_region.clone(),
    };
    let product_arn = format!("arn:aws:securityhub:{product_region}:{account}:product/{account}/default");

    let event_time = if ct { str_at(ev, &["eventTime"]) } else { str_at(ev, &["time"]) }.and_then(parse_time);
    let (first, last) = match &input.correlation {
        Some(c) => (c.window_start, c.window_end),
        None => {
            let t = event_time.unwrap_or(input.now);
            (t, t)
        }
    };
    let identity = match &input.correlation {
        Some(c) => c.dedup_key.clone(),
        // Inspector sends a new event each time it updates a finding: key on
        // the Inspector finding, so an update upserts instead of adding one.
        None if input.class == EventClass::Inspector2 && str_at(ev, &["detail", "findingArn"]).is_some() => {
            format!("inspector2:{}", str_at(ev, &["detail", "findingArn"]).unwrap_or_default())
        }
        None => input.event_ids.first().cloned().unwrap_or_else(|| {
            // No event id: the event's own text identifies it.
            hex::encode(Sha256::digest(ev.to_string().as_bytes()))
        }),
    };

    // Severity: the rule level, raised to the event's own for scan findings.
    let mut level = rule.level;
    if let Some(l) = event_severity(input.class, ev) {
        level = level.max(l);
    }
    let (label, normalized) = severity_of(level);
    let original = Some(rule.level.as_str().to_string());
    let types = types_of(rule, input.class);

    // The rule's `finding:` templates, rendered only here (once per finding);
    // the Id above never depends on them.
    let group: &[(String, String)] = input.correlation.as_ref().map_or(&[], |c| &c.group);
    let corr = input.correlation.as_ref().map(|c| Correlation { group, count: c.count, timespan_ms: c.timespan_ms });
    let templates = rule.finding.as_ref();
    let title = match templates.and_then(|f| f.title.as_ref()) {
        Some(t) => t.render(ev, corr.as_ref()),
        None => rule.title.clone(),
    };
    let mut description = match templates.and_then(|f| f.description.as_ref()) {
        Some(t) => t.render(ev, corr.as_ref()),
        None => rule.description.clone().unwrap_or_else(|| rule.title.clone()),
    };
    if let Some(c) = &input.correlation {
        let group: Vec<String> = c.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        description = format!(
            "{} Count {} between {} and {} for {}.",
            description.trim_end(),
            c.count,
            rfc3339(c.window_start),
            rfc3339(c.window_end),
            group.join(", ")
        );
    }

    let remediation = Some(match rule.remediation() {
        Some((text, url)) => Remediation { recommendation: Recommendation { text: clip(&text, 512), url } },
        None => Remediation {
            recommendation: Recommendation {
                text: clip(
                    &format!("Review the activity that triggered \"{}\" and confirm it was authorised.", rule.title),
                    512,
                ),
                url: rule.references.first().cloned(),
            },
        },
    });

    let mut pf = BTreeMap::new();
    pf.insert("trailwatch/RuleId".to_string(), rule.id.clone());
    pf.insert("trailwatch/RuleTitle".to_string(), clip(&rule.title, 2048));
    pf.insert("trailwatch/RuleLevel".to_string(), rule.level.as_str().to_string());
    pf.insert("trailwatch/RuleSource".to_string(), clip(&format!("{}:{}", rule.source, rule.line), 2048));
    pf.insert("trailwatch/EventClass".to_string(), input.class.service().to_string());
    let ids = match &input.correlation {
        Some(c) => &c.sample_event_ids,
        None => &input.event_ids,
    };
    if !ids.is_empty() {
        pf.insert("trailwatch/EventIds".to_string(), clip(&ids.join(","), 2048));
    }
    if ct {
        for (k, path) in [
            ("aws/cloudtrail/EventName", &["eventName"][..]),
            ("aws/cloudtrail/EventSource", &["eventSource"][..]),
            ("aws/cloudtrail/UserIdentityArn", &["userIdentity", "arn"][..]),
            ("aws/cloudtrail/SourceIPAddress", &["sourceIPAddress"][..]),
        ] {
            if let Some(v) = str_at(ev, path) {
                pf.insert(k.to_string(), clip(v, 2048));
            }
        }
    } else if let Some(dt) = str_at(ev, &["detail-type"]) {
        pf.insert("aws/eventbridge/DetailType".to_string(), clip(dt, 2048));
    }
    if let Some(c) = &input.correlation {
        pf.insert("trailwatch/Count".to_string(), c.count.to_string());
        pf.insert("trailwatch/WindowStart".to_string(), rfc3339(c.window_start));
        pf.insert("trailwatch/WindowEnd".to_string(), rfc3339(c.window_end));
        let group: Vec<String> = c.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pf.insert("trailwatch/GroupKey".to_string(), clip(&group.join(","), 2048));
    }
    if let Some(a) = &affected {
        pf.insert("trailwatch/AffectedAccount".to_string(), a.clone());
    }
    if let Some(r) = &region {
        pf.insert("trailwatch/EventRegion".to_string(), clip(r, 2048));
    }

    let nist = rule.nist_csf();
    let compliance = (!nist.is_empty()).then(|| Compliance {
        status: "FAILED".into(),
        related_requirements: nist.iter().take(validate::MAX_REQUIREMENTS).map(|n| format!("NIST CSF {n}")).collect(),
    });

    let mut res = resources::resources_of(input.class, ev, region.as_deref());
    let affected_account = affected.or(event_account);
    if let Some(a) = &affected_account {
        let id = format!("AWS::::Account:{a}");
        if !res.iter().any(|r| r.id == id) {
            res.push(Resource {
                kind: "AwsAccount".into(),
                id,
                partition: "aws".into(),
                region: region.clone(),
                details: None,
            });
        }
    }
    if res.is_empty() {
        res.push(Resource {
            kind: "Other".into(),
            id: format!("trailwatch:{}", input.class.service()),
            partition: "aws".into(),
            region: region.clone(),
            details: None,
        });
    }
    res.truncate(validate::MAX_RESOURCES);

    let action = if ct {
        let ip = str_at(ev, &["sourceIPAddress"]).unwrap_or("");
        let is_v4 = ip.parse::<std::net::Ipv4Addr>().is_ok();
        Some(Action {
            action_type: "AWS_API_CALL".into(),
            aws_api_call_action: AwsApiCallAction {
                api: str_at(ev, &["eventName"]).unwrap_or("unknown").to_string(),
                service_name: str_at(ev, &["eventSource"]).unwrap_or("unknown").to_string(),
                caller_type: if is_v4 || ip.parse::<std::net::IpAddr>().is_ok() { "remoteIp" } else { "domain" }.into(),
                remote_ip_details: is_v4.then(|| RemoteIpDetails { ip_address_v4: ip.to_string() }),
                domain_details: (!ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err())
                    .then(|| DomainDetails { domain: clip(ip, 128) }),
                first_seen: rfc3339(first),
                last_seen: rfc3339(last),
            },
        })
    } else {
        None
    };

    let mut f = AsffFinding {
        schema_version: "2018-10-08".into(),
        id: finding_id(&rule.id, &identity),
        product_arn,
        product_name: ctx.product_name.clone(),
        company_name: ctx.company_name.clone(),
        generator_id: clip(&rule.id, 512),
        aws_account_id: account,
        types: types.clone(),
        first_observed_at: rfc3339(first),
        last_observed_at: rfc3339(last),
        // The event time, not the wall clock: a replay creates the same finding.
        created_at: rfc3339(first),
        updated_at: rfc3339(input.now.max(last)),
        severity: Severity { label: label.into(), normalized, original: original.clone() },
        title: clip(title.trim(), validate::MAX_TITLE),
        description: clip(description.trim(), validate::MAX_DESCRIPTION),
        remediation,
        source_url: rule.references.first().cloned(),
        product_fields: pf,
        resources: res,
        compliance,
        record_state: "ACTIVE".into(),
        workflow: Workflow { status: "NEW".into() },
        action,
        finding_provider_fields: FindingProviderFields {
            severity: ProviderSeverity { label: label.into(), original },
            types,
        },
        // Security Hub's Region is where the finding lives: the import region.
        region: Some(product_region),
    };
    let line = shrink_to_fit(&mut f);
    (f, line)
}

/// Drops optional bulk until the finding fits Security Hub's size limit;
/// returns the finding's JSON line.
fn shrink_to_fit(f: &mut AsffFinding) -> String {
    let line = f.to_json_line();
    if line.len() <= MAX_FINDING_BYTES {
        return line;
    }
    for r in &mut f.resources {
        r.details = None;
    }
    let line = f.to_json_line();
    if line.len() <= MAX_FINDING_BYTES {
        return line;
    }
    for v in f.product_fields.values_mut() {
        *v = clip(v, 256);
    }
    f.to_json_line()
}

#[cfg(test)]
mod tests;
