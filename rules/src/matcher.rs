//! Value matchers: one Sigma `field|modifiers: values` item compiled once
//! into something that tests an event's values without allocating.
//!
//! Case-insensitive matching (Sigma's default) lowercases the *pattern* at
//! compile time and compares event text with ASCII case folding; only when a
//! pattern or a value has non-ASCII letters is the value lowercased (rare in
//! CloudTrail). Many alternatives on one field fold into a hash set (exact)
//! or an Aho-Corasick automaton (contains).

use std::collections::HashSet;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use regex::Regex;

use crate::doc::{Event, Val, ValKind};

/// How a string pattern is anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Eq,
    Prefix,
    Suffix,
    Contains,
}

/// One literal string test.
#[derive(Debug, Clone)]
pub struct StrPat {
    pub op: StrOp,
    /// Lowercased unless `cased`.
    pub pat: Box<str>,
    pub cased: bool,
    /// `pat` is ASCII (decided once, not per value).
    ascii: bool,
}

impl StrPat {
    pub fn new(op: StrOp, pat: &str, cased: bool) -> Self {
        let pat: Box<str> = if cased { pat.into() } else { pat.to_lowercase().into() };
        StrPat { op, ascii: pat.is_ascii(), pat, cased }
    }

    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        if self.cased {
            let (p, v) = (self.pat.as_bytes(), v.as_bytes());
            return match self.op {
                StrOp::Eq => v == p,
                StrOp::Prefix => v.starts_with(p),
                StrOp::Suffix => v.ends_with(p),
                StrOp::Contains => memchr::memmem::find(v, p).is_some(),
            };
        }
        if self.ascii && v.is_ascii() {
            ascii_ci(self.op, v.as_bytes(), self.pat.as_bytes())
        } else {
            let lv = v.to_lowercase();
            ascii_ci(self.op, lv.as_bytes(), self.pat.as_bytes())
        }
    }
}

/// `pat` is already lowercase.
#[inline]
fn ascii_ci(op: StrOp, v: &[u8], pat: &[u8]) -> bool {
    match op {
        StrOp::Eq => v.len() == pat.len() && v.eq_ignore_ascii_case(pat),
        StrOp::Prefix => v.len() >= pat.len() && v[..pat.len()].eq_ignore_ascii_case(pat),
        StrOp::Suffix => v.len() >= pat.len() && v[v.len() - pat.len()..].eq_ignore_ascii_case(pat),
        StrOp::Contains => contains_ci(v, pat),
    }
}

