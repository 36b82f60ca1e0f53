//! Input decoding: bytes → events, with format detection.
//!
//! A *unit* of input (a file, a Kinesis record, an SQS body) is gunzipped if
//! it starts with the gzip magic, then read as a sequence of JSON values:
//! newline-delimited JSON, one (pretty-printed) document, concatenated values.
//! Each value is one of the formats below, detected from its keys:
//!
//! | value | yields |
//! |---|---|
//! | CloudTrail record (`eventVersion`, `eventName`, ...) | one event, class CloudTrail |
//! | CloudTrail log file `{"Records":[...]}` | one event per record |
//! | EventBridge event, detail-type "... via CloudTrail" | the record in `detail` |
//! | other EventBridge event | the whole event, class from `source` |
//! | CloudWatch Logs subscription (`messageType`, `logEvents`) | each message, decoded again |
//! | SNS notification (`Type`, `Message`) | the message, decoded again |
//! | S3 event notification, CloudTrail's SNS delivery notice | [`ObjectRef`]s |
//! | CloudTrail digest file, CWL control message, S3 test event, SNS (un)subscribe | [`Decoded::Skipped`] |
//! | a JSON array | each element, decoded again |
//!
//! Contract with the engine: a plain CloudTrail record is recognised from its
//! first key without parsing it (the hot path); the rule engine reads it fully
//! and reports a JSON error for it with the event's [`Position`]. Everything
//! else that is malformed becomes a [`Decoded::Error`] with its position, and
//! decoding goes on with the next value (the next line in NDJSON).

mod envelope;
pub mod fuzz;

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, BufReader, Read};

use trailwatch_rules::EventClass;

pub use envelope::ObjectRef;

/// Limits for one unit of input.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Gunzipped data beyond this is an error (protects against gzip bombs),
    /// found while decompressing: no more than this (plus a buffer) is ever
    /// held. When streaming plain input, no one value (line or document) may
    /// be larger (memory stays bounded however long the input is).
    /// Configured by `[decode] max_decompressed_bytes`.
    pub max_decompressed_bytes: u64,
    /// How deep SNS → CloudWatch Logs → ... wrappers may nest.
    pub max_nesting: u8,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        // 128 MiB: CloudTrail log files are a few MiB decompressed; a unit
        // this large is already suspect, and memory stays far from the task's.
        DecodeOptions { max_decompressed_bytes: 128 << 20, max_nesting: 4 }
    }
}

/// Where in its unit an item was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based line (of the decompressed unit) where the top-level value starts.
    pub line: u64,
    /// Byte offset of that value in the decompressed unit.
    pub byte_offset: u64,
    /// Index inside `Records[]`, `logEvents[]` or a top-level array.
    pub record: Option<u64>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(r) = self.record {
            write!(f, ", record {r}")?;
        }
        Ok(())
    }
}

/// What wrapped an event on its way in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Via {
    pub gzip: bool,
    pub sns: bool,
    pub cloudwatch_logs: bool,
    pub log_file: bool,
    pub eventbridge: bool,
}

/// EventBridge envelope fields, when the event came as or inside one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBridgeMeta<'a> {
    pub id: Cow<'a, str>,
    pub detail_type: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub account: Option<Cow<'a, str>>,
    pub region: Option<Cow<'a, str>>,
    pub time: Option<Cow<'a, str>>,
}

/// One event for the rules.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The JSON text of the document rules see.
    pub json: &'a str,
    pub class: EventClass,
    pub position: Position,
    pub via: Via,
    pub eventbridge: Option<EventBridgeMeta<'a>>,
}

/// Why a value was skipped without being an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    ControlMessage,
    DigestFile,
    S3TestEvent,
    SnsSubscription,
    Empty,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::ControlMessage => "control_message",
            SkipReason::DigestFile => "digest_file",
            SkipReason::S3TestEvent => "s3_test_event",
            SkipReason::SnsSubscription => "sns_subscription",
            SkipReason::Empty => "empty",
        }
    }
}

/// Kinds of bad input (a metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    Gzip,
    TooLarge,
    Utf8,
    Json,
    UnknownFormat,
    Envelope,
    Nesting,
}

impl DecodeErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::Gzip => "gzip",
            DecodeErrorKind::TooLarge => "too_large",
            DecodeErrorKind::Utf8 => "utf8",
            DecodeErrorKind::Json => "json",
            DecodeErrorKind::UnknownFormat => "unknown_format",
            DecodeErrorKind::Envelope => "envelope",
            DecodeErrorKind::Nesting => "nesting",
        }
    }
}

