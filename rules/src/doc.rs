//! The document the rules see: the values found at the fields the rule set
//! uses, read from one event's JSON text by [`crate::json::extract`].
//!
//! [`Values`] is reused from event to event (clearing is O(fields)), so the
//! steady state allocates nothing. Values are byte ranges into the event text,
//! except unescaped strings, which live in a scratch buffer.

/// What kind of JSON value was found at a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValKind {
    /// A string without escapes: the range is inside the event text.
    Str,
    /// A string that had escapes: the range is inside the scratch buffer.
    Owned,
    Num,
    True,
    False,
    Null,
    /// An object or array at the field itself (for `exists`); no text.
    Object,
    Array,
}

impl ValKind {
    /// Scalars have a text form that string matchers compare against.
    pub fn is_scalar(self) -> bool {
        !matches!(self, ValKind::Object | ValKind::Array | ValKind::Null)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Val {
    pub kind: ValKind,
    /// The text is in the scratch buffer (unescaped strings, and every value
    /// read from JSON held inside a string, e.g. an IAM policy document).
    in_scratch: bool,
    /// The element of the innermost scoped array (`Statement[]`) the value
    /// is in; 0 outside any. Ties the fields of a scoped selection to one
    /// element (one policy statement).
    pub elem: u32,
    start: u32,
    end: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// Per-field value lists for one event.
#[derive(Debug, Default)]
pub struct Values {
    head: Vec<u32>,
    tail: Vec<u32>,
    vals: Vec<Val>,
    scratch: String,
    /// Set by the scanner: the scoped element values are being read in.
    pub(crate) cur_elem: u32,
    /// The last element id given out in this event.
    pub(crate) last_elem: u32,
}

impl Values {
    /// The pseudo-field under which every string of the event is recorded
    /// when a rule has keyword (field-less) searches.
    pub const KEYWORDS: u32 = u32::MAX - 1;

    pub fn new(fields: usize) -> Self {
        Values {
            head: vec![NONE; fields + 1],
            tail: vec![NONE; fields + 1],
            vals: Vec::with_capacity(64),
            scratch: String::new(),
            cur_elem: 0,
            last_elem: 0,
        }
    }

    /// Clears for the next event (`_text` is that event; kept for symmetry
    /// with callers that size buffers from it).
    pub fn reset(&mut self, _text: &str) {
        self.head.fill(NONE);
        self.tail.fill(NONE);
        self.vals.clear();
        self.scratch.clear();
        self.cur_elem = 0;
        self.last_elem = 0;
    }

    #[inline]
    fn slot(&self, field: u32) -> usize {
        if field == Self::KEYWORDS {
            self.head.len() - 1
        } else {
            field as usize
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, field: u32, kind: ValKind, start: u32, end: u32) {
        self.link(field, Val { kind, in_scratch: false, elem: self.cur_elem, start, end, next: NONE });
    }

    #[inline]
    fn link(&mut self, field: u32, val: Val) {
        let slot = self.slot(field);
        let idx = self.vals.len() as u32;
        self.vals.push(val);
        if self.tail[slot] == NONE {
            self.head[slot] = idx;
        } else {
            let t = self.tail[slot] as usize;
            self.vals[t].next = idx;
        }
        self.tail[slot] = idx;
    }

    pub(crate) fn push_unescaped(&mut self, field: u32, raw: &[u8]) -> Result<(), &'static str> {
        let start = self.scratch.len() as u32;
        crate::escape::unescape_into(raw, &mut self.scratch)?;
        let end = self.scratch.len() as u32;
        self.link(field, Val { kind: ValKind::Owned, in_scratch: true, elem: self.cur_elem, start, end, next: NONE });
        Ok(())
    }

    /// Records a value whose text (`raw`, already unescaped) is not part of
    /// the event text: it is copied into the scratch buffer.
    pub(crate) fn push_copy(&mut self, field: u32, kind: ValKind, raw: &str) {
        let start = self.scratch.len() as u32;
        self.scratch.push_str(raw);
        let end = self.scratch.len() as u32;
        self.link(field, Val { kind, in_scratch: true, elem: self.cur_elem, start, end, next: NONE });
    }

    /// The values found at `field`, in document order.
    #[inline]
    pub fn get(&self, field: u32) -> ValIter<'_> {
        ValIter { vals: &self.vals, at: self.head[self.slot(field)] }
    }

    #[inline]
    pub fn has(&self, field: u32) -> bool {
        self.head[self.slot(field)] != NONE
    }

    /// The text form of a scalar value (`""` for objects and arrays).
    #[inline]
    pub fn text<'a>(&'a self, src: &'a str, v: &Val) -> &'a str {
        match v.kind {
            ValKind::Object | ValKind::Array => "",
            _ if v.in_scratch => &self.scratch[v.start as usize..v.end as usize],
            _ => &src[v.start as usize..v.end as usize],
        }
    }
}

#[derive(Clone)]
pub struct ValIter<'a> {
    vals: &'a [Val],
    at: u32,
}

impl<'a> Iterator for ValIter<'a> {
    type Item = &'a Val;

    #[inline]
    fn next(&mut self) -> Option<&'a Val> {
        if self.at == NONE {
            return None;
        }
        let v = &self.vals[self.at as usize];
        self.at = v.next;
        Some(v)
    }
}

/// One event as the matchers see it: its text and the values read from it.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    pub src: &'a str,
    pub vals: &'a Values,
}

impl<'a> Event<'a> {
    /// Text of every scalar value at `field`.
    pub fn texts(&self, field: u32) -> impl Iterator<Item = &'a str> + 'a {
        let src = self.src;
        let vals = self.vals;
        vals.get(field).filter(|v| v.kind.is_scalar()).map(move |v| vals.text(src, v))
    }

    /// Text of the first scalar value at `field`.
    pub fn first(&self, field: u32) -> Option<&'a str> {
        self.texts(field).next()
    }
}