/// ASCII-case-insensitive substring search; `pat` is lowercase.
#[inline]
fn contains_ci(hay: &[u8], pat: &[u8]) -> bool {
    let Some(&first) = pat.first() else {
        return true;
    };
    if hay.len() < pat.len() {
        return false;
    }
    let last_start = hay.len() - pat.len();
    let upper = first.to_ascii_uppercase();
    let mut i = 0;
    while i <= last_start {
        let found = if upper == first {
            memchr::memchr(first, &hay[i..=last_start])
        } else {
            memchr::memchr2(first, upper, &hay[i..=last_start])
        };
        match found {
            None => return false,
            Some(off) => {
                let at = i + off;
                if hay[at..at + pat.len()].eq_ignore_ascii_case(pat) {
                    return true;
                }
                i = at + 1;
            }
        }
    }
    false
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    net: u128,
    mask: u128,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not a CIDR network"))?;
        let (v6, bits, max) = match ip {
            IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (true, u128::from(a), 128u32),
        };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
        };
        let host_bits = max - len;
        let full = if max == 32 { u128::from(u32::MAX) } else { u128::MAX };
        let mask = if host_bits >= 128 { 0 } else { (full >> host_bits) << host_bits } & full;
        Ok(Cidr { v6, net: bits & mask, mask })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (ip, self.v6) {
            (IpAddr::V4(a), false) => u128::from(u32::from(*a)) & self.mask == self.net,
            (IpAddr::V6(a), true) => u128::from(*a) & self.mask == self.net,
            // An IPv4-mapped IPv6 address also matches an IPv4 network.
            (IpAddr::V6(a), false) => {
                a.to_ipv4_mapped().is_some_and(|v4| u128::from(u32::from(v4)) & self.mask == self.net)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One alternative of a field item.
#[derive(Debug, Clone)]
pub enum Pat {
    Str(StrPat),
    /// A number in the rule: equal numerically to a JSON number, or equal as
    /// text to a JSON string.
    Num {
        value: f64,
        text: Box<str>,
    },
    Regex(Box<RegexPat>),
    Cidr(Cidr),
    Cmp(NumOp, f64),
    /// `|fieldref`: compare with the values of another field of the event.
    FieldRef {
        field: u32,
        op: StrOp,
        cased: bool,
    },
}

impl Pat {
    #[inline]
    fn test(&self, v: &str, kind: ValKind, ev: &Event<'_>) -> bool {
        match self {
            Pat::Str(p) => p.matches(v),
            Pat::Num { value, text } => {
                if kind == ValKind::Num {
                    v.parse::<f64>().is_ok_and(|x| x == *value)
                } else {
                    v.eq_ignore_ascii_case(text)
                }
            }
            Pat::Regex(re) => re.is_match(v),
            Pat::Cidr(c) => v.trim().parse::<IpAddr>().is_ok_and(|ip| c.contains(&ip)),
            Pat::Cmp(op, x) => match v.trim().parse::<f64>() {
                Ok(y) => match op {
                    NumOp::Gt => y > *x,
                    NumOp::Gte => y >= *x,
                    NumOp::Lt => y < *x,
                    NumOp::Lte => y <= *x,
                },
                Err(_) => false,
            },
            Pat::FieldRef { field, op, cased } => ev.texts(*field).any(|other| {
                let p = StrPat::new(*op, other, *cased);
                p.matches(v)
            }),
        }
    }
}

/// A regular expression with a literal every match contains, found once at
/// compile time: most values lack it, and a substring search rejects them
/// before the regex engine runs.
#[derive(Debug, Clone)]
pub struct RegexPat {
    pub re: Regex,
    required: Option<memchr::memmem::Finder<'static>>,
}

impl RegexPat {
    /// `pattern` and `case_insensitive` are what `re` was built from.
    pub fn new(re: Regex, pattern: &str, case_insensitive: bool) -> Self {
        let required =
            required_literal(pattern, case_insensitive).map(|l| memchr::memmem::Finder::new(&l).into_owned());
        RegexPat { re, required }
    }

    #[inline]
    pub fn is_match(&self, v: &str) -> bool {
        if let Some(f) = &self.required {
            if f.find(v.as_bytes()).is_none() {
                return false;
            }
        }
        self.re.is_match(v)
    }
}

/// The longest run of literal bytes at the top level of the pattern (a
/// concatenation, through capture groups): every match contains it. Case-
/// insensitive letters parse as classes, not literals, so they end a run.
fn required_literal(pattern: &str, case_insensitive: bool) -> Option<Vec<u8>> {
    use regex_syntax::hir::{Hir, HirKind};
    let hir = regex_syntax::ParserBuilder::new().case_insensitive(case_insensitive).build().parse(pattern).ok()?;
    fn top(h: &Hir) -> &Hir {
        match h.kind() {
            HirKind::Capture(c) => top(&c.sub),
            _ => h,
        }
    }
    let h = top(&hir);
    let parts: &[Hir] = match h.kind() {
        HirKind::Concat(subs) => subs,
        _ => std::slice::from_ref(h),
    };
    let (mut best, mut run) = (Vec::new(), Vec::new());
    for p in parts {
        match top(p).kind() {
            HirKind::Literal(l) => run.extend_from_slice(&l.0),
            _ => {
                if run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
            }
        }
    }
    if run.len() > best.len() {
        best = run;
    }
    (!best.is_empty()).then_some(best)
}

/// The test of one `field|modifiers: value(s)` item.
#[derive(Debug, Clone)]
pub enum Test {
    /// Some alternative matches some value.
    Any(Vec<Pat>),
    /// `all`: every group matches some value, where a group is one written
    /// value's alternatives (its windash dashes, base64 offsets or
    /// placeholder values; most groups hold one).
    All(Vec<Vec<Pat>>),
    /// Many case-insensitive exact alternatives (lowercased).
    EqSet(HashSet<Box<str>>),
    /// Many case-insensitive contains alternatives.
    ContainsSet(AhoCorasick),
    /// `field: null`: missing or JSON null.
    Null,
    /// `field: [null, ...]`: missing, JSON null, or any alternative.
    NullOr(Vec<Pat>),
    Exists(bool),
    /// `|none` (a trailwatch extension): some value of the field matches
    /// none of the alternatives (the inner test is Any, EqSet or ContainsSet).
    /// Unlike `not field: x`, one outsider among many values is enough:
    /// "a principal of this policy is not an org account".
    NoneOf(Box<Test>),
    /// Nothing can match (an empty list, or a placeholder with no values).
    Never,
}

/// A compiled item: which field (or [`crate::doc::Values::KEYWORDS`]) and the test.
#[derive(Debug, Clone)]
pub struct Item {
    pub field: u32,
    pub test: Test,
}

fn null_or_missing<'a>(values: impl Iterator<Item = &'a Val>) -> bool {
    let mut any = false;
    for v in values {
        if v.kind == ValKind::Null {
            return true;
        }
        any = true;
    }
    !any
}

fn any_value(field: u32, pats: &[Pat], ev: &Event<'_>) -> bool {
    let vals = ev.vals;
    for v in vals.get(field) {
        if !v.kind.is_scalar() {
            continue;
        }
        let t = vals.text(ev.src, v);
        if pats.iter().any(|p| p.test(t, v.kind, ev)) {
            return true;
        }
    }
    false
}

impl Test {
    /// Whether one scalar value passes a value-level test (Any, EqSet,
    /// ContainsSet); other tests look at the whole field and answer false.
    fn value_matches(&self, t: &str, kind: ValKind, ev: &Event<'_>) -> bool {
        match self {
            Test::Any(pats) => pats.iter().any(|p| p.test(t, kind, ev)),
            Test::EqSet(set) => {
                let mut buf = [0u8; 128];
                if t.is_ascii() && t.len() <= buf.len() {
                    let b = &mut buf[..t.len()];
                    b.copy_from_slice(t.as_bytes());
                    b.make_ascii_lowercase();
                    // ASCII bytes are valid UTF-8.
                    std::str::from_utf8(b).is_ok_and(|s| set.contains(s))
                } else {
                    set.contains(t.to_lowercase().as_str())
                }
            }
            Test::ContainsSet(ac) => {
                if t.is_ascii() {
                    ac.is_match(t)
                } else {
                    ac.is_match(&t.to_lowercase())
                }
            }
            _ => false,
        }
    }
}

impl Item {
    #[inline]
    pub fn matches(&self, ev: &Event<'_>) -> bool {
        match &self.test {
            // The common tests, without the element filter.
            Test::Any(pats) => any_value(self.field, pats, ev),
            Test::Exists(want) => ev.vals.has(self.field) == *want,
            _ => self.eval(ev, |_| true),
        }
    }

    /// The item within one element of a scoped array (`Statement[]`):
    /// only the field's values inside element `elem` count.
    pub fn matches_in(&self, ev: &Event<'_>, elem: u32) -> bool {
        self.eval(ev, |v| v.elem == elem)
    }

    #[inline]
    fn eval(&self, ev: &Event<'_>, keep: impl Fn(&Val) -> bool) -> bool {
        let vals = ev.vals;
        let mut values = vals.get(self.field).filter(|v| keep(v));
        let text = |v: &Val| vals.text(ev.src, v);
        match &self.test {
            Test::NoneOf(inner) => values.any(|v| v.kind.is_scalar() && !inner.value_matches(text(v), v.kind, ev)),
            Test::Exists(want) => values.next().is_some() == *want,
            Test::Null => null_or_missing(values),
            Test::Never => false,
            Test::NullOr(pats) => {
                let vs: Vec<&Val> = values.collect();
                null_or_missing(vs.iter().copied())
                    || vs.iter().any(|v| v.kind.is_scalar() && pats.iter().any(|p| p.test(text(v), v.kind, ev)))
            }
            Test::Any(pats) => values.any(|v| v.kind.is_scalar() && pats.iter().any(|p| p.test(text(v), v.kind, ev))),
            // The values are walked again per group rather than collected:
            // no allocation per event.
            Test::All(groups) => groups
                .iter()
                .all(|g| values.clone().any(|v| v.kind.is_scalar() && g.iter().any(|p| p.test(text(v), v.kind, ev)))),
            Test::EqSet(_) | Test::ContainsSet(_) => {
                values.any(|v| v.kind.is_scalar() && self.test.value_matches(text(v), v.kind, ev))
            }
        }
    }

    /// Whether the item can only hold where its field has a value (so the
    /// values name the elements a scoped group can hold in).
    pub fn needs_value(&self) -> bool {
        !matches!(self.test, Test::Exists(false) | Test::Null | Test::NullOr(_))
    }
}

/// `all` over written values whose alternatives start at `starts` in
/// `pats`. A value with no alternatives (a placeholder with no configured
/// values) can never match, and so neither can the item.
pub fn all_of(mut pats: Vec<Pat>, starts: &[usize]) -> Test {
    let mut groups = Vec::with_capacity(starts.len());
    for &start in starts.iter().rev() {
        groups.push(pats.split_off(start));
    }
    groups.reverse();
    if groups.is_empty() || groups.iter().any(Vec::is_empty) {
        return Test::Never;
    }
    Test::All(groups)
}

/// Folds many alternatives into a set or automaton where that is faster.
pub fn optimise(pats: Vec<Pat>) -> Test {
    if pats.is_empty() {
        return Test::Never;
    }
    const FOLD_AT: usize = 6;
    let ci_op = |p: &Pat, op: StrOp| matches!(p, Pat::Str(s) if s.op == op && !s.cased);
    if pats.len() >= FOLD_AT && pats.iter().all(|p| ci_op(p, StrOp::Eq)) {
        let set = pats
            .iter()
            .filter_map(|p| match p {
                Pat::Str(s) => Some(s.pat.clone()),
                _ => None,
            })
            .collect();
        return Test::EqSet(set);
    }
    if pats.len() >= FOLD_AT && pats.iter().all(|p| ci_op(p, StrOp::Contains)) {
        let needles: Vec<&str> = pats
            .iter()
            .filter_map(|p| match p {
                Pat::Str(s) => Some(&*s.pat),
                _ => None,
            })
            .collect();
        if let Ok(ac) = AhoCorasick::builder().ascii_case_insensitive(true).build(&needles) {
            return Test::ContainsSet(ac);
        }
    }
    Test::Any(pats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_ops() {
        let p = |op, s| StrPat::new(op, s, false);
        assert!(p(StrOp::Eq, "StopLogging").matches("stoplogging"));
        assert!(!p(StrOp::Eq, "StopLogging").matches("stoplogging2"));
        assert!(p(StrOp::Prefix, "Delete").matches("DELETETrail"));
        assert!(p(StrOp::Suffix, ".amazonaws.com").matches("ecr.AmazonAWS.com"));
        assert!(p(StrOp::Contains, "trufflehog").matches("agent TruffleHog/3"));
        assert!(!p(StrOp::Contains, "trufflehog").matches("truffle hog"));
        assert!(p(StrOp::Eq, "Ärger").matches("äRGER"));
        assert!(!StrPat::new(StrOp::Eq, "Root", true).matches("root"));
    }

    #[test]
    fn contains_ci_edges() {
        assert!(contains_ci(b"abc", b""));
        assert!(contains_ci(b"aaab", b"ab"));
        assert!(contains_ci(b"xxAB", b"ab"));
        assert!(!contains_ci(b"a", b"ab"));
        assert!(contains_ci(b"12.34", b"2.3"));
    }

    #[test]
    fn required_literals_of_regexes() {
        let lit = |p: &str, ci| required_literal(p, ci).map(|l| String::from_utf8(l).unwrap());
        assert_eq!(lit(".+:assumed-role/aws:.+", false).as_deref(), Some(":assumed-role/aws:"));
        assert_eq!(lit(":i-[0-9a-fA-F]{8,17}$", false).as_deref(), Some(":i-"));
        assert_eq!(lit("^(abc)x+defg", false).as_deref(), Some("defg"));
        // Alternation or case-insensitive letters: no literal every match has.
        assert_eq!(lit("ab|cd", false), None);
        assert_eq!(lit("(?i)abc", false), None);
        assert_eq!(lit("abc", true), None);
        assert_eq!(lit("[", false), None);
        // The prefilter never changes an answer.
        for (p, ci) in [(".+:assumed-role/aws:.+", false), ("x:1", true), ("a.c", false)] {
            let re = regex::RegexBuilder::new(p).case_insensitive(ci).build().unwrap();
            let rp = RegexPat::new(re.clone(), p, ci);
            for v in ["arn:aws:sts::1:assumed-role/aws:ec2-instance/i-1", "X:1", "abc", "aXc", "", "a\nc"] {
                assert_eq!(rp.is_match(v), re.is_match(v), "{p} on {v}");
            }
        }
    }

    #[test]
    fn cidr_v4_v6() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(&"10.1.2.3".parse().unwrap()));
        assert!(!c.contains(&"11.1.2.3".parse().unwrap()));
        assert!(c.contains(&"::ffff:10.0.0.1".parse().unwrap()));
        let c6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c6.contains(&"2001:db8:1::1".parse().unwrap()));
        assert!(!c6.contains(&"2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&"1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains(&"::1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4").unwrap().contains(&"1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
