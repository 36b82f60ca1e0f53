//! The few OTLP protobuf messages trailwatch sends and reads, encoded by hand.
//!
//! Why protobuf and not OTLP/JSON: binary protobuf is the OTLP/HTTP default
//! that every collector and backend accepts (`application/x-protobuf`),
//! the messages are small and fixed, and a writer for them is ~150 lines
//! with no code generator, no `prost` and no JSON special cases (hex ids,
//! int64 as strings). Fields are written in field-number order with proto3
//! defaults left out, as protobuf's own encoders do, so the output is
//! byte-for-byte what the official generated classes produce (a unit test
//! compares against bytes from them).
//!
//! Messages (opentelemetry-proto, `collector/trace/v1` and `trace/v1`):
//! `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }`,
//! `ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }`,
//! `ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }`,
//! `Span` (fields 1–16 below), `KeyValue`, `AnyValue`, `Status`; and the
//! response `ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1 }`.

use super::layer::{SpanRecord, Status, Value};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Span.kind: every trailwatch span is internal work.
const SPAN_KIND_INTERNAL: u64 = 1;
const STATUS_CODE_ERROR: u64 = 2;
/// Span.flags: W3C sampled bit, plus "is_remote is known" (bit 8): our
/// parents are always in-process (bit 9, is_remote, stays 0).
const FLAGS_SAMPLED_LOCAL_PARENT: u32 = 0x101;

/// A protobuf writer over one growing buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v);
        }
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.tag(field, FIXED32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.tag(field, LEN);
            self.varint(b.len() as u64);
            self.buf.extend_from_slice(b);
        }
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A nested message: written in place, then its length is put in front
    /// (one move of the body; no temporary buffer).
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        self.tag(field, LEN);
        let start = self.buf.len();
        body(self);
        let len = self.buf.len() - start;
        let mut prefix = Writer::default();
        prefix.varint(len as u64);
        self.buf.extend_from_slice(&prefix.buf);
        self.buf[start..].rotate_right(prefix.buf.len());
    }

    /// `KeyValue { string key = 1; AnyValue value = 2 }`. The AnyValue is a
    /// oneof: its field is written even when it holds the default (0, "").
    fn key_value(&mut self, field: u32, key: &str, value: &Value) {
        self.message(field, |w| {
            w.string(1, key);
            w.message(2, |w| match value {
                Value::Str(s) => {
                    w.tag(1, LEN);
                    w.varint(s.len() as u64);
                    w.buf.extend_from_slice(s.as_bytes());
                }
                Value::Bool(b) => {
                    w.tag(2, VARINT);
                    w.varint(u64::from(*b));
                }
                Value::Int(i) => {
                    w.tag(3, VARINT);
                    w.varint(*i as u64);
                }
                Value::Double(d) => {
                    w.tag(4, FIXED64);
                    w.buf.extend_from_slice(&d.to_bits().to_le_bytes());
                }
            });
        });
    }
}

/// The fixed head of every request: `Resource` and `InstrumentationScope`
/// (each already encoded as a message body).
pub struct Preamble {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Preamble {
    pub fn new(resource: &[(String, Value)], scope_name: &str, scope_version: &str) -> Preamble {
        let mut r = Writer::default();
        for (k, v) in resource {
            r.key_value(1, k, v);
        }
        let mut s = Writer::default();
        s.string(1, scope_name);
        s.string(2, scope_version);
        Preamble { resource: r.buf, scope: s.buf }
    }
}

/// `ExportTraceServiceRequest` with one resource and one scope.
pub fn encode_request(pre: &Preamble, spans: &[SpanRecord]) -> Vec<u8> {
    let mut w = Writer { buf: Vec::with_capacity(256 + spans.len() * 256) };
    w.message(1, |w| {
        w.message(1, |w| w.buf.extend_from_slice(&pre.resource));
        w.message(2, |w| {
            w.message(1, |w| w.buf.extend_from_slice(&pre.scope));
            for s in spans {
                w.message(2, |w| span(w, s));
            }
        });
    });
    w.buf
}

fn span(w: &mut Writer, s: &SpanRecord) {
    w.bytes(1, &s.trace_id);
    w.bytes(2, &s.span_id);
    if let Some(p) = &s.parent_span_id {
        w.bytes(4, p);
    }
    w.string(5, s.name);
    w.uint(6, SPAN_KIND_INTERNAL);
    w.fixed64(7, s.start_ns);
    w.fixed64(8, s.end_ns);
    for (k, v) in &s.attributes {
        w.key_value(9, k, v);
    }
    w.uint(10, u64::from(s.dropped_attributes));
    for e in &s.events {
        w.message(11, |w| {
            w.fixed64(1, e.time_ns);
            w.string(2, &e.name);
            for (k, v) in &e.attributes {
                w.key_value(3, k, v);
            }
            w.uint(4, u64::from(e.dropped_attributes));
        });
    }
    w.uint(12, u64::from(s.dropped_events));
    if let Status::Error(msg) = &s.status {
        w.message(15, |w| {
            w.string(2, msg);
            w.uint(3, STATUS_CODE_ERROR);
        });
    }
    w.fixed32(16, FLAGS_SAMPLED_LOCAL_PARENT);
}

/// `ExportTracePartialSuccess`: spans the receiver accepted the request
/// with but rejected (the OTLP spec's partial success).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    pub rejected_spans: i64,
    pub error_message: String,
}

/// Reads `ExportTraceServiceResponse`; None when it is not valid protobuf
/// (a receiver may answer an empty or a JSON body: nothing was rejected).
pub fn decode_response(body: &[u8]) -> Option<PartialSuccess> {
    let mut out = PartialSuccess::default();
    for (field, v) in Fields::new(body) {
        if let (1, Field::Len(ps)) = (field, v?) {
            for (f, v) in Fields::new(ps) {
                match (f, v?) {
                    (1, Field::Varint(n)) => out.rejected_spans = n as i64,
                    (2, Field::Len(m)) => out.error_message = String::from_utf8_lossy(m).into_owned(),
                    _ => {}
                }
            }
        }
    }
    Some(out)
}

