//! Detection → compiled searches: field names interned, modifiers applied,
//! wildcards classified, literals folded (see [`crate::matcher`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use regex::RegexBuilder;
use serde_norway::Value;

use crate::matcher::{all_of, optimise, Cidr, Item, NumOp, Pat, RegexPat, StrOp, StrPat, Test};
use crate::parse::DocText;

/// Field names → ids, shared by every rule of a rule set.
#[derive(Debug, Clone, Default)]
pub struct FieldTable {
    names: Vec<String>,
    index: BTreeMap<String, u32>,
    mappings: BTreeMap<String, String>,
}

impl FieldTable {
    pub fn new(mappings: BTreeMap<String, String>) -> Self {
        FieldTable { mappings, ..Default::default() }
    }

    /// The id of a rule field name, after field mapping.
    pub fn intern(&mut self, name: &str) -> u32 {
        let path = self.mappings.get(name).map_or(name, String::as_str);
        if let Some(id) = self.index.get(path) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(path.to_string());
        self.index.insert(path.to_string(), id);
        id
    }

    pub fn get(&self, path: &str) -> Option<u32> {
        self.index.get(path).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().enumerate().map(|(i, n)| (i as u32, n.as_str()))
    }
}

/// Engine-wide settings that rules refer to.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Values of `%placeholder%` names for `|expand`.
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Rule field name → document path (e.g. `src_ip` → `sourceIPAddress`).
    pub field_mappings: BTreeMap<String, String>,
    /// More document paths to read from every event (e.g. the fields of
    /// suppression entries), besides those the rules use.
    pub extra_fields: Vec<String>,
    /// Compiled size limit of one `|re` regular expression, in bytes (`None`:
    /// [`DEFAULT_REGEX_SIZE_LIMIT`]). Matching stays linear-time whatever the
    /// limit; it bounds memory per rule.
    pub regex_size_limit: Option<usize>,
    /// Which rules report (the others only feed correlations).
    pub select: crate::meta::RuleSelect,
}

/// Large enough for ordinary Unicode classes with counted repetition
/// (SigmaHQ's `-k\s\w{1,64}` needs ~1.4 MiB compiled), small enough that a
/// hostile rule cannot take much memory.
pub const DEFAULT_REGEX_SIZE_LIMIT: usize = 16 << 20;

/// A compiled search identifier: OR over groups, each an AND of items.
#[derive(Debug, Clone)]
pub struct Search {
    pub groups: Vec<Vec<Item>>,
    /// Per group, when some of its fields are scoped (`Statement[].Effect`):
    /// which items are, and the one whose values name the candidate elements.
    /// Empty when no group is scoped (the common case).
    pub scopes: Vec<Option<Scope>>,
}

#[derive(Debug, Clone)]
pub struct Scope {
    pub scoped: Vec<bool>,
    pub anchor: usize,
}

impl Search {
    #[inline]
    pub fn matches(&self, ev: &crate::doc::Event<'_>) -> bool {
        if self.scopes.is_empty() {
            return self.groups.iter().any(|g| g.iter().all(|i| i.matches(ev)));
        }
        self.groups.iter().zip(&self.scopes).any(|(g, sc)| match sc {
            None => g.iter().all(|i| i.matches(ev)),
            Some(sc) => scoped_group_matches(g, sc, ev),
        })
    }
}

/// A group whose scoped items must all hold in one element: tries each
/// element the anchor item's field has a value in.
fn scoped_group_matches(g: &[Item], sc: &Scope, ev: &crate::doc::Event<'_>) -> bool {
    if !g.iter().zip(&sc.scoped).all(|(i, s)| *s || i.matches(ev)) {
        return false;
    }
    let mut tried: Vec<u32> = Vec::new();
    for v in ev.vals.get(g[sc.anchor].field) {
        if v.elem == 0 || tried.contains(&v.elem) {
            continue;
        }
        tried.push(v.elem);
        if g.iter().zip(&sc.scoped).all(|(i, s)| !*s || i.matches_in(ev, v.elem)) {
            return true;
        }
    }
    false
}

