//! Finding title and description templates: a rule's optional `finding:`
//! block (our extension), parsed and checked when the rule loads, rendered
//! only when the rule raises a finding.
//!
//! ```yaml
//! finding:
//!     title: '{principal} made ECR repository {requestParameters.repositoryName} public in {account}'
//!     description: '{principal} called {event} from {sourceIPAddress}'
//! ```
//!
//! `{a.b.c}` reads an event field by its dotted path (the names a Sigma
//! detection uses); `{principal}`, `{account}`, `{region}` and `{event}` are
//! built in; correlation rules also have `{count}`, `{window}` and their
//! group-by names. `{{` and `}}` are literal braces. A missing or empty value
//! renders as `?`. Clipping to Security Hub's limits is the caller's (it
//! knows the limit).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A placeholder's meaning, decided at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    Text(String),
    /// A dotted event field path (or, in a correlation, a group-by name).
    Field(String),
    Principal,
    Account,
    Region,
    Event,
    Count,
    Window,
}

/// One parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub source: String,
    pub parts: Vec<Part>,
}

/// A rule's `finding:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingText {
    pub title: Option<Template>,
    pub description: Option<Template>,
}

/// What a rendering reads besides the event: a correlation's group, count
/// and timespan.
#[derive(Debug, Clone, Copy, Default)]
pub struct Correlation<'a> {
    pub group: &'a [(String, String)],
    pub count: u64,
    pub timespan_ms: i64,
}

/// Shown for a missing or empty value.
pub const MISSING: &str = "?";

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '@')
}

impl Template {
    /// Parses `text`; `correlation` allows `{count}` and `{window}`.
    pub fn parse(text: &str, correlation: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err(format!("unmatched `}}` at column {} (write `}}}}` for a literal brace)", i + 1)),
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!("unclosed `{{` at column {} (write `{{{{` for a literal brace)", i + 1));
                    };
                    let name = &rest[..end];
                    if name.is_empty() {
                        return Err(format!("empty placeholder `{{}}` at column {}", i + 1));
                    }
                    if let Some(bad) = name.chars().find(|c| !valid_name_char(*c)) {
                        return Err(format!(
                            "placeholder `{{{name}}}` at column {}: `{bad}` is not allowed in a field name \
                             (letters, digits, `_ . - : @`; no modifiers)",
                            i + 1
                        ));
                    }
                    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
                        return Err(format!("placeholder `{{{name}}}` at column {}: not a dotted field path", i + 1));
                    }
                    let part = match name {
                        "principal" => Part::Principal,
                        "account" => Part::Account,
                        "region" => Part::Region,
                        "event" => Part::Event,
                        "count" | "window" if !correlation => {
                            return Err(format!("`{{{name}}}` is only defined for correlation rules"));
                        }
                        "count" => Part::Count,
                        "window" => Part::Window,
                        _ => Part::Field(name.to_string()),
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(part);
                    // Skip the name and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { source: text.to_string(), parts })
    }

    /// Renders against `event` (a CloudTrail record, an EventBridge event,
    /// or a correlation's group document).
    pub fn render(&self, event: &Value, corr: Option<&Correlation<'_>>) -> String {
        self.render_checked(event, corr, &mut |_| {})
    }

    /// [`Template::render`], telling `missing` each placeholder that
    /// rendered as `?` (for rule tests).
    pub fn render_checked(
        &self,
        event: &Value,
        corr: Option<&Correlation<'_>>,
        missing: &mut dyn FnMut(&Part),
    ) -> String {
        let mut out = String::with_capacity(self.source.len() + 64);
        for part in &self.parts {
            let start = out.len();
            match part {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Field(path) => {
                    let group = corr.and_then(|c| c.group.iter().find(|(k, _)| k == path));
                    match group {
                        Some((_, v)) => push_clean(&mut out, v),
                        None => {
                            let mut found = Vec::new();
                            collect(event, path, &mut found);
                            found.retain(|v| !v.is_null());
                            found.dedup();
                            for (i, v) in found.into_iter().enumerate() {
                                if i > 0 {
                                    out.push_str(", ");
                                }
                                push_value(&mut out, v);
                            }
                        }
                    }
                }
                Part::Principal => {
                    // A correlation grouped by a `principal` alias (an ARN).
                    let grouped = corr.and_then(|c| c.group.iter().find(|(k, _)| k == "principal"));
                    let p = match grouped {
                        Some((_, v)) => Some(principal_of_arn(v).unwrap_or_else(|| v.clone())),
                        None => principal(event),
                    };
                    if let Some(p) = p {
                        push_clean(&mut out, &p);
                    }
                }
                Part::Account => {
                    // Else the account of the principal's ARN (a correlation
                    // closed by time has only its group).
                    let arn_account = || {
                        let arn = str_at(event, &["userIdentity", "arn"])
                            .or_else(|| corr?.group.iter().find(|(k, _)| k == "principal").map(|(_, v)| v.as_str()))?;
                        arn.split(':').nth(4).filter(|a| !a.is_empty())
                    };
                    if let Some(a) = str_at(event, &["recipientAccountId"])
                        .or_else(|| str_at(event, &["userIdentity", "accountId"]))
                        .or_else(|| str_at(event, &["account"]))
                        .or_else(arn_account)
                    {
                        push_clean(&mut out, a);
                    }
                }
                Part::Region => {
                    if let Some(r) = str_at(event, &["awsRegion"]).or_else(|| str_at(event, &["region"])) {
                        push_clean(&mut out, r);
                    }
                }
                Part::Event => {
                    if let Some(e) = str_at(event, &["eventName"]).or_else(|| str_at(event, &["detail-type"])) {
                        push_clean(&mut out, e);
                    }
                }
                Part::Count => {
                    if let Some(c) = corr {
                        let _ = write!(out, "{}", c.count);
                    }
                }
                Part::Window => {
                    if let Some(c) = corr.filter(|c| c.timespan_ms > 0) {
                        out.push_str(&timespan(c.timespan_ms));
                    }
                }
            }
            if out[start..].trim().is_empty() {
                out.truncate(start);
                out.push_str(MISSING);
                missing(part);
            }
        }
        out
    }
}