/// A malformed piece of input, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {position}: {message}")]
pub struct DecodeError {
    pub origin: String,
    pub position: Position,
    pub kind: DecodeErrorKind,
    pub message: String,
}

/// One item out of the decoder.
#[derive(Debug)]
pub enum Decoded<'a> {
    Event(Event<'a>),
    ObjectRef(ObjectRef),
    Skipped { reason: SkipReason, position: Position },
    Error(DecodeError),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// S3 event notifications start like CloudTrail records (`eventVersion`);
/// this marks them. A prebuilt SIMD searcher: it runs on every record.
static S3_EVENT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"aws:s3\""));

/// Decodes one unit of input; calls `out` for every item in input order.
pub fn decode(input: &[u8], origin: &str, opts: &DecodeOptions, out: &mut dyn FnMut(Decoded<'_>)) {
    let mut d = Decoder { origin, opts, out };
    if input.starts_with(&GZIP_MAGIC) {
        match gunzip(input, opts.max_decompressed_bytes) {
            Ok(buf) => d.values(&buf, Via { gzip: true, ..Via::default() }),
            Err((kind, msg)) => d.error(Position { line: 1, ..Position::default() }, kind, msg),
        }
    } else {
        d.values(input, Via::default());
    }
}

/// Streaming form: line-delimited input is read with bounded memory; input
/// whose first value spans lines is read whole (up to the size limit). Plain
/// input has no total limit, only the per-value one: a replayed archive may
/// be many gigabytes of NDJSON.
pub fn decode_reader<R: Read>(
    reader: R,
    origin: &str,
    opts: &DecodeOptions,
    out: &mut dyn FnMut(Decoded<'_>),
) -> std::io::Result<()> {
    let mut br = BufReader::with_capacity(1 << 16, reader);
    let gz = br.fill_buf()?.starts_with(&GZIP_MAGIC);
    let via = Via { gzip: gz, ..Via::default() };
    let limit = opts.max_decompressed_bytes;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1);
    let mut src: Box<dyn BufRead> = if gz {
        Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(br).take(limit + 1)))
    } else {
        Box::new(br)
    };
    // Bytes read so far that count against the limit: all of a gzip unit,
    // the current value of plain input.
    let counted = |offset: u64, len: usize| if gz { offset + len as u64 } else { len as u64 };
    let mut d = Decoder { origin, opts, out };
    let mut line = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    let mut offset = 0u64;
    loop {
        // The next line, at most limit + 1 bytes. Nearly every NDJSON line
        // lies whole in the reader's 64 KiB buffer: it is then decoded where
        // it is (`in_place` bytes) instead of being copied into `line`.
        line.clear();
        let (mut n, mut in_place) = (0usize, 0usize);
        loop {
            let buf = match src.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if gz => {
                    let pos = Position { line: line_no + 1, byte_offset: offset, record: None };
                    d.error(pos, DecodeErrorKind::Gzip, format!("gzip: {e}"));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let room = (limit + 1 - n as u64).min(buf.len() as u64) as usize;
            match memchr::memchr(b'\n', &buf[..room]) {
                Some(i) if n == 0 => {
                    (n, in_place) = (i + 1, i + 1);
                    break;
                }
                Some(i) => {
                    push_capped(&mut line, &buf[..=i], cap);
                    src.consume(i + 1);
                    n += i + 1;
                    break;
                }
                None => {
                    push_capped(&mut line, &buf[..room], cap);
                    src.consume(room);
                    n += room;
                    if n as u64 > limit {
                        break;
                    }
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        // No I/O: the line is still buffered.
        let whole: &[u8] = if in_place > 0 { &src.fill_buf()?[..in_place] } else { &line };
        let trimmed = trim(whole);
        if trimmed.is_empty() {
            src.consume(in_place);
            offset += n as u64;
            continue;
        }
        if counted(offset, n) > limit {
            let pos = Position { line: line_no, byte_offset: offset, record: None };
            d.error(pos, DecodeErrorKind::TooLarge, format!("input exceeds {limit} bytes"));
            return Ok(());
        }
        if looks_complete(trimmed) {
            let pos = Position { line: line_no, byte_offset: offset, record: None };
            d.unit(trimmed, pos, via, 0);
            src.consume(in_place);
            offset += n as u64;
            continue;
        }
        // A value that spans lines: read the rest and decode it as a document.
        let mut rest = Vec::new();
        push_capped(&mut rest, whole, cap);
        src.consume(in_place);
        if let Err(e) = read_capped(&mut src, &mut rest, cap) {
            let pos = Position { line: line_no, byte_offset: offset, record: None };
            let kind = if gz { DecodeErrorKind::Gzip } else { DecodeErrorKind::Utf8 };
            d.error(pos, kind, format!("cannot read input: {e}"));
            return Ok(());
        }
        if counted(offset, rest.len()) > limit {
            let pos = Position { line: line_no, byte_offset: offset, record: None };
            d.error(pos, DecodeErrorKind::TooLarge, format!("input exceeds {limit} bytes"));
            return Ok(());
        }
        d.document(&rest, line_no, offset, via);
        return Ok(());
    }
}

fn gunzip(input: &[u8], limit: u64) -> Result<Vec<u8>, (DecodeErrorKind, String)> {
    let mut buf = Vec::new();
    let cap = usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1);
    let mut r = flate2::read::MultiGzDecoder::new(input);
    read_capped(&mut r, &mut buf, cap).map_err(|e| (DecodeErrorKind::Gzip, format!("gzip: {e}")))?;
    if buf.len() as u64 > limit {
        return Err((DecodeErrorKind::TooLarge, format!("decompressed input exceeds {limit} bytes")));
    }
    Ok(buf)
}

/// Appends `data`, never letting the capacity pass `cap` (unless `data`
/// itself needs it): `Vec`'s doubling would otherwise reserve up to twice
/// the limit for an oversized value.
fn push_capped(v: &mut Vec<u8>, data: &[u8], cap: usize) {
    let need = v.len() + data.len();
    if need > v.capacity() {
        let target = v.capacity().saturating_mul(2).max(need).min(cap.max(need));
        v.reserve_exact(target - v.len());
    }
    v.extend_from_slice(data);
}

/// Reads until the end or until `v` holds `cap` bytes (one past the limit:
/// enough to tell it was exceeded), with capacity never above `cap`. The
/// limit is enforced while decompressing: a bomb stops here, at `cap`.
fn read_capped(r: &mut dyn Read, v: &mut Vec<u8>, cap: usize) -> std::io::Result<()> {
    while v.len() < cap {
        if v.len() == v.capacity() {
            let target = v.capacity().saturating_mul(2).max(v.len() + (64 << 10)).min(cap);
            v.reserve_exact(target - v.len());
        }
        let room = (v.capacity() - v.len()) as u64;
        if (&mut *r).take(room).read_to_end(v)? == 0 {
            break;
        }
    }
    Ok(())
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &b[start..end]
}

/// A line that holds a whole JSON value (the NDJSON case), judged by its ends.
fn looks_complete(t: &[u8]) -> bool {
    matches!((t.first(), t.last()), (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']')))
        || !matches!(t.first(), Some(b'{') | Some(b'['))
}

struct Decoder<'o, 'f> {
    origin: &'o str,
    opts: &'o DecodeOptions,
    out: &'f mut dyn FnMut(Decoded<'_>),
}

