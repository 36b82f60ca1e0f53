//! Offline replay: files, directories, stdin or S3 prefixes → decoders →
//! rules → ASFF findings, one JSON finding per line. The same engine as the
//! live service; used for backtesting rules over archives and for the
//! embedded default run.
//!
//! Time: an archive is read in event-time order whatever order its files are
//! given or listed in ([`plan`]: partitions from the CloudTrail key layout,
//! each ordered by the time in its file names; `merge`: files loaded in
//! parallel, events merged by time with a bounded lookahead). A single plain
//! input (one file, stdin) is streamed as it is.

pub mod expect;
mod merge;
pub mod plan;
pub mod s3;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use trailwatch_rules::{DetectorConfig, PartitionId, RuleSet};

use self::plan::{Filter, Input, Plan};
use crate::aws::AwsConfig;
use crate::decode::{self, DecodeOptions, Decoded};
use crate::evaluate::{Emitted, EvalStats, Evaluator, EventRef};
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
    /// How an archive is planned and read.
    pub archive: ArchiveOptions,
}

/// What `replay` writes per match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayFormat {
    /// One ASFF finding per line, as Security Hub would get it.
    #[default]
    Asff,
    /// The same findings as OCSF Detection Findings (class 2004), as the
    /// `ocsf-jsonl` sink writes them.
    Ocsf,
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
    /// What the evaluator counted: events, bad records, findings, matches
    /// (the same counters `run` reports).
    pub eval: EvalStats,
    pub elapsed: Duration,
    /// One plain input read as a stream (no planning).
    pub streamed: bool,
    /// The plan: partitions, files by name time, other files, files left
    /// out by --since/--until/--accounts/--regions.
    pub partitions: u64,
    pub files_timed: u64,
    pub files_other: u64,
    pub filtered_out: u64,
    /// Events evaluated after a newer one (beyond the lookahead).
    pub out_of_order: u64,
    /// Events outside --since/--until (not evaluated).
    pub out_of_range: u64,
    /// The newest event time reached.
    pub max_event_ms: Option<i64>,
    pub lookahead_ms: i64,
    /// Late drops (correlation observations) per partition that had any.
    pub late_by_partition: Vec<(String, u64)>,
    /// S3 calls, for s3:// inputs.
    pub s3_list_calls: Option<u64>,
    pub s3_get_calls: Option<u64>,
}

impl ReplayStats {
    /// The end-of-run summary printed to stderr.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let e = &self.eval;
        let written = if e.match_lines > 0 && e.findings == 0 {
            format!("{} matches", e.match_lines)
        } else {
            format!("{} findings", e.findings)
        };
        let mut s = format!(
            "replayed {} input{}, {} events in {:.2}s ({:.0} events/s); {} bad records; {} skipped; {written}\n",
            self.inputs,
            if self.inputs == 1 { "" } else { "s" },
            e.events,
            secs,
            e.events as f64 / secs,
            e.bad_records,
            e.skipped,
        );
        if e.object_refs > 0 {
            s.push_str(&format!(
                "{} S3 object notifications not followed (replay reads local files only; give the objects themselves)\n",
                e.object_refs
            ));
        }
        if !self.streamed {
            s.push_str(&format!(
                "plan: {} files named by time in {} account/region partitions, {} other files; {} files outside the filters not read\n",
                self.files_timed,
                self.partitions - self.files_other,
                self.files_other,
                self.filtered_out
            ));
        }
        if let (Some(l), Some(g)) = (self.s3_list_calls, self.s3_get_calls) {
            s.push_str(&format!("s3: {l} ListObjectsV2 calls, {g} objects read\n"));
        }
        s.push_str(&format!(
            "time: event time reached {}; {} events evaluated after a newer one (beyond the {}s lookahead); {} outside --since/--until\n",
            self.max_event_ms.map(ms_text).unwrap_or_else(|| "-".into()),
            self.out_of_order,
            self.lookahead_ms / 1000,
            self.out_of_range
        ));
        s.push_str(&e.summary_details());
        if !self.late_by_partition.is_empty() {
            let parts: Vec<String> = self.late_by_partition.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            s.push_str(&format!("late events by partition: {}\n", parts.join(", ")));
        }
        s
    }
}

/// How an archive is read (see [`plan`] and [`s3`]).
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// `--since/--until/--accounts/--regions`, and the lookahead: how far
    /// before the time in its name a CloudTrail file's events may be.
    pub filter: Filter,
    /// Loader threads (fetch, gunzip, decode, screen detection rules, sort);
    /// 0: one per core, more for S3 where most of the time is waiting.
    pub threads: usize,
    /// `[aws]` for s3:// inputs.
    pub aws: AwsConfig,
}

