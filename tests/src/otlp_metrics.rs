//! The checks the OTLP metrics tests (`otlp_metrics*.rs`) share: a metrics
//! request of `tests/otlp_receiver.py` read against the Prometheus registry.

use std::collections::BTreeMap;

use serde_json::Value;
use trailwatch_processor::metrics::{Kind, Metrics};

/// The events of examples/events (one per non-empty line).
pub fn demo_events() -> u64 {
    let dir = crate::repo_root().join("examples/events");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("examples/events") {
        let text = std::fs::read_to_string(e.expect("a directory entry").path()).expect("an events file");
        n += text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    }
    n
}

/// The metric `name` of a decoded metrics request.
pub fn metric<'a>(request: &'a Value, name: &str) -> &'a Value {
    request["metrics"]
        .as_array()
        .expect("a metrics request")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the export"))
}

fn int(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.strip_prefix("i:")).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not int: {v}"))
}

/// The sum of an integer sum's points (all series).
pub fn sum_of(metric: &Value) -> u64 {
    metric["points"].as_array().expect("points").iter().map(|p| int(&p["value"])).sum()
}

/// Compares every series of every family in `registry` with the exported
/// `request` (name, description, unit, type, attributes, value; histogram
/// bounds, counts and sum) and returns how many series it compared. The
/// export counter itself is left out: it counts the request after it is sent.
pub fn check_against_registry(request: &Value, registry: &Metrics) -> usize {
    let mut compared = 0;
    for f in &registry.families {
        if f.name == "trailwatch_otlp_metric_exports_total" {
            continue;
        }
        let series: Vec<_> = f.collector.collect().into_iter().flat_map(|fam| fam.get_metric().to_vec()).collect();
        if series.is_empty() {
            continue;
        }
        let m = metric(request, &f.name);
        assert_eq!(m["description"], f.help.as_str(), "{}", f.name);
        let unit = if f.name.contains("_seconds") {
            "s"
        } else if f.name.contains("_bytes") {
            "By"
        } else {
            ""
        };
        assert_eq!(m["unit"], unit, "{}", f.name);
        let points: BTreeMap<String, &Value> =
            m["points"].as_array().expect("points").iter().map(|p| (p["attributes"].to_string(), p)).collect();
        assert_eq!(points.len(), series.len(), "{}: series", f.name);
        for s in &series {
            let attrs: serde_json::Map<String, Value> =
                s.get_label().iter().map(|l| (l.name().to_string(), Value::from(format!("s:{}", l.value())))).collect();
            let key = Value::Object(attrs).to_string();
            let p = points.get(&key).unwrap_or_else(|| panic!("{}: no point {key}", f.name));
            let what = format!("{} {key}", f.name);
            match f.kind {
                Kind::Counter => {
                    assert_eq!((m["type"].as_str(), m["monotonic"].as_bool()), (Some("sum"), Some(true)), "{what}");
                    assert_eq!(int(&p["value"]), s.get_counter().get_value() as u64, "{what}");
                }
                Kind::IntGauge => {
                    assert_eq!(m["type"], "gauge", "{what}");
                    assert_eq!(p["value"], format!("i:{}", s.get_gauge().get_value() as i64), "{what}");
                }
                Kind::Gauge => {
                    assert_eq!(m["type"], "gauge", "{what}");
                    let v: f64 = p["value"].as_str().and_then(|v| v.strip_prefix("d:")).unwrap().parse().unwrap();
                    assert_eq!(v, s.get_gauge().get_value(), "{what}");
                }
                Kind::Histogram(bounds) => {
                    assert_eq!(m["type"], "histogram", "{what}");
                    let h = s.get_histogram();
                    assert_eq!(p["bounds"], Value::from(bounds.to_vec()), "{what}");
                    assert_eq!(p["count"].as_u64(), Some(h.get_sample_count()), "{what}");
                    let mut buckets = Vec::new();
                    let mut before = 0;
                    for b in h.get_bucket() {
                        buckets.push(b.cumulative_count() - before);
                        before = b.cumulative_count();
                    }
                    buckets.push(h.get_sample_count() - before);
                    assert_eq!(p["buckets"], Value::from(buckets), "{what}");
                    let sum = p["sum"].as_f64().unwrap();
                    let want = h.get_sample_sum();
                    assert!((sum - want).abs() <= 1e-9 * want.abs().max(1.0), "{what}: sum {sum} vs {want}");
                    assert_eq!((&p["has_min"], &p["has_max"]), (&Value::Bool(false), &Value::Bool(false)), "{what}");
                }
            }
            compared += 1;
        }
    }
    compared
}
