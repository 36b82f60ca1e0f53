//! A zero-copy JSON scanner that reads only what the rules need.
//!
//! Building a `serde_json::Value` per event allocates a map per object and a
//! `String` per key and value; the rules look at a few dozen fields of a
//! record that has hundreds. So the engine compiles the set of field paths its
//! rules use into a [`PathTrie`], and [`extract`] walks the JSON text once:
//! keys on a wanted path descend, every other value is skipped without
//! allocating (strings are skipped with `memchr`). The scanner validates the
//! JSON grammar as it goes, so malformed input is an error, not a silent
//! partial match. Values are recorded as byte ranges into the input; only
//! strings with escapes on wanted paths are unescaped (into a scratch buffer).

use std::fmt;

use crate::doc::{ValKind, Values};
use crate::escape::{unescape_into, unescape_to_string};

/// Nesting deeper than this is rejected (it bounds recursion).
const MAX_DEPTH: usize = 128;

/// A JSON syntax error with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for JsonError {}

/// Field paths compiled into a trie over path segments.
///
/// Node 0 is the root (the top-level object). A node may be a field itself,
/// have children, or both (`a` and `a.b` are both used). A `*` segment
/// (`Condition.*.aws:PrincipalOrgID`) matches any one key: the trie is built
/// so that every key leads to exactly one node (a key with an exact child
/// also carries the wildcard paths), so the scanner never backtracks.
#[derive(Debug, Clone)]
pub struct PathTrie {
    nodes: Vec<Node>,
    paths: Vec<(String, u32)>,
}

impl Default for PathTrie {
    fn default() -> Self {
        PathTrie::new()
    }
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Children (key, node).
    children: Vec<(Box<[u8]>, u32)>,
    /// Open-addressing hash table over `children`: (low 32 bits of the key
    /// hash, index into `children`), [`EMPTY`] for a free slot; a power of
    /// two at least twice as long as `children`, indexed by the hash's top
    /// `bits` bits. A key lookup per object key on a wanted path is the
    /// scanner's hottest step; one hash and one compare beat a binary search
    /// of memcmp calls.
    table: Box<[(u32, u32)]>,
    bits: u32,
    /// The child for a `*` segment: any key that is not in `children`.
    any: Option<u32>,
    field: Option<u32>,
    /// Further fields ending here (a wildcard path meeting an exact one).
    more: Box<[u32]>,
    /// A rule path marks this key `[]` (`Statement[]`): each element of an
    /// array here (or the one object) gets its own element id.
    scope: bool,
}

const EMPTY: u32 = u32::MAX;

impl Node {
    #[inline]
    fn has_children(&self) -> bool {
        !self.children.is_empty() || self.any.is_some()
    }

    fn build_table(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let bits = (self.children.len() * 2).next_power_of_two().trailing_zeros().max(1);
        let mut table = vec![(0u32, EMPTY); 1 << bits];
        let mask = table.len() - 1;
        for (ci, (k, _)) in self.children.iter().enumerate() {
            let h = key_hash(k);
            let mut i = (h >> (64 - bits)) as usize;
            while table[i].1 != EMPTY {
                i = (i + 1) & mask;
            }
            table[i] = (h as u32, ci as u32);
        }
        self.table = table.into();
        self.bits = bits;
    }

    #[inline]
    fn exact_child(&self, key: &[u8]) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let h = key_hash(key);
        let mask = self.table.len() - 1;
        let mut i = (h >> (64 - self.bits)) as usize;
        loop {
            let (tag, ci) = self.table[i];
            if ci == EMPTY {
                return None;
            }
            if tag == h as u32 {
                let (k, c) = &self.children[ci as usize];
                if **k == *key {
                    return Some(*c);
                }
            }
            i = (i + 1) & mask;
        }
    }
}

