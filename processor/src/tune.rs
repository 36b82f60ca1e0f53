//! `trailwatch tune INPUT...`: replays the inputs (as `replay` does), then
//! says per rule how often it fired and who was behind it, and prints a TOML
//! snippet (placeholder values and suppressions with `expires` and `reason`)
//! that would quiet the recurring sources. It applies nothing.
//!
//! Recurring: one principal behind at least `min_findings` findings of a rule
//! spread over at least `min_hours` distinct hours of event time. An attack
//! is a burst; an untuned machine identity fires all day. The heuristic
//! cannot tell a persistent intruder from a machine: the snippet is for a
//! person to review, never applied by trailwatch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use time::OffsetDateTime;
use trailwatch_rules::parse::split_documents;
use trailwatch_rules::window::RuleRef;
use trailwatch_rules::{RuleFile, RuleSet};

use crate::decode::{self, Decoded};
use crate::replay::{self, ReplayFormat, ReplayOptions, ReplayStats};
use crate::sources::file::expand_inputs;

/// What `tune` needs besides the replay options.
pub struct TuneOptions {
    pub replay: ReplayOptions,
    /// The rule files loaded (to find the `%placeholders%` a rule expands).
    pub files: Vec<RuleFile>,
    /// Current placeholder values (the proposal extends them).
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Rows in each "top" list.
    pub top: usize,
    pub min_findings: u64,
    pub min_hours: usize,
    /// `expires` of the proposed suppressions.
    pub expires: OffsetDateTime,
}

/// One rule's findings.
#[derive(Debug, Clone, Default)]
pub struct RuleTune {
    pub rule_id: String,
    pub title: String,
    pub level: String,
    pub findings: u64,
    pub principals: Vec<(String, u64)>,
    pub accounts: Vec<(String, u64)>,
    /// Event names, source addresses and correlation group keys.
    pub values: Vec<(String, u64)>,
    /// Recurring principals: (principal, the field that holds it, findings, distinct hours).
    pub recurring: Vec<Recurring>,
    /// Detection rule ids a suppression must name (the rule itself, or the
    /// detections a correlation counts: suppressions apply to detection matches).
    pub suppress_rule_ids: Vec<String>,
    /// `%placeholder%` expanded on `userIdentity.arn` by those rules, if any.
    pub principal_placeholder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    pub principal: String,
    pub field: &'static str,
    pub findings: u64,
    pub hours: usize,
}

/// The whole tune result.
#[derive(Debug, Clone, Default)]
pub struct TuneReport {
    pub rules: Vec<RuleTune>,
    pub events: u64,
    pub findings: u64,
    expires: String,
    placeholders: BTreeMap<String, Vec<String>>,
}

/// Fields of one finding (from its ASFF JSON).
struct Row {
    rule_id: String,
    title: String,
    level: String,
    event_ids: Vec<String>,
    group: String,
    account: String,
}

/// Who and where behind one event.
#[derive(Clone)]
struct Source {
    principal: String,
    field: &'static str,
    account: String,
    ip: String,
    name: String,
    hour: String,
}

const ISSUER: &str = "userIdentity.sessionContext.sessionIssuer.arn";
const ARN: &str = "userIdentity.arn";

/// Parses finding lines as the replay writes them.
struct Collect {
    buf: Vec<u8>,
    rows: Vec<Row>,
}

impl Collect {
    fn line(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { return };
        let pf = &v["ProductFields"];
        let s = |k: &str| pf[k].as_str().unwrap_or("").to_string();
        self.rows.push(Row {
            rule_id: s("trailwatch/RuleId"),
            title: s("trailwatch/RuleTitle"),
            level: s("trailwatch/RuleLevel"),
            event_ids: s("trailwatch/EventIds")
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty() && !x.ends_with('…'))
                .map(str::to_string)
                .collect(),
            group: s("trailwatch/GroupKey"),
            account: Some(s("trailwatch/AffectedAccount"))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| v["AwsAccountId"].as_str().unwrap_or("").to_string()),
        });
    }
}

