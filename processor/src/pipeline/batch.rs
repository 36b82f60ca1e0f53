//! Decoded input, owned: what a source hands to the detector stage.
//!
//! Sources decode (gunzip, unwrap envelopes) in their own tasks, so that work
//! runs beside evaluation; the events of a batch are copied into one string
//! buffer (one allocation per batch, not per event).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use trailwatch_rules::EventClass;

use crate::decode::{self, DecodeOptions, Decoded, ObjectRef, Position};

/// Raw text kept in a dead letter (as the evaluator's).
const RAW_LIMIT: usize = 64 * 1024;

/// One decoded event inside an [`EventBatch`].
#[derive(Debug, Clone)]
pub struct BatchEvent {
    start: usize,
    end: usize,
    pub class: EventClass,
    /// Index into the batch's origins.
    origin: u32,
    /// 1 + index into the batch's event partitions; 0: its origin's.
    part: u32,
    pub position: Position,
}

/// A malformed record found while decoding.
#[derive(Debug, Clone)]
pub struct BatchError {
    origin: u32,
    pub position: Position,
    pub kind: &'static str,
    pub message: String,
    /// The raw unit, when the decoder could not say more (a caught panic).
    pub raw: Option<String>,
}

/// The lengths of an [`EventBatch`]'s parts (and its skip counts) at one point.
struct Mark {
    text: usize,
    events: usize,
    errors: usize,
    object_refs: usize,
    skipped: BTreeMap<&'static str, u64>,
}

/// Events, errors and object references decoded from one or more units.
#[derive(Debug, Default)]
pub struct EventBatch {
    text: String,
    events: Vec<BatchEvent>,
    errors: Vec<BatchError>,
    origins: Vec<String>,
    /// Watermark partition of each origin that has its own (the
    /// account+region of a CloudTrail log file read from S3).
    origin_partitions: Vec<Option<Arc<str>>>,
    /// Watermark partitions given to single events (an SQS body's events,
    /// by their own account+region).
    event_partitions: Vec<Arc<str>>,
    /// Values skipped on purpose, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// S3 objects announced by notifications (the SQS source fetches them).
    pub object_refs: Vec<ObjectRef>,
    /// Processing time (epoch ms) the input reached trailwatch.
    pub ingest_ms: Option<i64>,
    /// Bytes of input (before decompression) the batch came from.
    pub input_bytes: u64,
}

impl EventBatch {
    pub fn new(ingest_ms: Option<i64>) -> Self {
        EventBatch { ingest_ms, ..EventBatch::default() }
    }

    /// Decodes one unit of input (a Kinesis record, an SQS body, an S3 object).
    /// A unit whose decoding panics is dropped whole and becomes one error of
    /// kind `panic` carrying the message and the raw unit (see `panics.rs`).
    pub fn push_unit(&mut self, data: &[u8], origin: String, opts: &DecodeOptions) {
        self.push_unit_in(data, origin, None, opts);
    }

    /// A new origin whose events belong to watermark partition `partition`.
    fn add_origin_in(&mut self, origin: String, partition: Option<Arc<str>>) -> u32 {
        let o = self.add_origin(origin);
        if partition.is_some() {
            self.origin_partitions.resize(self.origins.len(), None);
            self.origin_partitions[o as usize] = partition;
        }
        o
    }

    /// Where the batch stands before a unit is decoded into it.
    fn mark(&self) -> Mark {
        Mark {
            text: self.text.len(),
            events: self.events.len(),
            errors: self.errors.len(),
            object_refs: self.object_refs.len(),
            skipped: self.skipped.clone(),
        }
    }

    /// Drops what a unit added after `m` (its decoding panicked half way).
    fn roll_back(&mut self, m: Mark) {
        self.text.truncate(m.text);
        self.events.truncate(m.events);
        self.errors.truncate(m.errors);
        self.object_refs.truncate(m.object_refs);
        self.skipped = m.skipped;
    }

    /// [`EventBatch::push_unit`], its events in watermark partition `partition`.
    pub fn push_unit_in(&mut self, data: &[u8], origin: String, partition: Option<Arc<str>>, opts: &DecodeOptions) {
        self.input_bytes += data.len() as u64;
        let o = self.add_origin_in(origin, partition);
        let origin = self.origins[o as usize].clone();
        let mark = self.mark();
        let r = crate::panics::guard("decode", || {
            crate::panics::test_point_record("decode", data);
            decode::decode(data, &origin, opts, &mut |item| self.push_decoded(o, item));
        });
        if let Err(message) = r {
            // Nothing of a unit half decoded: the dead letter holds all of it.
            self.roll_back(mark);
            let raw = String::from_utf8_lossy(&data[..data.len().min(RAW_LIMIT)]).into_owned();
            self.errors.push(BatchError {
                origin: o,
                position: Position { line: 1, byte_offset: 0, record: None },
                kind: "panic",
                message,
                raw: Some(raw),
            });
        }
    }

