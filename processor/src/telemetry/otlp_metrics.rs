//! OTLP metrics: the Prometheus registry of [`crate::metrics`], exported
//! periodically by the OpenTelemetry SDK (`SdkMeterProvider` with a
//! `PeriodicReader`) and `opentelemetry-otlp`'s `MetricExporter`.
//!
//! The metrics stay defined once, in `crate::metrics`: every family there is
//! bridged to one OpenTelemetry instrument of the same name, description and
//! labels (attributes), converted as the OpenTelemetry specification's
//! Prometheus compatibility section says (names kept, unit from the suffix):
//!
//! - counter → observable counter (monotonic cumulative sum, integer),
//!   read from the registry at each collection;
//! - gauge → observable gauge (integer or double as in Prometheus);
//! - histogram → explicit-bucket histogram with the Prometheus buckets.
//!   The API has no observable histogram, so at each collection the
//!   observations made since the previous one are replayed into a
//!   synchronous histogram: per bucket as many values as it gained,
//!   placed inside the bucket so that the sum is Prometheus's too. Bucket
//!   counts, count and sum are exact; min and max are unknown and not
//!   exported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{AsyncInstrumentBuilder, Histogram, Meter, MeterProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::Resource;

use crate::metrics::{Family, Kind};

/// Series per metric before the SDK folds the rest into an overflow
/// series (its default is 2,000; a rule label over the public SigmaHQ
/// repository has more). Prometheus has no such cap.
const CARDINALITY_LIMIT: usize = 100_000;

/// The running export: the SDK's provider (its reader thread collects and exports).
pub(super) struct MetricsExport {
    pub(super) provider: SdkMeterProvider,
}

/// Starts the periodic export of `families` through `exporter`.
pub(super) fn start(
    families: &'static [Family],
    exporter: opentelemetry_otlp::MetricExporter,
    runtime: tokio::runtime::Handle,
    interval: Option<Duration>,
    resource: Resource,
) -> MetricsExport {
    let exporter = OnRuntime { inner: exporter, runtime };
    let mut reader = PeriodicReader::builder(exporter);
    if let Some(i) = interval {
        reader = reader.with_interval(i);
    }
    let bounds: HashMap<String, &'static [f64]> = families
        .iter()
        .filter_map(|f| match f.kind {
            Kind::Histogram(b) => Some((f.name.clone(), b)),
            _ => None,
        })
        .collect();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader.build())
        .with_resource(resource)
        .with_view(move |i: &Instrument| view(i, &bounds))
        .build();
    let scope = InstrumentationScope::builder("trailwatch").with_version(env!("CARGO_PKG_VERSION")).build();
    bridge(&provider.meter_with_scope(scope), families);
    MetricsExport { provider }
}

/// The Prometheus buckets, no min/max (see the module doc), and room for every series.
fn view(i: &Instrument, bounds: &HashMap<String, &'static [f64]>) -> Option<Stream> {
    let mut s = Stream::builder().with_cardinality_limit(CARDINALITY_LIMIT);
    if i.kind() == InstrumentKind::Histogram {
        let boundaries = bounds.get(i.name())?.to_vec();
        s = s.with_aggregation(Aggregation::ExplicitBucketHistogram { boundaries, record_min_max: false });
    }
    s.build().ok()
}

/// The OpenTelemetry unit of a Prometheus name's unit suffix (UCUM, as the
/// specification maps them); no suffix, no unit.
pub(super) fn unit_of(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    if base.ends_with("_seconds") {
        "s"
    } else if base.ends_with("_bytes") {
        "By"
    } else {
        ""
    }
}

/// A series' labels as attributes.
fn attributes(m: &prometheus::proto::Metric) -> Vec<KeyValue> {
    m.get_label().iter().map(|l| KeyValue::new(l.name().to_string(), l.value().to_string())).collect()
}

