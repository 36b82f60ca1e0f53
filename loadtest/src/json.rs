//! A small JSON writer: records are written straight into a `String`, in
//! CloudTrail's own key order, without building a `serde_json::Value` first
//! (the generator writes millions of them).

/// Appends JSON to a string; commas are placed automatically.
#[derive(Debug, Default)]
pub struct Json {
    out: String,
    need_comma: bool,
}

impl Json {
    pub fn with_capacity(n: usize) -> Self {
        Json { out: String::with_capacity(n), need_comma: false }
    }

    pub fn into_string(self) -> String {
        self.out
    }

    fn sep(&mut self) {
        if self.need_comma {
            self.out.push(',');
        }
    }

    pub fn obj(&mut self) -> &mut Self {
        self.sep();
        self.out.push('{');
        self.need_comma = false;
        self
    }

    pub fn end(&mut self) -> &mut Self {
        self.out.push('}');
        self.need_comma = true;
        self
    }

    pub fn arr(&mut self) -> &mut Self {
        self.sep();
        self.out.push('[');
        self.need_comma = false;
        self
    }

    pub fn end_arr(&mut self) -> &mut Self {
        self.out.push(']');
        self.need_comma = true;
        self
    }

    pub fn key(&mut self, k: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.out, k);
        self.out.push(':');
        self.need_comma = false;
        self
    }

    pub fn str(&mut self, v: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.out, v);
        self.need_comma = true;
        self
    }

    pub fn num(&mut self, v: i64) -> &mut Self {
        self.sep();
        self.out.push_str(&v.to_string());
        self.need_comma = true;
        self
    }

    pub fn float(&mut self, v: f64) -> &mut Self {
        self.sep();
        if v.is_finite() {
            self.out.push_str(&format!("{v}"));
        } else {
            self.out.push_str("null");
        }
        self.need_comma = true;
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.sep();
        self.out.push_str(if v { "true" } else { "false" });
        self.need_comma = true;
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.out.push_str("null");
        self.need_comma = true;
        self
    }

    /// Inserts already valid JSON text.
    pub fn raw(&mut self, json: &str) -> &mut Self {
        self.sep();
        self.out.push_str(json);
        self.need_comma = true;
        self
    }

    /// `"k": "v"`
    pub fn s(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k).str(v)
    }

    /// `"k": n`
    pub fn n(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k).num(v)
    }

    /// `"k": true|false`
    pub fn b(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k).bool(v)
    }

    /// `"k": <raw JSON>`, or `"k": null` when `None`.
    pub fn r(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        match v {
            Some(j) => self.raw(j),
            None => self.null(),
        }
    }

    /// `"k": ["a", "b"]`
    pub fn strs(&mut self, k: &str, vs: &[&str]) -> &mut Self {
        self.key(k).arr();
        for v in vs {
            self.str(v);
        }
        self.end_arr()
    }
}

/// Builds one JSON object with `f` and returns its text.
pub fn object(cap: usize, f: impl FnOnce(&mut Json)) -> String {
    let mut j = Json::with_capacity(cap);
    j.obj();
    f(&mut j);
    j.end();
    j.into_string()
}

/// Writes `s` as a JSON string literal.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    // Nearly every value needs no escaping: check in one vectorisable pass.
    // (A non-short-circuit fold, so the compiler can use SIMD.)
    let special = bytes.iter().fold(false, |acc, &b| acc | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !special {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{b:04x}")),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let text = object(64, |j| {
            j.s("a", "x\"y\\z\n\u{1}").n("b", -3).b("c", true).r("d", None).r("e", Some("[1,2]"));
            j.key("f").obj().strs("g", &["1", "2"]).end();
            j.key("h").arr().num(1).float(0.5).null().end_arr();
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], "x\"y\\z\n\u{1}");
        assert_eq!(v["b"], -3);
        assert_eq!(v["c"], true);
        assert!(v["d"].is_null());
        assert_eq!(v["e"][1], 2);
        assert_eq!(v["f"]["g"][1], "2");
        assert_eq!(v["h"][1], 0.5);
    }
}
