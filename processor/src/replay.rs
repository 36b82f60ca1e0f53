//! Offline replay: files (or stdin) → decoders → rules → ASFF findings, one
//! JSON finding per line. The same engine as the live service; used for
//! backtesting rules over archives and for the embedded default run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use trailwatch_rules::{EventClass, RuleSet};

use crate::decode::{self, DecodeOptions, Decoded, Position};
use crate::findings::{self, FindingContext, FindingInput};

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
    /// rule id → (title, matches)
    pub matches: BTreeMap<String, (String, u64)>,
    pub elapsed: Duration,
}

impl ReplayStats {
    /// The end-of-run summary printed to stderr.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut s = format!(
            "replayed {} input{}, {} events in {:.2}s ({:.0} events/s); {} bad records; {} skipped; {} findings\n",
            self.inputs,
            if self.inputs == 1 { "" } else { "s" },
            self.events,
            secs,
            self.events as f64 / secs,
            self.bad_records,
            self.skipped,
            self.findings,
        );
        if !self.bad_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .bad_by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            s.push_str(&format!("bad records by kind: {}\n", kinds.join(", ")));
        }
        if self.object_refs > 0 {
            s.push_str(&format!(
                "{} S3 object notifications not followed (replay reads local files only; give the objects themselves)\n",
                self.object_refs
            ));
        }
        if self.invalid_findings > 0 {
            s.push_str(&format!(
                "{} findings failed ASFF validation (see the log)\n",
                self.invalid_findings
            ));
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

/// Errors past this many are logged at debug level only (they are all counted).
const LOGGED_ERRORS: u64 = 100;

/// Replays every input through `set`, writing findings to `out`.
pub fn replay(
    set: Arc<RuleSet>,
    opts: &ReplayOptions,
    out: &mut dyn Write,
) -> anyhow::Result<ReplayStats> {
    let started = Instant::now();
    let inputs = expand_inputs(&opts.inputs)?;
    let total_bytes: u64 = inputs
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    let bar = if opts.progress && total_bytes > (8 << 20) {
        let b = ProgressBar::new(total_bytes);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut dead_letter = match &opts.dead_letter {
        Some(p) => Some(BufWriter::new(File::create(p).with_context(|| {
            format!("cannot create dead-letter file {}", p.display())
        })?)),
        None => None,
    };
    let mut st = Processor {
        set: &set,
        scratch: set.scratch(),
        matches: Vec::new(),
        stats: ReplayStats::default(),
        out,
        dead_letter: dead_letter.as_mut().map(|w| w as &mut dyn Write),
        opts,
        io_error: None,
    };
    for input in &inputs {
        st.stats.inputs += 1;
        let origin = input.display().to_string();
        let reader: Box<dyn Read> = if input.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(input).with_context(|| format!("cannot open {origin}"))?)
        };
        let reader = Counting {
            inner: reader,
            bar: &bar,
            n: 0,
        };
        let mut bytes = 0u64;
        decode::decode_reader(reader, &origin, &opts.decode, &mut |item| {
            st.handle(&origin, item)
        })
        .with_context(|| format!("cannot read {origin}"))?;
        if let Ok(m) = input.metadata() {
            bytes = m.len();
        }
        st.stats.bytes += bytes;
        if let Some(e) = st.io_error.take() {
            return Err(e).context("cannot write findings");
        }
    }
    bar.finish_and_clear();
    st.out.flush().context("cannot write findings")?;
    if let Some(d) = st.dead_letter.as_mut() {
        d.flush().context("cannot write the dead-letter file")?;
    }
    let mut stats = st.stats;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

struct Processor<'a> {
    set: &'a RuleSet,
    scratch: trailwatch_rules::Scratch,
    matches: Vec<u32>,
    stats: ReplayStats,
    out: &'a mut dyn Write,
    dead_letter: Option<&'a mut dyn Write>,
    opts: &'a ReplayOptions,
    io_error: Option<io::Error>,
}