/// CloudTrail delivers a file about 5 minutes after its first event, with a tail.
pub const DEFAULT_LOOKAHEAD_MS: i64 = 15 * 60_000;

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            filter: Filter { lookahead_ms: DEFAULT_LOOKAHEAD_MS, ..Filter::default() },
            threads: 0,
            aws: AwsConfig::default(),
        }
    }
}

/// Where emitted findings, matches and dead letters go.
struct Sink<'o> {
    out: &'o mut dyn Write,
    format: ReplayFormat,
    dead_letter: Option<BufWriter<File>>,
    /// Write errors stop the replay after the current input.
    io_error: Option<io::Error>,
}

impl Sink<'_> {
    fn emit(&mut self, e: Emitted) {
        let res = match e {
            Emitted::Finding(f) if self.format == ReplayFormat::Ocsf => {
                let line = crate::sinks::jsonl::ocsf::to_json_line(&f);
                self.out.write_all(line.as_bytes()).and_then(|_| self.out.write_all(b"\n"))
            }
            Emitted::Finding(f) => self.out.write_all(f.json.as_bytes()).and_then(|_| self.out.write_all(b"\n")),
            Emitted::Match(line) => self.out.write_all(line.as_bytes()).and_then(|_| self.out.write_all(b"\n")),
            Emitted::DeadLetter(d) => match self.dead_letter.as_mut() {
                Some(w) => writeln!(w, "{}", d.to_json_line()),
                None => Ok(()),
            },
            // An analyst's request belongs to the live service, not to a replay.
            Emitted::Request(_) => Ok(()),
        };
        if let Err(e) = res {
            self.io_error.get_or_insert(e);
        }
    }
}

/// Event-time bookkeeping of the merge.
#[derive(Default)]
struct Clock {
    max_ms: Option<i64>,
    out_of_order: u64,
    out_of_range: u64,
    fed: u64,
}

/// Hands one event to the engine, in its partition (`<account>/<region>`
/// or the file: per-partition watermarks, as in `run`). `unmatched`: the
/// loader screened it and no detection rule matched (only its time matters).
#[allow(clippy::too_many_arguments)]
fn feed(
    eval: &mut Evaluator,
    sink: &mut Sink<'_>,
    clock: &mut Clock,
    filter: &Filter,
    ev: EventRef<'_>,
    time_ms: Option<i64>,
    unmatched: bool,
    partition: PartitionId,
    now: OffsetDateTime,
) {
    if let Some(t) = time_ms {
        if !filter.keeps_time(t) {
            clock.out_of_range += 1;
            return;
        }
        if clock.max_ms.is_some_and(|m| t < m) {
            clock.out_of_order += 1;
        }
        clock.max_ms = Some(clock.max_ms.map_or(t, |m| m.max(t)));
    }
    clock.fed += 1;
    if unmatched {
        eval.event_unmatched(partition, ev, time_ms, now, &mut |e| sink.emit(e));
    } else {
        eval.event_in(partition, ev, now, &mut |e| sink.emit(e));
    }
}

/// The engine partitions of a planned archive (one per plan partition).
struct Parts {
    ids: Vec<Option<PartitionId>>,
    /// Files of the partition not yet fed to their last event.
    files_left: Vec<usize>,
}

impl Parts {
    fn id(&mut self, eval: &mut Evaluator, plan: &Plan, p: u32) -> PartitionId {
        *self.ids[p as usize].get_or_insert_with(|| eval.partition(&plan.partitions[p as usize]))
    }

    /// One file of partition `p` is done; after its last one the partition
    /// stops holding the watermark.
    fn file_done(&mut self, eval: &mut Evaluator, plan: &Plan, p: u32, sink: &mut Sink<'_>, now: OffsetDateTime) {
        let left = &mut self.files_left[p as usize];
        *left = left.saturating_sub(1);
        if *left == 0 {
            let id = self.id(eval, plan, p);
            eval.close_partition(id, now, &mut |e| sink.emit(e));
        }
    }
}

/// Reads local files, stdin and S3 objects for the loader threads.
struct Fetcher<'a> {
    s3: Option<&'a s3::S3Archive>,
}

impl merge::Fetch for Fetcher<'_> {
    fn fetch(&self, input: &Input) -> anyhow::Result<Vec<u8>> {
        match input {
            Input::File(p) => Ok(std::fs::read(p)?),
            Input::Stdin => {
                let mut buf = Vec::new();
                io::stdin().lock().read_to_end(&mut buf)?;
                Ok(buf)
            }
            Input::S3 { bucket, key, .. } => match self.s3 {
                Some(s3) => s3.get(bucket, key),
                None => anyhow::bail!("no S3 client"),
            },
        }
    }
}

