//! The `tracing` layer that turns spans into OTLP span records.
//!
//! Each span the layer's filter enables gets a [`SpanState`] in its registry
//! extensions at creation: ids, the parent (the enclosing span, or one set
//! explicitly with [`super::set_parent`] for work handed across a channel),
//! the start time and the span's fields. Events inside a sampled span become
//! span events; an ERROR event also sets the span's status. When the span
//! closes, its record goes into a bounded queue with `try_send`: a full
//! queue drops the span and counts it, so tracing never waits on export.
//!
//! Sampling is parent-based: a root span keeps its trace with probability
//! `ratio` (decided on the trace id, as OpenTelemetry's TraceIdRatioBased
//! sampler does), every other span follows its parent.
//!
//! A root span's trace id is random, or in AWS X-Ray's format
//! ([`TraceIdFormat::Xray`]): its start in Unix seconds, then 12 random bytes.

use std::cell::Cell;
use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::config::TraceIdFormat;
use super::TraceContext;

/// Caps per span, so one chatty span cannot hold unbounded memory.
const MAX_ATTRIBUTES: usize = 32;
const MAX_EVENTS: usize = 32;
const MAX_EVENT_ATTRIBUTES: usize = 16;
/// Longer string values are cut (at a character boundary).
const MAX_VALUE_BYTES: usize = 4096;

/// An attribute value (the OTLP AnyValue kinds `tracing` fields produce).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Unset,
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub time_ns: u64,
    pub name: String,
    pub attributes: Vec<(&'static str, Value)>,
    pub dropped_attributes: u32,
}

/// A finished, sampled span, ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub dropped_attributes: u32,
    pub events: Vec<SpanEvent>,
    pub dropped_events: u32,
    pub status: Status,
}

/// What the layer keeps in a span's extensions while it is open.
pub(super) struct SpanState {
    pub ctx: TraceContext,
    pub parent: Option<[u8; 8]>,
    start_ns: u64,
    started: Instant,
    attributes: Vec<(&'static str, Value)>,
    dropped_attributes: u32,
    events: Vec<SpanEvent>,
    dropped_events: u32,
    status: Status,
}

impl SpanState {
    pub(super) fn set_error(&mut self, message: &str) {
        self.status = Status::Error(cut(message.to_string()));
    }
}

/// Keeps a share of root traces, decided on the trace id.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Traces whose 63-bit id value is below this are kept.
    bound: u64,
}

impl Sampler {
    pub fn ratio(r: f64) -> Sampler {
        let r = r.clamp(0.0, 1.0);
        let bound = if r >= 1.0 { u64::MAX } else { (r * (1u64 << 63) as f64) as u64 };
        Sampler { bound }
    }

    pub fn keeps(&self, trace_id: &[u8; 16]) -> bool {
        // The low 8 bytes of the id, as the TraceIdRatioBased sampler reads them.
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }
}

thread_local! {
    /// Set on the exporter's own threads: nothing they do is traced (an
    /// export must not produce spans that need exporting).
    static EXPORTER_THREAD: Cell<bool> = const { Cell::new(false) };
}

pub(super) fn mark_exporter_thread() {
    EXPORTER_THREAD.with(|c| c.set(true));
}

fn on_exporter_thread() -> bool {
    EXPORTER_THREAD.with(|c| c.get())
}

pub struct OtlpLayer {
    queue: mpsc::Sender<SpanRecord>,
    sampler: Sampler,
    id_format: TraceIdFormat,
    dropped_full: prometheus::IntCounter,
    dropped_closed: prometheus::IntCounter,
}

impl OtlpLayer {
    pub fn new(queue: mpsc::Sender<SpanRecord>, sampler: Sampler, id_format: TraceIdFormat) -> OtlpLayer {
        let m = crate::metrics::get();
        OtlpLayer {
            queue,
            sampler,
            id_format,
            dropped_full: m.otlp_spans_dropped.with_label_values(&["queue_full"]),
            dropped_closed: m.otlp_spans_dropped.with_label_values(&["shutdown"]),
        }
    }
}