impl Processor<'_> {
    fn handle(&mut self, origin: &str, item: Decoded<'_>) {
        match item {
            Decoded::Event(ev) => {
                self.stats.events += 1;
                *self
                    .stats
                    .events_by_class
                    .entry(ev.class.service())
                    .or_default() += 1;
                self.matches.clear();
                let set = self.set;
                let result = set.eval(ev.class, ev.json, &mut self.scratch, &mut self.matches);
                match result {
                    Err(e) => self.bad(origin, &ev.position, "json", &e.to_string(), Some(ev.json)),
                    Ok(view) => {
                        if self.matches.is_empty() {
                            return;
                        }
                        let event_id = set.event_id(&view).map(str::to_string);
                        let matches = std::mem::take(&mut self.matches);
                        for &m in &matches {
                            self.emit(
                                m,
                                ev.class,
                                ev.json,
                                event_id.as_deref(),
                                origin,
                                &ev.position,
                            );
                        }
                        self.matches = matches;
                    }
                }
            }
            Decoded::Error(e) => {
                let kind = e.kind.as_str();
                self.bad(origin, &e.position, kind, &e.message, None);
            }
            Decoded::Skipped { .. } => self.stats.skipped += 1,
            Decoded::ObjectRef(_) => self.stats.object_refs += 1,
        }
    }

    fn emit(
        &mut self,
        rule: u32,
        class: EventClass,
        json: &str,
        event_id: Option<&str>,
        origin: &str,
        pos: &Position,
    ) {
        let r = self.set.rule(rule);
        let entry = self
            .stats
            .matches
            .entry(r.meta.id.clone())
            .or_insert_with(|| (r.meta.title.clone(), 0));
        entry.1 += 1;
        // Matches are rare: parsing the whole event here costs little.
        let event: serde_json::Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return self.bad(origin, pos, "json", &e.to_string(), Some(json)),
        };
        let input = FindingInput {
            rule: &r.meta,
            class,
            event: &event,
            event_ids: event_id.map(|s| vec![s.to_string()]).unwrap_or_default(),
            correlation: None,
            now: self.opts.now,
        };
        let finding = findings::build_finding(&input, &self.opts.findings);
        if let Err(violations) = findings::validate(&finding) {
            self.stats.invalid_findings += 1;
            let why: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            tracing::error!(rule = %r.meta.id, %origin, position = %pos, "finding failed ASFF validation: {}", why.join("; "));
            return;
        }
        self.stats.findings += 1;
        let line = finding.to_json_line();
        if let Err(e) = self
            .out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
        {
            self.io_error.get_or_insert(e);
        }
    }

    fn bad(
        &mut self,
        origin: &str,
        pos: &Position,
        kind: &'static str,
        reason: &str,
        raw: Option<&str>,
    ) {
        self.stats.bad_records += 1;
        *self.stats.bad_by_kind.entry(kind).or_default() += 1;
        if self.stats.bad_records <= LOGGED_ERRORS {
            tracing::warn!(%origin, position = %pos, kind, "bad record skipped: {reason}");
            if self.stats.bad_records == LOGGED_ERRORS {
                tracing::warn!("further bad records are logged at debug level (all are counted)");
            }
        } else {
            tracing::debug!(%origin, position = %pos, kind, "bad record skipped: {reason}");
        }
        if let Some(d) = self.dead_letter.as_mut() {
            let rec = serde_json::json!({
                "origin": origin,
                "line": pos.line,
                "byte_offset": pos.byte_offset,
                "record": pos.record,
                "kind": kind,
                "error": reason,
                "raw": raw.map(|r| truncate(r, 64 * 1024)),
            });
            if let Err(e) = writeln!(d, "{rec}") {
                self.io_error.get_or_insert(e);
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Files of the inputs, directories walked recursively in name order.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for i in inputs {
        if i.as_os_str() == "-" {
            out.push(i.clone());
        } else if i.is_dir() {
            let mut files: Vec<PathBuf> = walkdir::WalkDir::new(i)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file() && !is_hidden(e.path()))
                .map(|e| e.into_path())
                .collect();
            files.sort();
            out.extend(files);
        } else if i.is_file() {
            out.push(i.clone());
        } else {
            anyhow::bail!("input {} does not exist", i.display());
        }
    }
    Ok(out)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
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
