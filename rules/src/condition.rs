//! The Sigma condition language: `and`, `or`, `not`, parentheses,
//! `1 of sel*`, `all of sel*`, `N of ...`, `1 of them`, `all of them`.
//!
//! Precedence (lowest first): `or`, `and`, `not`. Identifiers and `of`
//! patterns are resolved against the rule's search identifiers at parse time,
//! so evaluation never looks at names.

use std::fmt;

/// A compiled condition over search identifiers (by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Ref(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// At least `n` of the searches (all of them when `n == targets.len()`).
    AtLeast {
        n: usize,
        targets: Vec<usize>,
    },
}

impl Cond {
    /// The same condition over searches numbered `by` further on (a
    /// filter's searches placed after its rule's).
    pub fn offset(self, by: usize) -> Cond {
        match self {
            Cond::Ref(i) => Cond::Ref(i + by),
            Cond::Not(c) => Cond::Not(Box::new(c.offset(by))),
            Cond::And(cs) => Cond::And(cs.into_iter().map(|c| c.offset(by)).collect()),
            Cond::Or(cs) => Cond::Or(cs.into_iter().map(|c| c.offset(by)).collect()),
            Cond::AtLeast { n, targets } => Cond::AtLeast { n, targets: targets.into_iter().map(|t| t + by).collect() },
        }
    }

    pub fn eval(&self, sel: &mut impl FnMut(usize) -> bool) -> bool {
        match self {
            Cond::Ref(i) => sel(*i),
            Cond::Not(c) => !c.eval(sel),
            Cond::And(cs) => cs.iter().all(|c| c.eval(sel)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(sel)),
            Cond::AtLeast { n, targets } => {
                let mut hits = 0;
                for (k, t) in targets.iter().enumerate() {
                    if sel(*t) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                    // Not enough left to reach n.
                    if hits + (targets.len() - k - 1) < *n {
                        return false;
                    }
                }
                hits >= *n
            }
        }
    }
}

/// Displays a condition with identifier names, for `rules list` and errors.
pub struct CondDisplay<'a> {
    pub cond: &'a Cond,
    pub names: &'a [String],
}

impl<'a> fmt::Display for CondDisplay<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names;
        let sub = |c: &'a Cond| CondDisplay { cond: c, names };
        match self.cond {
            Cond::Ref(i) => f.write_str(&self.names[*i]),
            Cond::Not(c) => write!(f, "not {}", sub(c)),
            Cond::And(cs) | Cond::Or(cs) => {
                let op = if matches!(self.cond, Cond::And(_)) { " and " } else { " or " };
                f.write_str("(")?;
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(op)?;
                    }
                    write!(f, "{}", sub(c))?;
                }
                f.write_str(")")
            }
            Cond::AtLeast { n, targets } => {
                if *n == targets.len() && *n > 1 {
                    f.write_str("all of (")?;
                } else {
                    write!(f, "{n} of (")?;
                }
                for (i, t) in targets.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&self.names[*t])?;
                }
                f.write_str(")")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Of,
    All,
    Them,
    Num(usize),
    Ident(&'a str),
    Pipe,
}

fn tokenize(s: &str) -> Result<Vec<Tok<'_>>, String> {
    let mut toks = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        match c {
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'(' | b')' | b'|') {
                    i += 1;
                }
                let w = &s[start..i];
                toks.push(match keyword(w) {
                    Some(k) => k,
                    None => match w.parse::<usize>() {
                        Ok(n) => Tok::Num(n),
                        Err(_) => {
                            if !w.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'*' | b'.')) {
                                return Err(format!("unexpected `{w}` in condition"));
                            }
                            Tok::Ident(w)
                        }
                    },
                });
            }
        }
    }
    Ok(toks)
}

struct Parser<'a, 'n> {
    toks: Vec<Tok<'a>>,
    pos: usize,
    names: &'n [String],
    /// Open parentheses and `not`s around the current position.
    depth: usize,
}

/// Nesting (parentheses and `not`s) a condition may have. Sigma rules nest
/// a few levels; without a bound a condition nested some thousands deep
/// overflows the stack (parsing, evaluating and dropping all recurse),
/// which kills the process instead of refusing one rule (found by fuzzing).
pub const MAX_DEPTH: usize = 64;

/// The keyword token `word` spells, in any case (`1` and numbers aside).
fn keyword(word: &str) -> Option<Tok<'static>> {
    Some(match word.to_ascii_lowercase().as_str() {
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "of" => Tok::Of,
        "all" => Tok::All,
        "any" => Tok::Num(1),
        "them" => Tok::Them,
        _ => return None,
    })
}

/// Whether `word` is one of the condition's keywords, in any case.
pub fn is_keyword(word: &str) -> bool {
    keyword(word).is_some()
}