pub(super) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn nonzero_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

/// The id of a trace starting at `start_ns` (Unix time). X-Ray's format
/// keeps the sampler's input, the low 8 bytes, random.
fn new_trace_id(format: TraceIdFormat, start_ns: u64) -> [u8; 16] {
    match format {
        TraceIdFormat::Random => nonzero_id(),
        TraceIdFormat::Xray => {
            let mut id: [u8; 16] = nonzero_id();
            // Unix seconds fit in 32 bits until 2106.
            id[..4].copy_from_slice(&((start_ns / 1_000_000_000) as u32).to_be_bytes());
            id
        }
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if on_exporter_thread() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| p.extensions().get::<SpanState>().map(|s| s.ctx));
        // Both clocks read together: end_ns is start_ns plus the monotonic elapsed time.
        let (start_ns, started) = (now_ns(), Instant::now());
        let ctx = match parent {
            Some(p) => TraceContext { trace_id: p.trace_id, span_id: nonzero_id(), sampled: p.sampled },
            None => {
                let trace_id = new_trace_id(self.id_format, start_ns);
                TraceContext { trace_id, span_id: nonzero_id(), sampled: self.sampler.keeps(&trace_id) }
            }
        };
        // Fields are kept even when not sampled: set_parent may still join
        // the span to a sampled trace.
        let mut state = SpanState {
            ctx,
            parent: parent.map(|p| p.span_id),
            start_ns,
            started,
            attributes: Vec::new(),
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
            status: Status::Unset,
        };
        attrs.record(&mut FieldVisitor {
            attrs: &mut state.attributes,
            dropped: &mut state.dropped_attributes,
            max: MAX_ATTRIBUTES,
            message: None,
        });
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(state) = ext.get_mut::<SpanState>() {
            values.record(&mut FieldVisitor {
                attrs: &mut state.attributes,
                dropped: &mut state.dropped_attributes,
                max: MAX_ATTRIBUTES,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let mut ext = span.extensions_mut();
        let Some(state) = ext.get_mut::<SpanState>() else { return };
        if !state.ctx.sampled {
            return;
        }
        let level = *event.metadata().level();
        if state.events.len() >= MAX_EVENTS && level != Level::ERROR {
            state.dropped_events += 1;
            return;
        }
        let mut attributes = Vec::new();
        let mut dropped = 0;
        let mut message = None;
        event.record(&mut FieldVisitor {
            attrs: &mut attributes,
            dropped: &mut dropped,
            max: MAX_EVENT_ATTRIBUTES,
            message: Some(&mut message),
        });
        let name = message.unwrap_or_else(|| event.metadata().name().to_string());
        if level == Level::ERROR {
            state.status = Status::Error(name.clone());
        }
        if state.events.len() >= MAX_EVENTS {
            state.dropped_events += 1;
            return;
        }
        attributes.push(("level", Value::Str(level.as_str().to_string())));
        state.events.push(SpanEvent { time_ns: now_ns(), name, attributes, dropped_attributes: dropped });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else { return };
        if !state.ctx.sampled {
            return;
        }
        let rec = SpanRecord {
            trace_id: state.ctx.trace_id,
            span_id: state.ctx.span_id,
            parent_span_id: state.parent,
            name: span.metadata().name(),
            start_ns: state.start_ns,
            // The monotonic clock for the duration: wall-clock steps do not bend it.
            end_ns: state.start_ns + state.started.elapsed().as_nanos() as u64,
            attributes: state.attributes,
            dropped_attributes: state.dropped_attributes,
            events: state.events,
            dropped_events: state.dropped_events,
            status: state.status,
        };
        match self.queue.try_send(rec) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped_full.inc(),
            Err(mpsc::error::TrySendError::Closed(_)) => self.dropped_closed.inc(),
        }
    }
}

/// Records span or event fields as attributes (the event's `message` apart).
struct FieldVisitor<'a> {
    attrs: &'a mut Vec<(&'static str, Value)>,
    dropped: &'a mut u32,
    max: usize,
    message: Option<&'a mut Option<String>>,
}

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        let name = field.name();
        if name == "message" {
            if let Some(m) = self.message.as_mut() {
                let text = match v {
                    Value::Str(s) => s,
                    other => format!("{other:?}"),
                };
                **m = Some(text);
                return;
            }
        }
        // A recorded field replaces its earlier value (Span::record).
        if let Some(slot) = self.attrs.iter_mut().find(|(k, _)| *k == name) {
            slot.1 = v;
        } else if self.attrs.len() < self.max {
            self.attrs.push((name, v));
        } else {
            *self.dropped += 1;
        }
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Double(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        // OTLP integers are int64; larger values keep their digits as text.
        let v = i64::try_from(value).map(Value::Int).unwrap_or_else(|_| Value::Str(value.to_string()));
        self.put(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(cut(value.to_string())));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Str(cut(value.to_string())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(cut(format!("{value:?}"))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn collect(ratio: f64, cap: usize, f: impl FnOnce()) -> Vec<SpanRecord> {
        collect_ids(TraceIdFormat::Random, ratio, cap, f)
    }

    fn collect_ids(format: TraceIdFormat, ratio: f64, cap: usize, f: impl FnOnce()) -> Vec<SpanRecord> {
        let (tx, mut rx) = mpsc::channel(cap);
        let sub = tracing_subscriber::registry().with(OtlpLayer::new(tx, Sampler::ratio(ratio), format));
        tracing::subscriber::with_default(sub, f);
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r);
        }
        out
    }

    fn attr<'a>(r: &'a SpanRecord, k: &str) -> Option<&'a Value> {
        r.attributes.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
    }

    #[test]
    fn spans_record_ids_parents_fields_events_and_error_status() {
        let spans = collect(1.0, 16, || {
            let outer = tracing::info_span!("source_batch", source = "demo", records = tracing::field::Empty);
            let _g = outer.enter();
            outer.record("records", 3u64);
            let inner = tracing::info_span!("sink_send", sink = %"out", findings = 2usize, ok = true, took = 0.5);
            inner.in_scope(|| {
                tracing::warn!(kind = "json", "bad record skipped");
                tracing::error!("sink failed");
            });
        });
        assert_eq!(spans.len(), 2, "{spans:?}");
        let (inner, outer) = (&spans[0], &spans[1]);
        assert_eq!((outer.name, inner.name), ("source_batch", "sink_send"));
        assert_eq!(inner.trace_id, outer.trace_id);
        assert_eq!(inner.parent_span_id, Some(outer.span_id));
        assert_eq!(outer.parent_span_id, None);
        assert_ne!(inner.span_id, outer.span_id);
        assert!(outer.start_ns <= inner.start_ns && inner.end_ns <= outer.end_ns);
        assert_eq!(attr(outer, "source"), Some(&Value::Str("demo".into())));
        assert_eq!(attr(outer, "records"), Some(&Value::Int(3)));
        assert_eq!(attr(inner, "sink"), Some(&Value::Str("out".into())));
        assert_eq!(attr(inner, "findings"), Some(&Value::Int(2)));
        assert_eq!(attr(inner, "ok"), Some(&Value::Bool(true)));
        assert_eq!(attr(inner, "took"), Some(&Value::Double(0.5)));
        assert_eq!(inner.events.len(), 2);
        assert_eq!(inner.events[0].name, "bad record skipped");
        assert_eq!(
            inner.events[0].attributes,
            vec![("kind", Value::Str("json".into())), ("level", Value::Str("WARN".into()))]
        );
        assert_eq!(inner.status, Status::Error("sink failed".into()));
        assert_eq!(outer.status, Status::Unset);
        assert!(outer.events.is_empty(), "events belong to the innermost span");
    }

    #[test]
    fn explicit_parents_join_traces_across_threads_of_work() {
        let spans = collect(1.0, 16, || {
            let a = tracing::info_span!("source_batch");
            let ctx = crate::telemetry::context_of(&a).expect("the layer is installed");
            drop(a);
            let b = tracing::info_span!("detector_batch");
            crate::telemetry::set_parent(&b, Some(ctx));
            let child = b.in_scope(|| tracing::info_span!("inner"));
            drop(child);
        });
        let by = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let (a, b, c) = (by("source_batch"), by("detector_batch"), by("inner"));
        assert_eq!(b.trace_id, a.trace_id);
        assert_eq!(b.parent_span_id, Some(a.span_id));
        assert_eq!(c.trace_id, a.trace_id);
        assert_eq!(c.parent_span_id, Some(b.span_id));
        assert!(b.start_ns >= a.end_ns, "the detector span starts after the source span ended");
    }

    #[test]
    fn sampling_is_decided_at_the_root_and_followed_by_children() {
        let none = collect(0.0, 64, || {
            for _ in 0..20 {
                let root = tracing::info_span!("root");
                let ctx = crate::telemetry::context_of(&root);
                assert_eq!(ctx.map(|c| c.sampled), Some(false));
                let _c = root.in_scope(|| tracing::info_span!("child"));
                let joined = tracing::info_span!("joined");
                crate::telemetry::set_parent(&joined, ctx);
            }
        });
        assert!(none.is_empty(), "ratio 0 keeps nothing, children and joined spans included");
        let s = Sampler::ratio(0.5);
        let kept = (0..2000).filter(|_| s.keeps(&rand::random())).count();
        assert!((800..1200).contains(&kept), "about half of random trace ids: {kept}");
        assert!(Sampler::ratio(1.0).keeps(&[0xff; 16]));
    }

    #[test]
    fn xray_trace_ids_start_with_the_trace_start_in_unix_seconds() {
        let secs = |id: &[u8; 16]| u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let spans = collect_ids(TraceIdFormat::Xray, 1.0, 64, || {
            for _ in 0..10 {
                let root = tracing::info_span!("root");
                let _c = root.in_scope(|| tracing::info_span!("child"));
            }
        });
        assert_eq!(spans.len(), 20);
        let mut randoms = std::collections::BTreeSet::new();
        for s in &spans {
            if s.parent_span_id.is_none() {
                assert_eq!(u64::from(secs(&s.trace_id)), s.start_ns / 1_000_000_000, "{:x?}", s.trace_id);
                randoms.insert(s.trace_id[4..].to_vec());
            } else {
                assert!(spans.iter().any(|r| r.parent_span_id.is_none() && r.trace_id == s.trace_id));
            }
        }
        assert_eq!(randoms.len(), 10, "the 12 bytes after the time are random");
        // The sampler reads the low 8 bytes, which stay random: the ratio holds.
        let s = Sampler::ratio(0.5);
        let kept = (0..2000).filter(|_| s.keeps(&new_trace_id(TraceIdFormat::Xray, now_ns()))).count();
        assert!((800..1200).contains(&kept), "about half of X-Ray trace ids: {kept}");

        let now = (now_ns() / 1_000_000_000) as u32;
        let random = collect(1.0, 64, || {
            for _ in 0..10 {
                let _r = tracing::info_span!("root");
            }
        });
        assert!(random.iter().any(|s| secs(&s.trace_id) != now), "random ids are not time-prefixed");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dropped = crate::metrics::get().otlp_spans_dropped.with_label_values(&["queue_full"]);
        let before = dropped.get();
        let spans = collect(1.0, 2, || {
            for i in 0..5 {
                let _s = tracing::info_span!("s", i).entered();
            }
        });
        assert_eq!(spans.len(), 2);
        assert_eq!(dropped.get() - before, 3);
    }

    #[test]
    fn caps_bound_attributes_events_and_values() {
        let spans = collect(1.0, 4, || {
            let s = tracing::info_span!("s", v = tracing::field::Empty);
            s.record("v", "x".repeat(10_000).as_str());
            s.in_scope(|| {
                for i in 0..40 {
                    tracing::info!(i, "step");
                }
            });
        });
        let s = &spans[0];
        assert!(matches!(attr(s, "v"), Some(Value::Str(v)) if v.len() == MAX_VALUE_BYTES));
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.dropped_events, 40 - MAX_EVENTS as u32);
    }
}