    /// [`EventBatch::push_unit_in`] for a unit read as a stream (an S3
    /// object straight from its response body): memory holds the decoded
    /// values, never the whole compressed object. A read error ends the unit
    /// where it happened; the caller decides whether the unit is kept (the
    /// reader tells it why it failed). A panic drops the unit whole, as
    /// there: its raw bytes are not held, the origin names the object.
    pub fn push_reader_in(
        &mut self,
        reader: impl std::io::Read,
        origin: String,
        partition: Option<Arc<str>>,
        opts: &DecodeOptions,
    ) {
        let o = self.add_origin_in(origin, partition);
        let origin = self.origins[o as usize].clone();
        let mark = self.mark();
        let mut reader = Counted { inner: reader, n: 0 };
        let r = crate::panics::guard("decode", || {
            crate::panics::test_point_record("decode", origin.as_bytes());
            decode::decode_reader(&mut reader, &origin, opts, &mut |item| self.push_decoded(o, item))
        });
        self.input_bytes += reader.n;
        let (kind, message) = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => ("io", format!("cannot read input: {e}")),
            Err(message) => {
                self.roll_back(mark);
                ("panic", message)
            }
        };
        let position = Position { line: 1, byte_offset: 0, record: None };
        self.errors.push(BatchError { origin: o, position, kind, message, raw: None });
    }

    /// Registers where the following items come from; returns its index.
    pub fn add_origin(&mut self, origin: String) -> u32 {
        if self.origins.last().is_some_and(|l| *l == origin) {
            return (self.origins.len() - 1) as u32;
        }
        self.origins.push(origin);
        (self.origins.len() - 1) as u32
    }

    /// Adds one decoder item from origin `o` (see [`EventBatch::add_origin`]).
    pub fn push_decoded(&mut self, o: u32, item: Decoded<'_>) {
        match item {
            Decoded::Event(ev) => {
                let start = self.text.len();
                self.text.push_str(ev.json);
                self.events.push(BatchEvent {
                    start,
                    end: self.text.len(),
                    class: ev.class,
                    origin: o,
                    part: 0,
                    position: ev.position,
                });
            }
            Decoded::Error(e) => self.errors.push(BatchError {
                origin: o,
                position: e.position,
                kind: e.kind.as_str(),
                message: e.message,
                raw: None,
            }),
            Decoded::Skipped { reason, .. } => *self.skipped.entry(reason.as_str()).or_default() += 1,
            Decoded::ObjectRef(r) => self.object_refs.push(r),
        }
    }

    /// Moves everything of `other` into this batch.
    pub fn append(&mut self, other: EventBatch) {
        let base_origin = self.origins.len() as u32;
        let base_text = self.text.len();
        self.text.push_str(&other.text);
        if !other.origin_partitions.is_empty() {
            self.origin_partitions.resize(self.origins.len(), None);
            self.origin_partitions.extend(other.origin_partitions);
        }
        self.origins.extend(other.origins);
        let base_part = self.event_partitions.len() as u32;
        self.event_partitions.extend(other.event_partitions);
        self.events.extend(other.events.into_iter().map(|mut e| {
            e.start += base_text;
            e.end += base_text;
            e.origin += base_origin;
            if e.part > 0 {
                e.part += base_part;
            }
            e
        }));
        self.errors.extend(other.errors.into_iter().map(|mut e| {
            e.origin += base_origin;
            e
        }));
        for (k, n) in other.skipped {
            *self.skipped.entry(k).or_default() += n;
        }
        self.object_refs.extend(other.object_refs);
        self.input_bytes += other.input_bytes;
        self.ingest_ms = match (self.ingest_ms, other.ingest_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.errors.is_empty()
    }

    /// Bytes of event text held.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    pub fn events(&self) -> impl Iterator<Item = (&BatchEvent, &str, &str)> {
        self.events.iter().map(|e| (e, &self.text[e.start..e.end], self.origins[e.origin as usize].as_str()))
    }

    /// The watermark partition of an event, if it or its origin has its own.
    pub fn partition_of(&self, e: &BatchEvent) -> Option<&Arc<str>> {
        match e.part {
            0 => self.origin_partitions.get(e.origin as usize).and_then(Option::as_ref),
            k => self.event_partitions.get(k as usize - 1),
        }
    }

    /// Gives each event whose origin has no partition of its own the one
    /// `of` names for it (by its JSON), if any. Consecutive events of one
    /// name share one `Arc`.
    pub fn set_event_partitions(&mut self, mut of: impl FnMut(&str) -> Option<String>) {
        for i in 0..self.events.len() {
            let e = &self.events[i];
            if e.part != 0 || self.origin_partitions.get(e.origin as usize).is_some_and(Option::is_some) {
                continue;
            }
            let Some(name) = of(&self.text[e.start..e.end]) else { continue };
            let k = match self.event_partitions.iter().rposition(|p| **p == *name) {
                Some(k) => k,
                None => {
                    self.event_partitions.push(Arc::from(name));
                    self.event_partitions.len() - 1
                }
            };
            self.events[i].part = k as u32 + 1;
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = (&BatchError, &str)> {
        self.errors.iter().map(|e| (e, self.origins[e.origin as usize].as_str()))
    }

    pub fn error_count(&self) -> usize {
        self.errors.len()
    }
}

/// Where a source stands in a partition: written by the commit that makes
/// everything before it durable (e.g. a Kinesis shard and sequence number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Partition within the source (a shard id).
    pub partition: String,
    /// Opaque position (a sequence number), compared by the source.
    pub position: String,
}

