//! Sigma v1 aggregations (`condition: sel | count(field) by group > n` with
//! `timeframe`), read as what Sigma 2 says they are: a detection rule and a
//! correlation over it. Rule repositories still hold them (SigmaHQ itself
//! takes new ones), and a SOC points the detector at its whole repository.
//!
//! `count()` becomes an `event_count` correlation, `count(field)` a
//! `value_count` on that field; `by` fields are its `group-by`, `timeframe`
//! its `timespan`. The correlation keeps the rule's id, title and metadata
//! (its findings are the rule's); the detection under it gets the id
//! `<id>/match` and emits nothing itself (Sigma 2's `generate: false`), as in
//! v1 where only the aggregate alerted. `min`, `max`, `avg`, `sum` and `near`
//! are refused with the reason.

use serde_norway::{Mapping, Value};

use super::{CorrelationDoc, DetectionDoc};
use crate::error::RuleError;

/// The window of a v1 aggregation that names no `timeframe` (v1 left it to
/// the backend's search range); said in a load warning.
pub const DEFAULT_TIMEFRAME: &str = "1h";

/// `det` as a detection and a correlation when its condition aggregates;
/// `Ok(None)` when it does not.
pub fn split<'a>(det: &DetectionDoc<'a>) -> Result<Option<(DetectionDoc<'a>, CorrelationDoc<'a>)>, RuleError> {
    let doc = &det.doc;
    let Some(Value::String(condition)) = det.detection.get("condition") else {
        return Ok(None);
    };
    let Some((expr, agg)) = condition.split_once('|') else {
        return Ok(None);
    };
    let line = doc.line_of("condition");
    let err = |why: String| doc.error(line, format!("condition `{condition}`: {why}"));
    let agg = parse(agg.trim()).map_err(err)?;
    let timeframe = match det.detection.get("timeframe") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(doc.error(doc.line_of("timeframe"), "`timeframe` must be a duration such as `10m`")),
    };
    let mut detection = det.detection.clone();
    detection.insert("condition".into(), Value::String(expr.trim().to_string()));
    detection.remove("timeframe");
    let mut base = det.clone();
    base.detection = detection;
    base.meta.id = format!("{}/match", det.meta.id);
    base.meta.name = None;
    base.tests = None;

    let mut c = Mapping::new();
    let kind = if agg.field.is_some() { "value_count" } else { "event_count" };
    c.insert("type".into(), kind.into());
    c.insert("rules".into(), Value::Sequence(vec![base.meta.id.clone().into()]));
    if !agg.group_by.is_empty() {
        c.insert("group-by".into(), Value::Sequence(agg.group_by.into_iter().map(Value::String).collect()));
    }
    let defaulted = timeframe.is_none();
    c.insert("timespan".into(), timeframe.unwrap_or_else(|| DEFAULT_TIMEFRAME.to_string()).into());
    let mut cond = Mapping::new();
    cond.insert(agg.op.into(), Value::Number(agg.n.into()));
    if let Some(f) = agg.field {
        // Sigma 2 names the counted field in the condition.
        cond.insert("field".into(), f.into());
    }
    c.insert("condition".into(), Value::Mapping(cond));
    let warning = defaulted.then(|| {
        (
            line,
            format!(
                "a `| count()` aggregation without `timeframe` counts over {DEFAULT_TIMEFRAME} windows: add \
                 `timeframe` to the detection to choose"
            ),
        )
    });
    let correlation = CorrelationDoc {
        doc: doc.clone(),
        meta: det.meta.clone(),
        correlation: c,
        generate: None,
        tests: det.tests.clone(),
        warning,
    };
    Ok(Some((base, correlation)))
}

/// The part after `|`.
#[derive(Debug, PartialEq)]
struct Aggregation {
    field: Option<String>,
    group_by: Vec<String>,
    /// A correlation condition key: gt, gte, lt, lte, eq.
    op: &'static str,
    n: u64,
}

fn parse(s: &str) -> Result<Aggregation, String> {
    if s.starts_with("near") {
        return Err("`near` of Sigma v1 is not supported: write a temporal correlation rule".into());
    }
    let (func, rest) = s.split_once('(').ok_or_else(|| format!("`{s}` is not an aggregation such as `count() > 5`"))?;
    let func = func.trim();
    if func != "count" {
        return Err(format!(
            "the v1 aggregation `{func}()` is not supported (only `count()`, read as an event_count or value_count \
             correlation)"
        ));
    }
    let (field, rest) = rest.split_once(')').ok_or("`count(` is not closed")?;
    let field = Some(field.trim()).filter(|f| !f.is_empty()).map(str::to_string);
    let rest = rest.trim_start();
    let op_at = rest.find(['<', '>', '=', '!']).ok_or("an aggregation needs a comparison such as `> 5`")?;
    let (group, cmp) = rest.split_at(op_at);
    let group = group.trim();
    let group_by = if group.is_empty() {
        Vec::new()
    } else {
        let fields = group.strip_prefix("by").filter(|g| g.starts_with(char::is_whitespace));
        let fields = fields.ok_or_else(|| format!("`{group}`: expected `by <field>`"))?;
        fields.split(',').map(|f| f.trim().to_string()).collect()
    };
    if group_by.iter().any(|f| f.is_empty() || f.contains(char::is_whitespace)) {
        return Err(format!("`{group}`: expected `by <field>[, <field>]`"));
    }
    let (op, n) = [(">=", "gte"), ("<=", "lte"), ("==", "eq"), ("!=", "neq"), (">", "gt"), ("<", "lt"), ("=", "eq")]
        .into_iter()
        .find_map(|(sym, op)| cmp.strip_prefix(sym).map(|n| (op, n)))
        .ok_or_else(|| format!("`{cmp}`: expected >, >=, <, <=, == or != and a number"))?;
    let n = n.trim().parse().map_err(|_| format!("`{}` is not a whole number", n.trim()))?;
    Ok(Aggregation { field, group_by, op, n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(field: Option<&str>, group_by: &[&str], op: &'static str, n: u64) -> Aggregation {
        Aggregation {
            field: field.map(str::to_string),
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            op,
            n,
        }
    }

    #[test]
    fn aggregations_read_as_sigma_v1_wrote_them() {
        assert_eq!(parse("count() > 50"), Ok(agg(None, &[], "gt", 50)));
        assert_eq!(parse("count() by userIdentity.arn > 20"), Ok(agg(None, &["userIdentity.arn"], "gt", 20)));
        assert_eq!(parse("count(dst_ip) by src_ip >= 10"), Ok(agg(Some("dst_ip"), &["src_ip"], "gte", 10)));
        assert_eq!(parse("count( pam_user ) by a, b<3"), Ok(agg(Some("pam_user"), &["a", "b"], "lt", 3)));
        assert_eq!(parse("count() == 1"), Ok(agg(None, &[], "eq", 1)));
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        for (text, why) in [
            ("max(bytes) by src > 5", "`max()` is not supported"),
            ("near sel2", "`near` of Sigma v1"),
            ("count() by > 5", "expected `by <field>`"),
            ("count() bysrc > 5", "expected `by <field>`"),
            ("count() by a b > 5", "expected `by <field>[, <field>]`"),
            ("count() by a", "needs a comparison"),
            ("count() > five", "not a whole number"),
            ("count() > -1", "not a whole number"),
            ("count( > 1", "is not closed"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
