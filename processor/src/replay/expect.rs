//! Backtest expectations: `replay --expect FILE` (TOML) and `--junit FILE`.
//!
//! ```toml
//! # Rules not listed: "ignore" (default) or "zero" (each must not match).
//! unlisted = "ignore"
//!
//! [[expect]]
//! rule = "aws-console-login-without-mfa"   # a rule or correlation id
//! at_least = 1
//!
//! [[expect]]
//! rule = "aws-access-denied-burst"
//! exactly = 2                              # or at_least / at_most, together
//! ```
//!
//! A rule's count is its number of matches as the replay summary lists them
//! (for correlations: each firing, updates included).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use trailwatch_rules::RuleSet;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Rules not listed may match any number of times.
    #[default]
    Ignore,
    /// Every rule not listed must not match.
    Zero,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub rule: String,
    pub at_least: Option<u64>,
    pub at_most: Option<u64>,
    pub exactly: Option<u64>,
}

impl Expectation {
    fn holds(&self, n: u64) -> bool {
        self.at_least.is_none_or(|m| n >= m)
            && self.at_most.is_none_or(|m| n <= m)
            && self.exactly.is_none_or(|m| n == m)
    }

    fn wanted(&self) -> String {
        let mut w = Vec::new();
        if let Some(n) = self.exactly {
            w.push(format!("exactly {n}"));
        }
        if let Some(n) = self.at_least {
            w.push(format!("at least {n}"));
        }
        if let Some(n) = self.at_most {
            w.push(format!("at most {n}"));
        }
        w.join(" and ")
    }
}

/// An expectations file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub unlisted: Unlisted,
    #[serde(default)]
    pub expect: Vec<Expectation>,
}

impl Expectations {
    /// Reads and checks a file against the rules that will run: every
    /// expectation names a loaded rule once, with a bound.
    pub fn load(path: &Path, set: &RuleSet) -> anyhow::Result<Expectations> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let e: Expectations =
            toml::from_str(&text).with_context(|| format!("{}: not a valid expectations file", path.display()))?;
        let known = known_rules(set);
        let mut seen = std::collections::BTreeSet::new();
        for x in &e.expect {
            let at = || format!("{}: rule `{}`", path.display(), x.rule);
            if !known.contains_key(x.rule.as_str()) {
                anyhow::bail!("{}: no such rule is loaded (see `trailwatch rules list`)", at());
            }
            if x.at_least.is_none() && x.at_most.is_none() && x.exactly.is_none() {
                anyhow::bail!("{}: give at_least, at_most or exactly", at());
            }
            if x.exactly.is_some() && (x.at_least.is_some() || x.at_most.is_some()) {
                anyhow::bail!("{}: exactly cannot be combined with at_least or at_most", at());
            }
            if !seen.insert(x.rule.as_str()) {
                anyhow::bail!("{}: listed twice", at());
            }
        }
        Ok(e)
    }

    /// Checks the counts of a replay (rule id → (title, matches)).
    pub fn check(&self, set: &RuleSet, matches: &BTreeMap<String, (String, u64)>) -> Vec<Outcome> {
        let known = known_rules(set);
        let count = |id: &str| matches.get(id).map_or(0, |m| m.1);
        let title = |id: &str| known.get(id).map_or_else(String::new, |t| t.to_string());
        let mut out: Vec<Outcome> = self
            .expect
            .iter()
            .map(|x| {
                let n = count(&x.rule);
                Outcome {
                    rule: x.rule.clone(),
                    title: title(&x.rule),
                    count: n,
                    wanted: x.wanted(),
                    passed: x.holds(n),
                }
            })
            .collect();
        if self.unlisted == Unlisted::Zero {
            for id in known.keys().filter(|id| !self.expect.iter().any(|x| x.rule == **id)) {
                let n = count(id);
                out.push(Outcome {
                    rule: id.to_string(),
                    title: title(id),
                    count: n,
                    wanted: "0 (not listed)".into(),
                    passed: n == 0,
                });
            }
        }
        out
    }
}

/// Rule and correlation ids → titles.
fn known_rules(set: &RuleSet) -> BTreeMap<&str, &str> {
    let rules = set.rules().iter().map(|r| &r.meta);
    let corrs = set.correlations().iter().map(|c| &c.meta);
    rules.chain(corrs).map(|m| (m.id.as_str(), m.title.as_str())).collect()
}

/// One checked expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub rule: String,
    pub title: String,
    pub count: u64,
    pub wanted: String,
    pub passed: bool,
}

impl Outcome {
    /// The stderr line.
    pub fn line(&self) -> String {
        format!(
            "expect {}  {}  ({}): {} matches, wanted {}",
            if self.passed { "ok  " } else { "FAIL" },
            self.rule,
            self.title,
            self.count,
            self.wanted
        )
    }
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one testsuite, one testcase per expectation.
pub fn junit(outcomes: &[Outcome], seconds: f64) -> String {
    let failures = outcomes.iter().filter(|o| !o.passed).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"trailwatch replay\" tests=\"{}\" failures=\"{failures}\" time=\"{seconds:.3}\">",
        outcomes.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"trailwatch replay expectations\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{seconds:.3}\">",
        outcomes.len()
    );
    for o in outcomes {
        let name = xml(&format!("{} ({})", o.rule, o.title));
        let _ = write!(s, "    <testcase classname=\"trailwatch.expect\" name=\"{name}\" time=\"0\"");
        if o.passed {
            s.push_str("/>\n");
        } else {
            let msg = xml(&format!("{} matches, wanted {}", o.count, o.wanted));
            let _ = writeln!(
                s,
                ">\n      <failure message=\"{msg}\" type=\"expectation\">{msg}</failure>\n    </testcase>"
            );
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_xml() {
        let x = Expectation { rule: "r".into(), at_least: Some(1), at_most: Some(3), exactly: None };
        assert!(!x.holds(0) && x.holds(1) && x.holds(3) && !x.holds(4));
        assert_eq!(x.wanted(), "at least 1 and at most 3");
        let o = [
            Outcome { rule: "a".into(), title: "A & <b>".into(), count: 2, wanted: "exactly 2".into(), passed: true },
            Outcome { rule: "b".into(), title: "B".into(), count: 0, wanted: "at least 1".into(), passed: false },
        ];
        let j = junit(&o, 1.0);
        assert!(j.contains("tests=\"2\" failures=\"1\""), "{j}");
        assert!(j.contains("name=\"a (A &amp; &lt;b&gt;)\""), "{j}");
        assert!(j.contains("<failure message=\"0 matches, wanted at least 1\""), "{j}");
        let e: Expectations = toml::from_str("unlisted = \"zero\"\n[[expect]]\nrule = \"x\"\nexactly = 1\n").unwrap();
        assert_eq!(e.unlisted, Unlisted::Zero);
        assert!(toml::from_str::<Expectations>("[[expect]]\nrule = \"x\"\natleast = 1\n").is_err());
    }
}