/// How a batch ended, reported to the source that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Its findings are accepted by every sink (or spooled) and the window
    /// state that counted its events is committed: the input can go.
    Committed,
    /// The pipeline stopped before that: keep the input (it will come again).
    Dropped,
}

/// A batch from a source, with what to do once it is durable.
#[derive(Debug)]
pub struct SourceBatch {
    /// The configured source name.
    pub source: Arc<str>,
    pub events: EventBatch,
    pub checkpoint: Option<Checkpoint>,
    /// Told when the batch is committed (SQS deletes its messages then).
    pub ack: Option<oneshot::Sender<AckStatus>>,
    /// The `source_batch` span's trace, continued by the stages after it.
    pub trace: Option<crate::telemetry::TraceContext>,
    /// Watermark partitions: see [`Partitions`].
    pub partitions: Partitions,
}

impl SourceBatch {
    /// A batch with no events that only tells the watermarks something
    /// (partitions opened, adopted, dropped; a hold), stamped `now_ms`.
    pub fn partitions_only(source: &Arc<str>, now_ms: i64, partitions: Partitions) -> SourceBatch {
        SourceBatch {
            source: Arc::clone(source),
            events: EventBatch::new(Some(now_ms)),
            checkpoint: None,
            ack: None,
            trace: None,
            partitions,
        }
    }
}

/// What a batch tells the watermarks (see the rules crate's
/// `detect_design.md`): which partition its events belong to, which
/// partitions start or end, and whether to hold the watermark.
#[derive(Debug, Clone, Default)]
pub struct Partitions {
    /// Partition of the events whose origin has none of its own; None: the
    /// source's name.
    pub default: Option<Arc<str>>,
    /// Registered before the events: each holds the watermark back from now
    /// until it has events, idles or ends (a shard whose reader started).
    pub open: Vec<Arc<str>>,
    /// Ended after the events (a shard read to SHARD_END).
    pub close: Vec<Arc<str>>,
    /// Leased shards whose window state starts here, before the events: a
    /// detector of their own, restored from the lease's snapshot.
    pub adopt: Vec<Adopt>,
    /// Leased shards whose lease was lost: their window state goes.
    pub drop: Vec<Arc<str>>,
    /// The watermark does not advance for this long (processing time) from
    /// when the batch is evaluated: queue messages may come back.
    pub hold_for: Option<std::time::Duration>,
}

/// Counts the bytes read through it (input before decompression).
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_decode_into_one_buffer_with_origins() {
        let mut b = EventBatch::new(Some(5));
        let opts = DecodeOptions::default();
        b.push_unit(br#"{"eventVersion":"1.08","eventName":"A"}"#, "k:1".into(), &opts);
        b.push_unit(b"{\"Records\":[{\"eventName\":\"B\"},{\"eventName\":\"C\"}]}\nnot json", "k:2".into(), &opts);
        let got: Vec<(String, String)> =
            b.events().map(|(_, json, origin)| (origin.to_string(), json.to_string())).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "k:1");
        assert!(got[2].1.contains("\"C\""));
        assert_eq!(b.error_count(), 1);
        let (e, origin) = b.errors().next().unwrap();
        assert_eq!(origin, "k:2");
        assert_eq!(e.position.line, 2);

        let mut c = EventBatch::new(Some(3));
        c.push_unit(br#"{"eventVersion":"1.08","eventName":"D"}"#, "k:3".into(), &opts);
        b.append(c);
        let last = b.events().last().map(|(_, j, o)| (j.to_string(), o.to_string())).unwrap();
        assert!(last.0.contains("\"D\"") && last.1 == "k:3");
        assert_eq!(b.ingest_ms, Some(3));
    }
}

/// A leased shard's window state, as its new owner takes it over.
#[derive(Debug, Clone)]
pub struct Adopt {
    /// `<source>/<shard>`: the partition and position key.
    pub key: Arc<str>,
    /// The lease's tenure (positions carry it: `<gen>:<sequence>`).
    pub gen: u64,
    /// The detector snapshots to restore (gzip JSON): the one stored with the
    /// lease's checkpoint, or a new child shard's parents' (two for a merge:
    /// their windows are united).
    pub snapshots: Vec<Arc<Vec<u8>>>,
}