/// One instrument per family; the histograms are fed by the first
/// observable instrument's callback (the SDK runs every callback of a
/// collection before it reads any instrument, so which one does not matter).
fn bridge(meter: &Meter, families: &'static [Family]) {
    let histograms: Vec<Replay> = families
        .iter()
        .filter(|f| matches!(f.kind, Kind::Histogram(_)))
        .map(|f| Replay {
            family: f,
            instrument: meter
                .f64_histogram(f.name.clone())
                .with_description(f.help.clone())
                .with_unit(unit_of(&f.name))
                .build(),
            seen: Mutex::new(HashMap::new()),
        })
        .collect();
    let mut feed = Some(Arc::new(histograms));
    for f in families {
        let replay = match f.kind {
            Kind::Histogram(_) => continue,
            _ => feed.take(),
        };
        let before = move || {
            if let Some(h) = &replay {
                h.iter().for_each(Replay::collect);
            }
        };
        match f.kind {
            Kind::Counter => {
                // An integer counter: the f64 holds it exactly up to 2^53.
                observed(meter.u64_observable_counter(f.name.clone()), f, before, |m| {
                    m.get_counter().get_value() as u64
                })
                .build();
            }
            Kind::IntGauge => {
                observed(meter.i64_observable_gauge(f.name.clone()), f, before, |m| m.get_gauge().get_value() as i64)
                    .build();
            }
            Kind::Gauge => {
                observed(meter.f64_observable_gauge(f.name.clone()), f, before, |m| m.get_gauge().get_value()).build();
            }
            Kind::Histogram(_) => {}
        }
    }
}

/// An observable instrument of family `f`: its description and unit, and
/// a callback that runs `before` and then observes every series, read by `value`.
fn observed<'a, I, M: 'static>(
    b: AsyncInstrumentBuilder<'a, I, M>,
    f: &'static Family,
    before: impl Fn() + Send + Sync + 'static,
    value: fn(&prometheus::proto::Metric) -> M,
) -> AsyncInstrumentBuilder<'a, I, M> {
    b.with_description(f.help.clone()).with_unit(unit_of(&f.name)).with_callback(move |o| {
        before();
        for fam in f.collector.collect() {
            for m in fam.get_metric() {
                o.observe(value(m), &attributes(m));
            }
        }
    })
}

/// A series' labels.
type Labels = Vec<(String, String)>;

/// A Prometheus histogram replayed into an OpenTelemetry one.
struct Replay {
    family: &'static Family,
    instrument: Histogram<f64>,
    /// Per series (its labels): cumulative bucket counts and sum already replayed.
    seen: Mutex<HashMap<Labels, (Vec<u64>, f64)>>,
}

impl Replay {
    fn collect(&self) {
        let Ok(mut seen) = self.seen.lock() else { return };
        for fam in self.family.collector.collect() {
            for m in fam.get_metric() {
                let key: Labels = m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
                let h = m.get_histogram();
                // Cumulative counts per finite bound, then the +Inf bucket (the total).
                let mut cumulative: Vec<u64> = h.get_bucket().iter().map(|b| b.cumulative_count()).collect();
                cumulative.push(h.get_sample_count());
                let bounds: Vec<f64> = h.get_bucket().iter().map(|b| b.upper_bound()).collect();
                let (before, sum_before) = seen.get(&key).cloned().unwrap_or((vec![0; cumulative.len()], 0.0));
                let mut added = Vec::with_capacity(cumulative.len());
                let mut prev = (0, 0);
                for (now, was) in cumulative.iter().zip(&before) {
                    added.push((now - prev.0).saturating_sub(was - prev.1));
                    prev = (*now, *was);
                }
                if added.iter().any(|n| *n > 0) {
                    let attrs = attributes(m);
                    for (value, n) in replay_values(&bounds, &added, h.get_sample_sum() - sum_before) {
                        for _ in 0..n {
                            self.instrument.record(value, &attrs);
                        }
                    }
                }
                seen.insert(key, (cumulative, h.get_sample_sum()));
            }
        }
    }
}