/// Lists, plans and resolves the inputs.
fn inputs_of(opts: &ReplayOptions) -> anyhow::Result<(Plan, Option<s3::S3Archive>)> {
    let a = &opts.archive;
    let mut local = Vec::new();
    let mut urls = Vec::new();
    for i in &opts.inputs {
        let text = i.to_str().unwrap_or_default();
        match s3::S3Url::parse(text) {
            Some(u) => urls.push(u),
            None if text.starts_with("s3:") => anyhow::bail!("`{text}` is not an s3://bucket/prefix URL"),
            None => local.push(i.clone()),
        }
    }
    let mut inputs: Vec<Input> = expand_inputs(&local)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|p| if p.as_os_str() == "-" { Input::Stdin } else { Input::File(p) })
        .collect();
    let archive = if urls.is_empty() { None } else { Some(s3::S3Archive::new(&a.aws)?) };
    if let Some(s3) = &archive {
        for u in &urls {
            let listed =
                s3.list(u, &a.filter).with_context(|| format!("cannot list s3://{}/{}", u.bucket, u.prefix))?;
            tracing::info!(bucket = %u.bucket, prefix = %u.prefix, objects = listed.len(), "listed");
            inputs.extend(listed);
        }
    }
    Ok((Plan::new(inputs, &a.filter), archive))
}

fn ms_text(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    crate::findings::rfc3339(t)
}

