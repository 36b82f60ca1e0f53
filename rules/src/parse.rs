//! YAML → rule documents. A file may hold several YAML documents (`---`):
//! detection rules, correlation rules and filters side by side, as the
//! Sigma correlation specification shows them.

mod aggregation;

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

use crate::error::RuleError;
use crate::meta::{Level, RuleMeta};
use crate::template::FindingText;

/// One YAML document of a rule file, located in its file.
#[derive(Debug, Clone)]
pub struct DocText<'a> {
    pub file: &'a str,
    /// The document's own text.
    pub text: &'a str,
    /// 1-based line in the file where the document's text starts.
    pub first_line: usize,
}

impl DocText<'_> {
    /// The file line of the first line in this document that defines `key`
    /// (as `key:`, `'key':`, `"key":` or `- key:`), else the document start.
    pub fn line_of(&self, key: &str) -> usize {
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            let t = t.trim_start_matches(['\'', '"']);
            if let Some(rest) = t.strip_prefix(key) {
                let rest = rest.trim_start_matches(['\'', '"']);
                if rest.starts_with(':') {
                    return self.first_line + i;
                }
            }
        }
        self.first_line
    }

    /// The file line of the first line containing `needle`, else the start.
    pub fn line_containing(&self, needle: &str) -> usize {
        self.text.lines().position(|l| l.contains(needle)).map_or(self.first_line, |i| self.first_line + i)
    }

    pub fn error(&self, line: usize, reason: impl Into<String>) -> RuleError {
        RuleError::new(self.file, line, reason)
    }
}

