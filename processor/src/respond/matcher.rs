//! Which `[[responses]]` apply to a finding, and what in the finding each
//! action would act on (read from the ASFF JSON, so the stream and a replay's
//! output are matched alike).

use std::collections::HashMap;

use serde_json::Value;

use super::config::{severity_rank, ActionKind, Mode, ResponseRule};

/// `*` matches any run of characters; everything else literally (ASCII case-insensitive).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The parts of an ASFF finding responses look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingView {
    pub id: String,
    pub rule_id: String,
    pub title: String,
    pub severity: String,
    /// The account the finding is about (affected account, else AwsAccountId).
    pub account: String,
    pub region: String,
    pub product_arn: String,
    pub event_name: Option<String>,
    /// The acting principal (CloudTrail userIdentity ARN).
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub remediation: Option<String>,
    pub remediation_url: Option<String>,
    pub description: String,
    /// Resources, by ASFF type: (type, id).
    pub resources: Vec<(String, String)>,
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::to_string)
}

impl FindingView {
    pub fn from_asff(v: &Value) -> Option<FindingView> {
        let id = s(v, &["Id"])?;
        let pf = |k: &str| s(v, &["ProductFields", k]);
        let resources = v
            .get("Resources")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|r| Some((s(r, &["Type"])?, s(r, &["Id"])?))).collect())
            .unwrap_or_default();
        Some(FindingView {
            rule_id: pf("trailwatch/RuleId").or_else(|| s(v, &["GeneratorId"])).unwrap_or_default(),
            title: s(v, &["Title"]).unwrap_or_default(),
            severity: s(v, &["Severity", "Label"]).unwrap_or_else(|| "INFORMATIONAL".into()),
            account: pf("trailwatch/AffectedAccount").or_else(|| s(v, &["AwsAccountId"])).unwrap_or_default(),
            region: pf("trailwatch/EventRegion").or_else(|| s(v, &["Region"])).unwrap_or_else(|| "us-east-1".into()),
            product_arn: s(v, &["ProductArn"]).unwrap_or_default(),
            event_name: pf("aws/cloudtrail/EventName"),
            principal: pf("aws/cloudtrail/UserIdentityArn"),
            source_ip: pf("aws/cloudtrail/SourceIPAddress"),
            first_seen: s(v, &["FirstObservedAt"]).unwrap_or_default(),
            last_seen: s(v, &["LastObservedAt"]).unwrap_or_default(),
            remediation: s(v, &["Remediation", "Recommendation", "Text"]),
            remediation_url: s(v, &["Remediation", "Recommendation", "Url"]),
            description: s(v, &["Description"]).unwrap_or_default(),
            resources,
            id,
        })
    }

    pub fn resource(&self, kind: &str) -> Option<&str> {
        self.resources.iter().find(|(k, _)| k == kind).map(|(_, id)| id.as_str())
    }
}

/// One action a rule asks for on one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub response: String,
    pub action: ActionKind,
    pub mode: Mode,
}

/// The configured responses, ready to match.
pub struct Matcher {
    rules: Vec<(String, ResponseRule)>,
    /// Rule id → its tags (tags are not in the finding).
    tags: HashMap<String, Vec<String>>,
}

impl Matcher {
    pub fn new(responses: &[ResponseRule], tags: HashMap<String, Vec<String>>) -> Matcher {
        let rules = responses
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone().unwrap_or_else(|| format!("responses[{i}]")), r.clone()))
            .collect();
        Matcher { rules, tags }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first response in mode on-request or enforce that matches the
    /// finding and lists `action` (may an analyst ask for it?).
    pub fn allows(&self, f: &FindingView, action: ActionKind) -> Option<String> {
        self.rules
            .iter()
            .find(|(_, r)| {
                matches!(r.mode, Mode::OnRequest | Mode::Enforce) && r.actions.contains(&action) && self.matches(r, f)
            })
            .map(|(n, _)| n.clone())
    }

    fn matches(&self, r: &ResponseRule, f: &FindingView) -> bool {
        if !r.rules.is_empty() && !r.rules.iter().any(|p| glob(p, &f.rule_id)) {
            return false;
        }
        if !r.tags.is_empty() {
            let tags = self.tags.get(&f.rule_id).map(Vec::as_slice).unwrap_or(&[]);
            if !r.tags.iter().any(|p| tags.iter().any(|t| glob(p, t))) {
                return false;
            }
        }
        if let Some(min) = r.min_severity.as_deref().and_then(severity_rank) {
            if severity_rank(&f.severity).unwrap_or(0) < min {
                return false;
            }
        }
        r.accounts.is_empty() || r.accounts.contains(&f.account)
    }

    /// Every (response, action) for this finding; one action once (the first
    /// response naming it wins: a finding is never acted on twice for one action).
    pub fn plan(&self, f: &FindingView) -> Vec<Planned> {
        let mut out: Vec<Planned> = Vec::new();
        for (name, r) in &self.rules {
            // On-request entries act only when an analyst asks ([`Matcher::allows`]).
            if r.mode == Mode::OnRequest || !self.matches(r, f) {
                continue;
            }
            for a in &r.actions {
                if !out.iter().any(|p| p.action == *a) {
                    out.push(Planned { response: name.clone(), action: *a, mode: r.mode });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_literally_and_with_stars() {
        assert!(glob("trailwatch*", "trailwatch-response"));
        assert!(glob("arn:aws:iam::*:role/breakglass", "arn:aws:iam::111122223333:role/breakglass"));
        assert!(!glob("arn:aws:iam::*:role/breakglass", "arn:aws:iam::111122223333:role/breakglass2"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYc"));
        assert!(!glob("a*b*c", "aXXbY"));
        assert!(glob("ABC", "abc"));
    }

    fn finding(rule: &str, sev: &str, account: &str) -> FindingView {
        FindingView {
            id: "f1".into(),
            rule_id: rule.into(),
            severity: sev.into(),
            account: account.into(),
            ..Default::default()
        }
    }

    #[test]
    fn criteria_all_apply_and_an_action_is_planned_once() {
        let rules = vec![
            ResponseRule {
                name: Some("high".into()),
                min_severity: Some("HIGH".into()),
                actions: vec![ActionKind::Notify],
                mode: Mode::Enforce,
                ..Default::default()
            },
            ResponseRule {
                rules: vec!["r-*".into()],
                tags: vec!["attack.t1562*".into()],
                accounts: vec!["111122223333".into()],
                actions: vec![ActionKind::Notify, ActionKind::RestoreConfig],
                ..Default::default()
            },
        ];
        let tags = HashMap::from([("r-1".to_string(), vec!["attack.t1562.008".to_string()])]);
        let m = Matcher::new(&rules, tags);
        let p = m.plan(&finding("r-1", "CRITICAL", "111122223333"));
        assert_eq!(
            p,
            vec![
                Planned { response: "high".into(), action: ActionKind::Notify, mode: Mode::Enforce },
                Planned { response: "responses[1]".into(), action: ActionKind::RestoreConfig, mode: Mode::DryRun },
            ]
        );
        // Below the severity, another account, another rule, a rule without the tag.
        assert_eq!(m.plan(&finding("r-1", "MEDIUM", "111122223333")).len(), 2);
        assert!(m.plan(&finding("r-1", "MEDIUM", "999999999999")).is_empty());
        assert!(m.plan(&finding("x-1", "LOW", "111122223333")).is_empty());
        assert!(m.plan(&finding("r-2", "LOW", "111122223333")).is_empty());
    }
}