/// Context for compiling one rule.
pub struct Ctx<'a, 'd> {
    pub doc: &'a DocText<'d>,
    pub fields: &'a mut FieldTable,
    pub opts: &'a CompileOptions,
    pub keywords_used: bool,
    pub unset_placeholders: Vec<String>,
}

type CResult<T> = Result<T, crate::error::RuleError>;

impl Ctx<'_, '_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> crate::error::RuleError {
        self.doc.error(self.doc.line_of(key), reason)
    }

    /// [`Self::err`] at the line holding `value` when it is written there as
    /// is (one item of a list under `key`), else at `key`'s line.
    fn err_at(&self, key: &str, value: &str, reason: impl Into<String>) -> crate::error::RuleError {
        let at_key = self.doc.line_of(key);
        let line = match self.doc.text.lines().skip(at_key - self.doc.first_line).position(|l| l.contains(value)) {
            Some(i) if !value.is_empty() => at_key + i,
            _ => at_key,
        };
        self.doc.error(line, reason)
    }

    /// Compiles one search identifier's value.
    pub fn search(&mut self, name: &str, v: &Value) -> CResult<Search> {
        let groups = match v {
            Value::Mapping(m) => vec![self.map(name, m)?],
            Value::Sequence(items) => {
                let mut groups = Vec::new();
                let mut keywords = Vec::new();
                for it in items {
                    match it {
                        Value::Mapping(m) => groups.push(self.map(name, m)?),
                        Value::Sequence(_) => {
                            return Err(self.err(name, format!("search `{name}` has a nested list")));
                        }
                        scalar => keywords.push(scalar.clone()),
                    }
                }
                if !keywords.is_empty() {
                    groups.push(vec![self.item(name, "", &Value::Sequence(keywords))?]);
                }
                groups
            }
            Value::Null => return Err(self.err(name, format!("search `{name}` is empty"))),
            scalar => vec![vec![self.item(name, "", scalar)?]],
        };
        let scopes: Vec<Option<Scope>> = groups.iter().map(|g| self.scope_of(name, g)).collect::<CResult<_>>()?;
        let scopes = if scopes.iter().all(Option::is_none) { Vec::new() } else { scopes };
        Ok(Search { groups, scopes })
    }

    /// The scope of a group: its fields that cross a `[]` key must all name
    /// the same one (`...Statement[]`), and one of them must need a value.
    fn scope_of(&self, name: &str, g: &[Item]) -> CResult<Option<Scope>> {
        let mut prefix: Option<&str> = None;
        let mut scoped = Vec::with_capacity(g.len());
        for i in g {
            let path = if i.field == crate::doc::Values::KEYWORDS { "" } else { self.fields.name(i.field) };
            let Some(at) = path.find("[]") else {
                scoped.push(false);
                continue;
            };
            if path[at + 2..].contains("[]") {
                return Err(self.err(name, format!("`{path}`: only one `[]` scope per field path")));
            }
            let p = &path[..at + 2];
            if prefix.is_some_and(|q| q != p) {
                return Err(self.err(
                    name,
                    format!("search `{name}` mixes two scopes (`{}` and `{p}`) in one map", prefix.unwrap_or_default()),
                ));
            }
            prefix = Some(p);
            scoped.push(true);
        }
        if prefix.is_none() {
            return Ok(None);
        }
        let anchor = g.iter().zip(&scoped).position(|(i, s)| *s && i.needs_value()).ok_or_else(|| {
            self.err(name, format!("search `{name}`: a scoped map needs a field that must have a value in the element (not only exists: false or null)"))
        })?;
        Ok(Some(Scope { scoped, anchor }))
    }

    fn map(&mut self, name: &str, m: &serde_norway::Mapping) -> CResult<Vec<Item>> {
        let mut items = Vec::with_capacity(m.len());
        for (k, v) in m {
            let key = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(self.err(name, format!("search `{name}` has a non-string field name"))),
            };
            items.push(self.item(&key, &key, v)?);
        }
        Ok(items)
    }

    /// One `field|mod|mod: value(s)` item (`key` is for error lines).
    fn item(&mut self, key: &str, spec: &str, v: &Value) -> CResult<Item> {
        let mut parts = spec.split('|');
        let field_name = parts.next().unwrap_or("");
        let mut m = Mods::default();
        for raw in parts {
            let md = raw.trim();
            match md {
                "contains" => m.op = Some(StrOp::Contains),
                "startswith" => m.op = Some(StrOp::Prefix),
                "endswith" => m.op = Some(StrOp::Suffix),
                "all" => m.all = true,
                "cased" => m.cased = true,
                "re" => m.re = true,
                "i" | "m" | "s" if m.re => m.re_flags.push(md.chars().next().unwrap_or('i')),
                "cidr" => m.cidr = true,
                "base64" => m.enc.push(Enc::Base64),
                "base64offset" => m.enc.push(Enc::Base64Offset),
                "utf16le" | "wide" => m.enc.push(Enc::Utf16Le),
                "utf16be" => m.enc.push(Enc::Utf16Be),
                "utf16" => m.enc.push(Enc::Utf16Bom),
                "windash" => m.windash = true,
                "exists" => m.exists = true,
                "gt" => m.cmp = Some(NumOp::Gt),
                "gte" => m.cmp = Some(NumOp::Gte),
                "lt" => m.cmp = Some(NumOp::Lt),
                "lte" => m.cmp = Some(NumOp::Lte),
                "fieldref" => m.fieldref = true,
                "expand" => m.expand = true,
                "none" => m.none = true,
                "i" | "m" | "s" => {
                    return Err(self.err(key, format!("modifier `{md}` is a sub-modifier of `re` and must follow it")));
                }
                other => {
                    return Err(self.err(
                        key,
                        format!(
                            "unknown modifier `{other}` in `{spec}` (known: contains, startswith, endswith, all, cased, re, i, m, s, cidr, base64, base64offset, utf16le, utf16be, utf16, wide, windash, exists, gt, gte, lt, lte, fieldref, expand; trailwatch extension: none)"
                        ),
                    ));
                }
            }
        }
        m.check().map_err(|r| self.err(key, format!("`{spec}`: {r}")))?;

        let field = if field_name.is_empty() {
            if m.exists || m.fieldref || m.cmp.is_some() || m.cidr {
                return Err(self.err(key, "keyword searches cannot use exists, fieldref, cidr or comparisons"));
            }
            self.keywords_used = true;
            crate::doc::Values::KEYWORDS
        } else {
            self.fields.intern(field_name)
        };

        let values: Vec<&Value> = match v {
            Value::Sequence(items) => items.iter().collect(),
            other => vec![other],
        };
        if m.exists {
            return match values.as_slice() {
                [Value::Bool(b)] => Ok(Item { field, test: Test::Exists(*b) }),
                [Value::String(s)] if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
                    Ok(Item { field, test: Test::Exists(s.eq_ignore_ascii_case("true")) })
                }
                _ => Err(self.err(key, "`exists` takes one boolean value")),
            };
        }
        // Keywords default to "contains" (they search the whole event).
        if field == crate::doc::Values::KEYWORDS && m.op.is_none() && !m.re {
            m.op = Some(StrOp::Contains);
        }
        let mut pats = Vec::new();
        // Where each written value's alternatives start in `pats`: one value
        // may stand for several (windash dashes, base64 offsets, placeholder
        // values), and `all` needs every value, not every alternative.
        let mut starts = Vec::new();
        let mut saw_null = false;
        for value in values {
            match value {
                Value::Null => saw_null = true,
                Value::Mapping(_) | Value::Sequence(_) => {
                    return Err(self.err(
                        key,
                        format!("`{spec}` has a nested value; Sigma values are scalars or lists of scalars"),
                    ));
                }
                _ => {
                    starts.push(pats.len());
                    self.value(key, spec, &m, value, &mut pats)?
                }
            }
        }
        if saw_null {
            if m.none {
                return Err(self.err(key, format!("`{spec}`: `none` cannot be combined with a null value")));
            }
            if m.all {
                return Err(self.err(key, format!("`{spec}`: `all` cannot be combined with a null value")));
            }
            // `field: [null, x]` is "missing, null, or x".
            let test = if pats.is_empty() { Test::Null } else { Test::NullOr(pats) };
            return Ok(Item { field, test });
        }
        let test = if m.all { all_of(pats, &starts) } else { optimise(pats) };
        if m.none {
            if field == crate::doc::Values::KEYWORDS {
                return Err(self.err(key, "keyword searches cannot use `none`"));
            }
            // No alternatives (an unset placeholder): nothing to be outside of,
            // so the item never matches rather than matching every value.
            return Ok(Item {
                field,
                test: if matches!(test, Test::Never) { Test::Never } else { Test::NoneOf(Box::new(test)) },
            });
        }
        Ok(Item { field, test })
    }

    fn value(&mut self, key: &str, spec: &str, m: &Mods, v: &Value, out: &mut Vec<Pat>) -> CResult<()> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => {
                if let Some(op) = m.cmp {
                    let x = n.as_f64().unwrap_or(f64::NAN);
                    out.push(Pat::Cmp(op, x));
                    return Ok(());
                }
                if m.op.is_none() && !m.re && !m.expand && m.enc.is_empty() && !m.fieldref {
                    out.push(Pat::Num { value: n.as_f64().unwrap_or(f64::NAN), text: n.to_string().into() });
                    return Ok(());
                }
                n.to_string()
            }
            Value::Bool(b) => b.to_string(),
            _ => return Err(self.err(key, format!("`{spec}`: unsupported value"))),
        };
        if let Some(op) = m.cmp {
            let x: f64 =
                text.trim().parse().map_err(|_| self.err(key, format!("`{spec}`: `{text}` is not a number")))?;
            out.push(Pat::Cmp(op, x));
            return Ok(());
        }
        let expanded = if m.expand { self.expand(&text) } else { vec![text] };
        for text in expanded {
            if m.fieldref {
                let other = self.fields.intern(&text);
                out.push(Pat::FieldRef { field: other, op: m.op.unwrap_or(StrOp::Eq), cased: m.cased });
            } else if m.cidr {
                let c = Cidr::parse(&text).map_err(|r| self.err(key, format!("`{spec}`: {r}")))?;
                out.push(Pat::Cidr(c));
            } else if m.re {
                let written = &text;
                let text = pcre_compat(written, m.re_flags.contains(&'s'));
                let mut b = RegexBuilder::new(&text);
                let ci = m.re_flags.contains(&'i');
                for f in &m.re_flags {
                    match f {
                        'i' => b.case_insensitive(true),
                        'm' => b.multi_line(true),
                        _ => b.dot_matches_new_line(true),
                    };
                }
                let re = b
                    .size_limit(self.opts.regex_size_limit.unwrap_or(DEFAULT_REGEX_SIZE_LIMIT))
                    .build()
                    .map_err(|e| self.err_at(key, written, format!("`{spec}`: invalid regular expression: {e}")))?;
                out.push(Pat::Regex(Box::new(RegexPat::new(re, &text, ci))));
            } else if !m.enc.is_empty() || m.windash {
                for variant in encode_variants(&text, m).map_err(|r| self.err(key, format!("`{spec}`: {r}")))? {
                    // Encoded forms are exact byte sequences: match them cased.
                    let cased = m.cased || !m.enc.is_empty();
                    push_wild(out, &variant, m.op, cased, !m.enc.is_empty())
                        .map_err(|r| self.err(key, format!("`{spec}`: {r}")))?;
                }
            } else {
                push_wild(out, &text, m.op, m.cased, false).map_err(|r| self.err(key, format!("`{spec}`: {r}")))?;
            }
        }
        Ok(())
    }

    /// Fills `%name%` placeholders with their configured values (every
    /// combination; values may contain wildcards). A placeholder with no configured values yields nothing,
    /// so the item can never match; the loader warns about it.
    fn expand(&mut self, text: &str) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            let Some(len) = rest[start + 1..].find('%') else {
                break;
            };
            let name = &rest[start + 1..start + 1 + len];
            let prefix = &rest[..start];
            let vals = match self.opts.placeholders.get(name) {
                Some(v) => v.clone(),
                None => {
                    if !self.unset_placeholders.iter().any(|n| n == name) {
                        self.unset_placeholders.push(name.to_string());
                    }
                    Vec::new()
                }
            };
            let mut next = Vec::with_capacity(out.len() * vals.len());
            for o in &out {
                for v in &vals {
                    // Like pySigma's value placeholders: `*` and `?` in a
                    // configured value are wildcards (escape them with `\`).
                    next.push(format!("{o}{prefix}{v}"));
                }
            }
            out = next;
            rest = &rest[start + 2 + len..];
        }
        for o in &mut out {
            o.push_str(rest);
        }
        out
    }
}