/// Splits a file into its YAML documents at `---` lines.
pub fn split_documents<'a>(file: &'a str, text: &'a str) -> Vec<DocText<'a>> {
    let mut docs = Vec::new();
    let mut start_byte = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            docs.push(DocText { file, text: &text[start_byte..offset], first_line: start_line });
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push(DocText { file, text: &text[start_byte..], first_line: start_line });
    // Drop empty documents (a leading `---`, trailing separators, comments only).
    docs.retain(|d| d.text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

/// The keys of the Sigma rule schema; everything else is kept as custom.
const KNOWN_KEYS: &[&str] = &[
    "title",
    "id",
    "name",
    "status",
    "description",
    "license",
    "author",
    "references",
    "date",
    "modified",
    "logsource",
    "detection",
    "fields",
    "falsepositives",
    "level",
    "tags",
    "related",
    "scope",
    "taxonomy",
    "correlation",
    "filter",
    "generate",
    "tests",
];

/// `logsource` of a detection rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSource {
    pub product: Option<String>,
    pub service: Option<String>,
    pub category: Option<String>,
}

/// A parsed (not yet compiled) document.
#[derive(Debug, Clone)]
pub enum RuleDoc<'a> {
    Detection(DetectionDoc<'a>),
    Correlation(CorrelationDoc<'a>),
    Filter(FilterDoc<'a>),
}

/// A Sigma filter (Sigma Filters specification 2.0): searches and a
/// condition added, with `and`, to the condition of each detection rule
/// it names, so that a deployment tunes rules it did not write (SigmaHQ's)
/// without editing them.
#[derive(Debug, Clone)]
pub struct FilterDoc<'a> {
    pub doc: DocText<'a>,
    pub meta: RuleMeta,
    pub logsource: LogSource,
    /// `filter.rules`: the ids or names of the rules it applies to.
    pub rules: Vec<String>,
    /// `filter` without `rules`: its searches and `condition`.
    pub detection: Mapping,
}

#[derive(Debug, Clone)]
pub struct DetectionDoc<'a> {
    pub doc: DocText<'a>,
    pub meta: RuleMeta,
    pub logsource: LogSource,
    pub detection: Mapping,
    /// Test cases kept with the rule (`tests:`), unparsed.
    pub tests: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct CorrelationDoc<'a> {
    pub doc: DocText<'a>,
    pub meta: RuleMeta,
    pub correlation: Mapping,
    /// `generate` given at the top level (it may also sit in `correlation`).
    pub generate: Option<Value>,
    pub tests: Option<Value>,
    /// A load warning (line, text): set on correlations read from a v1 aggregation.
    pub warning: Option<(usize, String)>,
}

/// Parses every document of a rule file.
pub fn parse_file<'a>(file: &'a str, text: &'a str) -> Result<Vec<RuleDoc<'a>>, RuleError> {
    let mut out = Vec::new();
    for doc in split_documents(file, text) {
        let d = parse_doc(doc)?;
        if let RuleDoc::Detection(det) = &d {
            if let Some((base, correlation)) = aggregation::split(det)? {
                out.push(RuleDoc::Detection(base));
                out.push(RuleDoc::Correlation(correlation));
                continue;
            }
        }
        out.push(d);
    }
    Ok(out)
}

fn parse_doc(doc: DocText<'_>) -> Result<RuleDoc<'_>, RuleError> {
    let value: Value = serde_norway::from_str(doc.text).map_err(|e| {
        let line = e.location().map_or(doc.first_line, |l| doc.first_line + l.line() - 1);
        let msg = e.to_string();
        // serde_norway appends "at line N column M" relative to the document.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        doc.error(line, format!("invalid YAML: {msg}"))
    })?;
    let Value::Mapping(map) = value else {
        return Err(doc.error(doc.first_line, "a rule must be a YAML mapping"));
    };
    if map.contains_key("action") {
        return Err(doc.error(
            doc.line_of("action"),
            "Sigma rule collections (`action: global/reset/repeat`) are not supported: write each rule as a complete document",
        ));
    }
    let meta = parse_meta(&doc, &map)?;
    let tests = map.get("tests").cloned();
    if let Some(c) = map.get("correlation") {
        let Value::Mapping(c) = c else {
            return Err(doc.error(doc.line_of("correlation"), "`correlation` must be a mapping"));
        };
        return Ok(RuleDoc::Correlation(CorrelationDoc {
            meta,
            correlation: c.clone(),
            generate: map.get("generate").cloned(),
            tests,
            doc,
            warning: None,
        }));
    }
    if let Some(f) = map.get("filter") {
        return parse_filter(doc, &map, meta, f).map(RuleDoc::Filter);
    }
    // A correlation written without its `correlation:` key (seen in the
    // wild): say where its keys belong rather than "no logsource".
    if !map.contains_key("logsource")
        && map.contains_key("type")
        && map.contains_key("timespan")
        && !map.contains_key("detection")
    {
        return Err(doc.error(
            doc.line_of("type"),
            "a correlation's `type`, `rules`, `group-by`, `timespan` and `condition` belong under \
             `correlation:` (Sigma correlation rules); this document has no `correlation`, `logsource` or \
             `detection`",
        ));
    }
    let logsource = parse_logsource(&doc, &map)?;
    let detection = match map.get("detection") {
        None => return Err(doc.error(doc.first_line, "missing `detection`")),
        Some(Value::Mapping(d)) => d.clone(),
        Some(_) => return Err(doc.error(doc.line_of("detection"), "`detection` must be a mapping")),
    };
    Ok(RuleDoc::Detection(DetectionDoc { meta, logsource, detection, tests, doc }))
}

fn parse_logsource(doc: &DocText<'_>, map: &Mapping) -> Result<LogSource, RuleError> {
    match map.get("logsource") {
        None => Err(doc.error(doc.first_line, "missing `logsource`")),
        Some(Value::Mapping(ls)) => {
            let get = |k: &str| -> Result<Option<String>, RuleError> {
                match ls.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(doc.error(doc.line_of(k), format!("`logsource.{k}` must be a string"))),
                }
            };
            Ok(LogSource { product: get("product")?, service: get("service")?, category: get("category")? })
        }
        Some(_) => Err(doc.error(doc.line_of("logsource"), "`logsource` must be a mapping")),
    }
}

/// A filter document: `logsource`, and `filter` with `rules` (ids or
/// names), searches and a `condition`.
fn parse_filter<'a>(doc: DocText<'a>, map: &Mapping, meta: RuleMeta, f: &Value) -> Result<FilterDoc<'a>, RuleError> {
    if map.contains_key("detection") || map.contains_key("correlation") {
        return Err(doc.error(doc.line_of("filter"), "a filter has `filter` only, not `detection` or `correlation`"));
    }
    let Value::Mapping(f) = f else {
        return Err(doc.error(doc.line_of("filter"), "`filter` must be a mapping"));
    };
    let logsource = parse_logsource(&doc, map)?;
    let line = if f.contains_key("rules") { doc.line_of("rules") } else { doc.line_of("filter") };
    let rules: Vec<String> = match f.get("rules") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| doc.error(line, "`filter.rules` must list rule ids or names"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(doc.error(line, "`filter.rules` must list the ids or names of the rules the filter applies to"))
        }
    };
    if rules.is_empty() {
        return Err(doc.error(line, "`filter.rules` is empty: the filter would apply to no rule"));
    }
    let mut detection = f.clone();
    detection.remove("rules");
    Ok(FilterDoc { doc, meta, logsource, rules, detection })
}