/// Values that fall `counts[i]` times into bucket i of `bounds` (upper
/// bounds; the last bucket is above them all) and add up to `sum`
/// (as near as the buckets allow): each bucket's values start just above
/// its lower bound and take what is left of `sum`, up to the upper bound.
/// Histograms here observe durations and sizes: the first bucket starts at 0.
pub(super) fn replay_values(bounds: &[f64], counts: &[u64], sum: f64) -> Vec<(f64, u64)> {
    let lower = |i: usize| {
        if i == 0 {
            bounds.first().map_or(0.0, |b| b.min(0.0))
        } else {
            // Buckets exclude their lower bound.
            let b = bounds[i - 1];
            b + (b.abs() * 1e-9).max(1e-12)
        }
    };
    let upper = |i: usize| bounds.get(i).copied().unwrap_or(f64::INFINITY);
    let mut values: Vec<(f64, u64)> = (0..counts.len()).map(|i| (lower(i), counts[i])).collect();
    let mut left = sum - values.iter().map(|(v, n)| v * *n as f64).sum::<f64>();
    // Largest buckets first: the +Inf bucket takes any amount.
    for i in (0..values.len()).rev() {
        let (v, n) = values[i];
        if n == 0 || left <= 0.0 {
            continue;
        }
        let room = (upper(i) - v) * n as f64;
        let take = left.min(room);
        values[i].0 = v + take / n as f64;
        left -= take;
    }
    values.retain(|(_, n)| *n > 0);
    values
}

/// The OTLP exporter, run on trailwatch's exporter runtime (tonic and hyper
/// need tokio; the SDK's reader thread has none), with each export counted.
struct OnRuntime {
    inner: opentelemetry_otlp::MetricExporter,
    runtime: tokio::runtime::Handle,
}

impl PushMetricExporter for OnRuntime {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        // The reader's own thread, outside any runtime: blocking here is
        // what the SDK does itself (it waits on this future).
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            Err(OTelSdkError::InternalFailure("metrics exported from inside a tokio runtime".into()))
        } else {
            self.runtime.block_on(self.inner.export(metrics))
        };
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        crate::metrics::get().otlp_metric_exports.with_label_values(&[outcome]).inc();
        if let Err(e) = &result {
            tracing::warn!("OTLP metrics export failed: {e}");
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets_of(bounds: &[f64], values: &[(f64, u64)]) -> Vec<u64> {
        let mut counts = vec![0; bounds.len() + 1];
        for (v, n) in values {
            let i = bounds.iter().position(|b| v <= b).unwrap_or(bounds.len());
            counts[i] += n;
        }
        counts
    }

    #[test]
    fn replayed_values_keep_bucket_counts_and_sum() {
        let bounds = [0.1, 1.0, 10.0];
        // Observed: 0.05, 0.5, 0.7, 3.0, 42.0.
        let counts = [1, 2, 1, 1];
        let v = replay_values(&bounds, &counts, 46.25);
        assert_eq!(buckets_of(&bounds, &v), counts);
        let sum: f64 = v.iter().map(|(x, n)| x * *n as f64).sum();
        assert!((sum - 46.25).abs() < 1e-9, "{v:?}");
        // Everything at a bucket's lower edge: values just above it.
        let v = replay_values(&bounds, &[0, 2, 0, 0], 0.2);
        assert_eq!(buckets_of(&bounds, &v), [0, 2, 0, 0], "{v:?}");
        // Nothing observed, nothing replayed.
        assert!(replay_values(&bounds, &[0, 0, 0, 0], 0.0).is_empty());
        // All in +Inf.
        let v = replay_values(&bounds, &[0, 0, 0, 3], 300.0);
        assert_eq!(v, vec![(100.0, 3)]);
    }

    #[test]
    fn units_come_from_the_name() {
        assert_eq!(unit_of("trailwatch_sink_request_duration_seconds"), "s");
        assert_eq!(unit_of("trailwatch_source_bytes_total"), "By");
        assert_eq!(unit_of("trailwatch_events_total"), "");
    }

    #[test]
    fn every_family_is_bridged_with_its_type() {
        let m = crate::metrics::get();
        let names: Vec<&str> = m.families.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"trailwatch_events_total") && names.len() > 50, "{names:?}");
        let kind = |n: &str| m.families.iter().find(|f| f.name == n).map(|f| f.kind);
        assert_eq!(kind("trailwatch_events_total"), Some(Kind::Counter));
        assert_eq!(kind("trailwatch_window_keys"), Some(Kind::IntGauge));
        assert_eq!(kind("trailwatch_window_watermark_seconds"), Some(Kind::Gauge));
        assert!(matches!(kind("trailwatch_sink_batch_size"), Some(Kind::Histogram(_))));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a family registered twice");
    }
}
