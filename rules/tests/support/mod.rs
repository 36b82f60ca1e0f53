//! What the detector tests share: loading a rule text, event times, feeding
//! events and picking the correlation alerts.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use trailwatch_rules::{Alert, CompileOptions, CorrelationAlert, Detector, EventClass, RuleFile, RuleSet};

/// The rule file `name` of `text`, compiled with `opts` (panics with the error).
pub fn load(name: &str, text: &str, opts: &CompileOptions) -> Arc<RuleSet> {
    Arc::new(
        RuleSet::load(&[RuleFile { name: name.into(), text: text.into() }], opts).unwrap_or_else(|e| panic!("{e}")).0,
    )
}

/// The CloudTrail `eventTime` `secs` after 2023-11-14T22:13:20Z (1_700_000_000).
pub fn event_time(secs: i64) -> String {
    let t = 1_700_000_000 + secs;
    let (d, r) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    format!("{}T{:02}:{:02}:{:02}Z", civil(d), r / 3600, (r % 3600) / 60, r % 60)
}

/// The date of day `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> String {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

/// Every alert of `events` (CloudTrail, processing time 0), not flushed.
pub fn process(det: &mut Detector, events: &[String]) -> Vec<Alert> {
    let mut scratch = det.rule_set().scratch();
    let mut out = Vec::new();
    for e in events {
        det.process(EventClass::CloudTrail, e, 0, &mut scratch, &mut out).unwrap();
    }
    out
}

/// The correlation alerts among `alerts`.
pub fn correlations(alerts: &[Alert]) -> Vec<CorrelationAlert> {
    alerts
        .iter()
        .filter_map(|a| match a {
            Alert::Correlation(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}