fn parse_meta(doc: &DocText<'_>, map: &Mapping) -> Result<RuleMeta, RuleError> {
    let string = |k: &str| -> Result<Option<String>, RuleError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Dates are often unquoted and YAML may read them as other scalars.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(doc.error(doc.line_of(k), format!("`{k}` must be a string"))),
        }
    };
    let list = |k: &str| -> Result<Vec<String>, RuleError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(doc.error(doc.line_of(k), format!("`{k}` must be a list of strings"))),
                })
                .collect(),
            Some(_) => Err(doc.error(doc.line_of(k), format!("`{k}` must be a list of strings"))),
        }
    };
    let Some(title) = string("title")? else {
        return Err(doc.error(doc.first_line, "missing `title`"));
    };
    let name = string("name")?;
    let id = match string("id")? {
        Some(id) => id,
        // Without an id, derive a stable one so finding ids stay deterministic:
        // from what the rule is, so two rules that share a title (a common
        // "Testrule", a copied rule edited) keep apart. As JSON: a stable text.
        None => {
            let part = |k: &str| map.get(k).and_then(|v| serde_json::to_string(v).ok()).unwrap_or_default();
            let key = [title.as_str(), name.as_deref().unwrap_or(""), &part("logsource"), &part("detection")];
            format!("tw-{:016x}", fnv1a(key.join("\0").as_bytes()))
        }
    };
    let level = match string("level")? {
        None => Level::Medium,
        Some(l) => Level::parse(&l).ok_or_else(|| {
            doc.error(
                doc.line_of("level"),
                format!("unknown level `{l}` (expected informational, low, medium, high or critical)"),
            )
        })?,
    };
    let mut custom = BTreeMap::new();
    for (k, v) in map {
        let Value::String(k) = k else { continue };
        if KNOWN_KEYS.contains(&k.as_str()) {
            continue;
        }
        let json = serde_json::to_value(v)
            .map_err(|e| doc.error(doc.line_of(k), format!("custom field `{k}` cannot be represented: {e}")))?;
        custom.insert(k.clone(), json);
    }
    let finding = match custom.get("finding") {
        None => None,
        Some(v) => Some(FindingText::parse(v, map.contains_key("correlation")).map_err(|e| {
            // The offending template's own line when it is written on one line.
            let key = if e.starts_with("`finding.description`") { "description" } else { "title" };
            let needle: String = v.get(key).and_then(|t| t.as_str()).unwrap_or("").chars().take(40).collect();
            let line = match doc.text.lines().position(|l| !needle.is_empty() && l.contains(&needle)) {
                Some(i) => doc.first_line + i,
                None => doc.line_of("finding"),
            };
            doc.error(line, e)
        })?),
    };
    Ok(RuleMeta {
        id,
        name,
        title,
        description: string("description")?,
        level,
        status: string("status")?,
        author: string("author")?,
        date: string("date")?,
        modified: string("modified")?,
        tags: list("tags")?,
        references: list("references")?,
        falsepositives: list("falsepositives")?,
        custom,
        finding,
        source: doc.file.to_string(),
        line: doc.first_line,
    })
}

