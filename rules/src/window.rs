//! Sigma correlation rules: parsing and the compiled form. The state that
//! counts over event-time windows lives in [`crate::detect`].
//!
//! Supported: `event_count`, `value_count`, `temporal`, `temporal_ordered`,
//! and our extension `first_seen` (new-terms baselines, state in `baseline.rs`);
//! `rules` by id or name (detection rules or other correlations, so chains
//! work); `group-by` (list, scalar, or absent = one group); `timespan`
//! (`<n>s|m|h|d|w`); `condition` with `gt gte lt lte eq neq`, several at once
//! for a range, and `field` for value_count; `aliases`; `generate`.

use std::collections::BTreeMap;

use serde_norway::Value;

use crate::compile::FieldTable;
use crate::error::RuleError;
use crate::meta::RuleMeta;
use crate::parse::CorrelationDoc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationType {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
    /// Our extension: the group-by combination was not seen within `history`.
    FirstSeen,
}

/// `first_seen` settings: a combination is new when it was not seen within
/// `history_ms` before; nothing fires during the first `learning_ms` of event
/// time after the first event the rule sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstSeenSpec {
    pub history_ms: i64,
    pub learning_ms: i64,
}

/// A reference from a correlation to what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    Detection(u32),
    Correlation(usize),
}

/// `gt`, `gte`, ... bounds; all given bounds must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountCondition {
    pub gt: Option<u64>,
    pub gte: Option<u64>,
    pub lt: Option<u64>,
    pub lte: Option<u64>,
    pub eq: Option<u64>,
    pub neq: Option<u64>,
}

impl CountCondition {
    pub fn holds(&self, n: u64) -> bool {
        self.gt.is_none_or(|x| n > x)
            && self.gte.is_none_or(|x| n >= x)
            && self.lt.is_none_or(|x| n < x)
            && self.lte.is_none_or(|x| n <= x)
            && self.eq.is_none_or(|x| n == x)
            && self.neq.is_none_or(|x| n != x)
    }

    /// True when only lower bounds are given: once they hold they keep
    /// holding as events arrive, so the window can fire at once. Other
    /// conditions are decided when the window closes.
    pub fn is_monotone(&self) -> bool {
        self.lt.is_none() && self.lte.is_none() && self.eq.is_none() && self.neq.is_none()
    }
}

/// A compiled correlation rule.
#[derive(Debug, Clone)]
pub struct CorrelationRule {
    pub meta: RuleMeta,
    pub kind: CorrelationType,
    pub rules: Vec<RuleRef>,
    /// Names of the group-by fields, as written (the group key's labels).
    pub group_by: Vec<String>,
    /// For each referenced rule (same order as `rules`), the field id to read
    /// each group-by value from (aliases resolved).
    pub group_fields: Vec<Vec<u32>>,
    /// value_count: the field whose distinct values are counted, per rule.
    pub value_fields: Vec<Option<u32>>,
    pub value_field_name: Option<String>,
    pub timespan_ms: i64,
    pub condition: CountCondition,
    pub generate: bool,
    /// Reports nothing alone: a later correlation that was refused asked for
    /// it (`generate: false`).
    pub quiet: bool,
    pub tests: Option<Value>,
    /// Set for `first_seen` (then `timespan_ms` is the history).
    pub first_seen: Option<FirstSeenSpec>,
}