/// FxHash (rustc's) over 8-byte words: keys are short field names.
#[inline]
fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut h = key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    // The last 1-7 bytes as one word from (possibly overlapping) loads, not
    // through a copy into a buffer (a store-forwarding stall per key).
    let r = chunks.remainder();
    let w = match r.len() {
        0 => return h,
        1..=3 => u64::from(r[0]) | u64::from(r[r.len() / 2]) << 8 | u64::from(r[r.len() - 1]) << 16,
        n => {
            let lo = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            let hi = u32::from_le_bytes([r[n - 4], r[n - 3], r[n - 2], r[n - 1]]);
            u64::from(lo) | u64::from(hi) << 32
        }
    };
    (h.rotate_left(5) ^ w).wrapping_mul(K)
}

type Entry<'a> = (&'a [&'a str], u32);

impl PathTrie {
    pub fn new() -> Self {
        PathTrie { nodes: vec![Node::default()], paths: Vec::new() }
    }

    /// Adds a dotted path for field id `field` (rebuilds the trie: rule
    /// sets have at most a few hundred paths, and this runs at load only).
    pub fn insert(&mut self, path: &str, field: u32) {
        self.paths.push((path.to_string(), field));
        let split: Vec<Vec<&str>> = self.paths.iter().map(|(p, _)| p.split('.').collect()).collect();
        let entries: Vec<Entry<'_>> = split.iter().zip(&self.paths).map(|(s, (_, f))| (&s[..], *f)).collect();
        let mut nodes = Vec::new();
        build(&mut nodes, entries, false);
        self.nodes = nodes;
    }

    #[inline]
    fn child(&self, node: usize, key: &[u8]) -> Option<usize> {
        let n = &self.nodes[node];
        match n.exact_child(key) {
            Some(c) => Some(c as usize),
            None => n.any.map(|a| a as usize),
        }
    }

    /// Walks a key that contains dots (`"a.b"` as one JSON key) segment by
    /// segment, so a flattened key matches the same rule path as nesting.
    fn child_dotted(&self, mut node: usize, key: &[u8]) -> Option<usize> {
        for seg in key.split(|b| *b == b'.') {
            node = self.child(node, seg)?;
        }
        Some(node)
    }
}

/// Builds the node for `entries` (remaining segments, field) and returns its index.
fn build(nodes: &mut Vec<Node>, entries: Vec<Entry<'_>>, scope: bool) -> u32 {
    let id = nodes.len();
    nodes.push(Node::default());
    let mut fields = Vec::new();
    let mut exact: std::collections::BTreeMap<&str, (Vec<Entry<'_>>, bool)> = std::collections::BTreeMap::new();
    let mut wild = Vec::new();
    let mut wild_scope = false;
    for (segs, f) in entries {
        let Some((seg, rest)) = segs.split_first() else {
            fields.push(f);
            continue;
        };
        let (name, scoped) = match seg.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (*seg, false),
        };
        if name == "*" {
            wild.push((rest, f));
            wild_scope |= scoped;
        } else {
            let e = exact.entry(name).or_default();
            e.0.push((rest, f));
            e.1 |= scoped;
        }
    }
    fields.sort_unstable();
    fields.dedup();
    let mut children = Vec::with_capacity(exact.len());
    for (seg, (mut es, scoped)) in exact {
        es.extend(wild.iter().copied());
        let c = build(nodes, es, scoped || wild_scope);
        children.push((Box::<[u8]>::from(seg.as_bytes()), c));
    }
    children.sort_by(|(a, _), (b, _)| cmp_key(a, b));
    let any = (!wild.is_empty()).then(|| build(nodes, wild, wild_scope));
    let mut node = Node {
        children,
        table: Box::default(),
        bits: 0,
        any,
        field: fields.first().copied(),
        more: fields.get(1..).unwrap_or(&[]).into(),
        scope,
    };
    node.build_table();
    nodes[id] = node;
    id as u32
}

#[inline]
fn cmp_key(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Reads `text` (one JSON object) and records into `out` every value found at
/// a path of `trie`. With `all_strings`, every string value anywhere is also
/// recorded under [`Values::KEYWORDS`] (for field-less keyword searches).
pub fn extract(text: &str, trie: &PathTrie, all_strings: bool, out: &mut Values) -> Result<(), JsonError> {
    let mut sc = Scanner { b: text.as_bytes(), pos: 0, trie, all_strings, copy: false, out };
    sc.ws();
    match sc.peek() {
        Some(b'{') => {}
        Some(_) => return Err(sc.err("expected a JSON object")),
        None => return Err(sc.err("empty input")),
    }
    sc.value(Some(0), 0)?;
    sc.ws();
    if sc.pos != sc.b.len() {
        return Err(sc.err("trailing characters after the JSON value"));
    }
    Ok(())
}

struct Scanner<'t, 'o> {
    b: &'t [u8],
    pos: usize,
    trie: &'t PathTrie,
    all_strings: bool,
    /// `b` is not the event text (JSON read out of a string): values are
    /// copied into the scratch buffer instead of pointing into `b`.
    copy: bool,
    out: &'o mut Values,
}

impl Scanner<'_, '_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError { offset: self.pos, reason }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c == b' ' || c == b'\n' || c == b'\r' || c == b'\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Reads a value at trie node `node` (None: not on any wanted path).
    fn value(&mut self, node: Option<usize>, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        // At a scoped key each element (the elements of an array there pass
        // through here one by one) is read under an element id of its own.
        if node.is_some_and(|n| self.trie.nodes[n].scope) && self.peek() != Some(b'[') {
            let outer = self.out.cur_elem;
            self.out.last_elem += 1;
            self.out.cur_elem = self.out.last_elem;
            let r = self.value_at(node, depth);
            self.out.cur_elem = outer;
            return r;
        }
        self.value_at(node, depth)
    }

    fn value_at(&mut self, node: Option<usize>, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => {
                let at = self.pos;
                self.mark(node, ValKind::Object, at, at, false)?;
                let has_children = node.is_some_and(|n| self.trie.nodes[n].has_children());
                if has_children || self.all_strings {
                    self.object(if has_children { node } else { None }, depth)
                } else {
                    self.skip_container()
                }
            }
            Some(b'[') => {
                let at = self.pos;
                self.mark(node, ValKind::Array, at, at, false)?;
                if node.is_some() || self.all_strings {
                    self.array(node, depth)
                } else {
                    self.skip_container()
                }
            }
            Some(b'"') => {
                let start = self.pos + 1;
                let escaped = self.string()?;
                let end = self.pos - 1;
                self.mark(node, ValKind::Str, start, end, escaped)?;
                if self.all_strings {
                    self.push_str(Values::KEYWORDS, start, end, escaped)?;
                }
                match node {
                    Some(n) if self.trie.nodes[n].has_children() => self.descend(n, start, end, escaped, depth),
                    _ => Ok(()),
                }
            }
            Some(b't') => self.literal(b"true", node, ValKind::True),
            Some(b'f') => self.literal(b"false", node, ValKind::False),
            Some(b'n') => self.literal(b"null", node, ValKind::Null),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.pos;
                self.number()?;
                let end = self.pos;
                self.mark(node, ValKind::Num, start, end, false)
            }
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    /// Records a value for every field that ends at `node`.
    #[inline]
    fn mark(
        &mut self,
        node: Option<usize>,
        kind: ValKind,
        start: usize,
        end: usize,
        escaped: bool,
    ) -> Result<(), JsonError> {
        let Some(n) = node else {
            return Ok(());
        };
        let trie = self.trie;
        let Some(f) = trie.nodes[n].field else {
            return Ok(());
        };
        self.record(f, kind, start, end, escaped)?;
        for &f in trie.nodes[n].more.iter() {
            self.record(f, kind, start, end, escaped)?;
        }
        Ok(())
    }

    #[inline]
    fn record(&mut self, f: u32, kind: ValKind, start: usize, end: usize, escaped: bool) -> Result<(), JsonError> {
        if kind == ValKind::Str {
            return self.push_str(f, start, end, escaped);
        }
        if self.copy && start != end {
            let text = std::str::from_utf8(&self.b[start..end])
                .map_err(|_| JsonError { offset: start, reason: "invalid UTF-8" })?;
            self.out.push_copy(f, kind, text);
        } else {
            self.out.push(f, kind, start as u32, end as u32);
        }
        Ok(())
    }

    /// A string on a path that goes on below it holds JSON (IAM policy
    /// documents are strings in CloudTrail `requestParameters`): read it as
    /// if it were nested there. A string that is not one whole JSON object
    /// or array stays just a string.
    fn descend(&mut self, node: usize, start: usize, end: usize, escaped: bool, depth: usize) -> Result<(), JsonError> {
        let raw = &self.b[start..end];
        let unescaped;
        let inner: &str = if escaped {
            let mut s = String::with_capacity(raw.len());
            if unescape_into(raw, &mut s).is_err() {
                return Ok(());
            }
            unescaped = s;
            &unescaped
        } else {
            match std::str::from_utf8(raw) {
                Ok(s) => s,
                Err(_) => return Ok(()),
            }
        };
        let open = match inner.trim_start_matches([' ', '\n', '\r', '\t']).as_bytes().first() {
            Some(c @ (b'{' | b'[')) => *c,
            _ => return Ok(()),
        };
        let mut sub = Scanner {
            b: inner.as_bytes(),
            pos: 0,
            trie: self.trie,
            all_strings: false,
            copy: true,
            out: &mut *self.out,
        };
        // Check the grammar first, so a string that only looks like JSON
        // leaves no partial values behind.
        sub.ws();
        let whole = sub.skip_value(depth + 1).is_ok() && {
            sub.ws();
            sub.pos == sub.b.len()
        };
        if !whole {
            return Ok(());
        }
        sub.pos = 0;
        sub.ws();
        if open == b'{' {
            sub.object(Some(node), depth + 1)
        } else {
            sub.array(Some(node), depth + 1)
        }
    }

    fn push_str(&mut self, f: u32, start: usize, end: usize, escaped: bool) -> Result<(), JsonError> {
        if escaped {
            let raw = &self.b[start..end];
            let at = start;
            self.out.push_unescaped(f, raw).map_err(|reason| JsonError { offset: at, reason })
        } else if self.copy {
            let text = std::str::from_utf8(&self.b[start..end])
                .map_err(|_| JsonError { offset: start, reason: "invalid UTF-8" })?;
            self.out.push_copy(f, ValKind::Str, text);
            Ok(())
        } else {
            self.out.push(f, ValKind::Str, start as u32, end as u32);
            Ok(())
        }
    }

    fn literal(&mut self, lit: &'static [u8], node: Option<usize>, kind: ValKind) -> Result<(), JsonError> {
        if self.b[self.pos..].starts_with(lit) {
            let start = self.pos;
            self.pos += lit.len();
            let end = self.pos;
            self.mark(node, kind, start, end, false)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let b = self.b;
        let mut p = self.pos;
        if b.get(p) == Some(&b'-') {
            p += 1;
        }
        let int_start = p;
        while p < b.len() && b[p].is_ascii_digit() {
            p += 1;
        }
        if p == int_start || (b[int_start] == b'0' && p - int_start > 1) {
            self.pos = p;
            return Err(self.err("invalid number"));
        }
        if b.get(p) == Some(&b'.') {
            p += 1;
            let s = p;
            while p < b.len() && b[p].is_ascii_digit() {
                p += 1;
            }
            if p == s {
                self.pos = p;
                return Err(self.err("invalid number"));
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            p += 1;
            if matches!(b.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            let s = p;
            while p < b.len() && b[p].is_ascii_digit() {
                p += 1;
            }
            if p == s {
                self.pos = p;
                return Err(self.err("invalid number"));
            }
        }
        self.pos = p;
        Ok(())
    }

    /// Skips a string starting at `"`; returns whether it had escapes.
    #[inline]
    fn string(&mut self) -> Result<bool, JsonError> {
        let b = self.b;
        let mut p = self.pos + 1;
        let mut escaped = false;
        loop {
            match memchr::memchr2(b'"', b'\\', &b[p..]) {
                None => {
                    self.pos = b.len();
                    return Err(self.err("unterminated string"));
                }
                Some(i) => {
                    p += i;
                    if b[p] == b'"' {
                        self.pos = p + 1;
                        return Ok(escaped);
                    }
                    escaped = true;
                    // Skip the escaped character; \uXXXX is checked when unescaped.
                    p += 2;
                    if p > b.len() {
                        self.pos = b.len();
                        return Err(self.err("unterminated string"));
                    }
                }
            }
        }
    }

    fn object(&mut self, node: Option<usize>, depth: usize) -> Result<(), JsonError> {
        self.pos += 1; // {
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected an object key"));
            }
            let kstart = self.pos + 1;
            let escaped = self.string()?;
            let kend = self.pos - 1;
            let child = match node {
                None => None,
                Some(n) => {
                    if escaped {
                        let key = unescape_to_string(&self.b[kstart..kend])
                            .map_err(|r| JsonError { offset: kstart, reason: r })?;
                        self.lookup(n, key.as_bytes())
                    } else {
                        let key = &self.b[kstart..kend];
                        self.lookup(n, key)
                    }
                }
            };
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after object key"));
            }
            self.pos += 1;
            self.ws();
            match child {
                Some(c) => self.value(Some(c), depth + 1)?,
                None if self.all_strings => self.value(None, depth + 1)?,
                None => self.skip_value(depth + 1)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}' in object")),
            }
        }
    }

    #[inline]
    fn lookup(&self, node: usize, key: &[u8]) -> Option<usize> {
        match self.trie.child(node, key) {
            Some(c) => Some(c),
            None if memchr::memchr(b'.', key).is_some() => self.trie.child_dotted(node, key),
            None => None,
        }
    }

    /// An array on a wanted path: each element stands at the same node
    /// (Sigma matches any element where a path crosses an array).
    fn array(&mut self, node: Option<usize>, depth: usize) -> Result<(), JsonError> {
        self.pos += 1; // [
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(node, depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or ']' in array")),
            }
        }
    }

    #[inline]
    fn skip_value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') | Some(b'[') => {
                if depth > MAX_DEPTH {
                    return Err(self.err("nesting too deep"));
                }
                self.skip_container()
            }
            _ => self.value(None, depth),
        }
    }

    /// Skips an object or array, checking its grammar with an explicit
    /// stack of open brackets (no recursion, no allocation below 64 levels).
    fn skip_container(&mut self) -> Result<(), JsonError> {
        // Expected next token: after '{' or ',' in object → key; after key → ':'.
        let mut stack: [u8; MAX_DEPTH + 1] = [0; MAX_DEPTH + 1];
        let mut depth = 0usize;
        let b = self.b;
        loop {
            // At the start of a value.
            self.ws();
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    if depth >= MAX_DEPTH {
                        return Err(self.err("nesting too deep"));
                    }
                    stack[depth] = c;
                    depth += 1;
                    self.pos += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        depth -= 1;
                    } else {
                        if c == b'{' {
                            self.key_colon()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true", None, ValKind::True)?,
                Some(b'f') => self.literal(b"false", None, ValKind::False)?,
                Some(b'n') => self.literal(b"null", None, ValKind::Null)?,
                Some(c) if c == b'-' || c.is_ascii_digit() => self.number()?,
                Some(_) => return Err(self.err("unexpected character")),
                None => return Err(self.err("unexpected end of input")),
            }
            // After a value: close containers or move to the next element.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                self.ws();
                let open = stack[depth - 1];
                match b.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        if open == b'{' {
                            self.ws();
                            self.key_colon()?;
                        }
                        break;
                    }
                    Some(b'}') if open == b'{' => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    Some(b']') if open == b'[' => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    _ => return Err(self.err("expected ',' or a closing bracket")),
                }
            }
        }
    }

    #[inline]
    fn key_colon(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected an object key"));
        }
        self.string()?;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.err("expected ':' after object key"));
        }
        self.pos += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, paths: &[&str], all: bool) -> Result<Vec<(u32, String)>, JsonError> {
        let mut trie = PathTrie::new();
        for (i, p) in paths.iter().enumerate() {
            trie.insert(p, i as u32);
        }
        let mut vals = Values::new(paths.len());
        vals.reset(text);
        extract(text, &trie, all, &mut vals)?;
        let mut out = Vec::new();
        for f in 0..paths.len() as u32 {
            for v in vals.get(f) {
                out.push((f, format!("{:?}:{}", v.kind, vals.text(text, v))));
            }
        }
        for v in vals.get(Values::KEYWORDS) {
            out.push((Values::KEYWORDS, vals.text(text, v).to_string()));
        }
        Ok(out)
    }

    #[test]
    fn extracts_nested_paths_and_arrays() {
        let text = r#"{"a":{"b":"x","c":[1,{"d":"y"},{"d":"z\n"}]},"e":true,"f":null,"g":[],"h":{"i":2}}"#;
        let got = run(text, &["a.b", "a.c.d", "e", "f", "g", "h", "a.c"], false).unwrap();
        assert!(got.contains(&(0, "Str:x".into())));
        assert!(got.contains(&(1, "Str:y".into())));
        assert!(got.contains(&(1, "Owned:z\n".into())));
        assert!(got.contains(&(2, "True:true".into())));
        assert!(got.contains(&(3, "Null:null".into())));
        assert!(got.iter().any(|(f, s)| *f == 4 && s.starts_with("Array")));
        assert!(got.iter().any(|(f, s)| *f == 5 && s.starts_with("Object")));
        // Scalars inside an array at a field are values of that field.
        assert!(got.contains(&(6, "Num:1".into())));
    }

    #[test]
    fn dotted_keys_match_nested_paths() {
        let got = run(r#"{"a.b":"v"}"#, &["a.b"], false).unwrap();
        assert_eq!(got, vec![(0, "Str:v".to_string())]);
    }

    #[test]
    fn collects_all_strings_for_keywords() {
        let got = run(r#"{"a":{"b":["x","y"]},"c":"z","d":1}"#, &[], true).unwrap();
        let kw: Vec<_> = got.into_iter().map(|(_, s)| s).collect();
        assert_eq!(kw, vec!["x", "y", "z"]);
    }

    #[test]
    fn unescapes_strings_and_keys() {
        let got = run(r#"{"k\u0065y":"a\"b\u00e9\ud83d\ude00"}"#, &["key"], false).unwrap();
        assert_eq!(got, vec![(0, "Owned:a\"bé😀".to_string())]);
    }

    #[test]
    fn rejects_malformed_json_anywhere() {
        for bad in [
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"skip":{"x":[1,2,}}"#,
            r#"{"skip":{"x" 1}}"#,
            r#"{"skip":[1 2]}"#,
            r#"{"skip":tru}"#,
            r#"{"skip":01}"#,
            r#"{"skip":"abc}"#,
            r#"{"a":1} x"#,
            r#"[1]"#,
            "",
            r#"{"skip":{"x":1]}"#,
        ] {
            assert!(run(bad, &["a"], false).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn accepts_valid_json_with_skipped_parts() {
        let text = r#" { "skip" : { "x" : [ 1 , -2.5e3 , "s\"" , { } , [ ] , null , true , false ] } , "a" : "v" } "#;
        assert_eq!(run(text, &["a"], false).unwrap(), vec![(0, "Str:v".to_string())]);
    }

    #[test]
    fn wildcard_segments_match_any_key_and_meet_exact_paths() {
        let text = r#"{"c":{"StringEquals":{"k":"a"},"StringLike":{"k":"b","j":"x"},"Other":{"j":"y"}}}"#;
        let got = run(text, &["c.*.k", "c.StringLike.j", "c.*"], false).unwrap();
        assert!(got.contains(&(0, "Str:a".into())));
        assert!(got.contains(&(0, "Str:b".into())));
        // The exact path sees its key; the wildcard path is not shadowed by it.
        assert_eq!(got.iter().filter(|(f, _)| *f == 1).count(), 1);
        assert!(got.contains(&(1, "Str:x".into())));
        assert_eq!(got.iter().filter(|(f, s)| *f == 2 && s.starts_with("Object")).count(), 3);
    }

    #[test]
    fn json_held_in_a_string_is_read_where_the_path_goes_on() {
        let policy = r#"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Condition\":{\"StringEquals\":{\"aws:PrincipalOrgID\":\"o-abc\"}},\"N\":3}]}"#;
        let text = format!(r#"{{"rp":{{"policyText":"{policy}","other":"{{\"Effect\":\"Deny\"}}"}}}}"#);
        let got = run(
            &text,
            &[
                "rp.policyText.Statement.Effect",
                "rp.policyText.Statement.Principal",
                "rp.policyText.Statement.Condition.*.aws:PrincipalOrgID",
                "rp.policyText.Statement.N",
                "rp.policyText",
            ],
            false,
        )
        .unwrap();
        assert!(got.contains(&(0, "Str:Allow".into())), "{got:?}");
        assert!(got.contains(&(1, "Str:*".into())));
        assert!(got.contains(&(2, "Str:o-abc".into())));
        assert!(got.contains(&(3, "Num:3".into())));
        // The string itself is still the value of its own field.
        assert!(got.iter().any(|(f, s)| *f == 4 && s.starts_with("Owned:{\"Version\"")));
        // Only the wanted path descends: `other` holds JSON too, but no rule reads into it.
        assert!(!got.iter().any(|(_, s)| s.contains("Deny")));
    }

    #[test]
    fn strings_that_are_not_whole_json_stay_strings() {
        for inner in [r#"{\"a\":1"#, r#"{\"a\":1} tail"#, "not json", r#"[1,]"#, ""] {
            let text = format!(r#"{{"p":"{inner}"}}"#);
            let got = run(&text, &["p.a", "p"], false).unwrap();
            assert_eq!(got.iter().filter(|(f, _)| *f == 0).count(), 0, "{inner}");
            assert_eq!(got.iter().filter(|(f, _)| *f == 1).count(), 1, "{inner}");
        }
        // Unescaped JSON in a string (no quotes inside, so no escapes) is read too.
        let got = run(r#"{"p":"[1, 2]"}"#, &["p.x", "p"], false).unwrap();
        assert!(got.contains(&(1, "Num:1".into())) && got.contains(&(1, "Num:2".into())), "{got:?}");
    }

    #[test]
    fn json_in_strings_nests_and_stays_bounded() {
        // A string holding a string holding JSON.
        let text = r#"{"a":"{\"b\":\"{\\\"c\\\":\\\"deep\\\"}\"}"}"#;
        let got = run(text, &["a.b.c"], false).unwrap();
        assert_eq!(got, vec![(0, "Str:deep".to_string())]);
        // Malformed JSON outside the string is still an error.
        assert!(run(r#"{"a":"{\"b\":1}", }"#, &["a.b"], false).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(run(&deep, &["a"], false).is_err());
        assert!(run(&deep, &["b"], false).is_err());
    }
}
