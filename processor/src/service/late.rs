//! Late drops by watermark partition, as a Prometheus counter with bounded
//! labels: `trailwatch_window_partition_late_events_total{source, partition}`.
//!
//! A partition is a Kinesis shard, an SQS source's account+region or a
//! whole source (file). An org trail of 1,000 accounts in 17 regions has
//! 17,000 account+region partitions, so a label per partition is not
//! affordable; but late drops come from few of them (the account whose
//! delivery lags, the shard read late), and those are the ones an SRE must
//! name. So the first [`NAMED_PER_SOURCE`] partitions of a source that drop
//! late events get a series of their own (a series never changes its label:
//! `rate()` stays right) and later ones are added to `partition="_other"`.
//! Summed by `source`, the counter is the per-source total. Every partition
//! is also logged (once, named) when it first drops an event, so one in
//! `_other` can be found.

use std::collections::HashMap;

use prometheus::{IntCounter, IntCounterVec};

/// Partitions with a label of their own, per source: at most 21 series per
/// source (20 named and `_other`).
pub(crate) const NAMED_PER_SOURCE: usize = 20;
pub(crate) const OTHER: &str = "_other";

pub(crate) struct LatePublisher {
    vec: IntCounterVec,
    cap: usize,
    /// Per partition name: late drops already added, and its series.
    seen: HashMap<String, Seen>,
    /// Per source: partitions named so far.
    named: HashMap<String, usize>,
}

struct Seen {
    published: u64,
    counter: IntCounter,
}

/// The source of a partition: partition names are `<source>` or
/// `<source>/<shard>` / `<source>/<account>/<region>`, and source names have
/// no `/` (config validation).
fn source_of(partition: &str) -> &str {
    partition.split_once('/').map_or(partition, |(s, _)| s)
}

impl LatePublisher {
    pub fn new(vec: IntCounterVec, cap: usize) -> Self {
        LatePublisher { vec, cap, seen: HashMap::new(), named: HashMap::new() }
    }

    /// Adds what changed since the last call. `totals`: each partition with
    /// late drops and its count since its detector started; a partition may
    /// appear more than once (window state of several leased shards).
    pub fn publish<'a>(&mut self, totals: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut sum: HashMap<&str, u64> = HashMap::new();
        for (name, n) in totals {
            *sum.entry(name).or_default() += n;
        }
        for (name, n) in sum {
            let seen = match self.seen.get_mut(name) {
                Some(s) => s,
                None => {
                    let source = source_of(name);
                    let named = self.named.entry(source.to_string()).or_default();
                    let label = if *named < self.cap {
                        *named += 1;
                        name
                    } else {
                        OTHER
                    };
                    tracing::warn!(
                        source,
                        partition = name,
                        "events of this partition arrived behind the watermark and were dropped from correlation \
                         windows (is its delivery lagging, or was it read after the others?); logged once, counted \
                         in trailwatch_window_partition_late_events_total{{partition=\"{label}\"}}"
                    );
                    let counter = self.vec.with_label_values(&[source, label]);
                    self.seen.entry(name.to_string()).or_insert(Seen { published: 0, counter })
                }
            };
            // Fewer than before: its detector started again (a leased
            // shard's window state adopted anew); all of these are new.
            let delta = if n >= seen.published { n - seen.published } else { n };
            seen.counter.inc_by(delta);
            seen.published = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector;
    use prometheus::Opts;

    fn vec() -> IntCounterVec {
        IntCounterVec::new(Opts::new("late_total", "test"), &["source", "partition"]).unwrap()
    }

    fn value(v: &IntCounterVec, source: &str, partition: &str) -> u64 {
        v.with_label_values(&[source, partition]).get()
    }

    #[test]
    fn partitions_are_named_up_to_the_cap_per_source_then_other() {
        let v = vec();
        let mut p = LatePublisher::new(v.clone(), 2);
        p.publish([("org/111111111111/us-east-1", 3), ("k/shardId-000000000001", 1)]);
        p.publish([("org/111111111111/us-east-1", 5), ("org/222222222222/eu-west-1", 1)]);
        // Third and fourth partitions of `org`: beyond the cap of 2.
        p.publish([("org/333333333333/us-east-1", 4), ("org/444444444444/us-east-1", 2)]);
        assert_eq!(value(&v, "org", "org/111111111111/us-east-1"), 5, "deltas add up to the total");
        assert_eq!(value(&v, "org", "org/222222222222/eu-west-1"), 1);
        assert_eq!(value(&v, "org", OTHER), 6);
        assert_eq!(value(&v, "k", "k/shardId-000000000001"), 1, "the cap is per source");
        // A partition in `_other` stays there: its series never moves.
        p.publish([("org/333333333333/us-east-1", 7)]);
        assert_eq!(value(&v, "org", OTHER), 9);
        let series = v.collect()[0].get_metric().len();
        assert_eq!(series, 4, "2 named + _other for org, 1 for k");
    }

    #[test]
    fn a_restarted_count_adds_what_it_holds_and_copies_are_summed() {
        let v = vec();
        let mut p = LatePublisher::new(v.clone(), 20);
        // One shard's window state in two detectors (an old and a new tenure).
        p.publish([("k/s1", 4), ("k/s1", 2)]);
        assert_eq!(value(&v, "k", "k/s1"), 6);
        p.publish([("k/s1", 6)]);
        assert_eq!(value(&v, "k", "k/s1"), 6, "nothing new");
        // The state was adopted anew: its count starts again from 0.
        p.publish([("k/s1", 1)]);
        assert_eq!(value(&v, "k", "k/s1"), 7);
        p.publish([("files", 2)]);
        assert_eq!(value(&v, "files", "files"), 2, "a whole-source partition is its own source");
    }
}