impl FindingText {
    /// Parses a `finding:` block (as JSON, the way custom fields are kept).
    pub fn parse(v: &Value, correlation: bool) -> Result<FindingText, String> {
        let Value::Object(m) = v else {
            return Err("`finding` must be a mapping with `title` and optionally `description`".into());
        };
        let mut out = FindingText::default();
        for (k, v) in m {
            let slot = match k.as_str() {
                "title" => &mut out.title,
                "description" => &mut out.description,
                other => return Err(format!("unknown key `finding.{other}` (expected `title`, `description`)")),
            };
            let Value::String(s) = v else {
                return Err(format!("`finding.{k}` must be a string"));
            };
            if s.trim().is_empty() {
                return Err(format!("`finding.{k}` is empty"));
            }
            *slot = Some(Template::parse(s, correlation).map_err(|e| format!("`finding.{k}`: {e}"))?);
        }
        Ok(out)
    }

    /// Every field path the templates name (for checks and `rules list`).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.title.iter().chain(&self.description).flat_map(|t| &t.parts).filter_map(|p| {
            if let Part::Field(f) = p {
                Some(f.as_str())
            } else {
                None
            }
        })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Part::Text(t) => return f.write_str(t),
            Part::Field(p) => p.as_str(),
            Part::Principal => "principal",
            Part::Account => "account",
            Part::Region => "region",
            Part::Event => "event",
            Part::Count => "count",
            Part::Window => "window",
        };
        write!(f, "{{{name}}}")
    }
}

/// A correlation's group key as nested fields (`userIdentity.arn` →
/// `{"userIdentity": {"arn": ..}}`), so built-ins such as `{principal}` and
/// field paths read it like an event.
pub fn group_document(group: &[(String, String)]) -> serde_json::Map<String, Value> {
    let mut doc = serde_json::Map::new();
    for (path, value) in group {
        let parts: Vec<&str> = path.split('.').collect();
        let mut cur = &mut doc;
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur.insert((*p).to_string(), Value::String(value.clone()));
                break;
            }
            let next = cur.entry((*p).to_string()).or_insert_with(|| Value::Object(serde_json::Map::new()));
            match next {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    doc
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// The values at a dotted path into nested objects; lists along the way are
/// searched element by element, as Sigma does (`requestParameters.
/// containerDefinitions.image` gives every container's image). A key that
/// itself holds dots is tried whole as well.
fn collect<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    if out.len() >= 16 {
        return;
    }
    if let Value::Array(items) = v {
        for item in items {
            collect(item, path, out);
        }
        return;
    }
    if let Some(x) = v.get(path) {
        out.push(x);
        return;
    }
    if let Some((head, rest)) = path.split_once('.') {
        if let Some(x) = v.get(head) {
            collect(x, rest, out);
        }
    }
}

fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::String(s) => push_clean(out, s),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_value(out, item);
            }
        }
        Value::Object(_) => push_clean(out, &v.to_string()),
    }
}