/// A string or a list of strings.
fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Sequence(items) => items.iter().map(|i| i.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

pub fn parse_timespan(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("timespan `{s}` must be <number><s|m|h|d|w>"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "w" => n * 7 * 86400,
        _ => return Err(format!("timespan `{s}` has an unknown unit (use s, m, h, d or w)")),
    };
    if secs <= 0 {
        return Err(format!("timespan `{s}` must be positive"));
    }
    Ok(secs * 1000)
}

/// What a correlation needs from the rules loaded around it.
pub(crate) trait Resolver {
    /// A detection rule or an earlier correlation by id or name.
    fn resolve(&self, name: &str) -> Option<RuleRef>;
    /// The name or id used to key `aliases` for a reference.
    fn names_of(&self, r: RuleRef) -> Vec<String>;
    /// The type of a referenced correlation.
    fn kind_of(&self, r: RuleRef) -> Option<CorrelationType>;
}

/// The rules a correlation that could not be used asked to keep quiet: those
/// of its `rules` that resolve, unless it says `generate: true`. A refused
/// correlation must not turn the rules it silenced into alerts of their own.
pub(crate) fn silenced(c: &CorrelationDoc<'_>, resolver: &dyn Resolver) -> Vec<RuleRef> {
    let m = &c.correlation;
    if matches!(m.get("generate").or(c.generate.as_ref()), Some(Value::Bool(true))) {
        return Vec::new();
    }
    let names = m.get("rules").and_then(string_list).unwrap_or_default();
    names.iter().filter_map(|n| resolver.resolve(n)).collect()
}

/// Compiles one correlation document.
pub(crate) fn compile(
    c: &CorrelationDoc<'_>,
    resolver: &dyn Resolver,
    fields: &mut FieldTable,
) -> Result<CorrelationRule, RuleError> {
    let doc = &c.doc;
    let m = &c.correlation;
    let err = |key: &str, reason: String| doc.error(doc.line_of(key), reason);
    let kind = match m.get("type").and_then(Value::as_str) {
        Some("event_count") => CorrelationType::EventCount,
        Some("value_count") => CorrelationType::ValueCount,
        Some("temporal") => CorrelationType::Temporal,
        Some("temporal_ordered") => CorrelationType::TemporalOrdered,
        Some("first_seen") => CorrelationType::FirstSeen,
        Some(t @ ("value_sum" | "value_avg" | "value_percentile" | "value_median")) => {
            return Err(err("type", format!("correlation type `{t}` is not supported (supported: event_count, value_count, temporal, temporal_ordered, first_seen)")))
        }
        Some(t) => return Err(err("type", format!("unknown correlation type `{t}`"))),
        None => return Err(err("correlation", "correlation needs a `type`".into())),
    };
    let names = match m.get("rules") {
        Some(v) => string_list(v).ok_or_else(|| err("rules", "`rules` must be a list of rule ids or names".into()))?,
        None => {
            return Err(err(
                "correlation",
                "correlation needs `rules` (ids or names of the rules it correlates)".into(),
            ))
        }
    };
    if names.is_empty() {
        return Err(err("rules", "`rules` is empty".into()));
    }
    let mut rules = Vec::new();
    for n in &names {
        match resolver.resolve(n) {
            // A first_seen alert is not a window: nothing could count it.
            Some(r) if resolver.kind_of(r) == Some(CorrelationType::FirstSeen) => {
                return Err(doc.error(
                    doc.line_containing(n),
                    format!("correlation refers to `{n}`, a first_seen rule: first_seen alerts cannot be correlated further"),
                ))
            }
            Some(RuleRef::Correlation(_)) if kind == CorrelationType::FirstSeen => {
                return Err(doc.error(
                    doc.line_containing(n),
                    format!("first_seen refers to correlation `{n}`: it remembers detection matches only"),
                ))
            }
            Some(r) => rules.push(r),
            None => {
                return Err(doc.error(
                    doc.line_containing(n),
                    format!("correlation refers to rule `{n}`, which is not loaded (by id or name; a correlation must come after the rules it uses)"),
                ))
            }
        }
    }
    let group_by = match m.get("group-by") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => string_list(v).ok_or_else(|| err("group-by", "`group-by` must be a list of field names".into()))?,
    };
    // aliases: alias → { rule name → field }
    let mut aliases: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if let Some(a) = m.get("aliases") {
        let Value::Mapping(am) = a else {
            return Err(err("aliases", "`aliases` must map alias names to {rule: field}".into()));
        };
        for (k, v) in am {
            let (Some(alias), Value::Mapping(per)) = (k.as_str(), v) else {
                return Err(err("aliases", "`aliases` must map alias names to {rule: field}".into()));
            };
            let mut map = BTreeMap::new();
            for (rk, fv) in per {
                let (Some(rule), Some(field)) = (rk.as_str(), fv.as_str()) else {
                    return Err(err(alias, format!("alias `{alias}` must map rule names to field names")));
                };
                map.insert(rule.to_string(), field.to_string());
            }
            aliases.insert(alias.to_string(), map);
        }
    }
    let mut group_fields = Vec::new();
    for r in &rules {
        let rnames = resolver.names_of(*r);
        let mut per = Vec::new();
        for g in &group_by {
            let path = match aliases.get(g) {
                Some(map) => match rnames.iter().find_map(|n| map.get(n)) {
                    Some(f) => f.clone(),
                    None => {
                        return Err(err(
                            g,
                            format!(
                                "alias `{g}` has no field for rule `{}`",
                                rnames.first().cloned().unwrap_or_default()
                            ),
                        ))
                    }
                },
                None => g.clone(),
            };
            per.push(fields.intern(&path));
        }
        group_fields.push(per);
    }
    let cond_map = match m.get("condition") {
        None => None,
        Some(Value::Mapping(cm)) => Some(cm.clone()),
        Some(_) => return Err(err("condition", "`condition` must be a mapping like {gte: 10}".into())),
    };
    let mut condition = CountCondition::default();
    let mut value_field_name = None;
    if let Some(cm) = &cond_map {
        for (k, v) in cm {
            let key = k.as_str().unwrap_or("");
            if key == "field" {
                value_field_name = Some(
                    v.as_str()
                        .ok_or_else(|| err("field", "`condition.field` must be one field name".into()))?
                        .to_string(),
                );
                continue;
            }
            let n = v
                .as_u64()
                .ok_or_else(|| err("condition", format!("`condition.{key}` must be a non-negative integer")))?;
            match key {
                "gt" => condition.gt = Some(n),
                "gte" => condition.gte = Some(n),
                "lt" => condition.lt = Some(n),
                "lte" => condition.lte = Some(n),
                "eq" => condition.eq = Some(n),
                "neq" => condition.neq = Some(n),
                other => {
                    return Err(err(
                        "condition",
                        format!("unknown condition operator `{other}` (use gt, gte, lt, lte, eq, neq)"),
                    ))
                }
            }
        }
    }
    let has_bound = condition != CountCondition::default();
    if kind == CorrelationType::FirstSeen {
        return compile_first_seen(c, rules, group_by, group_fields, has_bound || value_field_name.is_some());
    }
    match kind {
        CorrelationType::EventCount | CorrelationType::ValueCount if !has_bound => {
            return Err(err("correlation", "this correlation type needs a `condition` such as {gte: 10}".into()));
        }
        CorrelationType::Temporal | CorrelationType::TemporalOrdered if !has_bound => {
            // Default: every referenced rule must appear.
            condition.gte = Some(rules.len() as u64);
        }
        _ => {}
    }
    let mut value_fields = vec![None; rules.len()];
    if kind == CorrelationType::ValueCount {
        let Some(vf) = &value_field_name else {
            return Err(err(
                "condition",
                "value_count needs `condition.field` (the field whose distinct values are counted)".into(),
            ));
        };
        for (i, r) in rules.iter().enumerate() {
            let rnames = resolver.names_of(*r);
            let path = aliases
                .get(vf)
                .and_then(|map| rnames.iter().find_map(|n| map.get(n)).cloned())
                .unwrap_or_else(|| vf.clone());
            value_fields[i] = Some(fields.intern(&path));
        }
    }
    let timespan = match m.get("timespan") {
        Some(Value::String(s)) => parse_timespan(s).map_err(|r| err("timespan", r))?,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| *n > 0)
            .map(|n| n * 1000)
            .ok_or_else(|| err("timespan", "timespan must be positive".into()))?,
        _ => return Err(err("correlation", "correlation needs a `timespan` such as 5m".into())),
    };
    let generate = match m.get("generate").or(c.generate.as_ref()) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err("generate", "`generate` must be true or false".into())),
    };
    Ok(CorrelationRule {
        meta: c.meta.clone(),
        kind,
        rules,
        group_by,
        group_fields,
        value_fields,
        value_field_name,
        timespan_ms: timespan,
        condition,
        generate,
        quiet: false,
        tests: c.tests.clone(),
        first_seen: None,
    })
}

