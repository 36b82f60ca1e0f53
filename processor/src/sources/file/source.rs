use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::FileSourceConfig;
use crate::decode;
use crate::pipeline::batch::{EventBatch, SourceBatch};
use crate::sources::{batch_span, finish_batch, Source, SourceContext, SourceError};

pub struct FileSource {
    cfg: FileSourceConfig,
}

impl FileSource {
    pub fn new(cfg: FileSourceConfig) -> Self {
        FileSource { cfg }
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let inputs = expand_inputs(&self.cfg.paths).map_err(SourceError::Config)?;
        ctx.health.set_source(&ctx.name, true);
        let batch_events = self.cfg.batch_events.max(1);
        // Reading and decoding block: a thread of its own, sending with
        // blocking_send so a full pipeline slows the reading.
        let task = tokio::task::spawn_blocking(move || read_all(&inputs, batch_events, &ctx));
        task.await.map_err(|e| SourceError::Fatal(format!("file source panicked: {e}")))?
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn read_all(inputs: &[PathBuf], batch_events: usize, ctx: &SourceContext) -> Result<(), SourceError> {
    for input in inputs {
        if ctx.shutdown.is_cancelled() {
            return Ok(());
        }
        let origin = input.display().to_string();
        let reader: Box<dyn Read> = if input.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            match File::open(input) {
                Ok(f) => Box::new(f),
                Err(error) => return Err(SourceError::Io { context: format!("cannot open {origin}"), error }),
            }
        };
        let mut batch = EventBatch::new(Some(now_ms()));
        let mut span = batch_span(&ctx.name, "");
        let mut o = batch.add_origin(origin.clone());
        let mut stopped = false;
        let mut units = 1u64;
        let send = |batch: EventBatch, units: u64, span: tracing::Span| -> bool {
            let trace = finish_batch(span, &ctx.name, "", units, &batch);
            ctx.out.blocking_send(SourceBatch {
                source: Arc::clone(&ctx.name),
                events: batch,
                checkpoint: None,
                ack: None,
                trace,
                partitions: Default::default(),
            })
        };
        let counting = CountingReader { inner: reader, n: 0 };
        let mut counting = counting;
        let res = decode::decode_reader(&mut counting, &origin, &ctx.decode, &mut |item| {
            if stopped {
                return;
            }
            batch.push_decoded(o, item);
            if batch.len() + batch.error_count() >= batch_events {
                let full = std::mem::replace(&mut batch, EventBatch::new(Some(now_ms())));
                let full_span = std::mem::replace(&mut span, batch_span(&ctx.name, ""));
                if !send(full, std::mem::take(&mut units), full_span) || ctx.shutdown.is_cancelled() {
                    stopped = true;
                }
                o = batch.add_origin(origin.clone());
            }
        });
        batch.input_bytes = counting.n;
        if let Err(error) = res {
            return Err(SourceError::Io { context: format!("cannot read {origin}"), error });
        }
        if stopped {
            return Ok(());
        }
        let has_any = !batch.is_empty() || !batch.skipped.is_empty() || !batch.object_refs.is_empty() || units > 0;
        if has_any && !send(batch, units, span) {
            return Ok(());
        }
    }
    Ok(())
}

/// Counts bytes read (for the source byte counter).
struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Files of the inputs, directories walked recursively in name order.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
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
            return Err(format!("input {} does not exist", i.display()));
        }
    }
    Ok(out)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}