/// Control characters (newlines in a policy document) become spaces: a
/// title is one line.
fn push_clean(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| if c.is_control() { ' ' } else { c }));
}

/// A readable principal: `session (Role)` for an assumed role, the user name
/// for an IAM user, `root`, the service for an AWS service.
pub fn principal(ev: &Value) -> Option<String> {
    let ui = ev.get("userIdentity")?;
    let kind = str_at(ui, &["type"]).unwrap_or("");
    if kind == "AWSService" {
        return str_at(ui, &["invokedBy"]).map(str::to_string);
    }
    if kind == "Root" {
        return Some("root".into());
    }
    if let Some(arn) = str_at(ui, &["arn"]) {
        if let Some(p) = principal_of_arn(arn) {
            return Some(p);
        }
    }
    if kind == "AssumedRole" {
        let role = str_at(ui, &["sessionContext", "sessionIssuer", "userName"]);
        let session = str_at(ui, &["principalId"]).and_then(|p| p.split_once(':')).map(|(_, s)| s);
        match (session, role) {
            (Some(s), Some(r)) => return Some(format!("{s} ({r})")),
            (None, Some(r)) => return Some(r.to_string()),
            _ => {}
        }
    }
    str_at(ui, &["userName"])
        .or_else(|| str_at(ui, &["invokedBy"]))
        .or_else(|| str_at(ui, &["principalId"]))
        .map(str::to_string)
}

/// The principal an ARN names, or None when it is not an IAM/STS principal.
pub fn principal_of_arn(arn: &str) -> Option<String> {
    let mut it = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some(service), Some(_region), Some(_account), Some(resource)) =
        (it.next(), it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return None;
    };
    if service != "iam" && service != "sts" {
        return None;
    }
    if resource == "root" {
        return Some("root".into());
    }
    let (kind, rest) = resource.split_once('/')?;
    match kind {
        "assumed-role" => {
            let (role, session) = rest.rsplit_once('/')?;
            let role = role.rsplit('/').next().unwrap_or(role);
            Some(format!("{session} ({role})"))
        }
        "user" | "federated-user" | "role" => Some(rest.rsplit('/').next().unwrap_or(rest).to_string()),
        _ => None,
    }
}