/// Replays every input through `set`, writing findings to `out`.
pub fn replay(set: Arc<RuleSet>, opts: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplayStats> {
    let started = Instant::now();
    let (plan, archive) = inputs_of(opts)?;
    let filter = &opts.archive.filter;
    let total_bytes: u64 = plan.in_order().map(|p| p.input.size()).sum();
    let files = plan.files() as u64;
    let bar = if opts.progress && (total_bytes > (8 << 20) || files > 200) {
        let b = ProgressBar::new(files);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files, eta {eta}; {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let dead_letter = match &opts.dead_letter {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create dead-letter file {}", p.display()))?,
        )),
        None => None,
    };
    let mut sink = Sink { out, format: opts.format, dead_letter, io_error: None };
    let mut eval = Evaluator::new(Arc::clone(&set), opts.detector.clone(), opts.findings.clone())
        .matches_only(opts.format == ReplayFormat::Matches);
    let mut clock = Clock::default();
    let mut bytes = 0u64;
    let streamed = archive.is_none() && plan.timed.is_empty() && plan.untimed.len() == 1;
    if streamed {
        // One plain input: streamed as it is, with bounded memory.
        let p = &plan.untimed[0];
        let origin = p.input.origin();
        let label = &plan.partitions[p.partition as usize];
        let reader: Box<dyn Read> = match &p.input {
            Input::File(path) => Box::new(File::open(path).with_context(|| format!("cannot open {origin}"))?),
            _ => Box::new(io::stdin().lock()),
        };
        let mut reader = Counting { inner: reader, n: 0 };
        let part = eval.partition(label);
        decode::decode_reader(&mut reader, &origin, &opts.decode, &mut |item| match item {
            Decoded::Event(ev) => {
                let r = EventRef {
                    class: ev.class,
                    json: ev.json,
                    origin: &origin,
                    position: &ev.position,
                    ingest_ms: None,
                };
                let t = merge::event_time(ev.json);
                feed(&mut eval, &mut sink, &mut clock, filter, r, t, false, part, opts.now);
            }
            Decoded::Error(e) => {
                eval.bad_record(&origin, &e.position, e.kind.as_str(), &e.message, None, &mut |x| sink.emit(x));
            }
            Decoded::Skipped { .. } => eval.skipped(1),
            Decoded::ObjectRef(_) => eval.object_ref(),
        })
        .with_context(|| format!("cannot read {origin}"))?;
        bytes = reader.n;
        eval.close_partition(part, opts.now, &mut |e| sink.emit(e));
    } else {
        let order: Vec<&plan::Planned> = plan.in_order().collect();
        let n_untimed = plan.untimed.len();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = match (opts.archive.threads, &archive) {
            (0, None) => cores,
            (0, Some(_)) => (cores * 4).max(8),
            (n, _) => n,
        };
        let lookahead = filter.lookahead_ms;
        // (time, file, event) — ties in plan order, then file order.
        let mut heap: BinaryHeap<Reverse<(i64, usize, usize)>> = BinaryHeap::new();
        let mut held: HashMap<usize, (merge::Loaded, usize)> = HashMap::new();
        let fetcher = Fetcher { s3: archive.as_ref() };
        // Engine partitions: every partition with files to read is
        // registered before the first event (so one whose files come later
        // in the plan holds the watermark, as a Kinesis shard that has not
        // delivered yet does in `run`), and closed once every event of its
        // last file was fed.
        let mut parts = Parts { ids: vec![None; plan.partitions.len()], files_left: vec![0; plan.partitions.len()] };
        for p in &order {
            parts.files_left[p.partition as usize] += 1;
        }
        for p in 0..plan.partitions.len() {
            if parts.files_left[p] > 0 {
                parts.id(&mut eval, &plan, p as u32);
            }
        }
        let pop_until = |bound: i64,
                         heap: &mut BinaryHeap<Reverse<(i64, usize, usize)>>,
                         held: &mut HashMap<usize, (merge::Loaded, usize)>,
                         parts: &mut Parts,
                         eval: &mut Evaluator,
                         sink: &mut Sink<'_>,
                         clock: &mut Clock| {
            while let Some(&Reverse((t, i, k))) = heap.peek() {
                if t >= bound && bound != i64::MAX {
                    break;
                }
                heap.pop();
                let Some((loaded, left)) = held.get_mut(&i) else { continue };
                let e = &loaded.events[k];
                let r = EventRef {
                    class: e.class,
                    json: loaded.json(e),
                    origin: &loaded.origin,
                    position: &e.position,
                    ingest_ms: None,
                };
                let part = parts.id(eval, &plan, loaded.partition);
                feed(eval, sink, clock, filter, r, e.time_ms, e.unmatched, part, opts.now);
                *left -= 1;
                if *left == 0 {
                    let p = loaded.partition;
                    held.remove(&i);
                    parts.file_done(eval, &plan, p, sink, opts.now);
                }
                if clock.fed % 4096 == 0 {
                    if let Some(m) = clock.max_ms {
                        bar.set_message(format!("event time {}", ms_text(m)));
                    }
                }
            }
        };
        let screen = Some(set.as_ref());
        merge::for_each_loaded(
            &order,
            threads,
            merge::Ahead::for_threads(threads),
            &fetcher,
            &opts.decode,
            screen,
            &mut |i, loaded| {
                bar.inc(1);
                bytes += loaded.bytes;
                for o in &loaded.others {
                    match o {
                        merge::Other::Bad { position, kind, message } => {
                            eval.bad_record(&loaded.origin, position, kind, message, None, &mut |x| sink.emit(x))
                        }
                        merge::Other::Skipped => eval.skipped(1),
                        merge::Other::ObjectRef => eval.object_ref(),
                    }
                }
                if !loaded.events.is_empty() {
                    for (k, e) in loaded.events.iter().enumerate() {
                        heap.push(Reverse((e.key_ms, i, k)));
                    }
                    let n = loaded.events.len();
                    held.insert(i, (loaded, n));
                } else {
                    parts.file_done(&mut eval, &plan, loaded.partition, &mut sink, opts.now);
                }
                // Files without a time in their names are all loaded first;
                // then an event is due once no later file can hold an older one.
                if i + 1 >= n_untimed {
                    if let Some(next) = order.get(i + 1) {
                        let bound = next.name_time_ms.unwrap_or(i64::MIN).saturating_sub(lookahead);
                        pop_until(bound, &mut heap, &mut held, &mut parts, &mut eval, &mut sink, &mut clock);
                    }
                }
                Ok(sink.io_error.is_none())
            },
        )?;
        if sink.io_error.is_none() {
            pop_until(i64::MAX, &mut heap, &mut held, &mut parts, &mut eval, &mut sink, &mut clock);
        }
    }
    bar.finish_and_clear();
    // End of input: decide every window still open.
    if sink.io_error.is_none() {
        eval.flush(opts.now, &mut |e| sink.emit(e));
    }
    if let Some(e) = sink.io_error.take() {
        return Err(e).context("cannot write findings");
    }
    sink.out.flush().context("cannot write findings")?;
    if let Some(d) = sink.dead_letter.as_mut() {
        d.flush().context("cannot write the dead-letter file")?;
    }
    let e = eval.stats();
    let late_by_partition = eval
        .detector()
        .partitions()
        .into_iter()
        .filter(|p| p.late_dropped > 0)
        .map(|p| (p.name, p.late_dropped))
        .collect();
    Ok(ReplayStats {
        late_by_partition,
        inputs: files,
        bytes,
        eval: e,
        elapsed: started.elapsed(),
        streamed,
        partitions: plan.partitions.len() as u64,
        files_timed: plan.timed.len() as u64,
        files_other: plan.untimed.len() as u64,
        filtered_out: plan.filtered_out,
        out_of_order: clock.out_of_order,
        out_of_range: clock.out_of_range,
        max_event_ms: clock.max_ms,
        lookahead_ms: filter.lookahead_ms,
        s3_list_calls: archive.as_ref().map(|a| a.list_calls.load(Ordering::Relaxed)),
        s3_get_calls: archive.as_ref().map(|a| a.get_calls.load(Ordering::Relaxed)),
    })
}

/// Counts bytes read.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}