impl Write for Collect {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            self.line(&line[..line.len() - 1]);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The event id of a CloudTrail record or EventBridge event, without parsing it all.
fn quick_id(json: &str) -> Option<&str> {
    for key in ["\"eventID\":\"", "\"eventID\": \"", "\"id\":\"", "\"id\": \""] {
        if let Some(i) = json.find(key) {
            let rest = &json[i + key.len()..];
            return rest.find('"').map(|e| &rest[..e]);
        }
    }
    None
}

fn source_of(json: &str) -> Option<Source> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let ui = &v["userIdentity"];
    let issuer = ui["sessionContext"]["sessionIssuer"]["arn"].as_str().filter(|s| !s.is_empty());
    let (principal, field) = match (issuer, ui["arn"].as_str()) {
        (Some(i), _) => (i.to_string(), ISSUER),
        (None, Some(a)) => (a.to_string(), ARN),
        _ => (String::new(), ARN),
    };
    let time = v["eventTime"].as_str().or(v["time"].as_str()).unwrap_or("");
    Some(Source {
        principal,
        field,
        account: v["recipientAccountId"].as_str().or(v["account"].as_str()).unwrap_or("").to_string(),
        ip: v["sourceIPAddress"].as_str().unwrap_or("").to_string(),
        name: v["eventName"].as_str().or(v["detail-type"].as_str()).unwrap_or("").to_string(),
        hour: time.get(..13).unwrap_or(time).to_string(),
    })
}

