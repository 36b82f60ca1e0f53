//! The generator: the org from the seed, scenarios placed at seeded times,
//! then benign traffic slice by slice (5 minutes of event time), each slice
//! merged with the scenario events that fall in it and handed to the
//! outputs. Memory stays bounded by one slice plus activities that spill
//! into the next ones.
//!
//! Determinism: three ChaCha8 streams from the seed (org, benign traffic,
//! scenarios), so the same seed and options give the same bytes, and the
//! benign traffic does not change when the scenario selection does.

use rand::{Rng, SeedableRng};

use crate::org::{Org, OrgOptions};
use crate::output::Batch;
use crate::record::{Emitter, EventKind, GenEvent};
use crate::scenarios::{self, Scenario};
use crate::traffic::Traffic;
use crate::truth::{GeneratorInfo, OrgInfo, Truth, TRUTH_VERSION};
use crate::util::{self, Rand};

/// Slice of event time handed to outputs at once (CloudTrail delivers ~5 minute files).
pub const SLICE_SECONDS: i64 = 300;

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub seed: u64,
    pub org: OrgOptions,
    /// Unix seconds.
    pub start: i64,
    pub duration: i64,
    /// Benign events per second of event time.
    pub rate: f64,
    pub attacks: Vec<&'static Scenario>,
    pub lookalikes: Vec<&'static Scenario>,
    /// Instances of each selected scenario.
    pub repeat: usize,
    /// Refuse to generate more than this many benign events.
    pub max_events: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

impl GenOptions {
    /// Checks the options without generating anything.
    pub fn validate(&self) -> Result<(), GenError> {
        let bad = |m: String| Err(GenError::Options(m));
        if self.duration < 60 {
            return bad(format!("duration must be at least 60s, got {}s", self.duration));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return bad(format!("rate must be a non-negative number, got {}", self.rate));
        }
        let expected = self.rate * self.duration as f64;
        if expected > self.max_events as f64 {
            return bad(format!(
                "rate x duration is about {expected:.0} events, over the limit of {} (raise --max-events)",
                self.max_events
            ));
        }
        if self.org.accounts == 0 || self.org.accounts > 5000 {
            return bad(format!("accounts must be between 1 and 5000, got {}", self.org.accounts));
        }
        if self.org.regions.is_empty() {
            return bad("at least one region is needed".into());
        }
        let margin = margin(self.duration);
        for s in self.attacks.iter().chain(self.lookalikes.iter()) {
            if s.span + 2 * margin >= self.duration {
                return bad(format!(
                    "duration {}s is too short for scenario {} (it spans {}s; give at least {}s)",
                    self.duration,
                    s.name,
                    s.span,
                    s.span + 2 * margin + 60
                ));
            }
        }
        Ok(())
    }
}

/// Keep scenarios this far from the start and the end of the data.
fn margin(duration: i64) -> i64 {
    (duration / 8).min(900)
}

/// Builds the org of a seed (the same org `generate` uses).
pub fn build_org(opts: &GenOptions) -> Org {
    Org::new(&opts.org, &mut stream(opts.seed, 0))
}

fn stream(seed: u64, n: u64) -> Rand {
    let mut r = Rand::seed_from_u64(seed);
    r.set_stream(n);
    r
}

/// Generates the dataset, calling `sink` with every slice in time order.
pub fn generate(
    opts: &GenOptions,
    sink: &mut dyn FnMut(&Batch<'_>) -> Result<(), GenError>,
) -> Result<Truth, GenError> {
    opts.validate()?;
    let org = build_org(opts);
    let end = opts.start + opts.duration;

    // Scenarios first, at seeded times, into their own buffer.
    let mut sc = Emitter::new(&org, stream(opts.seed, 2), 1 << 62);
    let margin = margin(opts.duration);
    let mut attacks = Vec::new();
    let mut lookalikes = Vec::new();
    for rep in 1..=opts.repeat {
        for (list, out) in [(&opts.attacks, &mut attacks), (&opts.lookalikes, &mut lookalikes)] {
            for s in list.iter() {
                let hi = end - margin - s.span;
                let t = sc.rng.random_range(opts.start + margin..hi.max(opts.start + margin + 1));
                out.push(scenarios::inject(s, &mut sc, t, rep));
            }
        }
    }
    let mut injected = std::mem::take(&mut sc.events);
    injected.sort_by_key(|e| (e.time, e.seq));
    let mut injected = injected.into_iter().peekable();

    let mut em = Emitter::new(&org, stream(opts.seed, 1), 0);
    let mut traffic = Traffic::new(opts.rate);
    let (mut n_ct, mut n_eb) = (0u64, 0u64);
    let mut t0 = opts.start;
    let mut batch: Vec<GenEvent> = Vec::new();
    while t0 < end {
        let t1 = (t0 + SLICE_SECONDS).min(end);
        traffic.slice(&mut em, t0, t1);
        // This slice's events; activities that run past it stay for the next slices.
        batch.clear();
        let mut keep = Vec::with_capacity(em.events.len() / 8);
        for ev in em.events.drain(..) {
            if ev.time < t1 {
                batch.push(ev);
            } else if ev.time < end {
                keep.push(ev);
            }
        }
        em.events = keep;
        while let Some(ev) = injected.next_if(|e| e.time < t1) {
            batch.push(ev);
        }
        batch.sort_by_key(|e| (e.time, e.seq));
        for ev in &batch {
            match ev.kind {
                EventKind::CloudTrail(_) => n_ct += 1,
                EventKind::EventBridge(_) => n_eb += 1,
            }
        }
        sink(&Batch { org: &org, start: t0, end: t1, events: &batch })?;
        t0 = t1;
    }
    debug_assert!(injected.peek().is_none(), "scenario events past the end");

    Ok(Truth {
        version: TRUTH_VERSION,
        generator: GeneratorInfo {
            seed: opts.seed,
            start: util::iso(opts.start),
            end: util::iso(end),
            duration_seconds: opts.duration,
            rate: opts.rate,
            repeat: opts.repeat,
            events: n_ct + n_eb,
            events_cloudtrail: n_ct,
            events_eventbridge: n_eb,
            outputs: Vec::new(),
        },
        org: OrgInfo::of(&org),
        scenarios: attacks,
        lookalikes,
    })
}