fn escape_wildcards(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

#[derive(Debug, Default)]
struct Mods {
    op: Option<StrOp>,
    all: bool,
    cased: bool,
    re: bool,
    re_flags: Vec<char>,
    cidr: bool,
    enc: Vec<Enc>,
    windash: bool,
    exists: bool,
    cmp: Option<NumOp>,
    fieldref: bool,
    expand: bool,
    /// Trailwatch extension: some value matches none of the alternatives.
    none: bool,
}

impl Mods {
    fn check(&self) -> Result<(), &'static str> {
        let kinds = [self.re, self.cidr, self.exists, self.cmp.is_some()].iter().filter(|b| **b).count();
        if kinds > 1 {
            return Err("re, cidr, exists and gt/gte/lt/lte cannot be combined");
        }
        if (self.re || self.cidr || self.exists || self.cmp.is_some()) && self.op.is_some() {
            return Err("contains/startswith/endswith cannot be combined with re, cidr, exists or comparisons");
        }
        if (self.re || self.cidr || self.exists || self.cmp.is_some() || self.fieldref)
            && (!self.enc.is_empty() || self.windash)
        {
            return Err("encoding modifiers apply to plain strings only");
        }
        if self.fieldref && (self.re || self.cidr || self.exists || self.cmp.is_some()) {
            return Err("fieldref cannot be combined with re, cidr, exists or comparisons");
        }
        if self.none && (self.all || self.exists) {
            return Err("`none` cannot be combined with all or exists");
        }
        let plain_enc = self.enc.iter().filter(|e| matches!(e, Enc::Base64 | Enc::Base64Offset)).count();
        if plain_enc > 1 {
            return Err("use either base64 or base64offset, once");
        }
        if self.enc.iter().any(|e| matches!(e, Enc::Utf16Le | Enc::Utf16Be | Enc::Utf16Bom)) && plain_enc == 0 {
            return Err("utf16le/utf16be/utf16/wide must be followed by base64 or base64offset in JSON events");
        }
        if self.enc.contains(&Enc::Base64Offset) && self.op != Some(StrOp::Contains) {
            return Err("base64offset must be used with contains");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Base64,
    Base64Offset,
    Utf16Le,
    Utf16Be,
    Utf16Bom,
}

/// Applies windash, then character encodings, then base64, in modifier order.
fn encode_variants(text: &str, m: &Mods) -> Result<Vec<String>, String> {
    let texts = if m.windash { windash(text)? } else { vec![text.to_string()] };
    if m.enc.is_empty() {
        return Ok(texts);
    }
    let mut out = Vec::new();
    for t in texts {
        let mut bytes = t.into_bytes();
        let mut finals: Vec<String> = Vec::new();
        for e in &m.enc {
            match e {
                Enc::Utf16Le | Enc::Utf16Be | Enc::Utf16Bom => {
                    let s = String::from_utf8_lossy(&bytes).into_owned();
                    let mut b = Vec::new();
                    if *e == Enc::Utf16Bom {
                        b.extend_from_slice(&[0xFF, 0xFE]);
                    }
                    for u in s.encode_utf16() {
                        if *e == Enc::Utf16Be {
                            b.extend_from_slice(&u.to_be_bytes());
                        } else {
                            b.extend_from_slice(&u.to_le_bytes());
                        }
                    }
                    bytes = b;
                }
                Enc::Base64 => finals.push(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                Enc::Base64Offset => finals.extend(base64_offsets(&bytes)),
            }
        }
        out.extend(finals.into_iter().map(|f| escape_wildcards(&f)));
    }
    Ok(out)
}

/// The three base64 forms of `b` at offsets 0, 1, 2 of an enclosing string,
/// trimmed to the characters that do not depend on the neighbours.
fn base64_offsets(b: &[u8]) -> Vec<String> {
    let e = &base64::engine::general_purpose::STANDARD;
    let start = [0usize, 2, 3];
    let end_trim = [0usize, 3, 2];
    let mut out = Vec::new();
    for shift in 0..3 {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(b);
        let enc = e.encode(&buf);
        let end_mod = (b.len() + shift) % 3;
        let end = enc.len() - end_trim[end_mod];
        let s = &enc[start[shift]..end.max(start[shift])];
        let s = s.trim_end_matches('=');
        if !s.is_empty() {
            out.push(s.to_string());
        }
    }
    out
}

/// Windows command-line dash variants of every `-`/`/` that starts a word.
fn windash(text: &str) -> Result<Vec<String>, String> {
    const DASHES: [char; 5] = ['-', '/', '–', '—', '―'];
    let chars: Vec<char> = text.chars().collect();
    let positions: Vec<usize> = (0..chars.len())
        .filter(|&i| (chars[i] == '-' || chars[i] == '/') && (i == 0 || chars[i - 1].is_whitespace()))
        .collect();
    if positions.len() > 4 {
        return Err("windash on more than 4 flags makes too many variants; split the value".into());
    }
    let mut out = vec![chars.clone()];
    for &p in &positions {
        let mut next = Vec::new();
        for v in &out {
            for d in DASHES {
                let mut w = v.clone();
                w[p] = d;
                next.push(w);
            }
        }
        out = next;
    }
    Ok(out.into_iter().map(|c| c.into_iter().collect()).collect())
}

/// A Sigma string with wildcards: `*` any run, `?` one character, `\` escapes
/// `*`, `?` and `\` (a backslash before anything else is literal).
#[derive(Debug, PartialEq)]
enum Tok {
    Lit(String),
    Star,
    One,
}

fn wild_tokens(s: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    lit.push(n);
                    it.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    toks.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                if c == '*' {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                } else {
                    toks.push(Tok::One);
                }
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        toks.push(Tok::Lit(lit));
    }
    toks
}

/// Adds the matcher for a (possibly wildcarded) string under `op`.
fn push_wild(out: &mut Vec<Pat>, text: &str, op: Option<StrOp>, cased: bool, literal: bool) -> Result<(), String> {
    let mut toks = if literal {
        vec![Tok::Lit(text.replace("\\*", "*").replace("\\?", "?").replace("\\\\", "\\"))]
    } else {
        wild_tokens(text)
    };
    toks.retain(|t| !matches!(t, Tok::Lit(s) if s.is_empty()));
    match op {
        Some(StrOp::Contains) => {
            if toks.first() != Some(&Tok::Star) {
                toks.insert(0, Tok::Star);
            }
            if toks.last() != Some(&Tok::Star) {
                toks.push(Tok::Star);
            }
        }
        Some(StrOp::Prefix) if toks.last() != Some(&Tok::Star) => toks.push(Tok::Star),
        Some(StrOp::Suffix) if toks.first() != Some(&Tok::Star) => toks.insert(0, Tok::Star),
        _ => {}
    }
    let simple = match toks.as_slice() {
        [] => Some((StrOp::Eq, String::new())),
        [Tok::Star] => Some((StrOp::Contains, String::new())),
        [Tok::Lit(l)] => Some((StrOp::Eq, l.clone())),
        [Tok::Lit(l), Tok::Star] => Some((StrOp::Prefix, l.clone())),
        [Tok::Star, Tok::Lit(l)] => Some((StrOp::Suffix, l.clone())),
        [Tok::Star, Tok::Lit(l), Tok::Star] => Some((StrOp::Contains, l.clone())),
        _ => None,
    };
    if let Some((op, lit)) = simple {
        out.push(Pat::Str(StrPat::new(op, &lit, cased)));
        return Ok(());
    }
    let mut re = String::from("^");
    for t in &toks {
        match t {
            Tok::Lit(l) => re.push_str(&regex::escape(l)),
            Tok::Star => re.push_str(".*"),
            Tok::One => re.push('.'),
        }
    }
    re.push('$');
    let r = RegexBuilder::new(&re)
        .case_insensitive(!cased)
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| format!("wildcard pattern too complex: {e}"))?;
    out.push(Pat::Regex(Box::new(RegexPat::new(r, &re, !cased))));
    Ok(())
}

/// Sigma regexes are PCRE's, which reads a `{` that does not start a
/// quantifier (`{n}`, `{n,}`, `{n,m}` after something it can repeat) as a
/// literal brace, as in `{[0-9a-f]{8}-...}` (a GUID) or `({\d})+`; Rust's
/// regex refuses those. They are escaped. The one look-around SigmaHQ uses,
/// `(?!.)` ("nothing but a line end follows"), is written as the zero-width
/// assertion it equals: `(?m:$)` (`.` stops at `\n` only, in both engines),
/// or `\z` when `.` matches newlines (`dotall`; left alone under an inline
/// `(?s`). Other look-arounds stay refused: the engine is linear-time.
/// Everything else is left as written.
fn pcre_compat(p: &str, dotall: bool) -> std::borrow::Cow<'_, str> {
    let inline_dotall = p.contains("(?s");
    let b = p.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    // Whether what precedes can take a quantifier.
    let mut repeatable = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 2;
                repeatable = true;
                continue;
            }
            b'[' => {
                // Skip the class: `]` right after `[` or `[^` is a member, `\` escapes.
                let mut j = i + 1;
                if b.get(j) == Some(&b'^') {
                    j += 1;
                }
                if b.get(j) == Some(&b']') {
                    j += 1;
                }
                while j < b.len() && b[j] != b']' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                i = j + 1;
                repeatable = true;
                continue;
            }
            b'{' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let rest = &b[i + 1 + digits..];
                let tail = match rest.first() {
                    Some(b',') => rest[1..].iter().take_while(|c| c.is_ascii_digit()).count() + 1,
                    _ => 0,
                };
                if repeatable && digits > 0 && rest.get(tail) == Some(&b'}') {
                    i += 1 + digits + tail + 1;
                    repeatable = false;
                    continue;
                }
                out.push_str(&p[copied..i]);
                out.push_str("\\{");
                copied = i + 1;
                repeatable = true;
            }
            b'(' if b[i..].starts_with(b"(?!.)") && !inline_dotall => {
                out.push_str(&p[copied..i]);
                out.push_str(if dotall { "\\z" } else { "(?m:$)" });
                i += "(?!.)".len();
                copied = i;
                repeatable = true;
                continue;
            }
            b'(' if b.get(i + 1) == Some(&b'?') => {
                // Inline flags `(?i)` take no quantifier; `(?:` and the like open a group.
                let flags = b[i + 2..].iter().take_while(|c| c.is_ascii_alphabetic() || **c == b'-').count();
                if b.get(i + 2 + flags) == Some(&b')') {
                    i += 2 + flags + 1;
                    repeatable = false;
                    continue;
                }
                repeatable = false;
            }
            b'(' | b'|' | b'^' | b'*' | b'+' | b'?' => repeatable = false,
            _ => repeatable = true,
        }
        i += 1;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(p);
    }
    out.push_str(&p[copied..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_tokens_and_escapes() {
        assert_eq!(
            wild_tokens("a*b?c"),
            vec![Tok::Lit("a".into()), Tok::Star, Tok::Lit("b".into()), Tok::One, Tok::Lit("c".into())]
        );
        assert_eq!(wild_tokens(r"a\*b"), vec![Tok::Lit("a*b".into())]);
        assert_eq!(wild_tokens(r"a\\*"), vec![Tok::Lit(r"a\".into()), Tok::Star]);
        assert_eq!(wild_tokens(r"c:\windows"), vec![Tok::Lit(r"c:\windows".into())]);
        assert_eq!(wild_tokens("**a"), vec![Tok::Star, Tok::Lit("a".into())]);
    }

    #[test]
    fn base64offset_matches_inside_encoded_text() {
        let e = &base64::engine::general_purpose::STANDARD;
        let variants = base64_offsets(b"/bin/bash");
        for prefix in ["", "x", "xy", "xyz", "hello "] {
            let enc = e.encode(format!("{prefix}/bin/bash -c id"));
            assert!(variants.iter().any(|v| enc.contains(v.as_str())), "{prefix}: {enc} vs {variants:?}");
        }
    }

    #[test]
    fn windash_variants() {
        let v = windash("-enc x").unwrap();
        assert_eq!(v.len(), 5);
        assert!(v.contains(&"/enc x".to_string()));
        assert!(v.contains(&"—enc x".to_string()));
        assert_eq!(windash("a-b").unwrap(), vec!["a-b".to_string()]);
    }

    #[test]
    fn braces_that_start_no_quantifier_are_literal_as_in_pcre() {
        for (pattern, escaped) in [
            ("a{2}b{1,}c{1,3}", "a{2}b{1,}c{1,3}"),
            ("{[a-f0-9]{8}-[a-f0-9]{4}}", "\\{[a-f0-9]{8}-[a-f0-9]{4}}"),
            ("\\\"({\\d})+\\\"\\s*-f", "\\\"(\\{\\d})+\\\"\\s*-f"),
            ("x{a}", "x\\{a}"),
            ("x{,3}", "x\\{,3}"),
            ("(?i){2}", "(?i)\\{2}"),
            ("\\{1}[{]", "\\{1}[{]"),
            ("[]{]{2}", "[]{]{2}"),
        ] {
            assert_eq!(pcre_compat(pattern, false), escaped, "{pattern}");
        }
        let guid = regex::Regex::new(&pcre_compat("{[a-f0-9]{8}-[a-f0-9]{4}}", false)).unwrap();
        assert!(guid.is_match("/class:{0123abcd-ef01}") && !guid.is_match("0123abcd-ef01"));
        let fmt = regex::Regex::new(&pcre_compat("\\\"({\\d})+\\\"\\s*-f", false)).unwrap();
        assert!(fmt.is_match("\"{1}{0}\" -f 'a','b'"));
    }

    #[test]
    fn the_negative_lookahead_of_any_char_is_a_line_end() {
        // As in SigmaHQ's proc_creation_win_susp_obfuscated_ip_via_cli (`https?\/\/[0-9]{1,10}(?!.)`).
        let p = "https?:\\/\\/[0-9]{1,10}(?!.)";
        assert_eq!(pcre_compat(p, false), "https?:\\/\\/[0-9]{1,10}(?m:$)");
        assert_eq!(pcre_compat(p, true), "https?:\\/\\/[0-9]{1,10}\\z");
        assert_eq!(pcre_compat("a(?s)(?!.)", false), "a(?s)(?!.)", "inline dotall: left to be refused");
        assert_eq!(pcre_compat("[(?!.)]", false), "[(?!.)]", "inside a class it is four characters");
        let re = regex::Regex::new(&pcre_compat(p, false)).unwrap();
        assert!(re.is_match("ping http://2130706433"));
        assert!(re.is_match("http://2130706433\nnext line"));
        assert!(!re.is_match("http://2130706433/index.html"));
        assert!(!re.is_match("http://2130706433 -o x"));
        let dotall = regex::RegexBuilder::new(&pcre_compat(p, true)).dot_matches_new_line(true).build().unwrap();
        assert!(dotall.is_match("http://2130706433") && !dotall.is_match("http://2130706433\nx"));
        // Other look-arounds are still refused by the linear-time engine.
        assert!(regex::Regex::new(&pcre_compat("a(?=b)", false)).is_err());
    }
}