fn top(counts: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.into_iter().filter(|(k, _)| !k.is_empty()).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// The `%name%` expanded on `userIdentity.arn` in a rule's YAML document.
fn principal_placeholder(files: &[RuleFile], source: &str, line: usize) -> Option<String> {
    let f = files.iter().find(|f| f.name == source)?;
    let doc = split_documents(&f.name, &f.text).into_iter().find(|d| d.first_line == line)?;
    for l in doc.text.lines() {
        let t = l.trim().trim_start_matches("- ");
        if let Some(rest) = t.strip_prefix("userIdentity.arn|expand:") {
            let p = rest.trim().trim_matches(['\'', '"']);
            if p.len() > 2 && p.starts_with('%') && p.ends_with('%') {
                return Some(p[1..p.len() - 1].to_string());
            }
        }
    }
    None
}

/// `arn:aws:iam::111122223333:role/path/name` → `arn:aws:sts::111122223333:assumed-role/name/*`.
fn session_pattern(role_arn: &str) -> Option<String> {
    let (head, role) = role_arn.split_once(":role/")?;
    let name = role.rsplit('/').next()?;
    Some(format!("{}:assumed-role/{name}/*", head.replacen(":iam:", ":sts:", 1)))
}

pub fn tune(set: Arc<RuleSet>, opts: &TuneOptions) -> anyhow::Result<(TuneReport, ReplayStats)> {
    anyhow::ensure!(opts.replay.format == ReplayFormat::Asff, "tune reads ASFF findings");
    // Pass 1: the replay, findings parsed as they are written.
    let mut collect = Collect { buf: Vec::new(), rows: Vec::new() };
    let stats = replay::replay(Arc::clone(&set), &opts.replay, &mut collect)?;
    let rows = collect.rows;
    // Pass 2: who was behind the events the findings name.
    let wanted: HashSet<&str> = rows.iter().flat_map(|r| r.event_ids.iter().map(String::as_str)).collect();
    let mut sources: HashMap<String, Source> = HashMap::new();
    let inputs: Vec<PathBuf> = expand_inputs(&opts.replay.inputs).map_err(anyhow::Error::msg)?;
    for input in &inputs {
        if input.as_os_str() == "-" {
            anyhow::bail!("tune reads its inputs twice: give files, not stdin");
        }
        let origin = input.display().to_string();
        let mut reader: Box<dyn Read> = Box::new(File::open(input).with_context(|| format!("cannot open {origin}"))?);
        decode::decode_reader(&mut reader, &origin, &opts.replay.decode, &mut |item| {
            if let Decoded::Event(ev) = item {
                if let Some(id) = quick_id(ev.json) {
                    if wanted.contains(id) && !sources.contains_key(id) {
                        if let Some(s) = source_of(ev.json) {
                            sources.insert(id.to_string(), s);
                        }
                    }
                }
            }
        })
        .with_context(|| format!("cannot read {origin}"))?;
    }
    // Per rule.
    let mut by_rule: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_rule.entry(r.rule_id.clone()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (rule_id, rs) in by_rule {
        let mut principals: HashMap<String, u64> = HashMap::new();
        let mut accounts: HashMap<String, u64> = HashMap::new();
        let mut values: HashMap<String, u64> = HashMap::new();
        // principal → (field, findings, hours)
        let mut per: HashMap<String, (&'static str, u64, BTreeSet<String>)> = HashMap::new();
        for r in &rs {
            let src = r.event_ids.iter().find_map(|id| sources.get(id));
            *accounts.entry(r.account.clone()).or_default() += 1;
            if !r.group.is_empty() {
                *values.entry(format!("group {}", r.group)).or_default() += 1;
            }
            if let Some(s) = src {
                *principals.entry(s.principal.clone()).or_default() += 1;
                if !s.name.is_empty() {
                    *values.entry(format!("eventName {}", s.name)).or_default() += 1;
                }
                if !s.ip.is_empty() {
                    *values.entry(format!("sourceIPAddress {}", s.ip)).or_default() += 1;
                }
                if r.account.is_empty() {
                    *accounts.entry(s.account.clone()).or_default() += 1;
                }
                if !s.principal.is_empty() {
                    let e = per.entry(s.principal.clone()).or_insert((s.field, 0, BTreeSet::new()));
                    e.1 += 1;
                    e.2.insert(s.hour.clone());
                }
            }
        }
        let mut recurring: Vec<Recurring> = per
            .into_iter()
            .filter(|(_, (_, n, h))| *n >= opts.min_findings && h.len() >= opts.min_hours)
            .map(|(p, (field, n, h))| Recurring { principal: p, field, findings: n, hours: h.len() })
            .collect();
        recurring.sort_by(|a, b| b.findings.cmp(&a.findings).then(a.principal.cmp(&b.principal)));
        // Which detection rules a suppression must name.
        let mut suppress_rule_ids = Vec::new();
        let mut placeholder = None;
        if let Some(i) = set.rules().iter().position(|r| r.meta.id == rule_id) {
            let m = &set.rules()[i].meta;
            suppress_rule_ids.push(m.id.clone());
            placeholder = principal_placeholder(&opts.files, &m.source, m.line);
        } else if let Some(c) = set.correlations().iter().find(|c| c.meta.id == rule_id) {
            for r in &c.rules {
                if let RuleRef::Detection(d) = r {
                    let m = &set.rules()[*d as usize].meta;
                    suppress_rule_ids.push(m.id.clone());
                    placeholder = placeholder.or_else(|| principal_placeholder(&opts.files, &m.source, m.line));
                }
            }
        }
        let first = rs[0];
        out.push(RuleTune {
            rule_id,
            title: first.title.clone(),
            level: first.level.clone(),
            findings: rs.len() as u64,
            principals: top(principals, opts.top),
            accounts: top(accounts, opts.top),
            values: top(values, opts.top),
            recurring,
            suppress_rule_ids,
            principal_placeholder: placeholder,
        });
    }
    out.sort_by(|a, b| b.findings.cmp(&a.findings).then(a.rule_id.cmp(&b.rule_id)));
    let expires = opts
        .expires
        .replace_nanosecond(0)
        .unwrap_or(opts.expires)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let report = TuneReport {
        rules: out,
        events: stats.eval.events,
        findings: rows.len() as u64,
        expires,
        placeholders: opts.placeholders.clone(),
    };
    Ok((report, stats))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "))
}

impl TuneReport {
    /// Per rule: how often, who, where (for the terminal).
    pub fn text(&self) -> String {
        let mut s = format!("{} events, {} findings from {} rules\n", self.events, self.findings, self.rules.len());
        for r in &self.rules {
            s.push_str(&format!("\n{:>7}  {}  [{}]  ({})\n", r.findings, r.title, r.level, r.rule_id));
            for (label, list) in [("principals", &r.principals), ("accounts", &r.accounts), ("values", &r.values)] {
                if list.is_empty() {
                    continue;
                }
                s.push_str(&format!("         top {label}:\n"));
                for (k, n) in list {
                    s.push_str(&format!("         {n:>7}  {k}\n"));
                }
            }
            for x in &r.recurring {
                s.push_str(&format!(
                    "         recurring: {} ({} findings over {} hours)\n",
                    x.principal, x.findings, x.hours
                ));
            }
        }
        s
    }

    /// The recurring (rule, principal) pairs the snippet quiets.
    pub fn quieted(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .flat_map(|r| r.recurring.iter().map(move |x| (r.rule_id.clone(), x.principal.clone())))
            .collect()
    }

    /// Ready-to-paste TOML: placeholder values where the rule expands one on
    /// the principal, else suppressions (with `expires` and `reason`).
    pub fn snippet(&self) -> String {
        let mut s = String::from(
            "# trailwatch tune: proposed configuration for the recurring sources below.\n\
             # Review every entry: a recurring source is not proven benign. Nothing was applied.\n",
        );
        if self.rules.iter().all(|r| r.recurring.is_empty()) {
            s.push_str("# No recurring source: nothing to propose.\n");
            return s;
        }
        // Placeholders: role session patterns added to the current values.
        let mut add: BTreeMap<String, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
        let mut supp = String::new();
        for r in &self.rules {
            let mut by_field: BTreeMap<&str, Vec<&Recurring>> = BTreeMap::new();
            for x in &r.recurring {
                let pattern = (x.field == ISSUER).then(|| session_pattern(&x.principal)).flatten();
                match (&r.principal_placeholder, pattern) {
                    (Some(p), Some(pat)) => {
                        let e = add.entry(p.clone()).or_default();
                        if e.0.insert(pat) {
                            e.1.push(format!("{} ({} findings of {})", x.principal, x.findings, r.title));
                        }
                    }
                    _ => by_field.entry(x.field).or_default().push(x),
                }
            }
            for (field, xs) in by_field {
                let values: Vec<String> = xs.iter().map(|x| x.principal.clone()).collect();
                let n: u64 = xs.iter().map(|x| x.findings).sum();
                let hours = xs.iter().map(|x| x.hours).max().unwrap_or(0);
                let reason = format!(
                    "trailwatch tune: {n} findings of \"{}\" from {} recurring principal(s) over up to {hours} hours; review, then keep or remove",
                    r.title,
                    values.len()
                );
                supp.push_str(&format!(
                    "\n[[suppressions]]\nfield = {}\nvalues = {}\nrules = {}\nexpires = {}\nreason = {}\n",
                    toml_str(field),
                    toml_list(&values),
                    toml_list(&r.suppress_rule_ids),
                    toml_str(&self.expires),
                    toml_str(&reason),
                ));
            }
        }
        if !add.is_empty() {
            s.push_str("\n[rules.placeholders]\n");
            for (p, (pats, why)) in &add {
                for w in why {
                    s.push_str(&format!("# {p}: {w}\n"));
                }
                let mut values: Vec<String> = self.placeholders.get(p).cloned().unwrap_or_default();
                for pat in pats {
                    if !values.contains(pat) {
                        values.push(pat.clone());
                    }
                }
                s.push_str(&format!("{p} = {}\n", toml_list(&values)));
            }
        }
        s.push_str(&supp);
        s
    }
}