/// Parses `text` against the search identifiers `names`.
pub fn parse(text: &str, names: &[String]) -> Result<Cond, String> {
    if text.contains('|') {
        return Err(
            "a Sigma v1 aggregation (`| count() by ...`) must be the detection's only condition, or write it as a correlation rule (type event_count or value_count)"
                .to_string(),
        );
    }
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err("empty condition".to_string());
    }
    let mut p = Parser { toks, pos: 0, names, depth: 0 };
    let c = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {} in condition", p.describe()));
    }
    Ok(c)
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).cloned()
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of condition".into(),
            Some(Tok::Ident(s)) => format!("`{s}`"),
            Some(t) => format!("{t:?}").to_lowercase(),
        }
    }

    fn or(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(Tok::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.pop().unwrap_or(Cond::Or(vec![])) } else { Cond::Or(items) })
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.not()?];
        while self.peek() == Some(Tok::And) {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 { items.pop().unwrap_or(Cond::And(vec![])) } else { Cond::And(items) })
    }

    fn not(&mut self) -> Result<Cond, String> {
        if self.peek() == Some(Tok::Not) {
            self.pos += 1;
            self.enter()?;
            let c = Cond::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(c);
        }
        self.atom()
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("condition nests deeper than {MAX_DEPTH} levels (parentheses and `not`)"));
        }
        Ok(())
    }

    fn atom(&mut self) -> Result<Cond, String> {
        match self.peek() {
            Some(Tok::LParen) => {
                self.pos += 1;
                self.enter()?;
                let c = self.or()?;
                if self.peek() != Some(Tok::RParen) {
                    return Err(format!("expected `)` but found {}", self.describe()));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(c)
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                self.of(Some(n))
            }
            Some(Tok::All) => {
                self.pos += 1;
                self.of(None)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if name.contains('*') {
                    return Err(format!("wildcard `{name}` is only allowed after `1 of` / `all of`"));
                }
                match self.names.iter().position(|n| n == name) {
                    Some(i) => Ok(Cond::Ref(i)),
                    None => Err(format!("condition refers to `{name}`, which is not defined in detection")),
                }
            }
            _ => Err(format!("expected a search identifier but found {}", self.describe())),
        }
    }

    fn of(&mut self, n: Option<usize>) -> Result<Cond, String> {
        if self.peek() != Some(Tok::Of) {
            return Err(format!("expected `of` but found {}", self.describe()));
        }
        self.pos += 1;
        let targets: Vec<usize> = match self.peek() {
            Some(Tok::Them) => {
                self.pos += 1;
                (0..self.names.len()).filter(|i| !self.names[*i].starts_with('_')).collect()
            }
            Some(Tok::Ident(pat)) => {
                self.pos += 1;
                let t: Vec<usize> = (0..self.names.len()).filter(|i| glob_match(pat, &self.names[*i])).collect();
                if t.is_empty() {
                    return Err(format!("`{pat}` matches no search identifier"));
                }
                t
            }
            _ => return Err(format!("expected an identifier pattern or `them` but found {}", self.describe())),
        };
        let n = n.unwrap_or(targets.len());
        if n == 0 {
            return Err("`0 of` is always true; write the condition without it".to_string());
        }
        Ok(Cond::AtLeast { n, targets })
    }
}

/// `*` wildcard match for identifier patterns.
fn glob_match(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) || s.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["sel", "sel_a", "sel_b", "filter", "_hidden"].iter().map(|s| s.to_string()).collect()
    }

    fn eval(cond: &str, truth: &[bool]) -> bool {
        let c = parse(cond, &names()).unwrap();
        c.eval(&mut |i| truth[i])
    }

    #[test]
    fn nesting_is_bounded_instead_of_overflowing_the_stack() {
        let deep = |n: usize| format!("{}sel{}", "(".repeat(n), ")".repeat(n));
        assert!(eval(&deep(MAX_DEPTH), &[true, false, false, false, false]));
        let too_deep = "condition nests deeper than 64 levels (parentheses and `not`)";
        assert_eq!(parse(&deep(MAX_DEPTH + 1), &names()).unwrap_err(), too_deep);
        // Thousands deep (the fuzzer's input shape): an error, not a crash.
        assert_eq!(parse(&deep(50_000), &names()).unwrap_err(), too_deep);
        assert_eq!(parse(&format!("{}sel", "not ".repeat(50_000)), &names()).unwrap_err(), too_deep);
        let mixed = format!("{}sel", "not (".repeat(40)) + &")".repeat(40);
        assert_eq!(parse(&mixed, &names()).unwrap_err(), too_deep);
        // Depth is nesting, not length: siblings at one level are fine.
        let wide = vec!["(sel)"; 10_000].join(" or ");
        assert!(eval(&wide, &[true, false, false, false, false]));
    }

    #[test]
    fn precedence_not_and_or() {
        // sel or (sel_a and (not filter))
        assert!(eval("sel or sel_a and not filter", &[true, false, false, true, false]));
        assert!(!eval("sel_a and not filter or sel_b", &[false, true, false, true, false]));
        assert!(eval("not (sel or filter)", &[false, false, false, false, false]));
        assert!(eval("not not sel", &[true, false, false, false, false]));
    }

    #[test]
    fn of_quantifiers() {
        assert!(eval("1 of sel_*", &[false, false, true, false, false]));
        assert!(!eval("all of sel_*", &[false, false, true, false, false]));
        assert!(eval("all of sel*", &[true, true, true, false, false]));
        assert!(eval("2 of them", &[true, false, false, true, false]));
        // `them` excludes identifiers starting with `_`.
        assert!(!eval("1 of them", &[false, false, false, false, true]));
        assert!(eval("all of them", &[true, true, true, true, false]));
        assert!(eval("any of sel_*", &[false, true, false, false, false]));
        assert!(eval("sel and not 1 of filter*", &[true, false, false, false, false]));
    }

    #[test]
    fn errors_are_clear() {
        for (c, msg) in [
            ("sel and", "expected a search identifier"),
            ("nope", "not defined"),
            ("1 of x*", "matches no search identifier"),
            ("(sel", "expected `)`"),
            ("sel | count() by a > 5", "correlation rule"),
            ("sel*", "only allowed after"),
            ("sel sel_a", "unexpected"),
        ] {
            let e = parse(c, &names()).unwrap_err();
            assert!(e.contains(msg), "{c}: {e}");
        }
    }

    #[test]
    fn display_round_trips_meaning() {
        let n = names();
        let c = parse("sel and not 1 of filter*", &n).unwrap();
        assert_eq!(CondDisplay { cond: &c, names: &n }.to_string(), "(sel and not 1 of (filter))");
    }
}