impl Decoder<'_, '_> {
    fn error(&mut self, position: Position, kind: DecodeErrorKind, message: String) {
        (self.out)(Decoded::Error(DecodeError { origin: self.origin.to_string(), position, kind, message }));
    }

    /// A whole (decompressed) unit: NDJSON when its first line is a complete
    /// value, else a document (one or more values spanning lines).
    fn values(&mut self, buf: &[u8], via: Via) {
        let first = buf.split(|b| *b == b'\n').map(trim).find(|l| !l.is_empty());
        match first {
            None => {}
            Some(l) if looks_complete(l) => {
                let mut offset = 0u64;
                for (i, raw) in buf.split(|b| *b == b'\n').enumerate() {
                    let t = trim(raw);
                    if !t.is_empty() {
                        let pos = Position { line: i as u64 + 1, byte_offset: offset, record: None };
                        self.unit(t, pos, via, 0);
                    }
                    offset += raw.len() as u64 + 1;
                }
            }
            Some(_) => self.document(buf, 1, 0, via),
        }
    }

    /// One line of NDJSON (bytes): check UTF-8, then decode the value.
    fn unit(&mut self, bytes: &[u8], pos: Position, via: Via, depth: u8) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.value(text, pos, via, depth),
            Err(e) => self.error(pos, DecodeErrorKind::Utf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())),
        }
    }

    /// A document of values that may span lines; after a syntax error it
    /// resumes at the next line.
    fn document(&mut self, buf: &[u8], first_line: u64, base_offset: u64, via: Via) {
        let text = match std::str::from_utf8(buf) {
            Ok(t) => Cow::Borrowed(t),
            Err(e) => {
                let at = e.valid_up_to();
                let pos = Position {
                    line: first_line + count_lines(&buf[..at]),
                    byte_offset: base_offset + at as u64,
                    record: None,
                };
                self.error(pos, DecodeErrorKind::Utf8, format!("invalid UTF-8 at byte {at}"));
                String::from_utf8_lossy(buf)
            }
        };
        let text: &str = &text;
        let mut start = 0usize;
        // Lines are counted incrementally: recounting from the top for each
        // value would be quadratic on large documents.
        let (mut counted_to, mut lines) = (0usize, 0u64);
        while start < text.len() {
            let rest = &text[start..];
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<&serde_json::value::RawValue>();
            loop {
                let before = stream.byte_offset();
                let item = stream.next();
                let skip = rest[before..].len() - rest[before..].trim_start().len();
                let at = start + before + skip;
                lines += count_lines(&text.as_bytes()[counted_to.min(at)..at]);
                counted_to = counted_to.max(at);
                let pos = Position { line: first_line + lines, byte_offset: base_offset + at as u64, record: None };
                match item {
                    None => return,
                    Some(Ok(raw)) => self.value(raw.get(), pos, via, 0),
                    Some(Err(e)) => {
                        self.error(pos, DecodeErrorKind::Json, format!("invalid JSON: {e}"));
                        // Resume at the line after the error.
                        let err_at = start + line_col_to_offset(rest, e.line(), e.column());
                        let err_at = floor_char_boundary(text, err_at);
                        let next = text[err_at..].find('\n').map_or(text.len(), |i| err_at + i + 1);
                        start = next.max(at + 1).min(text.len());
                        while start < text.len() && !text.is_char_boundary(start) {
                            start += 1;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// One JSON value (text), format detected from its keys.
    fn value(&mut self, text: &str, pos: Position, via: Via, depth: u8) {
        if depth > self.opts.max_nesting {
            return self.error(
                pos,
                DecodeErrorKind::Nesting,
                format!("wrappers nested deeper than {}", self.opts.max_nesting),
            );
        }
        let t = text.trim_start();
        match t.as_bytes().first() {
            Some(b'{') => {}
            Some(b'[') => return self.array(text, pos, via, depth),
            Some(_) => {
                return self.error(
                    pos,
                    DecodeErrorKind::UnknownFormat,
                    "not a JSON object: no event format matches".into(),
                )
            }
            None => {
                return (self.out)(Decoded::Skipped { reason: SkipReason::Empty, position: pos });
            }
        }
        // Hot path: a CloudTrail record, known by its first key.
        if envelope::first_key(t).is_some_and(envelope::is_cloudtrail_key) && S3_EVENT.find(text.as_bytes()).is_none() {
            return (self.out)(Decoded::Event(Event {
                json: text,
                class: EventClass::CloudTrail,
                position: pos,
                via,
                eventbridge: None,
            }));
        }
        let env: envelope::Envelope<'_> = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => return self.error(pos, DecodeErrorKind::Json, format!("invalid JSON: {e}")),
        };
        envelope::dispatch(self, env, text, pos, via, depth);
    }

    fn array(&mut self, text: &str, pos: Position, via: Via, depth: u8) {
        let items: Vec<&serde_json::value::RawValue> = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.error(pos, DecodeErrorKind::Json, format!("invalid JSON: {e}")),
        };
        if items.is_empty() {
            return (self.out)(Decoded::Skipped { reason: SkipReason::Empty, position: pos });
        }
        for (i, raw) in items.into_iter().enumerate() {
            let p = Position { record: Some(i as u64), ..pos.clone() };
            self.value(raw.get(), p, via, depth + 1);
        }
    }
}

fn count_lines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}

/// Byte offset of serde_json's 1-based (line, column) in `s`, on a char
/// boundary: serde_json counts columns in bytes and may stop inside a
/// multi-byte character (an unterminated `"é`), so the offset is moved back to
/// the start of that character before anyone slices at it.
fn line_col_to_offset(s: &str, line: usize, col: usize) -> usize {
    let mut off = 0usize;
    for (i, l) in s.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return floor_char_boundary(s, off + col.saturating_sub(1));
        }
        off += l.len();
    }
    s.len()
}

/// The largest char boundary of `s` at or before `i` (clamped to its length).
pub(crate) fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests;