/// The `message` of a `google.rpc.Status` error body, if it is one.
pub fn decode_status_message(body: &[u8]) -> Option<String> {
    let mut msg = None;
    for (field, v) in Fields::new(body) {
        if let (2, Field::Len(m)) = (field, v?) {
            msg = Some(String::from_utf8_lossy(m).into_owned());
        }
    }
    msg
}

enum Field<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// Top-level fields of a message; an item is None where the bytes are not
/// protobuf (and iteration stops there).
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(b: &'a [u8]) -> Self {
        Fields { rest: b, failed: false }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.rest.split_first()?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Some(a)
    }

    fn field(&mut self) -> Option<(u32, Field<'a>)> {
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let v = match (key & 7) as u8 {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => self.take(8).map(|_| Field::Fixed)?,
            LEN => {
                let n = usize::try_from(self.varint()?).ok()?;
                Field::Len(self.take(n)?)
            }
            FIXED32 => self.take(4).map(|_| Field::Fixed)?,
            _ => return None,
        };
        Some((field, v))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Option<Field<'a>>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match self.field() {
            Some((f, v)) => Some((f, Some(v))),
            None => {
                self.failed = true;
                Some((0, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::layer::SpanEvent;

    /// Serialized by the official generated classes (Python
    /// opentelemetry-proto 1.45, `SerializeToString`) from the same spans.
    const GOLDEN: &str = "0aec020a1e0a1c0a0c736572766963652e6e616d65120c0a0a747261696c776174636812c9020a130a0a747261696c77617463681205302e312e3012eb010a100102030405060708090a0b0c0d0e0f1012081112131415161718220821222324252627282a0e6465746563746f725f626174636830013900002a36fe9c971741dc052a36fe9c97174a100a06736f7572636512060a0464656d6f4a0c0a066576656e74731202182a4a120a036e6567120b18fdffffffffffffffff014a080a026f6b120210004a120a05726174696f120921000000000000e03f4a0a0a047a65726f1202180050025a2d09bc022a36fe9c97171212626164207265636f726420736b69707065641a0e0a046b696e6412060a046a736f6e60017a081204626f6f6d180285010101000012440a100102030405060708090a0b0c0d0e0f10120831323334353637382a0c736f757263655f62617463683001390100000000000000410200000000000000850101010000";

    fn ids(from: u8) -> [u8; 8] {
        std::array::from_fn(|i| from + i as u8)
    }

    #[test]
    fn request_bytes_equal_the_official_encoder() {
        let trace_id: [u8; 16] = std::array::from_fn(|i| 1 + i as u8);
        let t0 = 1_700_000_000_000_000_000u64;
        let spans = vec![
            SpanRecord {
                trace_id,
                span_id: ids(0x11),
                parent_span_id: Some(ids(0x21)),
                name: "detector_batch",
                start_ns: t0,
                end_ns: t0 + 1500,
                attributes: vec![
                    ("source", Value::Str("demo".into())),
                    ("events", Value::Int(42)),
                    ("neg", Value::Int(-3)),
                    ("ok", Value::Bool(false)),
                    ("ratio", Value::Double(0.5)),
                    ("zero", Value::Int(0)),
                ],
                dropped_attributes: 2,
                events: vec![SpanEvent {
                    time_ns: t0 + 700,
                    name: "bad record skipped".into(),
                    attributes: vec![("kind", Value::Str("json".into()))],
                    dropped_attributes: 0,
                }],
                dropped_events: 1,
                status: Status::Error("boom".into()),
            },
            SpanRecord {
                trace_id,
                span_id: ids(0x31),
                parent_span_id: None,
                name: "source_batch",
                start_ns: 1,
                end_ns: 2,
                attributes: vec![],
                dropped_attributes: 0,
                events: vec![],
                dropped_events: 0,
                status: Status::Unset,
            },
        ];
        let pre = Preamble::new(&[("service.name".into(), Value::Str("trailwatch".into()))], "trailwatch", "0.1.0");
        assert_eq!(hex::encode(encode_request(&pre, &spans)), GOLDEN);
    }

    #[test]
    fn long_nested_messages_get_multi_byte_lengths() {
        let mut w = Writer::default();
        w.message(1, |w| w.string(1, &"x".repeat(300)));
        // tag, length 303 as a 2-byte varint, inner tag, 300 as a 2-byte varint.
        assert_eq!(&w.buf[..6], &[0x0a, 0xaf, 0x02, 0x0a, 0xac, 0x02]);
        assert_eq!(w.buf.len(), 6 + 300);
    }

    #[test]
    fn responses_decode_partial_success_and_tolerate_other_bodies() {
        // From the official classes: partial_success { rejected_spans: 3, error_message: "too old" }.
        let body = hex::decode("0a0b08031207746f6f206f6c64").unwrap();
        let ps = decode_response(&body).unwrap();
        assert_eq!(ps, PartialSuccess { rejected_spans: 3, error_message: "too old".into() });
        assert_eq!(decode_response(b""), Some(PartialSuccess::default()));
        assert_eq!(decode_response(b"{\"partialSuccess\":{}}"), None, "JSON is not protobuf");
        // google.rpc.Status { code: 3, message: "bad" }.
        assert_eq!(decode_status_message(&[0x08, 0x03, 0x12, 0x03, b'b', b'a', b'd']).as_deref(), Some("bad"));
        assert_eq!(decode_status_message(b"<html>"), None);
    }
}