/// `600000` → `10m`: the way rules write their timespans.
fn timespan(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (unit, name) in UNITS {
        if ms % unit == 0 {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Template {
        Template::parse(s, false).unwrap()
    }

    #[test]
    fn renders_fields_and_builtins() {
        let ev = json!({
            "eventName": "SetRepositoryPolicy",
            "awsRegion": "eu-west-1",
            "recipientAccountId": "111122223333",
            "requestParameters": {"repositoryName": "shop/web", "count": 3, "on": true, "ids": ["a", "b"]},
            "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123/alice"}
        });
        let out = t("{principal} made ECR repository {requestParameters.repositoryName} public in {account} ({region}, {event})")
            .render(&ev, None);
        assert_eq!(
            out,
            "alice (AWSReservedSSO_Admin_0123) made ECR repository shop/web public in 111122223333 (eu-west-1, SetRepositoryPolicy)"
        );
        let out = t("{requestParameters.count} {requestParameters.on} {requestParameters.ids} {{x}}").render(&ev, None);
        assert_eq!(out, "3 true a, b {x}");
        // Lists along the path are searched element by element.
        let ev =
            json!({"requestParameters": {"containerDefinitions": [{"image": "a:1"}, {"name": "x"}, {"image": "b:2"}]}});
        assert_eq!(t("{requestParameters.containerDefinitions.image}").render(&ev, None), "a:1, b:2");
    }

    #[test]
    fn missing_and_empty_fields_render_as_question_marks() {
        let ev = json!({"eventName": "", "requestParameters": {"userName": "  ", "n": null}});
        let out =
            t("{principal}/{account}/{region}/{event}/{requestParameters.userName}/{requestParameters.n}/{a.b.c}")
                .render(&ev, None);
        assert_eq!(out, "?/?/?/?/?/?/?");
        // Not even an object.
        assert_eq!(t("x {a}").render(&json!("text"), None), "x ?");
    }

    #[test]
    fn principals_read_as_people_say_them() {
        let p = |ui: Value| principal(&json!({ "userIdentity": ui }));
        assert_eq!(
            p(json!({"type": "IAMUser", "arn": "arn:aws:iam::1:user/ops/bob", "userName": "bob"})).unwrap(),
            "bob"
        );
        assert_eq!(p(json!({"type": "Root", "arn": "arn:aws:iam::1:root"})).unwrap(), "root");
        assert_eq!(p(json!({"type": "AWSService", "invokedBy": "ecs.amazonaws.com"})).unwrap(), "ecs.amazonaws.com");
        assert_eq!(
            p(json!({"type": "AssumedRole", "principalId": "AROA:i-0abc",
                     "sessionContext": {"sessionIssuer": {"userName": "NodeRole"}}}))
            .unwrap(),
            "i-0abc (NodeRole)"
        );
        assert_eq!(
            p(json!({"arn": "arn:aws:sts::1:assumed-role/path/to/Deploy/gh-run-1"})).unwrap(),
            "gh-run-1 (Deploy)"
        );
        assert_eq!(p(json!({"type": "FederatedUser", "arn": "arn:aws:sts::1:federated-user/eve"})).unwrap(), "eve");
        assert_eq!(p(json!({"type": "AWSAccount", "principalId": "AIDAX", "accountId": "2"})).unwrap(), "AIDAX");
        assert!(p(json!({})).is_none());
    }

    #[test]
    fn correlation_group_values_count_and_window() {
        let tpl = Template::parse("{userIdentity.arn} failed {count} sign-ins in {window} ({sourceIPAddress})", true)
            .unwrap();
        let group = vec![("userIdentity.arn".to_string(), "arn:aws:iam::1:user/bob".to_string())];
        let c = Correlation { group: &group, count: 12, timespan_ms: 600_000 };
        let doc = json!({"userIdentity": {"arn": "ignored: the group wins"}});
        assert_eq!(tpl.render(&doc, Some(&c)), "arn:aws:iam::1:user/bob failed 12 sign-ins in 10m (?)");
        assert_eq!(timespan(3_600_000), "1h");
        assert_eq!(timespan(90_000), "90s");
        assert_eq!(timespan(1_500), "1500ms");
        // The built-in principal reads the group document correlations build.
        let tpl = Template::parse("{principal} x{count}", true).unwrap();
        let doc = json!({"userIdentity": {"arn": "arn:aws:sts::1:assumed-role/R/s"}});
        assert_eq!(tpl.render(&doc, Some(&c)), "s (R) x12");
    }

    #[test]
    fn multibyte_values_and_control_characters() {
        let ev = json!({"requestParameters": {"description": "café ☕\nline two"}});
        assert_eq!(t("«{requestParameters.description}»").render(&ev, None), "«café ☕ line two»");
    }

    #[test]
    fn bad_syntax_is_refused_with_a_reason() {
        for (text, why) in [
            ("{principal", "unclosed `{`"),
            ("a } b", "unmatched `}`"),
            ("{}", "empty placeholder"),
            ("{a b}", "not allowed"),
            ("{eventName|contains}", "not allowed"),
            ("{a..b}", "dotted"),
            ("{count} events", "only defined for correlation"),
        ] {
            let err = Template::parse(text, false).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(Template::parse("{count} in {window}", true).is_ok());
        let err = FindingText::parse(&json!({"titel": "x"}), false).unwrap_err();
        assert!(err.contains("unknown key `finding.titel`"), "{err}");
        assert!(FindingText::parse(&json!("x"), false).is_err());
        assert!(FindingText::parse(&json!({"title": 3}), false).is_err());
        let f = FindingText::parse(&json!({"title": "{a.b} {principal}", "description": "{c}"}), false).unwrap();
        assert_eq!(f.fields().collect::<Vec<_>>(), ["a.b", "c"]);
    }
}
