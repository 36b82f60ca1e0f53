//! Offline replay: files (or stdin) → decoders → rules → ASFF findings, one
//! JSON finding per line. The same engine as the live service; used for
//! backtesting rules over archives and for the embedded default run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use trailwatch_rules::{DetectorConfig, DetectorStats, RuleSet};

use crate::decode::{self, DecodeOptions, Decoded};
use crate::evaluate::{Emitted, Evaluator, EventRef};
use crate::findings::FindingContext;
use crate::sources::file::expand_inputs;

/// What to replay and where findings go.
pub struct ReplayOptions {
    /// Files, directories (walked recursively) or `-` for stdin.
    pub inputs: Vec<PathBuf>,
    /// Dead-letter file for records that could not be decoded or evaluated
    /// (JSON lines with origin, position and reason).
    pub dead_letter: Option<PathBuf>,
    pub progress: bool,
    pub decode: DecodeOptions,
    pub findings: FindingContext,
    /// The time written as UpdatedAt (passed in so replays are reproducible).
    pub now: OffsetDateTime,
    /// Correlation windows and suppressions.
    pub detector: DetectorConfig,
    /// What is written per match.
    pub format: ReplayFormat,
}

/// What `replay` writes per match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayFormat {
    /// One ASFF finding per line, as Security Hub would get it.
    #[default]
    Asff,
    /// One short JSON line per match (rule id, title, level, event id and
    /// time; correlations with count, window, group and sample event ids),
    /// no finding built: for backtesting rules over archives.
    Matches,
}

/// Counters reported at the end of a replay.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    pub inputs: u64,
    pub bytes: u64,
    pub events: u64,
    pub events_by_class: BTreeMap<&'static str, u64>,
    pub bad_records: u64,
    pub bad_by_kind: BTreeMap<&'static str, u64>,
    pub skipped: u64,
    pub object_refs: u64,
    pub findings: u64,
    pub invalid_findings: u64,
    /// Lines written with [`ReplayFormat::Matches`].
    pub match_lines: u64,
    /// rule id → (title, matches)
    pub matches: BTreeMap<String, (String, u64)>,
    pub detector: DetectorStats,
    pub elapsed: Duration,
}

impl ReplayStats {
    /// The end-of-run summary printed to stderr.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let written = if self.match_lines > 0 && self.findings == 0 {
            format!("{} matches", self.match_lines)
        } else {
            format!("{} findings", self.findings)
        };
        let mut s = format!(
            "replayed {} input{}, {} events in {:.2}s ({:.0} events/s); {} bad records; {} skipped; {written}\n",
            self.inputs,
            if self.inputs == 1 { "" } else { "s" },
            self.events,
            secs,
            self.events as f64 / secs,
            self.bad_records,
            self.skipped,
        );
        if !self.bad_by_kind.is_empty() {
            let kinds: Vec<String> = self.bad_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            s.push_str(&format!("bad records by kind: {}\n", kinds.join(", ")));
        }
        if self.object_refs > 0 {
            s.push_str(&format!(
                "{} S3 object notifications not followed (replay reads local files only; give the objects themselves)\n",
                self.object_refs
            ));
        }
        let d = &self.detector;
        if d.correlation_alerts + d.correlation_updates + d.late_dropped + d.suppressed + d.evictions > 0 {
            s.push_str(&format!(
                "windows: {} correlation findings ({} updates), {} late events dropped, {} keys evicted, {} matches suppressed\n",
                d.correlation_alerts, d.correlation_updates, d.late_dropped, d.evictions, d.suppressed
            ));
        }
        if self.invalid_findings > 0 {
            s.push_str(&format!("{} findings failed ASFF validation (see the log)\n", self.invalid_findings));
        }
        if !self.matches.is_empty() {
            s.push_str("matches per rule:\n");
            let mut rows: Vec<_> = self.matches.iter().collect();
            rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
            for (id, (title, n)) in rows {
                s.push_str(&format!("  {n:>8}  {title}  ({id})\n"));
            }
        }
        s
    }
}

/// Replays every input through `set`, writing findings to `out`.
pub fn replay(set: Arc<RuleSet>, opts: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplayStats> {
    let started = Instant::now();
    let inputs = expand_inputs(&opts.inputs).map_err(anyhow::Error::msg)?;
    let total_bytes: u64 = inputs.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let bar = if opts.progress && total_bytes > (8 << 20) {
        let b = ProgressBar::new(total_bytes);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut dead_letter = match &opts.dead_letter {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create dead-letter file {}", p.display()))?,
        )),
        None => None,
    };
    let mut eval = Evaluator::new(Arc::clone(&set), opts.detector.clone(), opts.findings.clone())
        .matches_only(opts.format == ReplayFormat::Matches);
    // Write errors stop the replay after the current input.
    let io_error: std::cell::RefCell<Option<io::Error>> = std::cell::RefCell::new(None);
    let mut bytes = 0u64;
    {
        let mut emit = |e: Emitted| {
            let res = match e {
                Emitted::Finding(f) => out.write_all(f.json.as_bytes()).and_then(|_| out.write_all(b"\n")),
                Emitted::Match(line) => out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")),
                Emitted::DeadLetter(d) => match dead_letter.as_mut() {
                    Some(w) => writeln!(w, "{}", d.to_json_line()),
                    None => Ok(()),
                },
            };
            if let Err(e) = res {
                io_error.borrow_mut().get_or_insert(e);
            }
        };
        for input in &inputs {
            let origin = input.display().to_string();
            let reader: Box<dyn Read> = if input.as_os_str() == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(File::open(input).with_context(|| format!("cannot open {origin}"))?)
            };
            let mut reader = Counting { inner: reader, bar: &bar, n: 0 };
            decode::decode_reader(&mut reader, &origin, &opts.decode, &mut |item| match item {
                Decoded::Event(ev) => {
                    let r = EventRef {
                        class: ev.class,
                        json: ev.json,
                        origin: &origin,
                        position: &ev.position,
                        ingest_ms: None,
                    };
                    eval.event(r, opts.now, &mut emit);
                }
                Decoded::Error(e) => {
                    eval.bad_record(&origin, &e.position, e.kind.as_str(), &e.message, None, &mut emit);
                }
                Decoded::Skipped { .. } => eval.skipped(1),
                Decoded::ObjectRef(_) => eval.object_ref(),
            })
            .with_context(|| format!("cannot read {origin}"))?;
            bytes += reader.n;
            if io_error.borrow().is_some() {
                break;
            }
        }
        bar.finish_and_clear();
        // End of input: decide every window still open.
        eval.flush(opts.now, &mut emit);
    }
    if let Some(e) = io_error.into_inner() {
        return Err(e).context("cannot write findings");
    }
    out.flush().context("cannot write findings")?;
    if let Some(d) = dead_letter.as_mut() {
        d.flush().context("cannot write the dead-letter file")?;
    }
    let e = eval.stats();
    Ok(ReplayStats {
        inputs: inputs.len() as u64,
        bytes,
        events: e.events,
        events_by_class: e.events_by_class,
        bad_records: e.bad_records,
        bad_by_kind: e.bad_by_kind,
        skipped: e.skipped,
        object_refs: e.object_refs,
        findings: e.findings,
        invalid_findings: e.invalid_findings,
        match_lines: e.match_lines,
        matches: e.matches,
        detector: e.detector,
        elapsed: started.elapsed(),
    })
}

/// Counts bytes read for the progress bar.
struct Counting<'b, R> {
    inner: R,
    bar: &'b ProgressBar,
    n: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        self.bar.inc(k as u64);
        Ok(k)
    }
}
