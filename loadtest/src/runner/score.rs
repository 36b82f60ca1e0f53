//! Detection quality against the ground truth. A finding is a true positive
//! when any event id it carries (`ProductFields["trailwatch/EventIds"]`: the
//! triggering event, or a correlation's sample events) belongs to an injected
//! attack; precision = true-positive findings / all findings; recall =
//! attacks with at least one finding / attacks.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::RunError;
use crate::truth::Truth;

/// What the scorer needs from one ASFF finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: String,
    pub rule_id: String,
    pub title: String,
    pub level: String,
    pub event_ids: Vec<String>,
    /// A few ProductFields for the report (event name, principal, ...).
    pub context: BTreeMap<String, String>,
}

/// Reads findings (one ASFF JSON per line).
pub fn read_findings(path: &Path) -> Result<Vec<Finding>, RunError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RunError::Io { path: path.to_path_buf(), source: e }),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(RunError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| RunError::Findings {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(parse_finding(&v));
    }
    Ok(out)
}

pub fn parse_finding(v: &serde_json::Value) -> Finding {
    let pf = v.get("ProductFields");
    let field = |k: &str| pf.and_then(|p| p.get(k)).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let rule_id = Some(field("trailwatch/RuleId"))
        .filter(|s| !s.is_empty())
        .or_else(|| v.get("GeneratorId").and_then(|x| x.as_str()).map(str::to_string))
        .unwrap_or_default();
    let title = Some(field("trailwatch/RuleTitle"))
        .filter(|s| !s.is_empty())
        .or_else(|| v.get("Title").and_then(|x| x.as_str()).map(str::to_string))
        .unwrap_or_default();
    // The list is clipped to 2048 characters with a trailing '…': drop a cut id.
    let event_ids = field("trailwatch/EventIds")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.ends_with('…'))
        .map(str::to_string)
        .collect();
    let mut context = BTreeMap::new();
    for k in [
        "aws/cloudtrail/EventName",
        "aws/cloudtrail/EventSource",
        "aws/cloudtrail/UserIdentityArn",
        "aws/cloudtrail/SourceIPAddress",
        "aws/eventbridge/DetailType",
        "trailwatch/GroupKey",
        "trailwatch/Count",
    ] {
        let val = field(k);
        if !val.is_empty() {
            context.insert(k.to_string(), val);
        }
    }
    if let Some(a) = v.get("AwsAccountId").and_then(|x| x.as_str()) {
        context.insert("AwsAccountId".into(), a.to_string());
    }
    Finding {
        id: v.get("Id").and_then(|x| x.as_str()).unwrap_or("").to_string(),
        rule_id,
        title,
        level: field("trailwatch/RuleLevel"),
        event_ids,
        context,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleRef {
    pub rule_id: String,
    pub title: String,
    pub findings: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioResult {
    pub id: String,
    pub name: String,
    pub theme: String,
    pub summary: String,
    pub account: String,
    pub start: String,
    pub principal: Option<String>,
    /// Rules whose findings touched this scenario's events.
    pub rules: Vec<RuleRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub finding_id: String,
    pub event_id: Option<String>,
    /// The look-alike the event belongs to, if any.
    pub lookalike: Option<String>,
    pub context: BTreeMap<String, String>,
    /// The raw event, when it could be found in the dataset.
    pub event: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FalsePositiveRule {
    pub rule_id: String,
    pub title: String,
    pub level: String,
    pub findings: u64,
    /// False-positive findings of this rule on injected look-alikes, by look-alike name.
    pub on_lookalikes: BTreeMap<String, u64>,
    pub example: Example,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleCount {
    pub rule_id: String,
    pub title: String,
    pub level: String,
    pub findings: u64,
    pub true_positive: u64,
    pub false_positive: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThemeResult {
    pub scenarios: u64,
    pub detected: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Quality {
    pub findings: u64,
    pub true_positive_findings: u64,
    pub false_positive_findings: u64,
    /// Findings carrying no event id at all (counted as false positives).
    pub findings_without_event_ids: u64,
    /// None when there are no findings.
    pub precision: Option<f64>,
    pub scenarios: u64,
    pub scenarios_detected: u64,
    /// None when no attack was injected.
    pub recall: Option<f64>,
    pub by_theme: BTreeMap<String, ThemeResult>,
    pub detected: Vec<ScenarioResult>,
    pub missed: Vec<ScenarioResult>,
    pub lookalikes: u64,
    /// Look-alikes on which some finding fired.
    pub lookalikes_raised: Vec<String>,
    pub false_positives_by_rule: Vec<FalsePositiveRule>,
    pub by_rule: Vec<RuleCount>,
}

/// Scores `findings` against `truth`.
pub fn score(truth: &Truth, findings: &[Finding]) -> Quality {
    let mut attack_of: HashMap<&str, usize> = HashMap::new();
    for (i, s) in truth.scenarios.iter().enumerate() {
        for id in &s.event_ids {
            attack_of.insert(id, i);
        }
    }
    let mut lookalike_of: HashMap<&str, usize> = HashMap::new();
    for (i, s) in truth.lookalikes.iter().enumerate() {
        for id in &s.event_ids {
            lookalike_of.insert(id, i);
        }
    }
    let mut hits: Vec<BTreeMap<(String, String), u64>> = vec![BTreeMap::new(); truth.scenarios.len()];
    let mut lookalike_hit = vec![false; truth.lookalikes.len()];
    let mut by_rule: BTreeMap<String, RuleCount> = BTreeMap::new();
    let mut fp: BTreeMap<String, FalsePositiveRule> = BTreeMap::new();
    let (mut tp_n, mut fp_n, mut no_ids) = (0u64, 0u64, 0u64);
    for f in findings {
        let rc = by_rule.entry(f.rule_id.clone()).or_insert_with(|| RuleCount {
            rule_id: f.rule_id.clone(),
            title: f.title.clone(),
            level: f.level.clone(),
            findings: 0,
            true_positive: 0,
            false_positive: 0,
        });
        rc.findings += 1;
        let mut scenarios: Vec<usize> =
            f.event_ids.iter().filter_map(|id| attack_of.get(id.as_str()).copied()).collect();
        scenarios.sort_unstable();
        scenarios.dedup();
        if !scenarios.is_empty() {
            tp_n += 1;
            rc.true_positive += 1;
            for s in scenarios {
                *hits[s].entry((f.rule_id.clone(), f.title.clone())).or_default() += 1;
            }
            continue;
        }
        fp_n += 1;
        rc.false_positive += 1;
        if f.event_ids.is_empty() {
            no_ids += 1;
        }
        let look = f.event_ids.iter().find_map(|id| lookalike_of.get(id.as_str()).copied());
        if let Some(l) = look {
            lookalike_hit[l] = true;
        }
        let entry = fp.entry(f.rule_id.clone()).or_insert_with(|| FalsePositiveRule {
            rule_id: f.rule_id.clone(),
            title: f.title.clone(),
            level: f.level.clone(),
            findings: 0,
            on_lookalikes: BTreeMap::new(),
            example: Example {
                finding_id: f.id.clone(),
                event_id: f.event_ids.first().cloned(),
                lookalike: look.map(|l| truth.lookalikes[l].name.clone()),
                context: f.context.clone(),
                event: None,
            },
        });
        entry.findings += 1;
        if let Some(l) = look {
            *entry.on_lookalikes.entry(truth.lookalikes[l].name.clone()).or_default() += 1;
        }
    }
    let mut detected = Vec::new();
    let mut missed = Vec::new();
    let mut by_theme: BTreeMap<String, ThemeResult> = BTreeMap::new();
    for (i, s) in truth.scenarios.iter().enumerate() {
        let rules: Vec<RuleRef> = hits[i]
            .iter()
            .map(|((id, title), n)| RuleRef { rule_id: id.clone(), title: title.clone(), findings: *n })
            .collect();
        let th = by_theme.entry(s.theme.clone()).or_default();
        th.scenarios += 1;
        let r = ScenarioResult {
            id: s.id.clone(),
            name: s.name.clone(),
            theme: s.theme.clone(),
            summary: s.summary.clone(),
            account: s.account.clone(),
            start: s.start.clone(),
            principal: s.principal.clone(),
            rules,
        };
        if r.rules.is_empty() {
            missed.push(r);
        } else {
            th.detected += 1;
            detected.push(r);
        }
    }
    let total = findings.len() as u64;
    let mut fps: Vec<FalsePositiveRule> = fp.into_values().collect();
    fps.sort_by(|a, b| b.findings.cmp(&a.findings).then(a.rule_id.cmp(&b.rule_id)));
    let mut rules: Vec<RuleCount> = by_rule.into_values().collect();
    rules.sort_by(|a, b| b.findings.cmp(&a.findings).then(a.rule_id.cmp(&b.rule_id)));
    Quality {
        findings: total,
        true_positive_findings: tp_n,
        false_positive_findings: fp_n,
        findings_without_event_ids: no_ids,
        precision: (total > 0).then(|| tp_n as f64 / total as f64),
        scenarios: truth.scenarios.len() as u64,
        scenarios_detected: detected.len() as u64,
        recall: (!truth.scenarios.is_empty()).then(|| detected.len() as f64 / truth.scenarios.len() as f64),
        by_theme,
        detected,
        missed,
        lookalikes: truth.lookalikes.len() as u64,
        lookalikes_raised: truth
            .lookalikes
            .iter()
            .zip(lookalike_hit)
            .filter(|(_, h)| *h)
            .map(|(l, _)| l.id.clone())
            .collect(),
        false_positives_by_rule: fps,
        by_rule: rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::Labelled;
    use crate::truth::{GeneratorInfo, OrgInfo};

    fn labelled(name: &str, ids: &[&str]) -> Labelled {
        Labelled {
            id: format!("{name}#1"),
            name: name.into(),
            theme: "t".into(),
            summary: String::new(),
            principal: None,
            account: "111111111111".into(),
            region: "us-east-1".into(),
            start: "2026-11-02T00:00:00Z".into(),
            end: "2026-11-02T00:00:00Z".into(),
            event_ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn truth() -> Truth {
        Truth {
            version: 1,
            generator: GeneratorInfo {
                seed: 1,
                start: String::new(),
                end: String::new(),
                duration_seconds: 0,
                rate: 0.0,
                repeat: 1,
                events: 0,
                events_cloudtrail: 0,
                events_eventbridge: 0,
                outputs: vec![],
            },
            org: OrgInfo {
                id: "o-x".into(),
                accounts: vec![],
                regions: vec![],
                outside_accounts: vec![],
                office_cidrs: vec![],
                approved_upstreams: vec![],
            },
            scenarios: vec![labelled("a", &["e1", "e2"]), labelled("b", &["e3"]), labelled("c", &["e4"])],
            lookalikes: vec![labelled("l", &["e9"])],
        }
    }

    fn finding(rule: &str, ids: &str) -> Finding {
        let v = serde_json::json!({
            "Id": format!("f-{rule}-{ids}"),
            "Title": format!("title {rule}"),
            "ProductFields": {"trailwatch/RuleId": rule, "trailwatch/EventIds": ids, "trailwatch/RuleLevel": "high"}
        });
        parse_finding(&v)
    }

    #[test]
    fn precision_recall_and_attribution() {
        let f = vec![
            finding("r1", "x0,e2"),    // TP: scenario a (sample ids of a correlation)
            finding("r1", "e1"),       // TP: a again
            finding("r2", "e3"),       // TP: b
            finding("r3", "e9"),       // FP on a look-alike
            finding("r3", "zz"),       // FP on benign traffic
            finding("r4", ""),         // FP without ids
            finding("r5", "e4x,abc…"), // clipped id list: no match
        ];
        let q = score(&truth(), &f);
        assert_eq!(q.findings, 7);
        assert_eq!(q.true_positive_findings, 3);
        assert_eq!(q.false_positive_findings, 4);
        assert_eq!(q.findings_without_event_ids, 1);
        assert!((q.precision.unwrap() - 3.0 / 7.0).abs() < 1e-9);
        assert_eq!((q.scenarios, q.scenarios_detected), (3, 2));
        assert!((q.recall.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(q.missed.len(), 1);
        assert_eq!(q.missed[0].name, "c");
        assert_eq!(q.detected[0].rules, vec![RuleRef { rule_id: "r1".into(), title: "title r1".into(), findings: 2 }]);
        assert_eq!(q.lookalikes_raised, vec!["l#1".to_string()]);
        let r3 = q.false_positives_by_rule.iter().find(|r| r.rule_id == "r3").unwrap();
        assert_eq!(r3.findings, 2);
        assert_eq!(r3.on_lookalikes.get("l"), Some(&1));
        assert_eq!(r3.example.lookalike.as_deref(), Some("l"));
        assert_eq!(q.by_rule.iter().map(|r| r.findings).sum::<u64>(), 7);
    }

    #[test]
    fn empty_inputs_give_no_ratios() {
        let mut t = truth();
        t.scenarios.clear();
        let q = score(&t, &[]);
        assert_eq!(q.precision, None);
        assert_eq!(q.recall, None);
    }
}