/// The rest of a `first_seen` correlation: `history` (required), `learning`
/// (default: the history), no `condition` or `timespan`.
fn compile_first_seen(
    c: &CorrelationDoc<'_>,
    rules: Vec<RuleRef>,
    group_by: Vec<String>,
    group_fields: Vec<Vec<u32>>,
    has_condition: bool,
) -> Result<CorrelationRule, RuleError> {
    let doc = &c.doc;
    let m = &c.correlation;
    let err = |key: &str, reason: String| doc.error(doc.line_of(key), reason);
    if has_condition {
        return Err(err(
            "condition",
            "first_seen takes no `condition`: it fires on a combination not seen within `history`".into(),
        ));
    }
    if m.contains_key("timespan") {
        return Err(err(
            "timespan",
            "first_seen takes `history` (how long a combination is remembered) instead of `timespan`".into(),
        ));
    }
    if group_by.is_empty() {
        return Err(err(
            "correlation",
            "first_seen needs `group-by`: the fields whose combination is remembered".into(),
        ));
    }
    let span = |key: &str| -> Result<Option<i64>, RuleError> {
        match m.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_timespan(s).map(Some).map_err(|r| err(key, r.replace("timespan", key))),
            Some(_) => Err(err(key, format!("`{key}` must be a duration such as 14d"))),
        }
    };
    let Some(history_ms) = span("history")? else {
        return Err(err(
            "correlation",
            "first_seen needs `history`, such as 14d: how long a seen combination is remembered".into(),
        ));
    };
    let learning_ms = span("learning")?.unwrap_or(history_ms);
    let generate = match m.get("generate").or(c.generate.as_ref()) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err("generate", "`generate` must be true or false".into())),
    };
    let n = rules.len();
    Ok(CorrelationRule {
        meta: c.meta.clone(),
        kind: CorrelationType::FirstSeen,
        rules,
        group_by,
        group_fields,
        value_fields: vec![None; n],
        value_field_name: None,
        timespan_ms: history_ms,
        condition: CountCondition::default(),
        generate,
        quiet: false,
        tests: c.tests.clone(),
        first_seen: Some(FirstSeenSpec { history_ms, learning_ms }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("5m"), Ok(300_000));
        assert_eq!(parse_timespan("90s"), Ok(90_000));
        assert_eq!(parse_timespan("1d"), Ok(86_400_000));
        assert_eq!(parse_timespan("2w"), Ok(1_209_600_000));
        assert!(parse_timespan("5 parsecs").is_err());
        assert!(parse_timespan("0m").is_err());
        assert!(parse_timespan("m").is_err());
    }

    #[test]
    fn conditions() {
        let c = CountCondition { gt: Some(10), lte: Some(20), ..Default::default() };
        assert!(!c.holds(10) && c.holds(11) && c.holds(20) && !c.holds(21));
        assert!(!c.is_monotone());
        assert!(CountCondition { gte: Some(3), ..Default::default() }.is_monotone());
    }
}