/// FNV-1a, for stable derived ids (not for security).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_lines() {
        let text = "---\ntitle: a\n---\n# c\n\ntitle: b\nx: 1\n...\n";
        let docs = split_documents("f.yml", text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 2);
        assert_eq!(docs[1].first_line, 4);
        assert_eq!(docs[1].line_of("x"), 7);
    }

    #[test]
    fn yaml_errors_carry_the_file_line() {
        let text = "title: a\nlogsource: {product: aws}\ndetection:\n  sel:\n    a: [1, 2\n  condition: sel\n";
        let err = parse_file("r.yml", text).unwrap_err();
        assert_eq!(err.file, "r.yml");
        assert!(err.line >= 5, "{err}");
        assert!(err.reason.starts_with("invalid YAML"), "{err}");
    }

    #[test]
    fn custom_fields_are_kept() {
        let text = "title: t\nid: x\nlevel: high\nnist_csf: [DE.CM-7]\nremediation: fix it\nlogsource: {product: aws}\ndetection: {sel: {a: 1}, condition: sel}\n";
        let docs = parse_file("r.yml", text).unwrap();
        let RuleDoc::Detection(d) = &docs[0] else { panic!() };
        assert_eq!(d.meta.level, Level::High);
        assert_eq!(d.meta.nist_csf(), vec!["DE.CM-7"]);
        assert_eq!(d.meta.remediation().unwrap().0, "fix it");
    }

    #[test]
    fn finding_templates_are_checked_with_their_line() {
        let text = "title: t\nlevel: high\nfinding:\n    title: '{principal} did {x'\nlogsource: {product: aws}\ndetection: {sel: {a: 1}, condition: sel}\n";
        let err = parse_file("r.yml", text).unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("r.yml", 4), "{err}");
        assert!(err.reason.contains("`finding.title`: unclosed `{`"), "{err}");
        let ok = text.replace("{x'", "{requestParameters.x}'");
        let docs = parse_file("r.yml", &ok).unwrap();
        let RuleDoc::Detection(d) = &docs[0] else { panic!() };
        let f = d.meta.finding.as_ref().unwrap();
        assert_eq!(f.fields().collect::<Vec<_>>(), ["requestParameters.x"]);
        assert!(d.meta.custom.contains_key("finding"));
    }

    #[test]
    fn unknown_level_is_an_error_with_its_line() {
        let text = "title: t\nlevel: severe\nlogsource: {product: aws}\ndetection: {sel: {a: 1}, condition: sel}\n";
        let err = parse_file("r.yml", text).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("unknown level"));
    }

    #[test]
    fn rules_without_an_id_get_one_from_what_they_are() {
        let id = |text: &str| {
            let docs = parse_file("r.yml", text).unwrap();
            let RuleDoc::Detection(d) = &docs[0] else { panic!() };
            d.meta.id.clone()
        };
        let a = "title: Testrule\nlogsource: {product: aws}\ndetection: {sel: {a: 1}, condition: sel}\n";
        // Pinned: ids derived today must not change with a dependency update.
        assert_eq!(id(a), "tw-3e5b49768887b906");
        // Same title, other detection or logsource: another rule, another id.
        assert_ne!(id(a), id(&a.replace("a: 1", "a: 2")));
        assert_ne!(id(a), id(&a.replace("aws", "gcp")));
        // Layout and comments are not part of what the rule is.
        assert_eq!(
            id(a),
            id("# c\ntitle: Testrule\nlogsource:\n  product: aws\ndetection:\n  sel:\n    a: 1\n  condition: sel\n")
        );
    }

    #[test]
    fn a_correlation_without_its_key_is_told_where_its_keys_go() {
        let text =
            "title: t\nid: c\ntype: event_count\nrules: [r]\ngroup-by: [a]\ntimespan: 10m\ncondition: {gte: 3}\n";
        let err = parse_file("c.yml", text).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.reason.contains("belong under `correlation:`"), "{err}");
    }
}
